#!/usr/bin/env python
"""Convert a checkpoint of the authors' MambaVL code into a ``MambaVLForVideoClassification`` folder.

The authors' models (github.com/Dongzhikang/MambaVL, ``slowfast/models/video_model_builder.py``: ``Motionformer`` for
ORViT, ``AVION`` / ``AVION_B`` for the LaViLa/AVION CLIP ViTs) hold, besides their video backbone:

    A_log                      the shared state matrix (d_inner, N)
    mamba_video.*, mamba_text.*  two Mamba-v1 mixers (in_proj, conv1d, x_proj, dt_proj, D, out_proj; no A_log)
    text_model.*               RoBERTa-base; only its embeddings run (frozen)
    txt_proj.{0,2,4}.*         the text MLP Linear(768, D, no bias) -> ReLU -> Linear -> ReLU -> Linear
    head0.*, head1.*           the verb (97) and noun (300) heads
    norm.*, pre_logits.fc.*    (Motionformer only) the backbone's final LayerNorm (eps 1e-6) and Linear + tanh

They are mapped one-to-one onto this package's SSM fusion, text MLP, heads and video adapter. The converted model
reads pre-extracted backbone tokens (``video_features``, [CLS] + frame-major): neither backbone is a transformers
model, so the backbone keys are written as they come to ``authors_backbone.safetensors`` next to the model, for the
``module:function`` backbone of ``examples/extract_features.py``. Motionformer features are the tokens *before* its
final norm (the adapter applies ``norm`` + ``pre_logits``); the AVION models feed the visual tower's output straight
to the mixer, so they convert with ``vision_adapter="identity"`` and features are whatever that tower returns.

The authors' forward ignores the question attention mask (40-token questions padded with ``<pad>`` run through the
mixer and into the mean), so the model is written with ``question_pooling="include_padding"``; give questions padded
to 40 tokens (``--tokenizer`` saves a RoBERTa processor with ``max_length=40``).

Usage::

    python examples/convert_authors_checkpoint.py --checkpoint checkpoint_epoch_00050.pyth --output_dir mambavl-orvit \\
        [--tokenizer path/to/roberta-base] [--layout auto|motionformer|avion] [--trust_pickle] [--strict]

Every key is accounted for in the printed report (and ``conversion_report.json``): mapped, backbone (saved as it
comes), dropped on purpose (RoBERTa's encoder layers, which never run), or unmapped (unknown to this converter).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification
from modeling_mambavl.configuration.presets import roberta_base_text_config
from modeling_mambavl.training.arguments import HelpFormatter, finish_parser

BACKBONE_FILE = "authors_backbone.safetensors"
REPORT_FILE = "conversion_report.json"
QUESTION_LENGTH = 40  # the authors tokenized every question with padding="max_length", max_length=40
LAYOUTS = ("motionformer", "avion")
# Frames each backbone was trained on (the authors' configs): Motionformer DATA.MEAN/STD 0.5; AVION the CLIP
# ("openai") mean / std of clip_dataset.Epickitchensavion, [108.33, 116.75, 104.09] / [68.50, 66.63, 70.32] on 0-255.
_FRAME_SETTINGS = {
    "motionformer": {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]},
    "avion": {"image_mean": [0.42481, 0.45782, 0.40821], "image_std": [0.26863, 0.26130, 0.27578]},
}
_FUSION = "mambavl.fusion.layers.0"
# (pattern, replacement) of the keys that map one-to-one, whatever the backbone.
_RULES = [
    (re.compile(r"^A_log$"), f"{_FUSION}.A_log"),
    (re.compile(r"^mamba_video\.(.+)$"), rf"{_FUSION}.video_mixer.\1"),
    (re.compile(r"^mamba_text\.(.+)$"), rf"{_FUSION}.text_mixer.\1"),
    (re.compile(r"^txt_proj\.(\d+)\.(weight|bias)$"), r"mambavl.questions.mlp.\1.\2"),
    (re.compile(r"^head0\.(.+)$"), r"verb_head.\1"),
    (re.compile(r"^head1\.(.+)$"), r"noun_head.\1"),
    (re.compile(r"^text_model\.(embeddings|pooler)\.(.+)$"), r"mambavl.questions.text_model.\1.\2"),
]
_MOTIONFORMER_RULES = [
    (re.compile(r"^norm\.(weight|bias)$"), r"mambavl.vision.norm.\1"),
    (re.compile(r"^pre_logits\.fc\.(weight|bias)$"), r"mambavl.vision.proj.\1"),
]
_BACKBONE = {
    # Motionformer keeps its backbone at the top level of the model (video_model_builder.Motionformer).
    "motionformer": re.compile(r"^(patch_embed(_3d)?\.|cls_token$|pos_embed|temp_embed$|st_embed$|blocks\.|orvit)"),
    # AVION / AVION_B hold the LaViLa visual tower as `self.orvit`.
    "avion": re.compile(r"^orvit\."),
}
_DROPPED = [
    (re.compile(r"^text_model\.encoder\."), "RoBERTa encoder layer: the authors' SSM fusion runs only the embeddings"),
    (re.compile(r"^text_model\.embeddings\.(position_ids|token_type_ids)$"), "buffer recomputed by transformers"),
]
_UNSUPPORTED = [
    (re.compile(r"^fuser\."), "a Transformer / MLP fusion checkpoint (FUSION.METHOD transformer or mlp); this "
                              "converter handles the Mamba fusion"),
    (re.compile(r"^B_log$"), "the 'Mamba_disjoint' variant (a second state matrix), which the paper does not use"),
]


class ConversionError(ValueError):
    """The checkpoint cannot be converted; the message names the file or key and why."""


@dataclass
class Conversion:
    """The result of :func:`convert_state_dict`."""

    layout: str
    config: MambaVLConfig
    state_dict: dict[str, torch.Tensor]
    backbone_state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    unmapped: list[str] = field(default_factory=list)
    mapping: dict[str, str] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "mapped": self.mapping,
            "backbone_keys": sorted(self.backbone_state_dict),
            "dropped": self.dropped,
            "unmapped": self.unmapped,
            "question_pooling": self.config.question_pooling,
            "question_length": QUESTION_LENGTH,
        }


# ---------------------------------------------------------------------------------------------------------------------
# Loading


def load_authors_state_dict(path: str | os.PathLike, trust_pickle: bool = False) -> dict[str, torch.Tensor]:
    """The model weights of an authors' checkpoint: a slowfast ``.pyth`` (``{"model_state": ...}``), a dict with
    ``state_dict`` / ``model``, or a bare state dict; a DDP ``module.`` prefix is removed.

    Loads with ``weights_only=True``; ``trust_pickle=True`` allows arbitrary pickled objects (only for files you
    trust).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:  # an unpickling error names the offending global
        if trust_pickle:
            raise
        raise ConversionError(
            f"{path}: could not be loaded with weights_only=True ({type(e).__name__}: {e}). If you trust the file, "
            "pass --trust_pickle to unpickle it fully."
        ) from e
    for key in ("model_state", "state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: no state dict found (expected a dict of tensors, or one under 'model_state', "
                              "'state_dict' or 'model')")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """``"motionformer"`` (ORViT: has ``pre_logits.fc``) or ``"avion"`` (a visual tower under ``orvit.``)."""
    if "pre_logits.fc.weight" in state_dict:
        return "motionformer"
    if any(k.startswith("orvit.") for k in state_dict):
        return "avion"
    raise ConversionError(
        "cannot tell the backbone: neither 'pre_logits.fc.weight' (Motionformer / ORViT) nor keys under 'orvit.' "
        "(AVION) are present; pass --layout"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Conversion


def _require(state_dict: dict[str, torch.Tensor], key: str, ndim: int) -> torch.Tensor:
    if key not in state_dict:
        raise ConversionError(f"key {key!r} is missing: not a checkpoint of the authors' Mamba fusion model")
    tensor = state_dict[key]
    if tensor.ndim != ndim:
        raise ConversionError(f"key {key!r}: expected a {ndim}-d tensor, got shape {tuple(tensor.shape)}")
    return tensor


def _text_config(state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """RoBERTa shapes read from the checkpoint's embeddings (no layers: only the embeddings run)."""
    words = _require(state_dict, "text_model.embeddings.word_embeddings.weight", 2)
    positions = _require(state_dict, "text_model.embeddings.position_embeddings.weight", 2)
    types = state_dict.get("text_model.embeddings.token_type_embeddings.weight")
    width = words.shape[1]
    heads = next(h for h in (12, 8, 4, 2, 1) if width % h == 0)
    return {
        **roberta_base_text_config(num_hidden_layers=0),
        "vocab_size": words.shape[0],
        "hidden_size": width,
        "num_attention_heads": heads,
        "intermediate_size": 4 * width,
        "max_position_embeddings": positions.shape[0],
        "type_vocab_size": types.shape[0] if types is not None else 1,
    }


def _config(state_dict: dict[str, torch.Tensor], layout: str, default_questions: dict | None) -> MambaVLConfig:
    verb_head = _require(state_dict, "head0.weight", 2)
    noun_head = _require(state_dict, "head1.weight", 2)
    A_log = _require(state_dict, "A_log", 2)
    x_proj = _require(state_dict, "mamba_video.x_proj.weight", 2)
    dt_proj = _require(state_dict, "mamba_video.dt_proj.weight", 2)
    conv = _require(state_dict, "mamba_video.conv1d.weight", 3)
    hidden = verb_head.shape[1]
    d_inner, state_size = A_log.shape
    if d_inner % hidden:
        raise ConversionError(f"key 'A_log': d_inner {d_inner} is not a multiple of the heads' width {hidden}")
    dt_rank = dt_proj.shape[1]
    if x_proj.shape[0] != dt_rank + 2 * state_size:
        raise ConversionError(f"key 'mamba_video.x_proj.weight': {x_proj.shape[0]} rows, expected dt_rank + 2N = "
                              f"{dt_rank + 2 * state_size}")
    if layout == "motionformer":
        feature_dim = _require(state_dict, "norm.weight", 1).shape[0]
        adapter = {"vision_adapter": "norm_linear_tanh", "layer_norm_eps": 1e-6}  # Motionformer: LayerNorm eps 1e-6
    else:
        feature_dim = hidden
        adapter = {"vision_adapter": "identity"}
    return MambaVLConfig(
        vision_config=None,
        vision_feature_dim=feature_dim,
        video_has_cls=True,
        video_token_order="thw",
        hidden_size=hidden,
        state_size=state_size,
        expand=d_inner // hidden,
        conv_kernel=conv.shape[-1],
        time_step_rank="auto" if dt_rank == math.ceil(hidden / 16) else dt_rank,
        text_config=_text_config(state_dict),
        text_encoder="embeddings",
        # The authors left RoBERTa in train mode: its embedding dropout (0.1) was active while training.
        text_embedding_dropout=0.1,
        fusion_type="ssm",
        num_fusion_layers=1,
        share_state_matrix=True,
        question_pooling="include_padding",
        num_verb_classes=verb_head.shape[0],
        num_noun_classes=noun_head.shape[0],
        num_frames=16,
        image_size=224,
        label_smoothing=0.1,
        **_FRAME_SETTINGS[layout],
        **adapter,
        **(default_questions or {}),
    )


def convert_state_dict(
    state_dict: dict[str, torch.Tensor], layout: str = "auto", default_questions: dict | None = None
) -> Conversion:
    """Map an authors' state dict onto ``MambaVLForVideoClassification`` (see the module docstring).

    Raises :class:`ConversionError` for checkpoints of other fusions, missing keys or wrong shapes.
    """
    if layout == "auto":
        layout = detect_layout(state_dict)
    if layout not in LAYOUTS:
        raise ConversionError(f"layout {layout!r}: expected one of {LAYOUTS} or 'auto'")
    for key in state_dict:
        for pattern, why in _UNSUPPORTED:
            if pattern.search(key):
                raise ConversionError(f"key {key!r}: {why}")
    config = _config(state_dict, layout, default_questions)
    rules = _RULES + (_MOTIONFORMER_RULES if layout == "motionformer" else [])
    conversion = Conversion(layout=layout, config=config, state_dict={})
    for key, tensor in state_dict.items():
        target = next((pattern.sub(repl, key) for pattern, repl in rules if pattern.search(key)), None)
        if target is not None:
            conversion.state_dict[target] = tensor
            conversion.mapping[key] = target
        elif _BACKBONE[layout].search(key):
            conversion.backbone_state_dict[key] = tensor
        elif (why := next((w for p, w in _DROPPED if p.search(key)), None)) is not None:
            conversion.dropped[key] = why
        else:
            conversion.unmapped.append(key)
    # Keys the rules produced that this model does not hold (e.g. a buffer transformers no longer saves).
    with torch.device("meta"):  # shapes only
        expected = MambaVLForVideoClassification(config).state_dict()
    for source, target in list(conversion.mapping.items()):
        if target not in expected:
            conversion.dropped[source] = f"maps to {target}, which this model does not have"
            del conversion.mapping[source], conversion.state_dict[target]
        elif tuple(expected[target].shape) != tuple(conversion.state_dict[target].shape):
            raise ConversionError(
                f"key {source!r}: shape {tuple(conversion.state_dict[target].shape)} does not fit {target} "
                f"{tuple(expected[target].shape)}"
            )
    # The pooler never runs (embeddings only); everything else must come from the checkpoint.
    missing = [k for k in expected if k not in conversion.state_dict and ".text_model.pooler." not in k]
    if missing:
        raise ConversionError(f"the checkpoint has no weights for {len(missing)} parameter(s) of the model, e.g. "
                              f"{missing[:5]}; is it a complete authors' Mamba fusion checkpoint?")
    return conversion


def _processor(tokenizer_path: str | os.PathLike, layout: str):
    from transformers import AutoTokenizer

    from modeling_mambavl import MambaVLProcessor, MambaVLVideoProcessor

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    frames = _FRAME_SETTINGS[layout]
    video = MambaVLVideoProcessor(num_frames=16, **frames,
                                  **({"sampling": "dense", "stride": 4} if layout == "motionformer" else {}))
    return MambaVLProcessor(video, tokenizer, max_length=QUESTION_LENGTH)


def convert_checkpoint(
    checkpoint: str | os.PathLike,
    output_dir: str | os.PathLike,
    layout: str = "auto",
    tokenizer: str | os.PathLike | None = None,
    trust_pickle: bool = False,
    strict: bool = False,
) -> Conversion:
    """Convert ``checkpoint`` and write the model (``save_pretrained``), the backbone keys, the report and, with a
    ``tokenizer`` folder, a processor whose default questions are padded to 40 tokens."""
    state_dict = load_authors_state_dict(checkpoint, trust_pickle=trust_pickle)
    processor = None
    default_questions = None
    if tokenizer is not None:
        processor = _processor(tokenizer, layout if layout != "auto" else detect_layout(state_dict))
        default_questions = processor.default_question_inputs()
    conversion = convert_state_dict(state_dict, layout=layout, default_questions=default_questions)
    if strict and conversion.unmapped:
        raise ConversionError(f"{checkpoint}: {len(conversion.unmapped)} unmapped key(s): {conversion.unmapped}")
    model = MambaVLForVideoClassification(conversion.config)
    result = model.load_state_dict(conversion.state_dict, strict=False)
    unexpected = list(result.unexpected_keys)
    if unexpected:  # convert_state_dict checked the targets: this would be a bug here
        raise ConversionError(f"unexpected keys after mapping: {unexpected}")
    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    if processor is not None:
        processor.save_pretrained(output_dir)
    if conversion.backbone_state_dict:
        from safetensors.torch import save_file

        backbone = {k: v.contiguous() for k, v in conversion.backbone_state_dict.items()}
        save_file(backbone, str(output_dir / BACKBONE_FILE), metadata={"layout": conversion.layout})
    (output_dir / REPORT_FILE).write_text(json.dumps(conversion.report(), indent=1), encoding="utf-8")
    return conversion


def _print_report(conversion: Conversion, output_dir: Path) -> None:
    print(f"layout: {conversion.layout}")
    print(f"mapped: {len(conversion.mapping)} keys")
    print(f"backbone: {len(conversion.backbone_state_dict)} keys written as they come to {output_dir / BACKBONE_FILE}")
    print(f"dropped on purpose: {len(conversion.dropped)} keys")
    reasons: dict[str, int] = {}
    for why in conversion.dropped.values():
        reasons[why] = reasons.get(why, 0) + 1
    for why, count in reasons.items():
        print(f"  {count:5d}  {why}")
    print(f"unmapped: {len(conversion.unmapped)} keys")
    for key in conversion.unmapped:
        print(f"  {key}")
    print(f"saved MambaVLForVideoClassification (question_pooling='include_padding') to {output_dir}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="the authors' .pyth / .pth file")
    parser.add_argument("--output_dir", required=True, help="folder to write the converted checkpoint to")
    parser.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS),
                        help="the checkpoint's model (auto: recognised from its keys)")
    parser.add_argument("--tokenizer", default=None,
                        help="a local RoBERTa-base tokenizer folder: also save a processor (questions padded to 40)")
    parser.add_argument("--trust_pickle", action="store_true",
                        help="unpickle the checkpoint fully (only for files you trust)")
    parser.add_argument("--strict", action="store_true", help="fail when a key is unmapped")
    finish_parser(parser)  # --debug; refuses an option without help
    args = parser.parse_args(argv)
    try:
        conversion = convert_checkpoint(args.checkpoint, args.output_dir, layout=args.layout, tokenizer=args.tokenizer,
                                        trust_pickle=args.trust_pickle, strict=args.strict)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _print_report(conversion, Path(args.output_dir))
    return 0


if __name__ == "__main__":
    from modeling_mambavl.cli import run_main

    sys.exit(run_main(main, "convert_authors_checkpoint.py"))
