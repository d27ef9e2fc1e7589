//! `chat`: N sockets over R rooms `project:bench-<r>`; once all joined, every socket
//! publishes `bench.chat` into its room with the `publish` command at `--rate` events/s for
//! `--duration` s, and the room's other sockets receive it (the sender does not: no
//! `echo`). Lost is per receiving socket: publishes acked for its room, but its own, that
//! it never got.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Sent, delivery_report, measured};
use crate::Common;
use crate::crowd::{Crowd, Totals, room_names};
use crate::measure::{round, rss_kib};
use crate::proto::Protocol;
use crate::socket::Phase;
use crate::talk::{Ledger, Talk};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Rooms the sockets are spread over (`project:bench-0` ...), round-robin.
    #[arg(long, default_value_t = 100)]
    pub rooms: usize,
    /// Events per second each socket publishes.
    #[arg(long, default_value_t = 1.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

pub async fn run(args: Args) -> anyhow::Result<Value> {
    anyhow::ensure!(args.rooms >= 1, "--rooms must be at least 1");
    anyhow::ensure!(
        args.rate > 0.0,
        "--rate must be above 0 (events/s per socket)"
    );
    let names = room_names(args.rooms);
    let ledger = Ledger::new(names.len());
    let talk = Talk {
        every: Duration::from_secs_f64(1.0 / args.rate),
        ledger: ledger.clone(),
    };
    let pids = &args.common.pids;
    let rss_before = rss_kib(pids);
    let crowd = Crowd::gather(
        &args.common,
        Protocol::Socketio,
        &names,
        true,
        None,
        Some(talk),
    )
    .await?;
    let connect_secs = crowd.connect_secs;
    let duration = Duration::from_secs_f64(args.duration);
    let delivered = measured(&crowd, &args.common, Duration::from_secs(2), async {
        crowd.shared.phase.send_replace(Phase::Talking);
        tokio::time::sleep(duration).await;
        // Acks still on their way say which of the last publishes count.
        ledger.close(Duration::from_secs(10)).await;
        crowd.shared.phase.send_replace(Phase::Calm);
        Sent {
            published: ledger.published(),
            failed: ledger.refusals().values().sum(),
            accepted: ledger.accepted(),
            by_members: true,
        }
    })
    .await;
    let rss_after = rss_kib(pids);
    let mut totals = Totals::of(crowd.disperse().await, &delivered.sent.accepted);
    let mut report = delivery_report(&delivered, &mut totals, args.rate);
    let head = json!({
        "scenario": "chat",
        "sockets": args.common.sockets,
        "nodes": args.common.url.len(),
        "rooms": args.rooms,
        "connect_secs": round(connect_secs),
        "connects_per_sec": round(args.common.sockets as f64 / connect_secs),
        "refusals": ledger.refusals(),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
    });
    if let Value::Object(head) = head {
        report.extend(head);
    }
    Ok(Value::Object(report))
}
