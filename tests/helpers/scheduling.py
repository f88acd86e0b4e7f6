"""How `make test` shares the suite between pytest-xdist workers (``--dist loadscope``, made by conftest.py).

A test module that sets up a fixture once per module or class (a trained run, a server, a data set) is one unit of
work, so that one worker builds it once; every other test is a unit of its own, so that the short tests fill the
gaps. The workers collect the ``slow`` tests first (conftest.py), and the units go out in collection order: the
long runs start at once and the last minutes are not one worker running a long test alone.

xdist's own ``--dist loadgroup`` would say this with ``xdist_group`` marks, but pytest-xdist 3.8 tags the node ids
through an attribute pytest 9 no longer reads, so the marks group nothing; the scheduler below decides from the
test file instead.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from xdist.scheduler import LoadScopeScheduling

_SHARED_FIXTURE = re.compile(r"""fixture\(\s*scope\s*=\s*["'](module|class|package)["']""")


@cache
def shares_module_state(test_file: str) -> bool:
    """Whether the test file defines a fixture set up once per module, class or package (read as text: the
    controller process that schedules has collected nothing)."""
    path = Path(test_file)
    try:
        return bool(_SHARED_FIXTURE.search(path.read_text(encoding="utf-8")))
    except OSError:  # a node id that is not a file path (rootdir elsewhere): keep the module together
        return True


class ModuleStateScheduling(LoadScopeScheduling):
    """``loadscope`` with a finer split: a module's tests travel together only when they share module state."""

    def _split_scope(self, nodeid: str) -> str:
        test_file = nodeid.split("::", 1)[0]
        root = Path(str(self.config.rootpath))
        return test_file if shares_module_state(str(root / test_file)) else nodeid
