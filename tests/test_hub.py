"""Push and pull through a Hub-compatible server on loopback (tests/hub_server.py), with unmodified huggingface_hub
and transformers clients running in subprocesses (HF_ENDPOINT is read when huggingface_hub is imported).

The acceptance test loads the pushed checkpoint by repo id in a fresh virtual environment that has torch,
torchvision, transformers and av but not this package (a .pth file points at the current environment's
site-packages, whose own .pth files — the editable install's finder — are not processed there; a sitecustomize
meta-path finder also refuses ``modeling_mambavl``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers.no_package import isolated_python
from helpers.tiny_checkpoint import METRICS, tiny_checkpoint, write_test_video
from hub_server import HubServer
from huggingface_hub import ModelCard

REPO = "mambavl-org/mambavl-tiny"


@pytest.fixture(scope="module")
def hub():
    with HubServer() as server:
        yield server


def _client_env(hub: HubServer, home: Path, offline: bool = False) -> dict[str, str]:
    return dict(os.environ, HF_ENDPOINT=hub.url, HF_TOKEN="hf_loopback_test_token", HF_HOME=str(home),
                HF_HUB_OFFLINE="1" if offline else "0", HF_MODULES_CACHE=str(home / "modules"))


def _run(python: str, script: str, env: dict[str, str], cwd: Path, *args: str) -> str:
    path = cwd / f"client_{abs(hash(script)) % 10**8}.py"
    path.write_text(textwrap.dedent(script))
    result = subprocess.run([python, str(path), *args], env=env, cwd=cwd, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, f"{path.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


_PUSH = """
    import sys
    from huggingface_hub import HfApi
    from transformers import AutoModelForVideoClassification, AutoProcessor
    import modeling_mambavl
    from modeling_mambavl.hub import push_to_hub

    folder, repo, metrics, video, tag = sys.argv[1:6]
    model = AutoModelForVideoClassification.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    commit = push_to_hub(model, processor, repo, metrics=None if metrics == "-" else metrics,
                         example_video=None if video == "-" else video, space_id="mambavl-org/mambavl-demo")
    if tag != "-":
        HfApi().create_tag(repo, tag=tag, revision=commit.oid)
    print("PUSHED", commit.oid)
"""

_LOAD_WITHOUT_PACKAGE = """
    import importlib.util, json, sys
    import torch
    from transformers import AutoModelForVideoClassification, AutoProcessor

    try:
        importlib.util.find_spec("modeling_mambavl")
        raise SystemExit("the mambavl package is importable in this environment")
    except ModuleNotFoundError:
        pass
    repo, revision, video, expected_path, out = sys.argv[1:6]
    expected = torch.load(expected_path)

    def check(model, processor, where):
        assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
        assert type(processor).__module__.startswith("transformers_modules."), type(processor).__module__
        inputs = processor(videos=[video], return_tensors="pt")
        for key in ("pixel_values", "question_input_ids", "question_attention_mask"):
            assert torch.equal(inputs[key], expected["inputs"][key]), (where, key)
        with torch.no_grad():
            outputs = model(**inputs)
        for key in ("logits", "verb_logits", "noun_logits"):
            torch.testing.assert_close(getattr(outputs, key), expected[key], rtol=0, atol=1e-5, msg=f"{where} {key}")
        with torch.no_grad():  # and without questions: the config's default question ids
            torch.testing.assert_close(model(pixel_values=inputs["pixel_values"]).logits, expected["logits"],
                                       rtol=0, atol=1e-5)

    kwargs = {} if revision == "-" else {"revision": revision}
    model = AutoModelForVideoClassification.from_pretrained(repo, trust_remote_code=True, **kwargs).eval()
    processor = AutoProcessor.from_pretrained(repo, trust_remote_code=True, **kwargs)
    check(model, processor, "from the hub")
    if out != "-":
        model.save_pretrained(out)
        processor.save_pretrained(out)
        again = AutoModelForVideoClassification.from_pretrained(out, trust_remote_code=True).eval()
        check(again, AutoProcessor.from_pretrained(out, trust_remote_code=True), "saved again")
        print(json.dumps(sorted(__import__("os").listdir(out))))
    assert not any(name.split(".")[0] == "modeling_mambavl" for name in sys.modules)
    print("LOADED-OK")
"""


@torch.no_grad()
def _expected(model, processor, video: Path, path: Path) -> None:
    inputs = processor(videos=[str(video)], return_tensors="pt")
    outputs = model(**inputs)
    torch.save({"inputs": dict(inputs), "logits": outputs.logits, "verb_logits": outputs.verb_logits,
                "noun_logits": outputs.noun_logits}, path)


@pytest.mark.slow
def test_push_then_load_by_repo_id_without_the_package(hub, tmp_path):
    """Acceptance: push model + processor + card; load by repo id, by revision and offline from the cache, where
    the package is not installed; logits to 1e-5; saved again from there and reloaded, still."""
    video = write_test_video(tmp_path / "clip.mp4")
    (tmp_path / "metrics.json").write_text(json.dumps(METRICS))
    v1, v2 = tmp_path / "v1", tmp_path / "v2"
    model, processor = tiny_checkpoint(v1, seed=0)
    _expected(model, processor, video, tmp_path / "expected_v1.pt")
    model2, processor2 = tiny_checkpoint(v2, seed=1)
    _expected(model2, processor2, video, tmp_path / "expected_v2.pt")

    home = tmp_path / "home"
    env = _client_env(hub, home)
    first = _run(sys.executable, _PUSH, env, tmp_path, str(v1), REPO, str(tmp_path / "metrics.json"), str(video),
                 "v1").split("PUSHED ")[1].strip()
    _run(sys.executable, _PUSH, env, tmp_path, str(v2), REPO, "-", "-", "-")  # main moves on

    # What the Hub holds: the whole bundle, weights, processor files, card last.
    files = hub.files_at(REPO, "v1")
    assert {"config.json", "model.safetensors", "processor_config.json", "tokenizer.json", "README.md",
            "metrics.json", "examples/clip.mp4", "configuration_mambavl.py", "modeling_mamba_vl.py",
            "selective_scan_mambavl.py", "processing_mambavl.py", "video_processing_mambavl.py"} <= set(files)
    assert "modeling_mambavl.py" not in files
    config = json.loads(files["config.json"])
    assert config["auto_map"]["AutoProcessor"] == "processing_mambavl.MambaVLProcessor"
    assert config["default_question_input_ids"] == processor.default_question_inputs()["default_question_input_ids"]
    assert first == hub.repo(REPO).tags["v1"]

    # Isolated environment: by tag, saved again and reloaded; main gives the second model; then offline from cache.
    python = isolated_python(tmp_path)
    cwd = tmp_path / "isolated"
    cwd.mkdir()
    resaved = tmp_path / "resaved"
    out = _run(python, _LOAD_WITHOUT_PACKAGE, env, cwd, REPO, "v1", str(video), str(tmp_path / "expected_v1.pt"),
               str(resaved))
    assert "LOADED-OK" in out
    saved = set(json.loads(out.splitlines()[-2]))
    assert {"configuration_mambavl.py", "modeling_mamba_vl.py", "selective_scan_mambavl.py", "processing_mambavl.py",
            "video_processing_mambavl.py", "model.safetensors", "processor_config.json"} <= saved
    assert "LOADED-OK" in _run(python, _LOAD_WITHOUT_PACKAGE, env, cwd, REPO, first, str(video),
                               str(tmp_path / "expected_v1.pt"), "-")
    assert "LOADED-OK" in _run(python, _LOAD_WITHOUT_PACKAGE, env, cwd, REPO, "-", str(video),
                               str(tmp_path / "expected_v2.pt"), "-")
    served = len(hub.requests)
    assert "LOADED-OK" in _run(python, _LOAD_WITHOUT_PACKAGE, _client_env(hub, home, offline=True), cwd, REPO, "v1",
                               str(video), str(tmp_path / "expected_v1.pt"), "-")
    assert len(hub.requests) == served  # offline: nothing asked of the server


@pytest.mark.slow
def test_pushed_readme_is_the_model_card(hub, tmp_path):
    """The README on the Hub is our card (uploaded after transformers' default one) and parses with ModelCard."""
    video = write_test_video(tmp_path / "kitchen.mp4")
    folder = tmp_path / "ckpt"
    model, processor = tiny_checkpoint(folder)
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    repo = "mambavl-org/card-check"
    _run(sys.executable, _PUSH, _client_env(hub, tmp_path / "home"), tmp_path, str(folder), repo,
         str(folder / "metrics.json"), str(video), "-")
    history = hub.repo(repo)
    titles = [c.title for c in history.commits.values()]
    assert titles[-1].endswith("model card")  # the card came last

    card = ModelCard(hub.files_at(repo)["README.md"].decode())
    data = card.data
    assert data.pipeline_tag == "video-classification"
    assert data.license == "cc-by-nc-4.0"
    assert data.library_name == "transformers"
    assert data.widget and data.widget[0]["src"].endswith(f"/{repo}/resolve/main/examples/kitchen.mp4")
    from modeling_mambavl.hub import example_predictions

    expected = example_predictions(model, processor, video)
    output = data.widget[0]["output"]
    assert [o["label"] for o in output] == [e["label"] for e in expected]
    assert [o["score"] for o in output] == pytest.approx([e["score"] for e in expected], abs=1e-4)
    assert {r.metric_type: r.metric_value for r in data.eval_results} == METRICS["metrics"]
    assert {r.dataset_split for r in data.eval_results} == {"validation"}
    assert all(r.metric_args == {"question_source": "generic"} for r in data.eval_results)
    assert json.loads(hub.files_at(repo)["metrics.json"]) == METRICS
    assert "AutoModelForVideoClassification.from_pretrained(\"mambavl-org/card-check\"" in card.text
    assert "https://huggingface.co/spaces/mambavl-org/mambavl-demo" in card.text
    assert "Mamba Fusion: Learning Actions Through Questioning" in card.text


def test_loopback_server_speaks_the_hub_protocol(hub, tmp_path):
    """Unmodified huggingface_hub calls: create, commit, branch, tag, refs, info, tree, download with ETag /
    X-Repo-Commit / CDN redirect, and the Hub's error codes."""
    script = """
        import pathlib, sys
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
        api = HfApi()
        repo = api.create_repo("mambavl-org/protocol").repo_id
        api.create_repo(repo, exist_ok=True)
        weights = bytes(range(256)) * 64
        first = api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=repo)
        api.upload_file(path_or_fileobj=b'{"a": 1}', path_in_repo="config.json", repo_id=repo)
        api.create_branch(repo, branch="dev", revision=first.oid)
        api.create_tag(repo, tag="v0", revision=first.oid)
        refs = api.list_repo_refs(repo)
        assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v0"]
        assert pathlib.Path(hf_hub_download(repo, "model.safetensors")).read_bytes() == weights
        assert pathlib.Path(hf_hub_download(repo, "config.json")).read_text() == '{"a": 1}'
        try:
            hf_hub_download(repo, "config.json", revision="dev")
            raise SystemExit("config.json should not exist on dev")
        except EntryNotFoundError:
            pass
        for call, error in ((lambda: hf_hub_download("mambavl-org/nothing", "x"), RepositoryNotFoundError),
                            (lambda: hf_hub_download(repo, "config.json", revision="nope"), RevisionNotFoundError)):
            try:
                call()
                raise SystemExit(f"expected {error.__name__}")
            except error:
                pass
        info = api.model_info(repo)
        assert {s.rfilename for s in info.siblings} == {".gitattributes", "model.safetensors", "config.json"}
        assert api.model_info(repo, revision="v0").sha == first.oid
        assert sorted(f.path for f in api.list_repo_tree(repo)) == [".gitattributes", "config.json", "model.safetensors"]
        folder = snapshot_download(repo, revision="v0")
        assert sorted(p.name for p in pathlib.Path(folder).iterdir()) == [".gitattributes", "model.safetensors"]
        try:
            api.upload_file(path_or_fileobj=b"---\\nlicense: [unclosed\\n---\\n", path_in_repo="README.md", repo_id=repo)
            raise SystemExit("invalid README metadata accepted")
        except ValueError:
            pass
        print("PROTOCOL-OK")
    """
    assert "PROTOCOL-OK" in _run(sys.executable, script, _client_env(hub, tmp_path / "home"), tmp_path)
    seen = set(hub.requests)
    assert ("HEAD", "/mambavl-org/protocol/resolve/main/model.safetensors") in seen
    assert any(method == "GET" and path.startswith("/cdn/") for method, path in seen)  # followed the CDN redirect
    assert ("POST", "/api/validate-yaml") in seen


def _assert_hub_valid(readme: str) -> ModelCard:
    """What the Hub checks offline: YAML metadata that parses, a model-index that round-trips through
    huggingface_hub's own converters, finite metric values only (no counts, no NaN), the fields the Hub reads."""
    import math

    import yaml
    from huggingface_hub.repocard_data import eval_results_to_model_index, model_index_to_eval_results

    assert "nan" not in readme.split("\n---\n", 1)[0].lower(), "NaN in the metadata"
    assert "pip install mambavl" not in readme  # no such distribution on PyPI
    metadata = yaml.safe_load(readme.split("---\n")[1])
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert eval_results_to_model_index(name, results) == metadata["model-index"]
    assert results and all(isinstance(r.metric_value, float) and math.isfinite(r.metric_value) for r in results)
    assert not any(r.metric_type.startswith("num_") for r in results)  # counts belong to the text
    assert metadata["pipeline_tag"] == "video-classification" and metadata["library_name"] == "transformers"
    assert metadata["license"] == "cc-by-nc-4.0"
    assert "datasets" not in metadata  # EPIC-KITCHENS-100 has no Hub dataset id
    card = ModelCard(readme)
    assert "https://arxiv.org/abs/2409.11513" in card.text and "modeling_mamba_vl.py" in card.text
    assert "pip install -e ." in card.text
    return card


def test_card_and_metrics_json_are_hub_valid(tmp_path):
    """An EK100Metric result with empty subsets (NaN) and counts: metrics.json holds null and a count of the empty
    metrics, strict JSON; the card written from it loads with ModelCard.load and its model-index round-trips."""
    from modeling_mambavl import MambaVLConfig
    from modeling_mambavl.model_card import make_model_card
    from modeling_mambavl.training.evaluation import metrics_payload

    result = {**METRICS["metrics"], "unseen_verb_top1": float("nan"), "unseen_noun_top1": float("nan"),
              "num_examples": 9668, "num_unseen": 0, "num_tail_verb": 1200, "action_rule": "official",
              "num_clips": 9668, "num_clips_scored": 9668}
    payload = metrics_payload(result, task="recognition", split="validation", dataset="epic-kitchens-100",
                              question_source="generic", epoch=3, global_step=30)
    text = json.dumps(payload, allow_nan=False)  # raises on NaN
    assert payload["metrics"]["unseen_verb_top1"] is None and payload["num_empty_metrics"] == 2
    assert payload["counts"] == {"num_examples": 9668, "num_unseen": 0, "num_tail_verb": 1200}
    assert not any(k.startswith("num_") for k in payload["metrics"])
    (tmp_path / "metrics.json").write_text(text)
    card = make_model_card(MambaVLConfig.from_preset("tiny"), tmp_path / "metrics.json", repo_id="org/tiny")
    card.save(tmp_path / "README.md")
    loaded = ModelCard.load(tmp_path / "README.md")
    _assert_hub_valid(str(loaded))
    assert {r.metric_type for r in loaded.data.eval_results} == {k for k, v in payload["metrics"].items()
                                                                 if v is not None}
    assert "examples 9,668" in loaded.text and "tail verb 1,200" in loaded.text  # counts in the text
    assert "| verb top-1 (unseen) | — |" in loaded.text

    # metrics.json written before null existed (NaN, counts among the metrics) still makes a valid card.
    (tmp_path / "old.json").write_text(json.dumps({**METRICS, "metrics": {**METRICS["metrics"], "num_examples": 5,
                                                                          "unseen_verb_top1": float("nan")}}))
    old = make_model_card(MambaVLConfig.from_preset("tiny"), tmp_path / "old.json", repo_id="org/tiny")
    _assert_hub_valid(str(old))


_NATIVE_PUSH = """
    import sys
    from transformers import AutoModelForVideoClassification
    import modeling_mambavl

    folder, repo = sys.argv[1:3]
    model = AutoModelForVideoClassification.from_pretrained(folder).eval()
    print("PUSHED", model.push_to_hub(repo).oid)
"""


@pytest.mark.slow
def test_native_push_to_hub_uploads_the_package_card(hub, tmp_path):
    """``model.push_to_hub(repo)`` (transformers' call) uploads the package's card, metrics and example clip of the
    folder the model came from: the same README text as the package's own push, once the repo ids are aligned."""
    folder = tmp_path / "ckpt"
    tiny_checkpoint(folder)
    (folder / "metrics.json").write_text(json.dumps(METRICS))
    (folder / "examples").mkdir()
    write_test_video(folder / "examples" / "kitchen.mp4")
    env = _client_env(hub, tmp_path / "home")
    native, package = "mambavl-org/native-push", "mambavl-org/package-push"
    _run(sys.executable, _NATIVE_PUSH, env, tmp_path, str(folder), native)
    _run(sys.executable, _PUSH, env, tmp_path, str(folder), package, "-", "-", "-")

    files = hub.files_at(native)
    assert {"config.json", "model.safetensors", "modeling_mamba_vl.py", "metrics.json", "examples/kitchen.mp4",
            "README.md"} <= set(files)
    readme = files["README.md"].decode()
    assert "This is the model card of a 🤗 transformers model" not in readme  # not transformers' template
    card = _assert_hub_valid(readme)
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == METRICS["metrics"]
    assert card.data.widget[0]["src"].endswith(f"/{native}/resolve/main/examples/kitchen.mp4")
    assert card.data.widget[0]["output"]
    ours = hub.files_at(package)["README.md"].decode().replace(package, native).replace("package-push", "native-push")
    ours = ours.replace("https://huggingface.co/spaces/mambavl-org/mambavl-demo",
                        "https://huggingface.co/spaces/mambavl/mambavl-demo").replace(
        "mambavl-org/mambavl-demo", "mambavl/mambavl-demo")
    assert ours == readme
