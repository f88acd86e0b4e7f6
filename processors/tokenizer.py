"""The default question tokenizer: a small WordPiece vocabulary built from the question templates and EK100's class
names, shipped as package data so that a processor can be made with no download.

The vocabulary is written out, not trained, so a rebuild gives the same file byte for byte:

* ids 0-4: ``[PAD]`` (0), ``[UNK]``, ``[CLS]``, ``[SEP]``, ``[MASK]``;
* every single character of the corpus plus ASCII letters, digits and punctuation, alone and as ``##`` suffix
  pieces (any word can be spelled, so nothing but unknown scripts maps to ``[UNK]``);
* the words, sorted: those of the question templates, of EK100's verb and noun keys and instances (hyphens and
  colons split words), their inflections (the forms ``mask_answer`` knows) and common function words.

BERT-style normalisation (lower case, accents stripped) and pre-tokenisation; ``[CLS] question [SEP]``.
At most 4,096 tokens (the ``tiny`` preset's ``text_config.vocab_size``).

Rebuild the shipped file with ``python -m modeling_mambavl.processors.tokenizer``.
"""

from __future__ import annotations

import string
import sys
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .masking import noun_inflections, split_words, verb_inflections
from .questions import GENERIC_TEMPLATES, NARRATION_TEMPLATES, PREDICTED_TEMPLATES

if TYPE_CHECKING:
    from ..ek100.vocabulary import EK100Vocabulary

__all__ = [
    "QUESTION_TOKENIZER_FILE",
    "MAX_QUESTION_VOCAB",
    "SPECIAL_TOKENS",
    "build_question_tokenizer",
    "default_question_tokenizer",
    "question_tokenizer_path",
]

QUESTION_TOKENIZER_FILE = "question_tokenizer.json"
MAX_QUESTION_VOCAB = 4096
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
MODEL_MAX_LENGTH = 64

# Function and question words the templates and generated questions use beyond the template text itself.
_COMMON_WORDS = """
a about above across after again against all almost along also am an and another any are around as at away back
be because been before behind being below beside between both but by can could did do does doing done down during
each either else every few for from front has have having he her here hers him his how i if in inside into is it its
itself just last left less like many may me might more most much must my near next no nor not now of off on once one
only onto or other our out outside over own part people person perform performed performing place right same she
should side so some something still such than that the their them then there these they thing this those through
to together top toward towards under until up upon us use used using very was we were what when where whether which
while who whom whose why will with within without would yes yet you your hand hands video clip camera wearer object
item action doing done being handled happening happens involved kitchen someone somebody person's holding touching
going next first second third final verb noun question answer
""".split()


def _corpus_words(vocab: EK100Vocabulary) -> set[str]:
    words: set[str] = set(_COMMON_WORDS)
    for table in (GENERIC_TEMPLATES, NARRATION_TEMPLATES, PREDICTED_TEMPLATES):
        for phrasings in table.values():
            for text in phrasings:
                words.update(_split_text(text))
    for cls in vocab.verbs:
        for form in (cls.key, *cls.instances):
            parts = split_words(form)
            words.update(parts)
            if parts:
                words.update(verb_inflections(parts[0]))
    for cls in vocab.nouns:
        for form in (cls.key, *cls.instances):
            words.update(split_words(form))
            head = split_words(form.split(":")[0])
            if head:  # plurals of the head noun ("boards"), not of its modifiers
                words.update(noun_inflections(head[-1]))
    return {w for w in words if w and w.isascii() and w.isalnum()}


def _split_text(text: str) -> list[str]:
    out, word = [], []
    for ch in text.lower():
        if ch.isalnum():
            word.append(ch)
        else:
            if word:
                out.append("".join(word))
            word = []
    if word:
        out.append("".join(word))
    return [w for w in out if not (w.startswith("{") or w.endswith("}"))]


def _vocabulary(vocab: EK100Vocabulary) -> list[str]:
    words = _corpus_words(vocab)
    chars = sorted(set("".join(words)) | set(string.ascii_lowercase) | set(string.digits) | set(string.punctuation))
    tokens = list(SPECIAL_TOKENS) + chars + ["##" + c for c in chars if c.isalnum()]
    seen = set(tokens)
    # Inflections that are not real words ("chopt", "knifes") are cheap; if the corpus outgrows the budget the
    # longest words go first (they are the rarest and spell fine from pieces).
    budget = MAX_QUESTION_VOCAB - len(tokens)
    candidates = sorted((w for w in words if w not in seen), key=lambda w: (len(w), w))[:budget]
    return tokens + sorted(candidates)


def build_question_tokenizer(vocab: EK100Vocabulary | None = None):
    """Build the default question tokenizer (a ``tokenizers.Tokenizer``), deterministically."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    from ..ek100.vocabulary import EK100Vocabulary

    vocab = vocab or EK100Vocabulary.default()
    tokens = _vocabulary(vocab)
    model = WordPiece({t: i for i, t in enumerate(tokens)}, unk_token="[UNK]", max_input_chars_per_word=100)
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=True,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    cls_id, sep_id = tokens.index("[CLS]"), tokens.index("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def question_tokenizer_path() -> Path:
    """Path of the shipped ``question_tokenizer.json``."""
    return Path(str(resources.files(__package__) / "data" / QUESTION_TOKENIZER_FILE))


def default_question_tokenizer():
    """The shipped question tokenizer as a transformers ``PreTrainedTokenizerFast`` (right padding, ``[PAD]`` = 0)."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(question_tokenizer_path()),
        unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
        model_max_length=MODEL_MAX_LENGTH, padding_side="right", model_input_names=["input_ids", "attention_mask"],
    )


def _write_shipped_file(path: Path | None = None) -> Path:
    path = path or Path(__file__).resolve().parent / "data" / QUESTION_TOKENIZER_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(build_question_tokenizer().to_str(pretty=True) + "\n", encoding="utf-8")
    return path


if __name__ == "__main__":  # python -m modeling_mambavl.processors.tokenizer [output path]
    written = _write_shipped_file(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
    print(f"wrote {written}")
