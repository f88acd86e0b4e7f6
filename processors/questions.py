"""Questions: templates per question type, question sources and question files.

Each clip gets one question per entry of ``question_types`` (default ``("verb", "noun")``). Where they come from is
the ``question_source``:

* ``"generic"`` — fixed questions, the first template of each type (the default, and the only source a video alone
  allows). They are the same for every clip, so with them the question branch adds a constant per head.
* ``"file"`` — a user's question file keyed by ``narration_id`` (CSV or JSONL with a ``{type}_question`` column per
  question type, e.g. ``verb_question``, ``noun_question``). Label-free by contract: the file is used as it is
  (``examples/generate_questions.py`` writes masked ones).
* ``"predicted"`` — built from a first-stage model's top-k actions, a JSON file
  ``{narration_id: [[verb, noun, score], ...]}`` (class ids or class keys), best first: the candidate verbs / nouns
  are named in the question, in score order. With a question pool (``pool=``, see :func:`read_question_pool`), each
  question is instead one entry of the pool of the best candidate's class (the authors' design: the verb question
  from the verb pool of the best verb, the noun question from the noun pool of the best noun, an action question
  from the action pool of the best pair); a class the pool lacks falls back to the templates, and the source counts
  those questions in ``pool_fallbacks``.
* ``"oracle"`` — built from the ground-truth narration with a template that embeds it, then masked with
  :func:`~.masking.mask_answer`. Validation only: refused for the test split; anything reported with it must carry
  :data:`ORACLE_LABEL` (the source's ``label``).

Templates that vary (``"oracle"``, ``"predicted"``) and pool entries pick their phrasing per narration from a stable
hash of ``(seed, narration_id, question type)``.

A **question pool** (``examples/generate_questions.py --pool``) is a JSON object::

    {"format": "mambavl-question-pool", "version": 1, "complete": true, "mask_token": "[MASK]",
     "settings": {...how it was generated...}, "report": {...counts...},
     "pools": {"verb":   {"0": {"name": "take", "entries": ["...?", ...]}, ...},
               "noun":   {"18": {"name": "chopping board", "entries": [...]}, ...},
               "action": {"0,18": {"name": "take chopping board", "entries": [...]}, ...}}}

keyed by class id (verbs, nouns) and ``"verb,noun"`` ids (actions, as in the challenge's submission format); any of
the three kinds may be absent. Every entry is masked for its own class (strict policy) with ``mask_token``, which the
source swaps for its own mask token.
"""

from __future__ import annotations

import ast
import csv
import hashlib
import json
import math
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .masking import MASK_POLICIES, mask_answer

if TYPE_CHECKING:
    from ..ek100.vocabulary import EK100Vocabulary

__all__ = [
    "QUESTION_SOURCES",
    "QUESTION_TYPES",
    "ORACLE_LABEL",
    "GENERIC_TEMPLATES",
    "NARRATION_TEMPLATES",
    "PREDICTED_TEMPLATES",
    "default_questions",
    "QuestionSource",
    "make_question_source",
    "read_question_file",
    "write_question_file",
    "read_predictions",
    "POOL_FORMAT",
    "POOL_KINDS",
    "check_question_pool",
    "read_question_pool",
    "pool_key",
]

QUESTION_SOURCES = ("generic", "file", "predicted", "oracle")
QUESTION_TYPES = ("verb", "noun", "action")
ORACLE_LABEL = "ORACLE QUESTIONS"
POOL_FORMAT = "mambavl-question-pool"
POOL_KINDS = ("action", "verb", "noun")

# The first phrasing of each type is the generic question (the authors' fixed questions for verb and noun).
GENERIC_TEMPLATES: dict[str, tuple[str, ...]] = {
    "verb": (
        "What action is performed using hands in the video?",
        "What are the hands doing in the video?",
        "Which action does the person perform?",
        "What is the person doing with their hands?",
        "What is being done in this clip?",
    ),
    "noun": (
        "What is the object in the video?",
        "Which object is the person using?",
        "What object is being handled in the video?",
        "What are the hands holding or touching?",
        "Which item is involved in the action?",
    ),
    "action": (
        "What action is performed in the video?",
        "What is the person doing in the video?",
        "Which action happens in this clip?",
    ),
}

# Oracle templates embed the narration ({narration}); the result is masked before use.
NARRATION_TEMPLATES: dict[str, tuple[str, ...]] = {
    "verb": (
        "What action is performed in the clip described as '{narration}'?",
        "Which action do the hands perform when the person does '{narration}'?",
        "What is the person doing in '{narration}'?",
    ),
    "noun": (
        "Which object is involved in the clip described as '{narration}'?",
        "What object do the hands use when the person does '{narration}'?",
        "What is being handled in '{narration}'?",
    ),
    "action": (
        "What happens in the clip described as '{narration}'?",
        "Which action is performed in '{narration}'?",
    ),
}

# Predicted templates name a first-stage model's candidates ({verbs}, {nouns}, {actions}), best first.
PREDICTED_TEMPLATES: dict[str, tuple[str, ...]] = {
    "verb": (
        "Which action is performed: {verbs}?",
        "Is the person going to {verbs}?",
    ),
    "noun": (
        "Which object is involved: {nouns}?",
        "Is the object a {nouns}?",
    ),
    "action": (
        "Which action is performed: {actions}?",
        "Is the person going to {actions}?",
    ),
}


def default_questions(question_types: Sequence[str] = ("verb", "noun")) -> list[str]:
    """The generic question of each type, in order (``GENERIC_TEMPLATES[type][0]``)."""
    check_question_types(question_types)
    return [GENERIC_TEMPLATES[t][0] for t in question_types]


def check_question_types(question_types: Sequence[str]) -> tuple[str, ...]:
    """``question_types`` as a tuple; ``ValueError`` if it is empty or names a type not in ``QUESTION_TYPES``."""
    types = tuple(question_types)
    if not types:
        raise ValueError("question_types must name at least one question type")
    for t in types:
        if t not in QUESTION_TYPES:
            raise ValueError(f"unknown question type {t!r}; expected one of {QUESTION_TYPES}")
    return types


def _pick(phrasings: Sequence[str], seed: int, narration_id: str, question_type: str) -> str:
    if len(phrasings) == 1:
        return phrasings[0]
    digest = hashlib.blake2b(f"{seed}\x00{narration_id}\x00{question_type}".encode(), digest_size=8).digest()
    return phrasings[int.from_bytes(digest, "little") % len(phrasings)]


def _join(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def _as_int_list(value: Any, column: str) -> list[int]:
    if value is None:
        return []
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            raise ValueError(f"column {column!r}: cannot parse {value!r} as a list of class ids") from None
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


# ------------------------------------------------------------------------------------------------- question files
def read_question_file(path: str | os.PathLike, question_types: Sequence[str] = ("verb", "noun")) -> dict[str, list[str]]:
    """Read a question file: ``narration_id -> [question per type]``.

    CSV: a header with ``narration_id`` and a ``{type}_question`` column per question type. JSONL: one object per
    line with the same keys. A UTF-8 byte-order mark is accepted. Raises ``ValueError`` naming the file and line for
    a missing column, a line that is not a JSON object, an empty question or a narration id given twice.
    """
    path = Path(path)
    types = check_question_types(question_types)
    columns = [f"{t}_question" for t in types]
    needs = f"a question file needs narration_id, {', '.join(columns)}"
    rows: dict[str, list[str]] = {}
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} not found")
    # utf-8-sig: a byte-order mark (spreadsheet exports) must not become part of the first column's name
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, encoding="utf-8-sig") as f:
            records = []
            for line_no, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}, line {line_no}: not valid JSON ({e})") from None
                    if not isinstance(record, dict):
                        raise ValueError(f"{path}, line {line_no}: a JSON {type(record).__name__}, expected an object "
                                         f"with the keys narration_id, {', '.join(columns)}")
                    records.append((line_no, record))
    else:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = ({"narration_id", *columns}) - set(reader.fieldnames or ())
            if missing:
                raise ValueError(f"{path}: missing column(s) {sorted(missing)}; {needs}")
            records = [(line_no, row) for line_no, row in enumerate(reader, start=2)]
    first_line: dict[str, int] = {}
    for line_no, record in records:
        missing = [c for c in ("narration_id", *columns) if not isinstance(record.get(c), str)]
        if missing:
            raise ValueError(f"{path}, line {line_no}: missing {missing}; {needs}")
        nid = record["narration_id"]
        if nid in first_line:
            raise ValueError(f"{path}, line {line_no}: narration_id {nid!r} is given twice (first on line "
                             f"{first_line[nid]}); keep one row per narration")
        first_line[nid] = line_no
        empty = [c for c in columns if not record[c].strip()]
        if empty:
            raise ValueError(f"{path}, line {line_no}: empty {empty} for narration {nid!r}; every question needs text")
        rows[nid] = [record[c] for c in columns]
    return rows


def write_question_file(
    path: str | os.PathLike,
    questions: Mapping[str, Sequence[str]],
    question_types: Sequence[str] = ("verb", "noun"),
) -> None:
    """Write ``narration_id -> [question per type]`` as CSV or JSONL (by the file's suffix)."""
    path = Path(path)
    types = check_question_types(question_types)
    columns = [f"{t}_question" for t in types]
    for nid, qs in questions.items():
        if len(qs) != len(types):
            raise ValueError(f"narration {nid!r}: {len(qs)} questions for question types {types}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in (".jsonl", ".json"):
        with open(path, "w", encoding="utf-8") as f:
            for nid, qs in questions.items():
                f.write(json.dumps({"narration_id": nid, **dict(zip(columns, qs))}, ensure_ascii=False) + "\n")
    else:
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["narration_id", *columns])
            for nid, qs in questions.items():
                writer.writerow([nid, *qs])


def read_predictions(
    path: str | os.PathLike, vocab: EK100Vocabulary | None = None
) -> dict[str, list[tuple[Any, Any, float]]]:
    """Read first-stage predictions: JSON ``{narration_id: [[verb, noun, score], ...]}``, sorted best first.

    Verbs and nouns are class ids of ``vocab`` (default ``EK100Vocabulary.default()``) or class keys / instances
    (``"take"``, ``"put-down"``, ``"board:chopping"``); scores are finite numbers. An unknown class, an empty candidate list or a non-finite score
    raises ``ValueError`` naming the file, the narration and the value. A UTF-8 byte-order mark is accepted.
    """
    from ..ek100.vocabulary import EK100Vocabulary  # the processors load without the EK100 tools

    path = Path(path)
    vocab = vocab or EK100Vocabulary.default()
    data = _read_json_object(path, "predictions file", "write one with eval_ek100.py --write_question_predictions",
                             "narration_id")
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object narration_id -> [[verb, noun, score], ...]")
    verb_names = {name for c in vocab.verbs for name in (c.key, *c.instances)}
    noun_names = {name for c in vocab.nouns for name in (c.key, *c.instances)}
    out = {}
    for nid, preds in data.items():
        where = f"{path}, narration {nid!r}"
        try:
            if any(isinstance(s, bool) for _, _, s in preds):  # JSON true / false are no scores
                raise TypeError
            triples = [(v, n, float(s)) for v, n, s in preds]
        except (TypeError, ValueError):
            raise ValueError(f"{where}: must be a list of [verb, noun, score] (score a number)") from None
        if not triples:
            raise ValueError(f"{where}: empty candidate list; give at least one [verb, noun, score]")
        for v, n, score in triples:
            _check_class(where, "verb", v, vocab.num_verbs, verb_names)
            _check_class(where, "noun", n, vocab.num_nouns, noun_names)
            if not math.isfinite(score):
                raise ValueError(f"{where}: score {score!r} of ({v!r}, {n!r}) is not a finite number")
        out[str(nid)] = sorted(triples, key=lambda t: -t[2])
    return out


def _read_json_object(path: Path, what: str, fix: str, key_name: str) -> Any:
    """The JSON document of ``path`` (a UTF-8 byte-order mark allowed); a missing file, a folder, bytes that are not
    UTF-8, invalid JSON or a key given twice raise an error naming ``path`` (``what`` / ``fix`` / ``key_name`` word
    it)."""
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found; {fix}")
    if not path.is_file():
        raise IsADirectoryError(f"{what} {path} is a folder; give the JSON file")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        seen: dict[str, Any] = {}
        for key, value in pairs:
            if key in seen:  # json.load would keep the last one silently
                raise ValueError(f"{path}: {key_name} {key!r} is given twice; give each once")
            seen[key] = value
        return seen

    try:
        with open(path, encoding="utf-8-sig") as f:
            return json.load(f, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start}); give the JSON {what}") \
            from None


def _check_class(where: str, kind: str, value: Any, size: int, names: set[str]) -> None:
    """A class id in ``[0, size)`` (an int or a string of ASCII digits), or a class key or instance of the
    vocabulary."""
    if isinstance(value, float) and value.is_integer():
        raise ValueError(f"{where}: {kind} class id {value!r} is a float; give the integer {int(value)}")
    if isinstance(value, str) and not (value.isascii() and value.isdigit()):
        if value not in names:
            raise ValueError(f"{where}: unknown {kind} {value!r}; give a {kind} class id in 0..{size - 1}, or a "
                             "class key or instance of the vocabulary")
        return
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not 0 <= int(value) < size:
        raise ValueError(f"{where}: {kind} class id {value!r} is out of range; the vocabulary has {kind} ids "
                         f"0..{size - 1}")


# ------------------------------------------------------------------------------------------------ question pools
def pool_key(kind: str, verb: int | None = None, noun: int | None = None) -> str:
    """The key of a class in a question pool: ``"<verb id>"``, ``"<noun id>"`` or ``"<verb id>,<noun id>"``."""
    if kind == "verb":
        return str(int(verb))
    if kind == "noun":
        return str(int(noun))
    if kind == "action":
        return f"{int(verb)},{int(noun)}"
    raise ValueError(f"unknown pool kind {kind!r}; expected one of {POOL_KINDS}")


def _check_pool_key(where: str, kind: str, key: Any, vocab: EK100Vocabulary) -> None:
    parts = key.split(",") if isinstance(key, str) else []
    sizes = {"verb": [vocab.num_verbs], "noun": [vocab.num_nouns], "action": [vocab.num_verbs, vocab.num_nouns]}[kind]
    # Canonical ids only ("7", not "07" or " 7"): entries are looked up by pool_key, so any other spelling would
    # never be found and the class would silently fall back to the templates.
    if len(parts) != len(sizes) or not all(p.isascii() and p.isdigit() and p == str(int(p)) and int(p) < n
                                           for p, n in zip(parts, sizes)):
        form = {"verb": f"a verb id 0..{vocab.num_verbs - 1}", "noun": f"a noun id 0..{vocab.num_nouns - 1}",
                "action": "'<verb id>,<noun id>'"}[kind]
        raise ValueError(f"{where}: pools.{kind} key {key!r} is not {form}")


def check_question_pool(pool: Any, where: str = "question pool", vocab: EK100Vocabulary | None = None) -> dict:
    """Validate a question pool (the JSON object of the module docstring) and return it.

    Raises ``ValueError`` naming ``where``, the field and the bad value: another ``format`` / ``version``, an unknown
    kind, a key that is not a class of ``vocab`` (default ``EK100Vocabulary.default()``), an entry that is not a
    non-empty string.
    """
    from ..ek100.vocabulary import EK100Vocabulary  # the processors load without the EK100 tools

    vocab = vocab or EK100Vocabulary.default()
    if not isinstance(pool, Mapping) or pool.get("format") != POOL_FORMAT:
        found = pool.get("format") if isinstance(pool, Mapping) else type(pool).__name__
        raise ValueError(f"{where}: not a question pool (format {found!r}, expected {POOL_FORMAT!r}); write one with "
                         "examples/generate_questions.py --pool")
    if pool.get("version") != 1:
        raise ValueError(f"{where}: question pool version {pool.get('version')!r} is not supported (expected 1)")
    if not isinstance(pool.get("mask_token"), str) or not pool["mask_token"]:
        raise ValueError(f"{where}: mask_token {pool.get('mask_token')!r} must be the mask token the entries use")
    pools = pool.get("pools")
    if not isinstance(pools, Mapping):
        raise ValueError(f"{where}: pools must be an object {{kind: {{class key: {{name, entries}}}}}}")
    for kind, classes in pools.items():
        if kind not in POOL_KINDS:
            raise ValueError(f"{where}: unknown pool kind {kind!r}; expected some of {POOL_KINDS}")
        if not isinstance(classes, Mapping):
            raise ValueError(f"{where}: pools.{kind} must be an object {{class key: {{name, entries}}}}")
        for key, item in classes.items():
            _check_pool_key(where, kind, key, vocab)
            if not isinstance(item, Mapping):
                raise ValueError(f"{where}: pools.{kind}[{key!r}] must be an object {{name, entries}}, got a "
                                 f"{type(item).__name__}")
            entries = item.get("entries")
            if not isinstance(entries, list) or not all(isinstance(e, str) and e.strip() for e in entries):
                raise ValueError(f"{where}: pools.{kind}[{key!r}].entries must be a list of non-empty strings, got "
                                 f"{entries!r}")
    return dict(pool)


def read_question_pool(path: str | os.PathLike, vocab: EK100Vocabulary | None = None) -> dict:
    """Read and validate a question pool JSON (see the module docstring and :func:`check_question_pool`)."""
    path = Path(path)
    data = _read_json_object(path, "question pool", "write one with examples/generate_questions.py --pool", "key")
    return check_question_pool(data, str(path), vocab)


# ----------------------------------------------------------------------------------------------- question sources
@dataclass
class QuestionSource:
    """A callable ``example -> [question per question type]`` (see the module docstring).

    ``example`` is an EK100 row (``narration_id``, ``narration``, ``verb``, ``verb_class``, ``noun``, ``noun_class``,
    ``all_nouns``, ``all_noun_classes``); ``"generic"`` also accepts ``None``. ``oracle`` / ``label`` tell callers
    to mark every metric table made with these questions: ``label`` is ``"ORACLE QUESTIONS"`` or ``None``.
    """

    source: str
    split: str
    question_types: tuple[str, ...]
    vocab: EK100Vocabulary
    templates: dict[str, tuple[str, ...]]
    top_k: int = 5
    seed: int = 0
    mask_token: str = "[MASK]"
    policy: str = "strict"
    path: str | None = None
    pool: dict | None = field(default=None, repr=False)
    pool_fallbacks: int = 0
    _table: dict = field(default_factory=dict, repr=False)

    @property
    def oracle(self) -> bool:
        """True when questions come from the ground truth (``"oracle"``): results must say ``ORACLE QUESTIONS``."""
        return self.source == "oracle"

    @property
    def label(self) -> str | None:
        return ORACLE_LABEL if self.oracle else None

    def check_ids(self, narration_ids: Sequence[str], split: str | None = None) -> None:
        """Raise ``ValueError`` naming the file, how many and which narrations of a split it lacks (``"file"`` and
        ``"predicted"`` sources; the others need no table), so that a gap surfaces when the split is loaded rather
        than when that row is read."""
        if self.source not in ("file", "predicted"):
            return
        missing = [nid for nid in narration_ids if str(nid) not in self._table]
        if missing:
            kind = "question file" if self.source == "file" else "predictions file"
            raise ValueError(
                f"the {kind} {self.path} lacks {len(missing)} of the {len(narration_ids)} narrations of the "
                f"{split or self.split} split, e.g. {missing[:3]}; every narration needs an entry"
            )

    def __call__(self, example: Mapping[str, Any] | None = None) -> list[str]:
        if self.source == "generic":
            return [self.templates[t][0] for t in self.question_types]
        if example is None:
            raise ValueError(f"question_source={self.source!r} needs the example (narration_id, labels)")
        nid = str(example.get("narration_id"))
        if self.source == "file":
            try:
                return list(self._table[nid])
            except KeyError:
                raise KeyError(f"narration_id {nid!r} is not in the question file {self.path}") from None
        if self.source == "predicted":
            try:
                preds = self._table[nid]
            except KeyError:
                raise KeyError(f"narration_id {nid!r} is not in the predictions file {self.path}") from None
            return self._predicted(nid, preds[: self.top_k])
        return self._oracle(nid, example)

    def _verb_name(self, verb: Any) -> str:
        if isinstance(verb, int) or (isinstance(verb, str) and verb.isdigit()):
            return self.vocab.verb_name(int(verb))
        return str(verb).replace("-", " ").replace(":", " ")

    def _noun_name(self, noun: Any) -> str:
        if isinstance(noun, int) or (isinstance(noun, str) and noun.isdigit()):
            return self.vocab.noun_name(int(noun))
        parts = str(noun).replace("-", " ").split(":")
        return " ".join(reversed(parts))

    def _class_id(self, kind: str, value: Any) -> int:
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return int(value)
        classes = self.vocab.verbs if kind == "verb" else self.vocab.nouns
        # keys and instances of the vocabulary (read_predictions checked that the name is one of them)
        return next(c.id for c in classes if value == c.key or value in c.instances)

    def _from_pool(self, nid: str, question_type: str, verb: Any, noun: Any) -> str | None:
        """One entry of the pool of the best candidate's class for ``question_type``; ``None`` if the pool lacks it."""
        kind = question_type
        verb_id = self._class_id("verb", verb) if kind in ("verb", "action") else None
        noun_id = self._class_id("noun", noun) if kind in ("noun", "action") else None
        item = self.pool["pools"].get(kind, {}).get(pool_key(kind, verb_id, noun_id))
        if not item or not item["entries"]:
            return None
        entry = _pick(item["entries"], self.seed, nid, question_type)
        pool_mask = self.pool["mask_token"]
        return entry.replace(pool_mask, self.mask_token) if pool_mask != self.mask_token else entry

    def _predicted(self, nid: str, preds: Sequence[tuple[Any, Any, float]]) -> list[str]:
        if self.pool is not None:
            questions = [self._from_pool(nid, t, preds[0][0], preds[0][1]) for t in self.question_types]
            self.pool_fallbacks += sum(q is None for q in questions)
            if all(q is not None for q in questions):
                return questions
            templated = self._predicted_from_templates(nid, preds)
            return [q if q is not None else t for q, t in zip(questions, templated)]
        return self._predicted_from_templates(nid, preds)

    def _predicted_from_templates(self, nid: str, preds: Sequence[tuple[Any, Any, float]]) -> list[str]:
        verbs = list(dict.fromkeys(self._verb_name(v) for v, _, _ in preds))
        nouns = list(dict.fromkeys(self._noun_name(n) for _, n, _ in preds))
        actions = list(dict.fromkeys(f"{self._verb_name(v)} {self._noun_name(n)}" for v, n, _ in preds))
        values = {"verbs": _join(verbs), "nouns": _join(nouns), "actions": _join(actions)}
        return [_pick(self.templates[t], self.seed, nid, t).format(**values) for t in self.question_types]

    def _oracle(self, nid: str, example: Mapping[str, Any]) -> list[str]:
        for column in ("narration", "verb_class"):
            if example.get(column) is None:
                raise ValueError(f"question_source='oracle' needs the column {column!r} (narration {nid!r})")
        verb_class = int(example["verb_class"])
        nouns = _as_int_list(example.get("all_noun_classes"), "all_noun_classes")
        if not nouns and example.get("noun_class") is not None:
            nouns = [int(example["noun_class"])]
        narration = str(example["narration"])
        questions = []
        for t in self.question_types:
            text = _pick(self.templates[t], self.seed, nid, t).format(narration=narration)
            questions.append(
                mask_answer(
                    text, verb_class, nouns, self.vocab, policy=self.policy,
                    question_type=t if t in ("verb", "noun") else None,
                    mask_token=self.mask_token,
                )
            )
        return questions


def make_question_source(
    source: str,
    *,
    split: str,
    path: str | os.PathLike | None = None,
    question_types: Sequence[str] = ("verb", "noun"),
    vocab: EK100Vocabulary | None = None,
    templates: Mapping[str, Sequence[str]] | None = None,
    top_k: int = 5,
    seed: int = 0,
    mask_token: str = "[MASK]",
    policy: str = "strict",
    pool: str | os.PathLike | Mapping[str, Any] | None = None,
) -> Callable[[Mapping[str, Any] | None], list[str]]:
    """Build the question source for a split: a :class:`QuestionSource`, called as ``source(example) -> [str]``.

    Args:
        source: ``"generic"``, ``"file"``, ``"predicted"`` or ``"oracle"`` (see the module docstring).
        split: ``"train"``, ``"validation"`` or ``"test"``; ``"oracle"`` is refused for ``"test"``.
        path: the question file (``"file"``: CSV / JSONL) or predictions JSON (``"predicted"``).
        question_types: one question per type, in this order.
        vocab: class vocabulary for names and masking (default ``EK100Vocabulary.default()``).
        templates: ``{type: [phrasing, ...]}`` replacing the defaults of this source (generic: ``GENERIC_TEMPLATES``;
            oracle: ``NARRATION_TEMPLATES`` with ``{narration}``; predicted: ``PREDICTED_TEMPLATES`` with
            ``{verbs}`` / ``{nouns}`` / ``{actions}``).
        top_k: how many predicted actions a ``"predicted"`` question names.
        seed: picks the phrasing per narration for ``"oracle"`` / ``"predicted"``.
        mask_token, policy: masking of ``"oracle"`` questions (the tokenizer's mask token; ``"strict"``/``"paper"``);
            ``mask_token`` also replaces a pool's own mask token in its entries.
        pool: ``"predicted"`` only: a question pool (a JSON path or the loaded object, see
            :func:`read_question_pool`) whose entries phrase the questions instead of the templates.
    """
    from ..ek100.vocabulary import EK100Vocabulary  # the processors load without the EK100 tools

    if source not in QUESTION_SOURCES:
        raise ValueError(f"question_source must be one of {QUESTION_SOURCES}, got {source!r}")
    types = check_question_types(question_types)
    if source == "oracle" and str(split).lower() == "test":
        raise ValueError(
            "question_source='oracle' builds questions from the ground-truth narration and is refused for the test "
            "split (and for submissions); use 'generic', 'file' or 'predicted'"
        )
    if source in ("file", "predicted") and path is None:
        raise ValueError(f"question_source={source!r} needs path= (a question file / predictions JSON)")
    if policy not in MASK_POLICIES:
        raise ValueError(f"policy must be one of {MASK_POLICIES}, got {policy!r}")
    if policy == "paper" and not set(types) <= {"verb", "noun"}:
        raise ValueError("policy='paper' masks across the verb and noun questions; question_types must be verb/noun")
    if isinstance(top_k, bool) or not isinstance(top_k, numbers.Integral) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (predicted actions a question names), got {top_k!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer (it picks each narration's phrasing), got {seed!r}")
    if pool is not None and source != "predicted":
        raise ValueError(f"pool= phrases the questions of question_source='predicted' from the predicted classes; "
                         f"question_source={source!r} does not use it (drop the pool or use 'predicted')")
    defaults = {"generic": GENERIC_TEMPLATES, "file": GENERIC_TEMPLATES, "predicted": PREDICTED_TEMPLATES,
                "oracle": NARRATION_TEMPLATES}[source]
    chosen = {t: tuple(defaults[t]) for t in types}
    if templates is not None:
        for t, phrasings in templates.items():
            if t in chosen:
                phrasings = (phrasings,) if isinstance(phrasings, str) else tuple(phrasings)
                if not phrasings:
                    raise ValueError(f"templates[{t!r}] is empty")
                chosen[t] = phrasings
    qs = QuestionSource(
        source=source, split=str(split), question_types=types, vocab=vocab or EK100Vocabulary.default(),
        templates=chosen, top_k=int(top_k), seed=int(seed), mask_token=mask_token, policy=policy,
        path=str(path) if path is not None else None,
    )
    if pool is not None:
        qs.pool = (check_question_pool(pool, vocab=qs.vocab) if isinstance(pool, Mapping)
                   else read_question_pool(pool, qs.vocab))
    if source == "file":
        qs._table = read_question_file(path, types)
    elif source == "predicted":
        qs._table = read_predictions(path, qs.vocab)
    return qs
