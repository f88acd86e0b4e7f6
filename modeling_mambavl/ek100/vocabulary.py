"""The EPIC-KITCHENS-100 class vocabulary: 97 verbs, 300 nouns and the 3,806 action (verb, noun) pairs.

The shipped class lists are the official EK100 annotation files, CC BY-NC 4.0 (see ``data/LICENSE.md``).
"""

from __future__ import annotations

import ast
import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

__all__ = ["EK100Class", "EK100Vocabulary", "EK100_ATTRIBUTION"]

EK100_ATTRIBUTION = (
    "EPIC-KITCHENS-100 annotations (c) the EPIC-KITCHENS team, CC BY-NC 4.0 "
    "(https://creativecommons.org/licenses/by-nc/4.0/); Damen et al., IJCV 2022."
)

_VERB_FILE = "EPIC_100_verb_classes.csv"
_NOUN_FILE = "EPIC_100_noun_classes.csv"
_ACTION_FILE = "EPIC_100_actions_3806.csv"
_TAIL_VERB_FILE = "EPIC_100_tail_verbs.csv"
_TAIL_NOUN_FILE = "EPIC_100_tail_nouns.csv"
_UNSEEN_FILES = {
    "validation": "EPIC_100_unseen_participant_ids_validation.csv",
    "test": "EPIC_100_unseen_participant_ids_test.csv",
}


@dataclass(frozen=True)
class EK100Class:
    """One verb or noun class: its id, key (``put``, ``board:chopping``), every surface form, and category."""

    id: int
    key: str
    instances: tuple[str, ...]
    category: str

    @property
    def name(self) -> str:
        """Display name: hyphens as spaces, ``head:modifier`` read as ``modifier head`` (``chopping board``)."""
        parts = self.key.replace("-", " ").split(":")
        return " ".join(reversed(parts))


def _read_classes(path: Path) -> list[EK100Class]:
    classes: list[EK100Class] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = {"id", "key", "instances", "category"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}; expected id,key,instances,category")
        for line, row in enumerate(reader, start=2):
            try:
                instances = ast.literal_eval(row["instances"])
                class_id = int(row["id"])
            except (ValueError, SyntaxError) as e:
                raise ValueError(f"{path}, line {line}: cannot parse id/instances ({e})") from None
            if class_id != len(classes):
                raise ValueError(f"{path}, line {line}: class ids must be 0..N-1 in order; got {class_id}")
            classes.append(EK100Class(class_id, row["key"], tuple(instances), row["category"]))
    return classes


def _read_id_column(path: Path, column: str) -> list[str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        if column not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: missing column {column!r}")
        return [row[column] for row in reader if row[column] != ""]


class EK100Vocabulary:
    """Verb, noun and action classes of EPIC-KITCHENS-100.

    ``actions[i]`` is the (verb, noun) pair of action id ``i`` (ids follow the string sort of ``"verb:noun"`` in
    the 3,806-class table, as in RULSTM / LaViLa / AVION; 238 pairs occur only in validation).
    """

    def __init__(
        self,
        verbs: list[EK100Class],
        nouns: list[EK100Class],
        actions: list[tuple[int, int]],
        tail_verbs: frozenset[int] = frozenset(),
        tail_nouns: frozenset[int] = frozenset(),
        unseen_participants: dict[str, frozenset[str]] | None = None,
    ) -> None:
        self.verbs = list(verbs)
        self.nouns = list(nouns)
        self.actions = [(int(v), int(n)) for v, n in actions]
        self.tail_verbs = frozenset(tail_verbs)
        self.tail_nouns = frozenset(tail_nouns)
        self.unseen_participants = dict(unseen_participants or {})
        self._action_ids = {pair: i for i, pair in enumerate(self.actions)}
        if len(self._action_ids) != len(self.actions):
            raise ValueError("EK100Vocabulary: the action table has duplicate (verb, noun) pairs")
        for v, n in self.actions:
            if not (0 <= v < len(self.verbs) and 0 <= n < len(self.nouns)):
                raise ValueError(f"EK100Vocabulary: action ({v}, {n}) refers to an unknown verb or noun class")
        self._verb_keys = {c.key: c.id for c in self.verbs}
        self._noun_keys = {c.key: c.id for c in self.nouns}

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_dir(cls, path: str | Path) -> EK100Vocabulary:
        """Read the official class CSVs from a folder (an ``epic-kitchens-100-annotations`` checkout).

        Required: ``EPIC_100_verb_classes.csv``, ``EPIC_100_noun_classes.csv``, ``EPIC_100_actions_3806.csv``.
        Optional: the tail-class and unseen-participant CSVs.
        """
        path = Path(path)
        for name in (_VERB_FILE, _NOUN_FILE, _ACTION_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(
                    f"{path / name} not found: EK100Vocabulary.from_dir needs the official class CSVs "
                    f"({_VERB_FILE}, {_NOUN_FILE}, {_ACTION_FILE}); use EK100Vocabulary.default() for the shipped ones"
                )
        verbs = _read_classes(path / _VERB_FILE)
        nouns = _read_classes(path / _NOUN_FILE)
        actions: list[tuple[int, int]] = []
        with open(path / _ACTION_FILE, newline="", encoding="utf-8-sig") as f:
            for line, row in enumerate(csv.DictReader(f), start=2):
                if int(row["id"]) != len(actions):
                    raise ValueError(f"{path / _ACTION_FILE}, line {line}: action ids must be 0..N-1 in order")
                actions.append((int(row["verb"]), int(row["noun"])))
        tail_verbs = tail_nouns = frozenset()
        if (path / _TAIL_VERB_FILE).is_file():
            tail_verbs = frozenset(int(x) for x in _read_id_column(path / _TAIL_VERB_FILE, "verb"))
        if (path / _TAIL_NOUN_FILE).is_file():
            tail_nouns = frozenset(int(x) for x in _read_id_column(path / _TAIL_NOUN_FILE, "noun"))
        unseen = {
            split: frozenset(_read_id_column(path / name, "participant_id"))
            for split, name in _UNSEEN_FILES.items()
            if (path / name).is_file()
        }
        return cls(verbs, nouns, actions, tail_verbs, tail_nouns, unseen)

    @classmethod
    def default(cls) -> EK100Vocabulary:
        """The official EK100 vocabulary shipped with the package (CC BY-NC 4.0, see ``EK100_ATTRIBUTION``)."""
        return _default_vocabulary()

    # ------------------------------------------------------------------ look-ups
    @property
    def num_verbs(self) -> int:
        return len(self.verbs)

    @property
    def num_nouns(self) -> int:
        return len(self.nouns)

    @property
    def num_actions(self) -> int:
        return len(self.actions)

    def action_id(self, verb: int, noun: int) -> int:
        """The action id of a (verb, noun) pair; ``KeyError`` naming the pair if it is not in the action table."""
        try:
            return self._action_ids[(int(verb), int(noun))]
        except KeyError:
            raise KeyError(
                f"(verb {verb}, noun {noun}) is not one of the {self.num_actions} EK100 action classes"
            ) from None

    def has_action(self, verb: int, noun: int) -> bool:
        return (int(verb), int(noun)) in self._action_ids

    def verb_id(self, key: str) -> int:
        """Verb class id of a class key (``"take"``, ``"turn-on"``)."""
        return self._verb_keys[key]

    def noun_id(self, key: str) -> int:
        """Noun class id of a class key (``"plate"``, ``"board:chopping"``)."""
        return self._noun_keys[key]

    def verb_name(self, verb: int) -> str:
        return self.verbs[verb].name

    def noun_name(self, noun: int) -> str:
        return self.nouns[noun].name

    def action_name(self, action: int) -> str:
        """Display name of an action id, e.g. ``"take chopping board"``."""
        verb, noun = self.actions[action]
        return f"{self.verb_name(verb)} {self.noun_name(noun)}"

    def verb_id2label(self) -> dict[int, str]:
        return {c.id: c.name for c in self.verbs}

    def noun_id2label(self) -> dict[int, str]:
        return {c.id: c.name for c in self.nouns}

    def __repr__(self) -> str:
        return f"EK100Vocabulary({self.num_verbs} verbs, {self.num_nouns} nouns, {self.num_actions} actions)"


@lru_cache(maxsize=1)
def _default_vocabulary() -> EK100Vocabulary:
    with resources.as_file(resources.files(__package__) / "data") as folder:
        return EK100Vocabulary.from_dir(folder)
