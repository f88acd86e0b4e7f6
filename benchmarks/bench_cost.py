"""Parameter and FLOP / MAC cost of MambaVL's fusions at the paper's size, beside the poster's figures.

For one clip (1,569 video tokens of width D, two 40-token questions) this counts, per component, trainable and frozen
parameters and FLOPs with ``torch.utils.flop_counter.FlopCounterMode`` (MACs = FLOPs / 2: the fvcore convention of the
poster, where 1 MAC is reported as 1 "FLOP"). The selective scan is its own row: counted through its registered FLOP
formula when the scan runs as a custom op with one, otherwise analytically as 9·B·D·L·N FLOPs per call (said in the
row). Attention runs on the math SDPA backend so that its matmuls are counted.

The increment over the backbone is what the fusion adds to a video backbone that already outputs its tokens:

* SSM fusion: video LayerNorm + Linear + tanh, both mixers, the shared ``A_log``, the text MLP and the heads (the
  frozen text embeddings are parameters, but look-ups, not MACs);
* Transformer / MLP baselines: the Fuser or MLP, the text MLP, the heads, and the frozen full text model run over
  both questions (its MACs count; its parameters are reported as frozen).

Run: ``python benchmarks/bench_cost.py`` (about a minute or two on a CPU; writes ``benchmarks/results/cost.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections import defaultdict
from pathlib import Path

import torch
import transformers
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification
from modeling_mambavl.configuration import FUSION_TYPES

VIDEO_TOKENS = 1 + 8 * 14 * 14  # ORViT / Motionformer ViT-B: CLS + 8 x 14 x 14 tubelets
QUESTIONS, QUESTION_TOKENS = 2, 40
RESULTS = Path(__file__).resolve().parent / "results" / "cost.json"

# The poster (fvcore; 1 MAC reported as 1 FLOP): ORViT 405 G / 148M; + Transformer fusion 413.5 G / 242M;
# MambaVL 413.0 G / 157M. Increments over ORViT and the tolerance the project accepts.
POSTER = {
    "backbone_orvit": {"gmacs": 405.0, "params_m": 148.0},
    "ssm": {"gmacs": 413.0 - 405.0, "params_m": 157.0 - 148.0},
    "transformer": {"gmacs": 413.5 - 405.0, "params_m": 242.0 - 148.0},
}
TOLERANCE = 0.15

# Component of each module / parameter, by name prefix (first match wins).
_COMPONENTS = [
    ("mambavl.vision", "video adapter (LayerNorm + Linear + tanh)"),
    ("mambavl.questions.text_model", "text model (frozen)"),
    ("mambavl.questions.mlp", "text MLP"),
    ("video_mixer", "video mixer"),
    ("text_mixer", "text mixer"),
    ("A_log", "shared A_log"),
    ("mambavl.fusion", "fusion module"),
    ("verb_head", "heads"),
    ("noun_head", "heads"),
]
SCAN_ROW = "selective scan"
_INCREMENT = {
    "ssm": {"video adapter (LayerNorm + Linear + tanh)", "video mixer", "text mixer", "shared A_log", "text MLP",
            "heads", SCAN_ROW},
    "none": {"video adapter (LayerNorm + Linear + tanh)", "video mixer", "shared A_log", "heads", SCAN_ROW},
    "transformer": {"fusion module", "text MLP", "heads", "text model (frozen)"},
    "mlp": {"fusion module", "text MLP", "heads", "text model (frozen)"},
    "mean_mlp": {"video adapter (LayerNorm + Linear + tanh)", "fusion module", "heads"},
}


def _component(name: str) -> str | None:
    for key, label in _COMPONENTS:
        if key in name if not key.startswith("mambavl.") else name.startswith(key):
            return label
    return None


def _config(fusion_type: str, hidden_size: int, fuser_layers: int, fuser_heads: int) -> MambaVLConfig:
    preset = "features-768" if hidden_size == 768 else "features-1024"
    return MambaVLConfig.from_preset(preset, fusion_type=fusion_type, hidden_size=hidden_size,
                                     vision_feature_dim=hidden_size, fuser_layers=fuser_layers,
                                     fuser_heads=fuser_heads)


def measure(fusion_type: str, hidden_size: int = 768, fuser_layers: int = 12, fuser_heads: int = 12,
            video_tokens: int = VIDEO_TOKENS) -> dict:
    """Cost rows and the increment over the backbone of one fusion at one width."""
    torch.manual_seed(0)
    config = _config(fusion_type, hidden_size, fuser_layers, fuser_heads)
    model = MambaVLForVideoClassification(config).eval()
    rows: dict[str, dict] = defaultdict(lambda: {"trainable_params": 0, "frozen_params": 0, "flops": 0})
    for name, param in model.named_parameters():
        label = _component(name)
        if label is None:
            raise RuntimeError(f"bench_cost: parameter {name} belongs to no component")
        rows[label]["trainable_params" if param.requires_grad else "frozen_params"] += param.numel()

    inputs = {
        "video_features": torch.randn(1, video_tokens, hidden_size),
        "question_input_ids": torch.randint(5, 1000, (1, QUESTIONS, QUESTION_TOKENS)),
        "question_attention_mask": torch.ones(1, QUESTIONS, QUESTION_TOKENS, dtype=torch.long),
    }
    counter = FlopCounterMode(display=False)
    start = time.perf_counter()
    with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
        model(**inputs)
    seconds = time.perf_counter() - start

    # FlopCounterMode reports cumulative counts per module path (a parent includes its children); read each component
    # at its root module, and take the scan op (if it is a counted op) out of the mixers into its own row.
    counts = {key.split(".", 1)[1] if "." in key else key: {str(op): c for op, c in ops.items()}
              for key, ops in counter.get_flop_counts().items()}
    total = sum(counts.pop("Global", {}).values())

    def flops(path: str, scan: bool = False) -> int:
        return sum(c for op, c in counts.get(path, {}).items() if ("selective_scan" in op) == scan)

    mixers = {label: [p for p in counts if p.endswith(suffix)]
              for label, suffix in (("video mixer", "video_mixer"), ("text mixer", "text_mixer"))}
    roots = {
        "video adapter (LayerNorm + Linear + tanh)": ["mambavl.vision"],
        "text model (frozen)": ["mambavl.questions.text_model"],
        "text MLP": ["mambavl.questions.mlp"],
        "heads": ["verb_head", "noun_head"],
        **mixers,
    }
    for label, paths in roots.items():
        rows[label]["flops"] += sum(flops(p) for p in paths)
    scan_counted = sum(flops(p, scan=True) for paths in mixers.values() for p in paths)
    if scan_counted:
        rows[SCAN_ROW]["flops"] += scan_counted
    rows["fusion module"]["flops"] += (flops("mambavl.fusion") + flops("mambavl.fusion", scan=True)
                                       - sum(flops(p) + flops(p, scan=True) for ps in mixers.values() for p in ps))
    counted = sum(r["flops"] for r in rows.values())
    if counted != total:
        raise RuntimeError(f"bench_cost: components hold {counted} FLOPs of the {total} counted")
    scan_note = "FlopCounterMode (registered FLOP formula of the scan op)"
    if not scan_counted and config.fusion_type in ("ssm", "none"):
        d_inner, n = config.intermediate_size, config.state_size
        scan = 9 * 1 * d_inner * video_tokens * n * config.num_fusion_layers
        if config.fusion_type == "ssm":
            scan += 9 * QUESTIONS * d_inner * QUESTION_TOKENS * n * config.num_fusion_layers
        rows[SCAN_ROW]["flops"] = scan
        scan_note = "analytic 9·B·D·L·N (the reference scan is not a counted op yet)"

    table = []
    for label, row in rows.items():
        if not (row["flops"] or row["trainable_params"] or row["frozen_params"]):
            continue
        table.append({"component": label, **row, "macs": row["flops"] // 2,
                      "counted_with": scan_note if label == SCAN_ROW else "FlopCounterMode"})
    in_increment = _INCREMENT[config.fusion_type]
    increment = {
        "trainable_params": sum(r["trainable_params"] for r in table if r["component"] in in_increment),
        "frozen_params": sum(r["frozen_params"] for r in table if r["component"] in in_increment),
        "macs": sum(r["macs"] for r in table if r["component"] in in_increment),
        "components": sorted(in_increment & set(rows)),
    }
    result = {
        "fusion_type": config.fusion_type,
        "hidden_size": hidden_size,
        "fuser": f"{fuser_layers}x{fuser_heads}" if config.fusion_type == "transformer" else None,
        "video_tokens": video_tokens,
        "questions": f"{QUESTIONS} x {QUESTION_TOKENS} tokens",
        "rows": sorted(table, key=lambda r: r["component"]),
        "increment": {**increment, "gmacs": increment["macs"] / 1e9,
                      "trainable_params_m": increment["trainable_params"] / 1e6},
        "forward_seconds_cpu": round(seconds, 2),
    }
    poster = POSTER.get(config.fusion_type) if hidden_size == 768 and fuser_layers == fuser_heads == 12 else None
    if poster is not None:
        params_error = result["increment"]["trainable_params_m"] / poster["params_m"] - 1
        macs_error = result["increment"]["gmacs"] / poster["gmacs"] - 1
        result["poster_increment"] = poster
        result["relative_error"] = {"params": round(params_error, 4), "gmacs": round(macs_error, 4)}
        result["within_tolerance"] = abs(params_error) <= TOLERANCE and abs(macs_error) <= TOLERANCE
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--sizes", type=int, nargs="+", default=[768, 1024])
    parser.add_argument("--fusions", nargs="+", default=[t for t in FUSION_TYPES if t in _INCREMENT],
                        choices=list(_INCREMENT))
    args = parser.parse_args()
    results = []
    for size in args.sizes:
        for fusion in args.fusions:
            # 12 x 12 is the cost table's Fuser; 12 heads do not divide D = 1024, so 16 heads there.
            heads = 12 if size % 12 == 0 else 16
            result = measure(fusion, size, 12, heads)
            results.append(result)
            inc = result["increment"]
            verdict = {True: "  [within 15% of the poster]", False: "  [OUTSIDE 15% of the poster]"}.get(
                result.get("within_tolerance"), "")
            print(f"D={size:5d} {fusion:12s} +{inc['trainable_params_m']:7.2f}M trainable  "
                  f"+{inc['gmacs']:6.2f} GMACs{verdict}")
    payload = {
        "description": "MambaVL fusion cost per clip: 1,569 video tokens, two 40-token questions; MACs = FLOPs / 2",
        "poster": POSTER,
        "tolerance": TOLERANCE,
        "environment": {"torch": torch.__version__, "transformers": transformers.__version__,
                        "python": platform.python_version(), "machine": platform.machine()},
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
