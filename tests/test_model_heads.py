"""Heads, joint action scores, loss and labels, default questions, argument checks, gradient checkpointing."""


import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_checkpoint import TINY_BERT

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLModel


def _config(**overrides) -> MambaVLConfig:
    kwargs = dict(vision_feature_dim=24, hidden_size=32, text_config=TINY_BERT, scan_backend="reference")
    return MambaVLConfig.from_preset("features-768", **{**kwargs, **overrides})


def _model(**overrides) -> MambaVLForVideoClassification:
    torch.manual_seed(0)
    model = MambaVLForVideoClassification(_config(**overrides)).eval()
    with torch.no_grad():  # O(1) logits
        model.verb_head.weight.normal_() if hasattr(model, "verb_head") else model.classifier.weight.normal_()
        if hasattr(model, "noun_head"):
            model.noun_head.weight.normal_()
    return model


def _inputs(batch: int = 3):
    g = torch.Generator().manual_seed(1)
    return {"video_features": torch.randn(batch, 9, 24, generator=g),
            "question_input_ids": torch.randint(3, 64, (batch, 2, 6), generator=g)}


def test_joint_action_logits_and_loss_from_action_labels():
    model = _model()
    labels = torch.tensor([0, 1234, 3805])
    out = model(**_inputs(), labels=labels)
    verbs, nouns = torch.tensor(model.config.actions)[labels].T
    expected_logits = (F.log_softmax(out.verb_logits, -1)[:, torch.tensor(model.config.actions)[:, 0]]
                       + F.log_softmax(out.noun_logits, -1)[:, torch.tensor(model.config.actions)[:, 1]])
    torch.testing.assert_close(out.logits, expected_logits)
    expected_loss = (F.cross_entropy(out.verb_logits, verbs, label_smoothing=0.1)
                     + F.cross_entropy(out.noun_logits, nouns, label_smoothing=0.1))
    torch.testing.assert_close(out.loss, expected_loss)
    same = model(**_inputs(), verb_labels=verbs, noun_labels=nouns)
    torch.testing.assert_close(same.loss, out.loss)
    # The action ranking is a closed-vocabulary distribution over the actions when verb x noun were complete.
    assert out.logits.exp().sum(-1).max() <= 1.0 + 1e-5


def test_soft_targets_and_label_smoothing():
    model = _model(label_smoothing=0.0)
    inputs = _inputs()
    verb_soft = torch.softmax(torch.randn(3, 97), -1)
    noun_soft = torch.softmax(torch.randn(3, 300), -1)
    out = model(**inputs, verb_labels=verb_soft, noun_labels=noun_soft)
    expected = (-(verb_soft * F.log_softmax(out.verb_logits, -1)).sum(-1).mean()
                - (noun_soft * F.log_softmax(out.noun_logits, -1)).sum(-1).mean())
    torch.testing.assert_close(out.loss, expected)
    only_verbs = model(**inputs, verb_labels=torch.tensor([1, 2, 3]))
    torch.testing.assert_close(only_verbs.loss, F.cross_entropy(out.verb_logits, torch.tensor([1, 2, 3])))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"labels": torch.tensor([0, 1])}, r"labels: expected class ids of shape \(3,\)"),
        ({"labels": torch.tensor([0, 1, 3806])}, r"labels: action ids must be in \[0, 3806\)"),
        ({"labels": torch.tensor([0, 1, 2]), "verb_labels": torch.tensor([0, 1, 2])}, "not both"),
        ({"verb_labels": torch.randn(3, 96)}, r"verb_labels: .*\(3, 97\)"),
        ({"labels": torch.randn(3, 3806)}, "soft action targets are not supported"),
    ],
)
def test_bad_labels_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _model()(**_inputs(), **kwargs)


def test_questions_are_checked_and_default_questions_are_used():
    model = _model()
    inputs = _inputs()
    with pytest.raises(ValueError, match=r"question_input_ids: expected shape \(batch=3, 2, length\).*got \(3, 6\)"):
        model(video_features=inputs["video_features"], question_input_ids=inputs["question_input_ids"][:, 0])
    with pytest.raises(ValueError, match="question_input_ids: expected integer token ids"):
        model(video_features=inputs["video_features"], question_input_ids=inputs["question_input_ids"].float())
    with pytest.raises(ValueError, match=r"question_attention_mask: expected the shape of question_input_ids"):
        model(**inputs, question_attention_mask=torch.ones(3, 2, 5))
    with pytest.raises(ValueError, match="default_question_input_ids is not set.*MambaVLProcessor"):
        model(video_features=inputs["video_features"])

    rows = [[5, 6, 7, 8], [9, 10]]
    with_defaults = _model(default_question_input_ids=rows)
    ids = torch.tensor([[5, 6, 7, 8], [9, 10, 0, 0]]).expand(3, -1, -1)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]]).expand(3, -1, -1)
    with torch.no_grad():
        default = with_defaults(video_features=inputs["video_features"])
        explicit = with_defaults(video_features=inputs["video_features"], question_input_ids=ids,
                                 question_attention_mask=mask)
    torch.testing.assert_close(default.logits, explicit.logits)


def test_pixel_values_videos_alias_and_tuple_outputs():
    config = MambaVLConfig.from_preset("tiny", hidden_size=32, text_config=TINY_BERT, scan_backend="reference",
                                       vision_config={"num_hidden_layers": 1, "image_size": 32}, image_size=32)
    torch.manual_seed(0)
    model = MambaVLForVideoClassification(config).eval()
    pixels = torch.randn(2, 8, 3, 32, 32)
    ids = torch.randint(3, 64, (2, 2, 5))
    with torch.no_grad():
        a = model(pixel_values=pixels, question_input_ids=ids)
        b = model(pixel_values_videos=pixels, question_input_ids=ids)
        as_tuple = model(pixel_values=pixels, question_input_ids=ids, return_dict=False)
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(as_tuple[0], a.logits)
    with pytest.raises(ValueError, match="give one of the two"):
        model(pixel_values=pixels, pixel_values_videos=pixels, question_input_ids=ids)


def test_base_model_outputs():
    torch.manual_seed(0)
    model = MambaVLModel(_config()).eval()
    out = model(**_inputs(), output_hidden_states=True)
    assert out.last_hidden_state.shape == (3, 9, 32) and out.pooler_output.shape == (3, 2, 32)
    torch.testing.assert_close(out.verb_features, out.pooler_output[:, 0])
    torch.testing.assert_close(out.noun_features, out.pooler_output[:, 1])
    assert out.question_last_hidden_state.shape == (3, 2, 6, 32)
    assert len(out.hidden_states) == 2 and out.hidden_states[-1] is out.last_hidden_state
    noun_first = MambaVLForVideoClassification(_config(question_types=("noun", "verb"))).eval()
    out = noun_first(**_inputs())
    torch.testing.assert_close(out.noun_features, noun_first.mambavl(**_inputs()).pooler_output[:, 0])


def test_single_question_single_head_mode():
    model = _model(question_types=("action",), num_labels=7)
    assert not hasattr(model, "verb_head") and model.classifier.out_features == 7
    g = torch.Generator().manual_seed(2)
    features, ids = torch.randn(3, 9, 24, generator=g), torch.randint(3, 64, (3, 6), generator=g)
    out = model(video_features=features, question_input_ids=ids, labels=torch.tensor([0, 6, 3]))
    assert out.logits.shape == (3, 7) and out.verb_logits is None and out.noun_logits is None
    torch.testing.assert_close(out.loss, F.cross_entropy(out.logits, torch.tensor([0, 6, 3]), label_smoothing=0.1))
    out.loss.backward()
    assert model.classifier.weight.grad is not None
    with pytest.raises(ValueError, match="one head"):
        model(video_features=features, question_input_ids=ids, verb_labels=torch.tensor([0, 1, 2]))


@pytest.mark.parametrize("fusion_type", ["ssm", "transformer"])
def test_gradient_checkpointing_gives_the_same_gradients(fusion_type):
    overrides = dict(fusion_type=fusion_type, fuser_layers=2, fuser_heads=2, fuser_dropout=0.0, fuser_drop_path=0.0,
                     num_fusion_layers=2)
    inputs, labels = _inputs(), torch.tensor([0, 5, 9])
    grads = []
    for checkpointing in (False, True):
        model = _model(**overrides).train()
        if checkpointing:
            model.activation_checkpointing_enable()
            layers = [m for m in model.modules() if getattr(m, "gradient_checkpointing", False)]
            assert len(layers) >= 2
        model(**inputs, labels=labels).loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)
