"""The shipped default question tokenizer: deterministic rebuild, size and special tokens, transformers loading."""

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from modeling_mambavl.processors import build_question_tokenizer, default_question_tokenizer
from modeling_mambavl.processors.questions import GENERIC_TEMPLATES
from modeling_mambavl.processors.tokenizer import MAX_QUESTION_VOCAB, question_tokenizer_path


def test_shipped_file_equals_a_rebuild():
    shipped = Path(question_tokenizer_path()).read_text(encoding="utf-8")
    rebuilt = build_question_tokenizer().to_str(pretty=True) + "\n"
    assert shipped == rebuilt, "rebuild with: python -m modeling_mambavl.processors.tokenizer"
    assert build_question_tokenizer().to_str() == build_question_tokenizer().to_str()


def test_size_and_special_tokens():
    tok = build_question_tokenizer()
    assert tok.get_vocab_size() <= MAX_QUESTION_VOCAB == 4096
    assert [tok.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")] == [0, 1, 2, 3, 4]


def test_templates_and_class_names_are_whole_words():
    tok = build_question_tokenizer()
    for phrasings in GENERIC_TEMPLATES.values():
        for text in phrasings:
            assert "[UNK]" not in tok.encode(text).tokens
    enc = tok.encode("Put down the chopping boards, then rinsed the knives [MASK]")
    assert enc.tokens == ["[CLS]", "put", "down", "the", "chopping", "boards", ",", "then", "rinsed", "the", "knives",
                          "[MASK]", "[SEP]"]
    # unknown words are spelled from pieces, not [UNK]
    assert "[UNK]" not in tok.encode("xylophone").tokens


def test_loads_as_a_transformers_tokenizer(tmp_path):
    tok = default_question_tokenizer()
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.pad_token_id, tok.mask_token, tok.mask_token_id, tok.padding_side) == (0, "[MASK]", 4, "right")
    batch = tok(["What is the object in the video?", "Why?"], padding="longest")
    assert batch["input_ids"][1][-1] == 0 and batch["attention_mask"][1][-1] == 0
    assert tok.decode(batch["input_ids"][0], skip_special_tokens=True) == "what is the object in the video?"
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(["What is the object in the video?"])["input_ids"] == tok(["What is the object in the video?"])["input_ids"]
    assert again.mask_token_id == 4 and again.pad_token_id == 0
