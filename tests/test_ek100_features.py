import json
import pickle

import pytest
import torch

from modeling_mambavl.ek100 import EK100FeatureReader, EK100FeatureWriter, load_ek100
from modeling_mambavl.ek100.annotations import LABELLED_COLUMNS

ROWS = [
    "P01_11_0,P01,P01_11,,00:00:00.00,00:00:01.89,1,113,take plate,take,0,plate,2,['plate'],[2]",
    "P01_11_1,P01,P01_11,,00:00:01.56,00:00:02.45,93,147,put down plate,put-down,1,plate,2,['plate'],[2]",
    "P02_03_0,P02,P02_03,,00:00:04.00,00:00:05.00,240,300,open tap,open,3,tap,0,['tap'],[0]",
]


def _annotations(tmp_path):
    folder = tmp_path / "annotations"
    folder.mkdir()
    (folder / "EPIC_100_validation.csv").write_text("\n".join([",".join(LABELLED_COLUMNS), *ROWS]) + "\n")
    return folder


def _write(root, items, task="recognition", shard_size=2):
    with EK100FeatureWriter(
        root, backbone="MCG-NJU/videomae-base", has_cls=True, task=task, shard_size=shard_size,
        sampling={"num_frames": 16, "sampling": "dense", "stride": 4, "target_fps": 30.0},
        processor={"size": 224, "image_mean": [0.5, 0.5, 0.5]},
    ) as writer:
        for narration_id, tensor in items.items():
            writer.add(narration_id, tensor)


def test_round_trip_sharded_fp16(tmp_path):
    items = {f"P01_11_{i}": torch.randn(5, 8) * (i + 1) for i in range(5)}
    _write(tmp_path / "f", items)
    index = json.loads((tmp_path / "f" / "index.json").read_text())
    assert index["shape"] == [5, 8] and index["dtype"] == "float16" and index["has_cls"] is True
    assert index["token_order"] == "frame-major" and index["backbone"] == "MCG-NJU/videomae-base"
    assert index["sampling"]["stride"] == 4 and index["processor"]["size"] == 224 and index["task"] == "recognition"
    assert sorted(index["shards"].values()) == [1, 2, 2] and len(list((tmp_path / "f").glob("*.safetensors"))) == 3
    reader = EK100FeatureReader(tmp_path / "f")
    assert len(reader) == 5 and "P01_11_3" in reader and "P01_11_9" not in reader
    for narration_id, tensor in items.items():
        out = reader[narration_id]
        assert out.dtype == torch.float16 and out.shape == (5, 8)
        assert torch.equal(out, tensor.half())
    clone = pickle.loads(pickle.dumps(reader))  # DataLoader workers receive a copy
    assert torch.equal(clone["P01_11_4"], items["P01_11_4"].half())
    with pytest.raises(KeyError, match="P01_11_9"):
        reader["P01_11_9"]


def test_writer_rejects_bad_input(tmp_path):
    writer = EK100FeatureWriter(tmp_path / "f", backbone="b", has_cls=False)
    writer.add("a", torch.zeros(3, 4))
    with pytest.raises(ValueError, match="already added"):
        writer.add("a", torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"shape \(3, 5\) differs"):
        writer.add("b", torch.zeros(3, 5))
    with pytest.raises(ValueError, match="tokens, dim"):
        writer.add("c", torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        writer.add("d", torch.full((3, 4), float("nan")))
    writer.close()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        EK100FeatureWriter(tmp_path / "f", backbone="b", has_cls=False)
    with pytest.raises(FileNotFoundError, match="index.json"):
        EK100FeatureReader(tmp_path)


def test_load_ek100_features_layout(tmp_path):
    annotations = _annotations(tmp_path)
    items = {nid: torch.full((4, 6), float(i)) for i, nid in enumerate(["P01_11_0", "P01_11_1", "P02_03_0"])}
    _write(tmp_path / "features", items)
    ds = load_ek100(annotations, "validation", tmp_path / "features", media="features")
    example = ds[1]
    assert example["narration_id"] == "P01_11_1" and example["verb_class"] == 1
    assert example["video_features"].dtype == torch.float32 and torch.equal(example["video_features"], items["P01_11_1"])
    batch = ds[0:3]
    assert batch["video_features"].shape == (3, 4, 6)

    # Recognition features (they see the action) are refused for anticipation.
    with pytest.raises(ValueError, match="extracted for task 'recognition'"):
        load_ek100(annotations, "validation", tmp_path / "features", media="features", task="anticipation")
    # A narration without features is named with the index path.
    _write(tmp_path / "partial", {k: items[k] for k in ("P01_11_0", "P02_03_0")})
    with pytest.raises(KeyError, match=r"index.json.*P01_11_1"):
        load_ek100(annotations, "validation", tmp_path / "partial", media="features")
    # A deleted shard is named with the narration id on access.
    ds = load_ek100(annotations, "validation", tmp_path / "features", media="features")
    for shard in (tmp_path / "features").glob("*.safetensors"):
        shard.unlink()
    with pytest.raises(FileNotFoundError, match=r"features-00000.safetensors \(shard of narration 'P01_11_0'\)"):
        ds[0]


def test_missing_frames_or_video_named_with_narration(tmp_path):
    annotations = _annotations(tmp_path)
    (tmp_path / "rgb_frames" / "P01" / "P01_11").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"rgb_frames/P02/P02_03.*narration P02_03_0"):
        load_ek100(annotations, "validation", tmp_path, media="frames")
    with pytest.raises(FileNotFoundError, match=r"videos/P01/P01_11.MP4.*narration P01_11_0"):
        load_ek100(annotations, "validation", tmp_path, media="video")


def _edit_index(root, **changes):
    index = json.loads((root / "index.json").read_text())
    index.update(changes)
    (root / "index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/tmp/outside.safetensors",
                                   "shards/../../outside.safetensors", "index.json", ".."])
def test_index_naming_a_shard_outside_its_folder_is_refused(tmp_path, shard):
    root = tmp_path / "f"
    _write(root, {"P01_11_0": torch.ones(2, 4)})
    (tmp_path / "outside.safetensors").write_bytes((root / "features-00000.safetensors").read_bytes())
    _edit_index(root, shards={shard: 1}, narration_ids={"P01_11_0": shard})
    with pytest.raises(ValueError) as info:
        EK100FeatureReader(root)
    assert "index.json" in str(info.value) and repr(shard) in str(info.value)


def test_shards_in_sub_folders_of_the_feature_folder_are_read(tmp_path):
    root = tmp_path / "f"
    _write(root, {"P01_11_0": torch.ones(2, 4)})
    (root / "shards").mkdir()
    (root / "features-00000.safetensors").rename(root / "shards" / "a.safetensors")
    _edit_index(root, shards={"shards/a.safetensors": 1}, narration_ids={"P01_11_0": "shards/a.safetensors"})
    assert torch.equal(EK100FeatureReader(root)["P01_11_0"].float(), torch.ones(2, 4))


def test_index_pointing_at_an_unlisted_shard_is_refused(tmp_path):
    root = tmp_path / "f"
    _write(root, {"P01_11_0": torch.ones(2, 4)})
    _edit_index(root, narration_ids={"P01_11_0": "features-00007.safetensors"})
    with pytest.raises(ValueError, match=r"narration 'P01_11_0' points at shard 'features-00007.safetensors'"):
        EK100FeatureReader(root)


def test_shard_altered_to_hold_nan_or_another_shape_is_refused_on_read(tmp_path):
    from safetensors.torch import save_file

    root = tmp_path / "f"
    _write(root, {"P01_11_0": torch.ones(2, 4), "P01_11_1": torch.ones(2, 4)})
    bad = torch.ones(2, 4, dtype=torch.float16)
    bad[1, 2] = float("nan")
    save_file({"P01_11_0": bad, "P01_11_1": torch.ones(3, 4, dtype=torch.float16)},
              str(root / "features-00000.safetensors"))
    reader = EK100FeatureReader(root)
    with pytest.raises(ValueError, match=r"features-00000.safetensors: the features of narration 'P01_11_0' have NaN"):
        reader["P01_11_0"]
    with pytest.raises(ValueError, match=r"'P01_11_1' have shape \(3, 4\), the index says \(2, 4\)"):
        reader["P01_11_1"]
