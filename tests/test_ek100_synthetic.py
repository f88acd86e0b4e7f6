import csv
import json
from importlib import resources

import av
import numpy as np
import pytest
from helpers.synthetic_files import folder_digest, split_rows
from PIL import Image

from modeling_mambavl.ek100 import EK100Vocabulary, load_ek100, make_synthetic_ek100
from modeling_mambavl.ek100.annotations import LABELLED_COLUMNS, TEST_COLUMNS
from modeling_mambavl.ek100.synthetic import SYNTHETIC_NOUNS, SYNTHETIC_VERBS, _ClipRenderer

SMALL = dict(num_train=36, num_validation=24, num_test=12, clips_per_video=6, size=64, seed=3)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return make_synthetic_ek100(tmp_path_factory.mktemp("synthetic"), **SMALL)


def test_layout_is_ek100(synthetic):
    vocab = EK100Vocabulary.default()
    package = resources.files("modeling_mambavl.ek100") / "data"
    for name in ("EPIC_100_verb_classes.csv", "EPIC_100_noun_classes.csv", "EPIC_100_actions_3806.csv",
                 "EPIC_100_tail_verbs.csv", "EPIC_100_tail_nouns.csv",
                 "EPIC_100_unseen_participant_ids_validation.csv", "EPIC_100_unseen_participant_ids_test.csv"):
        assert (synthetic.annotations_dir / name).read_bytes() == (package / name).read_bytes()
    header, train = split_rows(synthetic, "train")
    assert tuple(header) == LABELLED_COLUMNS and len(train) == SMALL["num_train"]
    header, test = split_rows(synthetic, "test")
    assert tuple(header) == TEST_COLUMNS and len(test) == SMALL["num_test"]
    _, validation = split_rows(synthetic, "validation")
    assert len(validation) == SMALL["num_validation"]
    with open(synthetic.annotations_dir / "EPIC_100_video_info.csv", newline="") as f:
        info = {r["video_id"]: r for r in csv.DictReader(f)}
    for row in train + validation + test:
        video_id, participant = row["video_id"], row["participant_id"]
        folder = synthetic.media_root / "rgb_frames" / participant / video_id
        assert (folder / f"frame_{int(row['stop_frame']):010d}.jpg").is_file()
        assert (synthetic.media_root / "videos" / participant / f"{video_id}.MP4").is_file()
    fps_seen = set()
    for video_id, row in info.items():
        participant = video_id.split("_")[0]
        expected = 50 if len(video_id.split("_")[1]) == 3 else 60
        with av.open(str(synthetic.media_root / "videos" / participant / f"{video_id}.MP4")) as container:
            stream = container.streams.video[0]
            assert stream.average_rate == expected and (stream.width, stream.height) == (64, 64)
            frames = len(list(container.decode(stream)))
        jpegs = len(list((synthetic.media_root / "rgb_frames" / participant / video_id).glob("frame_*.jpg")))
        assert frames == jpegs and float(row["fps"]) == expected
        fps_seen.add(expected)
    assert fps_seen == {50, 60}  # both EK100 frame rates occur
    for row in train:
        assert vocab.verbs[int(row["verb_class"])].key == row["verb"] and row["noun"] == vocab.nouns[int(row["noun_class"])].key
        assert row["narration"] == f"{row['verb']} {row['noun']}"
        assert vocab.has_action(int(row["verb_class"]), int(row["noun_class"]))


def test_classes_splits_and_short_clips(synthetic):
    vocab = EK100Vocabulary.default()
    _, train = split_rows(synthetic, "train")
    _, validation = split_rows(synthetic, "validation")
    _, test = split_rows(synthetic, "test")
    verbs = {int(r["verb_class"]) for r in train}
    nouns = {int(r["noun_class"]) for r in train}
    assert len(verbs) == len(SYNTHETIC_VERBS) >= 6 and len(nouns) == len(SYNTHETIC_NOUNS) >= 8
    assert {vocab.verb_id(k) for k in ("take", "put", "open", "close")} <= verbs  # the two time-reversal pairs
    assert verbs & vocab.tail_verbs and nouns & vocab.tail_nouns
    assert {r["video_id"] for r in train}.isdisjoint({r["video_id"] for r in validation})
    assert {r["video_id"] for r in validation}.isdisjoint({r["video_id"] for r in test})
    train_participants = {r["participant_id"] for r in train}
    unseen_val = {r["participant_id"] for r in validation} - train_participants
    assert unseen_val and unseen_val <= vocab.unseen_participants["validation"]
    assert ({r["participant_id"] for r in test} - train_participants) <= vocab.unseen_participants["test"]
    rows = train + validation + test
    short = [r for r in rows if int(r["stop_frame"]) - int(r["start_frame"]) + 1 < 8]
    assert len(short) >= 0.1 * len(rows)


@pytest.mark.parametrize("verb", sorted(SYNTHETIC_VERBS))
def test_verbs_are_motions_and_reversals(verb):
    rng = np.random.default_rng(0)
    for _ in range(40):
        renderer = _ClipRenderer(rng, verb, "plate", 112, 30)
        x0, y0, r0 = renderer.state(0.0)
        x1, y1, r1 = renderer.state(1.0)
        path = [renderer.state(u) for u in np.linspace(0, 1, 31)]
        assert all(r - 1e-9 <= s[0] - s[2] and s[0] + s[2] <= 112 - r + 1e-9 for s in path for r in (0,))  # in frame
        if verb == "take":
            assert y1 < y0 - 25 and r1 == r0
        elif verb == "put":
            assert y1 > y0 + 25 and r1 == r0
        elif verb == "open":
            assert r1 > 1.65 * r0 and (x1, y1) == (x0, y0)
        elif verb == "close":
            assert r0 > 1.65 * r1 and (x1, y1) == (x0, y0)
        elif verb == "move":
            assert abs(x1 - x0) > 25 and abs(y1 - y0) < 5
        else:  # shake: back and forth
            xs = np.array([s[0] for s in path])
            assert np.sum(np.diff(np.sign(np.diff(xs))) != 0) >= 2


@pytest.mark.parametrize(("a", "b", "coordinate"), [("take", "put", 1), ("open", "close", 2)])
def test_no_single_frame_tells_a_time_reversal_pair_apart(a, b, coordinate):
    # Over random clips and instants, the object's height (take/put) or size (open/close) has nearly the same
    # distribution for both verbs of a pair: one frame does not tell them apart, only the motion does.
    rng = np.random.default_rng(1)

    def values(verb):
        out = []
        for _ in range(400):
            renderer = _ClipRenderer(rng, verb, "box", 112, 30)
            out.append(renderer.state(rng.random())[coordinate])
        return np.array(out)

    va, vb = values(a), values(b)
    bins = np.linspace(min(va.min(), vb.min()), max(va.max(), vb.max()), 9)
    ha, hb = np.histogram(va, bins)[0] / len(va), np.histogram(vb, bins)[0] / len(vb)
    assert np.minimum(ha, hb).sum() > 0.75  # histogram overlap


def test_deterministic(tmp_path):
    settings = dict(num_train=12, num_validation=12, num_test=12, clips_per_video=12, size=48, seed=5)
    a = make_synthetic_ek100(tmp_path / "a", **settings)
    b = make_synthetic_ek100(tmp_path / "b", **settings)
    assert folder_digest(a.root) == folder_digest(b.root)
    c = make_synthetic_ek100(tmp_path / "c", **{**settings, "seed": 6})
    assert folder_digest(a.root) != folder_digest(c.root)
    # Same settings: reused as is; other settings on a used folder: refused unless overwrite.
    assert make_synthetic_ek100(tmp_path / "a", **settings).root == a.root
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_ek100(tmp_path / "a", **{**settings, "seed": 7})
    json.loads((a.root / "synthetic.json").read_text())


def test_jpeg_frames_equal_mp4_frames(synthetic):
    _, validation = split_rows(synthetic, "validation")
    video_id = validation[0]["video_id"]
    participant = validation[0]["participant_id"]
    folder = synthetic.media_root / "rgb_frames" / participant / video_id
    with av.open(str(synthetic.media_root / "videos" / participant / f"{video_id}.MP4")) as container:
        decoded = [(f.pts * f.time_base, f.to_ndarray(format="rgb24").astype(np.int16)) for f in container.decode(video=0)]
    fps = 50 if len(video_id.split("_")[1]) == 3 else 60
    jpegs = [np.asarray(Image.open(folder / f"frame_{k + 1:010d}.jpg"), dtype=np.int16) for k in range(len(decoded))]
    errors = [np.abs(frame - jpeg).mean() for (_, frame), jpeg in zip(decoded, jpegs)]
    assert [pts for pts, _ in decoded] == pytest.approx([k / fps for k in range(len(decoded))])  # frame k at k / fps
    assert max(errors) < 6.0  # codec tolerance (JPEG q92 vs H.264 crf 10, 4:2:0), in 0-255 units
    # Alignment: each JPEG is closest to its own MP4 frame, strictly so wherever the picture moves.
    def changed(a, b):  # pixels that differ by more than coding noise
        return int((np.abs(a - b).max(axis=-1) > 40).sum())

    moving = 0
    for k in range(1, len(decoded) - 1):
        if min(changed(decoded[k + d][1], decoded[k][1]) for d in (-1, 1)) < 8:
            continue  # a still picture: neighbours are the same image up to coding noise
        moving += 1
        assert changed(decoded[k][1], jpegs[k]) < min(changed(decoded[k + d][1], jpegs[k]) for d in (-1, 1)), k
    assert moving >= 20


def test_reads_back_through_load_ek100_features(synthetic):
    for split in ("train", "validation"):
        _, rows = split_rows(synthetic, split)
        ds = load_ek100(synthetic.annotations_dir, split, synthetic.features_dir, media="features")
        assert ds["narration_id"] == sorted(r["narration_id"] for r in rows)
        assert ds["verb_class"] == [int(r["verb_class"]) for r in rows]
        assert ds["noun_class"] == [int(r["noun_class"]) for r in rows]
        example = ds[0]
        assert example["video_features"].shape == (8, 192)
        assert 0.0 <= float(example["video_features"].min()) and float(example["video_features"].max()) <= 1.0
    ds = load_ek100(synthetic.annotations_dir, "test", synthetic.features_dir, media="features")
    assert ds.num_rows == SMALL["num_test"] and "verb_class" not in ds.column_names
