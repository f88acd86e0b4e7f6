"""Question templates and sources (generic / file / predicted / oracle), question files, the oracle refusals."""

import json
import re

import pytest

from modeling_mambavl.ek100 import EK100Vocabulary
from modeling_mambavl.processors import (
    GENERIC_TEMPLATES,
    ORACLE_LABEL,
    default_questions,
    make_question_source,
    read_question_file,
    write_question_file,
)

VOCAB = EK100Vocabulary.default()

EXAMPLE = {
    "narration_id": "P01_11_1",
    "narration": "put down chopping board",
    "verb": "put-down",
    "verb_class": 1,
    "noun": "board:chopping",
    "noun_class": 18,
    "all_nouns": "['board:chopping']",
    "all_noun_classes": "[18]",
}


def test_generic_templates():
    assert GENERIC_TEMPLATES["verb"][0] == "What action is performed using hands in the video?"
    assert GENERIC_TEMPLATES["noun"][0] == "What is the object in the video?"
    assert all(len(GENERIC_TEMPLATES[t]) >= 3 for t in ("verb", "noun", "action"))
    assert default_questions() == [GENERIC_TEMPLATES["verb"][0], GENERIC_TEMPLATES["noun"][0]]
    assert default_questions(("noun",)) == [GENERIC_TEMPLATES["noun"][0]]
    with pytest.raises(ValueError, match="unknown question type"):
        default_questions(("adverb",))


def test_generic_source_needs_no_example():
    for split in ("train", "validation", "test"):
        source = make_question_source("generic", split=split)
        assert source(None) == default_questions()
        assert source(EXAMPLE) == default_questions()
        assert source.oracle is False and source.label is None
    custom = make_question_source("generic", split="test", templates={"noun": ["Which thing?"]})
    assert custom(None) == [GENERIC_TEMPLATES["verb"][0], "Which thing?"]


def test_oracle_questions_are_masked_and_labelled():
    source = make_question_source("oracle", split="validation", seed=0)
    assert source.oracle is True and source.label == ORACLE_LABEL == "ORACLE QUESTIONS"
    verb_q, noun_q = source(EXAMPLE)
    for q in (verb_q, noun_q):
        assert "[MASK]" in q
        for leaked in ("put", "down", "chopping", "board"):
            assert leaked not in q.lower()
    # the narration is embedded, then "put down" and "chopping board" each became one mask token
    assert "'[MASK] [MASK]'" in verb_q
    # lists of class ids work as well as their CSV strings, and the phrasing is stable
    again = source({**EXAMPLE, "all_noun_classes": [18], "all_nouns": ["board:chopping"]})
    assert again == [verb_q, noun_q]
    # RoBERTa-style mask token
    roberta = make_question_source("oracle", split="train", mask_token="<mask>")
    assert "<mask>" in roberta(EXAMPLE)[0] and "[MASK]" not in roberta(EXAMPLE)[0]


def test_oracle_paper_policy_masks_across_only():
    source = make_question_source("oracle", split="validation", policy="paper")
    verb_q, noun_q = source(EXAMPLE)
    assert "put down" in verb_q and "chopping board" not in verb_q  # the verb question keeps its own answer
    assert "chopping board" in noun_q and "put down" not in noun_q
    with pytest.raises(ValueError, match="policy='paper'"):
        make_question_source("oracle", split="validation", policy="paper", question_types=("action",))


@pytest.mark.parametrize("split", ["test", "TEST"])
def test_oracle_is_refused_for_the_test_split(split):
    with pytest.raises(ValueError, match="refused for the test split"):
        make_question_source("oracle", split=split)


def test_oracle_phrasing_depends_on_seed_and_narration():
    a = make_question_source("oracle", split="train", seed=0)
    b = make_question_source("oracle", split="train", seed=1)
    examples = [{**EXAMPLE, "narration_id": f"P01_11_{i}"} for i in range(30)]
    first = [a(e)[0] for e in examples]
    assert first == [a(e)[0] for e in examples]  # deterministic
    assert len(set(first)) > 1  # several phrasings in use
    assert first != [b(e)[0] for e in examples]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_question_files_round_trip(tmp_path, suffix):
    path = tmp_path / f"questions{suffix}"
    questions = {"P01_11_0": ["What is done, with commas?", "Which \"object\"?"], "P01_11_1": ["Verb q", "Noun q"]}
    write_question_file(path, questions)
    assert read_question_file(path) == questions
    source = make_question_source("file", split="test", path=path)
    assert source({"narration_id": "P01_11_1"}) == ["Verb q", "Noun q"]
    assert source.label is None
    with pytest.raises(KeyError, match="P09_99_9"):
        source({"narration_id": "P09_99_9"})


def test_question_file_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("narration_id,verb_question\nP01_1,what?\n")
    with pytest.raises(ValueError, match="noun_question"):
        read_question_file(bad)
    bad_jsonl = tmp_path / "bad.jsonl"
    bad_jsonl.write_text('{"narration_id": "P01_1", "verb_question": "v"}\n')
    with pytest.raises(ValueError, match="line 1"):
        read_question_file(bad_jsonl)
    with pytest.raises(ValueError, match="needs path"):
        make_question_source("file", split="train")
    with pytest.raises(FileNotFoundError):
        make_question_source("file", split="train", path=tmp_path / "none.csv")


def test_predicted_questions_name_the_top_k_candidates(tmp_path):
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({
        "P01_11_1": [[0, 2, 0.2], ["put-down", "board:chopping", 0.5], [2, 2, 0.1], [0, 1, 0.05]],
    }))
    source = make_question_source("predicted", split="test", path=path, top_k=3,
                                  templates={"verb": ["Which: {verbs}?"], "noun": ["Which: {nouns}?"]})
    verb_q, noun_q = source({"narration_id": "P01_11_1"})
    # best first; class ids become display names, keys read naturally; the 4th prediction is beyond top_k
    assert verb_q == "Which: put down, take or wash?"
    assert noun_q == "Which: chopping board or plate?"
    assert source.label is None
    default = make_question_source("predicted", split="test", path=path, top_k=1)
    assert all("put down" in q or "chopping board" in q for q in default({"narration_id": "P01_11_1"}))
    with pytest.raises(KeyError, match="P01_11_2"):
        source({"narration_id": "P01_11_2"})


def test_bad_sources():
    with pytest.raises(ValueError, match="question_source"):
        make_question_source("gpt", split="train")
    with pytest.raises(ValueError, match="top_k"):
        make_question_source("predicted", split="train", path="x.json", top_k=0)
    with pytest.raises(ValueError, match="needs the example"):
        make_question_source("oracle", split="train")(None)


# ------------------------------------------------------------------------------------------- bad question files
def test_question_files_with_a_byte_order_mark_are_read(tmp_path):
    questions = {"P01_11_0": ["What is done?", "Which object?"]}
    for name in ("q.csv", "q.jsonl"):
        path = tmp_path / name
        write_question_file(path, questions)
        path.write_bytes("\ufeff".encode() + path.read_bytes())
        assert read_question_file(path) == questions


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("dup.csv", "narration_id,verb_question,noun_question\na,v1,n1\nb,v,n\na,v2,n2\n",
         r"dup.csv, line 4: narration_id 'a' is given twice \(first on line 2\)"),
        ("dup.jsonl", '{"narration_id": "a", "verb_question": "v", "noun_question": "n"}\n'
                      '{"narration_id": "a", "verb_question": "v2", "noun_question": "n2"}\n',
         r"dup.jsonl, line 2: narration_id 'a' is given twice \(first on line 1\)"),
        ("list.jsonl", '{"narration_id": "a", "verb_question": "v", "noun_question": "n"}\n[1, 2]\n',
         r"list.jsonl, line 2: a JSON list, expected an object with the keys narration_id, verb_question"),
        ("str.jsonl", '"just text"\n', r"str.jsonl, line 1: a JSON str, expected an object"),
        ("empty.csv", "narration_id,verb_question,noun_question\na,v,n\nb,  ,n\n",
         r"empty.csv, line 3: empty \['verb_question'\] for narration 'b'"),
    ],
)
def test_bad_question_files_name_file_line_and_value(tmp_path, name, text, expected):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=expected):
        read_question_file(path)


def test_question_file_missing_ids_of_the_split_is_refused_at_load_time(tmp_path):
    from modeling_mambavl.ek100 import load_ek100
    from modeling_mambavl.processors import MambaVLProcessor
    from modeling_mambavl.training.builders import tokenize_questions

    annotations = tmp_path / "annotations"
    annotations.mkdir()
    header = ("narration_id,participant_id,video_id,narration_timestamp,start_timestamp,stop_timestamp,start_frame,"
              "stop_frame,narration,verb,verb_class,noun,noun_class,all_nouns,all_noun_classes")
    rows = [f"P01_11_{i},P01,P01_11,,00:00:0{i}.00,00:00:0{i}.50,{60 * i + 1},{60 * i + 30},take plate,take,0,"
            "plate,2,['plate'],[2]" for i in range(4)]
    (annotations / "EPIC_100_validation.csv").write_text("\n".join([header, *rows]) + "\n")
    questions = tmp_path / "q.csv"
    write_question_file(questions, {f"P01_11_{i}": ["v?", "n?"] for i in (0, 2)})
    with pytest.raises(ValueError, match=r"q.csv lacks 2 of the 4 narrations of the validation split, e.g. "
                                         r"\['P01_11_1', 'P01_11_3'\]"):
        load_ek100(annotations, "validation", media_root=tmp_path, media="video", question_source="file",
                   questions_path=questions, check_media=False)
    split_rows = load_ek100(annotations, "validation").to_list()
    with pytest.raises(ValueError, match="lacks 2 of the 4 narrations"):
        tokenize_questions(split_rows, MambaVLProcessor(), "file", "validation", path=questions)


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ([[-1, 3, 0.9]], r"narration 'x': verb class id -1 is out of range; the vocabulary has verb ids 0..96"),
        ([[1, 300, 0.9]], r"narration 'x': noun class id 300 is out of range; the vocabulary has noun ids 0..299"),
        ([[1, "301", 0.9]], r"noun class id '301' is out of range"),
        ([[True, 3, 0.9]], r"verb class id True is out of range"),
        ([], r"narration 'x': empty candidate list"),
        ([[1, 2, "nan"]], r"narration 'x': score nan of \(1, 2\) is not a finite number"),
        ([["fly", 2, 0.5]], r"narration 'x': unknown verb 'fly'"),
        ([[1, "moon", 0.5]], r"narration 'x': unknown noun 'moon'"),
        ([[1, 2, True]], r"narration 'x': must be a list of \[verb, noun, score\] \(score a number\)"),
        ([[1.0, 2, 0.5]], r"narration 'x': verb class id 1.0 is a float; give the integer 1"),
        ([["\u00b2", 2, 0.5]], r"narration 'x': unknown verb '\u00b2'"),  # a digit to str.isdigit, not to int()
    ],
)
def test_bad_predictions_name_file_narration_and_value(tmp_path, entry, expected):
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({"y": [[0, 2, 0.5]], "x": entry}))
    with pytest.raises(ValueError, match=expected) as info:
        make_question_source("predicted", split="validation", path=path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    ("content", "error", "expected"),
    [
        (None, FileNotFoundError, r"predictions file .*missing.json not found; write one with eval_ek100.py "
                                  r"--write_question_predictions"),
        ("folder", IsADirectoryError, r"predictions file .*folder is a folder; give the JSON file"),
        (b"\xff\xfe\x00{", ValueError, r"bytes.json: not a UTF-8 text file"),
        (b'{"x": [[1, 2, 0.5]], "x": [[3, 4, 0.5]]}', ValueError, r"twice.json: narration_id 'x' is given twice"),
    ],
    ids=["missing", "folder", "not-utf8", "duplicate-id"],
)
def test_unreadable_predictions_files_name_the_file_and_the_fix(tmp_path, content, error, expected):
    """A missing file, a folder, bytes that are not UTF-8 (raw OS / codec errors before) and a narration given twice
    (the last one was kept silently, as json.load does)."""
    names = {None: "missing.json", "folder": "folder"}
    path = tmp_path / (names.get(content) or ("bytes.json" if content.startswith(b"\xff") else "twice.json"))
    if content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match=expected):
        make_question_source("predicted", split="validation", path=path)


def test_predictions_lacking_narrations_of_the_split_are_refused_and_extra_ones_ignored(tmp_path):
    """One predictions file serves every split (the cascade writes train, validation and test into one), so ids of
    other splits are ignored; a narration of the split without an entry is refused when the split is loaded."""
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({"a": [[1, 2, 0.5]], "other_split_0": [[3, 4, 0.9]]}))
    source = make_question_source("predicted", split="validation", path=path)
    source.check_ids(["a"])
    assert source({"narration_id": "a"})[1].endswith(f"{VOCAB.noun_name(2)}?")
    with pytest.raises(ValueError, match=rf"the predictions file {re.escape(str(path))} lacks 1 of the 2 narrations of "
                                         r"the validation split, e.g. \['b'\]; every narration needs an entry"):
        source.check_ids(["a", "b"])


@pytest.mark.parametrize(("option", "value"), [("top_k", "3"), ("top_k", 2.5), ("top_k", True), ("top_k", 0),
                                               ("seed", "x"), ("seed", 1.5)])
def test_question_source_options_of_the_wrong_type_are_refused(tmp_path, option, value):
    """top_k="3" raised a bare TypeError, top_k=2.5 and seed="x" failed only when the first question was made."""
    path = tmp_path / "predictions.json"
    path.write_text(json.dumps({"x": [[1, 2, 0.5]]}))
    with pytest.raises(ValueError, match=rf"^{option} must be an integer.*got {re.escape(repr(value))}$"):
        make_question_source("predicted", split="validation", path=path, **{option: value})


def test_predictions_with_a_byte_order_mark_are_read(tmp_path):
    path = tmp_path / "predictions.json"
    path.write_bytes("\ufeff".encode() + json.dumps({"x": [[1, 2, 0.5]]}).encode())
    source = make_question_source("predicted", split="validation", path=path, top_k=1)
    assert source({"narration_id": "x"})[1].endswith(f"{VOCAB.noun_name(2)}?")


# ------------------------------------------------------------------------------------------------- question pools
def _pool(**pools) -> dict:
    return {"format": "mambavl-question-pool", "version": 1, "complete": True, "mask_token": "[MASK]",
            "settings": {}, "report": {}, "pools": pools}


POOL = _pool(
    verb={"1": {"name": "put down", "entries": ["Where do the hands [MASK] it?", "What is [MASK] on the counter?",
                                                "Is it [MASK] gently?"]},
          "0": {"name": "take", "entries": ["Which thing do the hands [MASK]?"]}},
    noun={"18": {"name": "chopping board", "entries": ["What lies flat on the [MASK]?", "Is the [MASK] wooden?"]}},
    action={"1,18": {"name": "put down chopping board", "entries": ["Where does the [MASK] go after [MASK]?"]}},
)


def test_predicted_questions_from_a_pool(tmp_path):
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps({f"P01_11_{i}": [["put-down", "board:chopping", 0.5], [0, 2, 0.2]]
                                       for i in range(40)} | {"P01_12_0": [[0, 2, 0.9], [1, 18, 0.1]]}))
    pool_path = tmp_path / "pool.json"
    pool_path.write_text(json.dumps(POOL))
    source = make_question_source("predicted", split="test", path=predictions, pool=pool_path,
                                  question_types=("verb", "noun", "action"))
    questions = [source({"narration_id": f"P01_11_{i}"}) for i in range(40)]
    # the entries of the best candidate's classes (put down / chopping board, given as class keys), never a template
    assert {q[0] for q in questions} == set(POOL["pools"]["verb"]["1"]["entries"])
    assert {q[1] for q in questions} == set(POOL["pools"]["noun"]["18"]["entries"])
    assert {q[2] for q in questions} == set(POOL["pools"]["action"]["1,18"]["entries"])
    # deterministic per narration (the same hash as the templates' phrasing): a fresh source, another order
    again = make_question_source("predicted", split="test", path=predictions, pool=POOL,
                                 question_types=("verb", "noun", "action"))
    assert [again({"narration_id": f"P01_11_{i}"}) for i in reversed(range(40))] == questions[::-1]
    assert source.pool_fallbacks == 0
    # a class the pool lacks (noun 2, action 0,2) is phrased from the templates, and counted
    verb_q, noun_q, action_q = source({"narration_id": "P01_12_0"})
    assert verb_q == "Which thing do the hands [MASK]?"
    assert noun_q in ("Which object is involved: plate or chopping board?", "Is the object a plate or chopping board?")
    assert action_q.startswith(("Which action is performed: take plate", "Is the person going to take plate"))
    assert source.pool_fallbacks == 2
    # the pool's mask token becomes the tokenizer's
    roberta = make_question_source("predicted", split="test", path=predictions, pool=POOL, mask_token="<mask>")
    assert roberta({"narration_id": "P01_12_0"})[0] == "Which thing do the hands <mask>?"
    with pytest.raises(ValueError, match="question_source='file' does not use it"):
        make_question_source("file", split="test", path=predictions, pool=POOL)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"format": "something"}, r"not a question pool \(format 'something', expected 'mambavl-question-pool'\)"),
        ({"version": 2}, r"question pool version 2 is not supported"),
        ({"pools": {"adverb": {}}}, r"unknown pool kind 'adverb'"),
        ({"pools": {"verb": {"97": {"entries": ["q?"]}}}}, r"pools.verb key '97' is not a verb id 0..96"),
        ({"pools": {"action": {"3": {"entries": ["q?"]}}}}, r"pools.action key '3' is not '<verb id>,<noun id>'"),
        ({"pools": {"noun": {"3": {"entries": ["q?", " "]}}}}, r"pools.noun\['3'\].entries must be a list of non-empty"),
        # "07" would never be looked up (entries are found by pool_key, "7"): the class fell back silently
        ({"pools": {"verb": {"07": {"entries": ["q?"]}}}}, r"pools.verb key '07' is not a verb id 0..96"),
        ({"pools": {"action": {"1, 18": {"entries": ["q?"]}}}}, r"pools.action key '1, 18' is not '<verb id>,<noun"),
        ({"pools": {"verb": {"1": ["q?"]}}}, r"pools.verb\['1'\] must be an object \{name, entries\}, got a list"),
    ],
)
def test_bad_pools_name_file_field_and_value(tmp_path, change, expected):
    from modeling_mambavl.processors.questions import read_question_pool

    path = tmp_path / "pool.json"
    path.write_text(json.dumps({**POOL, **change}))
    with pytest.raises(ValueError, match=expected) as info:
        read_question_pool(path)
    assert str(path) in str(info.value)


def test_pool_files_that_cannot_be_read_name_the_file(tmp_path):
    """A folder given as the pool ("not found" before), a key given twice (the last one kept silently), bytes that
    are not UTF-8 (a bare codec error)."""
    from modeling_mambavl.processors.questions import read_question_pool

    with pytest.raises(IsADirectoryError, match=rf"question pool {re.escape(str(tmp_path))} is a folder"):
        read_question_pool(tmp_path)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps(POOL)[:-1] + ', "pools": {}}')
    with pytest.raises(ValueError, match=r"twice.json: key 'pools' is given twice"):
        read_question_pool(twice)
    binary = tmp_path / "binary.json"
    binary.write_bytes(b"\x80" + json.dumps(POOL).encode())
    with pytest.raises(ValueError, match=r"binary.json: not a UTF-8 text file"):
        read_question_pool(binary)


def test_a_checkpoint_keeps_its_pool_and_reproduces_its_questions(tmp_path):
    from transformers import AutoProcessor

    from modeling_mambavl.processors import MambaVLProcessor
    from modeling_mambavl.training.builders import apply_question_pool, tokenize_questions

    rows = [{"narration_id": f"P01_11_{i}"} for i in range(12)]
    predictions = tmp_path / "predictions.json"
    predictions.write_text(json.dumps({r["narration_id"]: [[1, 18, 0.9]] for r in rows}))
    pool_path = tmp_path / "pool.json"
    pool_path.write_text(json.dumps(POOL))
    processor = MambaVLProcessor()
    with pytest.raises(ValueError, match="--question_pool .*pool.json: a question pool phrases the questions of "
                                         "--question_source predicted, not generic"):
        apply_question_pool(processor, pool_path, "generic")
    templated = tokenize_questions(rows, processor, "predicted", "validation", path=predictions)
    apply_question_pool(processor, pool_path, "predicted")
    pooled = tokenize_questions(rows, processor, "predicted", "validation", path=predictions)
    assert not torch_equal(templated, pooled)
    texts = processor.tokenizer.batch_decode(pooled[0][:, 0], skip_special_tokens=True)
    assert set(texts) <= {processor.tokenizer.decode(processor.tokenizer(e)["input_ids"], skip_special_tokens=True)
                          for e in POOL["pools"]["verb"]["1"]["entries"]}
    processor.save_pretrained(tmp_path / "checkpoint")
    loaded = AutoProcessor.from_pretrained(tmp_path / "checkpoint")
    assert loaded.question_pool == POOL
    assert torch_equal(tokenize_questions(rows, loaded, "predicted", "validation", path=predictions), pooled)
    apply_question_pool(loaded, None, "generic")  # no --question_pool: the checkpoint's pool stays
    assert loaded.question_pool == POOL
    # the datasets path (load_ek100(processor=...), mambavl eval) phrases them from the same pool
    from modeling_mambavl.ek100.media import EK100Transform

    transform = EK100Transform(media_root=tmp_path, media="video", task="recognition", split="validation",
                               processor=loaded, question_source="predicted", questions_path=predictions)
    encoded = loaded.tokenize_questions([transform.questions(row) for row in rows], return_tensors="pt")
    assert torch_equal((encoded["question_input_ids"], encoded["question_attention_mask"]), pooled)
    with pytest.raises(ValueError, match=r"MambaVLProcessor\(question_pool=...\): question pool version 2"):
        MambaVLProcessor(question_pool={**POOL, "version": 2})


def torch_equal(a, b) -> bool:
    return all(x.shape == y.shape and bool((x == y).all()) for x, y in zip(a, b))
