"""Training data: clips equal load_ek100's exactly (decoded on access or from the cache), evaluation views, the epoch
sampler, bad clips."""

import shutil

import numpy as np
import pytest
import torch
from helpers.train_run import SYNTHETIC, synthetic_cache

from modeling_mambavl import MambaVLProcessor, MambaVLVideoProcessor
from modeling_mambavl.ek100 import load_ek100, make_synthetic_ek100, set_ek100_epoch
from modeling_mambavl.ek100.media import EK100Clips, WindowReader
from modeling_mambavl.processors import MediaError, load_clip, sample_frame_indices
from modeling_mambavl.processors.sampling import view_indices
from modeling_mambavl.training.builders import DataSpec, build_clip_dataset, load_rows, resolve_data
from modeling_mambavl.training.data import ClipCache, EK100ClipDataset, EpochSampler


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    cache = synthetic_cache(tmp_path_factory)
    return resolve_data(None, None, "frames", cache_dir=cache, synthetic=SYNTHETIC), cache


@pytest.fixture(scope="module")
def processor():
    return MambaVLProcessor(MambaVLVideoProcessor(num_frames=4, size={"shortest_edge": 32},
                                                  crop_size={"height": 32, "width": 32}))


@pytest.mark.parametrize("training", [False, True])
def test_clips_equal_load_ek100(data, processor, training, tmp_path):
    spec, _ = data
    rows = load_rows(spec, "train", "recognition")
    reference = load_ek100(spec.annotations_dir, "train", spec.media_root, processor=processor, training=training,
                           seed=3, question_source="generic")
    set_ek100_epoch(reference, 2)
    expected = reference[:]["pixel_values"]
    for cache_dir in (None, tmp_path / "clips"):
        dataset = build_clip_dataset(rows, spec, processor, split="train", task="recognition", training=training,
                                     seed=3, cache_dir=cache_dir)
        dataset.set_epoch(2)
        got = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
        assert torch.equal(got, expected), f"cache={cache_dir}"
        questions = dataset[0]["question_input_ids"]
        assert questions.shape[0] == 2 and torch.equal(questions, reference[0]["question_input_ids"][: , :questions.shape[1]])


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """A small synthetic data set written both as frame folders and as MP4s."""
    return make_synthetic_ek100(tmp_path_factory.mktemp("layouts"), num_train=12, num_validation=12, num_test=12,
                                clips_per_video=4, size=32, seed=2, features=False)


@pytest.mark.parametrize("media", ["frames", "video"])
@pytest.mark.parametrize("task", ["recognition", "anticipation"])
def test_a_clip_is_the_same_through_load_ek100_and_training(layouts, processor, media, task, tmp_path):
    """One pipeline: `load_ek100(processor=...)` and the training / evaluation dataset (decoding on access or from
    the cache) give the same tensors, and the same frames as `load_clip` reading the row's window directly."""
    spec = DataSpec(layouts.annotations_dir, layouts.media_root, media, "synthetic-ek100")
    rows = load_rows(spec, "train", task)
    reader = WindowReader(spec.media_root, media, task, "train")
    sampling, anchor = ("dense", "end") if task == "anticipation" else ("segment", "center")
    for training in (False, True):
        frames = load_ek100(spec.annotations_dir, "train", spec.media_root, media=media, task=task, num_frames=4,
                            training=training, seed=5)
        set_ek100_epoch(frames, 1)
        for row, clip in zip(rows, frames[:]["video"]):
            start, end = reader.seconds(row)
            if end <= start:  # nothing observable before the anticipation gap
                assert clip.shape == (4, 32, 32, 3) and not clip.any()
                continue
            direct = load_clip(str(reader.source(row["video_id"])), window=(start, end), num_frames=4,
                               sampling=sampling, anchor=anchor, training=training, seed=5, epoch=1,
                               index=row["sample_index"], fps=60 if media == "frames" else None)
            assert np.array_equal(clip, direct), (row["narration_id"], training)
        reference = load_ek100(spec.annotations_dir, "train", spec.media_root, media=media, task=task,
                               processor=processor, training=training, seed=5)
        set_ek100_epoch(reference, 1)
        expected = reference[:]["pixel_values"]
        assert expected.shape == (len(rows), 4, 3, 32, 32)
        for cache_dir in (None, tmp_path / f"clips-{training}"):
            dataset = build_clip_dataset(rows, spec, processor, split="train", task=task, training=training,
                                         seed=5, cache_dir=cache_dir)
            dataset.set_epoch(1)
            got = torch.stack([dataset[i]["pixel_values"] for i in range(len(dataset))])
            assert torch.equal(got, expected), (training, cache_dir)


def test_cache_is_reused_and_holds_whole_windows(data, tmp_path):
    spec, _ = data
    rows = load_rows(spec, "validation", "recognition")
    reader = WindowReader(spec.media_root, "frames", "recognition", "validation")
    cache = ClipCache.build(tmp_path, rows, reader)
    again = ClipCache.build(tmp_path, rows, reader)
    assert again.folder == cache.folder and len(list(tmp_path.iterdir())) == 1
    for row in rows[:4]:
        window = reader.window(row)
        frames, fps = cache.frames(row["narration_id"])
        assert frames.shape[0] == window.length and fps == window.fps
        assert np.array_equal(frames, reader.read(row, window, np.arange(window.length)))
    smaller = ClipCache.build(tmp_path, rows, reader, short_side=16)
    assert smaller.folder != cache.folder and smaller.frames(rows[0]["narration_id"])[0].shape[1:3] == (16, 16)


def test_view_indices():
    for length in (3, 8, 41):
        assert np.array_equal(view_indices(length, 8), sample_frame_indices(0, length, 8))
        views = [view_indices(length, 8, view=k, num_views=3) for k in range(3)]
        assert all(v.min() >= 0 and v.max() < length and np.all(np.diff(v) >= 0) for v in views)
    # 3 views of a 48-frame window of 8 segments of 6 frames: offsets 1, 3, 5 inside each segment.
    views = [view_indices(48, 8, view=k, num_views=3) for k in range(3)]
    assert [v[0] for v in views] == [1, 3, 5] and np.array_equal(views[1] - views[0], np.full(8, 2))
    dense = [view_indices(100, 4, sampling="dense", stride=2, fps=30, view=k, num_views=2) for k in range(2)]
    assert dense[0][0] < dense[1][0] and np.array_equal(np.diff(dense[0]), np.full(3, 2))
    assert np.array_equal(view_indices(100, 4, sampling="dense", stride=2, fps=30),
                          sample_frame_indices(0, 100, 4, sampling="dense", stride=2, fps=30))
    with pytest.raises(ValueError, match="single temporal view"):
        view_indices(100, 4, sampling="dense", anchor="end", view=0, num_views=2)


def test_evaluation_views_and_controls(data, processor):
    spec, _ = data
    rows = load_rows(spec, "validation", "recognition")
    plain = build_clip_dataset(rows, spec, processor, split="validation", task="recognition", training=False, seed=0)
    views = build_clip_dataset(rows, spec, processor, split="validation", task="recognition", training=False, seed=0,
                               temporal_views=2, spatial_crops=3)
    item = views[0]
    assert item["pixel_values"].shape == (6, 4, 3, 32, 32)
    # Square frames: the 3 crops along the longer side coincide; the two temporal views differ.
    assert torch.equal(item["pixel_values"][0], item["pixel_values"][1])
    backwards = build_clip_dataset(rows, spec, processor, split="validation", task="recognition", training=False,
                                   seed=0, reverse_frames=True)
    assert torch.equal(backwards[0]["pixel_values"], plain[0]["pixel_values"].flip(0))
    order = list(reversed(range(len(rows))))
    shuffled = build_clip_dataset(rows, spec, processor, split="validation", task="recognition", training=False,
                                  seed=0, question_order=order, question_source="oracle")
    oracle = build_clip_dataset(rows, spec, processor, split="validation", task="recognition", training=False,
                                seed=0, question_source="oracle")
    assert torch.equal(shuffled[0]["question_input_ids"], oracle[len(rows) - 1]["question_input_ids"])


def test_epoch_sampler_is_a_function_of_seed_and_epoch():
    a, b = EpochSampler(50, seed=1), EpochSampler(50, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    assert list(a) == list(b) and sorted(a) == list(range(50))
    b.set_epoch(4)
    assert list(a) != list(b)
    assert list(EpochSampler(5, shuffle=False)) == [0, 1, 2, 3, 4]


def test_bad_clips_are_flagged_or_raise(data, processor, tmp_path):
    spec, _ = data
    media = tmp_path / "media"
    shutil.copytree(spec.media_root / "rgb_frames", media / "rgb_frames")
    rows = load_rows(spec, "validation", "recognition")
    broken = rows[1]
    folder = media / "rgb_frames" / broken["participant_id"] / broken["video_id"]
    for frame in range(broken["start_frame"], broken["stop_frame"] + 2):
        (folder / f"frame_{frame:010d}.jpg").write_bytes(b"not a jpeg")
    moved = type(spec)(spec.annotations_dir, media, "frames", spec.dataset)
    strict = build_clip_dataset(rows, moved, processor, split="validation", task="recognition", training=False,
                                seed=0)
    with pytest.raises(MediaError, match=broken["narration_id"]):
        strict[1]
    lenient = build_clip_dataset(rows, moved, processor, split="validation", task="recognition", training=False,
                                 seed=0, skip_bad_clips=True)
    item = lenient[1]
    assert item["valid"] is False and item["pixel_values"].abs().sum() == 0
    assert lenient[0]["valid"] is True
    cached = ClipCache.build(tmp_path / "clips", rows, WindowReader(media, "frames", "recognition", "validation"),
                             skip_bad_clips=True)
    assert list(cached.bad) == [broken["narration_id"]]
    from_cache = EK100ClipDataset(rows, EK100Clips(cached, processor.video_processor, num_frames=4), skip_bad_clips=True)
    assert from_cache[1]["valid"] is False and from_cache[0]["valid"] is True


def test_rows_with_classes_outside_the_models_heads_are_refused_before_training(data, processor):
    spec, _ = data
    rows = load_rows(spec, "train", "recognition", limit=4)
    reader = WindowReader(spec.media_root, spec.media, "recognition", "train")
    dataset = EK100ClipDataset(rows, EK100Clips(reader, processor.video_processor, num_frames=4))
    dataset.check_labels(97, 300)  # the EK100 vocabulary fits the default heads
    biggest = max(rows, key=lambda r: r["noun_class"])
    with pytest.raises(ValueError) as info:
        dataset.check_labels(97, biggest["noun_class"])
    message = str(info.value)
    assert f"noun_class {biggest['noun_class']}" in message and "narration" in message
    assert f"ids 0..{biggest['noun_class'] - 1}" in message
