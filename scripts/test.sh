#!/usr/bin/env bash
# Runs every Roomcast test: formatting and lints, the Rust unit and behaviour tests, the
# bench smoke run, the end-to-end suites with the real socket.io-client (Node) and
# python-socketio clients, the JS and Python client packages (clients/) against a real
# server, and the browser tests of /debug, /admin and examples/yjs-editor in headless Chromium
# (/usr/bin/chromium).
# Installs the JS and Python test dependencies on first use (npm ci, a venv in .venv).
#
# It first checks the system prerequisites (cargo, node, npm, python3 with venv, redis-server,
# Chromium) and prints the install command of each one missing. Without Chromium the other
# suites still run, the browser tests are skipped and the run fails at the end.
# `scripts/test.sh --check` only checks the prerequisites (exit 1 when one is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

check_only=false
case "${1:-}" in
  "") ;;
  --check) check_only=true ;;
  *) echo "usage: scripts/test.sh [--check]" >&2; exit 2 ;;
esac

step "prerequisites"
missing=()   # what stops the run before anything is built
skipped=()   # suites that cannot run here; the run fails at the end
lack() { printf 'missing: %s; install it with: %s\n' "$1" "$2"; }
command -v cargo >/dev/null || { lack cargo "curl --proto '=https' -sSf https://sh.rustup.rs | sh"; missing+=(cargo); }
command -v node >/dev/null || { lack node "apt-get install -y nodejs npm"; missing+=(node); }
command -v npm >/dev/null || { lack npm "apt-get install -y npm"; missing+=(npm); }
if ! command -v python3 >/dev/null; then
  lack python3 "apt-get install -y python3 python3-venv"; missing+=(python3)
elif ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  lack "python3 venv (ensurepip)" "apt-get install -y python3-venv"; missing+=(python3-venv)
fi
command -v redis-server >/dev/null || { lack redis-server "apt-get install -y redis-server"; missing+=(redis-server); }
chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  lack "chromium at $chromium" "apt-get install -y chromium"
  skipped+=("browser tests (no $chromium)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "cannot run the tests without: ${missing[*]} (.ci/run installs them all)"
  exit 1
fi
if $check_only; then
  if [ ${#skipped[@]} -gt 0 ]; then
    echo "would skip: ${skipped[*]}"
    exit 1
  fi
  echo "all prerequisites present"
  exit 0
fi

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo build (the binaries the JS, Python and bench smoke runs start)"
cargo build --workspace --locked
export ROOMCAST_BIN="$root/target/debug/roomcast"

step "cargo test"
cargo test --locked

step "bench smoke: the load generator against a real server (nothing lost)"
bench/smoke.sh "$root/target/debug"

step "JS end-to-end tests (socket.io-client)"
(
  cd tests/js
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
  npm test
)

# The lean websocket path (server.lean_websocket, the default) serves the clients that open a
# websocket directly; the run above connects most sockets with socket.io-client's default
# (polling, then the upgrade: socketioxide's sessions). So the suite runs again with every
# client on a websocket from the start, and the direct-websocket files once with the lean
# path off: the same behaviour on both paths.
step "JS end-to-end tests, every socket a direct websocket (the lean path)"
(cd tests/js && TEST_WEBSOCKET_PATH=lean npm test)

step "JS end-to-end tests of direct websockets with the lean path off (socketioxide)"
(cd tests/js && TEST_WEBSOCKET_PATH=socketioxide node --test --test-concurrency=1 \
  test/documents.test.js test/transports.test.js test/handshake.test.js test/recovery.test.js)

step "TypeScript client (clients/js)"
(cd clients/js && { [ -d node_modules ] && [ ! package-lock.json -nt node_modules/.package-lock.json ] || npm ci --no-audit --no-fund; } && npm test)

step "Python end-to-end tests (python-socketio)"
venv="$root/.venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
stamp="$venv/.requirements.sha256"
want=$(sha256sum tests/python/requirements.txt | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/python/requirements.txt
  echo "$want" > "$stamp"
fi
# The client too: tests/python/test_snippets.py runs the docs' snippets that use it.
stamp="$venv/.roomcast-client.sha256"
want=$(sha256sum clients/python/pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e 'clients/python[test]'
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -m pytest tests/python -q

step "Python end-to-end tests, every client a direct websocket (the lean path)"
TEST_WEBSOCKET_PATH=lean "$venv/bin/python" -m pytest tests/python -q

step "Python client (clients/python)"
"$venv/bin/python" -m pytest clients/python -q

# Last, so that a browser problem does not keep the other suites from running.
step "Browser tests (headless Chromium)"
if [ -x "$chromium" ]; then
  (
    cd tests/browser
    if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
      npm ci --no-audit --no-fund
    fi
    CHROMIUM_BIN="$chromium" npm test
  )
else
  echo "skipped: no $chromium (apt-get install -y chromium)"
fi

if [ ${#skipped[@]} -gt 0 ]; then
  step "FAILED: every suite that ran passed, but these were skipped: ${skipped[*]}"
  exit 1
fi
step "all tests passed"
