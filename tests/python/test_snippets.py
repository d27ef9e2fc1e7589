"""Every ```python block of README.md and WEBSOCKET_API.md runs as written against a real
server and prints what the docs say it prints: a snippet drifting from the code fails here.

The server runs the shipped config.toml on a free port; `TOKEN` (and `token`) is minted with
`roomcast token --sub alice --projects 42`, as the README does; `http://127.0.0.1:8000` in a
snippet becomes the server's address. Nothing else is changed. A snippet that listens runs
until its output shows a `project.updated` published meanwhile (with a fresh status), then is
stopped; one that publishes must exit 0 and print the event's id. Fragments that need the
reader's own code go in SKIP, each with the reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest
import requests

from roomcast_harness import REPO_ROOT, child_env, free_port, roomcast_bin, start_server

DOCS = ["README.md", "WEBSOCKET_API.md"]
DEV_KEY = "roomcast-dev-key"
# A line the fragment contains -> why it cannot run alone.
SKIP: dict[str, str] = {
    'sio.connect(url, auth=lambda: {"token": current_token(), "since": cursors})': (
        "a fragment of section 2.8: needs the app's url, current_token and cursors; "
        "test_restart.py runs the same auth callable"
    ),
    "def roomcast_signed(": (
        "a backend's signature check, not a client: clients/python/tests/test_rpc.py checks "
        "the server's calls with it"
    ),
    "# wsjson_client.py:": (
        "the /ws/json client of section 17 (a ws:// address, and a drop to recover from): "
        "test_ws_json.py runs it as written, through a disconnect"
    ),
}
RUN_DEADLINE_S = 30.0
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def blocks(lang: str) -> list[tuple[str, int, str]]:
    found = []
    for name in DOCS:
        lines = (REPO_ROOT / name).read_text().split("\n")
        i = 0
        while i < len(lines):
            m = re.fullmatch(r"```(\w+)\s*", lines[i])
            if m:
                end = lines.index("```", i + 1)
                if m.group(1) == lang:
                    found.append((name, i + 1, "\n".join(lines[i + 1:end])))
                i = end
            i += 1
    return found


SNIPPETS = blocks("python")


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """`roomcast serve` with the shipped config.toml on a free port, and a token for alice."""
    config = REPO_ROOT / "config.toml"
    port = free_port()
    # Its own storage directory: the shipped `[storage] path = "data"` may be in use.
    env = {"ROOMCAST_SERVER__BIND": f"127.0.0.1:{port}", "RUST_LOG": "warn",
           "ROOMCAST_STORAGE__PATH": str(tmp_path_factory.mktemp("storage"))}
    token = subprocess.run([str(roomcast_bin()), "token", "--config", str(config), "--sub", "alice",
                            "--projects", "42"], check=True, capture_output=True, text=True,
                           env=child_env(env)).stdout.strip()
    srv = start_server(config, port=port, env=env, ready_path="/health")
    yield srv.url, token
    srv.stop()


def test_the_docs_have_the_snippets_this_harness_knows():
    assert len(SNIPPETS) >= 4, SNIPPETS
    for marker in SKIP:
        assert any(marker in code for _, _, code in SNIPPETS), f"SKIP {marker!r} matches nothing"


@pytest.mark.parametrize("name,line,code", SNIPPETS, ids=[f"{n}:{l}" for n, l, _ in SNIPPETS])
def test_snippet_runs_as_written(shipped, name, line, code):
    url, token = shipped
    reason = next((why for marker, why in SKIP.items() if marker in code), None)
    if reason:
        pytest.skip(reason)
    program = code.replace("http://127.0.0.1:8000", url)
    assert program != code, "the snippet talks to the documented address"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "snippet.py"
        path.write_text("import os\nTOKEN = token = os.environ['TOKEN']\n" + program + "\n")
        out_path = Path(tmp) / "out.txt"
        with open(out_path, "wb") as out:
            proc = subprocess.Popen([sys.executable, "-u", str(path)], stdout=out,
                                    stderr=subprocess.STDOUT, env={**os.environ, "TOKEN": token})
        try:
            status = f"snippet-{uuid.uuid4().hex[:8]}"
            deadline = time.monotonic() + RUN_DEADLINE_S
            while True:
                output = out_path.read_text(errors="replace")
                if proc.poll() is not None:
                    # A publishing snippet: it ends by itself and prints the event's id.
                    assert proc.returncode == 0, output
                    assert UUID_RE.search(output) or status in output, output
                    return
                if status in output:
                    return
                assert time.monotonic() < deadline, f"{name}:{line} never showed the event:\n{output}"
                requests.post(url + "/api/v1/events", timeout=5,
                              headers={"Authorization": f"Bearer {DEV_KEY}"},
                              json={"type": "project.updated",
                                    "data": {"project_id": "42", "status": status}})
                time.sleep(0.3)
        finally:
            proc.kill()
            proc.wait()
