# Shell helpers bench/smoke.sh and bench/compare.sh share (sourced, not run).
# Expects: $bin (directory with roomcast and roomcast-bench), $work (a scratch directory),
# and a `pids` array the caller kills on exit.

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
reference="$bench_dir/reference"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

wait_ready() { # wait_ready PORT LOG: the server's log is shown when it never gets ready
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0
    sleep 0.05
  done
  echo "server on port $1 never became ready; its log:" >&2
  tail -n 20 "$2" >&2
  return 1
}

# start_roomcast NAME PORT [REDIS_PORT]: a Roomcast node with a generated config (plus
# $EXTRA_CONFIG, TOML sections other than [limits] and [client_events], when set); its pid
# is appended to `pids` and stored in $server_pid.
start_roomcast() {
  { echo "[server]"; echo "bind = \"127.0.0.1:$2\""; echo "node_id = \"$1\""
    echo "[log]"; echo 'level = "warn"'
    # The bench measures the server at load, not its limits: many sockets per user and
    # tenant, publishing flat out.
    echo "[limits]"; echo "max_connections = 0"; echo "max_connections_per_tenant = 0"
    echo "max_connections_per_user = 0"; echo "publish_per_key_per_sec = 0"
    # A storm reconnects thousands of sockets of few users at once.
    echo "handshakes_per_user_per_sec = 0"; echo "preauth_sessions = 0"
    echo "publish_bytes_per_key_per_sec = 0"
    # chat: every socket publishes with the `publish` command, unthrottled (0: no event
    # budget per socket), into its project room.
    echo "events_per_sec = 0"
    echo "[client_events]"; echo 'rooms = ["project"]'; echo 'events = ["bench.*"]'
    if [ -n "${3:-}" ]; then # the nodes of one cluster share Redis and the key prefix
      echo "[cluster]"; echo "redis_url = \"redis://127.0.0.1:$3\""; echo "key_prefix = \"bench$3\""
    fi
    if [ -n "${EXTRA_CONFIG:-}" ]; then printf '%s\n' "$EXTRA_CONFIG"; fi # more sections
  } > "$work/$1.toml"
  "$bin/roomcast" serve --config "$work/$1.toml" 2> "$work/$1.log" &
  server_pid=$!
  pids+=("$server_pid")
  wait_ready "$2" "$work/$1.log"
}

# start_reference PORT [REDIS_PORT [ADAPTER]]: the Node socket.io reference; with a Redis
# port, a cluster node on socket.io's redis adapter (ADAPTER redis) or redis-streams adapter
# (ADAPTER streams). Its pid is appended to `pids` and stored in $server_pid.
start_reference() {
  REDIS_URL=${2:+redis://127.0.0.1:$2} ADAPTER=${3:-redis} NODE_ID="reference-$1" PORT=$1 \
    node "$reference/server.js" 2> "$work/reference-$1.log" &
  server_pid=$!
  pids+=("$server_pid")
  wait_ready "$1" "$work/reference-$1.log"
}

# start_reference_yjs PORT: the stock y-socket.io server (reference/yjs-server.js) for the
# `yjs` scenario. Its pid is appended to `pids` and stored in $server_pid.
start_reference_yjs() {
  PORT=$1 node "$reference/yjs-server.js" 2> "$work/reference-yjs-$1.log" &
  server_pid=$!
  pids+=("$server_pid")
  wait_ready "$1" "$work/reference-yjs-$1.log"
}

# start_redis: a private redis-server on a free port, keeping nothing on disk; port in
# $redis_port, pid appended to `pids` and stored in $redis_pid.
start_redis() {
  redis_port=$(free_port)
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no > "$work/redis-$redis_port.log" &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 1 200); do
    redis-cli -p "$redis_port" ping 2>/dev/null | grep -q PONG && return 0
    sleep 0.05
  done
  echo "redis-server on port $redis_port never answered" >&2; return 1
}

stop_server() { # stop_server PID: stops it and forgets it, so cleanup never signals a reused pid
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# reference_installed: true when the reference's node_modules match its lockfile, running
# `npm ci` first when they are missing or stale and npm is available.
reference_installed() {
  command -v node >/dev/null || return 1
  if [ ! -d "$reference/node_modules" ] || [ "$reference/package-lock.json" -nt "$reference/node_modules/.package-lock.json" ]; then
    command -v npm >/dev/null || return 1
    npm ci --prefix "$reference" --no-audit --no-fund >&2
  fi
}
