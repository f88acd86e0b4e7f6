"""A bf16-autocast training step (as Accelerate runs it with ``mixed_precision="bf16"``) on the CPU: finite, within
2e-2 of fp32, with A_log, D, the dt bias and the norms kept (and computed) in fp32."""

import copy

import torch

import modeling_mambavl.mixer as mixer_module
from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor
from modeling_mambavl.training.steps import compute_loss

FP32_PARAMS = ("A_log", ".D", "dt_proj.bias", "norm")


def _model_and_batch():
    torch.manual_seed(0)
    processor = MambaVLProcessor()
    config = MambaVLConfig.from_preset("tiny", image_size=32, vision_config={"image_size": 32},
                                       **processor.default_question_inputs())
    model = MambaVLForVideoClassification(config).train()
    g = torch.Generator().manual_seed(1)
    questions = processor.tokenizer(["what is the person doing?", "which object is being used in this clip?"] * 2,
                                     padding="max_length", truncation=True,
                                     max_length=len(config.default_question_input_ids[0]), return_tensors="pt")
    ids = questions["input_ids"].reshape(2, 2, -1)
    batch = {
        "pixel_values": torch.randn(2, 8, 3, 32, 32, generator=g),
        "question_input_ids": ids,
        "question_attention_mask": questions["attention_mask"].reshape(ids.shape),
        "verb_labels": torch.tensor([3, 7]),
        "noun_labels": torch.tensor([1, 5]),
        "valid": torch.tensor([True, True]),
    }
    return model, batch


def _step(model, batch, backward):
    config = model.config
    loss, _ = compute_loss(model, batch, num_verbs=config.num_verb_classes, num_nouns=config.num_noun_classes)
    backward(loss)
    grads = {n: p.grad.detach().float().clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach().float(), grads


def test_bf16_autocast_step_matches_fp32(fresh_accelerate_state, monkeypatch):
    from accelerate import Accelerator

    model, batch = _model_and_batch()
    reference = copy.deepcopy(model)
    for module in (model, reference):  # dropout off: the two runs must see the same network
        for m in module.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    loss32, grads32 = _step(reference, batch, lambda loss: loss.backward())

    scans = []
    scan = mixer_module.selective_scan

    def spy(u, delta, A, B, C, D=None, z=None, delta_bias=None, **kwargs):
        scans.append({"u": u.dtype, "delta": delta.dtype, "A": A.dtype, "D": D.dtype,
                      "delta_bias": None if delta_bias is None else delta_bias.dtype})
        return scan(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, **kwargs)

    monkeypatch.setattr(mixer_module, "selective_scan", spy)
    accelerator = Accelerator(mixed_precision="bf16", cpu=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model, optimizer = accelerator.prepare(model, optimizer)
    loss16, grads16 = _step(model, batch, accelerator.backward)

    # autocast really ran in bf16 (the mixers' projections), and the SSM parameters entered the scan in fp32
    assert scans and any(s["u"] == torch.bfloat16 for s in scans)
    assert all(s["A"] == s["D"] == torch.float32 for s in scans)
    assert all(s["delta_bias"] in (None, torch.float32) for s in scans)
    assert all(s["delta"] == torch.float32 for s in scans if s["delta_bias"] is None)  # masked: softplus in fp32

    assert torch.isfinite(loss16) and all(torch.isfinite(g).all() for g in grads16.values())
    assert abs(loss16 - loss32) / abs(loss32) <= 2e-2, (loss16.item(), loss32.item())
    assert grads16.keys() == grads32.keys()
    diff = torch.sqrt(sum(((grads16[n] - grads32[n]) ** 2).sum() for n in grads32))
    norm = torch.sqrt(sum((g ** 2).sum() for g in grads32.values()))
    assert diff / norm <= 2e-2, (diff / norm).item()
    assert diff > 0  # bf16 did change the arithmetic

    optimizer.step()
    params = dict(accelerator.unwrap_model(model).named_parameters())
    kept = [n for n in params if any(k in n for k in FP32_PARAMS)]
    assert any("A_log" in n for n in kept) and any(n.endswith(".D") for n in kept)
    assert any("dt_proj.bias" in n for n in kept) and any("norm" in n for n in kept)
    assert all(params[n].dtype == torch.float32 and params[n].grad.dtype == torch.float32 for n in kept
               if params[n].grad is not None)
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params.values())
