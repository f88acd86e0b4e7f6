"""examples/accelerate_configs/: each file parses with Accelerate's own config classes; the FSDP wrap policy keeps the
shared A_log and both mixers that read it in one unit.

Distributed configurations: each Accelerate config of ``examples/accelerate_configs/`` is read and validated by
Accelerate itself (the config loader, ``accelerate launch``'s own checks, and the launcher's environment), and FSDP's
auto-wrap policy keeps the shared ``A_log`` of a fusion layer in the same wrapped unit as both of its mixers.

The FSDP policy (README / RELIABILITY.md): ``fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP`` wrapping at the fusion
layer class ``MambaVLSSMFusionLayer`` (and ``MambaVLFuserBlock``, the Transformer baseline), which are the model's
``_no_split_modules`` (Accelerate's default list for that policy), plus the backbone's own layer class if wanted.
Never a size-based policy: it may wrap a mixer alone and leave ``A_log`` in its parent's unit.

A real FSDP run needs GPUs; here the policy is applied to the model on the CPU and the resulting units are computed
exactly as FSDP's recursive wrapper forms them (a module becomes a unit root when the policy says so).
"""

import functools
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from torch import nn
from torch.distributed.fsdp.wrap import size_based_auto_wrap_policy, transformer_auto_wrap_policy

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification

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


# ---------------------------------------------------------------- validated by Accelerate, FSDP units on the model
REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "examples" / "train_ek100.py"
NAMES = ("single_cpu", "single_gpu", "multi_gpu", "multi_node", "fsdp", "deepspeed_zero2")
EXPECTED_TYPE = {
    "single_cpu": (DistributedType.NO, DistributedType.MULTI_CPU),
    "single_gpu": (DistributedType.NO,),
    "multi_gpu": (DistributedType.MULTI_GPU,),
    "multi_node": (DistributedType.MULTI_GPU, DistributedType.FSDP, DistributedType.DEEPSPEED),
    "fsdp": (DistributedType.FSDP,),
    "deepspeed_zero2": (DistributedType.DEEPSPEED,),
}

# The documented FSDP configuration (what examples/accelerate_configs/fsdp.yaml is checked against).
DOCUMENTED_FSDP = """\
compute_environment: LOCAL_MACHINE
distributed_type: FSDP
mixed_precision: bf16
num_machines: 1
num_processes: 8
machine_rank: 0
main_training_function: main
use_cpu: false
fsdp_config:
  fsdp_version: 1
  fsdp_auto_wrap_policy: TRANSFORMER_BASED_WRAP
  fsdp_transformer_layer_cls_to_wrap: MambaVLSSMFusionLayer
  fsdp_sharding_strategy: FULL_SHARD
  fsdp_backward_prefetch: BACKWARD_PRE
  fsdp_state_dict_type: SHARDED_STATE_DICT
  fsdp_use_orig_params: true
  fsdp_sync_module_states: true
  fsdp_cpu_ram_efficient_loading: true
  fsdp_offload_params: false
"""


def validate(path: Path) -> tuple[ClusterConfig, object]:
    """What ``accelerate launch --config_file path examples/train_ek100.py`` checks before starting processes."""
    config = load_config_from_file(str(path))  # unknown keys, bad enum values
    assert isinstance(config, ClusterConfig), type(config)
    args = launch_command_parser().parse_args(["--config_file", str(path), str(TRAIN)])
    args, defaults, _ = _validate_launch_command(args)  # conflicting modes, process counts, mixed precision
    return config, args


def fsdp_plugin(config: ClusterConfig, monkeypatch) -> FullyShardedDataParallelPlugin:
    """The plugin Accelerate builds from the config (through the same FSDP_* environment the launcher sets)."""
    for key, value in (config.fsdp_config or {}).items():
        env = key.upper() if key.startswith("fsdp_") else f"FSDP_{key.upper()}"
        monkeypatch.setenv(env, str(value).lower() if isinstance(value, bool) else str(value))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    # `fsdp_sync_module_states` asks for the current GPU; this machine has none, and the device plays no part in
    # the wrap policy checked here.
    import accelerate.utils.dataclasses as accelerate_dataclasses

    if hasattr(accelerate_dataclasses, "get_torch_accelerator_backend"):  # newer Accelerate asks the accelerator backend
        monkeypatch.setattr(accelerate_dataclasses, "get_torch_accelerator_backend", lambda: ("cuda", torch.cuda))
    else:
        monkeypatch.setattr(accelerate_dataclasses, "is_cuda_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    return FullyShardedDataParallelPlugin()


def wrapped_units(model: nn.Module, policy) -> dict[str, str]:
    """parameter name -> name of the FSDP unit holding it, as ``_recursive_wrap`` forms units: children first; a
    module whose policy answer is True becomes a unit root; parameters belong to the nearest enclosing root."""
    roots: set[str] = set()

    def visit(name: str, module: nn.Module) -> int:
        # numel of parameters NOT already inside a wrapped child (FSDP's `nonwrapped_numel`)
        remaining = sum(p.numel() for p in module.parameters(recurse=False))
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            remaining += visit(full, child)
        if name and policy(module=module, recurse=False, nonwrapped_numel=remaining):
            roots.add(name)
            return 0
        return remaining

    visit("", model)
    units = {}
    for param_name, _ in model.named_parameters():
        parts = param_name.split(".")[:-1]
        owner = ""
        for i in range(len(parts), 0, -1):
            if ".".join(parts[:i]) in roots:
                owner = ".".join(parts[:i])
                break
        units[param_name] = owner or "<root>"
    return units


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return MambaVLForVideoClassification(MambaVLConfig.from_preset("tiny", num_fusion_layers=2))


def _assert_state_with_mixers(units: dict[str, str]) -> None:
    layers = sorted({n.rsplit(".A_log", 1)[0] for n in units if n.endswith(".A_log")})
    assert len(layers) == 2, layers
    for layer in layers:
        unit = units[f"{layer}.A_log"]
        mixers = {units[n] for n in units if n.startswith(f"{layer}.video_mixer.") or n.startswith(f"{layer}.text_mixer.")}
        assert mixers == {unit}, (layer, unit, mixers)
        assert unit == layer  # the fusion layer itself is the unit: nothing else is sharded with it


@pytest.mark.parametrize("name", NAMES)
def test_accelerate_config_is_valid(name):
    path = CONFIGS / f"{name}.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    config, args = validate(path)
    assert config.distributed_type in EXPECTED_TYPE[name], config.distributed_type
    if name == "multi_node":
        assert config.num_machines > 1 and args.main_process_ip and args.main_process_port
    if name == "deepspeed_zero2":
        assert int(config.deepspeed_config.get("zero_stage")) == 2
    if name in ("multi_gpu", "multi_node", "fsdp", "deepspeed_zero2"):
        assert config.num_processes >= 2


def test_fsdp_config_keeps_a_log_with_both_mixers(model, monkeypatch):
    path = CONFIGS / "fsdp.yaml"
    if not path.is_file():
        pytest.skip(f"{path} not present")
    config, _ = validate(path)
    plugin = fsdp_plugin(config, monkeypatch)
    plugin.set_auto_wrap_policy(model)
    _assert_state_with_mixers(wrapped_units(model, plugin.auto_wrap_policy))


def test_documented_fsdp_policy_keeps_a_log_with_both_mixers(model, tmp_path, monkeypatch):
    path = tmp_path / "fsdp.yaml"
    path.write_text(DOCUMENTED_FSDP)
    config, args = validate(path)
    assert args.use_fsdp and config.distributed_type == DistributedType.FSDP
    plugin = fsdp_plugin(config, monkeypatch)
    plugin.set_auto_wrap_policy(model)
    assert isinstance(plugin.auto_wrap_policy, functools.partial)
    assert plugin.auto_wrap_policy.func is transformer_auto_wrap_policy
    _assert_state_with_mixers(wrapped_units(model, plugin.auto_wrap_policy))


def test_default_transformer_policy_uses_the_fusion_layer(model):
    """Without ``fsdp_transformer_layer_cls_to_wrap`` Accelerate wraps the model's ``_no_split_modules``."""
    plugin = FullyShardedDataParallelPlugin(auto_wrap_policy="transformer_based_wrap")
    plugin.set_auto_wrap_policy(model)
    _assert_state_with_mixers(wrapped_units(model, plugin.auto_wrap_policy))


def test_size_based_policy_can_split_a_log_from_its_mixers(model):
    """Why the documented policy is not size based: a threshold below a mixer's size wraps each mixer alone and leaves
    the shared ``A_log`` in the parent's unit (the check above would catch such a config)."""
    policy = functools.partial(size_based_auto_wrap_policy, min_num_params=10_000)
    units = wrapped_units(model, policy)
    layer = "mambavl.fusion.layers.0"
    assert units[f"{layer}.A_log"] != units[f"{layer}.video_mixer.in_proj.weight"]
    with pytest.raises(AssertionError):
        _assert_state_with_mixers(units)


def test_broken_configs_are_refused(tmp_path):
    """The validation is not vacuous: Accelerate refuses unknown keys and contradictory settings."""
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(DOCUMENTED_FSDP + "fsdp_wrap_everything: true\n")
    with pytest.raises(ValueError, match="fsdp_wrap_everything"):
        validate(unknown)
    base = ("compute_environment: LOCAL_MACHINE\nnum_machines: 1\nmachine_rank: 0\nmixed_precision: 'no'\n"
            "use_cpu: false\n")
    bad_mode = tmp_path / "bad_mode.yaml"
    bad_mode.write_text(base + "distributed_type: MULTI_GPUS\nnum_processes: 2\n")
    with pytest.raises(ValueError, match="MULTI_GPUS"):
        validate(bad_mode)
    no_count = tmp_path / "no_count.yaml"
    no_count.write_text(base + "distributed_type: MULTI_GPU\nnum_processes: -1\n")
    with pytest.raises(ValueError, match="num_processes"):
        validate(no_count)
