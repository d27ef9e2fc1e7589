//! Process-wide counters: the plain ones behind `GET /api/v1/websocket/stats`, and the
//! labelled ones and the publish latency histogram behind `GET /metrics` (Prometheus text).
//!
//! Each server has its own Prometheus registry (no global recorder), so several servers in
//! one process, as in the tests, never mix their figures. Everything here is updated once
//! per publish, handshake or refusal, never once per recipient.

use std::collections::HashSet;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};

/// Distinct tenants given their own `tenant` label; later ones are counted as `_other`, so
/// a flood of tenants cannot grow the metrics without bound.
pub const TENANT_LABELS: usize = 1000;

pub struct Counters {
    pub events_published: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Deliveries that did not reach one socket (its buffer was full or it was closing).
    /// Counted, never a publish failure: every other recipient got the event.
    pub delivery_failures: AtomicU64,
    /// Cluster: numbered events this node missed on pub/sub and read back from Redis.
    pub repaired_events: AtomicU64,
    /// Sockets disconnected for sustained abuse of the event rate limit.
    pub rate_limit_disconnects: AtomicU64,
    registry: Registry,
    published: IntCounterVec,
    auth_failed: IntCounterVec,
    rate_limited: IntCounterVec,
    publish_seconds: Histogram,
    tenants: Mutex<HashSet<String>>,
}

impl Default for Counters {
    fn default() -> Self {
        let registry = Registry::new();
        // The definitions are constants: registering them into a fresh registry cannot fail.
        let published = IntCounterVec::new(
            Opts::new(
                "roomcast_events_published_total",
                "Events published (typed by type, custom events as \"custom\"), by tenant",
            ),
            &["type", "tenant"],
        )
        .expect("valid metric");
        let auth_failed = IntCounterVec::new(
            Opts::new(
                "roomcast_auth_failures_total",
                "Refused handshakes by reason (token_missing, token_invalid, token_expired)",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "roomcast_limited_total",
                "Requests refused by a limit: connections_node, connections_tenant, connections_user, handshakes_ip, events, publish",
            ),
            &["limit"],
        )
        .expect("valid metric");
        let publish_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "roomcast_publish_duration_seconds",
                "From a publish entering the broadcaster to the event handed to every local socket (cluster: stored in Redis and published)",
            )
            .buckets(vec![
                0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                1.0, 2.5,
            ]),
        )
        .expect("valid metric");
        for metric in [
            Box::new(published.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(auth_failed.clone()),
            Box::new(rate_limited.clone()),
            Box::new(publish_seconds.clone()),
        ] {
            registry.register(metric).expect("unique metric");
        }
        Self {
            events_published: AtomicU64::new(0),
            auth_failures: AtomicU64::new(0),
            delivery_failures: AtomicU64::new(0),
            repaired_events: AtomicU64::new(0),
            rate_limit_disconnects: AtomicU64::new(0),
            registry,
            published,
            auth_failed,
            rate_limited,
            publish_seconds,
            tenants: Mutex::default(),
        }
    }
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

impl Counters {
    pub fn incr(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// One publish of `kind` (an event type, or `custom`) into `tenant`, which took `took`.
    pub fn published(&self, kind: &str, tenant: &str, took: Duration) {
        Self::incr(&self.events_published, 1);
        let tenant = {
            let mut seen = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
            if seen.contains(tenant) {
                tenant
            } else if seen.len() < TENANT_LABELS {
                seen.insert(tenant.to_owned());
                tenant
            } else {
                "_other"
            }
        };
        self.published.with_label_values(&[kind, tenant]).inc();
        self.publish_seconds.observe(took.as_secs_f64());
    }

    /// A handshake refused with auth error `code`.
    pub fn auth_failed(&self, code: &str) {
        Self::incr(&self.auth_failures, 1);
        self.auth_failed.with_label_values(&[code]).inc();
    }

    /// A request refused by `limit` (see the metric's help for the names).
    pub fn limited(&self, limit: &str) {
        self.rate_limited.with_label_values(&[limit]).inc();
    }

    /// The registry's metrics in Prometheus text format.
    pub fn encode(&self, out: &mut String) {
        let mut buf = Vec::new();
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .is_ok()
        {
            out.push_str(&String::from_utf8_lossy(&buf));
        }
    }
}

/// Appends one unlabelled sample with its `# HELP` and `# TYPE` lines.
pub fn sample(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

/// Appends one sample per label value, under one `# HELP` and `# TYPE`.
pub fn labelled(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (value_of_label, value) in values {
        let _ = writeln!(out, "{name}{{{label}=\"{value_of_label}\"}} {value}");
    }
}
