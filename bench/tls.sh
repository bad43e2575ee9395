#!/usr/bin/env bash
# The cost of mTLS on the internal gRPC links: the same three `jcs` role processes
# (coordinator on redb, one agent, gateway) on loopback, in plain TCP and with mTLS (a CA
# and node certificates from `jcs cert`), with the same workload in the same run: one large
# upload and download (curl), and many 4 KiB uploads (16 curl processes in parallel, each on
# one kept-alive connection). Four runs in the order plain, mTLS, mTLS, plain (so neither
# mode always goes first on a warmer or busier machine), each on a fresh directory that is
# deleted and synced before the next run starts. Prints every run, then the mean of each
# mode side by side with the ratio mTLS / plain.
#
#   bench/tls.sh [SIZE_MIB] [SMALL_N]        (default 1024 and 2000)
#   BENCH_DIR=/some/disk bench/tls.sh        (default /var/tmp)
#   JCS_BIN=target/debug/jcs bench/tls.sh 64 200   (no release build: checks the script only)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ensure_protoc
ensure_packages curl

SIZE_MIB=${1:-1024}
SMALL_N=${2:-2000}
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/jcs-bench-tls.XXXXXX")
PIDS=()
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT

if [[ -n ${JCS_BIN:-} ]]; then
  JCS=$JCS_BIN   # a binary already built (e.g. to check the script with a debug build)
else
  echo "==> building jcs (release)" >&2
  cargo build --release --locked --bin jcs >&2
  JCS=$PWD/target/release/jcs
fi

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
# A port nothing listens on (bash's /dev/tcp, as deploy/local-cluster.sh), never one handed
# out before in this run.
USED_PORTS=" "
free_port() {
  local p
  while :; do
    p=$((30000 + RANDOM % 20000))
    [[ $USED_PORTS == *" $p "* ]] && continue
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null && continue
    USED_PORTS+="$p "
    echo "$p"
    return
  done
}

echo "==> writing a ${SIZE_MIB} MiB random file and a 4 KiB one" >&2
head -c "$((SIZE_MIB * 1024 * 1024))" /dev/urandom > "$WORK/big.bin"
head -c 4096 /dev/urandom > "$WORK/small.bin"
SRC_SHA=$(sha256sum "$WORK/big.bin" | cut -d' ' -f1)

"$JCS" cert ca --out "$WORK/ca" >/dev/null
for n in coordinator agent gateway; do
  "$JCS" cert issue --ca "$WORK/ca" --name "$n" --ip 127.0.0.1 --dns localhost --out "$WORK/certs" >/dev/null
done
printf '0123456789abcdef0123456789abcdef' > "$WORK/cluster.secret"
chmod 600 "$WORK/cluster.secret"

tls_section() { # name
  printf '[tls]\nca = "%s"\ncert = "%s"\nkey = "%s"\n' \
    "$WORK/ca/ca.pem" "$WORK/certs/$1.pem" "$WORK/certs/$1.key"
}

# run MODE (plain|mtls) N: start the cluster in $WORK/MODE-N, measure, stop it; appends
# "UP DOWN SMALL" (seconds) to $WORK/MODE.results, then deletes the directory and syncs.
run() {
  local mode=$1 d="$WORK/$1-$2"
  mkdir -p "$d"
  local cp ap gp
  # Not in $(...): free_port must remember the ports it handed out.
  free_port > "$d/port"; cp=$(< "$d/port")
  free_port > "$d/port"; ap=$(< "$d/port")
  free_port > "$d/port"; gp=$(< "$d/port")
  local tc="" ta="" tg=""
  if [[ $mode == mtls ]]; then
    tc=$(tls_section coordinator); ta=$(tls_section agent); tg=$(tls_section gateway)
  fi
  printf 'listen = "127.0.0.1:%s"\ncluster_secret_file = "%s"\n[meta]\nbackend = "redb"\npath = "%s"\n%s\n' \
    "$cp" "$WORK/cluster.secret" "$d/meta.redb" "$tc" > "$d/coordinator.toml"
  printf 'name = "a1"\nlisten = "127.0.0.1:%s"\ncoordinator = "127.0.0.1:%s"\ncluster_secret_file = "%s"\n[[spaces]]\nname = "s1"\npath = "%s"\n%s\n' \
    "$ap" "$cp" "$WORK/cluster.secret" "$d/space" "$ta" > "$d/agent.toml"
  printf 'listen = "127.0.0.1:%s"\ncoordinator = "127.0.0.1:%s"\n%s\n' "$gp" "$cp" "$tg" > "$d/gateway.toml"
  local role
  for role in coordinator agent gateway; do
    "$JCS" --log warn "$role" --config "$d/$role.toml" >"$d/$role.log" 2>&1 &
    PIDS+=($!)
  done
  local base="http://127.0.0.1:$gp"
  for _ in $(seq 1 300); do curl -fsS "$base/healthz" >/dev/null 2>&1 && break; sleep 0.05; done
  curl -fsS "$base/healthz" >/dev/null
  local bucket pkg
  bucket=$(curl -fsS -X POST "$base/v1/bucket/create" -H 'content-type: application/json' -d '{"name":"bench"}' | sed -E 's/.*"bucketID":([0-9]+).*/\1/')
  pkg=$(curl -fsS -X POST "$base/v1/package/create" -H 'content-type: application/json' -d "{\"bucketID\":$bucket,\"name\":\"bench\"}" | sed -E 's/.*"packageID":([0-9]+).*/\1/')
  local info="info={\"packageID\":$pkg};type=application/json"
  # The agent registers asynchronously: wait until an upload is accepted.
  for _ in $(seq 1 300); do
    curl -fsS -X POST "$base/v1/object/upload" -F "$info" -F "files=@$WORK/small.bin;filename=warm" 2>/dev/null | grep -q '"code":"OK"' && break
    sleep 0.1
  done

  local t0 t1 up down small resp obj
  t0=$(now)
  resp=$(curl -fsS -X POST "$base/v1/object/upload" -F "$info" -F "files=@$WORK/big.bin;filename=big.bin")
  t1=$(now); up=$(secs "$t0" "$t1")
  obj=$(echo "$resp" | sed -E 's/.*"objectID":([0-9]+).*/\1/')
  echo "$resp" | grep -qi "\"fileHash\":\"Full$SRC_SHA\"" || { echo "$mode: upload hash mismatch: $resp" >&2; exit 1; }
  t0=$(now)
  curl -fsS "$base/v1/object/download?objectID=$obj" -o "$d/down.bin"
  t1=$(now); down=$(secs "$t0" "$t1")
  [[ $(sha256sum "$d/down.bin" | cut -d' ' -f1) == "$SRC_SHA" ]] || { echo "$mode: download differs" >&2; exit 1; }
  rm -f "$d/down.bin"

  # 16 curl processes, each sending its share one after the other on one kept-alive
  # connection (config files with `next`).
  local i k
  for k in $(seq 0 15); do : > "$d/small-$k.curl"; done
  for i in $(seq 1 "$SMALL_N"); do
    local f="$d/small-$((i % 16)).curl"
    [[ -s $f ]] && echo next >> "$f"
    printf 'url = "%s/v1/object/upload"\nform = "%s"\nform = "files=@%s;filename=s/%d"\noutput = "/dev/null"\nwrite-out = "%%{http_code}\\n"\n' \
      "$base" "${info//\"/\\\"}" "$WORK/small.bin" "$i" >> "$f"
  done
  local cpids=()
  t0=$(now)
  for k in $(seq 0 15); do
    curl -sS -K "$d/small-$k.curl" > "$d/small-$k.out" &
    cpids+=($!)
  done
  local c
  for c in "${cpids[@]}"; do wait "$c" || true; done
  t1=$(now); small=$(secs "$t0" "$t1")
  local ok
  ok=$(cat "$d"/small-*.out | grep -c '^200$' || true)
  [[ $ok == "$SMALL_N" ]] || { echo "$mode: only $ok of $SMALL_N small uploads answered 200" >&2; exit 1; }
  stop_all
  echo "$up $down $small" >> "$WORK/$mode.results"
  echo "    $mode run $2: upload $up s, download $down s, $SMALL_N small $small s" >&2
  rm -rf "$d"
  sync
}

: > "$WORK/plain.results"; : > "$WORK/mtls.results"
sync
n=0
for mode in plain mtls mtls plain; do
  n=$((n + 1))
  echo "==> run $n/4: $mode" >&2
  run "$mode" "$n"
done
mean_cols() { awk '{ for (i = 1; i <= NF; i++) s[i] += $i } END { printf "%.3f %.3f %.3f\n", s[1] / NR, s[2] / NR, s[3] / NR }' "$1"; }
read -r P_UP P_DOWN P_SMALL < <(mean_cols "$WORK/plain.results")
read -r T_UP T_DOWN T_SMALL < <(mean_cols "$WORK/mtls.results")

mibs() { awk -v m="$SIZE_MIB" -v s="$1" 'BEGIN { printf "%.0f MiB/s", m / s }'; }
pers() { awk -v n="$SMALL_N" -v s="$1" 'BEGIN { printf "%.0f /s", n / s }'; }
ratio() { awk -v p="$1" -v t="$2" 'BEGIN { printf "%.2f", p / t }'; } # throughput mTLS/plain = plain time / mTLS time
printf '\n%-34s %14s %14s %14s\n' "workload (mean of 2 runs each)" "plain" "mTLS" "mTLS / plain"
printf '%-34s %14s %14s %14s\n' "upload ${SIZE_MIB} MiB (curl -F)" "$(mibs "$P_UP")" "$(mibs "$T_UP")" "$(ratio "$P_UP" "$T_UP")"
printf '%-34s %14s %14s %14s\n' "download ${SIZE_MIB} MiB (curl -o)" "$(mibs "$P_DOWN")" "$(mibs "$T_DOWN")" "$(ratio "$P_DOWN" "$T_DOWN")"
printf '%-34s %14s %14s %14s\n' "${SMALL_N} x 4 KiB uploads, 16 at a time" "$(pers "$P_SMALL")" "$(pers "$T_SMALL")" "$(ratio "$P_SMALL" "$T_SMALL")"
