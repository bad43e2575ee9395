#!/usr/bin/env bash
# Peak RSS of each process while a large file (default 4 GiB) goes up and down through
# `jcs standalone` (release build) with the `jcs` CLI as the client (multipart upload,
# ranged download): the server's VmHWM (/proc/PID/status, reset between the two steps
# through /proc/PID/clear_refs) and the client's "Maximum resident set size" from
# `/usr/bin/time -v`. Goal: <= 100 MiB for every process (issue 7); the script prints
# "met" / "NOT met" and exits 1 when any process went over the limit (the regression guard
# of the memory bounds in docs/architecture.md: RSS is only meaningful on a release build,
# so this is a benchmark, not a unit test).
#
#   bench/rss.sh [SIZE_MIB]           (default 4096)
#   BENCH_DIR=/some/disk bench/rss.sh
#   JCS_BIN=/path/to/jcs bench/rss.sh    # a given (release) binary, no build
#   BENCH_RSS_CP_ARGS="-j 1" bench/rss.sh # extra flags of the upload's `jcs cp`
#   BENCH_RSS_LIMIT_MIB=60 bench/rss.sh   # another limit (default 100)
# Disk: the source is sparse (no blocks); the server stores the parts and then the
# concatenated object (about 2 x SIZE until shard GC), and the download writes SIZE more.
# Everything is deleted on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
ensure_packages curl time

SIZE_MIB=${1:-4096}
LIMIT_MIB=${BENCH_RSS_LIMIT_MIB:-100}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jcs-bench-rss.XXXXXX")
JCS_PID=""
cleanup() { [ -n "$JCS_PID" ] && kill "$JCS_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -n "${JCS_BIN:-}" ]; then
  JCS=$(realpath "$JCS_BIN")
else
  echo "==> building jcs (release)" >&2
  cargo build --release --locked --bin jcs >&2
  JCS=$PWD/target/release/jcs
fi

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }
rate() { awk -v mib="$SIZE_MIB" -v s="$1" 'BEGIN { printf "%.0f", mib / s }'; }
hwm_mib() { awk '/^VmHWM/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
rss_mib() { awk '/^VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$1/status"; }
# Peak RSS (MiB) of a command run under `/usr/bin/time -v`, from its report file.
time_mib() { awk -F: '/Maximum resident set size/ { printf "%d", $2 / 1024 }' "$1"; }

truncate -s "$((SIZE_MIB * 1024 * 1024))" "$WORK/src.bin"

PORT=$(( 30000 + RANDOM % 20000 ))
"$JCS" --log warn standalone --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" &
JCS_PID=$!
export JCS_URL="http://127.0.0.1:$PORT" JCS_STATE_DIR="$WORK/state" JCS_CONFIG="$WORK/empty.toml"
: > "$JCS_CONFIG"
for _ in $(seq 1 300); do curl -fsS "$JCS_URL/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
"$JCS" -q bucket create bench >/dev/null
"$JCS" -q package create jcs://bench/p >/dev/null
IDLE_MIB=$(rss_mib "$JCS_PID")

echo 5 > "/proc/$JCS_PID/clear_refs" # reset VmHWM: the upload's peak only
t0=$(now)
# shellcheck disable=SC2086 # BENCH_RSS_CP_ARGS is a list of flags
/usr/bin/time -v -o "$WORK/up.time" "$JCS" -q cp ${BENCH_RSS_CP_ARGS:-} "$WORK/src.bin" jcs://bench/p/big.bin
t1=$(now)
UP_S=$(secs "$t0" "$t1")
SRV_UP=$(hwm_mib "$JCS_PID"); CLI_UP=$(time_mib "$WORK/up.time")

echo 5 > "/proc/$JCS_PID/clear_refs"
t0=$(now)
/usr/bin/time -v -o "$WORK/down.time" "$JCS" -q cp jcs://bench/p/big.bin "$WORK/down.bin"
t1=$(now)
DOWN_S=$(secs "$t0" "$t1")
SRV_DOWN=$(hwm_mib "$JCS_PID"); CLI_DOWN=$(time_mib "$WORK/down.time")
# (the client checked the content hash against the object's before renaming the file)
[ "$(stat -c %s "$WORK/down.bin")" = "$((SIZE_MIB * 1024 * 1024))" ] || { echo "downloaded file has the wrong size" >&2; exit 1; }
rm -f "$WORK/down.bin"

printf '\n%-36s %10s %10s %14s\n' "step (${SIZE_MIB} MiB, jcs cp)" "seconds" "MiB/s" "peak RSS MiB"
printf '%-36s %10s %10s %14s\n' "jcs standalone, idle after start" "" "" "$IDLE_MIB"
printf '%-36s %10s %10s %14s\n' "upload: jcs standalone (VmHWM)" "$UP_S" "$(rate "$UP_S")" "$SRV_UP"
printf '%-36s %10s %10s %14s\n' "upload: jcs cp client (time -v)" "" "" "$CLI_UP"
printf '%-36s %10s %10s %14s\n' "download: jcs standalone (VmHWM)" "$DOWN_S" "$(rate "$DOWN_S")" "$SRV_DOWN"
printf '%-36s %10s %10s %14s\n' "download: jcs cp client (time -v)" "" "" "$CLI_DOWN"
MAX=$(printf '%s\n' "$SRV_UP" "$CLI_UP" "$SRV_DOWN" "$CLI_DOWN" | sort -n | tail -1)
if [ "$MAX" -le "$LIMIT_MIB" ]; then
  echo "peak RSS of any process: $MAX MiB (goal <= $LIMIT_MIB MiB: met)"
else
  echo "peak RSS of any process: $MAX MiB (goal <= $LIMIT_MIB MiB: NOT met)"
  exit 1
fi
