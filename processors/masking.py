"""Masking the answer out of a question: ``mask_answer``.

A question built from a clip's narration names its verb and nouns, which are the labels. ``mask_answer`` replaces
them by the tokenizer's mask token.

``policy="strict"`` (default) replaces, in any question, every surface form of the ground-truth verb class and of
every noun class in ``noun_classes`` (EK100's ``all_noun_classes``):

* every form comes from the class key and all its ``instances`` (``EK100Vocabulary``); hyphens and colons read as
  spaces, and the text may write them as spaces, hyphens or colons (``washing-up liquid`` = ``washing up liquid``);
* nouns ``head:modifier[:modifier2]`` in every order: as written (``board chopping``), reversed, and modifiers then
  head (``chopping board``, ``washing up liquid``); the head word alone for the class key (``board``);
* nouns in singular and plural (regular, ``-es``, ``-ies``, ``-ves`` and irregular: ``knives``, ``leaves``,
  ``potatoes``, ``mice``); verbs in base, third-person, past, participle and ``-ing`` forms, regular (with and
  without a doubled final consonant: ``chopped``, ``stirring``) and irregular (``took``, ``taken``, ``threw``), the
  inflection on the first word of a multi-word verb (``putting down``, ``turned on``); the first word of a multi-word
  verb instance alone too (``switch`` of ``switch-off``), unless that word only ever names objects in EK100 (the
  ``mushroom`` of a stray ``mushroom-onto``);
* case-insensitively, on word boundaries; the longest form wins, and a multi-word span becomes ONE mask token.

``policy="paper"`` is the authors' cross-only rule: the ground-truth nouns are masked in the verb question and the
ground-truth verb in the noun question (with the same surface forms; they matched spaCy lemmas), so a question that
names its own answer keeps it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..ek100.vocabulary import EK100Vocabulary

__all__ = ["mask_answer", "MASK_POLICIES", "verb_surface_forms", "noun_surface_forms", "verb_inflections",
           "noun_inflections", "split_words"]

MASK_POLICIES = ("strict", "paper")
_VOWELS = set("aeiou")

# Irregular verb forms (past, participle and variants); regular forms are generated for every verb as well.
_IRREGULAR_VERBS: dict[str, tuple[str, ...]] = {
    "be": ("was", "were", "been", "is", "are", "am"), "beat": ("beat", "beaten"), "become": ("became",),
    "begin": ("began", "begun"), "bend": ("bent",), "bite": ("bit", "bitten"), "bleed": ("bled",),
    "blow": ("blew", "blown"), "break": ("broke", "broken"), "bring": ("brought",), "build": ("built",),
    "burn": ("burnt",), "buy": ("bought",), "catch": ("caught",), "choose": ("chose", "chosen"),
    "cling": ("clung",), "come": ("came",), "cut": ("cut",), "deal": ("dealt",), "dig": ("dug",),
    "do": ("did", "done", "does"), "draw": ("drew", "drawn"), "drink": ("drank", "drunk"),
    "drive": ("drove", "driven"), "eat": ("ate", "eaten"), "fall": ("fell", "fallen"), "feed": ("fed",),
    "feel": ("felt",), "find": ("found",), "fit": ("fit",), "fling": ("flung",), "fly": ("flew", "flown"),
    "forget": ("forgot", "forgotten"), "freeze": ("froze", "frozen"), "get": ("got", "gotten"),
    "give": ("gave", "given"), "go": ("went", "gone", "goes"), "grind": ("ground",), "grow": ("grew", "grown"),
    "hang": ("hung",), "have": ("had", "has"), "hear": ("heard",), "hide": ("hid", "hidden"), "hit": ("hit",),
    "hold": ("held",), "keep": ("kept",), "kneel": ("knelt",), "know": ("knew", "known"), "lay": ("laid",),
    "lead": ("led",), "lean": ("leant",), "leave": ("left",), "lend": ("lent",), "let": ("let",),
    "lie": ("lay", "lain", "lying"), "light": ("lit",), "lose": ("lost",), "make": ("made",), "mean": ("meant",),
    "meet": ("met",), "melt": ("molten",), "mow": ("mown",), "pay": ("paid",), "put": ("put",), "quit": ("quit",),
    "read": ("read",), "rid": ("rid",), "ride": ("rode", "ridden"), "ring": ("rang", "rung"),
    "rise": ("rose", "risen"), "run": ("ran",), "saw": ("sawn",), "say": ("said",), "see": ("saw", "seen"),
    "seek": ("sought",), "sell": ("sold",), "send": ("sent",), "set": ("set",), "sew": ("sewn",),
    "shake": ("shook", "shaken"), "shear": ("shorn",), "shed": ("shed",), "shine": ("shone",),
    "shoot": ("shot",), "show": ("shown",), "shrink": ("shrank", "shrunk"), "shut": ("shut",),
    "sink": ("sank", "sunk"), "sit": ("sat",), "slay": ("slew",), "sleep": ("slept",), "slide": ("slid",),
    "sling": ("slung",), "slit": ("slit",), "smell": ("smelt",), "sow": ("sown",), "speak": ("spoke", "spoken"),
    "spend": ("spent",), "spill": ("spilt",), "spin": ("spun",), "spit": ("spat",), "split": ("split",),
    "spoil": ("spoilt",), "spread": ("spread",), "spring": ("sprang", "sprung"), "stand": ("stood",),
    "steal": ("stole", "stolen"), "stick": ("stuck",), "sting": ("stung",), "stink": ("stank", "stunk"),
    "strew": ("strewn",), "stride": ("strode",), "strike": ("struck",), "string": ("strung",),
    "sweep": ("swept",), "swell": ("swollen",), "swim": ("swam", "swum"), "swing": ("swung",),
    "take": ("took", "taken"), "teach": ("taught",), "tear": ("tore", "torn"), "tell": ("told",),
    "think": ("thought",), "throw": ("threw", "thrown"), "thrust": ("thrust",), "tread": ("trod", "trodden"),
    "undo": ("undid", "undone", "undoes"), "unfreeze": ("unfroze", "unfrozen"), "unwind": ("unwound",),
    "wake": ("woke", "woken"), "wear": ("wore", "worn"), "weave": ("wove", "woven"), "weep": ("wept",),
    "wet": ("wet",), "win": ("won",), "wind": ("wound",), "withdraw": ("withdrew", "withdrawn"),
    "wring": ("wrung",), "write": ("wrote", "written"), "rewind": ("rewound",), "rewrite": ("rewrote", "rewritten"),
    "unbend": ("unbent",), "mislay": ("mislaid",), "overcook": ("overcooked",), "upset": ("upset",),
}

# Irregular plurals; regular plurals are generated for every noun as well.
_IRREGULAR_NOUNS: dict[str, tuple[str, ...]] = {
    "knife": ("knives",), "wife": ("wives",), "life": ("lives",), "leaf": ("leaves",), "loaf": ("loaves",),
    "half": ("halves",), "shelf": ("shelves",), "calf": ("calves",), "scarf": ("scarves",), "wolf": ("wolves",),
    "thief": ("thieves",), "sheaf": ("sheaves",), "man": ("men",), "woman": ("women",), "foot": ("feet",),
    "tooth": ("teeth",), "mouse": ("mice",), "louse": ("lice",), "goose": ("geese",), "child": ("children",),
    "person": ("people",), "ox": ("oxen",), "cactus": ("cacti",), "fungus": ("fungi",), "radius": ("radii",),
    "datum": ("data",), "medium": ("media",), "criterion": ("criteria",), "die": ("dice",),
    "penny": ("pence",), "cooky": ("cookies",), "cookie": ("cookies",),
}


def _is_cvc(word: str) -> bool:
    return (
        len(word) >= 3 and word[-1] not in _VOWELS and word[-1] not in "wxy" and word[-2] in _VOWELS
        and word[-3] not in _VOWELS
    )


def verb_inflections(word: str) -> set[str]:
    """Base, -s, -ed, -ing forms (regular, with and without doubling) plus irregular forms of one verb word."""
    w = word.lower()
    forms = {w, w + "s", w + "ed", w + "ing"}
    if w.endswith(("s", "x", "z", "ch", "sh", "o")):
        forms.add(w + "es")
    if len(w) > 1 and w.endswith("y") and w[-2] not in _VOWELS:
        forms |= {w[:-1] + "ies", w[:-1] + "ied"}
    if w.endswith("e"):
        forms.add(w + "d")
        if not w.endswith(("ee", "ye", "oe")):
            forms.add(w[:-1] + "ing")
    if w.endswith("ie"):
        forms.add(w[:-2] + "ying")
    if w.endswith("c"):
        forms |= {w + "ked", w + "king"}
    if _is_cvc(w):  # "chopped", "stirring"; the doubled form of a word that does not double is harmless
        forms |= {w + w[-1] + "ed", w + w[-1] + "ing"}
    forms.update(_IRREGULAR_VERBS.get(w, ()))
    return forms


def noun_inflections(word: str) -> set[str]:
    """Singular and plural forms of one noun word (regular and irregular)."""
    w = word.lower()
    forms = {w, w + "s"}
    if w.endswith(("s", "x", "z", "ch", "sh", "o")):
        forms.add(w + "es")
    if len(w) > 1 and w.endswith("y") and w[-2] not in _VOWELS:
        forms.add(w[:-1] + "ies")
    if w.endswith("f"):
        forms.add(w[:-1] + "ves")
    if w.endswith("fe"):
        forms.add(w[:-2] + "ves")
    forms.update(_IRREGULAR_NOUNS.get(w, ()))
    # a plural-looking key ("trousers", "clothes") also stands for its singular
    if w.endswith("ies") and len(w) > 4:
        forms.add(w[:-3] + "y")
    elif w.endswith("es") and len(w) > 3:
        forms.add(w[:-2])
    if w.endswith("s") and not w.endswith("ss") and len(w) > 3:
        forms.add(w[:-1])
    return forms


def split_words(text: str) -> list[str]:
    """Lower-case words of a class name or question; spaces, hyphens, colons and underscores separate them."""
    return [w for w in re.split(r"[\s\-:_]+", text.lower()) if w]


def _verb_phrase_forms(instance: str) -> set[tuple[str, ...]]:
    words = split_words(instance)
    if not words:
        return set()
    return {(form, *words[1:]) for form in verb_inflections(words[0])}


def _noun_orders(instance: str) -> list[list[str]]:
    parts = [p for p in instance.lower().split(":") if p.strip()]
    if not parts:
        return []
    orders = [parts, parts[::-1]]
    if len(parts) > 2:
        orders += [parts[1:] + parts[:1], parts[:1] + parts[:0:-1]]
    return [sum((split_words(p) for p in order), []) for order in orders]


def _noun_phrase_forms(instance: str) -> set[tuple[str, ...]]:
    forms: set[tuple[str, ...]] = set()
    head = split_words(instance.split(":")[0])
    for words in _noun_orders(instance):
        if not words:
            continue
        for plural in noun_inflections(words[-1]):  # the last word, the head in English reading order
            forms.add((*words[:-1], plural))
        if head and words[: len(head)] == head:  # head first (key order): "boards chopping"
            for plural in noun_inflections(head[-1]):
                forms.add((*head[:-1], plural, *words[len(head) :]))
    return forms


@lru_cache(maxsize=8)
def _noun_words(vocab: EK100Vocabulary) -> frozenset[str]:
    return frozenset(w for c in vocab.nouns for f in (c.key, *c.instances) for w in split_words(f))


@lru_cache(maxsize=8)
def _single_word_verbs(vocab: EK100Vocabulary) -> frozenset[str]:
    return frozenset(
        split_words(f)[0] for c in vocab.verbs for f in (c.key, *c.instances) if len(split_words(f)) == 1
    ) | frozenset(split_words(c.key)[0] for c in vocab.verbs)


@lru_cache(maxsize=1024)
def _verb_forms(vocab: EK100Vocabulary, verb_class: int) -> frozenset[tuple[str, ...]]:
    cls = vocab.verbs[verb_class]
    forms: set[tuple[str, ...]] = set()
    for instance in (cls.key, *cls.instances):
        forms |= _verb_phrase_forms(instance)
    object_words = _noun_words(vocab) - _single_word_verbs(vocab)
    for instance in (cls.key, *cls.instances):
        words = split_words(instance)
        if len(words) > 1 and words[0] not in object_words:
            forms |= {(f,) for f in verb_inflections(words[0])}
    return frozenset(forms)


@lru_cache(maxsize=2048)
def _noun_forms(vocab: EK100Vocabulary, noun_class: int) -> frozenset[tuple[str, ...]]:
    cls = vocab.nouns[noun_class]
    forms: set[tuple[str, ...]] = set()
    for instance in (cls.key, *cls.instances):
        forms |= _noun_phrase_forms(instance)
    head = split_words(cls.key.split(":")[0])
    for plural in noun_inflections(head[-1]):
        forms.add((*head[:-1], plural))
    return frozenset(forms)


def _vocabulary(vocab: EK100Vocabulary | None) -> EK100Vocabulary:
    """``vocab``, or the shipped EK100 vocabulary (imported here: the processors load without the EK100 tools)."""
    from ..ek100.vocabulary import EK100Vocabulary

    return vocab or EK100Vocabulary.default()


def verb_surface_forms(verb_class: int, vocab: EK100Vocabulary | None = None) -> list[str]:
    """Every surface form ``mask_answer`` masks for a verb class (space-separated, lower case, sorted)."""
    vocab = _vocabulary(vocab)
    return sorted(" ".join(f) for f in _verb_forms(vocab, int(verb_class)))


def noun_surface_forms(noun_class: int, vocab: EK100Vocabulary | None = None) -> list[str]:
    """Every surface form ``mask_answer`` masks for a noun class (space-separated, lower case, sorted)."""
    vocab = _vocabulary(vocab)
    return sorted(" ".join(f) for f in _noun_forms(vocab, int(noun_class)))


_WORD = re.compile(r"[^\W_]+")
_JOINER = re.compile(r"[\s\-:_]+")


@lru_cache(maxsize=4096)
def _forms(vocab: EK100Vocabulary, verb_class: int | None, noun_classes: tuple[int, ...]):
    forms: set[tuple[str, ...]] = set()
    if verb_class is not None:
        forms |= _verb_forms(vocab, verb_class)
    for n in noun_classes:
        forms |= _noun_forms(vocab, n)
    return frozenset(forms), max((len(f) for f in forms), default=0), frozenset(f[0] for f in forms)


def _mask_piece(text: str, forms: frozenset, longest: int, first_words: frozenset, mask_token: str) -> str:
    tokens = [(m.start(), m.end(), m.group(0).lower()) for m in _WORD.finditer(text)]
    out, last, i = [], 0, 0
    while i < len(tokens):
        if tokens[i][2] not in first_words:
            i += 1
            continue
        # the longest form starting at token i whose words are joined only by spaces, hyphens or colons
        for length in range(min(longest, len(tokens) - i), 0, -1):
            span = tokens[i : i + length]
            if tuple(t[2] for t in span) in forms and all(
                _JOINER.fullmatch(text[a[1] : b[0]]) for a, b in zip(span, span[1:])
            ):
                out += [text[last : span[0][0]], mask_token]
                last = span[-1][1]
                i += length
                break
        else:
            i += 1
    out.append(text[last:])
    return "".join(out)


def mask_answer(
    question: str,
    verb_class: int | None,
    noun_classes: int | Iterable[int] | None,
    vocab: EK100Vocabulary | None = None,
    policy: str = "strict",
    *,
    question_type: str | None = None,
    mask_token: str = "[MASK]",
) -> str:
    """Replace the ground-truth verb and nouns in a question by ``mask_token`` (see the module docstring).

    Args:
        question: the question text.
        verb_class: the ground-truth verb class id (``None``: no verb to mask).
        noun_classes: the ground-truth noun class id(s) — EK100's ``all_noun_classes``.
        vocab: the class vocabulary (default: ``EK100Vocabulary.default()``).
        policy: ``"strict"`` (mask verb and nouns in any question) or ``"paper"`` (the authors' cross-only rule:
            nouns in the verb question, the verb in the noun question).
        question_type: ``"verb"`` or ``"noun"``; required by ``policy="paper"``.
        mask_token: the tokenizer's mask token (``"[MASK]"`` for BERT-style, ``"<mask>"`` for RoBERTa).

    Returns:
        The question with every matching span replaced by one ``mask_token``.
    """
    if policy not in MASK_POLICIES:
        raise ValueError(f"policy must be one of {MASK_POLICIES}, got {policy!r}")
    vocab = _vocabulary(vocab)
    if noun_classes is None:
        nouns: tuple[int, ...] = ()
    elif isinstance(noun_classes, int) or hasattr(noun_classes, "__index__"):
        nouns = (int(noun_classes),)
    else:
        nouns = tuple(sorted({int(n) for n in noun_classes}))
    verb = None if verb_class is None else int(verb_class)
    if verb is not None and not 0 <= verb < vocab.num_verbs:
        raise ValueError(f"verb_class {verb} is not a class id of the vocabulary (0..{vocab.num_verbs - 1})")
    for n in nouns:
        if not 0 <= n < vocab.num_nouns:
            raise ValueError(f"noun class {n} is not a class id of the vocabulary (0..{vocab.num_nouns - 1})")
    if policy == "paper":
        if question_type == "verb":
            verb = None
        elif question_type == "noun":
            nouns = ()
        else:
            raise ValueError(f"policy='paper' masks across question types: question_type must be 'verb' or 'noun', got {question_type!r}")
    forms, longest, first_words = _forms(vocab, verb, nouns)
    if not forms:
        return question
    # Masks already in the text stay as they are (the token's own letters must not match a form).
    pieces = question.split(mask_token)
    return mask_token.join(_mask_piece(piece, forms, longest, first_words, mask_token) for piece in pieces)
