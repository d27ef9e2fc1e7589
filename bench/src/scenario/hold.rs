//! `hold`: N idle sockets. Server memory before connecting and once they are all connected
//! and settled, bytes per socket, and how fast they connected.

use std::time::Duration;

use serde_json::{Value, json};

use crate::Common;
use crate::crowd::{Crowd, Totals, room_names};
use crate::measure::{cpu_secs, per, percentiles_ms, round, rss_kib};
use crate::proto::Protocol;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// What the sockets speak: Socket.IO, or Roomcast's plain JSON WebSocket (`/ws/json`).
    #[arg(long, value_enum, default_value_t = Protocol::Socketio)]
    pub protocol: Protocol,
    /// Seconds to wait after the last socket joined before reading memory.
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// Only connect: skip the `subscribe` round trip to `project:bench`.
    #[arg(long)]
    pub no_subscribe: bool,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    let pids = &args.common.pids;
    let rss_before = rss_kib(pids);
    let cpu_before = cpu_secs(pids);
    let rooms = room_names(1);
    let subscribe = !args.no_subscribe;
    let crowd = Crowd::gather(&args.common, args.protocol, &rooms, subscribe, None, None).await?;
    let connect_cpu = cpu_secs(pids).zip(cpu_before).map(|(a, b)| a - b);
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let rss_after = rss_kib(pids);
    let connect_secs = crowd.connect_secs;
    let totals = Totals::of(crowd.disperse().await, &[]);
    let sockets = args.common.sockets;
    let grown = rss_before
        .zip(rss_after)
        .map(|(b, a)| (a as f64 - b as f64) * 1024.0);
    Ok(json!({
        "scenario": "hold",
        "sockets": sockets,
        "nodes": args.common.url.len(),
        "protocol": args.protocol,
        "subscribe": !args.no_subscribe,
        "connect_secs": round(connect_secs),
        "connects_per_sec": round(sockets as f64 / connect_secs),
        "handshake_ms": percentiles_ms(totals.handshake_us),
        "subscribe_ms": percentiles_ms(totals.subscribe_us),
        "connect_server_cpu_secs": connect_cpu.map(round),
        "connects_per_server_cpu_sec": per(sockets as f64, connect_cpu),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "bytes_per_socket": grown.map(|g| round(g / sockets as f64)),
        "failed_sockets": totals.failed_sockets,
    }))
}
