"""Every fusion type and control, on features and on tiny VideoMAE / TimeSformer backbones; padding invariance."""


import pytest
import torch

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification

FUSIONS = ["ssm", "transformer", "mlp", "none", "mean_mlp"]
TEXT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 40}
ROBERTA_TEXT = {"model_type": "roberta", "pad_token_id": 1, "type_vocab_size": 1, **TEXT}


def _config(backbone: str, fusion_type: str, **overrides) -> MambaVLConfig:
    common = dict(hidden_size=32, fusion_type=fusion_type, fuser_layers=2, fuser_heads=2, scan_backend="reference")
    if backbone == "features":
        return MambaVLConfig.from_preset("features-768", vision_feature_dim=24, text_config=TEXT, **common,
                                         **overrides)
    vision = {"model_type": backbone, "image_size": 32, "patch_size": 16, "num_frames": 4, "hidden_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    if backbone == "videomae":
        vision["tubelet_size"] = 2
    return MambaVLConfig.from_preset("tiny", vision_config=vision, num_frames=4, image_size=32,
                                     text_config={**TEXT, "model_type": "bert"}, **common, **overrides)


def _scale_up(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random O(1)-gain weights, so that outputs are O(1) and a 1e-5 tolerance means something (the default
    initialisation gives logits of ~1e-5). The state matrix and time-step biases keep their Mamba values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("A_log", "dt_proj.bias")):
                continue
            std = p[0].numel() ** -0.5 if p.dim() >= 2 else 0.5
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def _video_inputs(config: MambaVLConfig, batch: int = 2) -> dict:
    if config.vision_config is None:
        return {"video_features": torch.randn(batch, 13, config.vision_feature_dim)}
    return {"pixel_values": torch.randn(batch, config.num_frames, 3, 32, 32)}


def _questions(batch: int = 2, length: int = 9, valid=(6, 4), pad_id: int = 0, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, 2, length), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for q, n in enumerate(valid):
        ids[:, q, :n] = torch.randint(3, 64, (batch, n), generator=g)
        mask[:, q, :n] = 1
    return ids, mask


@pytest.mark.parametrize("backbone", ["features", "videomae", "timesformer"])
@pytest.mark.parametrize("fusion_type", FUSIONS)
def test_every_fusion_runs_forward_and_backward(backbone, fusion_type):
    torch.manual_seed(0)
    config = _config(backbone, fusion_type)
    model = MambaVLForVideoClassification(config).train()
    ids, mask = _questions()
    out = model(**_video_inputs(config), question_input_ids=ids, question_attention_mask=mask,
                labels=torch.tensor([3, 1000]))
    assert out.verb_logits.shape == (2, 97) and out.noun_logits.shape == (2, 300)
    assert out.logits.shape == (2, 3806) and torch.isfinite(out.loss)
    out.loss.backward()
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing = [n for n, p in trainable.items() if p.grad is None]
    assert not missing, missing
    assert model.verb_head.weight.grad.abs().sum() > 0 and model.noun_head.weight.grad.abs().sum() > 0
    # The text model is frozen; the controls have none.
    text = model.mambavl.questions
    assert (text is None) == (fusion_type in ("none", "mean_mlp"))
    if text is not None:
        assert not any(p.requires_grad for p in text.text_model.parameters())
        assert not text.text_model.training  # frozen: kept in eval mode


def test_the_controls_ignore_the_questions():
    for fusion_type in ("none", "mean_mlp"):
        model = MambaVLForVideoClassification(_config("features", fusion_type)).eval()
        video = _video_inputs(model.config)
        with torch.no_grad():
            a = model(**video, question_input_ids=_questions(seed=1)[0]).logits
            b = model(**video).logits  # no questions needed
        torch.testing.assert_close(a, b)
        assert model.mambavl.questions is None  # no text model is even built


def _left_pad(ids, mask, pad_id):
    """Move every row's real tokens to the right end."""
    out_ids, out_mask = torch.full_like(ids, pad_id), torch.zeros_like(mask)
    for idx in torch.cartesian_prod(torch.arange(ids.shape[0]), torch.arange(ids.shape[1])):
        b, q = idx.tolist()
        n = int(mask[b, q].sum())
        out_ids[b, q, ids.shape[2] - n:] = ids[b, q, :n]
        out_mask[b, q, ids.shape[2] - n:] = 1
    return out_ids, out_mask


@pytest.mark.parametrize(
    "fusion_type, text, overrides",
    [
        ("ssm", TEXT, {}),
        ("ssm", ROBERTA_TEXT, {}),
        ("ssm", TEXT, {"text_encoder": "full"}),
        ("ssm", TEXT, {"num_fusion_layers": 2}),
        ("transformer", ROBERTA_TEXT, {}),
        ("mlp", TEXT, {}),
    ],
)
def test_left_right_and_extra_padding_give_the_same_logits(fusion_type, text, overrides):
    torch.manual_seed(0)
    config = _config("features", fusion_type, **overrides)
    config = MambaVLConfig(**{**config.to_dict(), "text_config": {**config.text_config.to_dict(), **text}})
    model = _scale_up(MambaVLForVideoClassification(config).eval())
    pad_id = config.text_config.pad_token_id
    video = _video_inputs(config)
    right = _questions(pad_id=pad_id)
    left = _left_pad(*right, pad_id)
    extra_ids = torch.cat([right[0], torch.full((2, 2, 5), pad_id)], dim=-1)
    extra = (extra_ids, torch.cat([right[1], torch.zeros(2, 2, 5, dtype=torch.long)], dim=-1))
    with torch.no_grad():
        outs = [model(**video, question_input_ids=i, question_attention_mask=m) for i, m in (right, left, extra)]
    for other in outs[1:]:
        torch.testing.assert_close(other.verb_logits, outs[0].verb_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(other.noun_logits, outs[0].noun_logits, rtol=0, atol=1e-5)
        torch.testing.assert_close(other.logits, outs[0].logits, rtol=0, atol=1e-5)
    # The padding really is different input: read as words (a mask of ones) the SSM result changes. (Without any mask
    # the model derives one from the pad id: tests/test_authors_options.py.)
    if fusion_type == "ssm" and not overrides:
        with torch.no_grad():
            unmasked = model(**video, question_input_ids=right[0], question_attention_mask=torch.ones_like(right[0]))
        assert (unmasked.verb_logits - outs[0].verb_logits).abs().max() > 1e-2
    assert outs[0].verb_logits.abs().mean() > 0.1  # O(1) logits: the tolerance is meaningful


def test_padded_video_features_with_a_mask_give_the_same_logits():
    torch.manual_seed(0)
    model = _scale_up(MambaVLForVideoClassification(_config("features", "ssm")).eval())
    features = torch.randn(2, 13, 24)
    padded = torch.cat([features, torch.randn(2, 4, 24)], dim=1)
    mask = torch.cat([torch.ones(2, 13), torch.zeros(2, 4)], dim=1).long()
    ids, qmask = _questions()
    with torch.no_grad():
        a = model(video_features=features, question_input_ids=ids, question_attention_mask=qmask)
        b = model(video_features=padded, video_attention_mask=mask, question_input_ids=ids,
                  question_attention_mask=qmask)
    torch.testing.assert_close(b.logits, a.logits, rtol=0, atol=1e-5)
    assert a.verb_logits.abs().mean() > 0.1


def test_include_padding_runs_the_authors_unmasked_fusion():
    torch.manual_seed(0)
    base = _config("features", "ssm")
    text = {**base.text_config.to_dict(), **ROBERTA_TEXT}
    masked = _scale_up(MambaVLForVideoClassification(MambaVLConfig(**{**base.to_dict(), "text_config": text})).eval())
    authors = MambaVLForVideoClassification(
        MambaVLConfig(**{**base.to_dict(), "text_config": text, "question_pooling": "include_padding"})
    ).eval()
    authors.load_state_dict(masked.state_dict())
    video, (ids, mask) = _video_inputs(masked.config), _questions(pad_id=1)
    with torch.no_grad():
        ours = authors(**video, question_input_ids=ids, question_attention_mask=mask)
        different = masked(**video, question_input_ids=ids, question_attention_mask=mask)
        # The authors' computation: RoBERTa embeddings (positions from the pad ids), then the mixers and the mean
        # over every position, padding included.
        base_model = masked.mambavl
        tokens, _ = base_model.vision(**video)
        embedded = base_model.questions.text_model.embeddings(input_ids=ids.reshape(4, -1))
        questions = base_model.questions.mlp(embedded).reshape(2, 2, ids.shape[-1], -1)
        fused = base_model.fusion(tokens, None, questions, None)
    torch.testing.assert_close(ours.verb_logits, masked.verb_head(fused.pooled[:, 0]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.noun_logits, masked.noun_head(fused.pooled[:, 1]), rtol=1e-5, atol=1e-5)
    assert (ours.logits - different.logits).abs().max() > 1e-2
