"""Write a question file (a verb and a noun question per narration) for an EK100 annotation CSV with any local
transformers text-generation model, then mask the answers out.

The authors asked an LLM for a verb question and a noun question per narration. This script does the same with a
local causal LM, one prompt per question (``PROMPT_TEMPLATE``, shown with ``--show-prompt``)::

    You write questions about short first-person cooking videos.
    Narration of the clip: "{narration}".
    Write one short question that asks {target}, without giving the answer.
    Question:

with ``{target}`` = "which action the hands perform" (verb) or "which object the hands use" (noun). The model's
continuation is cut at its first line and first ``?``; it is accepted when it is 3-30 words long and ends with
``?``. Otherwise the question falls back to the generic template of its type (``GENERIC_TEMPLATES``), and the
report says how often. Every accepted question is then masked with ``mask_answer`` (``--policy strict`` by default:
the narration's verb and every noun of ``all_noun_classes`` in every surface form), and the report says how many
questions needed masking. Greedy decoding, so a rerun gives the same file.

Usage::

    python examples/generate_questions.py --annotations EPIC_100_validation.csv --model path/to/causal-lm \\
        --output questions_validation.csv --report report.json [--limit 100] [--batch-size 8]

The output (CSV or JSONL by suffix: ``narration_id,verb_question,noun_question``) is what
``make_question_source("file", split=..., path=...)`` reads.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from modeling_mambavl.ek100 import EK100Vocabulary
from modeling_mambavl.processors import GENERIC_TEMPLATES, mask_answer, write_question_file
from modeling_mambavl.training.arguments import HelpFormatter, finish_parser

PROMPT_TEMPLATE = (
    "You write questions about short first-person cooking videos.\n"
    'Narration of the clip: "{narration}".\n'
    "Write one short question that asks {target}, without giving the answer.\n"
    "Question:"
)
TARGETS = {"verb": "which action the hands perform", "noun": "which object the hands use"}
QUESTION_TYPES = ("verb", "noun")
MIN_WORDS, MAX_WORDS = 3, 30


def build_prompt(narration: str, question_type: str) -> str:
    """The prompt for one question of ``question_type`` ("verb" / "noun") about ``narration``."""
    return PROMPT_TEMPLATE.format(narration=narration, target=TARGETS[question_type])


def parse_question(completion: str) -> str | None:
    """The question in a model continuation: its first line up to the first ``?``; ``None`` if there is none or it
    is not 3-30 words."""
    lines = [line.strip() for line in completion.strip().splitlines() if line.strip()]
    if not lines:
        return None
    line = lines[0]
    if "?" not in line:
        return None
    question = line[: line.index("?") + 1].strip().strip("\"'").strip()
    if not question.endswith("?"):
        question += "?"
    words = question[:-1].split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return None
    return question


def read_annotations(path: str | Path, limit: int | None = None) -> list[dict]:
    """Rows of an EK100 annotation CSV with ``narration_id``, ``narration``, ``verb_class`` and noun classes."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = {"narration_id", "narration", "verb_class"} - set(reader.fieldnames or ())
        if missing or not ({"all_noun_classes", "noun_class"} & set(reader.fieldnames or ())):
            raise ValueError(
                f"{path}: needs columns narration_id, narration, verb_class and all_noun_classes (or noun_class) to "
                f"write masked questions; missing {sorted(missing) or ['all_noun_classes']}"
            )
        rows = []
        for line, row in enumerate(reader, start=2):
            try:
                nouns = ast.literal_eval(row["all_noun_classes"]) if row.get("all_noun_classes") else [int(row["noun_class"])]
                rows.append({"narration_id": row["narration_id"], "narration": row["narration"],
                             "verb_class": int(row["verb_class"]), "noun_classes": [int(n) for n in nouns]})
            except (ValueError, SyntaxError, TypeError) as e:
                raise ValueError(f"{path}, line {line}: cannot read the class ids ({e})") from None
            if limit is not None and len(rows) >= limit:
                break
    return rows


def generate_questions(
    rows: Sequence[dict],
    generate: Callable[[list[str]], list[str]],
    *,
    vocab: EK100Vocabulary | None = None,
    policy: str = "strict",
    mask_token: str = "[MASK]",
    batch_size: int = 8,
) -> tuple[dict[str, list[str]], dict]:
    """Questions for ``rows`` from ``generate(prompts) -> continuations``, masked; returns ``(questions, report)``.

    ``questions`` maps ``narration_id`` to ``[verb_question, noun_question]``; ``report`` counts the questions that
    needed masking and those that fell back to templates, with examples.
    """
    vocab = vocab or EK100Vocabulary.default()
    jobs = [(row, t) for row in rows for t in QUESTION_TYPES]
    completions: list[str] = []
    for start in range(0, len(jobs), batch_size):
        prompts = [build_prompt(row["narration"], t) for row, t in jobs[start : start + batch_size]]
        out = list(generate(prompts))
        if len(out) != len(prompts):
            raise RuntimeError(f"generate returned {len(out)} continuations for {len(prompts)} prompts")
        completions += out
    questions: dict[str, list[str]] = {}
    stats = {t: {"questions": 0, "masked": 0, "fallback": 0} for t in QUESTION_TYPES}
    masked_examples, fallback_examples = [], []
    for (row, t), completion in zip(jobs, completions):
        stats[t]["questions"] += 1
        parsed = parse_question(completion)
        if parsed is None:
            stats[t]["fallback"] += 1
            question = GENERIC_TEMPLATES[t][0]
            if len(fallback_examples) < 10:
                fallback_examples.append({"narration_id": row["narration_id"], "type": t, "output": completion[:200]})
        else:
            question = mask_answer(parsed, row["verb_class"], row["noun_classes"], vocab, policy=policy,
                                   question_type=t, mask_token=mask_token)
            if question != parsed:
                stats[t]["masked"] += 1
                if len(masked_examples) < 10:
                    masked_examples.append({"narration_id": row["narration_id"], "narration": row["narration"],
                                            "type": t, "generated": parsed, "masked": question})
        questions.setdefault(row["narration_id"], []).append(question)
    total = sum(s["questions"] for s in stats.values())
    masked = sum(s["masked"] for s in stats.values())
    fallback = sum(s["fallback"] for s in stats.values())
    parsed_total = total - fallback
    report = {
        "rows": len(rows),
        "questions": total,
        "parsed": parsed_total,
        "fallback_to_template": fallback,
        "fallback_fraction": fallback / total if total else 0.0,
        "needed_masking": masked,
        "needed_masking_fraction_of_parsed": masked / parsed_total if parsed_total else 0.0,
        "by_type": stats,
        "policy": policy,
        "mask_token": mask_token,
        "prompt_template": PROMPT_TEMPLATE,
        "masked_examples": masked_examples,
        "fallback_examples": fallback_examples,
    }
    return questions, report


def make_generator(model_path: str, *, max_new_tokens: int = 40, device: str = "cpu") -> Callable[[list[str]], list[str]]:
    """A greedy ``generate(prompts) -> continuations`` from a local causal LM folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(model_path, local_files_only=True).to(device).eval()
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"{model_path}: the tokenizer has neither a pad nor an eos token; add one")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only models continue from the right end
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.sep_token_id

    @torch.no_grad()
    def generate(prompts: list[str]) -> list[str]:
        batch = tokenizer(prompts, return_tensors="pt", padding=True, return_token_type_ids=False).to(device)
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=eos)
        return tokenizer.batch_decode(out[:, batch["input_ids"].shape[1] :], skip_special_tokens=True)

    return generate


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--annotations", help="EK100 annotation CSV (train / validation format)")
    parser.add_argument("--model", help="local folder of a transformers causal LM and its tokenizer")
    parser.add_argument("--output", help="question file to write (.csv or .jsonl)")
    parser.add_argument("--report", help="JSON report to write (also printed)")
    parser.add_argument("--limit", type=int, help="only the first N narrations")
    parser.add_argument("--batch-size", type=int, default=8, help="narrations per generation batch")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens generated per answer at most")
    parser.add_argument("--policy", choices=("strict", "paper"), default="strict",
                        help="answer masking: strict (both questions, every form of the verb and nouns) or the "
                             "authors' cross-only rule")
    parser.add_argument("--mask-token", default="[MASK]",
                        help="the mask token of the tokenizer that will read the questions (RoBERTa: <mask>)")
    parser.add_argument("--device", default="cpu", help="torch device of the language model")
    parser.add_argument("--show-prompt", action="store_true", help="print the prompt template and exit")
    finish_parser(parser)  # --debug; refuses an option without help
    args = parser.parse_args(argv)
    if args.show_prompt:
        print(PROMPT_TEMPLATE)
        return {}
    missing = [f"--{name}" for name in ("annotations", "model", "output") if getattr(args, name) is None]
    if missing:
        parser.error(f"the following arguments are required: {', '.join(missing)}")
    rows = read_annotations(args.annotations, args.limit)
    generate = make_generator(args.model, max_new_tokens=args.max_new_tokens, device=args.device)
    questions, report = generate_questions(rows, generate, policy=args.policy, mask_token=args.mask_token,
                                           batch_size=args.batch_size)
    write_question_file(args.output, questions, QUESTION_TYPES)
    report.update({"annotations": str(args.annotations), "model": str(args.model), "output": str(args.output)})
    if args.report:
        Path(args.report).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(
        f"{report['rows']} narrations, {report['questions']} questions -> {args.output}\n"
        f"  fell back to templates (unparseable output): {report['fallback_to_template']} "
        f"({100 * report['fallback_fraction']:.1f}%)\n"
        f"  needed masking: {report['needed_masking']} of {report['parsed']} generated questions "
        f"({100 * report['needed_masking_fraction_of_parsed']:.1f}%)"
    )
    return report


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "generate_questions.py"))
