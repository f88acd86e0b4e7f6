"""examples/generate_questions.py: parsing, masking and fallback accounting, and an end-to-end run with a tiny
random causal LM saved to tmp_path."""

import csv
import json
from pathlib import Path

import pytest
import torch
from helpers.scripts import import_script
from transformers import GPT2Config, GPT2LMHeadModel

from modeling_mambavl import mask_answer
from modeling_mambavl.ek100 import EK100Vocabulary
from modeling_mambavl.processors import GENERIC_TEMPLATES, default_question_tokenizer, make_question_source

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "generate_questions.py"
VOCAB = EK100Vocabulary.default()
COLUMNS = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp", "stop_timestamp",
           "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class", "all_nouns",
           "all_noun_classes"]
ROWS = [
    ["P01_11_1", "P01", "P01_11", "", "00:00:01.56", "00:00:02.45", "93", "147", "put down chopping board", "put-down",
     "1", "board:chopping", "18", "['board:chopping']", "[18]"],
    ["P01_11_2", "P01", "P01_11", "", "00:00:02.50", "00:00:04.00", "150", "240", "cut onion with knife", "cut", "7",
     "onion", "13", "['onion', 'knife']", f"[13, {VOCAB.noun_id('knife')}]"],
    ["P01_11_3", "P01", "P01_11", "", "00:00:04.10", "00:00:05.00", "246", "300", "open tap", "open", "3", "tap", "0",
     "['tap']", "[0]"],
]


@pytest.fixture(scope="module")
def script():
    yield from import_script(SCRIPT, "generate_questions")


@pytest.fixture
def annotations(tmp_path):
    path = tmp_path / "EPIC_100_validation_small.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(ROWS)
    return path


def test_parse_question(script):
    assert script.parse_question(" What is being cut here? And more?\nNext") == "What is being cut here?"
    assert script.parse_question('"Which object is used?"') == "Which object is used?"
    assert script.parse_question("no question mark at all") is None
    assert script.parse_question("Why?") is None  # too short
    assert script.parse_question("\n\n") is None
    assert "{narration}" in script.PROMPT_TEMPLATE and "{target}" in script.PROMPT_TEMPLATE
    prompt = script.build_prompt("cut onion", "noun")
    assert '"cut onion"' in prompt and "object" in prompt and prompt.endswith("Question:")


def test_masking_and_fallback_are_counted(script, annotations):
    rows = script.read_annotations(annotations)
    assert [r["noun_classes"] for r in rows] == [[18], [13, VOCAB.noun_id("knife")], [0]]

    def fake_generate(prompts):
        out = []
        for p in prompts:
            if "which action" in p and "put down" in p:
                out.append(" Is the person putting down the chopping board?\nThe end")
            elif "which action" in p:
                out.append(" What happens with the hands in this clip?")
            elif "cut onion" in p:
                out.append(" Which vegetable did the knives slice?")
            else:
                out.append(" tap tap tap")  # unparseable
        return out

    questions, report = script.generate_questions(rows, fake_generate, batch_size=4)
    assert questions["P01_11_1"][0] == "Is the person [MASK] the [MASK]?"
    assert questions["P01_11_2"] == ["What happens with the hands in this clip?",
                                     "Which vegetable did the [MASK] [MASK]?"]
    assert questions["P01_11_1"][1] == GENERIC_TEMPLATES["noun"][0]  # fell back
    assert report["questions"] == 6 and report["fallback_to_template"] == 2 and report["parsed"] == 4
    assert report["needed_masking"] == 2 and report["needed_masking_fraction_of_parsed"] == 0.5
    assert report["by_type"]["verb"] == {"questions": 3, "masked": 1, "fallback": 0}
    assert report["by_type"]["noun"] == {"questions": 3, "masked": 1, "fallback": 2}
    assert report["masked_examples"][0]["generated"] == "Is the person putting down the chopping board?"
    paper, _ = script.generate_questions(rows, fake_generate, policy="paper", mask_token="<mask>")
    assert paper["P01_11_1"][0] == "Is the person putting down the <mask>?"  # cross-only


@pytest.fixture
def tiny_lm(tmp_path):
    tokenizer = default_question_tokenizer()
    tokenizer.eos_token = "[SEP]"
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    folder = tmp_path / "tiny-lm"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_end_to_end_with_a_tiny_random_lm(script, annotations, tiny_lm, tmp_path, suffix):
    output, report_path = tmp_path / f"questions{suffix}", tmp_path / "report.json"
    report = script.main(["--annotations", str(annotations), "--model", str(tiny_lm), "--output", str(output),
                          "--report", str(report_path), "--batch-size", "4", "--max-new-tokens", "12"])
    assert json.loads(report_path.read_text())["questions"] == report["questions"] == 6
    assert report["parsed"] + report["fallback_to_template"] == 6
    source = make_question_source("file", split="validation", path=output)
    for row in ROWS:
        questions = source({"narration_id": row[0]})
        assert len(questions) == 2 and all(q.strip() for q in questions)
        for q in questions:  # nothing left to mask
            assert mask_answer(q, int(row[10]), json.loads(row[14]), VOCAB) == q
    # greedy decoding: a rerun writes the same file
    again = tmp_path / f"again{suffix}"
    script.main(["--annotations", str(annotations), "--model", str(tiny_lm), "--output", str(again),
                 "--batch-size", "2", "--max-new-tokens", "12", "--limit", "3"])
    assert again.read_text() == output.read_text()


def test_annotations_without_labels_are_refused(script, tmp_path):
    path = tmp_path / "test_timestamps.csv"
    path.write_text("narration_id,participant_id,video_id,start_timestamp\nP01_101_0,P01,P01_101,00:00:01.00\n")
    with pytest.raises(ValueError, match="narration"):
        script.read_annotations(path)
