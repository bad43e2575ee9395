#!/usr/bin/env bash
# Fuzz the /v1 API with schemathesis (from PyPI) against a real `jcs standalone` on a free
# loopback port with a temp data dir. Schemathesis reads the gateway's own /openapi.json,
# generates valid and invalid requests for every operation and checks that no answer is a
# 5xx, and that status codes, content types and bodies conform to the document.
#
#   scripts/schemathesis.sh                  # debug build of `jcs`, 20 examples per operation
#   JCS_BIN=target/release/jcs scripts/schemathesis.sh
#   JCS_SCHEMATHESIS_MAX_EXAMPLES=200 scripts/schemathesis.sh   # a longer local run
#   scripts/schemathesis.sh --include-path /v1/object/upload    # extra args go to `st run`
#
# Schemathesis is installed once into a venv under target/ (python3-venv from apt when the
# venv module is missing). Exits non-zero when a check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

SCHEMATHESIS_VERSION=${JCS_SCHEMATHESIS_VERSION:-4.32.5}
VENV=${JCS_SCHEMATHESIS_VENV:-target/schemathesis-venv}
VENV=$(realpath -m "$VENV")
MAX_EXAMPLES=${JCS_SCHEMATHESIS_MAX_EXAMPLES:-20}
MAX_TIME=${JCS_SCHEMATHESIS_MAX_TIME:-150}
CHECKS=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection

python3 -c 'import venv, ensurepip' 2>/dev/null || ensure_packages python3-venv
if ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "==> installing schemathesis $SCHEMATHESIS_VERSION into $VENV" >&2
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

if [ -z "${JCS_BIN:-}" ]; then
  cargo build -q --locked -p cli --bin jcs
  JCS_BIN=target/debug/jcs
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/jcs-schemathesis.XXXXXX")
LOG="$WORK/jcs.log"
"$JCS_BIN" --log-json --log warn,cli=info standalone --data-dir "$WORK/data" --listen 127.0.0.1:0 \
  --max-wait-ms 100 >"$LOG" 2>&1 &
# (--max-wait-ms: generated getTask?waitMs= long polls on tasks that stay Pending must not
# hold the run for the default 20 s each.)
JCS_PID=$!
trap 'kill "$JCS_PID" 2>/dev/null || true; wait "$JCS_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT

# `jcs standalone` logs `"api":"127.0.0.1:<port>"` once every part is listening.
ADDR=
for _ in $(seq 1 600); do
  ADDR=$(grep -o '"api":"127\.0\.0\.1:[0-9]*"' "$LOG" | head -n1 | cut -d'"' -f4 || true)
  [ -n "$ADDR" ] && break
  if ! kill -0 "$JCS_PID" 2>/dev/null; then
    echo "jcs standalone exited; log:" >&2; cat "$LOG" >&2; exit 1
  fi
  sleep 0.1
done
if [ -z "$ADDR" ]; then
  echo "jcs standalone did not become ready; log:" >&2; cat "$LOG" >&2; exit 1
fi
echo "==> schemathesis against http://$ADDR (max $MAX_EXAMPLES examples per operation)" >&2

# Run from the temp dir: schemathesis keeps a `.schemathesis/` cache in its working directory.
status=0
(cd "$WORK" && "$VENV/bin/st" run "http://$ADDR/openapi.json" \
  --checks "$CHECKS" \
  --max-examples "$MAX_EXAMPLES" \
  --max-time "$MAX_TIME" \
  --workers 1 \
  --request-timeout 30 \
  --seed "${JCS_SCHEMATHESIS_SEED:-$RANDOM}" \
  --generation-database none \
  --no-color \
  "$@") || status=$?

if ! kill -0 "$JCS_PID" 2>/dev/null; then
  echo "jcs standalone died during the run; log:" >&2; cat "$LOG" >&2; exit 1
fi
if [ "$status" -ne 0 ]; then
  echo "==> schemathesis failed; server log (warnings and errors):" >&2
  tail -n 50 "$LOG" >&2
fi
exit "$status"
