import csv
import json
import math
from pathlib import Path

import pytest

from modeling_mambavl.ek100 import (
    UNKNOWN_ACTION,
    EK100AnnotationError,
    EK100Vocabulary,
    anticipation_window,
    load_ek100,
)
from modeling_mambavl.ek100.annotations import LABELLED_COLUMNS, TEST_COLUMNS, parse_timestamp

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ek100-annotations"

HEADER = ",".join(LABELLED_COLUMNS)
GOOD = [
    "P01_11_0,P01,P01_11,00:00:00.560,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,['plate'],[2]",
    'P01_11_1,P01,P01_11,,00:00:01.56,00:00:02.45,93,147,put down plate,put-down,1,plate,2,"[\'plate\', \'tap\']","[2, 0]"',
]


def _real():
    if not (SHARED / "EPIC_100_validation.csv").is_file():
        pytest.skip("reference EK100 annotations not present")
    return SHARED


def _write(folder: Path, lines: list[str], name: str = "EPIC_100_validation.csv", header: str = HEADER) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return folder


# ---------------------------------------------------------------------------------------------- real files
def test_real_validation_counts_and_action_ids():
    root = _real()
    vocab = EK100Vocabulary.from_dir(root)
    assert (vocab.num_verbs, vocab.num_nouns, vocab.num_actions) == (97, 300, 3806)
    ds = load_ek100(root, "validation")
    assert ds.num_rows == 9668
    for column in (*TEST_COLUMNS, "start_sec", "stop_sec", "verb_class", "noun_class", "action_class"):
        assert column in ds.column_names
    # action_class must be the id of the (verb, noun) pair in the official 3,806-class table, read here directly.
    with open(root / "EPIC_100_actions_3806.csv", newline="") as f:
        table = {(int(r["verb"]), int(r["noun"])): int(r["id"]) for r in csv.DictReader(f)}
    assert len(table) == 3806
    verbs, nouns, actions = ds["verb_class"], ds["noun_class"], ds["action_class"]
    assert all(table[(v, n)] == a for v, n, a in zip(verbs, nouns, actions))
    assert json.loads(ds.info.description)["num_unknown_actions"] == 0
    assert len(set(verbs)) <= 97 and max(verbs) < 97 and max(nouns) < 300
    assert ds.features["verb_class"].num_classes == 97 and ds.features["noun_class"].num_classes == 300
    first = ds[0]
    assert first["narration_id"] == "P01_11_0" and first["start_sec"] == 0.0 and math.isclose(first["stop_sec"], 1.89)
    assert first["all_nouns"] == ["plate"] and first["all_noun_classes"] == [2]


def test_real_anticipation_windows_end_one_second_before_the_action():
    root = _real()
    ds = load_ek100(root, "validation", task="anticipation")
    starts, ends, obs_starts = ds["start_sec"], ds["observation_end"], ds["observation_start"]
    clipped = ds["observation_clipped"]
    for s, e, o, c in zip(starts, ends, obs_starts, clipped):
        assert round(s - e, 9) == 1.0  # exactly 1.000 s before the action, every row
        if e - 2.133 >= 0:
            assert not c and math.isclose(e - o, 2.133, abs_tol=1e-9)
        else:
            assert c and o == 0.0
    expected_clipped = sum(1 for s in starts if s - 1.0 - 2.133 < 0)
    assert sum(clipped) == expected_clipped > 0
    summary = json.loads(ds.info.description)
    assert summary["num_clipped_windows"] == expected_clipped
    assert summary["num_empty_windows"] == sum(1 for s in starts if s <= 1.0)


def test_real_test_split_has_no_labels():
    root = _real()
    ds = load_ek100(root, "test")
    assert ds.num_rows == 13092
    assert set(TEST_COLUMNS) <= set(ds.column_names)
    assert not {"verb_class", "noun_class", "action_class", "narration", "all_nouns"} & set(ds.column_names)


# ---------------------------------------------------------------------------------------------- windows
def test_anticipation_window_clips_and_counts():
    assert anticipation_window(10.0) == (10.0 - 1.0 - 2.133, 9.0, False)
    start, end, clipped = anticipation_window(2.0)
    assert (start, end, clipped) == (0.0, 1.0, True)
    start, end, clipped = anticipation_window(0.5, anticipation_time=1.0)
    assert clipped and end == -0.5 and start == 0.0  # nothing observable: empty window
    assert anticipation_window(5.0, anticipation_time=0.5, observation_time=1.0) == (3.5, 4.5, False)


def test_parse_timestamp():
    assert parse_timestamp("00:02:51.81") == pytest.approx(171.81)
    assert parse_timestamp("01:00:00.000") == 3600.0
    with pytest.raises(ValueError):
        parse_timestamp("2:51.81")


# ---------------------------------------------------------------------------------------------- small files
def test_small_file_parses_lists_and_empty_narration_timestamp(tmp_path):
    ds = load_ek100(_write(tmp_path, GOOD), "validation")
    assert ds["all_nouns"][1] == ["plate", "tap"] and ds["all_noun_classes"][1] == [2, 0]
    assert ds["narration_timestamp"] == ["00:00:00.560", None]
    assert ds["start_frame"] == [1, 93] and ds["sample_index"] == [0, 1]
    vocab = EK100Vocabulary.default()
    assert ds["action_class"] == [vocab.action_id(0, 2), vocab.action_id(1, 2)]


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ("P01_11_2,P01,P01_11,00:00:02.0,00:00:03.00,00:00:02.50,180,150,take plate,take,0,plate,2,['plate'],[2]", "stop_timestamp"),
        ("P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,180,150,take plate,take,0,plate,2,['plate'],[2]", "stop_frame"),
        ("P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,120,150,take plate,take,97,plate,2,['plate'],[2]", "verb_class"),
        ("P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,120,150,take plate,take,0,plate,300,['plate'],[300]", "noun_class"),
        ("P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,120,150,take plate,take,0,plate,2,plate,[2]", "all_nouns"),
        ('P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,120,150,take plate,take,0,plate,2,[\'plate\'],"[2,"', "all_noun_classes"),
        ("P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,120,150,take plate,take,0,plate,2,['plate'],[5]", "noun_class"),
        ("P01_11_2,P01,P01_11,00:00:02.0,2.00,00:00:02.50,120,150,take plate,take,0,plate,2,['plate'],[2]", "start_timestamp"),
        ("P01_11_2,P01,P02_11,00:00:02.0,00:00:02.00,00:00:02.50,120,150,take plate,take,0,plate,2,['plate'],[2]", "video_id"),
        ("P01_11_1,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,120,150,take plate,take,0,plate,2,['plate'],[2]", "narration_id"),
        ("P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00,00:00:02.50,x,150,take plate,take,0,plate,2,['plate'],[2]", "start_frame"),
    ],
)
def test_malformed_rows_name_file_line_and_field(tmp_path, line, field):
    folder = _write(tmp_path, [*GOOD, line])
    with pytest.raises(EK100AnnotationError) as info:
        load_ek100(folder, "validation")
    message = str(info.value)
    assert "EPIC_100_validation.csv" in message and "line 4" in message and repr(field) in message


def test_wrong_field_count_and_missing_columns(tmp_path):
    folder = _write(tmp_path / "a", [*GOOD, "P01_11_2,P01,P01_11,00:00:02.0,00:00:02.00"])
    with pytest.raises(EK100AnnotationError, match=r"EPIC_100_validation.csv, line 4: 5 fields"):
        load_ek100(folder, "validation")
    header = HEADER.replace(",all_noun_classes", "")
    folder = _write(tmp_path / "b", [g.rsplit(",", 1)[0] for g in GOOD], header=header)
    with pytest.raises(EK100AnnotationError, match=r"line 1: label columns incomplete.*all_noun_classes"):
        load_ek100(folder, "validation")
    folder = _write(tmp_path / "c", ["P01_11_0,P01,P01_11"], header="narration_id,participant_id,video_id")
    with pytest.raises(EK100AnnotationError, match=r"line 1: missing column\(s\).*start_timestamp"):
        load_ek100(folder, "validation")


def test_unknown_action_pair_is_kept_counted_or_refused(tmp_path):
    vocab = EK100Vocabulary.default()
    verb, noun = next((v, n) for v in range(97) for n in range(300) if not vocab.has_action(v, n))
    line = f"P01_11_2,P01,P01_11,,00:00:02.00,00:00:02.50,120,150,x,x,{verb},y,{noun},['y'],[{noun}]"
    folder = _write(tmp_path, [*GOOD, line])
    ds = load_ek100(folder, "validation")
    assert ds["action_class"][2] == UNKNOWN_ACTION == -100
    assert json.loads(ds.info.description)["num_unknown_actions"] == 1
    with pytest.raises(EK100AnnotationError, match=rf"P01_11_2: \(verb {verb}, noun {noun}\)"):
        load_ek100(folder, "validation", unknown_actions="error")


def test_test_split_columns_and_refusals(tmp_path):
    lines = ["P01_101_0,P01,P01_101,00:00:02.851,00:00:02.86,00:00:03.87,143,193"]
    folder = _write(tmp_path, lines, name="EPIC_100_test_timestamps.csv", header=",".join(TEST_COLUMNS))
    ds = load_ek100(folder, "test", task="anticipation")
    assert ds.column_names == [
        *TEST_COLUMNS, "start_sec", "stop_sec", "observation_start", "observation_end", "observation_clipped", "sample_index"
    ]
    assert ds[0]["observation_end"] == pytest.approx(1.86)
    with pytest.raises(ValueError, match="oracle"):
        load_ek100(folder, "test", question_source="oracle")
    with pytest.raises(ValueError, match="split='val'"):
        load_ek100(folder, "val")
    # A train/validation file without labels is refused for a labelled split.
    _write(folder, lines, name="EPIC_100_train.csv", header=",".join(TEST_COLUMNS))
    with pytest.raises(EK100AnnotationError, match="train split needs the label columns"):
        load_ek100(folder, "train")


def test_missing_files_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="EPIC_100_train.csv"):
        load_ek100(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="annotations folder"):
        load_ek100(tmp_path / "nope", "train")


# --------------------------------------------------------------------------------- BOM, timestamps, video ids
def test_files_with_a_utf8_byte_order_mark_are_read(tmp_path):
    folder = _write(tmp_path, GOOD)
    path = folder / "EPIC_100_validation.csv"
    plain = load_ek100(folder, "validation")
    path.write_bytes("\ufeff".encode() + path.read_bytes())  # what a spreadsheet program saves as "CSV UTF-8"
    with_bom = load_ek100(folder, "validation")
    assert with_bom["narration_id"] == plain["narration_id"] == ["P01_11_0", "P01_11_1"]
    assert with_bom.to_dict() == plain.to_dict()


@pytest.mark.parametrize(
    ("column", "value"),
    [("stop_timestamp", "00:00:75.00"), ("start_timestamp", "00:00:60.00"), ("stop_timestamp", "00:61:00.00"),
     ("narration_timestamp", "00:00:99.000")],
)
def test_timestamps_with_seconds_or_minutes_of_60_or_more_are_refused(tmp_path, column, value):
    fields = next(csv.reader([GOOD[0]]))
    fields[LABELLED_COLUMNS.index(column)] = value
    line = ",".join(f'"{f}"' if "," in f else f for f in fields)
    with pytest.raises(EK100AnnotationError) as info:
        load_ek100(_write(tmp_path, [line, GOOD[1]]), "validation")
    message = str(info.value)
    assert "line 2" in message and repr(column) in message and repr(value) in message and "00-59" in message
    assert parse_timestamp("01:59:59.99") == 3600 + 59 * 60 + 59.99


@pytest.mark.parametrize("video_id", ["P01_../../../etc", "P01_11/../../x", "P01_11\\x", "P01_/tmp", "P01_1a"])
def test_video_ids_that_are_not_ek100_ids_are_refused(tmp_path, video_id):
    fields = next(csv.reader([GOOD[0]]))
    fields[LABELLED_COLUMNS.index("video_id")] = video_id
    line = ",".join(f'"{f}"' if "," in f else f for f in fields)
    folder = _write(tmp_path, [line])
    with pytest.raises(EK100AnnotationError) as info:
        load_ek100(folder, "validation")
    message = str(info.value)
    assert "line 2" in message and "'video_id'" in message and "P01_01" in message
