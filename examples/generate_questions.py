"""Write a question file (a verb and a noun question per narration) for an EK100 annotation CSV, and/or a question
pool (several questions per action, verb and noun class), with any local transformers text-generation model, then
mask the answers out.

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

**Question pools** (``--pool pool.json``): several questions per class of the vocabulary — per action (the
authors' recognition setting: an LLM's descriptions of an action class, e.g. ten of "open door"), per verb and per
noun — that ``question_source="predicted"`` phrases its questions from (``--question_pool`` of the training and
evaluation scripts). One prompt per class and aspect (``POOL_PROMPT_TEMPLATE``, ``POOL_SUBJECTS``; the first
``--pool-size`` of the ten ``POOL_ASPECTS`` give ``--pool-size`` different prompts, so greedy decoding still gives
different entries)::

    You write questions about short first-person cooking videos.
    The clip shows {subject}.
    Write one short question about {aspect}, without naming the {named}.
    Question:

Each continuation is parsed as above; one that is not a question is dropped (a pool holds generated questions only),
every other is masked with the **strict** policy for its own class (the verb and noun of an action, the verb of a
verb class, the noun of a noun class; the cross-only ``paper`` rule would leave a class's own name in its pool), and
repeats within a class are dropped. The pool is written atomically every ``--pool-save-every`` classes and when the
run stops, so a rerun with the same settings resumes where it stopped (a file written with other settings is refused);
the format is documented in ``modeling_mambavl.processors.questions``::

    python examples/generate_questions.py --model path/to/causal-lm --pool pool.json [--pool-size 10] \\
        [--pool-kinds action verb noun] [--pool-limit 20] [--report report.json]
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from modeling_mambavl import atomic
from modeling_mambavl.atomic import check_target
from modeling_mambavl.ek100 import EK100Vocabulary
from modeling_mambavl.processors import GENERIC_TEMPLATES, mask_answer, write_question_file
from modeling_mambavl.processors.questions import POOL_FORMAT, POOL_KINDS, pool_key, read_question_pool
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

POOL_PROMPT_TEMPLATE = (
    "You write questions about short first-person cooking videos.\n"
    "The clip shows {subject}.\n"
    "Write one short question about {aspect}, without naming the {named}.\n"
    "Question:"
)
# kind -> (what the clip shows, what the question must not name)
POOL_SUBJECTS = {
    "action": ('a person doing "{name}"', "action"),
    "verb": ('a person doing "{name}" with something', "action"),
    "noun": ('a person handling a "{name}"', "object"),
}
POOL_ASPECTS = (
    "the movement of the hands",
    "the object the hands touch",
    "where in the kitchen it happens",
    "what the person did just before",
    "what the person will do next",
    "the tool or utensil involved",
    "why the person does it",
    "how the object changes",
    "the shape or colour of the object",
    "how long it takes",
)
POOL_COUNTS = ("classes", "prompts", "parsed", "masked", "unparseable", "duplicates", "empty_classes")


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


# ------------------------------------------------------------------------------------------------- question pools
def build_pool_prompt(kind: str, name: str, aspect: str) -> str:
    """The prompt for one pool entry of a class of ``kind`` ("action" / "verb" / "noun") called ``name``."""
    subject, named = POOL_SUBJECTS[kind]
    return POOL_PROMPT_TEMPLATE.format(subject=subject.format(name=name), aspect=aspect, named=named)


def pool_classes(vocab: EK100Vocabulary, kinds: Sequence[str] = POOL_KINDS, limit: int | None = None) -> list[dict]:
    """The classes a pool covers, in order: for each kind, the vocabulary's classes by id (actions in the
    vocabulary's action order), the first ``limit`` of each kind if given. Each is ``{kind, key, name, verb,
    nouns}``, ``verb`` / ``nouns`` being what ``mask_answer`` masks for it."""
    out = []
    for kind in kinds:
        if kind == "verb":
            items = [(v, None) for v in range(vocab.num_verbs)]
        elif kind == "noun":
            items = [(None, n) for n in range(vocab.num_nouns)]
        elif kind == "action":
            items = list(vocab.actions)
        else:
            raise ValueError(f"unknown pool kind {kind!r}; expected some of {POOL_KINDS}")
        for verb, noun in items[:limit]:
            names = ([vocab.verb_name(verb)] if verb is not None else []) + ([vocab.noun_name(noun)]
                                                                              if noun is not None else [])
            name = " ".join(names)
            out.append({"kind": kind, "key": pool_key(kind, verb, noun), "name": name, "verb": verb,
                        "nouns": [] if noun is None else [noun]})
    return out


def pool_entries(cls: dict, completions: Sequence[str], counts: dict, vocab: EK100Vocabulary, mask_token: str,
                 examples: list[dict]) -> list[str]:
    """The pool entries of one class from its model continuations: parsed, masked strictly for the class, repeats
    dropped; ``counts`` (of the class's kind) and ``examples`` (of masked entries, at most 10) are updated."""
    entries: list[str] = []
    seen = set()
    for completion in completions:
        counts["prompts"] += 1
        parsed = parse_question(completion)
        if parsed is None:
            counts["unparseable"] += 1
            continue
        counts["parsed"] += 1
        entry = mask_answer(parsed, cls["verb"], cls["nouns"], vocab, policy="strict", mask_token=mask_token)
        counts["masked"] += entry != parsed
        if entry.lower() in seen:
            counts["duplicates"] += 1
            continue
        seen.add(entry.lower())
        entries.append(entry)
        if entry != parsed and len(examples) < 10:
            examples.append({"kind": cls["kind"], "class": cls["name"], "generated": parsed, "masked": entry})
    counts["classes"] += 1
    counts["empty_classes"] += not entries
    return entries


def load_pool_for_resume(path: Path, settings: dict, mask_token: str) -> dict | None:
    """The pool already at ``path`` (to resume), ``None`` if there is none; refuses one written with other
    settings, naming them."""
    if not path.exists():
        return None
    try:
        pool = read_question_pool(path)
    except ValueError as e:
        raise ValueError(f"{e}; delete it to start the pool again, or give another --pool path") from None
    old = {**pool.get("settings", {}), "mask_token": pool["mask_token"]}
    new = {**settings, "mask_token": mask_token}
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        details = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed)
        raise ValueError(f"{path} was written with other settings ({details}); give another --pool path to start a "
                         "new pool, or delete it")
    return pool


def generate_pool(
    classes: Sequence[dict],
    generate: Callable[[list[str]], list[str]],
    *,
    pool_size: int = 10,
    vocab: EK100Vocabulary | None = None,
    mask_token: str = "[MASK]",
    batch_size: int = 8,
    settings: dict | None = None,
    resume: dict | None = None,
    save: Callable[[dict], None] | None = None,
    save_every: int = 100,
    progress: bool = True,
) -> dict:
    """A question pool (the JSON object of ``modeling_mambavl.processors.questions``) for ``classes``
    (:func:`pool_classes`) from ``generate(prompts) -> continuations``.

    Classes already in ``resume`` (a pool of the same settings) are kept as they are. ``save(pool)`` is called every
    ``save_every`` new classes and once more when generation ends or stops on an error, so that a long run can be
    resumed. Its ``report`` counts, per kind, prompts, parsed and masked entries, unparseable continuations (dropped),
    repeats (dropped) and classes left without an entry.
    """
    from tqdm.auto import tqdm

    if not 1 <= pool_size <= len(POOL_ASPECTS):
        raise ValueError(f"pool_size must be 1..{len(POOL_ASPECTS)} (one prompt per aspect), got {pool_size}")
    vocab = vocab or EK100Vocabulary.default()
    aspects = POOL_ASPECTS[:pool_size]
    pool: dict[str, Any] = {
        "format": POOL_FORMAT, "version": 1, "complete": False, "mask_token": mask_token, "settings": settings or {},
        "report": {"by_kind": {}, "masked_examples": []}, "pools": {},
    }
    if resume is not None:
        pool["pools"] = {kind: dict(items) for kind, items in resume["pools"].items()}
        pool["report"] = json.loads(json.dumps(resume.get("report") or pool["report"]))
    by_kind = pool["report"]["by_kind"]
    examples = pool["report"]["masked_examples"]
    todo = [c for c in classes if c["key"] not in pool["pools"].get(c["kind"], {})]
    pool["report"].update({"requested_classes": len(classes), "reused_classes": len(classes) - len(todo),
                           "generated_classes": 0})
    per_step = max(1, -(-batch_size // pool_size))  # classes whose prompts make about one batch
    bar = tqdm(total=len(classes), initial=len(classes) - len(todo), desc="question pool", unit="class",
               disable=not progress)
    since_save = 0
    try:
        for start in range(0, len(todo), per_step):
            step = todo[start : start + per_step]
            prompts = [build_pool_prompt(c["kind"], c["name"], a) for c in step for a in aspects]
            completions: list[str] = []
            for b in range(0, len(prompts), batch_size):
                out = list(generate(prompts[b : b + batch_size]))
                if len(out) != len(prompts[b : b + batch_size]):
                    raise RuntimeError(f"generate returned {len(out)} continuations for "
                                       f"{len(prompts[b : b + batch_size])} prompts")
                completions += out
            for i, cls in enumerate(step):
                counts = by_kind.setdefault(cls["kind"], dict.fromkeys(POOL_COUNTS, 0))
                entries = pool_entries(cls, completions[i * pool_size : (i + 1) * pool_size], counts, vocab,
                                       mask_token, examples)
                pool["pools"].setdefault(cls["kind"], {})[cls["key"]] = {"name": cls["name"], "entries": entries}
                pool["report"]["generated_classes"] += 1
            bar.update(len(step))
            since_save += len(step)
            if save is not None and since_save >= save_every:
                save(pool)
                since_save = 0
        pool["complete"] = all(c["key"] in pool["pools"].get(c["kind"], {}) for c in classes)
    finally:
        bar.close()
        if save is not None:
            save(pool)
    return pool


def write_pool(path: str | Path, pool: dict) -> None:
    """Write a question pool atomically (a reader never sees half a file)."""
    atomic.write_text(path, json.dumps(pool, indent=1, ensure_ascii=False) + "\n", what="the question pool")


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


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--annotations", help="EK100 annotation CSV (train / validation format)")
    parser.add_argument("--model", help="a transformers causal LM and its tokenizer: a local folder, or a Hub id "
                                        "already in the local cache (never downloaded)")
    parser.add_argument("--output", help="question file to write (.csv or .jsonl)")
    parser.add_argument("--report", help="JSON report to write (also printed)")
    parser.add_argument("--limit", type=int, help="only the first N narrations")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generation batch")
    parser.add_argument("--max-new-tokens", type=int, default=40, help="tokens generated per answer at most")
    parser.add_argument("--policy", choices=("strict", "paper"), default="strict",
                        help="answer masking of --output: strict (both questions, every form of the verb and nouns) "
                             "or the authors' cross-only rule (pools are always masked strictly)")
    parser.add_argument("--mask-token", default="[MASK]",
                        help="the mask token of the tokenizer that will read the questions (RoBERTa: <mask>)")
    parser.add_argument("--device", default="cpu", help="torch device of the language model")
    parser.add_argument("--pool", help="question pool JSON to write (or resume): several questions per class")
    parser.add_argument("--pool-size", type=int, default=10,
                        help=f"pool: prompts (one per aspect) per class, 1..{len(POOL_ASPECTS)}")
    parser.add_argument("--pool-kinds", nargs="+", choices=POOL_KINDS, default=list(POOL_KINDS),
                        help="pool: which classes get a pool")
    parser.add_argument("--pool-limit", type=int, help="pool: only the first N classes of each kind (quick runs)")
    parser.add_argument("--pool-save-every", type=int, default=100,
                        help="pool: write the pool file every N classes, so that a stopped run resumes there")
    parser.add_argument("--no-progress", action="store_true", help="pool: no progress bar")
    parser.add_argument("--show-prompt", action="store_true", help="print the prompt templates and exit")
    finish_parser(parser)  # --debug; refuses an option without help
    args = parser.parse_args(argv)
    if not args.show_prompt:
        if args.model is None:
            parser.error("the following arguments are required: --model")
        if args.pool is None and (args.annotations is None or args.output is None):
            parser.error("give --annotations and --output (a question per narration), --pool (a question pool), "
                         "or both")
        if (args.annotations is None) != (args.output is None):
            parser.error("--annotations and --output go together")
        if not 1 <= args.pool_size <= len(POOL_ASPECTS):
            parser.error(f"--pool-size must be 1..{len(POOL_ASPECTS)} (one prompt per aspect), got {args.pool_size}")
        # A limit of -1 would slice off the last class silently, a batch of 0 fail deep inside range().
        for option in ("limit", "batch_size", "max_new_tokens", "pool_limit", "pool_save_every"):
            value = getattr(args, option)
            if value is not None and value < 1:
                parser.error(f"--{option.replace('_', '-')} must be at least 1, got {value}")
    return args


def write_narration_questions(args: argparse.Namespace, generate: Callable[[list[str]], list[str]]) -> dict:
    """``--annotations`` -> ``--output``: one masked verb and noun question per narration; returns the report."""
    rows = read_annotations(args.annotations, args.limit)
    questions, report = generate_questions(rows, generate, policy=args.policy, mask_token=args.mask_token,
                                           batch_size=args.batch_size)
    write_question_file(args.output, questions, QUESTION_TYPES)
    report.update({"annotations": str(args.annotations), "output": str(args.output)})
    print(
        f"{report['rows']} narrations, {report['questions']} questions -> {args.output}\n"
        f"  fell back to templates (unparseable output): {report['fallback_to_template']} "
        f"({100 * report['fallback_fraction']:.1f}%)\n"
        f"  needed masking: {report['needed_masking']} of {report['parsed']} generated questions "
        f"({100 * report['needed_masking_fraction_of_parsed']:.1f}%)"
    )
    return report


def pool_settings(args: argparse.Namespace) -> dict:
    """The settings a pool file records; resuming with other ones is refused (:func:`load_pool_for_resume`)."""
    return {"model": str(args.model), "prompt_template": POOL_PROMPT_TEMPLATE,
            "subjects": {k: list(v) for k, v in POOL_SUBJECTS.items()},
            "aspects": list(POOL_ASPECTS[: args.pool_size]), "pool_size": args.pool_size,
            "max_new_tokens": args.max_new_tokens, "policy": "strict"}


def write_question_pool(args: argparse.Namespace, generate: Callable[[list[str]], list[str]]) -> dict:
    """``--pool``: generate (or resume) the question pool and write it; returns its report."""
    path = Path(args.pool)
    settings = pool_settings(args)
    resume = load_pool_for_resume(path, settings, args.mask_token)
    classes = pool_classes(EK100Vocabulary.default(), args.pool_kinds, args.pool_limit)
    pool = generate_pool(classes, generate, pool_size=args.pool_size, mask_token=args.mask_token,
                         batch_size=args.batch_size, settings=settings, resume=resume,
                         save=lambda p: write_pool(path, p), save_every=args.pool_save_every,
                         progress=not args.no_progress)
    report = {**pool["report"], "pool": str(path), "complete": pool["complete"]}
    print(f"question pool -> {path}: {report['requested_classes']} classes ({report['generated_classes']} generated, "
          f"{report['reused_classes']} from the file already there)")
    for kind, c in report["by_kind"].items():
        print(f"  {kind}: {c['classes']} classes, {c['parsed']} of {c['prompts']} continuations were questions, "
              f"{c['masked']} needed masking, {c['duplicates']} repeats dropped, {c['empty_classes']} classes "
              "left without an entry")
    return report


def main(argv: Sequence[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.show_prompt:
        print(PROMPT_TEMPLATE)
        print()
        print(POOL_PROMPT_TEMPLATE)
        return {}
    for option, path in (("--output", args.output), ("--pool", args.pool), ("--report", args.report)):
        if path is not None:  # refused before the model loads, not after hours of generation
            check_target(path, name=option)
    if args.pool is not None:
        load_pool_for_resume(Path(args.pool), pool_settings(args), args.mask_token)
    generate = make_generator(args.model, max_new_tokens=args.max_new_tokens, device=args.device)
    report: dict[str, Any] = {"model": str(args.model)}
    if args.output is not None:
        report.update(write_narration_questions(args, generate))
    if args.pool is not None:
        report["pool"] = write_question_pool(args, generate)
    if args.report:
        atomic.write_text(args.report, json.dumps(report, indent=2) + "\n", what="the report")
    return report


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "generate_questions.py"))
