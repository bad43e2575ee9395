#!/usr/bin/env bash
# Build and start `jcs standalone`: coordinator + agent + gateway in one process, metadata
# in ./jcs-data/meta.redb, one Local user space in ./jcs-data/space, /v1 on 127.0.0.1:7890.
# Extra arguments go to `jcs standalone` (e.g. --data-dir /srv/jcs --listen 0.0.0.0:7890).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
exec cargo run --release --locked --bin jcs -- standalone "$@"
