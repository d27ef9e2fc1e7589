#!/usr/bin/env bash
# A tiny run of each bench scenario against a real single node and a two-node cluster on a
# private redis-server: proves the harness works and nothing is lost. Figures come from
# full runs (BENCHMARKS.md), never from this.
# Usage: bench/smoke.sh [DIR with roomcast and roomcast-bench binaries]
set -euo pipefail
bin=${1:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_ready() {
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0
    sleep 0.05
  done
  echo "node on port $1 never became ready" >&2; return 1
}
node() { # node NAME PORT [REDIS_PORT]
  { echo "[server]"; echo "bind = \"127.0.0.1:$2\""; echo "node_id = \"$1\""
    echo "[log]"; echo 'level = "warn"'
    if [ -n "${3:-}" ]; then echo "[cluster]"; echo "redis_url = \"redis://127.0.0.1:$3\""; echo 'key_prefix = "smoke"'; fi
  } > "$work/$1.toml"
  "$bin/roomcast" serve --config "$work/$1.toml" 2> "$work/$1.log" &
  pids+=($!)
  wait_ready "$2"
}

p1=$(free_port); node single "$p1"
"$bin/roomcast-bench" fanout --url "http://127.0.0.1:$p1" --publish-url "http://127.0.0.1:$p1" \
  --sockets 50 --rate 20 --duration 1 > "$work/single.json"
echo "fanout, one node: $(tr -d ' \n' < "$work/single.json" | grep -o '"lost":[0-9]*')"

rp=$(free_port)
redis-server --port "$rp" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis.log" &
pids+=($!)
pa=$(free_port); pb=$(free_port)
node a "$pa" "$rp"; node b "$pb" "$rp"
"$bin/roomcast-bench" fanout --url "http://127.0.0.1:$pa,http://127.0.0.1:$pb" --publish-url "http://127.0.0.1:$pa" \
  --sockets 50 --rate 20 --duration 1 > "$work/cluster.json"
echo "fanout, two nodes: $(tr -d ' \n' < "$work/cluster.json" | grep -o '"lost":[0-9]*')"
