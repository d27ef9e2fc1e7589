"""The one test harness of the Python suites (tests/python, clients/python/tests): a real
`roomcast serve` child on a free port with the config a suite writes, tokens, waits with a
deadline, and a throwaway redis-server. Each suite's conftest.py puts this directory on
sys.path and keeps only what is its own (keys and secret, HTTP helpers, clients, fixtures).

It needs only the standard library, pytest and PyJWT, which both suites install.
Every wait here has a deadline; nothing sleeps "to let things settle".
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

import jwt
import pytest

# tests/harness/python/roomcast_harness.py -> the repository root is three levels up.
REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_BIN = REPO_ROOT / "target" / "debug" / "roomcast"
REDIS_BIN = os.environ.get("REDIS_SERVER_BIN") or "redis-server"

READY_DEADLINE_S = 20.0
EVENT_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- waiting


def wait_for(predicate: Callable[[], Any], timeout: float = EVENT_TIMEOUT_S,
             interval: float = 0.02, message: str = "condition") -> Any:
    """Poll `predicate` until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


async def eventually(predicate: Callable[[], Any], timeout: float = EVENT_TIMEOUT_S,
                     what: str = "condition") -> Any:
    """wait_for inside an event loop: polls without blocking it."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


def unique(prefix: str = "t") -> str:
    """An id valid as a room id / sub: [A-Za-z0-9_.-]."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# --------------------------------------------------------------------------- config and tokens


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def roomcast_bin() -> Path:
    return Path(os.environ.get("ROOMCAST_BIN") or DEFAULT_BIN)


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Our environment minus ROOMCAST_* and RUST_LOG (the child must read only our file),
    plus the websocket path of TEST_WEBSOCKET_PATH (`lean` or `socketioxide`: how
    scripts/test.sh runs a suite against both), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOMCAST_") and k != "RUST_LOG"}
    path = os.environ.get("TEST_WEBSOCKET_PATH")
    if path:
        env["ROOMCAST_SERVER__LEAN_WEBSOCKET"] = "true" if path == "lean" else "false"
    env.update(extra or {})
    return env


def _toml(value: Any) -> str:
    # JSON strings and lists of strings are valid TOML; booleans are lower case in both.
    return json.dumps(value) if isinstance(value, (str, list, bool)) else str(value)


def config_toml(port: int, *, node_id: str | None = None, jwt_secret: str | None = None,
                leeway_secs: int | None = None, expiry_warning_secs: int | None = None,
                limits: dict[str, Any] | None = None, api_keys: Iterable[dict] = (),
                cluster: dict[str, Any] | None = None, history_size: int | None = None,
                client_events: dict[str, Any] | None = None) -> str:
    """A config.toml with only what is given (the server's defaults stand for the rest).
    `api_keys`: {"name", "key", "tenant"?, "scopes"}; `cluster`, `client_events`: that
    section's keys and values, in order; [log] level is "warn"."""
    def entries(values: dict[str, Any]) -> list[str]:
        return [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]

    def table(name: str, values: dict[str, Any]) -> list[str]:
        return [f"[{name}]", *entries(values), ""]

    lines = table("server", {"bind": f"127.0.0.1:{port}", "node_id": node_id})
    lines += table("auth", {"jwt_secret": jwt_secret, "leeway_secs": leeway_secs,
                            "expiry_warning_secs": expiry_warning_secs})
    if limits:
        lines += table("limits", limits)
    for key in api_keys:
        lines += ["[[api_keys]]", *entries({k: key.get(k) for k in ("name", "key", "tenant", "scopes")}), ""]
    if cluster is not None:
        lines += table("cluster", cluster)
    if history_size is not None:
        lines += table("history", {"size": history_size})
    if client_events is not None:
        lines += table("client_events", client_events)
    lines += table("log", {"level": "warn"})
    return "\n".join(lines)


def mint_token(secret: str, *, algorithm: str = "HS256", exp_in: float = 3600, **claims: Any) -> str:
    """A JWT of `claims` signed with `secret`; `exp` defaults to now + `exp_in` seconds.

    Pass exp=None to leave `exp` out entirely.
    """
    payload = dict(claims)
    if "exp" not in payload:
        payload["exp"] = int(time.time() + exp_in)
    elif payload["exp"] is None:
        del payload["exp"]
    return jwt.encode(payload, secret, algorithm=algorithm)


# --------------------------------------------------------------------------- server


class ServerProcess:
    """A running `roomcast serve` child process."""

    def __init__(self, proc: subprocess.Popen, url: str, workdir: Path, log_path: Path):
        self.proc = proc
        self.url = url
        self.workdir = workdir
        self.log_path = log_path

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def _answers_200(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def start_server(config: Callable[[int], str] | Path, *, port: int | None = None,
                 env: dict[str, str] | None = None, ready_path: str = "/ready",
                 server_class: type[ServerProcess] = ServerProcess,
                 prefix: str = "roomcast-test-") -> Any:
    """Starts `roomcast serve` on `port` (default: a free one) and waits until `ready_path`
    answers 200. `config` renders the config.toml for the port, or is a file used as it is
    (then `env` must move the bind address to `port`). Returns a `server_class`."""
    binary = roomcast_bin()
    if not binary.exists():
        pytest.fail(f"roomcast binary not found at {binary}; run `cargo build` or set ROOMCAST_BIN")
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    port = port or free_port()
    if isinstance(config, Path):
        config_path = config
    else:
        config_path = workdir / "config.toml"
        config_path.write_text(config(port))
    log_path = workdir / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([str(binary), "serve", "--config", str(config_path)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=child_env(env), cwd=workdir)
    server = server_class(proc, f"http://127.0.0.1:{port}", workdir, log_path)
    deadline = time.monotonic() + READY_DEADLINE_S
    while not _answers_200(server.url + ready_path):
        if proc.poll() is not None:
            problem = f"roomcast exited with {proc.returncode} before ready"
        elif time.monotonic() >= deadline:
            problem = f"{ready_path} not 200 within {READY_DEADLINE_S}s"
        else:
            time.sleep(0.05)
            continue
        tail = server.log_tail()
        server.stop()
        pytest.fail(f"{problem}\n--- server log ---\n{tail}")
    return server


# --------------------------------------------------------------------------- redis-server


class RedisServer:
    """A throwaway redis-server on a free port (never 6379), no persistence."""

    def __init__(self, proc: subprocess.Popen, port: int, workdir: Path):
        self.proc = proc
        self.port = port
        self.url = f"redis://127.0.0.1:{port}"
        self.workdir = workdir

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def start_redis() -> RedisServer:
    port = free_port()
    while port == 6379:
        port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix="roomcast-test-redis-"))
    log = open(workdir / "redis.log", "wb")
    try:
        proc = subprocess.Popen(
            [REDIS_BIN, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(workdir)],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir)
    except FileNotFoundError:
        pytest.fail(f"{REDIS_BIN} not found: the cluster tests need redis-server (or set REDIS_SERVER_BIN)")
    finally:
        log.close()
    redis = RedisServer(proc, port, workdir)
    deadline = time.monotonic() + 10
    while not _redis_ping(port):
        if proc.poll() is not None or time.monotonic() >= deadline:
            redis.stop()
            pytest.fail(f"redis-server on port {port} did not answer PING; log:\n"
                        f"{(workdir / 'redis.log').read_text(errors='replace')[-2000:]}")
        time.sleep(0.05)
    return redis


# --------------------------------------------------------------------------- AI streams

#: An emoji-heavy text for stream tests (the same as the JS harness's STREAM_TEXT): ASCII,
#: astral-plane emoji and ZWJ sequences, skin tones, flags, combining characters, CJK and
#: Hangul. Offsets count code points, which is what `len` and slicing count in Python.
STREAM_TEXT = (
    "Hello, wörld! 👩\u200d💻 writes code 🎉🎉 — e\u0301te\u0301 n\u0303 (combining); 漢字とかな, 한국어; "
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 👋🏽 family 👨\u200d👩\u200d👧\u200d👦 flags 🇫🇷🇯🇵 done ✅\n"
)


def stream_pieces(text: str, max_len: int = 4) -> list[str]:
    """`text` cut into pieces of 1 to `max_len` code points (ZWJ sequences split too)."""
    pieces, i, n = [], 0, 1
    while i < len(text):
        pieces.append(text[i:i + n])
        i += n
        n = n % max_len + 1
    return pieces
