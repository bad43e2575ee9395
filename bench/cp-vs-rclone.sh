#!/usr/bin/env bash
# `jcs cp -r` of a tree of N small files (default 1000 x 100 KiB) into `jcs standalone`
# (release build), next to `rclone copy` of the same tree to a directory on the same disk,
# with the same parallelism, in the same run. Then the download back with `jcs cp -r`, next
# to `rclone copy` of rclone's copy to another directory (the same read-back for rclone).
# Prints seconds, files/s and the ratio rclone time / jcs time (> 1: jcs is faster).
#
#   bench/cp-vs-rclone.sh [N] [SIZE_KIB] [JOBS]      (default 1000 100 8)
#   BENCH_DIR=/some/disk bench/cp-vs-rclone.sh
#   JCS_BIN=/path/to/jcs bench/cp-vs-rclone.sh      # a given (release) binary, no build
#   BENCH_CP_ARGS="--pack-files 64 --pack-bytes 16MiB" bench/cp-vs-rclone.sh   # extra `jcs cp` flags
#   BENCH_CP_ROUNDS=3 bench/cp-vs-rclone.sh          # rounds (default 3), medians reported
# Each round writes a fresh tree (new random content, so no round deduplicates against an
# earlier one), then uploads it with rclone and with jcs, then downloads it back with both,
# each pair in alternating order; the load average before and after is printed, since both
# tools share the machine's cores. Seconds are medians over the rounds; the ratio columns
# are the medians of the per-round ratios (the goal line uses the upload one).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
ensure_packages curl rclone

N=${1:-1000}
SIZE_KIB=${2:-100}
JOBS=${3:-8}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jcs-bench-cp.XXXXXX")
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
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
per_s() { awk -v n="$N" -v s="$1" 'BEGIN { printf "%.0f", n / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

ROUNDS=${BENCH_CP_ROUNDS:-3}
make_tree() { # dir: N files of SIZE_KIB KiB of fresh random bytes in 10 directories
  for i in $(seq 0 $((N - 1))); do
    d="$1/d$((i % 10))"
    mkdir -p "$d"
    head -c "$((SIZE_KIB * 1024))" /dev/urandom > "$d/f$i.bin"
  done
  sync
}

PORT=$(( 30000 + RANDOM % 20000 ))
"$JCS" --log warn standalone --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" &
JCS_PID=$!
export JCS_URL="http://127.0.0.1:$PORT" JCS_STATE_DIR="$WORK/state" JCS_CONFIG="$WORK/empty.toml"
: > "$JCS_CONFIG"
for _ in $(seq 1 300); do curl -fsS "$JCS_URL/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
"$JCS" -q bucket create bench >/dev/null
"$JCS" -q package create jcs://bench/p >/dev/null

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for f in rclone.s up.s ratio rclone-down.s down.s down-ratio; do : > "$WORK/$f"; done
for r in $(seq 1 "$ROUNDS"); do
  echo "==> round $r/$ROUNDS: writing $N files of $SIZE_KIB KiB" >&2
  rm -rf "$WORK/tree" "$WORK/rclone-dst" "$WORK/rclone-down" "$WORK/down"
  make_tree "$WORK/tree"
  rclone_round() {
    t0=$(now); rclone copy --transfers "$JOBS" --checkers "$JOBS" "$WORK/tree" "$WORK/rclone-dst"; sync; t1=$(now)
    RCLONE_S=$(secs "$t0" "$t1")
  }
  jcs_round() {
    # shellcheck disable=SC2086 # BENCH_CP_ARGS is a list of flags
    t0=$(now); "$JCS" -q cp -r --jobs "$JOBS" ${BENCH_CP_ARGS:-} "$WORK/tree" "jcs://bench/p/tree$r"; sync; t1=$(now)
    UP_S=$(secs "$t0" "$t1")
  }
  if [ $((r % 2)) = 1 ]; then rclone_round; jcs_round; else jcs_round; rclone_round; fi
  COUNT=$("$JCS" --json ls -r "jcs://bench/p/tree$r" | wc -l)
  [ "$COUNT" = "$N" ] || { echo "uploaded $COUNT objects, expected $N" >&2; exit 1; }
  # Back down: jcs from the gateway, rclone from its own copy (both to a new directory).
  rclone_down() {
    t0=$(now); rclone copy --transfers "$JOBS" --checkers "$JOBS" "$WORK/rclone-dst" "$WORK/rclone-down"; sync; t1=$(now)
    RCLONE_DOWN_S=$(secs "$t0" "$t1")
  }
  jcs_down() {
    t0=$(now); "$JCS" -q cp -r --jobs "$JOBS" "jcs://bench/p/tree$r" "$WORK/down"; sync; t1=$(now)
    DOWN_S=$(secs "$t0" "$t1")
  }
  if [ $((r % 2)) = 1 ]; then rclone_down; jcs_down; else jcs_down; rclone_down; fi
  diff -r "$WORK/tree" "$WORK/down" >/dev/null || { echo "downloaded tree differs" >&2; exit 1; }
  diff -r "$WORK/tree" "$WORK/rclone-down" >/dev/null || { echo "rclone's copy differs" >&2; exit 1; }
  echo "    upload: rclone $RCLONE_S s, jcs $UP_S s, ratio $(ratio "$RCLONE_S" "$UP_S");" \
    "download: rclone $RCLONE_DOWN_S s, jcs $DOWN_S s, ratio $(ratio "$RCLONE_DOWN_S" "$DOWN_S") (load $(cut -d' ' -f1 /proc/loadavg))" >&2
  echo "$RCLONE_S" >> "$WORK/rclone.s"; echo "$UP_S" >> "$WORK/up.s"; echo "$(ratio "$RCLONE_S" "$UP_S")" >> "$WORK/ratio"
  echo "$RCLONE_DOWN_S" >> "$WORK/rclone-down.s"; echo "$DOWN_S" >> "$WORK/down.s"; echo "$(ratio "$RCLONE_DOWN_S" "$DOWN_S")" >> "$WORK/down-ratio"
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
RCLONE_S=$(median < "$WORK/rclone.s"); UP_S=$(median < "$WORK/up.s")
RCLONE_DOWN_S=$(median < "$WORK/rclone-down.s"); DOWN_S=$(median < "$WORK/down.s")
R=$(median < "$WORK/ratio"); RD=$(median < "$WORK/down-ratio")

echo
echo "load average before: $LOAD_BEFORE, after: $LOAD_AFTER"
echo "per-round ratios: upload $(tr '\n' ' ' < "$WORK/ratio"); download $(tr '\n' ' ' < "$WORK/down-ratio")"
printf '%-44s %10s %10s %16s\n' "step ($N x $SIZE_KIB KiB, $JOBS jobs, median of $ROUNDS)" "seconds" "files/s" "rclone/jcs (med.)"
printf '%-44s %10s %10s %16s\n' "rclone copy local -> local (upload baseline)" "$RCLONE_S" "$(per_s "$RCLONE_S")" "1.00"
printf '%-44s %10s %10s %16s\n' "jcs cp -r upload" "$UP_S" "$(per_s "$UP_S")" "$R"
printf '%-44s %10s %10s %16s\n' "rclone copy its copy -> local (down baseline)" "$RCLONE_DOWN_S" "$(per_s "$RCLONE_DOWN_S")" "1.00"
printf '%-44s %10s %10s %16s\n' "jcs cp -r download" "$DOWN_S" "$(per_s "$DOWN_S")" "$RD"
echo "ratio jcs cp / rclone: $R (goal > 1.00: $(awk -v r="$R" 'BEGIN { print (r > 1.0) ? "met" : "NOT met" }'))"
