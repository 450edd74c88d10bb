#!/usr/bin/env bash
# Tools the deployment tests need, installed when missing (idempotent; `make test` calls it):
#   promtool + prometheus   Debian's `prometheus` package (apt-get)
#   kustomize               pinned, built with `go install` from the Go module proxy into .local/bin
#
#   deploy/tools.sh            install what is missing, print where each tool is
#   deploy/tools.sh --check    only check; exit 1 naming what is missing
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="${DEPTHFLOW_LOCAL_DIR:-$ROOT/.local}"
BIN="$LOCAL/bin"
KUSTOMIZE_VERSION="v5.8.1"

say() { printf '[tools] %s\n' "$*" >&2; }
die() { printf '[tools] ERROR: %s\n' "$*" >&2; exit 1; }

have_prometheus() { command -v promtool >/dev/null && command -v prometheus >/dev/null; }
have_kustomize() {
  [ -x "$BIN/kustomize" ] && "$BIN/kustomize" version 2>/dev/null | grep -q "${KUSTOMIZE_VERSION}"
}

if [ "${1:-}" = "--check" ]; then
  missing=()
  have_prometheus || missing+=("prometheus/promtool (apt-get install prometheus)")
  have_kustomize || missing+=("kustomize $KUSTOMIZE_VERSION in $BIN")
  [ ${#missing[@]} -eq 0 ] || die "missing: ${missing[*]} - run deploy/tools.sh"
  exit 0
fi

if ! have_prometheus; then
  [ "$(id -u)" = 0 ] || die "need root to apt-get install prometheus; install it and retry"
  say "installing prometheus (promtool) from Debian's packages"
  if [ ! -f "$LOCAL/.apt-updated" ]; then
    apt-get update -qq >&2 && mkdir -p "$LOCAL" && touch "$LOCAL/.apt-updated"
  fi
  # --no-install-recommends: the exporters it recommends are not needed; the package's
  # service is not started (no systemd here) and the tests run their own server.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >&2 \
    || die "apt-get could not install prometheus"
  have_prometheus || die "prometheus installed but promtool/prometheus not on PATH"
fi

if ! have_kustomize; then
  command -v go >/dev/null || die "go is needed to build kustomize (apt-get install golang-go)"
  say "building kustomize $KUSTOMIZE_VERSION with go install (Go module proxy)"
  mkdir -p "$BIN"
  GOBIN="$BIN" GOFLAGS=-buildvcs=false go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" >&2 \
    || die "go install kustomize failed (is the Go module proxy reachable?)"
  have_kustomize || die "kustomize built but '$BIN/kustomize version' does not say $KUSTOMIZE_VERSION"
fi

say "promtool: $(command -v promtool)  kustomize: $BIN/kustomize"
