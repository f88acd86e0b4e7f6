"""MambaVL demo (a Gradio app, also the Hub Space's code): upload a clip, optionally type the questions, and see the
frames the model samples and its top-5 verbs, nouns and actions.

    python examples/space/app.py --model <checkpoint folder or Hub repo id> [--port 7860]

It needs only transformers, torch, torchvision, av and gradio: the model's code comes with the checkpoint
(``trust_remote_code=True``); with the mambavl package installed, the package's classes are used.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import gradio as gr
import numpy as np
import torch
from transformers import AutoModelForVideoClassification, AutoProcessor

DEFAULT_MODEL = os.environ.get("MAMBAVL_MODEL")
TOP_K = 5


def load(model_id: str, revision: str | None = None) -> tuple[Any, Any]:
    """The model (eval mode) and its processor, from a folder or a Hub repo."""
    model = AutoModelForVideoClassification.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    return model.eval(), processor


def _top_k(logits: torch.Tensor, id2label: dict[int, str]) -> dict[str, float]:
    scores, ids = logits.float().softmax(-1).topk(min(TOP_K, logits.shape[-1]))
    return {id2label[int(i)]: float(s) for s, i in zip(scores, ids)}


def _frames(pixel_values: torch.Tensor, processor: Any) -> list[np.ndarray]:
    """The sampled frames as the model sees them (after resize and crop), de-normalised to uint8 images."""
    video = processor.video_processor
    mean = torch.tensor(video.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(video.image_std).view(1, 3, 1, 1)
    frames = (pixel_values[0] * std + mean).clamp(0, 1).mul(255).round().byte()
    return [f.permute(1, 2, 0).numpy() for f in frames]


def predict(model: Any, processor: Any, video: str | None, verb_question: str = "", noun_question: str = ""):
    """(frames, verbs, nouns, actions, questions used) for an uploaded clip."""
    if not video:
        raise gr.Error("Upload a video clip first.")
    typed = [verb_question.strip(), noun_question.strip()]
    questions = None
    if any(typed):  # an empty box keeps that question type's default question
        questions = [t or d for t, d in zip(typed, processor.questions)]
    types = list(model.config.question_types)
    if questions is not None and len(types) != 2:
        questions = questions[: len(types)]
    inputs = processor(videos=[video], questions=questions, return_tensors="pt")
    with torch.no_grad():
        outputs = model(**inputs)
    config = model.config
    used = questions if questions is not None else list(processor.questions)
    if getattr(outputs, "verb_logits", None) is None:
        labels = _top_k(outputs.logits[0], config.id2label)
        return _frames(inputs["pixel_values"], processor), labels, {}, labels, " | ".join(used)
    return (
        _frames(inputs["pixel_values"], processor),
        _top_k(outputs.verb_logits[0], config.verb_id2label),
        _top_k(outputs.noun_logits[0], config.noun_id2label),
        _top_k(outputs.logits[0], config.id2label),
        " | ".join(used),
    )


def build_demo(model: Any, processor: Any, title: str = "MambaVL") -> gr.Blocks:
    defaults = list(processor.questions) + ["", ""]
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"# {title}\nEgocentric action recognition by questioning (Mamba Fusion, ICASSP 2025). Upload a clip; "
            "optionally ask your own verb and noun questions (empty: the model's default questions)."
        )
        with gr.Row():
            with gr.Column():
                video = gr.File(label="Video clip", file_types=["video"], type="filepath", elem_id="video")
                verb_question = gr.Textbox(label="Verb question", placeholder=defaults[0], elem_id="verb-question")
                noun_question = gr.Textbox(label="Noun question", placeholder=defaults[1], elem_id="noun-question")
                button = gr.Button("Predict", variant="primary", elem_id="predict")
                used = gr.Textbox(label="Questions asked", interactive=False, elem_id="questions")
            with gr.Column():
                frames = gr.Gallery(label="Sampled frames", columns=4, height="auto", elem_id="frames")
        with gr.Row():
            verbs = gr.Label(label="Verbs", num_top_classes=TOP_K, elem_id="verbs")
            nouns = gr.Label(label="Nouns", num_top_classes=TOP_K, elem_id="nouns")
            actions = gr.Label(label="Actions", num_top_classes=TOP_K, elem_id="actions")
        button.click(lambda v, vq, nq: predict(model, processor, v, vq, nq),
                     inputs=[video, verb_question, noun_question], outputs=[frames, verbs, nouns, actions, used])
    return demo


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="MambaVL Gradio demo")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub repo id ($MAMBAVL_MODEL)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("give --model (a checkpoint folder or Hub repo id) or set MAMBAVL_MODEL")
    model, processor = load(args.model, args.revision)
    build_demo(model, processor).launch(server_name=args.host, server_port=args.port, show_error=True)


if __name__ == "__main__":
    main()
