//! The scenarios, and the publish-then-drain phase `fanout`, `rooms`, `storm` and `chat`
//! share.

pub mod chat;
pub mod fanout;
pub mod hold;
pub mod soak;
pub mod storm;
pub mod streams;
pub mod yjs;

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::crowd::{Crowd, Totals};
use crate::measure::{Cpu, cpu_split, own_cpu, per, percentiles_ms, round};
use crate::publish::{Order, Publisher};
use crate::socket::Phase;

/// Where and how fast events are published.
#[derive(clap::Args, Debug, Clone)]
pub struct Publishing {
    /// Node the events are published at (default: the first --url).
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Events per second; 0 publishes flat out.
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Seconds of publishing.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
}

/// What the publishers did, whoever they were.
struct Sent {
    published: u64,
    /// Refused, failed or never answered.
    failed: u64,
    /// Per room, the publish numbers the server accepted.
    accepted: Vec<Vec<u64>>,
    /// The publishers were sockets of the rooms, which do not receive what they sent.
    by_members: bool,
}

/// What a publish phase did, for the report.
struct Delivered {
    sent: Sent,
    publish_secs: f64,
    /// Publishing plus draining.
    total_secs: f64,
    server_cpu: Option<Cpu>,
    /// The load generator's own CPU over the same span.
    generator_cpu: Cpu,
}

/// Runs `publishing` while the crowd listens (it ends by calming the crowd), then lets
/// deliveries drain: until all arrived, or none for `quiet`. Server CPU is counted over both.
async fn measured(
    crowd: &Crowd,
    common: &crate::Common,
    quiet: Duration,
    publishing: impl Future<Output = Sent>,
) -> Delivered {
    let (cpu_before, own_before) = (cpu_split(&common.pids), own_cpu());
    let started = Instant::now();
    let sent = publishing.await;
    let publish_secs = started.elapsed().as_secs_f64();
    let expected = crowd.expected(&sent.accepted, sent.by_members);
    crowd.drain(expected, quiet).await;
    let total_secs = started.elapsed().as_secs_f64();
    let server_cpu = cpu_split(&common.pids)
        .zip(cpu_before)
        .map(|(after, before)| after.since(before));
    let generator_cpu = own_cpu().since(own_before);
    Delivered {
        sent,
        publish_secs,
        total_secs,
        server_cpu,
        generator_cpu,
    }
}

/// Publishes over HTTP to `rooms` while the crowd listens, then lets deliveries drain.
async fn publish_and_drain(
    crowd: &Crowd,
    common: &crate::Common,
    publishing: &Publishing,
    rooms: Vec<String>,
    order: Order,
    quiet: Duration,
) -> Delivered {
    let url = publishing.publish_url.as_deref().unwrap_or(&common.url[0]);
    let publisher = Publisher::new(url, &common.api_key, rooms);
    let duration = Duration::from_secs_f64(publishing.duration);
    measured(crowd, common, quiet, async {
        publisher.run(publishing.rate, duration, order).await;
        crowd.shared.phase.send_replace(Phase::Calm);
        Sent {
            published: publisher.published(),
            failed: publisher.failed(),
            accepted: publisher.accepted(),
            by_members: false,
        }
    })
    .await
}

fn share(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| (part / whole * 100.0).round() / 100.0)
}

/// The delivery figures every publishing scenario reports; `rate` is the one asked for.
fn delivery_report(d: &Delivered, t: &mut Totals, rate: f64) -> Map<String, Value> {
    let published = d.sent.published;
    let fields = json!({
        "rate": if rate > 0.0 { json!(rate) } else { json!("max") },
        "published": published,
        "publish_failed": d.sent.failed,
        "publishes_per_sec": round(published as f64 / d.publish_secs),
        "expected_deliveries": t.expected,
        "received": t.received,
        "lost": t.lost,
        "duplicated": t.duplicated,
        "failed_sockets": t.failed_sockets,
        "deliveries_per_sec": round(t.received as f64 / d.total_secs),
        "server_cpu_secs": d.server_cpu.map(|c| round(c.total())),
        "server_kernel_share": d.server_cpu.and_then(|c| share(c.system, c.total())),
        "deliveries_per_server_cpu_sec": per(t.received as f64, d.server_cpu.map(Cpu::total)),
        "generator_cpu_secs": round(d.generator_cpu.total()),
        "generator_kernel_share": share(d.generator_cpu.system, d.generator_cpu.total()),
        "deliveries_per_generator_cpu_sec": per(t.received as f64, Some(d.generator_cpu.total())),
        "latency_ms": percentiles_ms(std::mem::take(&mut t.latencies_us)),
    });
    match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}
