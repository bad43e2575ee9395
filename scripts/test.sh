#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what is missing (protoc, etcd), checks
# formatting, clippy (-D warnings) and crate layering, starts etcd on loopback, runs every
# test (nextest when present, else cargo test) and the doctests, and stops etcd.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

ensure_packages protobuf-compiler etcd-server etcd-client curl

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "==> layering"
deploy/scripts/check-layering.sh

read -r ETCD_PID ETCD_DIR ETCD_ENDPOINT < <(scripts/start-etcd.sh)
trap 'kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; rm -rf "$ETCD_DIR"' EXIT
echo "==> etcd at $ETCD_ENDPOINT (pid $ETCD_PID)"
export JCS_TEST_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
export JCS_TEST_REQUIRE_ETCD=1

if cargo nextest --version >/dev/null 2>&1; then
  echo "==> cargo nextest run"
  cargo nextest run --workspace --locked --profile ci
else
  echo "==> cargo test (cargo-nextest not installed)"
  cargo test --workspace --locked
fi
echo "==> doctests"
cargo test --workspace --doc --locked
