import json
import zipfile

import jsonschema
import numpy as np
import pytest
import torch

from modeling_mambavl.ek100 import write_submission
from modeling_mambavl.ek100.metric import official_action_topk
from modeling_mambavl.ek100.submission import submission_schema

IDS = ["P01_101_0", "P01_101_1", "P33_01_7"]


def _logits(seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(3, 97)).astype(dtype), rng.normal(size=(3, 300)).astype(dtype)


def _validate(submission):
    validator = jsonschema.Draft202012Validator(submission_schema())
    errors = sorted(validator.iter_errors(submission), key=lambda e: list(e.path))
    assert not errors, [e.message for e in errors[:3]]


def test_recognition_file_validates_against_schema_and_counts(tmp_path):
    verbs, nouns = _logits()
    path = write_submission(tmp_path / "rec.json", IDS, verbs, nouns, "recognition", 2, 3, 4)
    submission = json.loads(path.read_text())
    _validate(submission)
    assert submission["version"] == "0.2" and submission["challenge"] == "action_recognition"
    assert (submission["sls_pt"], submission["sls_tl"], submission["sls_td"]) == (2, 3, 4)
    assert list(submission["results"]) == IDS
    for i, narration_id in enumerate(IDS):
        entry = submission["results"][narration_id]
        assert set(entry) == {"verb", "noun"}
        assert len(entry["verb"]) == 97 and len(entry["noun"]) == 300
        # Scores read back as the same float32 values.
        assert np.array_equal(np.array([entry["verb"][str(c)] for c in range(97)], dtype=np.float32), verbs[i])
        assert np.array_equal(np.array([entry["noun"][str(c)] for c in range(300)], dtype=np.float32), nouns[i])


def test_anticipation_file_has_the_official_top100_actions(tmp_path):
    verbs, nouns = _logits(1, np.float64)
    path = write_submission(tmp_path / "ant.zip", IDS, torch.from_numpy(verbs), nouns, "anticipation", 0, 3, 3)
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["test.json"]
        submission = json.loads(archive.read("test.json"))
    _validate(submission)
    assert submission["challenge"] == "action_anticipation"
    v, n, p = official_action_topk(verbs, nouns, k=100)
    for i, narration_id in enumerate(IDS):
        actions = submission["results"][narration_id]["action"]
        assert len(actions) == 100
        assert list(actions) == [f"{a},{b}" for a, b in zip(v[i], n[i])]
        assert np.allclose(list(actions.values()), p[i])
        assert list(actions.values()) == sorted(actions.values(), reverse=True)


def test_schema_rejects_what_the_official_validator_rejects(tmp_path):
    verbs, nouns = _logits()
    path = write_submission(tmp_path / "ant.json", IDS, verbs, nouns, "anticipation", 1, 1, 1)
    good = json.loads(path.read_text())
    validator = jsonschema.Draft202012Validator(submission_schema())

    def broken(change):
        bad = json.loads(json.dumps(good))
        change(bad)
        return not validator.is_valid(bad)

    assert broken(lambda s: s["results"][IDS[0]]["verb"].pop("96"))  # 96 verb scores
    assert broken(lambda s: s["results"][IDS[0]]["noun"].update({"300": 0.0}))  # unknown noun class
    assert broken(lambda s: s["results"][IDS[0]]["action"].pop(next(iter(s["results"][IDS[0]]["action"]))))
    assert broken(lambda s: s["results"][IDS[1]].pop("action"))  # actions on some segments but not all
    assert broken(lambda s: s.update(sls_pt=6))
    assert broken(lambda s: s.update(version="0.1"))
    assert broken(lambda s: s.update(challenge="action_detection"))
    assert broken(lambda s: s.pop("sls_td"))


def _is_valid(submission):
    return jsonschema.Draft202012Validator(submission_schema()).is_valid(submission)


# The three rules below are the official validator's (C3 validate_submission): it checks "action" only when the
# first segment has one, and never looks at other keys of a segment.
def test_schema_anticipation_without_actions_is_valid(tmp_path):
    verbs, nouns = _logits()
    path = write_submission(tmp_path / "ant.json", IDS, verbs, nouns, "anticipation", 1, 1, 1, include_actions=False)
    submission = json.loads(path.read_text())
    assert submission["challenge"] == "action_anticipation"
    assert not any("action" in entry for entry in submission["results"].values())
    _validate(submission)
    submission["results"][IDS[0]]["verb"].pop("0")
    assert not _is_valid(submission)  # verbs and nouns stay required


def test_schema_allows_extra_keys_in_a_segment(tmp_path):
    verbs, nouns = _logits()
    path = write_submission(tmp_path / "ant.json", IDS, verbs, nouns, "anticipation", 1, 1, 1)
    submission = json.loads(path.read_text())
    submission["results"][IDS[0]]["narration"] = "take plate"
    submission["results"][IDS[1]]["verb_probabilities"] = [0.5, 0.5]
    _validate(submission)
    submission["results"][IDS[2]].pop("noun")
    assert not _is_valid(submission)


@pytest.mark.parametrize("task", ["recognition", "anticipation"])
def test_schema_actions_on_every_segment_or_none(tmp_path, task):
    verbs, nouns = _logits()
    with_actions = json.loads(
        write_submission(tmp_path / "a.json", IDS, verbs, nouns, task, 1, 1, 1, include_actions=True).read_text()
    )
    without = json.loads(
        write_submission(tmp_path / "b.json", IDS, verbs, nouns, task, 1, 1, 1, include_actions=False).read_text()
    )
    assert _is_valid(with_actions) and _is_valid(without)
    for missing in range(len(IDS)):  # some but not all, whichever segment lacks them
        some = json.loads(json.dumps(with_actions))
        some["results"][IDS[missing]].pop("action")
        assert not _is_valid(some), missing
        one = json.loads(json.dumps(without))
        one["results"][IDS[missing]]["action"] = with_actions["results"][IDS[missing]]["action"]
        assert not _is_valid(one), missing


def test_refusals_and_argument_checks(tmp_path):
    verbs, nouns = _logits()
    out = tmp_path / "x.json"
    with pytest.raises(ValueError, match="oracle"):
        write_submission(out, IDS, verbs, nouns, "recognition", 2, 3, 4, question_source="oracle")
    with pytest.raises(TypeError):
        write_submission(out, IDS, verbs, nouns, "recognition")  # the supervision levels are required
    for bad in (6, -1, 2.0, True, None):
        with pytest.raises(ValueError, match="sls_tl="):
            write_submission(out, IDS, verbs, nouns, "recognition", 2, bad, 4)
    with pytest.raises(ValueError, match=r"noun_logits: shape \(3, 299\)"):
        write_submission(out, IDS, verbs, nouns[:, :299], "recognition", 2, 3, 4)
    with pytest.raises(ValueError, match="appears more than once"):
        write_submission(out, [IDS[0]] * 3, verbs, nouns, "recognition", 2, 3, 4)
    with pytest.raises(ValueError, match="NaN"):
        write_submission(out, IDS, np.where(verbs > 2, np.nan, verbs), nouns, "recognition", 2, 3, 4)
    with pytest.raises(ValueError, match="1 expected id"):
        write_submission(out, IDS, verbs, nouns, "recognition", 2, 3, 4, expected_narration_ids=[*IDS, "P01_101_2"])
    with pytest.raises(ValueError, match="task="):
        write_submission(out, IDS, verbs, nouns, "detection", 2, 3, 4)
    assert not out.exists()
    # generic questions are fine
    write_submission(out, IDS, verbs, nouns, "recognition", 2, 3, 4, question_source="generic")
    assert out.exists()
