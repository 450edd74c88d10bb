"""The mypyc-compiled features engine modules (``deploy/local/build-native.sh``) are current.

A compiled module takes precedence over its ``.py`` file on import, so an edit that was not
recompiled would silently run the old code. ``make install`` recompiles whenever a source
changes; this catches a run that bypassed it.
"""

from __future__ import annotations

from pathlib import Path

import depthflow.features
from depthflow.common.testing.native import assert_compiled_current


def test_compiled_modules_match_their_sources() -> None:
    assert_compiled_current(Path(depthflow.features.__file__).parent)
