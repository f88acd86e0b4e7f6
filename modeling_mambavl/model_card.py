"""Model cards for MambaVL checkpoints, built with ``huggingface_hub``'s ``ModelCard``, ``ModelCardData`` and
``EvalResult`` from a model (or its config), its last evaluation (``metrics.json``) and an optional example clip.

The YAML metadata carries the licence (CC BY-NC 4.0 for EK100-trained weights), ``library_name``,
``pipeline_tag: video-classification``, tags, ``datasets`` (Hub dataset ids only: EPIC-KITCHENS-100 is not hosted on
the Hub, so it is named in ``model-index`` and the text, never listed there), base models, a ``widget`` (an example
video with a static ``output`` block of the model's own top-5 on it) and a ``model-index`` holding the metrics of
``metrics.json`` that have a value: finite percentages only. Counts (clips, tail and unseen subset sizes) and the
metrics of empty subsets (``null`` in ``metrics.json``) are written in the text. The body explains the model, links the
paper and the code, says how to install the package from its repository, gives usage code, the training setup and
results, the limitations (the question-source caveat), the demo Space and the paper's citation.

One card writer: :func:`make_model_card`. ``modeling_mambavl.hub.push_to_hub``, ``mambavl card`` and a model's own
``push_to_hub()`` all write its output.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = ["make_model_card", "load_metrics", "metrics_json_text", "split_metrics", "code_url", "CITATION",
           "EK100_LICENSE", "PAPER_URL"]

EK100_LICENSE = "cc-by-nc-4.0"
EK100_DATASETS = ("epic-kitchens-100", "synthetic-ek100")
# Data sets that are hosted on the Hub under these ids (the card's `datasets:` lists only those).
HUB_DATASETS: frozenset[str] = frozenset()
DEFAULT_SPACE = "mambavl/mambavl-demo"
PAPER_URL = "https://arxiv.org/abs/2409.11513"
EK100_URL = "https://epic-kitchens.github.io/"
CITATION = """@inproceedings{dong2025mambafusion,
  title     = {Mamba Fusion: Learning Actions Through Questioning},
  author    = {Dong, Zhikang and Beedu, Apoorva and Sheinkopf, Jason and Essa, Irfan},
  booktitle = {IEEE International Conference on Acoustics, Speech and Signal Processing (ICASSP)},
  year      = {2025},
  eprint    = {2409.11513},
  archivePrefix = {arXiv}
}"""
TAGS = ("mambavl", "video-classification", "action-recognition", "egocentric", "epic-kitchens", "mamba",
        "state-space-model", "video-question-answering", "custom_code")
_DATASET_NAMES = {"epic-kitchens-100": "EPIC-KITCHENS-100", "synthetic-ek100": "Synthetic EK100-format data"}
_TASK_NAMES = {"recognition": "Action recognition", "anticipation": "Action anticipation"}
_QUESTION_SOURCES = ("generic", "file", "predicted", "oracle")
ORACLE_LABEL = "ORACLE QUESTIONS"
# EK100Metric's subset sizes: counts, not metrics (never in model-index).
_COUNT_PREFIX = "num_"


def split_metrics(values: Mapping[str, Any]) -> tuple[dict[str, float | None], dict[str, int]]:
    """Split an ``EK100Metric`` result into (metrics, counts).

    Metrics are percentages; a metric of an empty subset (NaN from the metric) becomes ``None`` (``null`` in JSON, so
    that ``metrics.json`` stays strict JSON and the Hub never reads ``.nan``). Counts are the ``num_*`` entries
    (``num_examples``, ``num_tail_verb``, ``num_unseen``, ...). Anything else (the action rule, ...) is left out.
    """
    metrics: dict[str, float | None] = {}
    counts: dict[str, int] = {}
    for key, value in values.items():
        value = value.item() if hasattr(value, "item") else value  # numpy / torch scalars
        if isinstance(value, bool) or not (value is None or isinstance(value, (int, float))):
            continue
        if key.startswith(_COUNT_PREFIX):
            counts[key] = int(value)
        else:
            metrics[key] = None if value is None or not math.isfinite(float(value)) else float(value)
    return metrics, counts


def metrics_json_text(document: Mapping[str, Any]) -> str:
    """The text of a ``metrics.json`` document (``training.evaluation.metrics_payload``, or one read back by
    :func:`load_metrics`): strict JSON, so a ``NaN`` or infinity left in it raises ``ValueError`` instead of being
    written as a constant JSON readers (and the Hub) refuse; numpy scalars and arrays are written as numbers."""
    return json.dumps(document, indent=2, allow_nan=False, default=_json_default) + "\n"


def _json_default(x: Any) -> Any:
    if hasattr(x, "tolist"):  # numpy scalars and arrays
        return x.tolist()
    return str(x)


def load_metrics(metrics: str | os.PathLike | Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Read and check a ``metrics.json`` (a path, a checkpoint folder holding one, or its parsed dict).

    Raises ``ValueError`` naming the file and field when it breaks the metrics.json contract (``task``, ``split``,
    ``dataset``, ``question_source``, ``metrics``; ``label: ORACLE QUESTIONS`` with oracle questions). A metric may be
    ``null`` (an empty subset). Files written before that contract are read too: a NaN metric is read as ``null`` and
    ``num_*`` counts found among the metrics move to ``counts``.
    """
    if metrics is None:
        return None
    source = "metrics"
    if not isinstance(metrics, Mapping):
        path = Path(metrics)
        if path.is_dir():
            path = path / "metrics.json"
        source = str(path)
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise ValueError(f"{source}: no metrics.json there (written by examples/eval_ek100.py)") from e
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from e
    metrics = dict(metrics)
    for key in ("task", "split", "dataset", "question_source", "metrics"):
        if key not in metrics:
            raise ValueError(f"{source}: field {key!r} is missing (see the metrics.json contract)")
    if metrics["task"] not in _TASK_NAMES:
        raise ValueError(f"{source}: task {metrics['task']!r} is not 'recognition' or 'anticipation'")
    if metrics["question_source"] not in _QUESTION_SOURCES:
        raise ValueError(f"{source}: question_source {metrics['question_source']!r} is not one of {_QUESTION_SOURCES}")
    if metrics["question_source"] == "oracle" and metrics.get("label") != ORACLE_LABEL:
        raise ValueError(f"{source}: oracle-question metrics must carry label {ORACLE_LABEL!r}")
    values = metrics["metrics"]
    if not isinstance(values, Mapping) or not values:
        raise ValueError(f"{source}: field 'metrics' must be a non-empty mapping of metric name -> number")
    for name, value in values.items():
        if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)):
            raise ValueError(f"{source}: metrics[{name!r}] = {value!r} is not a number or null")
    values, counts = split_metrics(values)
    if not values:
        raise ValueError(f"{source}: field 'metrics' holds only counts; it needs at least one metric")
    metrics["metrics"] = values
    counts.update({k: int(v) for k, v in dict(metrics.get("counts") or {}).items()})
    if counts:
        metrics["counts"] = counts
    return metrics


def _metric_title(key: str) -> str:
    """``all_verb_top1`` -> ``verb top-1 (all)``; ``tail_action_mt5r`` -> ``action mean top-5 recall (tail)``."""
    parts = key.split("_")
    if len(parts) == 3 and parts[0] in ("all", "tail", "unseen"):
        subset, target, kind = parts
        kind = {"top1": "top-1", "top5": "top-5", "mt5r": "mean top-5 recall"}.get(kind, kind)
        return f"{target} {kind} ({subset})"
    return key.replace("_", " ")


def _is_ek100_label_space(config: Any) -> bool:
    return (getattr(config, "num_verb_classes", None), getattr(config, "num_noun_classes", None)) == (97, 300)


def _base_models(config: Any) -> list[str]:
    """Hub ids of the pretrained backbones the model was built from (``from_backbones`` records them)."""
    names = []
    for sub in (getattr(config, "vision_config", None), getattr(config, "text_config", None)):
        name = getattr(sub, "_name_or_path", "") or ""
        if name.count("/") == 1 and not os.path.exists(name) and not name.startswith((".", "/")):
            names.append(name)
    return names


def _describe(config: Any, num_parameters: int | None) -> str:
    vision = getattr(config, "vision_config", None)
    vision_text = (f"a {getattr(vision, 'model_type', 'video')} backbone ({getattr(vision, 'hidden_size', '?')}-d "
                   f"tokens)" if vision is not None else
                   f"pre-extracted video tokens of width {getattr(config, 'vision_feature_dim', '?')}")
    text = getattr(config, "text_config", None)
    fusion = {
        "ssm": "a selective state-space (Mamba) block whose state matrix `A` is shared by a video mixer and a "
               "question mixer (the paper's SSM fusion)",
        "transformer": "the Transformer fuser baseline",
        "mlp": "the MLP fusion baseline",
        "none": "a video Mamba mixer alone (a question-free control)",
        "mean_mlp": "an MLP over the mean video token (a question-free control)",
    }.get(getattr(config, "fusion_type", ""), f"fusion `{getattr(config, 'fusion_type', '?')}`")
    lines = [
        f"- Video: {getattr(config, 'num_frames', '?')} frames through {vision_text}.",
        f"- Questions: one per type {tuple(getattr(config, 'question_types', ()))}, embedded by a "
        f"{getattr(text, 'model_type', 'text')} model ({getattr(config, 'text_encoder', '?')}).",
        f"- Fusion: {fusion}, width D = {getattr(config, 'hidden_size', '?')}.",
    ]
    if getattr(config, "question_types", None) == ("action",):
        lines.append(f"- Head: {getattr(config, 'num_labels', '?')} classes.")
    else:
        lines.append(f"- Heads: {getattr(config, 'num_verb_classes', '?')} verbs and "
                     f"{getattr(config, 'num_noun_classes', '?')} nouns; actions ({len(getattr(config, 'actions', []) or [])} "
                     "(verb, noun) pairs) are ranked by log p(verb) + log p(noun).")
    if num_parameters is not None:
        lines.append(f"- Parameters: {num_parameters / 1e6:.2f} M.")
    return "\n".join(lines)


def _results_section(metrics: dict[str, Any] | None) -> str:
    if metrics is None:
        return ("No evaluation has been recorded for this checkpoint yet (no `metrics.json`). Evaluate it with "
                "`mambavl eval --model <this repo> --annotations <EK100 annotations> --media-root <media>`.")
    oracle = metrics["question_source"] == "oracle"
    header = [
        f"**{ORACLE_LABEL}** — these numbers use questions built from the ground-truth narrations; they are an upper "
        "bound, not a result.\n" if oracle else "",
        f"- Task: {_TASK_NAMES[metrics['task']].lower()}; dataset: {_DATASET_NAMES.get(metrics['dataset'], metrics['dataset'])}"
        f" ({metrics['split']} split).",
        f"- Question source: `{metrics['question_source']}`.",
    ]
    if "num_clips" in metrics:
        header.append(f"- Clips: {metrics.get('num_clips_scored', metrics['num_clips'])} scored of "
                      f"{metrics['num_clips']}.")
    if metrics.get("counts"):
        header.append("- Counts: " + ", ".join(f"{k.removeprefix(_COUNT_PREFIX).replace('_', ' ')} {v:,}"
                                                for k, v in metrics["counts"].items()) + ".")
    if "epoch" in metrics or "global_step" in metrics:
        header.append(f"- Checkpoint: epoch {metrics.get('epoch', '?')}, step {metrics.get('global_step', '?')}.")
    rows = ["| metric | value |", "| --- | ---: |"]
    rows += [f"| {_metric_title(k)} | {'—' if v is None else f'{v:.2f}'} |" for k, v in metrics["metrics"].items()]
    empty = [k for k, v in metrics["metrics"].items() if v is None]
    notes = [f"\n— : no clip of the split falls in that subset ({len(empty)} of {len(metrics['metrics'])} metrics); "
             "it is left out of the metadata."] if empty else []
    return "\n".join([h for h in header if h] + ["", *rows, *notes])


def code_url() -> str | None:
    """The MambaVL repository's address, as the installed distribution declares it (``project_urls`` / ``url`` of
    setup.cfg); ``None`` when it declares none."""
    import importlib.metadata as md

    try:
        meta = md.metadata("mambavl")
    except md.PackageNotFoundError:
        return None
    for entry in meta.get_all("Project-URL") or []:
        label, _, url = entry.partition(",")
        if label.strip().lower() in ("source", "code", "repository", "homepage") and url.strip():
            return url.strip()
    home = meta.get("Home-page")
    return home if home and home != "UNKNOWN" else None


def _code_link(repo_id: str) -> str:
    url = code_url()
    bundled = (f"the model's own code comes with this checkpoint ([`modeling_mamba_vl.py`](https://huggingface.co/"
               f"{repo_id}/blob/main/modeling_mamba_vl.py) and its siblings, loaded with `trust_remote_code=True`)")
    if url:
        return f"[the MambaVL repository]({url}) (training, evaluation, the command line, the demo Space); {bundled}."
    return f"the MambaVL repository (training, evaluation, the command line, the demo Space); {bundled}."


def _installation() -> str:
    url = code_url()
    clone = f"git clone {url} mambavl && cd mambavl" if url else "cd mambavl   # a checkout of the MambaVL repository"
    return f"""Loading the model needs only `transformers`, `torch`, `torchvision` and `av` (its code comes with the
checkpoint). The MambaVL package (fast CPU kernels, the question-aware pipeline, the `mambavl` command, training and
evaluation scripts) is installed from its repository; it is not published on PyPI:

```bash
{clone}
pip install -e .
```"""


def _usage(repo_id: str, config: Any) -> str:
    types = tuple(getattr(config, "question_types", ("verb", "noun")))
    example_questions = {"verb": "What is the person doing with the knife?", "noun": "What is being cut?",
                         "action": "What is happening in the video?"}
    questions = ", ".join(repr(example_questions.get(t, "What happens?")) for t in types)
    return f"""With only `transformers`, `torch`, `torchvision` and `av` installed (the model's code comes with the checkpoint):

```python
import torch
from transformers import AutoModelForVideoClassification, AutoProcessor, pipeline

model = AutoModelForVideoClassification.from_pretrained("{repo_id}", trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained("{repo_id}", trust_remote_code=True)

# The model's default (generic) questions:
inputs = processor(videos=["clip.mp4"], return_tensors="pt")
# ... or your own, one per question type {types}:
inputs = processor(videos=["clip.mp4"], questions=[{questions}], return_tensors="pt")
with torch.no_grad():
    outputs = model(**inputs)
top5 = outputs.logits[0].softmax(-1).topk(5)
print([model.config.id2label[i] for i in top5.indices.tolist()])

classifier = pipeline("video-classification", model="{repo_id}", trust_remote_code=True)
print(classifier("clip.mp4", top_k=5))  # [{{"label": "take plate", "score": ...}}, ...]
```

With the MambaVL package installed (from a checkout of its repository: `pip install -e .`; see
[Installation](#installation)), the question-aware pipeline and the command line:

```python
import modeling_mambavl  # registers the model, the processors and the pipeline task
from transformers import pipeline

vqc = pipeline("video-question-classification", model="{repo_id}")
print(vqc("clip.mp4", questions=[{questions}], top_k=5))  # {{"verbs": [...], "nouns": [...], "actions": [...]}}
```

```bash
mambavl predict clip.mp4 --model {repo_id} --top-k 5
```"""


def make_model_card(
    model_or_config: Any,
    metrics: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    repo_id: str = "<namespace>/<model-name>",
    model_name: str | None = None,
    license: str | None = None,  # noqa: A002 (the card field's name)
    datasets: Sequence[str] | None = None,
    base_models: Sequence[str] | None = None,
    example_video_url: str | None = None,
    example_output: Sequence[Mapping[str, Any]] | None = None,
    space_id: str | None = DEFAULT_SPACE,
    training_notes: str | None = None,
) -> ModelCard:
    """The model card of a MambaVL checkpoint.

    Args:
        model_or_config: the model (its parameter count is reported) or its ``MambaVLConfig``.
        metrics: the checkpoint's ``metrics.json`` (path, folder or dict; see :func:`load_metrics`), or ``None``.
        repo_id: the repository the usage code loads from.
        model_name: the card's title and ``model-index`` name (default: the repository name).
        license: default ``cc-by-nc-4.0`` when the weights were trained or evaluated on EK100 or use its label
            space, else ``"other"`` (set it to your data's licence).
        datasets, base_models: card metadata (default: from ``metrics`` and the backbones' Hub ids).
        example_video_url, example_output: the widget's example clip and the model's predictions on it (a list of
            ``{"label", "score"}``; a static ``output`` block, so the Hub shows it without running the model).
        space_id: the demo Space linked from the card (``None``: no link).
        training_notes: extra Markdown for the training section (recipe, hardware, time).
    """
    config = getattr(model_or_config, "config", model_or_config)
    num_parameters = model_or_config.num_parameters() if hasattr(model_or_config, "num_parameters") else None
    metrics = load_metrics(metrics)
    name = model_name or repo_id.split("/")[-1]
    dataset = metrics["dataset"] if metrics else None
    if license is None:
        license = EK100_LICENSE if dataset in EK100_DATASETS or _is_ek100_label_space(config) else "other"
    if datasets is None:
        datasets = [dataset] if dataset in HUB_DATASETS else []
    base = list(base_models) if base_models is not None else _base_models(config)

    eval_results = None
    if metrics:
        source = metrics["question_source"]
        suffix = f", {ORACLE_LABEL}" if source == "oracle" else f", {source} questions"
        eval_results = [
            EvalResult(
                task_type="video-classification",
                task_name=_TASK_NAMES[metrics["task"]],
                dataset_type=metrics["dataset"],
                dataset_name=_DATASET_NAMES.get(metrics["dataset"], metrics["dataset"]),
                dataset_split=metrics["split"],
                metric_type=key,
                metric_name=_metric_title(key) + suffix,
                metric_value=value,
                metric_config=f"question_source={source}",
                metric_args={"question_source": source, **({"label": ORACLE_LABEL} if source == "oracle" else {})},
            )
            for key, value in metrics["metrics"].items() if value is not None
        ] or None
    widget = None
    if example_video_url is not None:
        entry: dict[str, Any] = {"src": example_video_url, "example_title": "Example clip"}
        if example_output is not None:
            entry["output"] = [{"label": str(o["label"]), "score": round(float(o["score"]), 4)} for o in example_output]
        widget = [entry]
    # The Hub asks a licence "other" to be named; the weights then follow the licence of the user's data.
    other = {"license_name": "training-data-licence"} if license == "other" else {}
    card_data = ModelCardData(
        language="en",
        license=license,
        **other,
        library_name="transformers",
        pipeline_tag="video-classification",
        tags=list(TAGS) + (["oracle-questions"] if metrics and metrics["question_source"] == "oracle" else []),
        datasets=list(datasets) or None,
        base_model=base or None,
        model_name=name,
        eval_results=eval_results,
        widget=widget,
    )

    licence_note = ("The weights were trained on EPIC-KITCHENS-100 (or use its label space), which is licensed "
                    "CC BY-NC 4.0: non-commercial use only, with attribution to the EPIC-KITCHENS authors."
                    if license == EK100_LICENSE else f"Licence: `{license}`.")
    demo = (f"Try it in the demo Space: [{space_id}](https://huggingface.co/spaces/{space_id}) — upload a clip, "
            "optionally type the questions, and see the sampled frames and the top-5 verbs, nouns and actions. The "
            "Space's code is `examples/space/` of the MambaVL repository (`python examples/space/app.py "
            f"--model {repo_id}` runs it locally)." if space_id else
            f"Run the demo locally: `python examples/space/app.py --model {repo_id}`.")
    body = f"""
# {name}

MambaVL recognises actions in egocentric video by *questioning*: the clip's tokens and tokenized questions (a verb
question and a noun question) are fused by a selective state-space (Mamba) block whose state matrix `A` is shared by
both modalities ("Mamba Fusion: Learning Actions Through Questioning", ICASSP 2025). It predicts EPIC-KITCHENS-100
verbs and nouns, and ranks actions (verb, noun pairs).

{_describe(config, num_parameters)}

- Paper: [Mamba Fusion: Learning Actions Through Questioning]({PAPER_URL}) (Dong, Beedu, Sheinkopf, Essa; ICASSP
  2025).
- Code: {_code_link(repo_id)}
- Data: [EPIC-KITCHENS-100]({EK100_URL}) (not hosted on the Hugging Face Hub; CC BY-NC 4.0).

## Installation

{_installation()}

## Usage

{_usage(repo_id, config)}

Questions: without `questions=`, the model uses its default questions (stored in `config.json` as
`default_question_input_ids`, the same as the processor's defaults). A question of each type is one string; the
processor pads them on the right.

## Training and results

{training_notes.strip() + chr(10) + chr(10) if training_notes else ""}{_results_section(metrics)}

## Limitations

- **Question source.** With the fixed *generic* questions (the default, and all a video alone allows) the question
  branch adds the same vector to every clip: a constant per head, so such a model is a video model with a bias;
  compare it with the `fusion_type="none"` control. *Oracle* questions are built from the ground-truth narration
  and leak the labels (masking removes the answer words but not all context): results under them are marked
  `{ORACLE_LABEL}` and are never results. *Predicted* questions (from a first-stage model's top-k actions) and
  label-free question *files* are the honest sources.
- Closed vocabulary: {getattr(config, 'num_verb_classes', '?')} verbs, {getattr(config, 'num_noun_classes', '?')} nouns and
  the actions listed in `config.actions`; kitchens seen from a head-mounted camera. Other domains need fine-tuning.
- {licence_note}

## Demo

{demo}

## Citation

```bibtex
{CITATION}
```
"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{body}")
