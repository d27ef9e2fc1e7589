//! `soak`: a long `storm` in which the sockets churn (drop their connection, come back,
//! re-join with recovery, receive) while events are published throughout. Server memory
//! and open file descriptors are read before the sockets connect, every second during the
//! run and after they all left: a leak shows as `after` well above `before`.
//!
//! With `--warmup`, a shorter storm of the same size runs first and its sockets leave; what
//! the server holds then (`warm`) is the baseline the long run is compared with: a process
//! that has served this load once keeps its touched code, grown tables and the allocator's
//! partly used pages, which a fresh process (`before`) does not have.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::storm;
use crate::measure::{open_fds, rss_kib};

#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    #[command(flatten)]
    pub storm: storm::Args,
    /// Seconds to wait after the last socket left before reading memory and descriptors.
    #[arg(long, default_value_t = 5.0)]
    pub settle: f64,
    /// Seconds of a first, warm-up storm whose leftovers are the baseline (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub warmup: f64,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<Value> {
    let pids = args.storm.common.pids.clone();
    let (rss_before, fds_before) = (rss_kib(&pids), open_fds(&pids));
    let (mut rss_warm, mut fds_warm) = (None, None);
    if args.warmup > 0.0 {
        let mut warmup = args.storm.clone();
        warmup.publishing.duration = args.warmup;
        storm::run(warmup).await?;
        tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
        (rss_warm, fds_warm) = (rss_kib(&pids), open_fds(&pids));
    }
    let (stop, mut stopped) = oneshot::channel::<()>();
    let sampler = tokio::spawn({
        let pids = pids.clone();
        async move {
            let (mut rss_peak, mut fds_peak) = (None, None);
            loop {
                rss_peak = rss_peak.max(rss_kib(&pids));
                fds_peak = fds_peak.max(open_fds(&pids));
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = &mut stopped => return (rss_peak, fds_peak),
                }
            }
        }
    });
    let report = storm::run(args.storm).await;
    let _ = stop.send(());
    let (rss_peak, fds_peak) = sampler.await.unwrap_or_default();
    let mut report = match report? {
        Value::Object(map) => map,
        _ => Default::default(),
    };
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let (rss_after, fds_after) = (rss_kib(&pids), open_fds(&pids));
    let ratio = |after: Option<u64>, before: Option<u64>| match (after, before) {
        (Some(a), Some(b)) if b > 0 => json!((a as f64 / b as f64 * 100.0).round() / 100.0),
        _ => Value::Null,
    };
    let figures = json!({
        "scenario": "soak",
        "rss_before_kib": rss_before,
        "rss_peak_kib": rss_peak,
        "rss_after_kib": rss_after,
        "rss_after_over_before": ratio(rss_after, rss_before),
        "fds_before": fds_before,
        "fds_peak": fds_peak,
        "fds_after": fds_after,
        "fds_after_over_before": ratio(fds_after, fds_before),
        "rss_warm_kib": rss_warm,
        "fds_warm": fds_warm,
        "rss_after_over_warm": ratio(rss_after, rss_warm),
        "fds_after_over_warm": ratio(fds_after, fds_warm),
    });
    if let Value::Object(figures) = figures {
        report.extend(figures);
    }
    Ok(Value::Object(report))
}
