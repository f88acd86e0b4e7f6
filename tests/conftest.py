"""Fixtures shared by every test module."""

import pytest


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """Accelerate keeps one process-wide state: a test that builds an ``Accelerator`` (the training scripts run
    in-process for ``--dry_run``) must not fix the mixed precision or device of the tests after it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
