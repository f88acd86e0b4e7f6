"""Builds the plain-C++ CPU kernels on first use and loads them with ``ctypes``.

The kernels include no PyTorch headers, so a build takes one or two seconds with the system compiler and needs
nothing beyond a C++17 compiler: installing the package stays a plain ``pip install`` on Linux and macOS.

Compiled libraries are cached in ``$MAMBAVL_KERNEL_CACHE``, else ``$XDG_CACHE_HOME/mambavl/kernels``, else
``~/.cache/mambavl/kernels``, under a name that hashes the source, the compiler's version, the flags and the CPU
(``-march=native`` code is only valid on the CPU that built it, and a home folder may be shared by different nodes).
A build goes to a temporary file that is then renamed into place, so several processes may build at once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"

# Not -ffast-math: GCC < 13 then links crtfastmath.o into the shared library, whose constructor turns on
# flush-to-zero / denormals-are-zero for the whole Python process as soon as it is loaded. These are the parts of
# -ffast-math the kernels need (reassociation so that sums over states vectorise, no errno or trap semantics for the
# math calls), keeping IEEE inf / NaN semantics.
_BASE_FLAGS = (
    "-O3", "-std=c++17", "-fPIC", "-shared", "-pthread",
    "-fno-math-errno", "-fno-trapping-math", "-fno-signed-zeros", "-fassociative-math", "-freciprocal-math",
    "-ffp-contract=fast",
)
# Tried in order: the first one the compiler accepts is used (Apple clang on arm64 spells it -mcpu).
_ARCH_FLAGS = (("-march=native",), ("-mcpu=native",), ())

_lock = threading.Lock()
_loaded: dict[str, ctypes.CDLL] = {}


class KernelBuildError(RuntimeError):
    """The CPU kernel could not be compiled or loaded; the message says why and what to do."""


def cache_dir() -> Path:
    """Folder holding the compiled kernels (see the module docstring for the order of the settings)."""
    if os.environ.get("MAMBAVL_KERNEL_CACHE"):
        return Path(os.environ["MAMBAVL_KERNEL_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "mambavl" / "kernels"


def find_compiler() -> str | None:
    """``$CXX`` if set, else the first of ``c++``, ``g++``, ``clang++`` on the ``PATH``."""
    cxx = os.environ.get("CXX")
    if cxx:
        return shutil.which(cxx) or cxx
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _no_compiler_message() -> str:
    return (
        "the CPU selective-scan kernel is compiled on first use, but no C++ compiler was found "
        "(looked for $CXX, c++, g++, clang++). Install one (Debian/Ubuntu: `apt install g++`; Fedora: "
        "`dnf install gcc-c++`; macOS: `xcode-select --install`; conda: `conda install -c conda-forge cxx-compiler`) "
        "or set CXX; backend='portable' needs no compiler."
    )


def _cpu_id() -> str:
    parts = [platform.machine(), platform.processor()]
    try:
        if sys.platform.startswith("linux"):
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                for line in f:
                    key = line.split(":", 1)[0].strip()
                    if key in ("model name", "flags", "Features", "CPU part", "CPU implementer"):
                        parts.append(line.strip())
                    if line.strip() == "":  # first processor only
                        break
        elif sys.platform == "darwin":
            out = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True, text=True)
            parts.append(out.stdout.strip())
    except OSError:
        pass
    return "|".join(parts)


def _compiler_version(cxx: str) -> str:
    try:
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as e:
        raise KernelBuildError(f"the C++ compiler {cxx!r} could not be run ({e}). {_no_compiler_message()}") from e
    return out.stdout.strip()


def _compile(cxx: str, source: Path, target: Path) -> None:
    errors = []
    for arch in _ARCH_FLAGS:
        fd, tmp = tempfile.mkstemp(prefix=target.stem + ".", suffix=".tmp", dir=target.parent)
        os.close(fd)
        cmd = [cxx, *_BASE_FLAGS, *arch, str(source), "-o", tmp]
        try:
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as e:
            res = None
            errors.append(f"$ {' '.join(cmd)}\n{e}")
        if res is not None and res.returncode == 0:
            os.replace(tmp, target)
            return
        if res is not None:
            errors.append(f"$ {' '.join(cmd)}\n{res.stderr.strip()}")
        try:
            os.unlink(tmp)
        except OSError:
            pass
    raise KernelBuildError(
        f"compiling the CPU kernel {source.name} failed; backend='portable' needs no compiler.\n" + "\n".join(errors)
    )


def load_library(name: str) -> ctypes.CDLL:
    """Compiles (once per source / compiler / CPU) and loads ``csrc/<name>.cpp``; raises ``KernelBuildError``."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        source = CSRC / f"{name}.cpp"
        if not source.is_file():
            raise KernelBuildError(f"the kernel source {source} is missing from the installed package; reinstall it.")
        cxx = find_compiler()
        if cxx is None:
            raise KernelBuildError(_no_compiler_message())
        key = hashlib.sha256()
        for part in (source.read_bytes(), _compiler_version(cxx).encode(), cxx.encode(),
                     " ".join(_BASE_FLAGS).encode(), repr(_ARCH_FLAGS).encode(), _cpu_id().encode()):
            key.update(part)
            key.update(b"\0")
        folder = cache_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise KernelBuildError(
                f"cannot create the kernel cache folder {folder} ({e}); set MAMBAVL_KERNEL_CACHE to a writable folder."
            ) from e
        target = folder / f"{name}-{key.hexdigest()[:20]}.so"
        if not target.is_file():
            _compile(cxx, source, target)
        try:
            lib = ctypes.CDLL(str(target))
        except OSError as e:
            raise KernelBuildError(
                f"loading the compiled kernel {target} failed ({e}); delete it to force a rebuild."
            ) from e
        _loaded[name] = lib
        return lib
