#!/usr/bin/env bash
# The soak (BENCHMARKS.md): one Roomcast node, SOAK_SOCKETS sockets over SOAK_ROOMS project
# rooms churning for SOAK_SECS (each drops its connection every ~SOAK_DROP_EVERY s and comes
# back with recovery) while SOAK_RATE events/s are published; prints the roomcast-bench
# JSON, with server RSS and open descriptors before, at peak and after.
# A warm-up storm of SOAK_WARMUP s at the same size comes first; what the server holds once
# its sockets left (`warm`) is the baseline `after` is held to. Room history is kept for
# 60 s (not the default 300) and memory is read SOAK_SETTLE s after the last socket left,
# so the events of the run have expired by then in both readings.
# Usage: bench/soak.sh [DIR with roomcast and roomcast-bench binaries]  (default target/release)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release}
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source "$root/bench/lib.sh"

: "${SOAK_SOCKETS:=15000}" "${SOAK_ROOMS:=100}" "${SOAK_SECS:=600}" "${SOAK_RATE:=20}"
: "${SOAK_DROP_EVERY:=20}" "${SOAK_MAX_PAUSE_MS:=1000}" "${SOAK_WARMUP:=120}" "${SOAK_SETTLE:=100}"

port=$(free_port)
EXTRA_CONFIG=$'[history]\nttl_secs = 60' start_roomcast soak "$port"
"$bin/roomcast-bench" soak --url "http://127.0.0.1:$port" --pids "$server_pid" \
  --sockets "$SOAK_SOCKETS" --rooms "$SOAK_ROOMS" --rate "$SOAK_RATE" --duration "$SOAK_SECS" \
  --drop-fraction 1 --drop-every "$SOAK_DROP_EVERY" --max-pause-ms "$SOAK_MAX_PAUSE_MS" \
  --settle "$SOAK_SETTLE" --warmup "$SOAK_WARMUP"
