"""Training-step throughput and peak memory: ``tiny`` end to end (pixels in, through the video backbone) and the
paper-size fusion on pre-extracted features (1,569 x 768 tokens, two 40-token questions).

    python benchmarks/bench_train.py                                   # both cases, batches 2 and 8 (CPU)
    python benchmarks/bench_train.py --cases features-768 --batches 4 --repeats 3
    python benchmarks/bench_train.py --device cuda --dtype bf16       # on a GPU, bf16 autocast
    python benchmarks/bench_train.py --cases features-768 features-768-speed features-768-memory   # mixer_recompute

One training step is what ``examples/train_ek100.py`` runs per batch: ``compute_loss`` (forward, the model's verb + noun
cross-entropy with the presets' label smoothing 0.1), ``backward``, ``AdamW.step`` over every parameter, ``zero_grad``. The model is
built from its preset with random weights (timings do not depend on them), in train mode, with the questions given as
token ids (two questions of 40 tokens, all real tokens). Data loading is not included (see ``bench_data.py``).

Each (case, batch) runs in a fresh subprocess so that its peak memory is its own: one warm-up step, then ``--repeats``
timed steps (``time.perf_counter``, ``torch.cuda.synchronize`` on a GPU); the median is reported, as clips/s =
batch / median. Memory: on the CPU the process's peak resident set (``ru_maxrss``) and its growth over the steps
(activations, gradients, optimizer state) above the resident set with model and batch built; on a GPU
``torch.cuda.max_memory_allocated``. Results: ``benchmarks/results/train.json``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = {
    # name: (preset, config overrides, input)
    "tiny": ("tiny", {}, "pixels"),
    "features-768": ("features-768", {}, "features"),
    # The fusion mixers recomputing in the backward (config mixer_recompute; BENCHMARKS.md "Recomputation").
    "features-768-speed": ("features-768", {"mixer_recompute": "speed"}, "features"),
    "features-768-memory": ("features-768", {"mixer_recompute": "memory"}, "features"),
}
FEATURE_TOKENS = 1569  # 1 CLS + 8 x 14 x 14 ViT-B/16 tokens over 16 frames
QUESTION_TOKENS = 40


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _one(case: str, batch: int, repeats: int, device: str, dtype: str, threads: int | None) -> dict:
    import torch

    from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification
    from modeling_mambavl.training.steps import compute_loss

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    preset, overrides, kind = CASES[case]
    config = MambaVLConfig.from_preset(preset, **overrides)
    model = MambaVLForVideoClassification(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    num_questions = len(config.question_types)
    vocab = config.text_config.vocab_size
    inputs = {
        "question_input_ids": torch.randint(5, vocab, (batch, num_questions, QUESTION_TOKENS), generator=g),
        "question_attention_mask": torch.ones(batch, num_questions, QUESTION_TOKENS, dtype=torch.long),
        "verb_labels": torch.randint(0, config.num_verb_classes, (batch,), generator=g),
        "noun_labels": torch.randint(0, config.num_noun_classes, (batch,), generator=g),
        "valid": torch.ones(batch, dtype=torch.bool),
    }
    if kind == "pixels":
        inputs["pixel_values"] = torch.randn(batch, config.num_frames, 3, config.image_size, config.image_size,
                                             generator=g)
    else:
        inputs["video_features"] = torch.randn(batch, FEATURE_TOKENS, config.vision_feature_dim, generator=g)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    cuda = device.startswith("cuda")
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step() -> float:
        with autocast:
            loss, _ = compute_loss(model, inputs, num_verbs=config.num_verb_classes,
                                   num_nouns=config.num_noun_classes)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss)

    built_mib = _rss_mib()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    step()
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    result = {
        "case": case, "preset": preset, "input": kind, "batch": batch, "dtype": dtype, "device": device,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "video_tokens": FEATURE_TOKENS if kind == "features" else None,
        "frames": config.num_frames if kind == "pixels" else None,
        "image_size": config.image_size if kind == "pixels" else None,
        "questions": [num_questions, QUESTION_TOKENS], "num_fusion_layers": config.num_fusion_layers,
        "fusion_type": config.fusion_type, "repeats": repeats, "step_seconds": times,
        "step_seconds_median": median, "clips_per_second": batch / median, "loss": loss,
        "threads": torch.get_num_threads(),
    }
    if cuda:
        result["peak_cuda_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    else:
        result["peak_rss_mib"] = _rss_mib()
        result["rss_growth_during_steps_mib"] = result["peak_rss_mib"] - built_mib
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=["tiny", "features-768"], choices=list(CASES))
    parser.add_argument("--batches", nargs="*", type=int, default=[2, 8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "train.json"))
    parser.add_argument("--one", nargs=2, metavar=("CASE", "BATCH"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_one(args.one[0], int(args.one[1]), args.repeats, args.device, args.dtype, args.threads)))
        return

    load_before = os.getloadavg()
    results = []
    for case in args.cases:
        for batch in args.batches:
            cmd = [sys.executable, __file__, "--one", case, str(batch), "--repeats", str(args.repeats), "--device",
                   args.device, "--dtype", args.dtype] + (["--threads", str(args.threads)] if args.threads else [])
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if proc.returncode != 0:
                raise RuntimeError(f"{case} batch {batch} failed:\n{proc.stderr[-3000:]}")
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            memory = (f"peak RSS {row['peak_rss_mib']:.0f} MiB (+{row['rss_growth_during_steps_mib']:.0f} in steps)"
                      if "peak_rss_mib" in row else f"peak CUDA {row['peak_cuda_allocated_mib']:.0f} MiB")
            print(f"{case:14s} batch {batch:2d}: {row['step_seconds_median']:.2f} s/step, "
                  f"{row['clips_per_second']:.2f} clips/s, {memory}", flush=True)
            results.append(row)
    import torch

    doc = {
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_train.py", *(argv or sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "cuda": torch.cuda.get_device_name() if args.device.startswith("cuda") else None},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "results": results,
    }
    Path(args.output).write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
