"""Untrusted files: weights are read from safetensors only (pickles are refused unless the caller opts in), broken
safetensors files are named, and ``trust_remote_code`` is never needed once the package is imported."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForVideoClassification, pipeline

import modeling_mambavl
from modeling_mambavl import MambaVLForVideoClassification, MambaVLModel


class _Payload:
    """A pickle that creates a file when it is unpickled (what a malicious ``pytorch_model.bin`` would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def saved(tiny_saved):
    folder, model, _ = tiny_saved
    return folder, model


def _copy(saved, tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(saved[0], folder)
    return folder


def _pickled_only(saved, tmp_path) -> Path:
    """The saved checkpoint with its weights as ``pytorch_model.bin`` (pickled) and no safetensors."""
    folder = _copy(saved, tmp_path, "pickled")
    (folder / "model.safetensors").unlink()
    torch.save(saved[1].state_dict(), folder / "pytorch_model.bin")
    return folder


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("loader", ["class", "auto", "base_model", "load_model_and_processor", "pipeline"])
def test_pickled_only_folder_is_refused_naming_the_file(saved, tmp_path, loader):
    from modeling_mambavl.saving import load_model_and_processor

    folder = _pickled_only(saved, tmp_path)
    load = {
        "class": MambaVLForVideoClassification.from_pretrained,
        "auto": AutoModelForVideoClassification.from_pretrained,
        "base_model": MambaVLModel.from_pretrained,
        "load_model_and_processor": load_model_and_processor,  # the CLI, the scripts and the Hub helpers
        "pipeline": lambda path: pipeline("video-classification", model=str(path)),
    }[loader]
    # transformers' pipeline factory re-raises a loading error as ValueError, with the message kept.
    with pytest.raises((OSError, ValueError), match=r"pytorch_model\.bin.*use_safetensors=False"):
        load(folder)


def test_opt_in_loads_pickled_weights(saved, tmp_path):
    folder = _pickled_only(saved, tmp_path)
    model = MambaVLForVideoClassification.from_pretrained(folder, use_safetensors=False)
    assert _same_weights(model, saved[1])


def test_a_malicious_pickle_beside_safetensors_is_never_opened(saved, tmp_path):
    folder = _copy(saved, tmp_path, "both")
    marker = tmp_path / "unpickled"
    torch.save({"x": _Payload(marker)}, folder / "pytorch_model.bin")
    model = AutoModelForVideoClassification.from_pretrained(folder)
    assert _same_weights(model, saved[1]) and not marker.exists()
    # The same pickle alone is refused before anything reads it.
    (folder / "model.safetensors").unlink()
    with pytest.raises(OSError, match="pytorch_model.bin"):
        AutoModelForVideoClassification.from_pretrained(folder)
    assert not marker.exists()
    # Sanity: the payload really runs when unpickled, so the checks above could fail.
    torch.load(folder / "pytorch_model.bin", weights_only=False)
    assert marker.exists()


def test_loading_never_calls_torch_load(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load called while loading a checkpoint")

    monkeypatch.setattr(torch, "load", refuse)
    model = AutoModelForVideoClassification.from_pretrained(saved[0])
    assert _same_weights(model, saved[1])


@pytest.mark.parametrize("damage", ["truncated", "header"])
def test_broken_safetensors_error_names_the_file(saved, tmp_path, damage):
    folder = _copy(saved, tmp_path, damage)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:  # the JSON header overwritten
        data[8:24] = b"\x00garbage-garbage"
    weights.write_bytes(bytes(data))
    with pytest.raises(OSError, match=str(weights).replace(".", r"\.") + ": not a valid safetensors file"):
        AutoModelForVideoClassification.from_pretrained(folder)


def test_auto_classes_need_no_remote_code_once_imported(saved, monkeypatch):
    """The saved config carries an ``auto_map`` for users without the package; with it imported, the Auto classes
    resolve to the package's classes and never ask to trust remote code."""
    import json

    assert "auto_map" in json.loads((saved[0] / "config.json").read_text())
    from transformers import AutoConfig, AutoProcessor

    config = AutoConfig.from_pretrained(saved[0])
    model = AutoModelForVideoClassification.from_pretrained(saved[0])
    processor = AutoProcessor.from_pretrained(saved[0])
    assert type(config) is modeling_mambavl.MambaVLConfig
    assert type(model) is MambaVLForVideoClassification and _same_weights(model, saved[1])
    assert type(processor) is modeling_mambavl.MambaVLProcessor
    # The classes are the installed package's, not a copy of the bundled remote code.
    assert type(model).__module__.startswith("modeling_mambavl.")


def test_training_state_is_documented_as_trusted_local_files():
    repo = Path(__file__).resolve().parents[1]
    for doc in ("README.md", "RELIABILITY.md"):
        text = (repo / doc).read_text(encoding="utf-8")
        assert "trusted local files" in text, doc


def test_backbones_are_read_from_safetensors_only(tmp_path):
    """``from_backbones`` (the training script's --vision_backbone / --text_backbone) refuses a pickled backbone."""
    from transformers import BertConfig, BertModel

    backbone = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                    intermediate_size=37))
    folder = tmp_path / "bert"
    backbone.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    torch.save(backbone.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(OSError, match="safetensors"):
        MambaVLForVideoClassification.from_backbones(text=str(folder))
    # The opt-in loads it.
    model = MambaVLForVideoClassification.from_backbones(text=str(folder), use_safetensors=False)
    assert model.config.text_config.hidden_size == 32
