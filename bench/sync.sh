#!/usr/bin/env bash
# Sync FILES files x KIB KiB Local -> Local with a JCS sync task and with `rclone copy`
# (from apt), side by side in the same run: the first copy into an empty destination, then
# a re-sync with nothing changed. Each is measured ROUNDS times, JCS and rclone alternating
# (the machine's load hits both), and the table shows the median of each.
# JCS runs as `jcs standalone` (release); both trees live under BENCH_DIR. The JCS command
# timed is what a user runs: `jcs sync create --wait` (one process, like `rclone copy`).
#   bench/sync.sh [FILES] [KIB] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
ensure_packages curl jq rclone

FILES=${1:-1000}; KIB=${2:-100}; ROUNDS=${3:-5}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jcs-sync-bench.XXXXXX")
JCS_PID=""
cleanup() { [ -n "$JCS_PID" ] && kill "$JCS_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --locked --bin jcs >&2
JCS=target/release/jcs
echo "==> writing $FILES files of $KIB KiB" >&2
mkdir -p "$WORK/src"
for i in $(seq 1 "$FILES"); do
  d="$WORK/src/d$((i % 20))"; mkdir -p "$d"
  head -c $((KIB * 1024)) /dev/urandom > "$d/f$i.bin"
done
sync

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

PORT=$(( 30000 + RANDOM % 20000 ))
"$JCS" --log warn standalone --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" &
JCS_PID=$!
B="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do curl -fsS "$B/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
space() {
  curl -fsS -X POST "$B/v1/userSpace/create" -d "{\"name\":\"$1\",\"storage\":{\"type\":\"Local\",\"path\":\"$2\"},\"credential\":{\"type\":\"Local\"},\"shardStore\":null}" \
    | jq -r .data.userSpace.userSpaceID
}
SRC=$(space src "$WORK/src")

# One JCS pass into space $1: prints "end-to-end-seconds pass-seconds" (the pass = the run's
# start..end as the coordinator recorded them).
jcs_sync() {
  local t0 t1 out
  printf '{"trigger":{"type":"Once"},"mode":{"type":"Diff","includeSize":true,"includeModTime":true},"srcUserSpaceID":%s,"srcPath":"","destUserSpaceIDs":[%s],"destPathes":[""]}' \
    "$SRC" "$1" > "$WORK/task.json"
  t0=$(now)
  out=$("$JCS" sync create --url "$B" -q --json -f "$WORK/task.json" --wait)
  sync; t1=$(now)
  echo "$out" | jq -c '.status.runs[-1] | {filesCopied, filesSkipped, result}' >&2
  echo "$(secs "$t0" "$t1") $(echo "$out" | jq -r '.status.runs[-1] | def ms: (.[0:19] + "Z" | fromdate) * 1000 + (.[20:23] | tonumber); ((.endTime | ms) - (.startTime | ms)) / 1000')"
}
rclone_copy() { # destination directory; prints seconds
  local t0 t1
  t0=$(now); rclone copy "$WORK/src" "$1" --config /dev/null -q; sync; t1=$(now)
  secs "$t0" "$t1"
}

RF=""; JF=""; JFP=""; RA=""; JA=""; JAP=""
for r in $(seq 1 "$ROUNDS"); do
  echo "==> round $r: first copy into empty destinations" >&2
  rm -rf "$WORK/rclone-dst" "$WORK/jcs-dst-$((r - 1))"
  RF="$RF $(rclone_copy "$WORK/rclone-dst")"
  DST=$(space "dst$r" "$WORK/jcs-dst-$r")
  read -r e p < <(jcs_sync "$DST"); JF="$JF $e"; JFP="$JFP $p"
done
diff -r "$WORK/src" "$WORK/jcs-dst-$ROUNDS" >/dev/null || { echo "JCS copy differs from the source" >&2; exit 1; }
for r in $(seq 1 "$ROUNDS"); do
  echo "==> round $r: re-sync, nothing changed" >&2
  RA="$RA $(rclone_copy "$WORK/rclone-dst")"
  read -r e p < <(jcs_sync "$DST"); JA="$JA $e"; JAP="$JAP $p"
done
echo "rclone first:$RF | jcs first e2e:$JF pass:$JFP" >&2
echo "rclone again:$RA | jcs again e2e:$JA pass:$JAP" >&2

RCLONE_FIRST=$(echo "$RF" | median); JCS_FIRST=$(echo "$JF" | median); JCS_FIRST_PASS=$(echo "$JFP" | median)
RCLONE_AGAIN=$(echo "$RA" | median); JCS_AGAIN=$(echo "$JA" | median); JCS_AGAIN_PASS=$(echo "$JAP" | median)
printf '\n%-28s %9s %13s %19s %12s %16s\n' "$FILES x $KIB KiB, Local->Local" "rclone s" "jcs e2e s" "jcs e2e / rclone" "jcs pass s" "pass / rclone"
printf '%-28s %9s %13s %19s %12s %16s\n' "first copy" "$RCLONE_FIRST" "$JCS_FIRST" "$(ratio "$RCLONE_FIRST" "$JCS_FIRST")" "$JCS_FIRST_PASS" "$(ratio "$RCLONE_FIRST" "$JCS_FIRST_PASS")"
printf '%-28s %9s %13s %19s %12s %16s\n' "re-sync, nothing changed" "$RCLONE_AGAIN" "$JCS_AGAIN" "$(ratio "$RCLONE_AGAIN" "$JCS_AGAIN")" "$JCS_AGAIN_PASS" "$(ratio "$RCLONE_AGAIN" "$JCS_AGAIN_PASS")"
echo "(medians of $ROUNDS rounds, alternating; ratios are speed: rclone seconds / jcs seconds; e2e = \`jcs sync create --wait\` (createTask, long-polling getTask) plus sync, like \`rclone copy\` plus sync; pass = the run's recorded start..end)"
