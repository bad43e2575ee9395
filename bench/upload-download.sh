#!/usr/bin/env bash
# Upload and download one large file through `jcs standalone` (release build) and compare
# with `cp` and `sha256sum` of the same file, run in the same script on the same disk.
# Prints MiB/s, ratios, and the jcs process's peak RSS (VmHWM).
#
#   bench/upload-download.sh [SIZE_MIB]      (default 1024)
#   BENCH_DIR=/some/disk bench/upload-download.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
ensure_packages curl

SIZE_MIB=${1:-1024}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jcs-bench.XXXXXX")
JCS_PID=""
cleanup() { [ -n "$JCS_PID" ] && kill "$JCS_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

echo "==> building jcs (release)"
cargo build --release --locked --bin jcs >&2
JCS=target/release/jcs

now() { date +%s.%N; }
rate() { awk -v mib="$SIZE_MIB" -v s="$1" 'BEGIN { printf "%.0f", mib / s }'; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

echo "==> touching $((SIZE_MIB * 4)) MiB of $WORK once (warm_space in scripts/lib.sh)"
warm_space "$WORK" "$((SIZE_MIB * 4))"
echo "==> writing a ${SIZE_MIB} MiB random file"
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/src.bin"
sync

t0=$(now); cp "$WORK/src.bin" "$WORK/copy.bin"; sync; t1=$(now)
CP_S=$(secs "$t0" "$t1"); rm -f "$WORK/copy.bin"
t0=$(now); SRC_SHA=$(sha256sum "$WORK/src.bin" | cut -d' ' -f1); t1=$(now)
SHA_S=$(secs "$t0" "$t1")

PORT=$(( 30000 + RANDOM % 20000 ))
"$JCS" --log warn standalone --data-dir "$WORK/data" --listen "127.0.0.1:$PORT" &
JCS_PID=$!
BASE="http://127.0.0.1:$PORT"
for _ in $(seq 1 300); do curl -fsS "$BASE/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
curl -fsS "$BASE/healthz" >/dev/null

BUCKET=$(curl -fsS -X POST "$BASE/v1/bucket/create" -H 'content-type: application/json' -d '{"name":"bench"}' | sed -E 's/.*"bucketID":([0-9]+).*/\1/')
PKG=$(curl -fsS -X POST "$BASE/v1/package/create" -H 'content-type: application/json' -d "{\"bucketID\":$BUCKET,\"name\":\"bench\"}" | sed -E 's/.*"packageID":([0-9]+).*/\1/')

t0=$(now)
RESP=$(curl -fsS -X POST "$BASE/v1/object/upload" -F "info={\"packageID\":$PKG};type=application/json" -F "files=@$WORK/src.bin;filename=big.bin")
sync; t1=$(now)
UP_S=$(secs "$t0" "$t1")
OBJ=$(echo "$RESP" | sed -E 's/.*"objectID":([0-9]+).*/\1/')
HASH=$(echo "$RESP" | sed -E 's/.*"fileHash":"Full([0-9A-F]+)".*/\1/')
[ "$HASH" = "$(echo "$SRC_SHA" | tr a-f A-F)" ] || { echo "upload hash mismatch: $RESP" >&2; exit 1; }

t0=$(now)
curl -fsS "$BASE/v1/object/download?objectID=$OBJ" -o "$WORK/down.bin"
sync; t1=$(now)
DOWN_S=$(secs "$t0" "$t1")
DOWN_SHA=$(sha256sum "$WORK/down.bin" | cut -d' ' -f1)
[ "$DOWN_SHA" = "$SRC_SHA" ] || { echo "download differs from the source" >&2; exit 1; }

RSS_KIB=$(awk '/VmHWM/ {print $2}' "/proc/$JCS_PID/status")

# Ratios: the baseline's time over jcs's (above 1 = jcs faster). The issue's baseline is
# what a user would run without JCS: `cp` of the file plus `sha256sum` of it.
vs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
CP_SHA_S=$(awk -v a="$CP_S" -v b="$SHA_S" 'BEGIN { printf "%.3f", a + b }')
printf '\n%-28s %10s %10s %8s %16s\n' "step (${SIZE_MIB} MiB)" "seconds" "MiB/s" "vs cp" "vs cp+sha256sum"
printf '%-28s %10s %10s %8s %16s\n' "cp + sync (baseline)" "$CP_S" "$(rate "$CP_S")" "1.00" ""
printf '%-28s %10s %10s %8s %16s\n' "sha256sum (baseline)" "$SHA_S" "$(rate "$SHA_S")" "$(vs "$CP_S" "$SHA_S")" ""
printf '%-28s %10s %10s %8s %16s\n' "cp + sha256sum (baseline)" "$CP_SHA_S" "$(rate "$CP_SHA_S")" "" "1.00"
printf '%-28s %10s %10s %8s %16s\n' "jcs upload (curl -F)" "$UP_S" "$(rate "$UP_S")" "$(vs "$CP_S" "$UP_S")" "$(vs "$CP_SHA_S" "$UP_S")"
printf '%-28s %10s %10s %8s %16s\n' "jcs download (curl -o)" "$DOWN_S" "$(rate "$DOWN_S")" "$(vs "$CP_S" "$DOWN_S")" "$(vs "$CP_SHA_S" "$DOWN_S")"
echo
echo "ratio upload vs cp and sha256sum: $(vs "$CP_SHA_S" "$UP_S")"
echo "ratio download vs cp and sha256sum: $(vs "$CP_SHA_S" "$DOWN_S")"
printf '\njcs standalone peak RSS (VmHWM): %d MiB (limit 100 MiB)\n' "$((RSS_KIB / 1024))"
[ "$RSS_KIB" -lt $((100 * 1024)) ] || { echo "peak RSS over 100 MiB" >&2; exit 1; }
