#!/usr/bin/env bash
# Redundancy end to end (issue 8): upload and download one large file through
# `jcs standalone` (release build) with six extra Local user spaces, as `none`, as ec(4,6),
# and ec(4,6) read degraded (the blocks of two spaces removed, both data blocks, so every
# stripe is rebuilt from parity), all in the same run. ROUNDS rounds of all five steps,
# `none` and ec alternating, and the median of each step: one noisy step (the machine's
# load) moves a single-round ratio by up to 2x; the run first touches the space it will use
# (warm_space), as a fresh VM writes to never-used memory ~3x slower. Prints
# MiB/s and the ratios the issue sets goals for: ec upload and download >= 0.7 x none,
# degraded >= 0.5 x healthy.
#
#   bench/redundancy.sh [SIZE_MIB] [ROUNDS]        (defaults 1024, 3)
#   BENCH_DIR=/dev/shm bench/redundancy.sh 1024   # where the data and spaces live
#   JCS=target/debug/jcs bench/redundancy.sh      # skip the release build (figures indicative only)
# Needs about 4.5 x SIZE_MIB of free space in BENCH_DIR (source, none shard, six blocks
# of SIZE/4, one download at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_packages curl

SIZE_MIB=${1:-1024}
ROUNDS=${2:-3}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jcs-bench-ec.XXXXXX")
JCS_PID=""
cleanup() { [ -n "$JCS_PID" ] && kill "$JCS_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

if [ -z "${JCS:-}" ]; then
  ensure_protoc
  echo "==> building jcs (release)" >&2
  cargo build --release --locked --bin jcs >&2
  JCS=target/release/jcs
fi

now() { date +%s.%N; }
rate() { awk -v mib="$SIZE_MIB" -v s="$1" 'BEGIN { printf "%.0f", mib / s }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
json_num() { sed -E "s/.*\"$1\":([0-9]+).*/\1/"; }

echo "==> touching $((SIZE_MIB * 4)) MiB of $WORK once (warm_space in scripts/lib.sh)" >&2
warm_space "$WORK" "$((SIZE_MIB * 4))"
echo "==> writing a ${SIZE_MIB} MiB random file" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/src.bin"
SRC_SHA=$(sha256sum "$WORK/src.bin" | cut -d' ' -f1)
SRC_HASH=$(echo "$SRC_SHA" | tr a-f A-F)

PORT=$(( 30000 + RANDOM % 20000 ))
"$JCS" --log "${BENCH_LOG:-warn}" standalone --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" &
JCS_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fsS "$BASE/healthz" >/dev/null
post() { curl -fsS -X POST "$BASE$1" -H 'content-type: application/json' -d "$2"; }

# Six more Local spaces (the standalone agent's own "local" space makes seven).
for i in 1 2 3 4 5 6; do
  mkdir -p "$WORK/s$i"
  post /v1/userSpace/create "{\"name\":\"s$i\",\"storage\":{\"type\":\"Local\",\"path\":\"$WORK/s$i\"},\"credential\":{\"type\":\"Local\"},\"shardStore\":{\"maxSize\":0},\"features\":[],\"workingDir\":\"\"}" >/dev/null
done
BUCKET=$(post /v1/bucket/create '{"name":"bench"}' | json_num bucketID)
NONE_PKG=$(post /v1/package/create "{\"bucketID\":$BUCKET,\"name\":\"none\"}" | json_num packageID)
EC_PKG=$(post /v1/package/create "{\"bucketID\":$BUCKET,\"name\":\"ec\",\"redundancy\":{\"type\":\"ec\",\"k\":4,\"n\":6}}" | json_num packageID)

upload() { # package name → seconds; sets OBJ
  local t0 t1 resp
  for _ in $(seq 1 100); do # the agent learns the new spaces with its next heartbeat
    t0=$(now)
    if resp=$(curl -fsS -X POST "$BASE/v1/object/upload" -F "info={\"packageID\":$1};type=application/json" -F "files=@$WORK/src.bin;filename=$2"); then
      t1=$(now); break
    fi
    sleep 0.2
  done
  OBJ=$(echo "$resp" | json_num objectID)
  case "$resp" in *"\"fileHash\":\"Full$SRC_HASH\""*) ;; *) echo "upload hash mismatch: $resp" >&2; exit 1 ;; esac
  UP_SECS=$(secs "$t0" "$t1")
}
download() { # object → seconds (checks the bytes)
  local t0 t1
  # The output file is written full of zeros first (not timed) and the download overwrites
  # it in place (`1<>`: no truncation), so the timed step writes to memory the host backs
  # already. Else it writes fresh pages, whose cost on a VM with free page reporting
  # varies by 3x from one download to the next (warm_space in scripts/lib.sh).
  dd if=/dev/zero of="$WORK/down.bin" bs=1M count="$SIZE_MIB" status=none
  t0=$(now)
  curl -fsS "$BASE/v1/object/download?objectID=$1" 1<>"$WORK/down.bin"
  t1=$(now)
  [ "$(sha256sum "$WORK/down.bin" | cut -d' ' -f1)" = "$SRC_SHA" ] || { echo "download of $1 differs from the source" >&2; exit 1; }
  rm -f "$WORK/down.bin"
  DOWN_SECS=$(secs "$t0" "$t1")
}
shard_files() { find "$WORK/data/space" "$WORK"/s? -path '*/shards/*' -type f -size +1M 2>/dev/null; }

PIECE=1048576
dd if="$WORK/src.bin" of="$WORK/piece1.bin" bs=$PIECE skip=1 count=1 status=none
NU=""; ND=""; EU=""; ED=""; DD=""
for r in $(seq 1 "$ROUNDS"); do
  echo "==> round $r: none" >&2
  upload "$NONE_PKG" "none-$r.bin"; NU="$NU $UP_SECS"; NONE_OBJ=$OBJ
  download "$NONE_OBJ"; ND="$ND $DOWN_SECS"
  # Free the none shard before the ec run (its space is not needed any more).
  shard_files | xargs -r rm -f

  echo "==> round $r: ec(4,6)" >&2
  upload "$EC_PKG" "ec-$r.bin"; EU="$EU $UP_SECS"; EC_OBJ=$OBJ
  BLOCKS=$(shard_files | wc -l)
  [ "$BLOCKS" = 6 ] || { echo "expected 6 stored blocks, found $BLOCKS" >&2; exit 1; }
  download "$EC_OBJ"; ED="$ED $DOWN_SECS"

  # Remove the blocks of the two spaces holding data blocks 0 and 1 (found by their first
  # piece, which is the object's first and second MiB), so every stripe needs a
  # Reed-Solomon rebuild.
  REMOVED=0
  for f in $(shard_files); do
    if cmp -s -n $PIECE "$f" "$WORK/src.bin" || cmp -s -n $PIECE "$f" "$WORK/piece1.bin"; then
      rm -f "$f"; REMOVED=$((REMOVED + 1))
    fi
  done
  [ "$REMOVED" = 2 ] || { echo "expected to remove 2 data blocks, removed $REMOVED" >&2; exit 1; }
  echo "==> round $r: ec(4,6) degraded (2 of 6 blocks removed)" >&2
  download "$EC_OBJ"; DD="$DD $DOWN_SECS"
  # The next round stores the same content again: nothing of this one may dedupe it.
  shard_files | xargs -r rm -f
done
echo "seconds per round: none up:$NU down:$ND | ec up:$EU down:$ED degraded:$DD" >&2
NONE_UP=$(echo "$NU" | median); NONE_DOWN=$(echo "$ND" | median)
EC_UP=$(echo "$EU" | median); EC_DOWN=$(echo "$ED" | median); DEG_DOWN=$(echo "$DD" | median)

RSS_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$JCS_PID/status")

printf '\n%-32s %10s %10s\n' "step (${SIZE_MIB} MiB, median)" "seconds" "MiB/s"
printf '%-32s %10s %10s\n' "none upload" "$NONE_UP" "$(rate "$NONE_UP")"
printf '%-32s %10s %10s\n' "none download" "$NONE_DOWN" "$(rate "$NONE_DOWN")"
printf '%-32s %10s %10s\n' "ec(4,6) upload" "$EC_UP" "$(rate "$EC_UP")"
printf '%-32s %10s %10s\n' "ec(4,6) download" "$EC_DOWN" "$(rate "$EC_DOWN")"
printf '%-32s %10s %10s\n' "ec(4,6) degraded download" "$DEG_DOWN" "$(rate "$DEG_DOWN")"
echo
echo "ratio ec upload / none: $(ratio "$NONE_UP" "$EC_UP")"
echo "ratio ec download / none: $(ratio "$NONE_DOWN" "$EC_DOWN")"
echo "ratio degraded / healthy download: $(ratio "$EC_DOWN" "$DEG_DOWN")"
printf 'jcs standalone peak RSS (VmHWM): %d MiB\n' "$((RSS_KIB / 1024))"
printf 'load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
