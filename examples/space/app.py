"""MambaVL demo (a Gradio app, also the Hub Space's code): upload a clip (or pick the example saved with the
checkpoint), optionally type the questions, and see the frames the model samples and its top-5 verbs, nouns and actions.

    python examples/space/app.py --model <checkpoint folder or Hub repo id> [--port 7860]

With the mambavl package importable, the package's own classes load the checkpoint and no code from the checkpoint
runs. Without it (a Space that installs only transformers, torch, torchvision, av and gradio), the checkpoint's bundled
code is loaded with ``trust_remote_code=True``. The page says which.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any

try:
    import gradio as gr
except ModuleNotFoundError:  # the package's own helper may be absent here (a Space needs only requirements.txt)
    print("app.py needs gradio, which this install lacks: in the package's checkout pip install -e '.[space]', or "
          "pip install -r examples/space/requirements.txt", file=sys.stderr)
    sys.exit(2)
import numpy as np
import torch
from transformers import AutoModelForVideoClassification, AutoProcessor

DEFAULT_MODEL = os.environ.get("MAMBAVL_MODEL")
TOP_K = 5
EXAMPLES_DIR = "examples"  # where a checkpoint keeps its example clips (``mambavl card --example-video``)
VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".mov", ".avi")


def package_available() -> bool:
    """Whether the mambavl package can be imported here (then no remote code is needed)."""
    try:
        return importlib.util.find_spec("modeling_mambavl") is not None
    except (ImportError, ValueError):
        return False


def load(model_id: str, revision: str | None = None) -> tuple[Any, Any, str]:
    """``(model in eval mode, processor, how it was loaded)`` from a folder or a Hub repo.

    The package's loader when the package is importable (its classes, no remote code); otherwise transformers with
    ``trust_remote_code=True`` (the code bundled with the checkpoint)."""
    if package_available():
        from modeling_mambavl import load_model_and_processor

        model, processor = load_model_and_processor(model_id, revision=revision)
        return model.eval(), processor, "the installed mambavl package (no code from the checkpoint runs)"
    model = AutoModelForVideoClassification.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(model_id, revision=revision, trust_remote_code=True)
    return (model.eval(), processor,
            "the checkpoint's bundled code (trust_remote_code=True: the mambavl package is not installed)")


def example_clips(model_id: str, revision: str | None = None) -> list[str]:
    """The example clips saved with the checkpoint (``examples/`` of the folder or Hub repo), sorted by name."""
    folder = Path(model_id)
    if not folder.is_dir():
        from huggingface_hub import snapshot_download

        try:
            folder = Path(snapshot_download(model_id, revision=revision, allow_patterns=[f"{EXAMPLES_DIR}/*"]))
        except Exception as e:  # noqa: BLE001 (examples are optional: the demo works without them)
            print(f"no example clips from {model_id}: {type(e).__name__}: {e}")
            return []
    clips = (folder / EXAMPLES_DIR).glob("*") if (folder / EXAMPLES_DIR).is_dir() else []
    return sorted(str(p) for p in clips if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


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
    try:
        inputs = processor(videos=[video], questions=questions, return_tensors="pt")
    except (ValueError, RuntimeError, OSError) as e:  # unreadable media, a question too long, ...: shown, not raised
        raise gr.Error(f"{Path(video).name}: {e}") from e
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


def build_demo(model: Any, processor: Any, title: str = "MambaVL", examples: list[str] | None = None,
               loaded_with: str | None = None) -> gr.Blocks:
    defaults = list(processor.questions) + ["", ""]
    with gr.Blocks(title=title) as demo:
        gr.Markdown(
            f"# {title}\nEgocentric action recognition by questioning (Mamba Fusion, ICASSP 2025). Upload a clip; "
            "optionally ask your own verb and noun questions (empty: the model's default questions)."
        )
        if loaded_with:
            gr.Markdown(f"Model code: {loaded_with}.", elem_id="loaded-with")
        with gr.Row():
            with gr.Column():
                video = gr.Video(label="Video clip", sources=["upload"], format=None, elem_id="video")
                verb_question = gr.Textbox(label="Verb question", placeholder=defaults[0], elem_id="verb-question")
                noun_question = gr.Textbox(label="Noun question", placeholder=defaults[1], elem_id="noun-question")
                button = gr.Button("Predict", variant="primary", elem_id="predict")
                if examples:
                    gr.Examples(examples=[[clip] for clip in examples], inputs=[video],
                                label="Example clip saved with the checkpoint", elem_id="examples")
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
    parser = argparse.ArgumentParser(description="MambaVL Gradio demo",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="checkpoint folder or Hub repo id ($MAMBAVL_MODEL)")
    parser.add_argument("--revision", default=None, help="branch, tag or commit of a Hub repo")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="address to serve on ($GRADIO_SERVER_NAME)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)),
                        help="port to serve on ($GRADIO_SERVER_PORT)")
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("give --model (a checkpoint folder or Hub repo id) or set MAMBAVL_MODEL")
    model, processor, loaded_with = load(args.model, args.revision)
    print(f"MambaVL demo: {args.model} loaded with {loaded_with}", flush=True)
    examples = example_clips(args.model, args.revision)
    demo = build_demo(model, processor, examples=examples, loaded_with=loaded_with)
    demo.launch(server_name=args.host, server_port=args.port, show_error=True,
                allowed_paths=[str(Path(c).parent) for c in examples])


if __name__ == "__main__":
    main()
