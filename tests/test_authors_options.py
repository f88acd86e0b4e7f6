"""The options that reproduce the authors' training rather than their forward: their re-initialisation
(``initializer="authors"`` / ``"authors_with_text"``), the question mask derived from the pad id when none is given,
and their baselines' text branch (``authors_text_encoder``)."""

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import logging as hf_logging

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification

TEXT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 32, "max_position_embeddings": 40}
ROBERTA_TEXT = {"model_type": "roberta", "pad_token_id": 1, "type_vocab_size": 1, **TEXT}


def _xavier_std(tensor: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(tensor)
    return math.sqrt(2.0 / (fan_in + fan_out))


def _std_close(tensor: torch.Tensor, expected: float, rel: float) -> bool:
    return abs(float(tensor.detach().float().std()) - expected) <= rel * expected


def _own_linears(model: MambaVLForVideoClassification) -> dict[str, nn.Linear]:
    """Every nn.Linear of the model outside the text model (the authors' re-initialisation reaches them all)."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, nn.Linear) and ".text_model." not in f".{name}."}


# ----------------------------------------------------------------------------------------------------- initializer
@pytest.fixture(scope="module")
def paper_sized():
    """The paper's sizes (D = 768, RoBERTa-base embeddings), built under each initializer from the same seed."""
    models = {}
    for initializer in ("default", "authors", "authors_with_text"):
        torch.manual_seed(0)
        models[initializer] = MambaVLForVideoClassification(
            MambaVLConfig.from_preset("features-768", initializer=initializer))
    return models


@torch.no_grad()
def test_authors_initializer_reproduces_their_parameter_statistics(paper_sized):
    model = paper_sized["authors_with_text"]
    layer = model.mambavl.fusion.layers[0]
    d_inner, state = layer.A_log.shape
    # xavier on A_log: A = -exp(A_log) is -1 within exp(±sqrt(6 / (d_inner + N))) = ±0.06 at D = 768.
    bound = math.sqrt(6.0 / (d_inner + state))
    A = -torch.exp(layer.A_log)
    assert bound == pytest.approx(0.0622, abs=1e-4)
    assert float(A.max()) <= -math.exp(-bound) and float(A.min()) >= -math.exp(bound)
    assert float(A.mean()) == pytest.approx(-1.0, abs=0.005)
    assert _std_close(layer.A_log, bound / math.sqrt(3.0), rel=0.05)
    for mixer in (layer.video_mixer, layer.text_mixer):
        # Δ bias 0 (dt_proj is an nn.Linear): Δ = softplus(0) = 0.693 before the input moves it.
        assert torch.equal(mixer.dt_proj.bias, torch.zeros_like(mixer.dt_proj.bias))
        assert torch.equal(mixer.D, torch.ones_like(mixer.D))  # 1-d: mamba-ssm's own value
        # The depthwise conv: weight xavier (3-d), bias PyTorch's Conv1d default U(±1/sqrt(kernel)) = U(±0.5).
        assert _std_close(mixer.conv1d.weight, _xavier_std(mixer.conv1d.weight), rel=0.05)
        assert float(mixer.conv1d.bias.abs().max()) <= 0.5 and _std_close(mixer.conv1d.bias, 0.5 / math.sqrt(3), 0.1)
    # Every nn.Linear: trunc-normal std 0.02 (cut at ±2, as torch's trunc_normal_ defaults), zero bias.
    linears = _own_linears(model)
    assert len(linears) == 14  # 2 mixers x 4, the text MLP's 3, the adapter's projection, 2 heads
    for name, linear in linears.items():
        assert linear.weight.numel() < 2000 or _std_close(linear.weight, 0.02, rel=0.05), name
        assert float(linear.weight.abs().max()) <= 2.0, name
        if linear.bias is not None:
            assert torch.equal(linear.bias, torch.zeros_like(linear.bias)), name
    # LayerNorms reset, the frozen RoBERTa's included; its embeddings are xavier: word-embedding std ~0.006.
    text = model.mambavl.questions.text_model
    for norm in (model.mambavl.vision.norm, text.embeddings.LayerNorm):
        assert torch.equal(norm.weight, torch.ones_like(norm.weight))
        assert torch.equal(norm.bias, torch.zeros_like(norm.bias))
    words = text.embeddings.word_embeddings.weight
    assert _xavier_std(words) == pytest.approx(0.00626, abs=1e-5)
    assert _std_close(words, _xavier_std(words), rel=0.01)
    assert _std_close(text.embeddings.position_embeddings.weight, _xavier_std(text.embeddings.position_embeddings.weight),
                      rel=0.03)


@torch.no_grad()
def test_authors_without_text_keeps_the_text_model_and_default_keeps_mamba_init(paper_sized):
    authors, default = paper_sized["authors"], paper_sized["default"]
    # "authors": the same re-initialisation everywhere but the text model, which keeps its own class's init.
    assert torch.equal(authors.mambavl.fusion.layers[0].A_log, paper_sized["authors_with_text"].mambavl.fusion
                       .layers[0].A_log)
    words = authors.mambavl.questions.text_model.embeddings.word_embeddings.weight
    assert _std_close(words, authors.config.text_config.initializer_range, rel=0.01)
    # "default": S4D-real A = -(1..N), Mamba's Δ bias (softplus^-1 of a time step in [0.001, 0.1]).
    layer = default.mambavl.fusion.layers[0]
    expected = torch.log(torch.arange(1, 17, dtype=torch.float32)).expand_as(layer.A_log)
    assert torch.equal(layer.A_log, expected)
    dt = F.softplus(layer.video_mixer.dt_proj.bias)
    assert float(dt.min()) >= 0.001 * 0.999 and float(dt.max()) <= 0.1 * 1.001


def test_authors_initializer_reaches_the_fuser_tables_and_not_a_backbone():
    torch.manual_seed(0)
    config = MambaVLConfig.from_preset("tiny", fusion_type="transformer", initializer="authors", fuser_layers=1)
    model = MambaVLForVideoClassification(config)
    fusion = model.mambavl.fusion
    for table in (fusion.pos_embed_video, fusion.cls_token_text):
        assert _std_close(table, _xavier_std(table), rel=0.1)
    linears = _own_linears(model)
    assert any(".fusion.blocks." in name for name in linears)
    for name, linear in linears.items():
        if ".vision.backbone." in name:  # a backbone keeps its own class's init (the authors loaded theirs after)
            continue
        assert _std_close(linear.weight, config.initializer_range, rel=0.15), name
    backbone_linear = next(m for n, m in linears.items() if ".vision.backbone." in n)
    assert _std_close(backbone_linear.weight, config.vision_config.initializer_range, rel=0.15)


def test_authors_initializer_never_overwrites_loaded_weights(tmp_path):
    torch.manual_seed(0)
    authors = MambaVLForVideoClassification(MambaVLConfig.from_preset("tiny", initializer="authors_with_text"))
    authors.save_pretrained(tmp_path / "authors")
    reloaded = MambaVLForVideoClassification.from_pretrained(tmp_path / "authors")
    assert reloaded.config.initializer == "authors_with_text"
    saved = authors.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in reloaded.state_dict().items())

    # A default-initialised checkpoint loaded with the authors' initializer keeps its weights (S4D-real A included).
    torch.manual_seed(1)
    default = MambaVLForVideoClassification(MambaVLConfig.from_preset("tiny"))
    default.save_pretrained(tmp_path / "default")
    loaded = MambaVLForVideoClassification.from_pretrained(tmp_path / "default", initializer="authors_with_text")
    assert loaded.config.initializer == "authors_with_text"
    saved = default.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in loaded.state_dict().items())


def test_authors_with_text_refuses_a_pretrained_text_model_it_would_overwrite():
    with pytest.raises(ValueError, match=r"text='some/roberta'.*authors_with_text.*initializer='authors'"):
        MambaVLForVideoClassification.from_backbones(text="some/roberta", initializer="authors_with_text")


# ------------------------------------------------------------------------------------------- masks from the pad id
def _scale_up(model: nn.Module) -> nn.Module:
    """O(1)-gain weights (a fresh model's logits are ~1e-6), keeping A_log and the Δ biases."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.endswith(("A_log", "dt_proj.bias")):
                p.copy_(torch.randn(p.shape, generator=g) * (p[0].numel() ** -0.5 if p.dim() >= 2 else 0.5))
    return model


def _padded_questions(pad: int, batch: int = 3, length: int = 12, seed: int = 0):
    """(B, 2, L) right-padded ids of different lengths (no pad id inside) and their mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, 2, length), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for b in range(batch):
        for q in range(2):
            n = int(torch.randint(3, length, (1,), generator=g))
            ids[b, q, :n] = torch.randint(5, 60, (n,), generator=g)
            mask[b, q, :n] = 1
    return ids, mask


@pytest.mark.parametrize("fusion_type, text, question_pooling", [
    ("ssm", ROBERTA_TEXT, "masked"), ("ssm", ROBERTA_TEXT, "include_padding"), ("mlp", {**TEXT, "model_type": "bert"},
                                                                             "masked")])
def test_padded_ids_without_a_mask_give_the_outputs_of_the_explicit_mask(fusion_type, text, question_pooling, caplog):
    torch.manual_seed(0)
    config = MambaVLConfig.from_preset("features-768", vision_feature_dim=24, hidden_size=32, text_config=text,
                                       fusion_type=fusion_type, question_pooling=question_pooling,
                                       scan_backend="reference")
    model = _scale_up(MambaVLForVideoClassification(config)).eval()
    pad = config.text_config.pad_token_id
    ids, mask = _padded_questions(pad)
    video = torch.randn(3, 7, 24)
    hf_logging.warning_once.cache_clear()  # the warning is once per process: start from a clean slate
    with torch.no_grad(), caplog.at_level(logging.WARNING):
        explicit = model(video_features=video, question_input_ids=ids, question_attention_mask=mask)
        assert not caplog.records  # a mask was given: nothing to say
        derived = model(video_features=video, question_input_ids=ids)
        again = model(video_features=video, question_input_ids=ids)
        ones = model(video_features=video, question_input_ids=ids, question_attention_mask=torch.ones_like(ids))
    torch.testing.assert_close(derived.verb_logits, explicit.verb_logits, rtol=0, atol=0)
    torch.testing.assert_close(derived.noun_logits, explicit.noun_logits, rtol=0, atol=0)
    torch.testing.assert_close(again.verb_logits, explicit.verb_logits, rtol=0, atol=0)
    # What the package did before: a mask of ones, which reads the padding as words.
    assert (ones.verb_logits - explicit.verb_logits).abs().max() > 1e-3 * explicit.verb_logits.abs().max()
    warnings = [r.getMessage() for r in caplog.records if "question_attention_mask" in r.getMessage()]
    assert len(warnings) == 1 and f"pad id {pad}" in warnings[0]


def test_question_pad_token_id_is_the_tokenizers_pad_and_wins_over_the_text_config():
    # A RoBERTa-shaped text model (pad 1) read through a tokenizer whose pad is 0 (the package's question tokenizer).
    torch.manual_seed(0)
    common = dict(vision_feature_dim=24, hidden_size=32, text_config=ROBERTA_TEXT, scan_backend="reference")
    config = MambaVLConfig.from_preset("features-768", question_pad_token_id=0, **common)
    model = _scale_up(MambaVLForVideoClassification(config)).eval()
    ids, mask = _padded_questions(0)
    video = torch.randn(3, 7, 24)
    with torch.no_grad():
        explicit = model(video_features=video, question_input_ids=ids, question_attention_mask=mask).verb_logits
        derived = model(video_features=video, question_input_ids=ids).verb_logits
    torch.testing.assert_close(derived, explicit, rtol=0, atol=0)


def test_configs_saved_before_the_new_fields_load_with_their_old_meaning(tmp_path):
    import json

    config = MambaVLConfig.from_preset("tiny")
    config.save_pretrained(tmp_path)
    path = tmp_path / "config.json"
    saved = json.loads(path.read_text())
    for key in ("initializer", "question_pad_token_id", "authors_text_encoder"):
        saved.pop(key)
    path.write_text(json.dumps(saved))
    old = MambaVLConfig.from_pretrained(tmp_path)
    assert (old.initializer, old.question_pad_token_id, old.authors_text_encoder) == ("default", None, False)
    model = _scale_up(MambaVLForVideoClassification(old)).eval()
    ids, mask = _padded_questions(old.text_config.pad_token_id)
    pixels = torch.randn(3, old.num_frames, 3, old.image_size, old.image_size)
    with torch.no_grad():
        explicit = model(pixel_values=pixels, question_input_ids=ids, question_attention_mask=mask).verb_logits
        derived = model(pixel_values=pixels, question_input_ids=ids).verb_logits
    torch.testing.assert_close(derived, explicit, rtol=0, atol=0)


# ------------------------------------------------------------------------------------ the baselines' text branch
def _baseline(authors_text_encoder: bool) -> MambaVLForVideoClassification:
    torch.manual_seed(0)
    config = MambaVLConfig.from_preset("features-768", vision_feature_dim=24, hidden_size=32, fusion_type="mlp",
                                       text_config={**ROBERTA_TEXT, "hidden_dropout_prob": 0.3},
                                       authors_text_encoder=authors_text_encoder)
    return MambaVLForVideoClassification(config)


def test_authors_text_encoder_is_off_by_default_and_needs_the_full_text_model():
    assert MambaVLConfig().authors_text_encoder is False
    assert MambaVLConfig(fusion_type="mlp").authors_text_encoder is False
    with pytest.raises(ValueError, match="MambaVLConfig.authors_text_encoder.*text_encoder='embeddings'"):
        MambaVLConfig(authors_text_encoder=True)


def test_authors_text_encoder_attends_padding_and_keeps_dropout_while_training():
    ours, theirs = _scale_up(_baseline(False)), _baseline(True)
    theirs.load_state_dict(ours.state_dict())
    ids, mask = _padded_questions(1, length=10)
    flat_ids, flat_mask = ids.reshape(-1, 10), mask.reshape(-1, 10)
    for model in (ours, theirs):
        model.eval()
    encoder = theirs.mambavl.questions
    with torch.no_grad():
        # Their call: RoBERTa with the ids alone (positions from ids != pad, padding attended), pooled, then the MLP.
        reference = encoder.mlp(encoder.text_model(input_ids=flat_ids).pooler_output)
        got, _ = encoder(flat_ids, flat_mask, pooled=True)
        masked, _ = ours.mambavl.questions(flat_ids, flat_mask, pooled=True)
        unpadded = torch.randint(5, 60, (4, 10))
        same = [m.mambavl.questions(unpadded, torch.ones_like(unpadded), pooled=True)[0] for m in (ours, theirs)]
    torch.testing.assert_close(got, reference, rtol=0, atol=0)
    assert (masked - got).abs().max() > 1e-2 * got.abs().max()  # padding attended changes the question vectors
    torch.testing.assert_close(same[0], same[1], rtol=1e-6, atol=1e-6)  # without padding the two agree

    # Training: the frozen text model follows the model's mode under the option (dropout active), stays in eval
    # mode otherwise; frozen either way.
    video = torch.randn(3, 7, 24)
    for model, text_training in ((ours, False), (theirs, True)):
        model.train()
        text = model.mambavl.questions.text_model
        assert text.training is text_training
        assert not any(p.requires_grad for p in text.parameters())
        torch.manual_seed(1)
        a = model(video_features=video, question_input_ids=ids, question_attention_mask=mask).verb_logits
        torch.manual_seed(2)
        b = model(video_features=video, question_input_ids=ids, question_attention_mask=mask).verb_logits
        assert (not torch.equal(a, b)) is text_training
        model.eval()
        assert not model.mambavl.questions.text_model.training
