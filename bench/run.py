"""`make bench`: every benchmark in one run, one table, JSON in bench/results/.

Each section is a module ``bench/<name>_bench.py`` with ``run() -> dict``; figures are reported
next to a ceiling measured in the same run (raw Kafka produce, raw COPY, ...), as ratios.
A section that fails is reported as failed and makes the run exit non-zero.
"""

from __future__ import annotations

import importlib
import importlib.util
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import orjson

SECTIONS = [
    "foundation",
    "sim",
    "collector",
    "features",
    "strategy",
    "executor",
    "api",
    "backtest",
    "e2e",
]
RESULTS = Path(__file__).parent / "results"


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        out.append((prefix, value))


def main(argv: list[str]) -> int:
    wanted = argv or SECTIONS
    report: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": __import__("os").cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "git": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        "sections": {},
    }
    failed = []
    for name in wanted:
        module = f"bench.{name}_bench"
        if importlib.util.find_spec(module) is None:
            continue
        print(f"== {name} ...", file=sys.stderr, flush=True)
        started = time.perf_counter()
        try:
            result = importlib.import_module(module).run()
        except Exception as exc:
            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(name)
        result["_wall_s"] = round(time.perf_counter() - started, 1)
        report["sections"][name] = result
    rows: list[tuple[str, Any]] = []
    _flatten("", report["sections"], rows)
    width = max((len(k) for k, _ in rows), default=10)
    print(f"\n{'metric'.ljust(width)}  value")
    print(f"{'-' * width}  {'-' * 14}")
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    RESULTS.mkdir(exist_ok=True)
    data = orjson.dumps(report, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    (RESULTS / f"{stamp}.json").write_bytes(data)
    (RESULTS / "latest.json").write_bytes(data)
    print(f"\nwritten: bench/results/{stamp}.json (and latest.json)")
    if failed:
        print(f"FAILED sections: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
