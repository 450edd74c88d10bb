"""The mypyc-compiled simulator modules (``deploy/local/build-native.sh``) are current.

A compiled module takes precedence over its ``.py`` file on import, so an edit that was not
recompiled would silently run the old code. ``make install`` recompiles whenever a source
changes; this catches a run that bypassed it. With nothing compiled (pure Python) it passes.
"""

from __future__ import annotations

from pathlib import Path

import depthflow.sim
from depthflow.common.testing.native import stale_compiled

PACKAGE = Path(depthflow.sim.__file__).parent


def test_compiled_modules_match_their_sources() -> None:
    stale = stale_compiled(PACKAGE)
    assert not stale, (
        f"{', '.join(stale)} changed since they were compiled, and the stale compiled code is "
        "what imports: run make install (or deploy/local/build-native.sh --clean)"
    )
