#!/usr/bin/env bash
# A whole JCS cluster on loopback: etcd, 2 coordinators (one leads, see
# docs/architecture.md "Coordinators and leadership"), 3 agents with one Local user space
# each, and a gateway; every process from the `jcs` binary. The JCS processes talk mTLS:
# `start` creates a cluster CA and one certificate per process with `jcs cert` (in
# $DIR/tls; the CA is kept across restarts, node certificates are issued anew).
# The gateway authenticates /v1 (`[auth] enabled = true`): `start` creates an access key
# with `jcs admin key create` and prints how to use it (also saved, mode 600, in
# $DIR/client.toml for `jcs --config-file`).
#
#   deploy/local-cluster.sh start    # prints the gateway URL; configs, pids, logs in $DIR
#   deploy/local-cluster.sh status   # which process runs, who leads
#   deploy/local-cluster.sh stop     # stops them all (TERM, then KILL after 10 s)
#
# Environment:
#   JCS_BIN              the jcs binary (default: target/release/jcs, else target/debug/jcs)
#   JCS_CLUSTER_DIR      state directory (default: ${TMPDIR:-/tmp}/jcs-local-cluster)
#   JCS_CLUSTER_PORT     first port (default 27900): etcd +0/+1, coordinators +10/+11,
#                        agents +20..+22, gateway +30
#   ETCD_BIN, ETCDCTL_BIN  etcd and etcdctl (default: from PATH; `apt-get install etcd-server
#                        etcd-client` on Debian)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${JCS_CLUSTER_DIR:-${TMPDIR:-/tmp}/jcs-local-cluster}
BASE=${JCS_CLUSTER_PORT:-27900}
ETCD_BIN=${ETCD_BIN:-etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-etcdctl}
ETCD_PORT=$BASE
COORDS=("127.0.0.1:$((BASE + 10))" "127.0.0.1:$((BASE + 11))")
AGENTS=("127.0.0.1:$((BASE + 20))" "127.0.0.1:$((BASE + 21))" "127.0.0.1:$((BASE + 22))")
GATEWAY="127.0.0.1:$((BASE + 30))"
# Every process, in start order (stopped in reverse).
NAMES=(etcd coordinator-1 coordinator-2 agent-1 agent-2 agent-3 gateway)

jcs_bin() {
  if [[ -n "${JCS_BIN:-}" ]]; then echo "$JCS_BIN"; return; fi
  for b in "$ROOT/target/release/jcs" "$ROOT/target/debug/jcs"; do
    if [[ -x "$b" ]]; then echo "$b"; return; fi
  done
  echo "no jcs binary: run 'cargo build --bin jcs' (or set JCS_BIN)" >&2
  exit 1
}

alive() { [[ -f "$DIR/$1.pid" ]] && kill -0 "$(cat "$DIR/$1.pid")" 2>/dev/null; }

# wait_for NAME SECONDS COMMAND...: poll COMMAND every 0.1 s while NAME runs.
wait_for() {
  local name=$1 secs=$2; shift 2
  local i
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    if ! alive "$name"; then
      echo "$name exited; last lines of $DIR/$name.log:" >&2
      tail -n 20 "$DIR/$name.log" >&2 || true
      return 1
    fi
    sleep 0.1
  done
  echo "$name not ready after ${secs}s; see $DIR/$name.log" >&2
  return 1
}

# tls_section NAME: the [tls] table of process NAME.
tls_section() {
  cat <<EOF
[tls]
ca = "$DIR/tls/ca/ca.pem"
cert = "$DIR/tls/nodes/$1.pem"
key = "$DIR/tls/nodes/$1.key"
EOF
}

port_open() { (exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null; }

# spawn NAME COMMAND...: start in the background, output to NAME.log, pid to NAME.pid.
spawn() {
  local name=$1; shift
  "$@" >"$DIR/$name.log" 2>&1 &
  echo $! >"$DIR/$name.pid"
}

start() {
  for n in "${NAMES[@]}"; do
    if alive "$n"; then echo "already running ($n); '$0 stop' first" >&2; exit 1; fi
  done
  local bin; bin=$(jcs_bin)
  mkdir -p "$DIR"
  rm -f "$DIR"/*.pid
  (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$DIR/cluster.secret")

  # mTLS: a CA (kept), then a certificate per process for the loopback names it is dialled by.
  if [[ ! -f "$DIR/tls/ca/ca.pem" ]]; then
    "$bin" cert ca --out "$DIR/tls/ca" --name "JCS local cluster CA" >/dev/null
  fi
  rm -rf "$DIR/tls/nodes"
  local n
  for n in coordinator-1 coordinator-2 agent-1 agent-2 agent-3 gateway admin; do
    "$bin" cert issue --ca "$DIR/tls/ca" --name "$n" --dns localhost --ip 127.0.0.1 \
      --out "$DIR/tls/nodes" >/dev/null
  done

  spawn etcd "$ETCD_BIN" --name jcs-local --data-dir "$DIR/etcd-data" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "jcs-local=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --logger zap --log-level warn
  wait_for etcd 20 env ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints="127.0.0.1:$ETCD_PORT" endpoint health

  local i coordinators
  coordinators=$(IFS=,; echo "${COORDS[*]}")
  for i in 1 2; do
    cat >"$DIR/coordinator-$i.toml" <<EOF
listen = "${COORDS[$((i - 1))]}"
root = "jcs"
cluster_secret_file = "$DIR/cluster.secret"
heartbeat_interval = "1s"
agent_ttl = "5s"
leader_ttl = "3s"

$(tls_section "coordinator-$i")

[meta]
backend = "etcd"
endpoints = ["http://127.0.0.1:$ETCD_PORT"]
request_timeout = "3s"
EOF
    spawn "coordinator-$i" "$bin" coordinator --config "$DIR/coordinator-$i.toml"
  done
  for i in 1 2; do wait_for "coordinator-$i" 30 port_open "${COORDS[$((i - 1))]}"; done

  for i in 1 2 3; do
    mkdir -p "$DIR/space-$i"
    cat >"$DIR/agent-$i.toml" <<EOF
name = "agent-$i"
listen = "${AGENTS[$((i - 1))]}"
coordinator = "$coordinators"
cluster_secret_file = "$DIR/cluster.secret"
heartbeat_interval = "1s"

$(tls_section "agent-$i")

[[spaces]]
name = "local-$i"
path = "$DIR/space-$i"
EOF
    spawn "agent-$i" "$bin" agent --config "$DIR/agent-$i.toml"
  done
  for i in 1 2 3; do wait_for "agent-$i" 30 port_open "${AGENTS[$((i - 1))]}"; done

  cat >"$DIR/gateway.toml" <<EOF
listen = "$GATEWAY"
coordinator = "$coordinators"
request_timeout = "30s"

$(tls_section gateway)

[auth]
enabled = true
EOF
  spawn gateway "$bin" gateway --config "$DIR/gateway.toml"
  wait_for gateway 30 curl -fsS "http://$GATEWAY/readyz"

  # An access key for the client commands (its secret is printed only by this call).
  local key id secret
  key=$("$bin" --json admin key create --coordinator "$coordinators" --tls-ca "$DIR/tls/ca/ca.pem" --tls-cert "$DIR/tls/nodes/admin.pem" --tls-key "$DIR/tls/nodes/admin.key" --name local-cluster)
  id=$(sed -n 's/.*"accessKeyID":"\([^"]*\)".*/\1/p' <<<"$key")
  secret=$(sed -n 's/.*"secretKey":"\([^"]*\)".*/\1/p' <<<"$key")
  if [[ -z "$id" || -z "$secret" ]]; then
    echo "could not create an access key: $key" >&2
    exit 1
  fi
  (umask 077; printf 'url = "http://%s"\naccess_key = "%s"\nsecret_key = "%s"\n' \
    "$GATEWAY" "$id" "$secret" >"$DIR/client.toml")

  echo "JCS local cluster up; state in $DIR"
  echo "gateway:      http://$GATEWAY/v1 (signed requests only, docs/api.md \"Authentication\")"
  echo "coordinators: $coordinators (mTLS; CA $DIR/tls/ca/ca.pem)"
  echo "etcd:         http://127.0.0.1:$ETCD_PORT"
  echo "access key:   $id (with its secret in $DIR/client.toml)"
  echo "use it:       $bin --config-file $DIR/client.toml bucket ls"
  echo "          or: export JCS_URL=http://$GATEWAY JCS_ACCESS_KEY=$id JCS_SECRET_KEY=<secret_key of client.toml>"
  echo "more keys:    $bin admin key create|list|delete --coordinator $coordinators --tls-ca $DIR/tls/ca/ca.pem --tls-cert $DIR/tls/nodes/admin.pem --tls-key $DIR/tls/nodes/admin.key"
}

status() {
  local n rc=0
  for n in "${NAMES[@]}"; do
    if alive "$n"; then
      printf '%-14s running (pid %s)\n' "$n" "$(cat "$DIR/$n.pid")"
    else
      printf '%-14s stopped\n' "$n"; rc=3
    fi
  done
  if alive etcd; then
    local leader
    leader=$(ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints="127.0.0.1:$ETCD_PORT" \
      get --print-value-only jcs/v1/leader 2>/dev/null || true)
    echo "leader:        ${leader:-none}"
  fi
  return $rc
}

stop() {
  local i n pid
  for ((i = ${#NAMES[@]} - 1; i >= 0; i--)); do
    n=${NAMES[$i]}
    if alive "$n"; then kill -TERM "$(cat "$DIR/$n.pid")" 2>/dev/null || true; fi
  done
  for ((i = 0; i < 100; i++)); do
    local any=0
    for n in "${NAMES[@]}"; do if alive "$n"; then any=1; fi; done
    [[ $any == 0 ]] && break
    sleep 0.1
  done
  for n in "${NAMES[@]}"; do
    if alive "$n"; then
      pid=$(cat "$DIR/$n.pid")
      echo "$n (pid $pid) did not stop; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$DIR/$n.pid"
  done
  echo "stopped; logs and data kept in $DIR"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
