"""LoRA through PEFT: only adapters and modules_to_save are saved; merged and unmerged models agree."""

import argparse
import json

import pytest
import torch
from helpers.scripts import import_script
from helpers.train_run import TRAIN, run, script_args, synthetic_cache
from safetensors.torch import load_file

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor
from modeling_mambavl.saving import load_model_and_processor, save_model_and_processor


@pytest.fixture(scope="module")
def apply_lora():
    for module in import_script(TRAIN, "train_ek100_for_lora"):
        yield module.apply_lora


def _inputs(batch=2):
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(batch, 8, 3, 32, 32, generator=g)}


def test_adapters_only_and_merge(apply_lora, tmp_path):
    torch.manual_seed(0)
    processor = MambaVLProcessor()
    config = MambaVLConfig.from_preset("tiny", image_size=32, vision_config={"image_size": 32},
                                       **processor.default_question_inputs())
    model = MambaVLForVideoClassification(config).eval()
    save_model_and_processor(model, processor, tmp_path / "base")
    args = argparse.Namespace(lora_r=4, lora_alpha=8.0, lora_dropout=0.0, lora_target_modules=None)
    peft_model = apply_lora(model, args, base_path=str(tmp_path / "base"))
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n and "vision.backbone" in n for n in trainable)
    assert not any("vision.backbone" in n and "lora_" not in n for n in trainable)  # the backbone itself is frozen
    assert any("fusion" in n and "modules_to_save" in n for n in trainable)
    with torch.no_grad():  # as after training: non-zero adapters, changed heads
        for name, param in peft_model.named_parameters():
            if "lora_B" in name or ("modules_to_save" in name and "verb_head" in name):
                param.add_(0.05 * torch.randn_like(param))
    peft_model.eval()
    with torch.no_grad():
        unmerged = peft_model(**_inputs())

    save_model_and_processor(peft_model, processor, tmp_path / "adapters")
    files = {p.name for p in (tmp_path / "adapters").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= files and "model.safetensors" not in files
    saved = load_file(str(tmp_path / "adapters" / "adapter_model.safetensors"))
    assert all("lora_" in k or any(m in k for m in ("fusion", "questions.mlp", "vision.norm", "vision.proj",
                                                      "verb_head", "noun_head")) for k in saved)
    assert not any("vision.backbone" in k and "lora_" not in k for k in saved)
    backbone = sum(p.numel() for n, p in model.named_parameters() if "vision.backbone" in n)
    assert sum(t.numel() for t in saved.values()) < sum(p.numel() for p in model.parameters()) - backbone
    assert json.loads((tmp_path / "adapters" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        str(tmp_path / "base")

    loaded, loaded_processor = load_model_and_processor(tmp_path / "adapters")
    merged, _ = load_model_and_processor(tmp_path / "adapters", merge_adapters=True)
    assert isinstance(merged, MambaVLForVideoClassification)
    with torch.no_grad():
        again = loaded.eval()(**_inputs())
        fused = merged.eval()(**_inputs())
    for out in (again, fused):
        torch.testing.assert_close(out.verb_logits, unmerged.verb_logits, atol=1e-5, rtol=0)
        torch.testing.assert_close(out.noun_logits, unmerged.noun_logits, atol=1e-5, rtol=0)
    # get_peft_model wraps `model` in place (its layers now carry the adapters), so the base is compared as saved.
    base, _ = load_model_and_processor(tmp_path / "base")
    with torch.no_grad():
        plain = base.eval()(**_inputs())
    assert not torch.allclose(fused.verb_logits, plain.verb_logits, atol=1e-3)  # the adapters count


@pytest.mark.slow
def test_training_script_saves_adapters(tmp_path_factory, tmp_path):
    cache = synthetic_cache(tmp_path_factory)
    out = tmp_path / "lora"
    proc = run(TRAIN, script_args(cache, out, "--num_train_epochs", "1", "--per_device_train_batch_size", "6",
                                  "--lora_r", "4", "--merge_lora", "--lr", "1e-2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "base_model" / "model.safetensors").is_file()
    assert (out / "best_model" / "adapter_model.safetensors").is_file()
    assert not (out / "best_model" / "model.safetensors").exists()
    assert (out / "best_model_merged" / "model.safetensors").is_file()
    adapters, _ = load_model_and_processor(out / "best_model")
    merged, _ = load_model_and_processor(out / "best_model_merged")
    with torch.no_grad():
        a = adapters.eval()(**_inputs())
        b = merged.eval()(**_inputs())
    torch.testing.assert_close(a.noun_logits, b.noun_logits, atol=1e-5, rtol=0)
    lora_b = [v for k, v in load_file(str(out / "best_model" / "adapter_model.safetensors")).items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # trained
