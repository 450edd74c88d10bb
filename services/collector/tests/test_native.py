"""The mypyc-compiled collector modules (``deploy/local/build-native.sh``) are current.

A compiled module takes precedence over its ``.py`` file on import, so an edit that was not
recompiled would silently run the old code. ``make install`` recompiles whenever a source
changes; this catches a run that bypassed it. With nothing compiled (pure Python) it passes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import depthflow.collector

PACKAGE = Path(depthflow.collector.__file__).parent
MANIFEST = PACKAGE.parent.parent / "build" / "native-sources.sha256"


def test_compiled_modules_match_their_sources() -> None:
    compiled = sorted(PACKAGE.glob("*.so"))
    if not compiled:
        return  # pure Python: nothing can be stale
    assert MANIFEST.exists(), f"compiled modules without {MANIFEST}: run make install"
    recorded = {}
    for line in MANIFEST.read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        recorded[Path(path).name] = digest
    stale = []
    for extension in compiled:
        source = PACKAGE / (extension.name.split(".", 1)[0] + ".py")
        if recorded.get(source.name) != hashlib.sha256(source.read_bytes()).hexdigest():
            stale.append(source.name)
    assert not stale, (
        f"{', '.join(stale)} changed since they were compiled, and the stale compiled code is "
        "what imports: run make install (or deploy/local/build-native.sh --clean)"
    )
