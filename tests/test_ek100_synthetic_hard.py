"""The hard variant of the synthetic EK100-format data: EK100 format, determinism, the grammar of its videos, and the
default variant left as it was."""

import argparse
import json

import pytest
from helpers.synthetic_files import folder_digest, split_rows

from modeling_mambavl.ek100 import EK100Vocabulary, load_ek100, make_synthetic_ek100
from modeling_mambavl.ek100.annotations import LABELLED_COLUMNS, TEST_COLUMNS, UNKNOWN_ACTION
from modeling_mambavl.ek100.synthetic import (
    SYNTHETIC_HARD_NOUNS,
    SYNTHETIC_HARD_SCRIPTS,
    SYNTHETIC_HARD_VERBS,
    synthetic_script_sequences,
)
from modeling_mambavl.training.arguments import add_data_arguments
from modeling_mambavl.training.builders import load_rows, resolve_data, synthetic_settings

HARD = dict(num_train=36, num_validation=24, num_test=12, clips_per_video=12, size=32, seed=1, variant="hard",
            video=False)


@pytest.fixture(scope="module")
def hard(tmp_path_factory):
    return make_synthetic_ek100(tmp_path_factory.mktemp("hard"), **HARD)


def _by_video(rows):
    videos = {}
    for row in rows:
        videos.setdefault(row["video_id"], []).append(row)
    return {v: sorted(r, key=lambda r: int(r["start_frame"])) for v, r in videos.items()}


# sha256 of each folder, from make_synthetic_ek100 before the hard variant existed (Pillow's JPEG and PyAV's libx264
# of the constraints file): the default variant, which the demo and the tests rely on, must not move by one byte.
DEFAULT_DIGESTS = {
    "annotations": "0f400f194769b79f8748fa2d2f922c43a71c9a8f6dfaea00074e23b6f2f8a37a",
    "rgb_frames": "111a1d6ded7d99b2a16c2c65847656d806303ca36f611ba11e60683e8a4b49bb",
    "videos": "91cf3acc024211cc3bfc2c593aa6cd081af7200988caba3a50880084cfaa4840",
    "features": "389f07bac8b0cd173b39febf11e47528e13ad61896769eb75605ee503d29e98d",
}


def test_default_variant_is_unchanged(tmp_path):
    settings = dict(num_train=36, num_validation=24, num_test=12, clips_per_video=6, size=64, seed=3)
    data = make_synthetic_ek100(tmp_path / "default", **settings)
    assert {sub: folder_digest(data.root / sub) for sub in DEFAULT_DIGESTS} == DEFAULT_DIGESTS
    # Its synthetic.json settings too, so folders made before variants existed are still reused.
    assert make_synthetic_ek100(tmp_path / "default", variant="default", **settings).root == data.root
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_ek100(tmp_path / "default", variant="hard", **settings)


def test_hard_is_deterministic(hard, tmp_path):
    again = make_synthetic_ek100(tmp_path / "again", **HARD)
    assert folder_digest(again.root) == folder_digest(hard.root)
    other = make_synthetic_ek100(tmp_path / "other", **{**HARD, "seed": 2, "frames": False})
    assert folder_digest(other.annotations_dir) != folder_digest(hard.annotations_dir)
    with pytest.raises(ValueError, match="variant='harder'"):
        make_synthetic_ek100(tmp_path / "bad", **{**HARD, "variant": "harder"})


def test_hard_is_ek100_format(hard):
    vocab = EK100Vocabulary.default()
    header, train = split_rows(hard, "train")
    assert tuple(header) == LABELLED_COLUMNS and len(train) == HARD["num_train"]
    _, validation = split_rows(hard, "validation")
    header, test = split_rows(hard, "test")
    assert tuple(header) == TEST_COLUMNS and len(test) == HARD["num_test"] and len(validation) == HARD["num_validation"]
    for split in ("train", "validation"):
        ds = load_ek100(hard.annotations_dir, split, hard.media_root, unknown_actions="error")
        assert UNKNOWN_ACTION not in ds["action_class"]
        assert set(ds["verb_class"]) <= {vocab.verb_id(v) for v in SYNTHETIC_HARD_VERBS}
        assert set(ds["noun_class"]) <= {vocab.noun_id(n) for n in SYNTHETIC_HARD_NOUNS}
    features = load_ek100(hard.annotations_dir, "validation", hard.features_dir, media="features")
    assert features[0]["video_features"].shape == (8, 192)
    # load_rows reads every split for both tasks; anticipation windows end 1 s before each action.
    data = resolve_data(hard.annotations_dir, hard.media_root, "frames")
    for task in ("recognition", "anticipation"):
        rows = load_rows(data, "test", task)
        assert len(rows) == HARD["num_test"]
    rows = load_rows(data, "train", "anticipation")
    assert all(r["observation_end"] == pytest.approx(r["start_sec"] - 1.0) for r in rows)
    for row in train + validation + test:
        folder = hard.media_root / "rgb_frames" / row["participant_id"] / row["video_id"]
        assert (folder / f"frame_{int(row['stop_frame']):010d}.jpg").is_file()
    # Splits by video, each evaluation split with its unseen participant, tail classes present, short clips.
    videos = [{r["video_id"] for r in rows} for rows in (train, validation, test)]
    assert videos[0].isdisjoint(videos[1]) and videos[0].isdisjoint(videos[2]) and videos[1].isdisjoint(videos[2])
    seen = {r["participant_id"] for r in train}
    assert {r["participant_id"] for r in validation} - seen == {"P32"}
    assert {r["participant_id"] for r in test} - seen == {"P33"}
    labelled = train + validation
    assert {int(r["verb_class"]) for r in labelled} & vocab.tail_verbs
    assert {int(r["noun_class"]) for r in labelled} & vocab.tail_nouns
    short = [r for r in labelled + test if int(r["stop_frame"]) - int(r["start_frame"]) + 1 < 8]
    assert len(short) >= 0.08 * len(labelled + test)


def test_hard_videos_are_consecutive_actions(hard):
    _, train = split_rows(hard, "train")
    _, validation = split_rows(hard, "validation")
    for video in _by_video(train + validation).values():
        assert [r["narration_id"] for r in video] == [f"{video[0]['video_id']}_{i}" for i in range(len(video))]
        fps = 50 if len(video[0]["video_id"].split("_")[1]) == 3 else 60
        for before, after in zip(video, video[1:]):
            gap = (int(after["start_frame"]) - int(before["stop_frame"])) / fps
            # No overlap, and the next action starts within a second: the 2.133 s window observed 1 s before an
            # action shows the end of the action before it.
            assert 0 < gap < 1.0, (before["narration_id"], gap)


def _parses(actions, last_may_be_partial=True):
    """Whether a video's (verb, noun) list splits into scripts of the grammar (the last one possibly cut short by
    the end of the video), every action of a script on the same noun."""
    full, prefixes = set(), set()
    for script, spec in SYNTHETIC_HARD_SCRIPTS.items():
        for noun in spec["nouns"]:
            for verbs in synthetic_script_sequences(script, noun):
                full.add(tuple((v, noun) for v in verbs))
                prefixes.update(tuple((v, noun) for v in verbs[:k]) for k in range(1, len(verbs)))
    ok = [True] + [False] * len(actions)
    for end in range(1, len(actions) + 1):
        ok[end] = any(ok[start] and tuple(actions[start:end]) in full for start in range(end))
    return ok[-1] or (last_may_be_partial and any(ok[s] and tuple(actions[s:]) in prefixes for s in range(len(actions))))


def test_hard_videos_follow_the_grammar(hard):
    _, train = split_rows(hard, "train")
    _, validation = split_rows(hard, "validation")
    videos = _by_video(train + validation)
    for video in videos.values():
        assert _parses([(r["verb"], r["noun"]) for r in video]), [r["narration"] for r in video]
    # The parser rejects what the grammar forbids: an action out of order, a noun changing inside a script.
    assert not _parses([("take", "jar"), ("close", "jar"), ("open", "jar")])
    assert not _parses([("take", "plate"), ("wash", "bowl"), ("put", "bowl")])
    assert _parses([("take", "plate"), ("wash", "plate"), ("put", "plate"), ("take", "jar")])
    # The noun persists: most consecutive pairs share it, so the past tells the next action's noun.
    pairs = [(a["noun"], b["noun"]) for v in videos.values() for a, b in zip(v, v[1:])]
    assert sum(a == b for a, b in pairs) > 0.6 * len(pairs)


def test_hard_grammar_is_ek100_actions():
    vocab = EK100Vocabulary.default()
    assert 12 <= len(SYNTHETIC_HARD_VERBS) <= 16 and 20 <= len(SYNTHETIC_HARD_NOUNS) <= 30
    assert len(set(SYNTHETIC_HARD_NOUNS.values())) == len(SYNTHETIC_HARD_NOUNS)  # one shape per noun
    used_verbs, used_nouns = set(), set()
    for script, spec in SYNTHETIC_HARD_SCRIPTS.items():
        for noun in spec["nouns"]:
            sequences = synthetic_script_sequences(script, noun)
            assert sum(sequences.values()) == pytest.approx(1.0)
            for verbs in sequences:
                assert verbs and all(vocab.has_action(vocab.verb_id(v), vocab.noun_id(noun)) for v in verbs)
                used_verbs.update(verbs)
            used_nouns.add(noun)
    assert used_verbs == set(SYNTHETIC_HARD_VERBS) and used_nouns == set(SYNTHETIC_HARD_NOUNS)
    assert synthetic_script_sequences("chop", "onion").keys() > synthetic_script_sequences("chop", "tomato").keys()
    with pytest.raises(ValueError, match="noun='onion'"):
        synthetic_script_sequences("container", "onion")


def _parse_data_args(argv):
    parser = argparse.ArgumentParser()
    add_data_arguments(parser)
    return parser.parse_args(argv)


def test_synthetic_settings_and_cache_folders(tmp_path):
    args = _parse_data_args(["--synthetic_train_clips", "12", "--synthetic_validation_clips", "12",
                             "--synthetic_size", "32"])
    assert args.synthetic_variant == "default"
    assert synthetic_settings(args) == {"num_train": 12, "num_validation": 12, "size": 32}
    hard_args = _parse_data_args(["--synthetic_train_clips", "12", "--synthetic_validation_clips", "12",
                                  "--synthetic_size", "32", "--synthetic_variant", "hard"])
    assert synthetic_settings(hard_args) == {"num_train": 12, "num_validation": 12, "size": 32, "variant": "hard"}
    default = resolve_data(None, None, "features", cache_dir=tmp_path, synthetic=synthetic_settings(args))
    harder = resolve_data(None, None, "features", cache_dir=tmp_path,
                          synthetic={**synthetic_settings(hard_args), "num_test": 12})
    # The default's folder keeps the name it had before variants existed; the hard one has its own.
    assert default.media_root.parent.name == "synthetic-num_train12-num_validation12-size32"
    assert harder.media_root.parent.name == \
        "synthetic-num_test12-num_train12-num_validation12-size32-varianthard-variant_version1"
    explicit = resolve_data(None, None, "features", cache_dir=tmp_path,
                            synthetic={**synthetic_settings(args), "variant": "default"})
    assert explicit.media_root == default.media_root
    verbs = {r["verb"] for r in load_rows(harder, "train", "recognition")}
    assert verbs <= set(SYNTHETIC_HARD_VERBS) and not verbs <= {"take", "put", "open", "close", "move", "shake"}
    with pytest.raises(SystemExit):
        _parse_data_args(["--synthetic_variant", "harder"])


def test_a_cache_made_by_an_older_hard_generator_is_neither_reused_nor_an_error(tmp_path, monkeypatch):
    """The generator's version is in the cache folder's name: after a change of the hard variant's data (its version
    bumped), the folder the older generator made is left as it was and a new one is made beside it, where the same
    name would have raised FileExistsError (its synthetic.json records other settings)."""
    from modeling_mambavl.ek100 import synthetic

    settings = {"num_train": 12, "num_validation": 12, "num_test": 12, "size": 32, "variant": "hard"}
    current = synthetic.SYNTHETIC_VARIANT_VERSIONS["hard"]
    with monkeypatch.context() as patch:
        patch.setitem(synthetic.SYNTHETIC_VARIANT_VERSIONS, "hard", current - 1)
        old = resolve_data(None, None, "frames", cache_dir=tmp_path, synthetic=settings)
    old_folder, old_digest = old.annotations_dir.parent, folder_digest(old.annotations_dir.parent)
    assert json.loads((old_folder / "synthetic.json").read_text())["settings"]["variant_version"] == current - 1
    new = resolve_data(None, None, "frames", cache_dir=tmp_path, synthetic=settings)
    new_folder = new.annotations_dir.parent
    assert new_folder != old_folder and new_folder.name.endswith(f"-varianthard-variant_version{current}")
    assert json.loads((new_folder / "synthetic.json").read_text())["settings"]["variant_version"] == current
    assert folder_digest(old_folder) == old_digest  # not reused, not touched
    assert resolve_data(None, None, "frames", cache_dir=tmp_path, synthetic=settings).annotations_dir == \
        new.annotations_dir  # the current one is reused
    # What the version in the name avoids: the older generator's folder asked for with today's settings.
    with pytest.raises(FileExistsError, match="overwrite=True"):
        make_synthetic_ek100(old_folder, **settings, frames=True, video=False, features=False)
