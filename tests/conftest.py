"""Fixtures and settings shared by every test module."""

import os

import pytest
from hypothesis import settings

# Read by huggingface_hub, transformers and tokenizers when they are imported, so set before any test module imports
# them (conftest.py is imported first): no test reaches the network, and the tokenizers' thread pool does not warn
# or deadlock in forked data-loader workers. Subprocesses inherit them.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

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
