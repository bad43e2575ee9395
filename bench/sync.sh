#!/usr/bin/env bash
# Sync 1000 files x 100 KiB Local -> Local with a JCS sync task and with `rclone copy`
# (from apt), side by side in the same run: the first copy, then a re-sync with nothing
# changed. JCS runs as `jcs standalone` (release); both trees live under BENCH_DIR.
#   bench/sync.sh [FILES] [KIB]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
ensure_packages curl jq rclone

FILES=${1:-1000}; KIB=${2:-100}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jcs-sync-bench.XXXXXX")
JCS_PID=""
cleanup() { [ -n "$JCS_PID" ] && kill "$JCS_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

cargo build --release --locked --bin jcs >&2
echo "==> writing $FILES files of $KIB KiB" >&2
mkdir -p "$WORK/src"
for i in $(seq 1 "$FILES"); do
  d="$WORK/src/d$((i % 20))"; mkdir -p "$d"
  head -c $((KIB * 1024)) /dev/urandom > "$d/f$i.bin"
done
sync

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

t0=$(now); rclone copy "$WORK/src" "$WORK/rclone-dst" --config /dev/null -q; sync; t1=$(now)
RCLONE_FIRST=$(secs "$t0" "$t1")
t0=$(now); rclone copy "$WORK/src" "$WORK/rclone-dst" --config /dev/null -q; sync; t1=$(now)
RCLONE_AGAIN=$(secs "$t0" "$t1")

PORT=$(( 30000 + RANDOM % 20000 ))
target/release/jcs --log warn standalone --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" &
JCS_PID=$!
B="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do curl -fsS "$B/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
space() {
  curl -fsS -X POST "$B/v1/userSpace/create" -d "{\"name\":\"$1\",\"storage\":{\"type\":\"Local\",\"path\":\"$2\"},\"credential\":{\"type\":\"Local\"},\"shardStore\":null}" \
    | jq -r .data.userSpace.userSpaceID
}
SRC=$(space src "$WORK/src"); DST=$(space dst "$WORK/jcs-dst")
run_once() {
  local id t0 t1 state
  t0=$(now)
  id=$(curl -fsS -X POST "$B/v1/spaceSyncer/createTask" -d "{\"trigger\":{\"type\":\"Once\"},\"mode\":{\"type\":\"Diff\",\"includeSize\":true,\"includeModTime\":true},\"srcUserSpaceID\":$SRC,\"srcPath\":\"\",\"destUserSpaceIDs\":[$DST],\"destPathes\":[\"\"]}" | jq -r .data.task.taskID)
  # Long poll: getTask answers as soon as the run is recorded (waitMs), no client polling.
  while :; do
    state=$(curl -fsS "$B/v1/spaceSyncer/getTask?taskID=$id&waitMs=20000" | jq -r '.data.task.status.runs[0].result // "Pending"')
    case "$state" in Succeeded) break;; Failed|Cancelled) echo "run $state" >&2; exit 1;; esac
  done
  sync; t1=$(now)
  local run
  run=$(curl -fsS "$B/v1/spaceSyncer/getTask?taskID=$id" | jq -c '.data.task.status.runs[0]')
  echo "$run" | jq -c '{filesCopied, filesSkipped}' >&2
  # end to end (what a user sees: createTask, polling, sync) and the pass alone (the run's
  # own start/end times as the coordinator recorded them)
  echo "$(secs "$t0" "$t1") $(echo "$run" | jq -r 'def ms: (.[0:19] + "Z" | fromdate) * 1000 + (.[20:23] | tonumber); ((.endTime | ms) - (.startTime | ms)) / 1000')"
}
read -r JCS_FIRST JCS_FIRST_PASS < <(run_once)
read -r JCS_AGAIN JCS_AGAIN_PASS < <(run_once)
diff -r "$WORK/src" "$WORK/jcs-dst" >/dev/null || { echo "JCS copy differs from the source" >&2; exit 1; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
printf '\n%-28s %9s %13s %19s %12s %16s\n' "$FILES x $KIB KiB, Local->Local" "rclone s" "jcs e2e s" "jcs e2e / rclone" "jcs pass s" "pass / rclone"
printf '%-28s %9s %13s %19s %12s %16s\n' "first copy" "$RCLONE_FIRST" "$JCS_FIRST" "$(ratio "$RCLONE_FIRST" "$JCS_FIRST")" "$JCS_FIRST_PASS" "$(ratio "$RCLONE_FIRST" "$JCS_FIRST_PASS")"
printf '%-28s %9s %13s %19s %12s %16s\n' "re-sync, nothing changed" "$RCLONE_AGAIN" "$JCS_AGAIN" "$(ratio "$RCLONE_AGAIN" "$JCS_AGAIN")" "$JCS_AGAIN_PASS" "$(ratio "$RCLONE_AGAIN" "$JCS_AGAIN_PASS")"
echo "(ratios are speed: rclone seconds / jcs seconds; e2e = createTask until a long-polling getTask (waitMs) reports the run finished, plus sync; pass = the run's recorded start..end)"
