#!/usr/bin/env bash
# 4 KiB uploads by 16 concurrent clients through the gateway on etcd, next to raw etcd puts
# of 4 KiB values with the same concurrency, in the same run. Starts its own etcd.
# etcd's data and the agent's space live on the same filesystem (BENCH_DIR, default
# /dev/shm) so neither side gets cheaper storage than the other.
#   bench/small-uploads.sh [N] [CONCURRENCY] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
ensure_packages etcd-server etcd-client
export ETCD_TMP=${BENCH_DIR:-/dev/shm} TMPDIR=${BENCH_DIR:-/dev/shm}
read -r ETCD_PID ETCD_DIR ETCD_ENDPOINT < <(scripts/start-etcd.sh)
trap 'kill "$ETCD_PID" 2>/dev/null || true; wait "$ETCD_PID" 2>/dev/null || true; rm -rf "$ETCD_DIR"' EXIT
export JCS_TEST_ETCD_ENDPOINTS="$ETCD_ENDPOINT"
RUST_LOG=${RUST_LOG:-warn} cargo run --release --locked -p integration-tests --example bench_small_uploads -- "${1:-3000}" "${2:-16}" "${3:-3}"
