"""MambaVLVideoProcessor: real video and frame folders to pixel_values, evaluation transforms, training augmentation
drawn from (seed, epoch, index), process_frames on cached frames, save / load."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers import (
    AutoConfig,
    AutoModelForVideoClassification,
    AutoVideoProcessor,
    PreTrainedConfig,
    PreTrainedModel,
    pipeline,
)
from transformers.modeling_outputs import ImageClassifierOutput

from modeling_mambavl import MambaVLVideoProcessor, MediaError
from modeling_mambavl.processors import register_auto_classes
from modeling_mambavl.processors.video_io import load_clip_with_indices

SHARED = Path(__file__).resolve().parents[2] / "shared"
BBB = SHARED / "data" / "videos" / "bigbuckbunny_720p_5s.mp4"


def _reference_eval(frames: np.ndarray, vp: MambaVLVideoProcessor) -> torch.Tensor:
    """Resize the short side to 224, centre-crop 224, scale to [0, 1], normalise with the processor's mean/std."""
    video = torch.from_numpy(frames).permute(0, 3, 1, 2)
    h, w = video.shape[-2:]
    short = vp.size.shortest_edge
    size = [short, int(short * w / h)] if h <= w else [int(short * h / w), short]
    video = TF.resize(video, size, interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    video = TF.center_crop(video, [vp.crop_size.height, vp.crop_size.width]).float() / 255.0
    mean = torch.tensor(vp.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(vp.image_std).view(1, 3, 1, 1)
    return (video - mean) / std


@pytest.fixture(scope="module")
def bbb_folder(tmp_path_factory):
    """A frame folder (EK100 layout) of 60 frames decoded from the real video, downscaled."""
    if not BBB.is_file():
        pytest.skip(f"{BBB} not available")
    frames, _, _ = load_clip_with_indices(str(BBB), num_frames=None, window=(0.0, 2.4))
    folder = tmp_path_factory.mktemp("frames") / "P01_01"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).resize((320, 180)).save(folder / f"frame_{i + 1:010d}.jpg", quality=90)
    return folder


def test_real_mp4_gives_pixel_values_with_processor_mean_std():
    if not BBB.is_file():
        pytest.skip(f"{BBB} not available")
    vp = MambaVLVideoProcessor()
    out = vp(str(BBB), return_tensors="pt")
    assert list(out.keys()) == ["pixel_values"]
    pv = out["pixel_values"]
    assert pv.shape == (1, 16, 3, 224, 224) and pv.dtype == torch.float32
    frames, idx, _ = load_clip_with_indices(str(BBB), num_frames=16)
    assert idx.tolist() == [(2 * i + 1) * 132 // 32 for i in range(16)]  # segment sampling of all 132 frames
    torch.testing.assert_close(pv[0], _reference_eval(frames, vp), atol=1e-4, rtol=0)
    # undoing the processor's normalisation gives pixels in [0, 1]
    mean = torch.tensor(vp.image_mean).view(1, 1, 3, 1, 1)
    std = torch.tensor(vp.image_std).view(1, 1, 3, 1, 1)
    pixels = pv * std + mean
    assert pixels.min() >= -1e-5 and pixels.max() <= 1 + 1e-5
    # another mean/std gives exactly the renormalised values
    other = MambaVLVideoProcessor(image_mean=[0.5, 0.5, 0.5], image_std=[0.25, 0.25, 0.25])
    torch.testing.assert_close(other(str(BBB), return_tensors="pt")["pixel_values"], (pixels - 0.5) / 0.25,
                               atol=1e-4, rtol=0)


def test_frame_folder_gives_pixel_values(bbb_folder):
    vp = MambaVLVideoProcessor()
    out = vp(str(bbb_folder), return_tensors="pt", return_metadata=True)
    assert out["pixel_values"].shape == (1, 16, 3, 224, 224)
    meta = out["video_metadata"][0]
    assert meta.fps == 60.0 and meta.total_num_frames == 60 and meta.video_backend == "frames"
    frames = np.stack([np.asarray(Image.open(bbb_folder / f"frame_{i + 1:010d}.jpg")) for i in meta.frames_indices])
    torch.testing.assert_close(out["pixel_values"][0], _reference_eval(frames, vp), atol=1e-4, rtol=0)
    # windows in seconds at the folder's 60 fps
    out = vp(str(bbb_folder), windows=(0.5, 0.75), num_frames=4, return_tensors="pt", return_metadata=True)
    assert out["video_metadata"][0].frames_indices == [31, 35, 39, 43]


def test_pipeline_arguments_and_whole_windows():
    if not BBB.is_file():
        pytest.skip(f"{BBB} not available")
    vp = MambaVLVideoProcessor(size={"shortest_edge": 64}, crop_size=64)
    # what pipeline("video-classification") passes
    out = vp(str(BBB), num_frames=8, do_sample_frames=True, return_tensors="pt", return_metadata=True)
    assert out["pixel_values"].shape == (1, 8, 3, 64, 64)
    assert out["video_metadata"][0].fps == 25.0 and out["video_metadata"][0].video_backend == "pyav"
    # no sampling: every frame of the window, [floor(1.0 * 25), ceil(1.4 * 25)) = 25..34
    out = vp(str(BBB), do_sample_frames=False, windows=(1.0, 1.4), return_tensors="pt", return_metadata=True)
    assert out["video_metadata"][0].frames_indices == list(range(25, 35))
    assert out["pixel_values"].shape == (1, 10, 3, 64, 64)
    with pytest.raises(ValueError, match="fps"):
        vp(str(BBB), fps=2)


def test_fetch_videos_uses_the_sampling_function():
    if not BBB.is_file():
        pytest.skip(f"{BBB} not available")
    vp = MambaVLVideoProcessor()
    frames, meta = vp.fetch_videos(str(BBB), sample_indices_fn=lambda metadata: [0, 50, 131])
    assert frames.shape == (3, 720, 1280, 3) and meta.frames_indices == [0, 50, 131]
    assert meta.total_num_frames == 132 and meta.fps == 25.0
    idx = vp.sample_frames(meta, num_frames=4, window=(1.0, 2.0))
    assert idx.tolist() == [28, 34, 40, 46]  # segment sampling of [25, 50)


def test_batches_mix_sources_and_windows(bbb_folder):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (30, 90, 120, 3), dtype=np.uint8)
    pil = [Image.fromarray(f) for f in array[:12]]
    vp = MambaVLVideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size=32)
    out = vp([str(bbb_folder), array, pil], windows=[(0.0, 0.5), None, None], return_tensors="pt",
             return_metadata=True)
    assert out["pixel_values"].shape == (3, 4, 3, 32, 32)
    assert [m.frames_indices for m in out["video_metadata"]] == [[3, 11, 18, 26], [3, 11, 18, 26], [1, 4, 7, 10]]
    single = vp(array, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(out["pixel_values"][1:2], single)
    with pytest.raises(ValueError, match="windows has 1 entries for 3 videos"):
        vp([str(bbb_folder), array, pil], windows=[(0.0, 1.0)])
    # a 5-D batch and a list of arrays are the same batch
    batch = np.stack([array, array[::-1]])
    torch.testing.assert_close(vp(batch, return_tensors="pt")["pixel_values"],
                               vp([array, array[::-1]], return_tensors="pt")["pixel_values"])


def test_broken_video_raises_media_error(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(MediaError, match="broken.mp4"):
        MambaVLVideoProcessor()(str(bad), return_tensors="pt")
    with pytest.raises(MediaError, match=r"broken.mp4 \(window 0.500-1.000 s\)") as err:
        MambaVLVideoProcessor()(str(bad), windows=(0.5, 1.0), return_tensors="pt")
    assert err.value.window == (0.5, 1.0)


def _noise_clip(t=8, h=48, w=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def test_training_augmentation_is_seeded_by_seed_epoch_index():
    vp = MambaVLVideoProcessor(num_frames=4, crop_size=32, rand_augment="rand-m7-n4")
    clip = _noise_clip()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = vp([clip, clip], training=True, seed=1, epoch=0, indices=[5, 6], return_tensors="pt")["pixel_values"]
    assert torch.equal(torch.get_rng_state(), state)  # the caller's RNG is untouched
    torch.manual_seed(123)
    np.random.seed(7)  # global state does not matter
    b = vp([clip, clip], training=True, seed=1, epoch=0, indices=[5, 6], return_tensors="pt")["pixel_values"]
    assert a.shape == (2, 4, 3, 32, 32)
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # another index, another clip
    c = vp([clip, clip], training=True, seed=1, epoch=1, indices=[5, 6], return_tensors="pt")["pixel_values"]
    assert not torch.equal(a, c)  # another epoch
    # a clip is the same alone or in a batch: it depends on its own index only
    alone = vp(clip, training=True, seed=1, epoch=0, indices=[6], return_tensors="pt")["pixel_values"]
    assert torch.equal(alone[0], a[1])
    # evaluation is deterministic and does not augment
    e1 = vp(clip, return_tensors="pt")["pixel_values"]
    e2 = vp(clip, seed=9, epoch=3, return_tensors="pt")["pixel_values"]
    assert torch.equal(e1, e2)


def test_augmentation_is_clip_consistent_unless_per_frame():
    still = np.repeat(_noise_clip(t=1), 6, axis=0)  # six identical frames
    vp = MambaVLVideoProcessor(num_frames=6, crop_size=32, rand_augment="rand-m9-n2")
    clip = vp(still, training=True, return_tensors="pt")["pixel_values"][0]
    assert all(torch.equal(clip[0], clip[t]) for t in range(6))
    per_frame = vp(still, training=True, augment_per_frame=True, return_tensors="pt")["pixel_values"][0]
    assert not all(torch.equal(per_frame[0], per_frame[t]) for t in range(6))


def test_random_resized_crop_and_flip_statistics():
    # a horizontal ramp: flips reverse it; crops keep 50-100 % of the area
    ramp = np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[None, None, :, None], (2, 64, 1, 3))
    vp = MambaVLVideoProcessor(num_frames=2, crop_size=32, do_normalize=False)
    flips = 0
    for index in range(60):
        clip = vp(ramp, training=True, indices=[index], return_tensors="pt")["pixel_values"][0, 0, 0]
        left, right = clip[:, :4].mean(), clip[:, -4:].mean()
        flips += bool(left > right)
        span = abs(float(right - left))
        assert span >= 0.45 * 0.75  # at least about half the width (area >= 0.5, aspect <= 4/3) survives the crop
    assert 15 <= flips <= 45
    never = MambaVLVideoProcessor(num_frames=2, crop_size=32, do_normalize=False, flip_prob=0.0)
    for index in range(10):
        clip = never(ramp, training=True, indices=[index], return_tensors="pt")["pixel_values"][0, 0, 0]
        assert clip[:, :4].mean() < clip[:, -4:].mean()


def test_process_frames_on_cached_uint8_frames():
    vp = MambaVLVideoProcessor(num_frames=4, crop_size=32, size={"shortest_edge": 40})
    video = _noise_clip(t=20)
    # decode once (here: the training frame positions of clip 9, epoch 2), augment from the cache
    frames, _, _ = load_clip_with_indices(video, num_frames=4, training=True, seed=3, epoch=2, index=9)
    via_call = vp(video, training=True, seed=3, epoch=2, indices=[9], return_tensors="pt")["pixel_values"]
    cached = vp.process_frames([frames], training=True, seed=3, epoch=2, indices=[9])["pixel_values"]
    assert torch.equal(via_call, cached)
    eval_frames, _, _ = load_clip_with_indices(video, num_frames=4)
    eval_call = vp(video, return_tensors="pt")["pixel_values"]
    assert torch.equal(eval_call, vp.process_frames(eval_frames[None])["pixel_values"])
    assert torch.equal(vp.process_frames([frames], device="cpu", training=True, seed=3, epoch=2,
                                         indices=[9])["pixel_values"], cached)
    as_list = vp.process_frames([frames], return_tensors=None)["pixel_values"]
    assert isinstance(as_list, list) and as_list[0].shape == (4, 3, 32, 32)
    with pytest.raises(ValueError, match="uint8"):
        vp.process_frames([frames.astype(np.float32)])
    with pytest.raises(TypeError, match="unexpected"):
        vp.process_frames([frames], windows=None)


def test_settings_are_validated():
    with pytest.raises(ValueError, match="rand_augment"):
        MambaVLVideoProcessor(rand_augment="rand-m20-n2")
    with pytest.raises(ValueError, match="sampling"):
        MambaVLVideoProcessor(sampling="uniform")
    with pytest.raises(ValueError, match="crop_scale"):
        MambaVLVideoProcessor(crop_scale=(0.9, 0.5))
    with pytest.raises(ValueError, match="anchor"):
        MambaVLVideoProcessor()(_noise_clip(), anchor="middle")


class _VideoConfig(PreTrainedConfig):
    model_type = "mambavl-video-processor-test"


def test_save_and_auto_load_round_trip(tmp_path):
    register_auto_classes(_VideoConfig)
    vp = MambaVLVideoProcessor(num_frames=6, sampling="dense", stride=2, anchor="end", crop_size=48,
                               size={"shortest_edge": 56}, image_mean=[0.4, 0.4, 0.4], image_std=[0.2, 0.3, 0.2],
                               rand_augment="rand-m7-n4", crop_scale=(0.6, 0.9))
    vp.save_pretrained(tmp_path)
    for loaded in (MambaVLVideoProcessor.from_pretrained(tmp_path), AutoVideoProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MambaVLVideoProcessor
        assert (loaded.num_frames, loaded.sampling, loaded.stride, loaded.anchor) == (6, "dense", 2, "end")
        assert loaded.crop_scale == (0.6, 0.9) and loaded.rand_augment == "rand-m7-n4"
        clip = _noise_clip(t=30, h=60, w=70)
        for training in (False, True):
            a = vp(clip, training=training, indices=[4], return_tensors="pt")["pixel_values"]
            b = loaded(clip, training=training, indices=[4], return_tensors="pt")["pixel_values"]
            assert torch.equal(a, b)


class _PipelineConfig(PreTrainedConfig):
    model_type = "mambavl-pipeline-test"
    num_frames: int = 8


class _PipelineModel(PreTrainedModel):
    """A stand-in video classifier: records the pixel_values it gets."""

    config_class = _PipelineConfig
    main_input_name = "pixel_values"

    def __init__(self, config):
        super().__init__(config)
        self.head = torch.nn.Linear(3, config.num_labels)
        self.seen = []
        self.post_init()

    def forward(self, pixel_values, **kwargs):
        self.seen.append(tuple(pixel_values.shape))
        return ImageClassifierOutput(logits=self.head(pixel_values.mean(dim=(1, 3, 4))))


def test_video_classification_pipeline_uses_the_processor(tmp_path):
    if not BBB.is_file():
        pytest.skip(f"{BBB} not available")
    AutoConfig.register(_PipelineConfig.model_type, _PipelineConfig, exist_ok=True)
    AutoModelForVideoClassification.register(_PipelineConfig, _PipelineModel, exist_ok=True)
    register_auto_classes(_PipelineConfig)
    _PipelineModel(_PipelineConfig(num_frames=8, id2label={0: "a", 1: "b", 2: "c"})).save_pretrained(tmp_path)
    MambaVLVideoProcessor(size={"shortest_edge": 32}, crop_size=32).save_pretrained(tmp_path)  # 16 frames by default
    classifier = pipeline("video-classification", model=str(tmp_path))
    assert type(classifier.video_processor) is MambaVLVideoProcessor
    result = classifier(str(BBB), top_k=2)
    assert [r["label"] for r in result] and len(result) == 2
    assert classifier.model.seen == [(1, 8, 3, 32, 32)]  # the pipeline's num_frames=config.num_frames was honoured


def test_non_finite_pixels_are_an_error_by_default_and_an_option():
    from modeling_mambavl import MambaVLProcessor

    clip = np.random.default_rng(0).random((4, 16, 16, 3)).astype(np.float32)
    clip[2, 0, 0] = np.nan
    processor = MambaVLVideoProcessor(num_frames=4, size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16})
    with pytest.raises(ValueError, match=r"NaN / inf value\(s\), the first at frame 2.*allow_non_finite=True"):
        processor(videos=[clip], return_tensors="pt")
    allowed = processor(videos=[clip], allow_non_finite=True, return_tensors="pt")["pixel_values"]
    clean = processor(videos=[np.nan_to_num(clip)], return_tensors="pt")["pixel_values"]
    assert torch.isfinite(allowed).all() and torch.equal(allowed, clean)
    full = MambaVLProcessor(processor)  # the option passes through the processor too
    assert torch.equal(full(videos=[clip], allow_non_finite=True)["pixel_values"], clean)
    assert MambaVLVideoProcessor(allow_non_finite=True).allow_non_finite is True


# --------------------------------------------------------------------------- random arrays (hypothesis)
NAN = float("nan")


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
