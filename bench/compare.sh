#!/usr/bin/env bash
# Runs each bench scenario against Roomcast and against the Node socket.io reference
# (bench/reference/) with the same parameters, then prints a Markdown table per scenario:
# figure, Roomcast, Node, ratio. Every run gets a fresh server (memory, history and GC
# start clean) and the two servers never run at the same time; the load generator shares
# the machine with them. Builds nothing.
#
# Usage: bench/compare.sh [DIR with roomcast and roomcast-bench binaries]  (default target/release)
# Sizes, from the environment (defaults suit a 2-core machine):
#   HOLD_SOCKETS=5000                                  hold, and connect (hold without subscribe)
#   FANOUT_SOCKETS=1000 FANOUT_RATE=50 FANOUT_SECS=10  fanout at a fixed rate
#   FLAT_SECS=5                                        fanout flat out, same sockets
#   ROOMS_SOCKETS=1000 ROOMS=100 ROOMS_RATE=0 ROOMS_SECS=5
#   STORM_SOCKETS=1000 STORM_RATE=50 STORM_SECS=10
#   CHAT_SOCKETS=1000 CHAT_ROOMS=100 CHAT_RATE=1 CHAT_SECS=10  chat: CHAT_RATE events/s per socket,
#                                                      published with the `publish` command
#   CLUSTER_SOCKETS=1000 CLUSTER_RATE=50 CLUSTER_SECS=10  cluster, cluster-flat and cluster-storm:
#                                                      two nodes on a private redis-server,
#                                                      publishing at the first
#   STREAMS_SOCKETS=1000 STREAMS=10 STREAMS_RATE=50 STREAMS_SECS=10  streams: STREAMS_SOCKETS
#                                                      viewers of STREAMS AI streams, each appended
#                                                      at STREAMS_RATE appends/s over HTTP
#                                                      (cluster-streams: the same on two nodes,
#                                                      Roomcast only: the reference keeps a
#                                                      stream in one process)
#   STREAMS_WINDOW_MS=50                               streams-window: streams with Roomcast's
#                                                      [streams] coalesce_ms at this (the
#                                                      reference has no window)
#   RESUME_SOCKETS=1000 RESUME_CHARS=20000             resume: viewers resuming a stream of
#                                                      RESUME_CHARS code points from 0 at once
#   YJS_DOCS=100 YJS_EDITORS=10 YJS_RATE=5 YJS_SECS=10  yjs: YJS_DOCS Yjs documents with
#                                                      YJS_EDITORS editors each, every editor
#                                                      sending YJS_RATE updates/s (the reference:
#                                                      the stock y-socket.io server,
#                                                      reference/yjs-server.js)
#   sessions-<scenario>                                <scenario> (hold, connect, fanout, flat, storm, ...)
#                                                      with server.lean_websocket = false: the
#                                                      generator's websockets on socketioxide's
#                                                      sessions instead of Roomcast's lean path;
#   json-<scenario>                                    <scenario> (hold, connect, fanout, flat, storm) with
#                                                      Roomcast's sockets on the plain JSON
#                                                      WebSocket (--protocol json, GET /ws/json);
#                                                      the reference has none, so its column is
#                                                      its Socket.IO run of <scenario>, again
#   (streams, cluster-streams and resume run with --users 1: no presence storm at connect)
#   SCENARIOS="hold connect fanout flat rooms storm chat cluster cluster-flat cluster-storm
#              streams streams-window resume cluster-streams yjs json-hold json-fanout"
#   BENCH_ARGS="..."     extra roomcast-bench arguments for every run (e.g. --users 1)
#   OUT=DIR              keep each run's JSON and stderr there (default: a temporary directory)
# In the cluster scenarios the reference runs two socket.io processes on socket.io's own
# Redis adapters: @socket.io/redis-adapter for cluster and cluster-flat (the usual
# deployment), @socket.io/redis-streams-adapter for cluster-storm (the only one with which
# socket.io recovers a session at another node).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${1:-$root/target/release}
work=$(mktemp -d)
out=${OUT:-$work/runs}
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
source "$root/bench/lib.sh"

: "${HOLD_SOCKETS:=5000}" "${FANOUT_SOCKETS:=1000}" "${FANOUT_RATE:=50}" "${FANOUT_SECS:=10}" "${FLAT_SECS:=5}"
: "${ROOMS_SOCKETS:=1000}" "${ROOMS:=100}" "${ROOMS_RATE:=0}" "${ROOMS_SECS:=5}"
: "${STORM_SOCKETS:=1000}" "${STORM_RATE:=50}" "${STORM_SECS:=10}"
: "${CHAT_SOCKETS:=1000}" "${CHAT_ROOMS:=100}" "${CHAT_RATE:=1}" "${CHAT_SECS:=10}"
: "${CLUSTER_SOCKETS:=1000}" "${CLUSTER_RATE:=50}" "${CLUSTER_SECS:=10}"
: "${STREAMS_SOCKETS:=1000}" "${STREAMS:=10}" "${STREAMS_RATE:=50}" "${STREAMS_SECS:=10}"
: "${STREAMS_WINDOW_MS:=50}" "${RESUME_SOCKETS:=1000}" "${RESUME_CHARS:=20000}"
: "${YJS_DOCS:=100}" "${YJS_EDITORS:=10}" "${YJS_RATE:=5}" "${YJS_SECS:=10}"
: "${SCENARIOS:=hold connect fanout flat rooms storm chat cluster cluster-flat cluster-storm streams streams-window resume cluster-streams yjs json-hold json-fanout}" "${BENCH_ARGS:=}"

# The roomcast-bench arguments of SCENARIO against SERVER (without --url and --pids).
scenario_args() {
  # json-*: Roomcast's sockets speak /ws/json; the reference's, Socket.IO (it has no other).
  local json=""
  [ "${2:-}" = roomcast ] && json="--protocol json"
  case $1 in
    hold) echo "hold --sockets $HOLD_SOCKETS" ;;
    connect) echo "hold --sockets $HOLD_SOCKETS --no-subscribe" ;;
    fanout) echo "fanout --sockets $FANOUT_SOCKETS --rate $FANOUT_RATE --duration $FANOUT_SECS" ;;
    flat) echo "fanout --sockets $FANOUT_SOCKETS --rate 0 --duration $FLAT_SECS" ;;
    rooms) echo "rooms --sockets $ROOMS_SOCKETS --rooms $ROOMS --rate $ROOMS_RATE --duration $ROOMS_SECS" ;;
    storm) echo "storm --sockets $STORM_SOCKETS --rate $STORM_RATE --duration $STORM_SECS" ;;
    chat) echo "chat --sockets $CHAT_SOCKETS --rooms $CHAT_ROOMS --rate $CHAT_RATE --duration $CHAT_SECS" ;;
    cluster) echo "cluster --sockets $CLUSTER_SOCKETS --rate $CLUSTER_RATE --duration $CLUSTER_SECS" ;;
    cluster-flat) echo "cluster --sockets $CLUSTER_SOCKETS --rate 0 --duration $FLAT_SECS" ;;
    cluster-storm) echo "storm --sockets $STORM_SOCKETS --rate $STORM_RATE --duration $STORM_SECS" ;;
    streams|streams-window|cluster-streams) echo "streams --users 1 --sockets $STREAMS_SOCKETS --streams $STREAMS --rate $STREAMS_RATE --duration $STREAMS_SECS" ;;
    resume) echo "resume --users 1 --sockets $RESUME_SOCKETS --chars $RESUME_CHARS" ;;
    yjs) echo "yjs --docs $YJS_DOCS --editors $YJS_EDITORS --rate $YJS_RATE --duration $YJS_SECS" ;;
    sessions-*) scenario_args "${1#sessions-}" "${2:-}" ;;
    json-*) echo "$(scenario_args "${1#json-}") $json" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

# One run of SCENARIO against SERVER (roomcast | node) on a fresh server, or on two fresh
# nodes and a fresh redis-server for the cluster scenarios.
run_one() {
  local scenario=$1 server=$2 args port urls=() node_pids=() publish=()
  args=$(scenario_args "$scenario" "$server")
  local nodes=1 redis=""
  case $scenario in cluster*) nodes=2; start_redis; redis=$redis_port ;; esac
  local adapter=redis
  [ "$scenario" = cluster-storm ] && adapter=streams
  for i in $(seq 1 "$nodes"); do
    port=$(free_port)
    local extra=${EXTRA_CONFIG:-}
    [ "$scenario" = streams-window ] && extra=$(printf '%s\n[streams]\ncoalesce_ms = %s' "$extra" "$STREAMS_WINDOW_MS")
    # sessions-*: the scenario with Roomcast's lean websocket path off (socketioxide's
    # Engine.IO sessions serve the generator's websockets, as before issue 19).
    local lean=true
    case $scenario in sessions-*) lean=false ;; esac
    if [ "$server" = roomcast ]; then
      ROOMCAST_SERVER__LEAN_WEBSOCKET=$lean EXTRA_CONFIG=$extra start_roomcast "compare-$scenario-$i" "$port" "$redis"
    elif [ "$scenario" = yjs ]; then start_reference_yjs "$port"
    else start_reference "$port" "$redis" "$adapter"; fi
    urls+=("http://127.0.0.1:$port"); node_pids+=("$server_pid")
  done
  [ "$nodes" -gt 1 ] && publish=(--publish-url "${urls[0]}")
  local url_list pid_list
  url_list=$(IFS=,; echo "${urls[*]}"); pid_list=$(IFS=,; echo "${node_pids[*]}")
  echo "$scenario on $server: roomcast-bench $args $BENCH_ARGS" >&2
  # A run that loses events exits 1 but still prints its figures: keep going.
  # shellcheck disable=SC2086
  "$bin/roomcast-bench" $args $BENCH_ARGS --url "$url_list" "${publish[@]}" --pids "$pid_list" \
    > "$out/$scenario.$server.json" 2> "$out/$scenario.$server.err" ||
    echo "  exit $?: $(tail -n 1 "$out/$scenario.$server.err")" >&2
  for p in "${node_pids[@]}"; do stop_server "$p"; done
  [ -n "$redis" ] && stop_server "$redis_pid"
  return 0
}

need=$((HOLD_SOCKETS + 100))
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
  echo "open-file limit $(ulimit -n) is below $need: lower HOLD_SOCKETS or raise ulimit -n" >&2
  exit 1
fi
reference_installed || { echo "the Node reference needs node and npm" >&2; exit 1; }

for scenario in $SCENARIOS; do
  scenario_args "$scenario" > /dev/null
  run_one "$scenario" roomcast
  # The reference keeps a stream in the process that created it: no cluster streams.
  [ "$scenario" = cluster-streams ] || run_one "$scenario" node
done

echo "# Roomcast vs Node socket.io 4.8.4 reference — $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, node $(node --version)"
python3 "$root/bench/table.py" "$out" $SCENARIOS
[ -n "${OUT:-}" ] && echo "runs kept in $out" >&2
exit 0
