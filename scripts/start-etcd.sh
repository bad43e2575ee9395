#!/usr/bin/env bash
# Start a throw-away etcd on loopback with its data in a temp dir.
# Prints "PID DIR ENDPOINT" once it is healthy. Stop it with: kill PID; rm -rf DIR
set -euo pipefail
for _ in 1 2 3 4 5; do
  PORT=$(( 20000 + RANDOM % 20000 )); PEER=$(( PORT + 1 ))
  DIR=$(mktemp -d "${ETCD_TMP:-/dev/shm}/jcs-etcd.XXXXXX" 2>/dev/null || mktemp -d)
  etcd --name jcs-test --data-dir "$DIR/data" \
    --listen-client-urls "http://127.0.0.1:$PORT" --advertise-client-urls "http://127.0.0.1:$PORT" \
    --listen-peer-urls "http://127.0.0.1:$PEER" --initial-advertise-peer-urls "http://127.0.0.1:$PEER" \
    --initial-cluster "jcs-test=http://127.0.0.1:$PEER" --initial-cluster-state new \
    --logger zap --log-level warn >"$DIR/etcd.log" 2>&1 &
  PID=$!
  for _ in $(seq 1 200); do
    if ! kill -0 "$PID" 2>/dev/null; then break; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null \
       && ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$PORT" endpoint health >/dev/null 2>&1; then
      echo "$PID $DIR http://127.0.0.1:$PORT"; exit 0
    fi
    sleep 0.05
  done
  kill "$PID" 2>/dev/null || true
  echo "etcd on port $PORT did not start; log:" >&2; cat "$DIR/etcd.log" >&2 || true
  rm -rf "$DIR"
done
echo "could not start etcd" >&2
exit 1
