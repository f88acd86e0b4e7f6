"""The flat code bundle: its generation, and trust_remote_code loading where the package is not installed."""

import ast
import importlib.util
import json
import os
import sys
import textwrap

import pytest
import torch
from helpers.no_package import run_without_package
from helpers.tiny_checkpoint import TINY_BERT
from transformers.dynamic_module_utils import get_imports, get_relative_imports

from modeling_mambavl import MambaVLConfig, MambaVLForVideoClassification, remote_code
from modeling_mambavl.ops import selective_scan, selective_scan_backward

BUNDLE = {"configuration_mambavl.py", "modeling_mamba_vl.py", "selective_scan_mambavl.py", "processing_mambavl.py",
          "video_processing_mambavl.py", "pipeline_mambavl.py"}
# What a checkpoint's code may import outside try: (besides the standard library): the packages of an environment
# with torch, torchvision, transformers and av (numpy, PIL and huggingface_hub come with them).
THIRD_PARTY = {"torch", "torchvision", "transformers", "huggingface_hub", "numpy", "av", "PIL"}
AUTO_MAP = {
    "AutoConfig": "configuration_mambavl.MambaVLConfig",
    "AutoModel": "modeling_mamba_vl.MambaVLModel",
    "AutoModelForVideoClassification": "modeling_mamba_vl.MambaVLForVideoClassification",
    "AutoVideoProcessor": "video_processing_mambavl.MambaVLVideoProcessor",
    "AutoProcessor": "processing_mambavl.MambaVLProcessor",
}


def _tiny_model(fusion_type: str = "ssm") -> MambaVLForVideoClassification:
    torch.manual_seed(0)
    config = MambaVLConfig.from_preset(
        "tiny", hidden_size=32, fusion_type=fusion_type, fuser_layers=1, fuser_heads=2, text_config=TINY_BERT,
        vision_config={"num_hidden_layers": 1, "image_size": 32}, image_size=32,
        mixer_chunk_size=7,  # the video mixer runs in pieces, through the bundled scan's initial state too
    )
    return MambaVLForVideoClassification(config).eval()


def test_bundle_is_self_contained(tmp_path):
    files = remote_code.generate_code_bundle()
    assert set(files) == BUNDLE and "modeling_mambavl.py" not in files  # never shadows the package
    stems = {name[:-3] for name in files}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        compile(text, name, "exec")
        # transformers' import check: only installed third-party packages outside try: (the package is not one).
        assert set(get_imports(tmp_path / name)) - set(sys.stdlib_module_names) <= THIRD_PARTY, name
        assert set(get_relative_imports(tmp_path / name)) <= stems, name
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                assert node.level == 1 and node.module in stems, (name, ast.unparse(node))
    assert "from modeling_mambavl.ops import selective_scan" in files["modeling_mamba_vl.py"]  # inside try:
    assert "_BUNDLE_MANIFEST = " in files["configuration_mambavl.py"]


def test_bundled_scan_is_the_reference_scan(tmp_path):
    (tmp_path / "selective_scan_mambavl.py").write_text(remote_code.generate_code_bundle()["selective_scan_mambavl.py"])
    spec = importlib.util.spec_from_file_location("bundled_scan", tmp_path / "selective_scan_mambavl.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    g = torch.Generator().manual_seed(0)
    u, delta, z = (torch.randn(2, 8, 11, generator=g) for _ in range(3))
    A = -torch.rand(8, 4, generator=g)
    B, C = torch.randn(2, 4, 11, generator=g), torch.randn(2, 4, 11, generator=g)
    D, bias = torch.randn(8, generator=g), torch.randn(8, generator=g)
    kwargs = dict(D=D, z=z, delta_bias=bias, delta_softplus=True)
    torch.testing.assert_close(module.selective_scan(u, delta, A, B, C, **kwargs, backend="cuda"),
                               selective_scan(u, delta, A, B, C, **kwargs, backend="reference"))
    h0 = torch.randn(2, 8, 4, generator=g)
    torch.testing.assert_close(module.selective_scan(u, delta, A, B, C, **kwargs, initial_state=h0),
                               selective_scan(u, delta, A, B, C, **kwargs, initial_state=h0, backend="reference"))
    # The recomputing mixers' scan backward: output and every gradient as the package's.
    dout, dlast = torch.randn(2, 8, 11, generator=g), torch.randn(2, 8, 4, generator=g)
    out, grads = module.selective_scan_backward(dout, u, delta, A, B, C, **kwargs, initial_state=h0, dlast=dlast)
    expected_out, expected = selective_scan_backward(dout, u, delta, A, B, C, **kwargs, initial_state=h0,
                                                     dlast=dlast, backend="reference")
    torch.testing.assert_close(out, expected_out)
    assert len(grads) == len(expected) == 9
    for grad, reference in zip(grads, expected):
        torch.testing.assert_close(grad, reference)
    _, grads = module.selective_scan_backward(dout, u, delta, A, B, C)
    assert [g is None for g in grads] == [False] * 5 + [True] * 4


def test_config_save_writes_the_bundle_and_auto_map(tmp_path):
    MambaVLConfig.from_preset("tiny").save_pretrained(tmp_path)
    assert BUNDLE <= set(os.listdir(tmp_path))
    assert json.loads((tmp_path / "config.json").read_text())["auto_map"] == AUTO_MAP


_ISOLATED_LOAD = textwrap.dedent(
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForVideoClassification

    folder = sys.argv[1]
    data = torch.load(folder + "/expected.pt")
    model = AutoModelForVideoClassification.from_pretrained(folder, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    with torch.no_grad():
        assert torch.equal(model(**data["inputs"]).logits, data["logits"])
    model.save_pretrained(folder + "/resaved")
    again = AutoModelForVideoClassification.from_pretrained(folder + "/resaved", trust_remote_code=True).eval()
    with torch.no_grad():
        assert torch.equal(again(**data["inputs"]).logits, data["logits"])
    base = AutoModel.from_pretrained(folder + "/resaved", trust_remote_code=True).eval()
    assert type(base).__name__ == "MambaVLModel"
    config = AutoConfig.from_pretrained(folder + "/resaved", trust_remote_code=True)
    assert config.verb_id2label[0] == "take" and len(config.actions) == 3806
    config.save_pretrained(folder + "/config_only")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("fusion_type", ["ssm", "transformer"])
def test_trust_remote_code_round_trip_without_the_package(fusion_type, tmp_path):
    model = _tiny_model(fusion_type)
    g = torch.Generator().manual_seed(1)
    inputs = {"pixel_values": torch.randn(2, 8, 3, 32, 32, generator=g),
              "question_input_ids": torch.randint(3, 64, (2, 2, 6), generator=g)}
    with torch.no_grad():
        logits = model(**inputs).logits
    model.save_pretrained(tmp_path)
    torch.save({"inputs": inputs, "logits": logits}, tmp_path / "expected.pt")
    run_without_package(_ISOLATED_LOAD, tmp_path, workdir=tmp_path)
    # A model loaded from remote code re-saves the files its code came with (the processor's are saved by the
    # processor, see test_hub.py); its auto_map points at those only.
    model_files = {"configuration_mambavl.py", "modeling_mamba_vl.py", "selective_scan_mambavl.py"}
    assert model_files <= set(os.listdir(tmp_path / "resaved"))
    assert json.loads((tmp_path / "resaved" / "config.json").read_text())["auto_map"] == {
        k: v for k, v in AUTO_MAP.items() if v.split(".")[0] + ".py" in model_files}
    # A config saved alone from remote code points only at the file it has.
    assert json.loads((tmp_path / "config_only" / "config.json").read_text())["auto_map"] == {
        "AutoConfig": "configuration_mambavl.MambaVLConfig"}


def test_generator_refuses_what_would_break_the_bundle(monkeypatch):
    sources = {
        "a": "import torch\n\ndef helper():\n    return 1\n",
        "b": "from .a import helper\n\ndef helper():\n    return 2\n",
        "c": "from .ek100 import EK100Vocabulary\n\nX = 1\n",
    }
    monkeypatch.setattr(remote_code, "_module_source", lambda m: (f"modeling_mambavl.{m}", sources[m], False))
    monkeypatch.setattr(remote_code, "_defining_module", lambda target, name: target)
    with pytest.raises(remote_code.BundleError, match="'helper' is defined in both"):
        remote_code.generate_code_bundle([remote_code.BundleFile("x.py", ("a", "b"))])
    with pytest.raises(remote_code.BundleError, match="imports modeling_mambavl.ek100, which is not in the code bundle"):
        remote_code.generate_code_bundle([remote_code.BundleFile("x.py", ("c",))])
    with pytest.raises(remote_code.BundleError, match="shadow"):
        remote_code.register_bundle_file(remote_code.BundleFile("modeling_mambavl.py", ("a",)))


_ISOLATED_PROCESSOR = textwrap.dedent(
    """
    import json
    import torch
    from transformers import AutoProcessor, AutoVideoProcessor

    folder = sys.argv[1]
    data = torch.load(folder + "/expected.pt")
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
    assert type(processor.video_processor).__module__.startswith("transformers_modules.")
    out = processor(videos=[data["video"]], video_fps=30.0)
    assert set(out) == set(data["outputs"]), sorted(out)
    for key, value in data["outputs"].items():
        assert torch.equal(out[key], value), key
    processor.save_pretrained(folder + "/resaved")
    saved = json.load(open(folder + "/resaved/processor_config.json"))
    assert saved["auto_map"]["AutoProcessor"] == "processing_mambavl.MambaVLProcessor", saved["auto_map"]
    video = AutoVideoProcessor.from_pretrained(folder + "/resaved", trust_remote_code=True)
    assert torch.equal(video(data["video"], video_fps=30.0, return_tensors="pt")["pixel_values"], data["outputs"]["pixel_values"])
    again = AutoProcessor.from_pretrained(folder + "/resaved", trust_remote_code=True)
    assert again.questions == processor.questions
    assert again.question_pool == processor.question_pool == data["question_pool"]  # kept without the package
    assert torch.equal(again(videos=[data["video"]], video_fps=30.0)["question_input_ids"],
                       data["outputs"]["question_input_ids"])
    """
)


POOL = {"format": "mambavl-question-pool", "version": 1, "mask_token": "[MASK]",
        "pools": {"verb": {"0": {"name": "take", "entries": ["Which thing do the hands [MASK]?"]}}}}


@pytest.mark.slow
def test_processor_loads_without_the_package(tmp_path):
    from modeling_mambavl import MambaVLProcessor, MambaVLVideoProcessor

    processor = MambaVLProcessor(MambaVLVideoProcessor(num_frames=4, size={"shortest_edge": 40},
                                                       crop_size={"height": 32, "width": 32}),
                                 questions=["Which action do the hands perform?", "Which object is used?"],
                                 question_pool=POOL)
    video = torch.randint(0, 256, (10, 48, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    outputs = dict(processor(videos=[video], video_fps=30.0))
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["auto_map"] == {"AutoProcessor": AUTO_MAP["AutoProcessor"]}
    assert saved["video_processor"]["auto_map"] == {"AutoVideoProcessor": AUTO_MAP["AutoVideoProcessor"]}
    assert BUNDLE <= set(os.listdir(tmp_path))  # a processor saved alone carries the whole bundle
    torch.save({"video": video, "outputs": outputs, "question_pool": POOL}, tmp_path / "expected.pt")
    run_without_package(_ISOLATED_PROCESSOR, tmp_path, workdir=tmp_path)


def test_processor_without_tokenizer_needs_the_package(monkeypatch):
    from modeling_mambavl.processors import processing

    monkeypatch.setattr(processing, "default_question_tokenizer", None)
    with pytest.raises(ValueError, match="give `tokenizer` and `questions`"):
        processing.MambaVLProcessor()
