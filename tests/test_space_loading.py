"""The demo Space (examples/space/app.py) without a browser: which code loads the checkpoint (the installed package,
or the checkpoint's bundled code only where the package is not importable), the example clips saved with the
checkpoint, and the Space's front matter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from helpers.no_package import BLOCKER
from helpers.tiny_checkpoint import tiny_checkpoint
from packaging.requirements import Requirement

SPACE = Path(__file__).resolve().parents[1] / "examples" / "space"

_LOAD = textwrap.dedent(
    """
    import importlib.util, json, sys

    app_path, folder, mode = sys.argv[1:4]
    spec = importlib.util.spec_from_file_location("space_app", app_path)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    model, processor, how = app.load(folder)
    print(json.dumps({"how": how, "model": type(model).__module__, "processor": type(processor).__module__,
                      "package": app.package_available(), "examples": app.example_clips(folder),
                      "imported": any(n.split(".")[0] == "modeling_mambavl" for n in sys.modules)}))
    """
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from modeling_mambavl.ek100.synthetic import write_synthetic_clip

    folder = tmp_path_factory.mktemp("ckpt")
    tiny_checkpoint(folder)
    write_synthetic_clip(folder / "examples" / "synthetic_take_plate.mp4", size=64, seconds=1.0)
    return folder


def _load(folder: Path, mode: str, tmp_path: Path) -> dict:
    script = tmp_path / "load.py"
    # Without the package: the same blocker as the package-free venv's, as if it had never been installed.
    script.write_text((BLOCKER if mode == "without-package" else "") + _LOAD)
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"),
               GRADIO_ANALYTICS_ENABLED="False")
    result = subprocess.run([sys.executable, str(script), str(SPACE / "app.py"), str(folder), mode], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["with-package", "without-package"])
def test_space_uses_the_package_when_importable_and_remote_code_only_when_not(checkpoint, mode, tmp_path):
    loaded = _load(checkpoint, mode, tmp_path)
    if mode == "with-package":
        assert loaded["package"] and loaded["model"] == "modeling_mambavl.modeling", loaded
        assert not loaded["processor"].startswith("transformers_modules."), loaded
        assert "installed mambavl package" in loaded["how"]
    else:
        assert not loaded["package"] and not loaded["imported"], loaded
        assert loaded["model"].startswith("transformers_modules.") and "trust_remote_code=True" in loaded["how"]
    assert loaded["examples"] == [str(checkpoint / "examples" / "synthetic_take_plate.mp4")]


def test_space_front_matter():
    """What the Hub reads from the Space's README: sdk and an sdk_version that requirements.txt allows, the app file,
    the models it links to, the licence."""
    text = (SPACE / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["sdk"] == "gradio" and (SPACE / meta["app_file"]).is_file()
    gradio = next(Requirement(line) for line in (SPACE / "requirements.txt").read_text().splitlines()
                  if line.startswith("gradio"))
    assert gradio.specifier.contains(str(meta["sdk_version"])), (meta["sdk_version"], str(gradio))
    assert meta["sdk_version"] == version("gradio")  # the version the browser test ran
    assert isinstance(meta["models"], list) and all(m.count("/") == 1 for m in meta["models"])
    assert all(m in text.split("---\n", 2)[2] for m in meta["models"])  # and the text says what they are
    assert meta["license"] == "cc-by-nc-4.0"


def test_synthetic_example_clip(tmp_path):
    """The example clip is a real H.264 MP4 that the package decodes, deterministic in its arguments."""
    from modeling_mambavl.ek100.synthetic import write_synthetic_clip
    from modeling_mambavl.processors.video_io import probe_video

    a = write_synthetic_clip(tmp_path / "a.mp4", size=64, seconds=1.0, fps=30)
    b = write_synthetic_clip(tmp_path / "b.mp4", size=64, seconds=1.0, fps=30)
    info = probe_video(a)
    assert info.num_frames == 30 and info.fps == 30 and a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="synthetic classes"):
        write_synthetic_clip(tmp_path / "c.mp4", verb="juggle")


def test_without_gradio_the_app_says_what_to_install_in_one_line():
    """app.py where gradio is not installed (it ended with a ModuleNotFoundError traceback, even for --help)."""
    app = Path(__file__).resolve().parents[1] / "examples" / "space" / "app.py"
    code = ("import runpy, sys\nsys.modules['gradio'] = None\nsys.argv = ['app.py', '--help']\n"
            f"runpy.run_path({str(app)!r}, run_name='__main__')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "app.py needs gradio, which this install lacks: in the package's checkout pip install -e '.[space]', or pip "
        "install -r examples/space/requirements.txt"], out.stderr[-2000:]
