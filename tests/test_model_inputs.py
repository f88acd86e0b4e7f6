"""Wrong inputs to ``MambaVLForVideoClassification.forward`` (modeling.py): wrong shapes or dtypes name the argument,
the shape received and the shape expected; wrong values (class ids, soft targets, token ids, empty questions) name
the argument, the value and what is allowed, and are checked only on CPU tensors."""

from __future__ import annotations

import math

import pytest
import torch

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification


# ------------------------------------------------------------------------------------------------------- forward
@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = MambaVLConfig.from_preset("tiny", image_size=32, vision_config={"image_size": 32},
                                       default_question_input_ids=[[0, 5, 2], [0, 6, 2]])
    return MambaVLForVideoClassification(config).eval()


def _pixels(model, batch=2, frames=None, channels=3, size=32, dtype=torch.float32):
    frames = frames or model.config.num_frames
    return torch.zeros(batch, frames, channels, size, size, dtype=dtype)


@pytest.mark.parametrize("case", ["frames", "rank", "channels", "size", "dtype", "question_shape", "question_dtype",
                                  "mask_shape", "question_batch", "label_shape"])
def test_wrong_inputs_name_argument_received_and_expected(model, case):
    n = model.config.num_frames
    inputs = {"pixel_values": _pixels(model)}
    if case == "frames":
        inputs["pixel_values"] = _pixels(model, frames=n + 1)
        argument, received, expected = "pixel_values", f"(2, {n + 1}, 3, 32, 32)", f"(batch, {n}, "
    elif case == "rank":
        inputs["pixel_values"] = torch.zeros(2, 3, 32, 32)
        argument, received, expected = "pixel_values", "(2, 3, 32, 32)", f"(batch, {n}, "
    elif case == "channels":
        inputs["pixel_values"] = _pixels(model, channels=1)
        argument, received, expected = "pixel_values", f"(2, {n}, 1, 32, 32)", f"(batch, {n}, 3, 32, 32)"
    elif case == "size":
        inputs["pixel_values"] = _pixels(model, size=48)
        argument, received, expected = "pixel_values", f"(2, {n}, 3, 48, 48)", f"(batch, {n}, 3, 32, 32)"
    elif case == "dtype":
        inputs["pixel_values"] = _pixels(model, dtype=torch.uint8)
        argument, received, expected = "pixel_values", "torch.uint8", "float"
    elif case == "question_shape":
        inputs["question_input_ids"] = torch.zeros(2, 3, 4, dtype=torch.long)
        argument, received, expected = "question_input_ids", "(2, 3, 4)", "(batch=2, 2, length)"
    elif case == "question_dtype":
        inputs["question_input_ids"] = torch.zeros(2, 2, 4)
        argument, received, expected = "question_input_ids", "torch.float32", "integer"
    elif case == "mask_shape":
        inputs["question_input_ids"] = torch.zeros(2, 2, 4, dtype=torch.long)
        inputs["question_attention_mask"] = torch.ones(2, 2, 5, dtype=torch.long)
        argument, received, expected = "question_attention_mask", "(2, 2, 5)", "(2, 2, 4)"
    elif case == "question_batch":
        inputs["question_input_ids"] = torch.zeros(3, 2, 4, dtype=torch.long)
        argument, received, expected = "question_input_ids", "(3, 2, 4)", "(batch=2, 2, length)"
    elif case == "label_shape":
        inputs["verb_labels"] = torch.zeros(3, dtype=torch.long)
        argument, received, expected = "verb_labels", "(3,)", "(2,)"
    else:
        raise AssertionError(case)
    with pytest.raises(ValueError) as err:
        model(**inputs)
    message = str(err.value)
    assert argument in message and received in message and expected in message, message


def test_right_inputs_run(model):
    out = model(pixel_values=_pixels(model), verb_labels=torch.tensor([1, 2]), noun_labels=torch.tensor([3, 4]))
    assert out.logits.shape == (2, len(model.config.actions)) and torch.isfinite(out.loss)


# ------------------------------------------------------------------------------------------ wrong values to forward
def _soft(rows, classes=97, value=None):
    targets = torch.zeros(rows, classes)
    targets[:, 0] = 1.0
    if value is not None:
        targets[0, :2] = torch.tensor(value)
    return targets


@pytest.mark.parametrize(
    ("case", "inputs", "expected"),
    [
        ("verb id 97", {"verb_labels": torch.tensor([1, 97])}, ["verb_labels", "97", "[0, 96]"]),
        ("noun id -3", {"noun_labels": torch.tensor([0, -3])}, ["noun_labels", "-3", "[0, 299]"]),
        ("action id", {"labels": torch.tensor([0, 10**6])}, ["labels", "1000000", "must be in [0, 3806)"]),
        ("bool labels", {"verb_labels": torch.tensor([True, False])}, ["verb_labels", "torch.bool", "class ids"]),
        ("negative soft", {"verb_labels": _soft(2, value=[2.0, -1.0])}, ["verb_labels", "-1", ">= 0"]),
        ("NaN soft", {"noun_labels": _soft(2, 300, value=[math.nan, 1.0])}, ["noun_labels", "NaN", "finite"]),
        ("soft sum 0", {"verb_labels": torch.zeros(2, 97)}, ["verb_labels", "sum to 0", "sum to 1"]),
        ("soft sum 2", {"verb_labels": _soft(2, value=[1.0, 1.0])}, ["verb_labels", "clip 0", "sum to 2"]),
        ("ids past vocab", {"question_input_ids": torch.full((2, 2, 4), 5000)}, ["question_input_ids", "5000", "4096"]),
        ("negative ids", {"question_input_ids": torch.full((2, 2, 4), -1)}, ["question_input_ids", "-1", "0..4095"]),
        ("too long", {"question_input_ids": torch.ones(2, 2, 65, dtype=torch.long)},
         ["question_input_ids", "length 65", "1 to 64 tokens"]),
        ("length 0", {"question_input_ids": torch.ones(2, 2, 0, dtype=torch.long)},
         ["question_input_ids", "length 0", "1 to 64 tokens"]),
        ("all padding", {"question_input_ids": torch.ones(2, 2, 4, dtype=torch.long),
                         "question_attention_mask": torch.tensor([1, 1, 0, 0]).repeat(2, 2, 1).index_put_(
                             (torch.tensor(1), torch.tensor(1)), torch.zeros(4, dtype=torch.long))},
         ["question_attention_mask", "[1, 1]", "at least one"]),
        ("empty batch", {}, []),  # the expected parts depend on the model's frame count: set below
    ],
)
def test_wrong_values_name_argument_value_and_what_is_allowed(model, case, inputs, expected):
    inputs = {"pixel_values": _pixels(model), **inputs}
    if case == "empty batch":
        inputs["pixel_values"] = _pixels(model, batch=0)
        expected = ["pixel_values", "empty batch", f"(0, {model.config.num_frames},"]
    with pytest.raises(ValueError) as err:
        model(**inputs)
    message = str(err.value)
    assert all(part in message for part in expected), message


def test_right_values_still_train(model):
    soft = torch.softmax(torch.randn(2, 97), -1)
    out = model(pixel_values=_pixels(model), verb_labels=soft, noun_labels=torch.tensor([3, -100]),
                question_input_ids=torch.full((2, 2, 64), 7))  # 7: a word, never the pad id
    assert torch.isfinite(out.loss) and out.loss > 0


def test_value_checks_never_read_device_tensors(model, monkeypatch):
    """Values are checked on CPU tensors only: reading a device tensor (``.any()``, ``.item()``) would synchronise
    the device at every step. Shown with tensors whose device is not the CPU (the meta device)."""
    from modeling_mambavl import modeling

    called = []
    monkeypatch.setattr(modeling, "_check_label_values", lambda *a: called.append("labels"))
    monkeypatch.setattr(modeling, "_check_question_values", lambda *a: called.append("questions"))
    labels = torch.tensor([1, 2])
    model._check_labels("verb_labels", labels, 2, 97)
    assert called == ["labels"]
    model._check_labels("verb_labels", labels.to("meta"), 2, 97)
    model._check_labels("verb_labels", torch.zeros(2, 97, device="meta"), 2, 97)
    assert called == ["labels"]
    ids = torch.ones(2, 2, 4, dtype=torch.long)
    model.mambavl._question_inputs(ids, None, 2, ids.device)
    model.mambavl._question_inputs(ids.to("meta"), None, 2, "meta")
    assert called == ["labels", "questions"]
