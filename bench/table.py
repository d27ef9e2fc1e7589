#!/usr/bin/env python3
"""Prints bench/compare.sh's runs as Markdown tables: figure, Roomcast, Node, ratio.

Usage: table.py DIR SCENARIO... (DIR holds <scenario>.roomcast.json and <scenario>.node.json)
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
FIGURES = {
    "hold": CONNECT[:4] + [("subscribe p50 (ms)", "subscribe_ms.p50"), ("subscribe p99 (ms)", "subscribe_ms.p99")] + CONNECT[4:],
    "connect": CONNECT,
    "fanout": DELIVERY,
    "flat": DELIVERY,
    "rooms": DELIVERY,
    "cluster": DELIVERY,
    "cluster-flat": DELIVERY,
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
TITLES = {
    "hold": "hold: idle sockets, each subscribed to project:bench",
    "connect": "connect: idle sockets, handshake only (hold --no-subscribe)",
    "fanout": "fanout: one room, fixed rate",
    "flat": "fanout: one room, flat out",
    "rooms": "rooms: sockets over many project rooms, random rooms",
    "storm": "storm: drops and recovery during publishing",
    "cluster": "cluster: two nodes on Redis, one room, fixed rate, publishing at node A",
    "cluster-flat": "cluster: two nodes on Redis, one room, flat out, publishing at node A",
    "cluster-storm": "cluster storm: drops, coming back at either node, with recovery",
}


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
    keys = ("sockets", "rooms", "rate", "published", "dropping_sockets")
    return ", ".join(f"{k} {fmt(run[k])}" for k in keys if k in run)


def table(runs_dir, scenario):
    rc = load(runs_dir / f"{scenario}.roomcast.json")
    node = load(runs_dir / f"{scenario}.node.json")
    print(f"\n## {TITLES.get(scenario, scenario)}\n")
    print(f"Roomcast: {params(rc) if rc else 'run failed'}  \nNode: {params(node) if node else 'run failed'}\n")
    print("| figure | Roomcast | Node | Roomcast / Node |")
    print("|---|---:|---:|---:|")
    for label, key, *scale in FIGURES[scenario]:
        a = pick(rc, key, *scale) if rc else None
        b = pick(node, key, *scale) if node else None
        print(f"| {label} | {fmt(a)} | {fmt(b)} | {ratio(a, b)} |")


def main():
    runs_dir = Path(sys.argv[1])
    for scenario in sys.argv[2:]:
        table(runs_dir, scenario)


if __name__ == "__main__":
    main()
