"""The mypyc-compiled modules of a package (``deploy/local/build-native.sh``) are current.

A compiled module takes precedence over its ``.py`` file on import, so an edit that was not
recompiled would silently run the old code. ``make install`` recompiles whenever a source
changes; the services' ``test_native`` tests catch a run that bypassed it."""

from __future__ import annotations

import hashlib
from pathlib import Path


def stale_compiled(package: Path) -> list[str]:
    """The sources in ``package`` whose compiled extension no longer matches them (by the
    sha256 the build recorded in ``<service root>/build/native-sources.sha256``); empty with
    nothing compiled. Compiled modules without a manifest fail the assertion here."""
    compiled = [p for p in sorted(package.glob("*.so")) if "__mypyc" not in p.name]
    if not compiled:
        return []
    manifest = package.parent.parent / "build" / "native-sources.sha256"
    assert manifest.exists(), f"compiled modules without {manifest}: run make install"
    recorded = {}
    for line in manifest.read_text().splitlines():
        digest, path = line.split(maxsplit=1)
        recorded[Path(path).name] = digest
    sources = (package / (p.name.split(".", 1)[0] + ".py") for p in compiled)
    return [
        s.name
        for s in sources
        if recorded.get(s.name) != hashlib.sha256(s.read_bytes()).hexdigest()
    ]


def assert_compiled_current(package: Path) -> None:
    """Fail when a compiled module of ``package`` is older than its source: the stale code is
    what imports. Passes with nothing compiled (pure Python)."""
    stale = stale_compiled(package)
    assert not stale, (
        f"{', '.join(stale)} changed since they were compiled, and the stale compiled code is "
        "what imports: run make install (or deploy/local/build-native.sh --clean)"
    )
