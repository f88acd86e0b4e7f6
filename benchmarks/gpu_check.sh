#!/usr/bin/env bash
# The GPU check, end to end on a CUDA machine without network access (see benchmarks/gpu_check.py for the stages):
#
#   bash benchmarks/gpu_check.sh [driver options, e.g. --out benchmarks/results/gpu_check.json]
#   bash benchmarks/gpu_check.sh --dry-run     # on a CPU machine: the same steps, CPU tensors
#
# It uses the machine's own torch / transformers / triton. When modeling_mambavl is not importable it makes a virtual
# environment that sees the system packages (GPU_CHECK_VENV, default /tmp/mambavl-gpu-check) and installs into it,
# --no-index --no-deps: this tree (editable, or the carried wheel) and, where the machine lacks them, pytest and a
# prebuilt mamba-ssm from benchmarks/wheels/ (`make gpu-wheels` builds this package's and pytest's wheels; put a
# mamba_ssm-*.whl matching the machine's torch and CUDA there to time mamba-ssm's kernel too). Each step that cannot
# run is reported and the check goes on.
set -u
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
WHEELS="benchmarks/wheels"
VENV="${GPU_CHECK_VENV:-/tmp/mambavl-gpu-check}"

say() { echo "[gpu_check.sh] $*"; }

importable() { "$1" -c "import modeling_mambavl, pytest" >/dev/null 2>&1; }

if ! importable "$PYTHON"; then
    if [ ! -x "$VENV/bin/python" ]; then
        "$PYTHON" -m venv --system-site-packages "$VENV" || say "could not make $VENV; installing into $PYTHON's site"
    fi
    [ -x "$VENV/bin/python" ] && PYTHON="$VENV/bin/python"
    # pytest and mamba-ssm from the carried wheels, unless the machine has them (its own are kept).
    for wheel in "$WHEELS"/*.whl; do
        [ -e "$wheel" ] || { say "no wheels in $WHEELS (run 'make gpu-wheels' where a package index is reachable)"; break; }
        name="$(basename "$wheel" | cut -d- -f1)"
        [ "$name" = "mambavl" ] && continue
        "$PYTHON" -c "import importlib.util, sys; sys.exit(importlib.util.find_spec('${name,,}') is None)" 2>/dev/null \
            && continue
        "$PYTHON" -m pip install --quiet --no-index --no-deps "$wheel" || say "could not install $wheel"
    done
    # This tree, editable: its source folders are then the package (a wheel's copy would be shadowed by them when a
    # command runs from here, the repository root). Offline: no build isolation, the machine's setuptools.
    if ! "$PYTHON" -m pip install --quiet --no-index --no-deps --no-build-isolation -e .; then
        say "editable install failed (needs setuptools >= 64): installing the carried wheel instead"
        "$PYTHON" -m pip install --quiet --no-index --no-deps "$WHEELS"/mambavl-*.whl || say "no usable mambavl wheel"
        export PYTHONSAFEPATH=1  # Python >= 3.11: the working directory is not put first on sys.path
    fi
fi
"$PYTHON" -c "import modeling_mambavl" || { say "modeling_mambavl cannot be imported with $PYTHON: stopping"; exit 2; }
say "python: $PYTHON"
exec "$PYTHON" benchmarks/gpu_check.py "$@"
