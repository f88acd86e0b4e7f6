"""examples/extract_features.py on a small synthetic EK100 set: stored tokens equal the backbone's output (in the
model's canonical order) on the frames training would sample, the folder reads back through load_ek100, a killed run
resumes, user callables and training views, and a real two-process run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.scripts import EXAMPLES, import_script
from helpers.synthetic_files import small_frames_set
from helpers.train_run import two_cpu_processes

from modeling_mambavl import MambaVLVideoProcessor
from modeling_mambavl.ek100 import EK100FeatureReader, EK100FeatureWriter, load_ek100, set_ek100_epoch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = EXAMPLES / "extract_features.py"
VISION = {"image_size": 32, "patch_size": 16, "num_frames": 4, "hidden_size": 16, "num_hidden_layers": 1,
          "num_attention_heads": 2, "intermediate_size": 32}


@pytest.fixture(scope="module")
def extract():
    yield from import_script(SCRIPT, "extract_features")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ek100")
    synthetic = small_frames_set(root / "syn", clips_per_video=6, size=64)
    from transformers import TimesformerConfig, TimesformerModel, VideoMAEConfig, VideoMAEModel

    torch.manual_seed(0)
    VideoMAEModel(VideoMAEConfig(**VISION, tubelet_size=2)).save_pretrained(root / "videomae")
    TimesformerModel(TimesformerConfig(**VISION)).save_pretrained(root / "timesformer")
    return synthetic, root


def _args(synthetic, backbone, out, *extra):
    return ["--annotations_dir", str(synthetic.annotations_dir), "--split", "validation", "--media_root",
            str(synthetic.media_root), "--backbone", str(backbone), "--output_dir", str(out), "--batch_size", "3",
            "--shard_size", "2", *extra]


def _frames(synthetic, narration_ids, training=False, epoch=0, **processor_kwargs):
    """pixel_values of the given narrations, sampled and normalised independently of the script."""
    processor = MambaVLVideoProcessor(num_frames=4, size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                      **processor_kwargs)
    ds = load_ek100(synthetic.annotations_dir, "validation", synthetic.media_root, processor=processor, num_frames=4,
                    training=training)
    set_ek100_epoch(ds, epoch)
    rows = list(load_ek100(synthetic.annotations_dir, "validation")["narration_id"])
    return torch.stack([ds[rows.index(n)]["pixel_values"] for n in narration_ids])


@pytest.mark.parametrize("backbone", ["videomae", "timesformer"])
def test_features_equal_the_backbone_output_in_canonical_order(extract, data, backbone, tmp_path):
    synthetic, root = data
    out = tmp_path / "features"
    assert extract.main(_args(synthetic, root / backbone, out)) == 0
    reader = EK100FeatureReader(out)
    index = json.loads((out / "index.json").read_text())
    has_cls = backbone == "timesformer"
    tokens = (1 if has_cls else 0) + (4 if has_cls else 2) * 2 * 2  # TimeSformer: one token per frame; VideoMAE: tubelets
    assert len(reader) == 12 and reader.shape == (tokens, 16) and reader.has_cls is has_cls
    assert index["token_order"] == "frame-major" and index["dtype"] == "float16" and index["task"] == "recognition"
    assert index["sampling"]["num_frames"] == 4 and index["sampling"]["sampling"] == "segment"
    assert index["processor"]["image_size"] == 32  # from the backbone's config (no processor saved)

    from transformers import AutoModel

    model = AutoModel.from_pretrained(root / backbone).eval()
    names = ["P32_01_0", "P01_02_3", list(reader)[5]]
    pixels = _frames(synthetic, names)
    with torch.no_grad():
        raw = model(pixel_values=pixels).last_hidden_state
    if has_cls:  # TimeSformer emits [CLS] + patch-major, time-minor tokens: (h, w, t) -> (t, h, w)
        patches = raw[:, 1:].reshape(3, 4, 4, 16).transpose(1, 2).reshape(3, 16, 16)
        expected = torch.cat([raw[:, :1], patches], dim=1)
        assert not torch.allclose(expected, raw, atol=1e-2)  # the re-ordering is not a no-op
    else:
        expected = raw
    stored = torch.stack([reader[n] for n in names]).float()
    torch.testing.assert_close(stored, expected, rtol=2e-3, atol=2e-3)  # fp16 storage
    assert (stored[0] - stored[1]).abs().max() > 1e-2  # different clips give different features

    # load_ek100 reads the folder; EK100FeatureWriter would have written an index with the same keys.
    ds = load_ek100(synthetic.annotations_dir, "validation", out, media="features")
    example = ds[0]
    assert torch.equal(example["video_features"], reader[example["narration_id"]].float())
    reference = EK100FeatureWriter(tmp_path / "reference", backbone="b", has_cls=False)
    reference.add("x", torch.zeros(2, 2))
    reference_index = json.loads(reference.close().read_text())
    assert set(index) == set(reference_index)
    assert (index["format"], index["format_version"]) == (reference_index["format"], reference_index["format_version"])


@pytest.mark.slow
def test_a_killed_run_resumes_where_it_stopped(extract, data, tmp_path):
    synthetic, root = data
    out = tmp_path / "features"
    env = {**os.environ, "MAMBAVL_FAULT": "after_step:2", "PYTHONPATH": str(REPO)}
    args = _args(synthetic, root / "videomae", out)
    args[args.index("--batch_size") + 1] = "2"
    killed = subprocess.run([sys.executable, str(SCRIPT), *args], env=env, capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (out / "index.json").exists()
    first = sorted(out.glob("shards/*/features-*.safetensors"))
    assert len(first) == 2  # 2 batches of 2 clips, shards of 2: two complete shards survive the kill
    # A shard cut short by a kill (here: half of a copy) is detected, deleted and its rows extracted again.
    partial = first[0].parent / "features-00099.safetensors"
    partial.write_bytes(first[0].read_bytes()[: first[0].stat().st_size // 2])
    assert extract.shard_narration_ids(partial) is None and len(extract.shard_narration_ids(first[0])) == 2

    assert extract.main(args) == 0
    assert not partial.exists()
    index = json.loads((out / "index.json").read_text())
    assert index["num_items"] == 12
    reused = {f.relative_to(out).as_posix() for f in first}
    assert reused <= set(index["shards"])  # the first run's rows were not extracted again
    assert sum(index["shards"][name] for name in reused) == 4

    clean = tmp_path / "clean"
    assert extract.main(args[:args.index("--output_dir") + 1] + [str(clean)] + args[args.index("--output_dir") + 2:]) == 0
    resumed, reference = EK100FeatureReader(out), EK100FeatureReader(clean)
    for narration_id in reference:
        torch.testing.assert_close(resumed[narration_id], reference[narration_id], rtol=0, atol=1e-3)
    # A complete folder is left alone.
    mtime = (out / "index.json").stat().st_mtime_ns
    assert extract.main(args) == 0 and (out / "index.json").stat().st_mtime_ns == mtime


BACKBONE_MODULE = '''
import torch

class FramePatches(torch.nn.Module):
    """A stand-in for a non-transformers backbone: [CLS = mean of everything] + one 2x2-pooled RGB token per frame
    and quadrant, frame-major."""

    has_cls = True
    image_size = 32

    def __init__(self, scale):
        super().__init__()
        self.scale = scale
        self.name = "frame-patches"

    def forward(self, pixel_values):
        b, t, c, h, w = pixel_values.shape
        quad = pixel_values.reshape(b, t, c, 2, h // 2, 2, w // 2).mean(dim=(4, 6))  # (b, t, c, 2, 2)
        tokens = quad.permute(0, 1, 3, 4, 2).reshape(b, t * 4, c) * self.scale
        return torch.cat([tokens.mean(dim=1, keepdim=True), tokens], dim=1)


def build(scale=1.0):
    return FramePatches(scale)
'''


def test_module_function_backbone_and_training_views(extract, data, tmp_path, monkeypatch):
    synthetic, _ = data
    (tmp_path / "my_backbones.py").write_text(BACKBONE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "features"
    args = _args(synthetic, "my_backbones:build", out, "--backbone_kwargs", '{"scale": 2.0}', "--num_frames", "4",
                 "--training", "--views", "2", "--rand_augment", "rand-m7-n4", "--image_mean", "0.5", "0.5", "0.5",
                 "--image_std", "0.5", "0.5", "0.5")
    assert extract.main(args) == 0
    views = [EK100FeatureReader(out / f"view-{k:02d}") for k in range(2)]
    assert all(v.has_cls and v.shape == (1 + 16, 3) and v.backbone == "frame-patches" for v in views)
    meta = views[1].metadata
    assert meta["sampling"]["training"] is True and meta["sampling"]["view"] == 1
    assert meta["processor"]["rand_augment"] == "rand-m7-n4" and meta["processor"]["image_mean"] == [0.5] * 3
    names = ["P01_02_1", "P32_01_2"]
    for k, view in enumerate(views):
        pixels = _frames(synthetic, names, training=True, epoch=k, rand_augment="rand-m7-n4", image_mean=[0.5] * 3,
                         image_std=[0.5] * 3)
        quad = pixels.reshape(2, 4, 3, 2, 16, 2, 16).mean(dim=(4, 6)).permute(0, 1, 3, 4, 2).reshape(2, 16, 3) * 2
        expected = torch.cat([quad.mean(dim=1, keepdim=True), quad], dim=1)
        torch.testing.assert_close(torch.stack([view[n] for n in names]).float(), expected, rtol=2e-3, atol=2e-3)
    # Two views of the same clip are two different random samples.
    assert (views[0]["P01_02_1"].float() - views[1]["P01_02_1"].float()).abs().max() > 1e-2


def test_argument_errors(extract, data, tmp_path):
    synthetic, root = data
    with pytest.raises(SystemExit):
        extract.parse_args(_args(synthetic, root / "videomae", tmp_path / "f", "--views", "2"))
    with pytest.raises(ValueError, match="no callable 'nope'"):
        extract.build_backbone("json:nope")
    with pytest.raises(ValueError, match="cannot import module 'no_such_module_xyz'"):
        extract.build_backbone("no_such_module_xyz:build")


@pytest.mark.slow
def test_two_processes_share_the_rows_and_the_main_process_writes_the_index(data, tmp_path):
    synthetic, root = data
    out = tmp_path / "features"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "ACCELERATE_USE_CPU": "true",
           "PYTHONPATH": str(REPO)}
    env.pop("MAMBAVL_FAULT", None)
    command = [*two_cpu_processes(), str(SCRIPT), *_args(synthetic, root / "videomae", out)]
    run = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "12 to go on 2 process(es)" in run.stdout
    index = json.loads((out / "index.json").read_text())
    ranks = {name.split("/")[1].split("-")[0] for name in index["shards"]}
    assert ranks == {"rank00000", "rank00001"} and index["num_items"] == 12
    per_rank = {r: sum(n for name, n in index["shards"].items() if f"/{r}-" in name) for r in ranks}
    assert per_rank == {"rank00000": 6, "rank00001": 6}


@pytest.mark.slow
def test_extracted_features_train_end_to_end(extract, train_script, data, tmp_path):
    """Both splits into one folder, then train_ek100.py --media features: the SSM model and the linear probe."""
    synthetic, root = data
    out = tmp_path / "features"
    args = _args(synthetic, root / "videomae", out)
    args[args.index("--split") + 1: args.index("--split") + 2] = ["train", "validation"]
    assert extract.main(args) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["num_items"] == 24 + 12 and index["sampling"]["splits"] == ["train", "validation"]
    common = ["--annotations_dir", str(synthetic.annotations_dir), "--media", "features", "--media_root", str(out),
              "--preset", "tiny", "--num_train_epochs", "1", "--per_device_train_batch_size", "8", "--num_workers",
              "0", "--no_plot", "--checkpointing_steps", "no"]
    ssm = train_script.main([*common, "--output_dir", str(tmp_path / "ssm"), "--config_overrides",
                             json.dumps({"vision_config": None, "vision_feature_dim": 16, "video_has_cls": False})])
    probe = train_script.main([*common, "--output_dir", str(tmp_path / "probe"), "--fusion_type", "linear_probe",
                               "--config_overrides", json.dumps({"vision_config": None, "vision_feature_dim": 16,
                                                                 "video_has_cls": False, "hidden_size": 16})])
    for run, summary in (("ssm", ssm), ("probe", probe)):
        metrics = json.loads((tmp_path / run / "train_summary.json").read_text())["final_metrics"]
        assert metrics["num_examples"] == 12 and 0.0 <= metrics["all_verb_top1"] <= 100.0, run
        assert summary is not None
    from modeling_mambavl import MambaVLForVideoClassification

    model = MambaVLForVideoClassification.from_pretrained(tmp_path / "probe" / "final_model")
    assert model.config.fusion_type == "linear_probe" and model.config.vision_feature_dim == 16
