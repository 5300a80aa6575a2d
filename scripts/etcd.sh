#!/usr/bin/env bash
# Starts or stops a local etcd (Debian package `etcd-server`) for manual runs and CI jobs that want a
# long-lived server: 127.0.0.1 only, non-default ports, data under target/etcd. The integration tests
# do not need it (each test starts and stops its own server on free ports).
#
#   bash scripts/etcd.sh start   # prints the client URL (default http://127.0.0.1:23790)
#   bash scripts/etcd.sh stop
#
# Ports: MESHWORK_ETCD_CLIENT_PORT (default 23790), MESHWORK_ETCD_PEER_PORT (default 23800).
set -euo pipefail
cd "$(dirname "$0")/.."

client_port="${MESHWORK_ETCD_CLIENT_PORT:-23790}"
peer_port="${MESHWORK_ETCD_PEER_PORT:-23800}"
dir="target/etcd"
pidfile="$dir/etcd.pid"
etcd="${MESHWORK_ETCD:-/usr/bin/etcd}"

case "${1:-}" in
  start)
    [ -x "$etcd" ] || bash scripts/install-deps.sh
    if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
      echo "http://127.0.0.1:$client_port"
      exit 0
    fi
    mkdir -p "$dir"
    "$etcd" --name meshwork --data-dir "$dir/data" \
      --listen-client-urls "http://127.0.0.1:$client_port" \
      --advertise-client-urls "http://127.0.0.1:$client_port" \
      --listen-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
      --initial-cluster "meshwork=http://127.0.0.1:$peer_port" \
      >"$dir/etcd.log" 2>&1 &
    echo $! >"$pidfile"
    for _ in $(seq 1 100); do
      if ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$client_port" --dial-timeout 200ms \
        endpoint health >/dev/null 2>&1; then
        echo "http://127.0.0.1:$client_port"
        exit 0
      fi
      kill -0 "$(cat "$pidfile")" 2>/dev/null || break
      sleep 0.1
    done
    echo "etcd did not start; log: $dir/etcd.log" >&2
    cat "$dir/etcd.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$pidfile" ]; then
      kill "$(cat "$pidfile")" 2>/dev/null || true
      rm -f "$pidfile"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
