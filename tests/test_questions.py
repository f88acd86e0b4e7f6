"""Question templates and sources (generic / file / predicted / oracle), question files, the oracle refusals."""

import json

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
