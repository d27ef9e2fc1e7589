#!/usr/bin/env bash
# A tiny run of every bench scenario against a real single node and a two-node cluster on
# a private redis-server, and against the Node socket.io reference (bench/reference/,
# installed with `npm ci` when missing; skipped without Node): proves the harness works and
# nothing is lost or duplicated. Figures come from full runs (BENCHMARKS.md), never from this.
# Usage: bench/smoke.sh [DIR with roomcast and roomcast-bench binaries]
set -euo pipefail
bin=${1:-$(cd "$(dirname "$0")/.." && pwd)/target/release}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source "$(dirname "$0")/lib.sh"

# report LABEL: prints the figures of the last run ($work/out.json) on one line; exits 1 when
# a socket could not connect.
report() {
  python3 - "$1" "$work/out.json" <<'EOF'
import json, sys
label, r = sys.argv[1], json.load(open(sys.argv[2]))
keys = ["sockets", "failed_sockets", "expected_deliveries", "deliveries", "diverged_docs", "appends", "deltas_received", "resumes", "resumed", "lost", "duplicated", "reconnects", "recovered"]
print(f"{label}: " + ", ".join(f"{k} {r[k]}" for k in keys if k in r))
sys.exit(1 if r["failed_sockets"] else 0)
EOF
}

# run LABEL SCENARIO ARGS...: fails (roomcast-bench exits 1) on anything lost, duplicated
# or out of order, or on a socket that could not connect.
run() {
  local label=$1; shift
  if ! "$bin/roomcast-bench" "$@" > "$work/out.json"; then
    cat "$work/out.json" >&2
    echo "$label: FAILED" >&2; return 1
  fi
  report "$label"
}

# observe LABEL SCENARIO ARGS...: like run, but losses are reported, not failed: for the
# reference's cluster storm, where socket.io's own recovery on the redis-streams adapter
# drops events now and then (BENCHMARKS.md). A socket that cannot connect still fails.
observe() {
  local label=$1; shift
  "$bin/roomcast-bench" "$@" > "$work/out.json" || true
  report "$label"
}

# every_scenario LABEL URL: each single-node scenario at a tiny size.
every_scenario() {
  local url=(--url "$2")
  run "$1 hold" hold "${url[@]}" --sockets 50 --settle 0
  run "$1 fanout" fanout "${url[@]}" --sockets 50 --rate 20 --duration 1
  run "$1 fanout flat out" fanout "${url[@]}" --sockets 20 --rate 0 --duration 0.5
  run "$1 rooms" rooms "${url[@]}" --sockets 60 --rooms 6 --rate 50 --duration 1
  run "$1 storm" storm "${url[@]}" --sockets 40 --rate 50 --duration 2 --drop-every 0.3
  run "$1 soak" soak "${url[@]}" --sockets 40 --rate 50 --duration 2 --drop-fraction 1 \
    --drop-every 0.3 --settle 0 --warmup 1
  run "$1 chat" chat "${url[@]}" --sockets 40 --rooms 4 --rate 5 --duration 1
  run "$1 streams" streams "${url[@]}" --sockets 20 --late 4 --streams 2 --rate 20 --duration 2
  run "$1 resume" resume "${url[@]}" --sockets 20 --chars 2000
}

# yjs: Yjs documents over the stock y-socket.io protocol; fails unless every editor ends with
# every other editor's updates and each document's editors with the same text.
yjs_tiny=(--docs 4 --editors 3 --rate 5 --duration 2)

p=$(free_port); start_roomcast single "$p"
every_scenario roomcast "http://127.0.0.1:$p"
run "roomcast yjs" yjs --url "http://127.0.0.1:$p" "${yjs_tiny[@]}"
# The plain JSON WebSocket (GET /ws/json) instead of Socket.IO.
run "roomcast json fanout" fanout --url "http://127.0.0.1:$p" --protocol json \
  --sockets 50 --rate 20 --duration 1

start_redis; rp=$redis_port
pa=$(free_port); pb=$(free_port)
start_roomcast a "$pa" "$rp"; start_roomcast b "$pb" "$rp"
both="http://127.0.0.1:$pa,http://127.0.0.1:$pb"
run "roomcast cluster" cluster --url "$both" --publish-url "http://127.0.0.1:$pa" \
  --sockets 50 --rate 20 --duration 1
# A dropped socket comes back at the other node: recovery across the cluster.
run "roomcast cluster storm" storm --url "$both" --publish-url "http://127.0.0.1:$pa" \
  --sockets 40 --rate 50 --duration 2 --drop-every 0.3
# An odd number of rooms puts each room's sockets at both nodes: client events cross.
run "roomcast cluster chat" chat --url "$both" --sockets 40 --rooms 5 --rate 5 --duration 1
# Streams appended at A, viewed (and resumed) at both nodes: deltas cross through Redis.
run "roomcast cluster streams" streams --url "$both" --publish-url "http://127.0.0.1:$pa" \
  --sockets 20 --late 4 --streams 2 --rate 20 --duration 2
# A document's editors at both nodes (round-robin): updates cross through Redis.
run "roomcast cluster yjs" yjs --url "$both" "${yjs_tiny[@]}"
run "roomcast cluster resume" resume --url "$both" --publish-url "http://127.0.0.1:$pa" \
  --sockets 20 --chars 2000

if reference_installed; then
  p=$(free_port); start_reference "$p"
  every_scenario "node reference" "http://127.0.0.1:$p"
  # The reference as a cluster: two socket.io nodes on the redis-streams adapter.
  pa=$(free_port); pb=$(free_port)
  start_reference "$pa" "$rp" streams; start_reference "$pb" "$rp" streams
  both="http://127.0.0.1:$pa,http://127.0.0.1:$pb"
  run "node reference cluster" cluster --url "$both" --publish-url "http://127.0.0.1:$pa" \
    --sockets 50 --rate 20 --duration 1
  observe "node reference cluster storm" storm --url "$both" --publish-url "http://127.0.0.1:$pa" \
    --sockets 40 --rate 50 --duration 2 --drop-every 0.3
  run "node reference cluster chat" chat --url "$both" --sockets 40 --rooms 5 --rate 5 --duration 1
  # The stock y-socket.io server (reference/yjs-server.js).
  p=$(free_port); start_reference_yjs "$p"
  run "node reference yjs" yjs --url "http://127.0.0.1:$p" "${yjs_tiny[@]}"
else
  echo "node reference: skipped (no node/npm)"
fi
