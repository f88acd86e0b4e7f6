"""Shared by the Hub, pipeline, CLI, Space and model tests: a tiny MambaVL checkpoint saved with its processor, a tiny
text config, a small test video, the real Big Buck Bunny clip when present, and a metrics.json that follows the
contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, MambaVLProcessor


def _shared_clip(name: Path = Path("shared", "data", "videos", "bigbuckbunny_720p_5s.mp4")) -> Path:
    """The shared clip beside the checkout (``../shared``) or in a folder above it (a checkout of a branch in a
    sub-folder); the first candidate when it is nowhere (tests using it then skip)."""
    parents = Path(__file__).resolve().parents[2:]
    return next((p / name for p in parents if (p / name).is_file()), parents[1] / name)


BBB = _shared_clip()

# A one-layer BERT text config small enough for a test to build a model from in milliseconds.
TINY_BERT = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
             "intermediate_size": 32, "max_position_embeddings": 40, "model_type": "bert", "pad_token_id": 0}

METRICS = {
    "task": "recognition",
    "split": "validation",
    "dataset": "epic-kitchens-100",
    "question_source": "generic",
    "num_clips": 9668,
    "num_clips_scored": 9668,
    "epoch": 37,
    "global_step": 59200,
    "metrics": {
        "all_verb_top1": 61.25, "all_noun_top1": 48.5, "all_action_top1": 36.75, "all_verb_top5": 88.0,
        "all_noun_top5": 72.25, "all_action_top5": 56.5, "tail_verb_top1": 30.5, "tail_noun_top1": 25.0,
        "tail_action_top1": 17.25, "unseen_verb_top1": 52.0, "unseen_noun_top1": 40.75, "unseen_action_top1": 28.0,
    },
}


def tiny_checkpoint(folder: Path | None = None, seed: int = 0) -> tuple[MambaVLForVideoClassification, MambaVLProcessor]:
    """A randomly initialised ``tiny`` model (seeded) and its processor; the config carries the processor's default
    question ids (as a model and its processor saved together do). Saved to ``folder`` when given."""
    torch.manual_seed(seed)
    config = MambaVLConfig.from_preset("tiny")
    processor = MambaVLProcessor.from_config(config)
    config.update(processor.default_question_inputs())
    model = MambaVLForVideoClassification(config).eval()
    if folder is not None:
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
    return model, processor


def write_test_video(path: Path, num_frames: int = 30, width: int = 96, height: int = 64, fps: int = 30) -> Path:
    """A small H.264 MP4 of moving coloured bars (deterministic)."""
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        x = np.arange(width)[None, :]
        for t in range(num_frames):
            frame = np.zeros((height, width, 3), dtype=np.uint8)
            frame[..., 0] = ((x + 4 * t) % 64) * 4
            frame[..., 1] = np.arange(height)[:, None] * 3
            frame[..., 2] = 255 - 8 * t % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


@torch.no_grad()
def direct_top_k(model, processor, video, top_k: int = 5, questions=None) -> dict[str, list]:
    """The reference: ``model(**processor(videos=[clip]))``, softmax top-k of actions, verbs and nouns."""
    outputs = model(**processor(videos=[str(video)], questions=questions, return_tensors="pt"))
    result = {}
    for name, logits, id2label in (("actions", outputs.logits, model.config.id2label),
                                   ("verbs", outputs.verb_logits, model.config.verb_id2label),
                                   ("nouns", outputs.noun_logits, model.config.noun_id2label)):
        scores, ids = logits[0].softmax(-1).topk(top_k)
        result[name] = [{"label": id2label[int(i)], "score": float(s)} for s, i in zip(scores, ids)]
    return result


def assert_same_top_k(got: list[dict], expected: list[dict], atol: float = 1e-5) -> None:
    assert [g["label"] for g in got] == [e["label"] for e in expected], (got, expected)
    np.testing.assert_allclose([g["score"] for g in got], [e["score"] for e in expected], rtol=1e-5, atol=atol)
