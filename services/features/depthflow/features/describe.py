"""Text for ``depthflow features describe`` (one line per feature) and ``--names``."""

from __future__ import annotations

from depthflow.features.names import FEATURE_SET_VERSION, SPECS


def describe_names() -> str:
    """The 110 names, one per line, in order."""
    return "\n".join(s.name for s in SPECS) + "\n"


def describe_line(i: int) -> str:
    """One feature as a single line: index, name, formula, unit, window, default."""
    s = SPECS[i]
    return (
        f"{s.index:3d} {s.name} [{s.channel}/{s.group}]: {s.formula}; unit {s.unit}; "
        f"window {s.window}; default {s.default:g}"
    )


def describe() -> str:
    """Every feature of the set, one line each, preceded by a header line."""
    head = f"feature set {FEATURE_SET_VERSION}: {len(SPECS)} features"
    return "\n".join([head, *(describe_line(i) for i in range(len(SPECS)))]) + "\n"
