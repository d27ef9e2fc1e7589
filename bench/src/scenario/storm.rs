//! `storm`: N sockets in a room (or R rooms) while events are published one at a time; a
//! fraction of them drop their TCP connection at random intervals (no disconnect packet)
//! and come back with the server's recovery: Roomcast's `auth.since`, or socket.io's
//! connection state recovery (`pid`/`offset`) on the Node reference. A Roomcast socket's
//! cursor starts at its room's position (the subscribe ack, or `connection.established`
//! for `global`/`user:`), so it may drop before its first event and still recover. At the
//! end every socket must hold every event exactly once and in publish order.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Publishing, delivery_report, publish_and_drain};
use crate::Common;
use crate::crowd::{Crowd, Totals, room_names};
use crate::measure::{percentiles_ms, round};
use crate::proto::Protocol;
use crate::publish::Order;
use crate::socket::Drops;

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub publishing: Publishing,
    /// What the sockets speak: Socket.IO, or Roomcast's plain JSON WebSocket (`/ws/json`).
    #[arg(long, value_enum, default_value_t = Protocol::Socketio)]
    pub protocol: Protocol,
    #[arg(long, default_value_t = 1)]
    pub rooms: usize,
    /// Every socket in `global`, where the server puts it at connect (no subscribe; the
    /// cursor starts at the position in `connection.established`). Roomcast only.
    #[arg(long)]
    pub global: bool,
    /// Fraction of the sockets that drop (the others stay connected throughout).
    #[arg(long, default_value_t = 0.5)]
    pub drop_fraction: f64,
    /// Mean seconds between one socket's drops (uniform between 0 and twice this).
    #[arg(long, default_value_t = 2.0)]
    pub drop_every: f64,
    /// Longest pause, in ms, between a drop and the reconnect.
    #[arg(long, default_value_t = 200)]
    pub max_pause_ms: u64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(args.rooms >= 1, "--rooms must be at least 1");
    anyhow::ensure!(
        !args.global || args.rooms == 1,
        "--global is one room: leave --rooms at 1"
    );
    let names = if args.global {
        vec!["global".to_owned()]
    } else {
        room_names(args.rooms)
    };
    let drops = Drops {
        every: Duration::from_secs_f64(args.drop_every),
        max_pause: Duration::from_millis(args.max_pause_ms),
    };
    let unstable =
        (args.common.sockets as f64 * args.drop_fraction.clamp(0.0, 1.0)).round() as usize;
    let drops = Some((drops, unstable));
    let crowd = Crowd::gather(&args.common, args.protocol, &names, true, drops, None).await?;
    let connect_secs = crowd.connect_secs;
    // A dropped socket may need a reconnect, a replay and a slow handshake: wait longer.
    let quiet = Duration::from_secs(3);
    let delivered = publish_and_drain(
        &crowd,
        &args.common,
        &args.publishing,
        names,
        Order::Sequential,
        quiet,
    )
    .await;
    let mut totals = Totals::of(crowd.disperse().await, &delivered.sent.accepted);
    let mut report = delivery_report(&delivered, &mut totals, args.publishing.rate);
    let head = json!({
        "scenario": "storm",
        "sockets": args.common.sockets,
        "nodes": args.common.url.len(),
        "protocol": args.protocol,
        "rooms": args.rooms,
        "dropping_sockets": unstable,
        "connect_secs": round(connect_secs),
        "reconnects": totals.recovered + totals.not_recovered,
        "recovered": totals.recovered,
        "not_recovered": totals.not_recovered,
        "out_of_order": totals.out_of_order,
        "reconnect_ms": percentiles_ms(std::mem::take(&mut totals.reconnect_us)),
    });
    if let Value::Object(head) = head {
        report.extend(head);
    }
    Ok(Value::Object(report))
}
