#!/usr/bin/env python3
"""Prints bench/compare.sh's runs as Markdown tables: figure, Roomcast, Node, ratio.

Usage: table.py DIR[,DIR...] SCENARIO...
Each DIR holds <scenario>.roomcast.json and <scenario>.node.json from one compare.sh run
(OUT=DIR). With several DIRs each figure is the median over the runs with its range in
brackets, and the ratio is the ratio of the medians.
"""

import json
import sys
from pathlib import Path

LATENCY = [(f"latency {p} (ms)", f"latency_ms.{p}") for p in ("p50", "p90", "p99", "p999", "max")]
DELIVERY = [
    ("publishes/s", "publishes_per_sec"),
    ("deliveries/s", "deliveries_per_sec"),
    ("deliveries per server CPU-second", "deliveries_per_server_cpu_sec"),
    *LATENCY,
    ("lost", "lost"),
    ("duplicated", "duplicated"),
]
CONNECT = [
    ("connects/s", "connects_per_sec"),
    ("connects per server CPU-second", "connects_per_server_cpu_sec"),
    ("handshake p50 (ms)", "handshake_ms.p50"),
    ("handshake p99 (ms)", "handshake_ms.p99"),
    ("server RSS before (MiB)", "rss_before_kib", 1 / 1024),
    ("server RSS after (MiB)", "rss_after_kib", 1 / 1024),
    ("bytes per socket", "bytes_per_socket"),
    ("failed sockets", "failed_sockets"),
]
CHAT = [
    *DELIVERY,
    ("publishes refused", "publish_failed"),
    ("server RSS before (MiB)", "rss_before_kib", 1 / 1024),
    ("server RSS after (MiB)", "rss_after_kib", 1 / 1024),
]
FIGURES = {
    "hold": CONNECT[:4] + [("subscribe p50 (ms)", "subscribe_ms.p50"), ("subscribe p99 (ms)", "subscribe_ms.p99")] + CONNECT[4:],
    "connect": CONNECT,
    "fanout": DELIVERY,
    "flat": DELIVERY,
    "rooms": DELIVERY,
    "cluster": DELIVERY,
    "cluster-flat": DELIVERY,
    "chat": CHAT,
    "storm": [
        ("reconnects", "reconnects"),
        ("recovered", "recovered"),
        ("not recovered", "not_recovered"),
        ("lost", "lost"),
        ("duplicated", "duplicated"),
        ("out of order", "out_of_order"),
        ("reconnect p50 (ms)", "reconnect_ms.p50"),
        ("reconnect p99 (ms)", "reconnect_ms.p99"),
        ("deliveries per server CPU-second", "deliveries_per_server_cpu_sec"),
        *LATENCY[:1],
        *LATENCY[2:3],
    ],
}
FIGURES["cluster-storm"] = FIGURES["storm"]
FIGURES["streams"] = [
    ("appends/s", "appends_per_sec"),
    ("deltas (frames) received/s", "deltas_per_sec"),
    ("appends per delta (coalescing)", "appends_per_delta"),
    ("characters delivered", "chars_delivered"),
    ("server CPU (s)", "server_cpu_secs"),
    ("server CPU per delivered character (ns)", "server_cpu_ns_per_char"),
    ("latency p50 (ms)", "latency_ms.p50"),
    ("latency p99 (ms)", "latency_ms.p99"),
    ("latency max (ms)", "latency_ms.max"),
    ("resumes (gaps)", "resumes"),
    ("overlapping characters dropped", "overlap_chars"),
    ("viewer streams lost", "lost"),
    ("viewer streams duplicated", "duplicated"),
    ("viewer streams corrupted", "corrupted"),
    ("appends refused", "publish_failed"),
]
FIGURES["cluster-streams"] = FIGURES["streams"]
FIGURES["streams-window"] = FIGURES["streams"]
FIGURES["resume"] = [
    ("all viewers hold the whole text (ms)", "all_resumed_ms"),
    ("resume p50 (ms)", "resume_ms.p50"),
    ("resume p99 (ms)", "resume_ms.p99"),
    ("resume max (ms)", "resume_ms.max"),
    ("server CPU (s)", "server_cpu_secs"),
    ("resumes per server CPU-second", "resumes_per_server_cpu_sec"),
    ("not resumed whole", "lost"),
]
# Roomcast over /ws/json against the reference over Socket.IO (it has no plain WebSocket).
for _name in ("hold", "connect", "fanout", "flat", "storm"):
    FIGURES[f"json-{_name}"] = FIGURES[_name]
FIGURES["yjs"] = [
    ("updates/s (sent by the editors)", "updates_per_sec"),
    ("deliveries (updates at another editor)", "deliveries"),
    ("latency p50 (ms)", "latency_ms.p50"),
    ("latency p90 (ms)", "latency_ms.p90"),
    ("latency p99 (ms)", "latency_ms.p99"),
    ("latency max (ms)", "latency_ms.max"),
    ("server CPU (s)", "server_cpu_secs"),
    ("server CPU per update (µs)", "server_cpu_per_update_us"),
    ("deliveries per server CPU-second", "deliveries_per_server_cpu_sec"),
    ("server RSS before (MiB)", "rss_before_kib", 1 / 1024),
    ("server RSS peak (MiB)", "rss_peak_kib", 1 / 1024),
    ("server RSS after (MiB)", "rss_after_kib", 1 / 1024),
    ("sync at join p99 (ms)", "sync_ms.p99"),
    ("lost", "lost"),
    ("documents diverged", "diverged_docs"),
    ("failed sockets", "failed_sockets"),
]
# sessions-<scenario>: the scenario with server.lean_websocket = false (socketioxide's sessions).
SESSIONS = ("hold", "connect", "fanout", "flat", "storm", "rooms", "chat")
for _name in SESSIONS:
    FIGURES[f"sessions-{_name}"] = FIGURES[_name]
# The reference keeps a stream in one process: no cluster streams there.
ROOMCAST_ONLY = {"cluster-streams"}
TITLES = {
    "hold": "hold: idle sockets, each subscribed to project:bench",
    "connect": "connect: idle sockets, handshake only (hold --no-subscribe)",
    "fanout": "fanout: one room, fixed rate",
    "flat": "fanout: one room, flat out",
    "rooms": "rooms: sockets over many project rooms, random rooms",
    "storm": "storm: drops and recovery during publishing",
    "chat": "chat: sockets over many project rooms, each publishing `rate` events/s into its room (publish command)",
    "cluster": "cluster: two nodes on Redis, one room, fixed rate, publishing at node A",
    "cluster-flat": "cluster: two nodes on Redis, one room, flat out, publishing at node A",
    "cluster-storm": "cluster storm: drops, coming back at either node, with recovery",
    "streams": "streams: viewers of concurrent AI streams appended over HTTP (append-to-delivery latency)",
    "streams-window": "streams with Roomcast's [streams] coalesce_ms = STREAMS_WINDOW_MS (the reference has no window)",
    "cluster-streams": "streams on two nodes on Redis, appended at node A (Roomcast only)",
    "resume": "resume: viewers resuming one long AI stream from offset 0 at once",
    "yjs": "yjs: Yjs documents, editors each typing `rate` updates/s (stock y-socket.io protocol; Node: the stock y-socket.io server)",
}
for _name in ("hold", "connect", "fanout", "flat", "storm"):
    TITLES[f"json-{_name}"] = (
        f"json-{TITLES[_name]}; Roomcast's over /ws/json (--protocol json), Node's over Socket.IO (it has no plain WebSocket)"
    )
for _name in SESSIONS:
    TITLES[f"sessions-{_name}"] = (
        f"sessions-{TITLES[_name]}; Roomcast with server.lean_websocket = false (socketioxide's sessions)"
    )


def load(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def pick(run, key, scale=1):
    value = run
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if abs(v) >= 100:
        return f"{v:,.0f}"
    return f"{v:.2f}".rstrip("0").rstrip(".") if v != int(v) else f"{int(v)}"


def ratio(a, b):
    if not isinstance(a, (int, float)) or not isinstance(b, (int, float)):
        return "—"
    if b == 0:
        return "=" if a == 0 else "—"
    return f"{a / b:.2f}×"


def params(run):
    keys = ("protocol", "docs", "editors", "sockets", "rooms", "streams", "rate", "updates", "published", "appends", "chars", "dropping_sockets")
    return ", ".join(f"{k} {fmt(run[k])}" for k in keys if k in run)


def median(values):
    """The median of the numbers among `values` and their (min, max); None when none are."""
    nums = sorted(v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))
    if not nums:
        return None, None
    mid = len(nums) // 2
    med = nums[mid] if len(nums) % 2 else (nums[mid - 1] + nums[mid]) / 2
    return med, (nums[0], nums[-1]) if len(nums) > 1 else None


def cell(value, spread):
    if spread is None or spread[0] == spread[1]:
        return fmt(value)
    return f"{fmt(value)} [{fmt(spread[0])}–{fmt(spread[1])}]"


def table(runs_dirs, scenario):
    rcs = [r for r in (load(d / f"{scenario}.roomcast.json") for d in runs_dirs) if r]
    nodes = [r for r in (load(d / f"{scenario}.node.json") for d in runs_dirs) if r]
    print(f"\n## {TITLES.get(scenario, scenario)}\n")
    runs = f" ({len(runs_dirs)} runs)" if len(runs_dirs) > 1 else ""
    rc_params = params(rcs[0]) if rcs else "run failed"
    node_params = params(nodes[0]) if nodes else "not run (Roomcast only)" if scenario in ROOMCAST_ONLY else "run failed"
    print(f"Roomcast: {rc_params}{runs}  \nNode: {node_params}\n")
    print("| figure | Roomcast | Node | Roomcast / Node |")
    print("|---|---:|---:|---:|")
    for label, key, *scale in FIGURES[scenario]:
        a, a_spread = median(pick(r, key, *scale) for r in rcs)
        b, b_spread = median(pick(r, key, *scale) for r in nodes)
        print(f"| {label} | {cell(a, a_spread)} | {cell(b, b_spread)} | {ratio(a, b)} |")


def main():
    runs_dirs = [Path(d) for d in sys.argv[1].split(",")]
    for scenario in sys.argv[2:]:
        table(runs_dirs, scenario)


if __name__ == "__main__":
    main()
