"""examples/generate_questions.py: parsing, masking and fallback accounting, and an end-to-end run with a tiny
random causal LM saved to tmp_path; question pools: strict masking, resuming, and the script run as a subprocess with a
tiny local GPT-2 built from a config."""

import csv
import json
import re
from pathlib import Path

import pytest
import torch
from helpers.scripts import import_script
from transformers import GPT2Config, GPT2LMHeadModel

from modeling_mambavl import mask_answer
from modeling_mambavl.ek100 import EK100Vocabulary
from modeling_mambavl.processors import GENERIC_TEMPLATES, default_question_tokenizer, make_question_source
from modeling_mambavl.processors.questions import check_question_pool

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


# ------------------------------------------------------------------------------------------------- question pools
def bigram_lm(folder: Path, words=("where", "do", "you", "take", "this", "tap", "?")) -> Path:
    """A GPT-2 built from a config whose blocks and position table are zero, so that it is a bigram model: after the
    prompt's last token ([SEP]) greedy decoding writes ``words`` and stops at [SEP]. A real transformers causal LM
    that writes a question naming classes (take, tap), so that the pool's masking is exercised through the model."""
    tokenizer = default_question_tokenizer()
    tokenizer.eos_token = "[SEP]"
    chain = [tokenizer.sep_token_id, *tokenizer.convert_tokens_to_ids(list(words)), tokenizer.sep_token_id]
    width = 16
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=128, n_embd=width, n_layer=1, n_head=2,
                        tie_word_embeddings=False, bos_token_id=tokenizer.cls_token_id,
                        eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        for p in model.transformer.h.parameters():
            p.zero_()
        model.transformer.wpe.weight.zero_()
        model.lm_head.weight.zero_()
        for i, (token, following) in enumerate(zip(chain, chain[1:])):
            model.transformer.wte.weight[token] = torch.nn.functional.one_hot(torch.tensor(i), width).float()
            model.lm_head.weight[following] = 10.0 * torch.nn.functional.one_hot(torch.tensor(i), width).float()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _forms(kind: str, key: str) -> list[str]:
    from modeling_mambavl.processors.masking import noun_surface_forms, verb_surface_forms

    ids = [int(k) for k in key.split(",")]
    if kind == "verb":
        return verb_surface_forms(ids[0])
    if kind == "noun":
        return noun_surface_forms(ids[0])
    return verb_surface_forms(ids[0]) + noun_surface_forms(ids[1])


def _names_its_class(entry: str, kind: str, key: str) -> list[str]:
    words = " " + " ".join(re.findall(r"[^\W_]+", entry.lower())) + " "
    return [form for form in _forms(kind, key) if f" {form} " in words]


def test_pool_classes_cover_the_vocabulary(script):
    classes = script.pool_classes(VOCAB)
    kinds = [c["kind"] for c in classes]
    assert (kinds.count("action"), kinds.count("verb"), kinds.count("noun")) == (3806, 97, 300)
    first = {c["kind"]: c for c in reversed(classes)}
    assert first["verb"] == {"kind": "verb", "key": "0", "name": "take", "verb": 0, "nouns": []}
    assert first["noun"] == {"kind": "noun", "key": "0", "name": "tap", "verb": None, "nouns": [0]}
    assert first["action"] == {"kind": "action", "key": "0,0", "name": "take tap", "verb": 0, "nouns": [0]}
    limited = script.pool_classes(VOCAB, ("noun",), limit=3)
    assert [c["key"] for c in limited] == ["0", "1", "2"]
    prompts = {script.build_pool_prompt("action", "open door", a) for a in script.POOL_ASPECTS}
    assert len(prompts) == len(script.POOL_ASPECTS) == 10  # distinct prompts: greedy decoding can differ
    assert all('"open door"' in p and p.endswith("Question:") for p in prompts)


def test_pool_entries_are_masked_strictly_and_unparseable_ones_dropped(script):
    classes = script.pool_classes(VOCAB, limit=2)  # actions take tap / take spoon, verbs take / put, nouns tap / spoon
    replies = {
        "the movement of the hands": " Do the hands grab the tap or the spoons?",
        "the object the hands touch": " Does the person pick up the water tap?",
        "where in the kitchen it happens": " sink sink sink",  # not a question: dropped
        "what the person did just before": " DO THE HANDS GRAB THE TAP OR THE SPOONS?",  # a repeat once masked
    }

    def fake_generate(prompts):
        return [next(r for a, r in replies.items() if a in p) for p in prompts]

    pool = script.generate_pool(classes, fake_generate, pool_size=4, batch_size=3, progress=False)
    assert check_question_pool(pool) == pool and pool["complete"] is True
    entries = {(kind, key): item["entries"] for kind, items in pool["pools"].items() for key, item in items.items()}
    # strict: the class's own verb and nouns, in every form (grab / pick up are instances of take, spoons of spoon)
    assert entries["verb", "0"] == ["Do the hands [MASK] the tap or the spoons?", "Does the person [MASK] the water tap?"]
    assert entries["noun", "0"] == ["Do the hands grab the [MASK] or the spoons?", "Does the person pick up the [MASK]?"]
    assert entries["action", "0,0"] == ["Do the hands [MASK] the [MASK] or the spoons?", "Does the person [MASK] the [MASK]?"]
    assert entries["noun", str(VOCAB.noun_id("spoon"))] == ["Do the hands grab the tap or the [MASK]?",
                                                                 "Does the person pick up the water tap?"]
    for (kind, key), items in entries.items():
        for entry in items:
            assert not _names_its_class(entry, kind, key), (kind, key, entry)
    counts = pool["report"]["by_kind"]["action"]
    assert counts == {"classes": 2, "prompts": 8, "parsed": 6, "masked": 6, "unparseable": 2, "duplicates": 2,
                      "empty_classes": 0}
    assert pool["pools"]["verb"]["1"]["name"] == VOCAB.verb_name(1)
    with pytest.raises(ValueError, match="pool_size must be 1..10"):
        script.generate_pool(classes, fake_generate, pool_size=11)


def test_a_stopped_pool_run_resumes_where_it_stopped(script, tmp_path):
    path = tmp_path / "pool.json"
    classes = script.pool_classes(VOCAB, ("verb",), limit=5)
    calls = []

    def generate(prompts):
        calls.append(len(prompts))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops the run
        return [" What does the person do there?"] * len(prompts)

    with pytest.raises(KeyboardInterrupt):
        script.generate_pool(classes, generate, pool_size=2, batch_size=2, save=lambda p: script.write_pool(path, p),
                             save_every=100, progress=False)
    stopped = json.loads(path.read_text())  # written when the run stopped: the two classes done
    assert stopped["complete"] is False and sorted(stopped["pools"]["verb"]) == ["0", "1"]
    assert [p.name for p in tmp_path.iterdir()] == ["pool.json"]  # no temporary left behind
    calls.clear()
    pool = script.generate_pool(classes, lambda ps: [" What does the person do there?"] * len(ps), pool_size=2,
                                batch_size=2, resume=check_question_pool(stopped), progress=False)
    assert pool["complete"] is True and sorted(pool["pools"]["verb"]) == ["0", "1", "2", "3", "4"]
    assert pool["report"]["reused_classes"] == 2 and pool["report"]["generated_classes"] == 3
    assert pool["report"]["by_kind"]["verb"]["classes"] == 5  # counts carried over from the stopped run


def test_pool_end_to_end_with_a_tiny_local_lm(script, tiny_lm, tmp_path):
    import subprocess
    import sys

    lm = bigram_lm(tmp_path / "bigram-lm")
    pool_path, report_path = tmp_path / "pool.json", tmp_path / "report.json"
    args = ["--model", str(lm), "--pool", str(pool_path), "--pool-size", "2", "--batch-size", "3",
            "--max-new-tokens", "12", "--report", str(report_path)]
    proc = subprocess.run([sys.executable, str(SCRIPT), *args, "--pool-limit", "1"], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "question pool" in proc.stderr  # the progress bar
    assert "question pool -> " in proc.stdout and "3 classes (3 generated, 0 from the file already there)" in proc.stdout
    pool = check_question_pool(json.loads(pool_path.read_text()))
    assert pool["complete"] is True and pool["settings"]["model"] == str(lm)
    # the model wrote "where do you take this tap?" for every prompt; each class lost its own name only
    assert pool["pools"] == {
        "action": {"0,0": {"name": "take tap", "entries": ["where do you [MASK] this [MASK]?"]}},
        "verb": {"0": {"name": "take", "entries": ["where do you [MASK] this tap?"]}},
        "noun": {"0": {"name": "tap", "entries": ["where do you take this [MASK]?"]}},
    }
    report = json.loads(report_path.read_text())["pool"]
    assert report["by_kind"]["verb"] == {"classes": 1, "prompts": 2, "parsed": 2, "masked": 2, "unparseable": 0,
                                         "duplicates": 1, "empty_classes": 0}
    # resumed with more classes: the first three are kept, the next three generated
    report = script.main([*args, "--pool-limit", "2", "--no-progress"])["pool"]
    assert (report["reused_classes"], report["generated_classes"]) == (3, 3)
    grown = json.loads(pool_path.read_text())
    assert grown["pools"]["verb"]["1"]["entries"] == ["where do you take this tap?"]  # "put" is not named
    assert grown["pools"]["noun"]["0"] == pool["pools"]["noun"]["0"]
    # a random LM writes no questions: every entry dropped, counted, the class kept empty (the source falls back)
    other = tmp_path / "random.json"
    report = script.main(["--model", str(tiny_lm), "--pool", str(other), "--pool-size", "1", "--pool-limit", "1",
                          "--pool-kinds", "noun", "--max-new-tokens", "8", "--no-progress"])["pool"]
    assert report["by_kind"]["noun"]["empty_classes"] == 1
    assert json.loads(other.read_text())["pools"]["noun"]["0"]["entries"] == []
    # other settings are refused, naming them
    with pytest.raises(ValueError, match=r"pool.json was written with other settings \(aspects: .*; pool_size: 2 -> 3\)"):
        script.main([*args, "--pool-size", "3"])


def test_pool_arguments_are_checked(script, capsys):
    with pytest.raises(SystemExit):
        script.main(["--model", "m"])
    assert "give --annotations and --output" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.main(["--model", "m", "--pool", "p.json", "--pool-size", "0"])
    assert "--pool-size must be 1..10" in capsys.readouterr().err


@pytest.mark.parametrize("option", ["--limit", "--batch-size", "--max-new-tokens", "--pool-limit",
                                    "--pool-save-every"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_counts_below_one_are_refused_naming_the_option(script, capsys, option, value):
    """--pool-limit -1 sliced off the last class silently, --batch-size 0 failed inside range()."""
    with pytest.raises(SystemExit) as info:
        script.main(["--model", "m", "--pool", "p.json", option, value])
    assert info.value.code == 2
    assert f"{option} must be at least 1, got {value}" in capsys.readouterr().err


def test_bad_pool_and_output_paths_are_refused_before_the_model_loads(script, tmp_path, capsys):
    """A folder as --pool or --report, a file on the way of --output, a pool to resume that is not valid: one line
    naming the option or the file, before the (possibly large) model is loaded: --model names nothing that exists."""
    from modeling_mambavl.cli import run_main

    folder = tmp_path / "folder"
    folder.mkdir()
    plain = tmp_path / "plain"
    plain.write_text("x")
    broken = tmp_path / "broken.json"
    broken.write_bytes(b"\xef\xbb\xbf{")  # a byte-order mark, then half a JSON object
    missing_model = str(tmp_path / "no-model")
    cases = [
        (["--pool", str(folder)], f"--pool {folder}: is a folder, and a file goes there"),
        (["--pool", str(tmp_path / "p.json"), "--report", str(folder)], f"--report {folder}: is a folder"),
        (["--annotations", "a.csv", "--output", str(plain / "q.csv")], f"--output {plain / 'q.csv'}: {plain} is a "
                                                                        "file, not a folder"),
        (["--pool", str(broken)], f"{broken}: not valid JSON (Expecting property name enclosed in double quotes: "
                                  "line 1 column 2 (char 1)); delete it to start the pool again"),
    ]
    for options, expected in cases:
        assert run_main(script.main, "generate_questions.py", ["--model", missing_model, *options]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"generate_questions.py: {expected}"), lines
    assert plain.read_text() == "x" and list(folder.iterdir()) == []


@pytest.mark.slow
def test_a_model_trained_with_a_pool_is_evaluated_with_it(script, tmp_path, tmp_path_factory):
    """--question_pool through the training script: the pool is saved with the processor, and eval_ek100.py without
    --question_pool phrases the same questions from it."""
    from helpers.train_run import EVAL, TRAIN, data_args, run, script_args, synthetic_cache, synthetic_root

    from modeling_mambavl.processors import MambaVLProcessor
    from modeling_mambavl.training.builders import tokenize_questions

    cache = synthetic_cache(tmp_path_factory)
    pool_path = tmp_path / "pool.json"
    script.main(["--model", str(bigram_lm(tmp_path / "lm")), "--pool", str(pool_path), "--pool-size", "1",
                 "--pool-limit", "1", "--max-new-tokens", "12", "--no-progress"])
    files = {}
    for split in ("train", "validation"):
        with open(synthetic_root(cache) / "annotations" / f"EPIC_100_{split}.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        files[split] = tmp_path / f"predictions_{split}.json"
        files[split].write_text(json.dumps({r["narration_id"]: [[0, 0, 0.9], [1, 1, 0.1]] for r in rows}))
    out = tmp_path / "run"
    proc = run(TRAIN, script_args(cache, out, "--num_train_epochs", "1", "--per_device_train_batch_size", "6",
                                  "--question_source", "predicted", "--train_questions_file", str(files["train"]),
                                  "--eval_questions_file", str(files["validation"]),
                                  "--question_pool", str(pool_path)))
    assert proc.returncode == 0, proc.stderr[-3000:]
    saved = json.loads((out / "best_model" / "processor_config.json").read_text())["question_pool"]
    assert saved["pools"] == json.loads(pool_path.read_text())["pools"]
    loaded = MambaVLProcessor.from_pretrained(out / "best_model")
    ids, _ = tokenize_questions([{"narration_id": n} for n in json.loads(files["validation"].read_text())], loaded,
                                "predicted", "validation", path=files["validation"])
    assert "where do you [MASK] this tap?" in loaded.tokenizer.decode(ids[0, 0])  # the verb pool of verb 0
    proc = run(EVAL, ["--model_name_or_path", str(out / "best_model"), "--split", "validation", "--output_dir",
                      str(tmp_path / "eval"), "--question_source", "predicted", "--questions_file",
                      str(files["validation"]), *data_args(cache)])
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    theirs = json.loads((out / "best_model" / "metrics.json").read_text())
    for key in ("all_verb_top1", "all_noun_top1", "all_verb_top5", "all_noun_top5"):  # the same questions
        assert ours["metrics"][key] == pytest.approx(theirs["metrics"][key], abs=1e-6), key
    # a pool with another source is a one-line user error
    proc = run(EVAL, ["--model_name_or_path", str(out / "best_model"), "--split", "validation", "--output_dir",
                      str(tmp_path / "eval2"), "--question_pool", str(pool_path), *data_args(cache)])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"eval_ek100.py: --question_pool {pool_path}: a question pool phrases the questions of "
                           "--question_source predicted, not generic; add --question_source predicted"), line


def test_a_full_disk_while_saving_the_pool_keeps_the_previous_file(script, tmp_path, monkeypatch):
    """A pool saved on a full disk (a write raising ENOSPC): the documented DiskFullError naming the pool, the file
    of the last save untouched (a rerun resumes from it), no temporary left."""
    from helpers.full_disk import fill_disk

    from modeling_mambavl import atomic

    path = tmp_path / "pool.json"
    pool = {"format": "mambavl-question-pool", "version": 1, "complete": False, "mask_token": "[MASK]",
            "settings": {}, "report": {}, "pools": {"verb": {"0": {"name": "take", "entries": ["Why?"]}}}}
    script.write_pool(path, pool)
    before = path.read_text()

    fill_disk(monkeypatch)
    with pytest.raises(atomic.DiskFullError, match=r"could not write the question pool \(.*pool.json\); nothing of"):
        script.write_pool(path, {**pool, "complete": True})
    monkeypatch.undo()
    assert path.read_text() == before and [p.name for p in tmp_path.iterdir()] == ["pool.json"]
