#!/usr/bin/env bash
# The whole test suite, exactly as CI runs it: see .ci/run (installs protoc and etcd when
# missing, fmt, clippy -D warnings, layering, etcd on loopback, every test, doctests).
set -euo pipefail
exec "$(dirname "$0")/../.ci/run" "$@"
