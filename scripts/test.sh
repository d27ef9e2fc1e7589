#!/usr/bin/env bash
# Runs every Roomcast test: formatting and lints, the Rust unit and behaviour tests, the
# bench smoke run, the end-to-end suites with the real socket.io-client (Node) and
# python-socketio clients, the JS and Python client packages (clients/) against a real
# server, and the browser tests of /debug and /admin in headless Chromium (/usr/bin/chromium).
# Installs the JS and Python test dependencies on first use (npm ci, a venv in .venv).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

step() { printf '\n==> %s\n' "$*"; }

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

step "TypeScript client (clients/js)"
(cd clients/js && { [ -d node_modules ] && [ ! package-lock.json -nt node_modules/.package-lock.json ] || npm ci --no-audit --no-fund; } && npm test)

step "Browser tests (headless Chromium)"
(
  cd tests/browser
  if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
    npm ci --no-audit --no-fund
  fi
  npm test
)

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
"$venv/bin/python" -m pytest tests/python -q

step "Python client (clients/python)"
stamp="$venv/.roomcast-client.sha256"
want=$(sha256sum clients/python/pyproject.toml | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/pip" install --quiet --disable-pip-version-check -e 'clients/python[test]'
  echo "$want" > "$stamp"
fi
"$venv/bin/python" -m pytest clients/python -q

step "all tests passed"
