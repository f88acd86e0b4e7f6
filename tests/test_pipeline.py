"""pipeline("video-classification") and the package's "video-question-classification" task on MambaVL checkpoints,
against a direct ``model(**processor(videos=[clip]))`` forward."""

import pytest
import torch
from helpers.tiny_checkpoint import BBB, assert_same_top_k, direct_top_k, write_test_video
from transformers import pipeline

import modeling_mambavl  # noqa: F401 (registers the model, processors and pipeline task)
from modeling_mambavl.pipelines import TASK, VideoQuestionClassificationPipeline

QUESTIONS = ["What is the person doing with the knife?", "What is being cut on the board?"]


@pytest.fixture
def checkpoint(tiny_saved):
    return tiny_saved


@pytest.fixture(scope="session")
def clip(tmp_path_factory):
    return write_test_video(tmp_path_factory.mktemp("video") / "clip.mp4")


def test_video_classification_pipeline_equals_direct_forward(checkpoint, clip):
    folder, model, processor = checkpoint
    classifier = pipeline("video-classification", model=str(folder))
    assert type(classifier.video_processor).__name__ == "MambaVLVideoProcessor"
    assert_same_top_k(classifier(str(clip), top_k=5), direct_top_k(model, processor, clip)["actions"])


@pytest.mark.skipif(not BBB.is_file(), reason="the Big Buck Bunny clip (../shared/data/videos) is absent")
def test_pipelines_on_the_real_clip(checkpoint):
    folder, model, processor = checkpoint
    expected = direct_top_k(model, processor, BBB)
    predictions = pipeline("video-classification", model=str(folder))(str(BBB), top_k=5)
    assert_same_top_k(predictions, expected["actions"])
    result = pipeline(TASK, model=str(folder))(str(BBB), top_k=5)
    for key in ("actions", "verbs", "nouns"):
        assert_same_top_k(result[key], expected[key])


def test_question_pipeline_takes_the_users_questions(checkpoint, clip):
    folder, model, processor = checkpoint
    pipe = pipeline(TASK, model=str(folder))
    assert isinstance(pipe, VideoQuestionClassificationPipeline)
    assert type(pipe.processor).__name__ == "MambaVLProcessor"
    default = pipe(str(clip), top_k=3)
    asked = pipe(str(clip), questions=QUESTIONS, top_k=3)
    assert asked["questions"] == QUESTIONS and default["questions"] == processor.questions
    expected = direct_top_k(model, processor, clip, top_k=3, questions=QUESTIONS)
    for key in ("verbs", "nouns", "actions"):
        assert_same_top_k(asked[key], expected[key])
        assert_same_top_k(default[key], direct_top_k(model, processor, clip, top_k=3)[key])
    # The questions reach the model as the processor tokenizes them.
    prepared = pipe.preprocess(str(clip), questions=QUESTIONS)["model_inputs"]
    tokens = processor(questions=QUESTIONS, return_tensors="pt")
    assert torch.equal(prepared["question_input_ids"], tokens["question_input_ids"])
    assert torch.equal(prepared["question_attention_mask"], tokens["question_attention_mask"])
    with pytest.raises(ValueError, match="one per question type"):
        pipe(str(clip), questions=QUESTIONS[:1])


def test_question_pipeline_window_and_batch(checkpoint, clip):
    folder, model, processor = checkpoint
    pipe = pipeline(TASK, model=model, processor=processor)
    both = pipe([str(clip), str(clip)], window=(0.0, 0.5), top_k=2)
    assert len(both) == 2 and both[0]["actions"] == both[1]["actions"]
    with torch.no_grad():
        inputs = processor(videos=[str(clip)], windows=[(0.0, 0.5)], return_tensors="pt")
        scores = model(**inputs).logits[0].softmax(-1).topk(2).values.tolist()
    assert [a["score"] for a in both[0]["actions"]] == pytest.approx(scores, abs=1e-6)
