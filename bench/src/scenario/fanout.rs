//! `fanout` / `cluster` / `rooms`: N sockets in R rooms (one for fanout), events published
//! at one node to random rooms, at a fixed rate or flat out; every delivery's latency.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Publishing, delivery_report, publish_and_drain};
use crate::Common;
use crate::crowd::{Crowd, Totals, room_names};
use crate::measure::round;
use crate::proto::Protocol;
use crate::publish::Order;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub publishing: Publishing,
    /// What the sockets speak: Socket.IO, or Roomcast's plain JSON WebSocket (`/ws/json`).
    #[arg(long, value_enum, default_value_t = Protocol::Socketio)]
    pub protocol: Protocol,
    /// Concurrent publishers when publishing flat out.
    #[arg(long, default_value_t = 4)]
    pub publishers: usize,
}

#[derive(clap::Args, Debug)]
pub struct RoomsArgs {
    #[command(flatten)]
    pub fanout: Args,
    /// Rooms the sockets are spread over (`project:bench-0` ...), round-robin.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
}

pub async fn run(scenario: &str, args: Args, rooms: usize) -> anyhow::Result<Value> {
    anyhow::ensure!(rooms >= 1, "--rooms must be at least 1");
    let names = room_names(rooms);
    let crowd = Crowd::gather(&args.common, args.protocol, &names, true, None, None).await?;
    let connect_secs = crowd.connect_secs;
    let order = Order::Any {
        workers: args.publishers,
    };
    let quiet = Duration::from_secs(2);
    let delivered =
        publish_and_drain(&crowd, &args.common, &args.publishing, names, order, quiet).await;
    let mut totals = Totals::of(crowd.disperse().await, &delivered.sent.accepted);
    let mut report = delivery_report(&delivered, &mut totals, args.publishing.rate);
    let head = json!({
        "scenario": scenario,
        "sockets": args.common.sockets,
        "nodes": args.common.url.len(),
        "protocol": args.protocol,
        "rooms": rooms,
        "connect_secs": round(connect_secs),
        "connects_per_sec": round(args.common.sockets as f64 / connect_secs),
    });
    if let Value::Object(head) = head {
        report.extend(head);
    }
    Ok(Value::Object(report))
}
