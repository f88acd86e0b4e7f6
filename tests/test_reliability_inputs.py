"""Bad configs and bad inputs: every ``MambaVLConfig`` field has a bad value that is refused naming the field (the
field list is read from the class, so a new field without a case fails here); wrong shapes or dtypes given to
``forward`` name the argument, the shape received and the shape expected; property-based tests (hypothesis) on the
config, the frame sampling and the video processor: a valid result or the project's own clear error, nothing else."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from huggingface_hub.errors import StrictDataclassFieldValidationError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification
from modeling_mambavl.processors import MambaVLVideoProcessor, MediaError
from modeling_mambavl.processors.sampling import sample_frame_indices
from modeling_mambavl.processors.video_io import clip_indices

NAN = float("nan")

# One refused value per field (a wrong value of the right type where the type allows one).
BAD_FIELD_VALUES = {
    "vision_config": 42,
    "vision_feature_dim": 0,
    "video_token_order": "twh",
    "video_has_cls": "yes",
    "video_temporal_size": -2,
    "text_config": {"model_type": "roberta", "hidden_size": "wide"},
    "text_encoder": "pooled",
    "freeze_text_encoder": "no",
    "text_embedding_dropout": 1.0,
    "hidden_size": 0,
    "state_size": -16,
    "expand": 0,
    "conv_kernel": 0,
    "time_step_rank": 0,
    "time_step_min": 0.0,
    "time_step_max": 1e-6,  # below time_step_min
    "time_step_floor": -1e-4,
    "fusion_type": "attention",
    "vision_adapter": "mlp",
    "num_fusion_layers": 0,
    "share_state_matrix": "yes",
    "fuser_layers": 0,
    "fuser_heads": -4,
    "fuser_mlp_ratio": 0.0,
    "fuser_max_position_embeddings": 0,
    "fuser_dropout": 1.0,
    "fuser_drop_path": -0.1,
    "question_types": ("verb",),
    "question_pooling": "max",
    "default_question_input_ids": [[1, 2]],  # one row for two question types
    "default_question_attention_mask": [[1, 1], [1, 1]],  # without input ids
    "num_verb_classes": 0,
    "num_noun_classes": -300,
    "verb_id2label": {0: "take"},
    "noun_id2label": {"a": "tap"},
    "actions": [[97, 0]],
    "num_frames": 0,
    "image_size": -224,
    "image_mean": [0.5],
    "image_std": [0.5, 0.0, 0.5],
    "label_smoothing": 1.5,
    "head_dropout": NAN,
    "layer_norm_eps": 0.0,
    "rms_norm_eps": -1e-5,
    "initializer_range": -0.02,
    "scan_backend": "Fast Scan!",
    "mixer_chunk_size": 0,
    "initializer": "xavier",
    "question_pad_token_id": -1,
    "authors_text_encoder": True,  # needs text_encoder="full"; the default SSM model runs the embeddings only
    "mixer_recompute": "everything",
}
# Fields that hold a number checked for range: NaN and infinity are refused too.
FLOAT_FIELDS = ("text_embedding_dropout", "time_step_min", "time_step_max", "time_step_floor", "fuser_mlp_ratio",
                "fuser_dropout", "fuser_drop_path", "label_smoothing", "head_dropout", "layer_norm_eps",
                "rms_norm_eps", "initializer_range")


def _own_fields() -> list[str]:
    inherited = {f.name for f in dataclasses.fields(MambaVLConfig.__mro__[1])} if dataclasses.is_dataclass(
        MambaVLConfig.__mro__[1]) else set()
    return [f.name for f in dataclasses.fields(MambaVLConfig) if f.name in MambaVLConfig.__annotations__
            and f.name not in inherited]


def test_every_field_has_a_validation_case():
    fields = _own_fields()
    assert len(fields) >= 40  # the enumeration really found the config's fields
    assert set(fields) == set(BAD_FIELD_VALUES), (set(fields) ^ set(BAD_FIELD_VALUES))


@pytest.mark.parametrize("field", sorted(BAD_FIELD_VALUES))
def test_bad_field_value_is_refused_naming_the_field(field):
    with pytest.raises((ValueError, StrictDataclassFieldValidationError)) as err:
        MambaVLConfig(**{field: BAD_FIELD_VALUES[field]})
    assert field in str(err.value)


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [NAN, math.inf])
def test_non_finite_numbers_are_refused(field, value):
    with pytest.raises(ValueError) as err:
        MambaVLConfig(**{field: value})
    assert field in str(err.value)


def _field_values():
    anything = st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True),
                         st.text(max_size=8), st.lists(st.integers(-3, 400), max_size=3))
    return st.dictionaries(st.sampled_from(sorted(BAD_FIELD_VALUES)), anything, max_size=4)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(_field_values())
def test_random_config_values_give_a_config_or_a_named_error(kwargs):
    try:
        config = MambaVLConfig(**kwargs)
    except StrictDataclassFieldValidationError as e:
        assert any(k in str(e) for k in kwargs), str(e)
        return
    except ValueError as e:
        assert "MambaVLConfig." in str(e) or any(k in str(e) for k in kwargs), str(e)
        return
    # Accepted: it must survive a JSON round trip unchanged.
    again = MambaVLConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()


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


# ----------------------------------------------------------------------------------------------- sampling, processor
@settings(max_examples=300, deadline=None, database=None)
@given(total=st.integers(-3, 400), fps=st.one_of(st.floats(-5, 120), st.just(NAN)),
       start=st.one_of(st.floats(-10, 30), st.sampled_from([NAN, math.inf, -math.inf])),
       length=st.one_of(st.floats(-5, 20), st.sampled_from([NAN, math.inf])), num_frames=st.integers(-2, 24),
       sampling=st.sampled_from(["segment", "dense"]), training=st.booleans())
def test_random_windows_give_frames_in_range_or_a_clear_error(total, fps, start, length, num_frames, sampling,
                                                              training):
    window = (start, start + length)
    try:
        idx = clip_indices(total, fps, window=window, num_frames=num_frames, sampling=sampling, training=training,
                           path="clip.mp4")
    except MediaError as e:
        assert e.path == "clip.mp4" and e.window == window, str(e)
        return
    except ValueError as e:  # arguments that are not about a file: fps, num_frames
        assert any(w in str(e) for w in ("fps", "num_frames", "frames", "sampling")), str(e)
        return
    idx = np.asarray(idx)
    # Indices past the last frame are allowed (they repeat it when read), none before the first.
    assert idx.shape == (num_frames,) and (idx >= 0).all() and total > 0 and fps > 0


@settings(max_examples=200, deadline=None, database=None)
@given(first=st.integers(-3, 300), count=st.integers(-3, 300), num_frames=st.integers(-2, 40),
       training=st.booleans(), sampling=st.sampled_from(["segment", "dense", "uniform"]))
def test_random_sampling_requests_give_indices_in_range_or_a_clear_error(first, count, num_frames, training,
                                                                        sampling):
    try:
        idx = sample_frame_indices(first, first + count, num_frames, sampling=sampling, training=training,
                                   generator=np.random.default_rng(0))
    except ValueError as e:
        assert any(w in str(e) for w in ("num_frames", "sampling", "start", "end", "frames", "range")), str(e)
        return
    idx = np.asarray(idx)
    assert idx.shape == (num_frames,) and (idx >= first).all() and (idx < max(first + count, first + 1)).all()


@pytest.fixture(scope="module")
def video_processor():
    return MambaVLVideoProcessor(num_frames=4, size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})


_DTYPES = st.sampled_from([np.uint8, np.float32, np.float64, np.int64, np.bool_, np.float16])


@settings(max_examples=80, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.lists(st.integers(0, 12), min_size=2, max_size=5), dtype=_DTYPES,
       window=st.one_of(st.none(), st.tuples(st.one_of(st.floats(-2, 5), st.just(NAN)), st.floats(-2, 5))),
       fill=st.one_of(st.floats(-2, 300), st.sampled_from([NAN, math.inf])))
def test_random_arrays_through_the_video_processor(video_processor, shape, dtype, window, fill):
    array = np.full(shape, fill).astype(dtype) if dtype is not np.bool_ else np.zeros(shape, dtype)
    try:
        out = video_processor(videos=[array], windows=[window], fps=30.0)
    except (MediaError, ValueError) as e:
        # The project's own error: it says what is wrong with the video, the window or the array.
        assert any(w in str(e) for w in ("video", "frame", "window", "array", "shape", "channel", "fps", "4-D")), str(e)
        return
    pixels = out["pixel_values"]
    assert tuple(pixels.shape) == (1, 4, 3, 16, 16)


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
