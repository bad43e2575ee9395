#!/usr/bin/env bash
# listByPath over a package of N objects (default 100,000) in the standalone configuration
# (redb metadata), with a raw metadata range scan of the same keys as the baseline.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
RUST_LOG=${RUST_LOG:-warn} cargo run --release --locked -p integration-tests --example bench_list -- "${1:-100000}"
