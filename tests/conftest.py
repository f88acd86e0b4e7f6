"""Fixtures and settings shared by every test module."""

import os

import pytest
from hypothesis import settings

# Read by huggingface_hub, transformers and tokenizers when they are imported, so set before any test module imports
# them (conftest.py is imported first): no test reaches the network (whatever the caller's environment says), and the
# tokenizers' thread pool does not warn or deadlock in forked data-loader workers. Set here only: subprocesses
# inherit them, and a test that serves a Hub of its own (test_hub.py) turns offline mode off for its subprocesses.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

# Hypothesis' example database would write .hypothesis/ into the repository while
# test_reliability_hygiene.py, on another pytest-xdist worker, checks that nothing writes there.
settings.register_profile("mambavl", database=None)
settings.load_profile("mambavl")


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: a test that builds an ``Accelerator`` (the training scripts run
    in-process for ``--dry_run``) must not fix the mixed precision or device of the tests after it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture(scope="session")
def tiny_saved(tmp_path_factory):
    """(folder, model, processor): a seeded ``tiny`` model and its processor saved together, built once a session
    (once a worker under pytest-xdist) for the tests that only read them; a test that writes into the folder makes
    its own with helpers/tiny_checkpoint.py."""
    from helpers.tiny_checkpoint import tiny_checkpoint

    folder = tmp_path_factory.mktemp("tiny-saved")
    model, processor = tiny_checkpoint(folder)
    return folder, model, processor


@pytest.fixture(scope="module")
def train_script(request):
    """examples/train_ek100.py imported as a module, a fresh import for each test module that asks for it."""
    from helpers.scripts import EXAMPLES, import_script

    yield from import_script(EXAMPLES / "train_ek100.py", f"train_ek100_for_{request.module.__name__}")


@pytest.fixture(scope="module")
def eval_script(request):
    """examples/eval_ek100.py imported as a module, a fresh import for each test module that asks for it."""
    from helpers.scripts import EXAMPLES, import_script

    yield from import_script(EXAMPLES / "eval_ek100.py", f"eval_ek100_for_{request.module.__name__}")


def pytest_configure(config: pytest.Config) -> None:
    """On a pytest-xdist worker, the cores are shared with the other workers: without this, n workers (and the
    subprocesses they start) each run one PyTorch / OpenMP thread per core and wait on each other's descheduled
    threads."""
    worker = getattr(config, "workerinput", None)
    if worker is not None:
        threads = max(1, (os.cpu_count() or 1) // int(worker["workercount"]))
        os.environ.setdefault("OMP_NUM_THREADS", str(threads))
        import torch

        torch.set_num_threads(threads)


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # before xdist's own; only when xdist is installed
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadscope`` (`make test`): a module's tests go to one worker only when they share module state;
    see helpers/scheduling.py."""
    if config.getvalue("dist") != "loadscope":
        return None
    from helpers.scheduling import ModuleStateScheduling

    return ModuleStateScheduling(config, log)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On a pytest-xdist worker the ``slow`` tests come first (a stable sort: the rest keep their order), so that
    the scheduler hands out the long runs at once. Every worker sorts the same collection the same way, as xdist
    requires; a run in one process keeps the file order."""
    if hasattr(config, "workerinput"):
        items.sort(key=lambda item: item.get_closest_marker("slow") is None)
