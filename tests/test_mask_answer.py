"""mask_answer checked from the outside: an independent list of inflected and multi-word forms, and questions that
embed every narration of the real EK100 validation set. Uses only the public function (no masking internals)."""

import ast
import csv
import re
from collections import Counter
from functools import cache
from pathlib import Path

import pytest

from modeling_mambavl import mask_answer
from modeling_mambavl.ek100 import EK100Vocabulary

SHARED = Path(__file__).resolve().parents[2] / "shared"
VALIDATION_CSV = SHARED / "data" / "ek100-annotations" / "EPIC_100_validation.csv"
VOCAB = EK100Vocabulary.default()

# (surface form as people write it, "verb" / "noun", EK100 class key). Written by hand from English, not generated.
INDEPENDENT_FORMS = [
    ("putting down", "verb", "put"), ("puts down", "verb", "put"), ("placed", "verb", "put"),
    ("turned on", "verb", "turn-on"), ("turning on", "verb", "turn-on"), ("switches on", "verb", "turn-on"),
    ("switched on", "verb", "turn-on"), ("turned off", "verb", "turn-off"), ("switching off", "verb", "turn-off"),
    ("chopped", "verb", "cut"), ("chopping", "verb", "cut"), ("cutting", "verb", "cut"), ("sliced", "verb", "cut"),
    ("slicing", "verb", "cut"), ("took", "verb", "take"), ("taken", "verb", "take"), ("taking", "verb", "take"),
    ("picked up", "verb", "take"), ("picking up", "verb", "take"), ("grabbed", "verb", "take"), ("got", "verb", "take"),
    ("stirring", "verb", "mix"), ("stirred", "verb", "mix"), ("mixes", "verb", "mix"), ("rinsed", "verb", "wash"),
    ("rinsing", "verb", "wash"), ("washes", "verb", "wash"), ("wiping", "verb", "wash"), ("dried", "verb", "dry"),
    ("dries", "verb", "dry"), ("drying", "verb", "dry"), ("threw", "verb", "throw"), ("thrown", "verb", "throw"),
    ("shook", "verb", "shake"), ("shaking", "verb", "shake"), ("held", "verb", "hold"), ("holding", "verb", "hold"),
    ("peeled", "verb", "peel"), ("poured", "verb", "pour"), ("pouring", "verb", "pour"), ("opened", "verb", "open"),
    ("opening", "verb", "open"), ("closes", "verb", "close"), ("closing", "verb", "close"), ("fried", "verb", "cook"),
    ("frying", "verb", "cook"), ("ate", "verb", "eat"), ("eaten", "verb", "eat"), ("drank", "verb", "drink"),
    ("dropped", "verb", "drop"), ("filled", "verb", "fill"), ("squeezing", "verb", "squeeze"),
    ("broke", "verb", "break"), ("broken", "verb", "break"), ("hung", "verb", "hang"), ("grated", "verb", "grate"),
    ("scooped", "verb", "scoop"), ("spreading", "verb", "apply"), ("swept", "verb", "brush"), ("tore", "verb", "rip"),
    ("torn", "verb", "rip"), ("sprinkled", "verb", "sprinkle"),
    ("knives", "noun", "knife"), ("knife", "noun", "knife"), ("chopping boards", "noun", "board:chopping"),
    ("chopping board", "noun", "board:chopping"), ("cutting board", "noun", "board:chopping"),
    ("Chopping-Boards", "noun", "board:chopping"), ("washing-up liquid", "noun", "liquid:washing"),
    ("washing up liquid", "noun", "liquid:washing"), ("tomatoes", "noun", "tomato"), ("potatoes", "noun", "potato"),
    ("leaves", "noun", "leaf"), ("shelves", "noun", "shelf"), ("dishes", "noun", "plate"),
    ("glasses", "noun", "glass"), ("boxes", "noun", "box"), ("cloths", "noun", "cloth"), ("spoons", "noun", "spoon"),
    ("teaspoons", "noun", "spoon"), ("wooden spoon", "noun", "spoon"), ("lids", "noun", "lid"),
    ("forks", "noun", "fork"), ("onions", "noun", "onion"), ("taps", "noun", "tap"), ("cupboards", "noun", "cupboard"),
    ("drawers", "noun", "drawer"), ("plates", "noun", "plate"), ("bowls", "noun", "bowl"), ("eggs", "noun", "egg"),
    ("sponges", "noun", "sponge"), ("peaches", "noun", "peach"), ("cherries", "noun", "cherry"),
    ("strawberries", "noun", "strawberry"), ("jars", "noun", "jar"), ("mugs", "noun", "cup"),
    ("kitchen towel", "noun", "towel:kitchen"), ("kitchen towels", "noun", "towel:kitchen"),
    ("potato peeler", "noun", "peeler:potato"), ("sausages", "noun", "sausage"),
]

STOPWORDS = set("""a an the and or of to in on onto into from with without for at by up down off out over under
back away some more all still then again it its this that these those there here bit piece pieces rest other
another few little lot""".split())


def _class_id(kind, key):
    return VOCAB.verb_id(key) if kind == "verb" else VOCAB.noun_id(key)


@cache
def _form_pattern(form: str) -> re.Pattern:
    words = [w for w in re.split(r"[\s\-:]+", form.lower()) if w]
    pattern = r"(?<![A-Za-z0-9])" + r"[\s\-:]+".join(map(re.escape, words)) + r"(?![A-Za-z0-9])"
    return re.compile(pattern, flags=re.IGNORECASE)


def _present(form: str, text: str) -> bool:
    return _form_pattern(form).search(text) is not None


def _mask(question, kind, class_id, **kwargs):
    if kind == "verb":
        return mask_answer(question, class_id, [], VOCAB, **kwargs)
    return mask_answer(question, None, [class_id], VOCAB, **kwargs)


def test_the_independent_list_is_long_enough():
    assert len(INDEPENDENT_FORMS) >= 60
    assert sum(" " in f or "-" in f for f, _, _ in INDEPENDENT_FORMS) >= 15  # multi-word forms


@pytest.mark.parametrize("form,kind,key", INDEPENDENT_FORMS)
def test_each_form_becomes_one_mask_token(form, kind, key):
    class_id = _class_id(kind, key)
    for template, expected in [
        ("Is the person {} now?", "Is the person [MASK] now?"),
        ("{}: what next?", "[MASK]: what next?"),
        ("WHY {}?", "WHY [MASK]?"),
        ("'{}', then '{}'.", "'[MASK]', then '[MASK]'."),
    ]:
        text = template.format(form, form) if template.count("{}") == 2 else template.format(form)
        text = text if not template.startswith("WHY") else text.replace(form, form.upper())
        masked = _mask(text, kind, class_id)
        assert masked == expected, (form, text, masked)
        assert not _present(form, masked)


def test_mask_token_is_a_parameter_and_existing_masks_stay():
    take = VOCAB.verb_id("take")
    assert mask_answer("Who took it?", take, [], VOCAB, mask_token="<mask>") == "Who <mask> it?"
    # the mask token's own letters never match ("mask" could be a noun form)
    assert mask_answer("[MASK] took it", take, [], VOCAB) == "[MASK] [MASK] it"


def test_word_boundaries_and_longest_span():
    pot, potato, tap = VOCAB.noun_id("pot"), VOCAB.noun_id("potato"), VOCAB.noun_id("tap")
    assert mask_answer("potatoes in the pot", None, [pot], VOCAB) == "potatoes in the [MASK]"
    assert mask_answer("potatoes in the pot", None, [potato], VOCAB) == "[MASK] in the pot"
    assert mask_answer("the tape near the taps", None, [tap], VOCAB) == "the tape near the [MASK]"
    liquid, wash = VOCAB.noun_id("liquid:washing"), VOCAB.verb_id("wash")
    # verb "washing" and noun "washing up liquid" overlap: the longer span wins, as one token
    assert mask_answer("pour washing up liquid", wash, [liquid], VOCAB) == "pour [MASK]"


def test_nothing_to_mask_leaves_the_question():
    q = "What action is performed using hands in the video?"
    assert mask_answer(q, VOCAB.verb_id("take"), [VOCAB.noun_id("plate")], VOCAB) == q


def test_paper_policy_masks_across_only():
    cut, onion = VOCAB.verb_id("cut"), VOCAB.noun_id("onion")
    q = "Is the person cutting the onion?"
    assert mask_answer(q, cut, [onion], VOCAB, policy="paper", question_type="verb") == "Is the person cutting the [MASK]?"
    assert mask_answer(q, cut, [onion], VOCAB, policy="paper", question_type="noun") == "Is the person [MASK] the onion?"
    assert mask_answer(q, cut, [onion], VOCAB) == "Is the person [MASK] the [MASK]?"
    with pytest.raises(ValueError, match="question_type"):
        mask_answer(q, cut, [onion], VOCAB, policy="paper")
    with pytest.raises(ValueError, match="policy"):
        mask_answer(q, cut, [onion], VOCAB, policy="lenient")
    with pytest.raises(ValueError, match="verb_class 97"):
        mask_answer(q, 97, [onion], VOCAB)


# Questions that embed the narration, as an LLM or the oracle templates would.
NARRATION_QUESTIONS = [
    "What is the person doing in the clip '{narration}'?",
    "Which object is involved when someone is told to {narration}?",
    "{NARRATION}?",
]


def _natural(noun_key: str) -> list[str]:
    parts = noun_key.split(":")
    return [" ".join(parts), " ".join(parts[1:] + parts[:1])]


@pytest.mark.slow
def test_every_validation_narration_is_masked(record_property):
    if not VALIDATION_CSV.is_file():
        pytest.skip(f"{VALIDATION_CSV} not available")
    forms_by_class = {}
    for form, kind, key in INDEPENDENT_FORMS:
        forms_by_class.setdefault((kind, _class_id(kind, key)), []).append(form)
    template_words = {w for q in NARRATION_QUESTIONS for w in re.findall(r"[a-z]+", q.lower())}
    rows = leaks = 0
    rows_with_survivor = 0
    survivors = Counter()
    with open(VALIDATION_CSV, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            rows += 1
            verb_class = int(row["verb_class"])
            noun_classes = ast.literal_eval(row["all_noun_classes"])
            narration = row["narration"]
            must_go = [row["verb"].replace("-", " ")]
            for noun in ast.literal_eval(row["all_nouns"]):
                must_go += _natural(noun)
            extra = forms_by_class.get(("verb", verb_class), []) + [
                form for n in noun_classes for form in forms_by_class.get(("noun", n), [])
            ]
            questions = [q.format(narration=narration, NARRATION=narration.upper()) for q in NARRATION_QUESTIONS]
            questions += [f"Was it {form} in '{narration}'?" for form in extra]
            masked = [mask_answer(q, verb_class, noun_classes, VOCAB) for q in questions]
            for text in masked:
                for form in must_go + extra:
                    if _present(form, text):
                        leaks += 1
                        pytest.fail(f"{row['narration_id']}: {form!r} survives in {text!r}")
            content = {w for w in re.findall(r"[a-z]+", narration.lower()) if w not in STOPWORDS and len(w) > 1}
            left = {w for w in content - template_words if _present(w, masked[0])}
            if left:
                rows_with_survivor += 1
                survivors.update(left)
    assert rows == 9668 and leaks == 0
    fraction = rows_with_survivor / rows
    record_property("rows_with_surviving_content_word", rows_with_survivor)
    record_property("fraction_rows_with_surviving_content_word", round(fraction, 4))
    print(
        f"\nmask_answer(strict) on {rows} validation narrations: no ground-truth form survives; "
        f"{rows_with_survivor} rows ({100 * fraction:.1f}%) keep another content word of the narration; "
        f"most common: {survivors.most_common(15)}"
    )
    assert fraction < 0.5  # most narrations are just a verb and its nouns
