#!/usr/bin/env bash
# Compile the per-message / per-level hot modules with mypyc, in place.
#
#   deploy/local/build-native.sh services/collector/depthflow/collector/parsers.py ...
#   deploy/local/build-native.sh --clean      # remove every compiled artifact: pure Python again
#
# The files may come from several services' package roots (services/<service>, e.g. the
# collector's parsers and the backtest's level reader); each root is compiled on its own.
# Each module's extension (<module>.cpython-311-<arch>.so) lands next to its .py file and takes
# precedence on import (the project is installed editable from its source folders); mypyc's
# shared runtime for a root with several modules (<hash>__mypyc.cpython-311-<arch>.so) lands in
# that root, which is on sys.path. The .py files stay the source of truth and keep working
# without the .so files.
# `make install` runs this whenever one of the listed files changes (the Makefile owns the list).
# On success it writes each root's $MANIFEST (sha256 of each compiled source); the services'
# tests fail when a compiled module no longer matches its .py (tests/test_native.py).
# Any failure exits non-zero with the reason: there is no silent fallback to pure Python.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
MANIFEST=build/native-sources.sha256  # in each package root

die() { echo "build-native: ERROR: $*" >&2; exit 1; }

cd "$ROOT"
clean() {  # every service's compiled modules, not only those of the roots listed now
    local root
    for root in services/*; do
        [[ -d $root/depthflow ]] || continue
        rm -f "$root/$MANIFEST" "$root"/*__mypyc*.so
        find "$root/depthflow" -name '*.so' -delete
    done
}

if [[ ${1:-} == --clean ]]; then
    clean
    echo "build-native: compiled modules removed (pure Python)"
    exit 0
fi
(($#)) || die "usage: $0 FILE.py... | --clean (make install passes the files)"

# the files by package root (services/<service>), roots in the order given
roots=()
declare -A sources
for src in "$@"; do
    [[ $src =~ ^(services/[^/]+)/depthflow/.+\.py$ && -f $src ]] \
        || die "$src: not a .py file under services/<service>/depthflow"
    root=${BASH_REMATCH[1]}
    [[ -v "sources[$root]" ]] || roots+=("$root")
    sources[$root]+="$src "
done

# What mypyc needs besides mypy itself: setuptools (it drives the C build), a C compiler and
# the interpreter's headers.
[[ -x $PY ]] || die "$PY not found: run make install"
"$PY" -c 'import mypyc.build, setuptools' 2>/dev/null \
    || die "mypyc needs mypy (a dev dependency) and setuptools in $("$PY" -c 'import sys; print(sys.prefix)')"
command -v "${CC:-cc}" >/dev/null || die "no C compiler (${CC:-cc}); on Debian: apt-get install gcc"
"$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || die "no Python.h for $PY; on Debian's python3.11: apt-get install python3.11-dev"

clean  # nothing left over from an earlier module list
started=$SECONDS
count=0
for root in "${roots[@]}"; do
    read -ra files <<<"${sources[$root]}"
    modules=()
    for src in "${files[@]}"; do
        rel=${src#"$root"/}
        modules+=("${rel%.py}")
    done
    echo "build-native: compiling ${modules[*]//\//.} with mypyc (about 20 s)..."
    log=$root/build/mypyc.log
    mkdir -p "$root/build"
    # From the package root, so module names (depthflow.<service>.x) and the in-place output
    # paths follow from the file paths; the type-checking settings are the project's own.
    if ! (cd "$root" && MYPYPATH="$ROOT/libs/common" "$PY" -m mypyc \
        --config-file "$ROOT/pyproject.toml" "${files[@]#"$root"/}") >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        clean
        die "mypyc failed (full log: $log); make install stops here"
    fi

    # Every listed module must now import as the extension just built, not as its .py file.
    "$PY" - "$ROOT/$root" "${modules[@]}" <<'EOF' || { clean; die "a module does not import as the extension just built (from $ROOT/$root)"; }
import importlib, os, sys
bad = []
for path in sys.argv[2:]:
    module = importlib.import_module(path.replace("/", "."))
    where = module.__file__ or ""
    if where.endswith(".py") or not where.startswith(os.path.join(sys.argv[1], path)):
        bad.append(f"{module.__name__} imports from {where}")
if bad:
    sys.exit("\n".join(bad))
EOF
    sha256sum "${files[@]}" >"$root/$MANIFEST"
    count=$((count + ${#modules[@]}))
done
echo "build-native: done in $((SECONDS - started)) s ($count modules; undo: $0 --clean)"
