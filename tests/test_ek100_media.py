"""Media through `load_ek100`: anticipation never reads past the 1 s gap (real validation rows), and the synthetic
data set reads back identically in its three layouts."""

import math
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from modeling_mambavl import MediaError
from modeling_mambavl.ek100 import load_ek100, make_synthetic_ek100, set_ek100_epoch
from modeling_mambavl.ek100.annotations import ORACLE_QUESTIONS
from modeling_mambavl.processors import MambaVLProcessor, MambaVLVideoProcessor, default_question_tokenizer
from modeling_mambavl.processors.questions import ORACLE_LABEL

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ek100-annotations"
VIDEOS = ("P01_11", "P02_15", "P18_04")  # rows starting in the first 12 s of three validation videos
HORIZON = 12.0


# Frames carry their own index: three base-16 digits as flat colours (robust to JPEG and H.264).
def _index_image(i: int, size: int = 32) -> np.ndarray:
    digits = [(i // 256) % 16, (i // 16) % 16, i % 16]
    return np.broadcast_to(np.array([8 + 16 * d for d in digits], dtype=np.uint8), (size, size, 3)).copy()


def _read_index(frame: np.ndarray) -> int:
    values = frame[8:-8, 8:-8].reshape(-1, 3).mean(axis=0)
    d = [int(round((v - 8) / 16)) for v in values]
    return d[0] * 256 + d[1] * 16 + d[2]


@pytest.fixture(scope="module")
def real_rows():
    if not (SHARED / "EPIC_100_validation.csv").is_file():
        pytest.skip("reference EK100 annotations not present")
    ds = load_ek100(SHARED, "validation", task="anticipation")
    keep = [i for i, (v, s) in enumerate(zip(ds["video_id"], ds["start_sec"])) if v in VIDEOS and s < HORIZON]
    return ds.select(keep)


def _check_sample(rows):
    # The sample covers the interesting cases: empty windows (start < 1 s), clipped ones, and full ones.
    starts = rows["start_sec"]
    assert any(s <= 1.0 for s in starts) and any(1.0 < s < 3.133 for s in starts) and any(s > 3.133 for s in starts)


@pytest.mark.parametrize("sampling", ["dense", "segment"])
def test_anticipation_never_reads_past_the_gap_frames(real_rows, tmp_path, sampling):
    _check_sample(real_rows)
    # An EK100-style 60 fps folder per video, running 2 s past the last action start so that a leak would show.
    for video in VIDEOS:
        folder = tmp_path / "rgb_frames" / video.split("_")[0] / video
        folder.mkdir(parents=True)
        for i in range(int((HORIZON + 2) * 60)):
            Image.fromarray(_index_image(i)).save(folder / f"frame_{i + 1:010d}.jpg", quality=95)
    ds = load_ek100(SHARED, "validation", tmp_path, media="frames", task="anticipation", num_frames=16,
                    sampling=sampling, training=True, check_media=False)
    ds = ds.select(real_rows["sample_index"])  # the row positions in the split
    checked = 0
    for row in ds:
        limit = math.floor((row["start_sec"] - 1.0) * 60)
        clip = row["video"]
        assert clip.shape[0] == 16
        if row["observation_end"] <= 0:
            assert not clip.any()  # nothing observable: black frames
            continue
        # Frame files as numbered by EK100 (start_frame = int(start_sec * 60)); file k shows the frame of (k - 1) / 60 s.
        read = [_read_index(f) + 1 for f in clip]
        assert max(read) <= limit, (row["narration_id"], max(read), limit)
        first = math.floor(row["observation_start"] * 60)
        assert min(read) >= first
        # The clip really reaches the gap (the test is not vacuous): dense sampling is anchored at the window's
        # last frame; segment sampling draws the last frame from the window's last sixteenth.
        reach = 1 if sampling == "dense" else (limit - first) / 16 + 1
        assert max(read) >= limit - reach
        checked += 1
    assert checked >= 10


def test_anticipation_never_reads_past_the_gap_mp4(real_rows, tmp_path):
    _check_sample(real_rows)
    fps = Fraction(60000, 1001)  # the true rate of most EK100 MP4s
    for video in VIDEOS:
        path = tmp_path / "videos" / video.split("_")[0] / f"{video}.MP4"
        path.parent.mkdir(parents=True)
        with av.open(str(path), mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=fps)
            stream.width = stream.height = 32
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": "4", "preset": "ultrafast", "threads": "1"}
            for i in range(int((HORIZON + 2) * 60)):
                frame = av.VideoFrame.from_ndarray(_index_image(i), format="rgb24")
                frame.pts = None
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    ds = load_ek100(SHARED, "validation", tmp_path, media="video", task="anticipation", num_frames=16,
                    check_media=False)
    ds = ds.select(real_rows["sample_index"])  # the row positions in the split
    checked = 0
    for row in ds:
        clip = row["video"]
        if row["observation_end"] <= 0:
            assert not clip.any()
            continue
        pts = [_read_index(f) / fps for f in clip]
        assert max(pts) <= row["start_sec"] - 1.0 + 1e-9, row["narration_id"]
        assert max(pts) > row["start_sec"] - 1.0 - 2 / fps
        checked += 1
    assert checked >= 10


def test_media_errors_name_path_and_narration(real_rows, tmp_path):
    folder = tmp_path / "rgb_frames" / "P01" / "P01_11"
    folder.mkdir(parents=True)
    for i in range(30):  # a truncated folder: 0.5 s of frames
        Image.fromarray(_index_image(i)).save(folder / f"frame_{i + 1:010d}.jpg")
    plain = load_ek100(SHARED, "validation")
    ds = load_ek100(SHARED, "validation", tmp_path, media="frames", check_media=False)
    late = list(plain["narration_id"]).index("P01_11_10")  # starts at 49 s
    with pytest.raises(MediaError, match=r"P01_11.*narration P01_11_10"):
        ds[late]
    other = list(plain["video_id"]).index("P02_15")
    with pytest.raises(FileNotFoundError, match=rf"rgb_frames/P02/P02_15.*{plain['narration_id'][other]}"):
        ds[other]


# ---------------------------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_ek100(tmp_path_factory.mktemp("synthetic"), num_train=24, num_validation=24, num_test=12,
                                clips_per_video=8, size=64, seed=1)


def test_synthetic_reads_back_in_all_three_layouts(synthetic):
    for split in ("train", "validation", "test"):
        frames = load_ek100(synthetic.annotations_dir, split, synthetic.media_root, media="frames", num_frames=8)
        video = load_ek100(synthetic.annotations_dir, split, synthetic.media_root, media="video", num_frames=8)
        feats = load_ek100(synthetic.annotations_dir, split, synthetic.features_dir, media="features")
        a, b, c = frames[:], video[:], feats[:]  # one decode of every clip per layout
        labels = [name for name in frames.column_names if name != "sample_index"]
        for column in labels:
            assert a[column] == b[column] == c[column], column
        assert len(a["video"]) == frames.num_rows and c["video_features"].shape == (frames.num_rows, 8, 192)
        for clip_a, clip_b in zip(a["video"], b["video"]):
            assert clip_a.shape == clip_b.shape == (8, 64, 64, 3)
            # The same frames from the JPEG folder and the MP4, within codec tolerance.
            assert np.abs(clip_a.astype(np.int16) - clip_b.astype(np.int16)).mean() < 6.0
        if split != "test":
            assert "verb_class" in labels and len(set(frames["verb_class"])) >= 4


def test_synthetic_objects_are_visible_in_every_sampled_frame(synthetic):
    # Segment sampling (eval) inside the annotated window only shows clip frames, never the plain gap between clips.
    ds = load_ek100(synthetic.annotations_dir, "validation", synthetic.media_root, media="frames", num_frames=8)
    for clip in ds[:]["video"]:
        for frame in clip.astype(np.int16):
            spread = np.abs(frame - np.median(frame.reshape(-1, 3), axis=0)).max(axis=-1)
            assert (spread > 80).sum() >= 10  # bright object pixels on the muted background


def test_processor_questions_and_epochs(synthetic):
    video_processor = MambaVLVideoProcessor(num_frames=8, size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    processor = MambaVLProcessor(video_processor, default_question_tokenizer(), max_length=24)
    ds = load_ek100(synthetic.annotations_dir, "train", synthetic.media_root, media="frames", processor=processor,
                    question_source="oracle", training=True, seed=7)
    assert ORACLE_QUESTIONS == ORACLE_LABEL and ORACLE_QUESTIONS in ds.info.description
    batch = ds[0:3]
    assert batch["pixel_values"].shape == (3, 8, 3, 64, 64)
    assert batch["question_input_ids"].shape == (3, 2, 24) and batch["question_attention_mask"].shape == (3, 2, 24)
    assert "[MASK]" in processor.tokenizer.decode(batch["question_input_ids"][0, 0])
    # Training samples are a function of (seed, epoch, sample_index): the same again, different next epoch.
    again = ds[0:3]["pixel_values"]
    assert np.array_equal(batch["pixel_values"].numpy(), again.numpy())
    set_ek100_epoch(ds, 1)
    assert not np.array_equal(batch["pixel_values"].numpy(), ds[0:3]["pixel_values"].numpy())
    single = ds[2]  # one example at a time (a DataLoader) gives the same as the batch
    assert single["question_input_ids"].shape == (2, 24)
    with pytest.raises(ValueError, match="oracle"):
        load_ek100(synthetic.annotations_dir, "test", synthetic.media_root, media="frames", question_source="oracle")
    generic = load_ek100(synthetic.annotations_dir, "test", synthetic.features_dir, media="features",
                         question_source="generic")
    assert len(generic[0]["questions"]) == 2 and "verb_class" not in generic.column_names


def test_zero_length_segment_reads_its_frame(tmp_path):
    annotations = tmp_path / "annotations"
    annotations.mkdir()
    header = "narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,stop_frame"
    (annotations / "EPIC_100_test_timestamps.csv").write_text(
        f"{header}\nP01_101_0,P01,P01_101,,00:00:00.50,00:00:00.50,25,25\n"
    )
    folder = tmp_path / "rgb_frames" / "P01" / "P01_101"  # 50 fps
    folder.mkdir(parents=True)
    for i in range(60):
        Image.fromarray(_index_image(i)).save(folder / f"frame_{i + 1:010d}.jpg", quality=95)
    ds = load_ek100(annotations, "test", tmp_path, media="frames", num_frames=4)
    assert [_read_index(f) for f in ds[0]["video"]] == [25] * 4  # the frame shown at 0.5 s



# ------------------------------------------------------------------------------------- paths built from video ids
@pytest.mark.parametrize("video_id", ["P01_../../../secret", "P01_01/../../x", "../P01_01", "P01_01.MP4"])
def test_media_paths_refuse_ids_that_are_not_ek100_ids(tmp_path, video_id):
    from modeling_mambavl.ek100.layout import frame_folder, video_file

    for build in (frame_folder, video_file):
        with pytest.raises(ValueError) as info:
            build(tmp_path / "media", video_id)
        assert repr(video_id) in str(info.value) and "P01_01" in str(info.value)


def test_media_paths_refuse_a_link_out_of_the_media_root(tmp_path):
    from modeling_mambavl.ek100.layout import frame_folder, video_file
    from modeling_mambavl.ek100.media import EK100Transform

    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "media" / "videos").mkdir(parents=True)
    (tmp_path / "media" / "videos" / "P01").symlink_to(outside, target_is_directory=True)
    assert frame_folder(tmp_path / "media", "P01_01") == tmp_path / "media" / "rgb_frames" / "P01" / "P01_01"
    with pytest.raises(ValueError, match="outside the media root"):
        video_file(tmp_path / "media", "P01_01")
    transform = EK100Transform(media_root=tmp_path / "media", media="video", task="recognition", split="validation")
    with pytest.raises(ValueError, match="P01_01.*outside the media root"):
        transform.check({"narration_id": ["P01_01_0"], "video_id": ["P01_01"]})
