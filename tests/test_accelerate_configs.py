"""examples/accelerate_configs/: each file parses with Accelerate's own config classes; the FSDP wrap policy keeps the
shared A_log and both mixers that read it in one unit."""

from pathlib import Path

import pytest
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType

CONFIGS = Path(__file__).resolve().parents[1] / "examples" / "accelerate_configs"
EXPECTED = {
    "single_cpu.yaml": (DistributedType.NO, 1, 1),
    "single_gpu.yaml": (DistributedType.NO, 1, 1),
    "multi_gpu.yaml": (DistributedType.MULTI_GPU, 8, 1),
    "multi_node.yaml": (DistributedType.MULTI_GPU, 16, 2),
    "fsdp.yaml": (DistributedType.FSDP, 8, 1),
    "deepspeed_zero2.yaml": (DistributedType.DEEPSPEED, 8, 1),
}


def test_every_config_is_listed():
    assert {p.name for p in CONFIGS.glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_parses(name):
    config = load_config_from_file(str(CONFIGS / name))
    assert isinstance(config, ClusterConfig)
    distributed_type, num_processes, num_machines = EXPECTED[name]
    assert config.distributed_type == distributed_type
    assert (config.num_processes, config.num_machines) == (num_processes, num_machines)
    assert config.use_cpu == (name == "single_cpu.yaml")
    assert config.mixed_precision == ("no" if name == "single_cpu.yaml" else "bf16")
    if name == "deepspeed_zero2.yaml":
        assert config.deepspeed_config["zero_stage"] == 2
    if name == "multi_node.yaml":
        assert config.main_process_ip and config.main_process_port and config.rdzv_backend == "c10d"


def _fsdp_units(model, config) -> dict[str, str]:
    """Parameter name -> the name of the FSDP unit that holds it ("" for the root), as Accelerate would wrap ``model``
    with this config (the policy of its FSDP2 preparation: a unit per module the policy accepts)."""
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.fsdp_utils import fsdp2_prepare_auto_wrap_policy

    fsdp = config.fsdp_config
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=fsdp["fsdp_version"], auto_wrap_policy=fsdp["fsdp_auto_wrap_policy"].lower(),
        transformer_cls_names_to_wrap=fsdp["fsdp_transformer_layer_cls_to_wrap"].split(","),
        reshard_after_forward=fsdp["fsdp_reshard_after_forward"],
    )
    policy = fsdp2_prepare_auto_wrap_policy(plugin, model)
    units = [name for name, module in model.named_modules() if name and policy(module)]
    owner = {}
    for name, _ in model.named_parameters():
        holders = [u for u in units if name.startswith(u + ".")]
        owner[name] = max(holders, key=len) if holders else ""
    return owner


def test_fsdp_wraps_a_log_with_both_mixers():
    from modeling_mambavl.training.builders import build_model

    config = load_config_from_file(str(CONFIGS / "fsdp.yaml"))
    model, _ = build_model(preset="tiny", meta=True)
    owner = _fsdp_units(model, config)
    layers = {n.rsplit(".A_log", 1)[0] for n in owner if n.endswith(".A_log")}
    assert layers, "the tiny preset has an SSM fusion with a shared A_log"
    for layer in layers:
        assert owner[f"{layer}.A_log"] == layer
        for mixer in ("video_mixer", "text_mixer"):
            params = [n for n in owner if n.startswith(f"{layer}.{mixer}.")]
            assert params and {owner[n] for n in params} == {layer}, mixer
    # the backbone's layers are units of their own; nothing of the fusion is left in the root unit
    assert any(u.startswith("mambavl.vision.backbone.encoder.layer.") for u in owner.values())
    assert not any(n.startswith("mambavl.fusion.layers.") and u == "" for n, u in owner.items())


def test_fsdp_policy_names_a_missing_class():
    """The failure mode the config's comment documents for a model without a VideoMAE backbone."""
    import copy

    from modeling_mambavl.training.builders import build_model

    config = copy.deepcopy(load_config_from_file(str(CONFIGS / "fsdp.yaml")))
    config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] = "MambaVLSSMFusionLayer,NoSuchLayer"
    model, _ = build_model(preset="tiny", meta=True)
    with pytest.raises(ValueError, match="NoSuchLayer"):
        _fsdp_units(model, config)
