from pathlib import Path

import pytest

from modeling_mambavl.ek100 import EK100Vocabulary

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "ek100-annotations"


def test_default_vocabulary_sizes_and_names():
    vocab = EK100Vocabulary.default()
    assert (vocab.num_verbs, vocab.num_nouns, vocab.num_actions) == (97, 300, 3806)
    assert vocab.verbs[0].key == "take" and vocab.verb_name(6) == "turn on"
    chopping = vocab.noun_id("board:chopping")
    assert vocab.noun_name(chopping) == "chopping board"
    assert vocab.action_name(vocab.action_id(0, chopping)) == "take chopping board"
    assert 10 in vocab.tail_verbs and vocab.unseen_participants["validation"] == {"P18", "P32"}
    # Ids follow the string sort of "verb:noun" in the official table.
    keys = [f"{v}:{n}" for v, n in vocab.actions]
    assert keys == sorted(keys)


def test_unknown_action_names_the_pair():
    vocab = EK100Vocabulary.default()
    verb, noun = next((v, n) for v in range(97) for n in range(300) if not vocab.has_action(v, n))
    with pytest.raises(KeyError, match=f"verb {verb}, noun {noun}"):
        vocab.action_id(verb, noun)


def test_from_dir_matches_shipped_copy():
    if not SHARED.is_dir():
        pytest.skip("reference annotations not present")
    a, b = EK100Vocabulary.from_dir(SHARED), EK100Vocabulary.default()
    assert a.actions == b.actions and a.verbs == b.verbs and a.nouns == b.nouns


def test_from_dir_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="EPIC_100_verb_classes.csv"):
        EK100Vocabulary.from_dir(tmp_path)
