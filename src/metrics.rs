//! Process-wide counters: the plain ones behind `GET /api/v1/websocket/stats`, the
//! labelled ones and the publish latency histogram behind `GET /metrics` (Prometheus text),
//! and for the admin overview publishes per event type with their recent rate and a small
//! ring of recent client-facing errors.
//!
//! Each server has its own Prometheus registry (no global recorder), so several servers in
//! one process, as in the tests, never mix their figures. Everything here is updated once
//! per publish, handshake or refusal, never once per recipient.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use prometheus::{Encoder, Histogram, HistogramOpts, IntCounterVec, Opts, Registry, TextEncoder};
use serde::Serialize;

use crate::events::Timestamp;

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
    /// Publishes per event type (the same publishes as `events_published`).
    pub by_type: EventCounts,
    /// The last few client-facing errors, for the admin page.
    pub errors: RecentErrors,
    registry: Registry,
    published: IntCounterVec,
    auth_failed: IntCounterVec,
    rate_limited: IntCounterVec,
    publish_seconds: Histogram,
    webhook_sent: IntCounterVec,
    webhook_dropped: IntCounterVec,
    webhook_failed: IntCounterVec,
    webhook_retried: IntCounterVec,
    /// Publishes per labelled tenant (at most [`TENANT_LABELS`]), for tenant-bound stats.
    tenants: Mutex<HashMap<String, u64>>,
}

impl Default for Counters {
    // The definitions are constants, registered into a fresh registry: a failure is a typo
    // here, which every test that builds a server would hit first.
    #[allow(clippy::expect_used)]
    fn default() -> Self {
        let registry = Registry::new();
        // The definitions are constants: registering them into a fresh registry cannot fail.
        let published = IntCounterVec::new(
            Opts::new(
                "roomcast_events_published_total",
                "Events published (typed by type, custom events as \"custom\", client events as \"client\"), by tenant",
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
                "Requests refused by a limit: connections_node, connections_tenant, connections_user, handshakes_ip, events, publish, publish_bytes, connections_ip, descriptors, auth_failures_ip, handshakes_user, preauth_ip, preauth_node",
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
        let webhook = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric")
        };
        let webhook_sent = webhook(
            "roomcast_webhook_events_sent_total",
            "Outbound webhook events the receiver accepted (2xx), by webhook (its index in [[webhooks]])",
            &["webhook"],
        );
        let webhook_dropped = webhook(
            "roomcast_webhook_events_dropped_total",
            "Outbound webhook events never delivered, by webhook and reason (queue_full: the oldest waiting event made room; expired: its batch was not accepted within retry_max_age_secs)",
            &["webhook", "reason"],
        );
        let webhook_failed = webhook(
            "roomcast_webhook_requests_failed_total",
            "Outbound webhook requests that failed (non-2xx answer, timeout, unreachable), by webhook",
            &["webhook"],
        );
        let webhook_retried = webhook(
            "roomcast_webhook_retries_total",
            "Outbound webhook batches sent again after a failed request, by webhook",
            &["webhook"],
        );
        for metric in [
            Box::new(published.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(webhook_sent.clone()),
            Box::new(webhook_dropped.clone()),
            Box::new(webhook_failed.clone()),
            Box::new(webhook_retried.clone()),
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
            by_type: EventCounts::default(),
            errors: RecentErrors::default(),
            registry,
            published,
            auth_failed,
            rate_limited,
            publish_seconds,
            webhook_sent,
            webhook_dropped,
            webhook_failed,
            webhook_retried,
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
            if let Some(count) = seen.get_mut(tenant) {
                *count += 1;
                tenant
            } else if seen.len() < TENANT_LABELS {
                seen.insert(tenant.to_owned(), 1);
                tenant
            } else {
                "_other"
            }
        };
        self.published.with_label_values(&[kind, tenant]).inc();
        self.publish_seconds.observe(took.as_secs_f64());
    }

    /// Publishes into `tenant` at this node; `None` when the tenant came after the first
    /// [`TENANT_LABELS`] and is counted only in `_other`.
    pub fn published_in(&self, tenant: &str) -> Option<u64> {
        let seen = self.tenants.lock().unwrap_or_else(|e| e.into_inner());
        match seen.get(tenant) {
            Some(count) => Some(*count),
            None if seen.len() < TENANT_LABELS => Some(0),
            None => None,
        }
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

    /// `events` events of webhook `index` accepted by its receiver.
    pub fn webhook_sent(&self, index: &str, events: u64) {
        self.webhook_sent.with_label_values(&[index]).inc_by(events);
    }

    /// `events` events of webhook `index` dropped for `reason` (`queue_full`, `expired`).
    pub fn webhook_dropped(&self, index: &str, reason: &str, events: u64) {
        self.webhook_dropped
            .with_label_values(&[index, reason])
            .inc_by(events);
    }

    /// One failed request of webhook `index`.
    pub fn webhook_failed(&self, index: &str) {
        self.webhook_failed.with_label_values(&[index]).inc();
    }

    /// One retry of a batch of webhook `index`.
    pub fn webhook_retried(&self, index: &str) {
        self.webhook_retried.with_label_values(&[index]).inc();
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

/// Distinct event names counted one by one; any further custom name counts as
/// [`OTHER_TYPES`], so a publisher inventing names cannot grow the map without bound.
pub const MAX_COUNTED_TYPES: usize = 256;
pub const OTHER_TYPES: &str = "(other)";

/// Publishes per event type. One read lock and one atomic add per publish; the write lock
/// is taken only the first time a name is seen.
#[derive(Debug, Default)]
pub struct EventCounts {
    counts: RwLock<HashMap<Arc<str>, AtomicU64>>,
}

impl EventCounts {
    pub fn incr(&self, event_type: &str) {
        if let Ok(counts) = self.counts.read()
            && let Some(c) = counts.get(event_type)
        {
            c.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let Ok(mut counts) = self.counts.write() else {
            return;
        };
        let key: Arc<str> = if counts.len() < MAX_COUNTED_TYPES || counts.contains_key(event_type) {
            event_type.into()
        } else {
            OTHER_TYPES.into()
        };
        counts
            .entry(key)
            .or_default()
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Every type's total so far.
    pub fn totals(&self) -> Totals {
        match self.counts.read() {
            Ok(counts) => counts
                .iter()
                .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                .collect(),
            Err(_) => HashMap::new(),
        }
    }
}

/// Publishes so far per event type.
pub type Totals = HashMap<Arc<str>, u64>;

/// How far back [`Rates`] looks to compute events per second.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// Samples [`EventCounts`] once a second (one map copy, nothing per publish) and answers
/// events per second by type over the last [`RATE_WINDOW`].
#[derive(Debug, Default)]
pub struct Rates {
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

impl Rates {
    /// Samples `counters` until its worker is stopped.
    pub async fn run(self: Arc<Self>, counters: Arc<Counters>) {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.sample(Instant::now(), counters.by_type.totals());
        }
    }

    fn sample(&self, at: Instant, totals: Totals) {
        let Ok(mut samples) = self.samples.lock() else {
            return;
        };
        samples.push_back((at, totals));
        while samples
            .front()
            .is_some_and(|(t, _)| at.duration_since(*t) > RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Events per second of each type between the oldest sample in the window and `now`
    /// (`now` being the current totals); empty until a first sample exists.
    pub fn per_sec(&self, now: &Totals) -> HashMap<Arc<str>, f64> {
        let Ok(samples) = self.samples.lock() else {
            return HashMap::new();
        };
        let Some((then, old)) = samples.front() else {
            return HashMap::new();
        };
        let secs = then.elapsed().as_secs_f64();
        if secs < 0.5 {
            return HashMap::new();
        }
        now.iter()
            .map(|(k, total)| {
                let before = old.get(k).copied().unwrap_or(0);
                (k.clone(), total.saturating_sub(before) as f64 / secs)
            })
            .collect()
    }
}

/// How many errors [`RecentErrors`] keeps.
pub const RECENT_ERRORS: usize = 50;
/// Longest message kept per error, in characters.
const MESSAGE_CHARS: usize = 200;

/// A client-facing error as the admin page lists it. Holds a code, where it happened and
/// the message the client was sent: never a token, key or secret.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorRecord {
    pub time: String,
    /// `handshake` (a refused Socket.IO connect) or `http` (an API answer of 4xx/5xx).
    pub source: &'static str,
    pub code: String,
    /// The namespace of a handshake, `METHOD /route` of an HTTP request.
    pub at: String,
    pub message: String,
}

/// Refused authentication of one kind (a `source` and `code`), counted rather than listed:
/// anyone can make it without a key, as fast as they like.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedAuth {
    pub source: &'static str,
    pub code: String,
    pub count: u64,
    pub first_time: String,
    pub last_time: String,
    /// Where the last one happened, and the message it was sent.
    pub at: String,
    pub message: String,
}

/// Most kinds of refused authentication [`RecentErrors`] counts; the codes are a short
/// fixed list, so this is only a guard.
const REFUSED_KINDS: usize = 16;

/// A bounded ring of the last [`RECENT_ERRORS`] client-facing errors, newest last, and
/// beside it refused authentication (missing or wrong keys and tokens, bad webhook
/// signatures), one counted entry per kind, so a flood of it never pushes a real error out.
#[derive(Debug, Default)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<ErrorRecord>>,
    refused: Mutex<Vec<RefusedAuth>>,
}

impl RecentErrors {
    pub fn record(&self, source: &'static str, code: &str, at: String, message: &str) {
        let record = ErrorRecord {
            time: Timestamp::now().to_string(),
            source,
            code: code.to_owned(),
            at,
            message: message.chars().take(MESSAGE_CHARS).collect(),
        };
        if let Ok(mut ring) = self.ring.lock() {
            if ring.len() == RECENT_ERRORS {
                ring.pop_front();
            }
            ring.push_back(record);
        }
    }

    /// Counts one refused authentication in its kind's entry.
    pub fn refused(&self, source: &'static str, code: &str, at: String, message: &str) {
        let now = Timestamp::now().to_string();
        let message: String = message.chars().take(MESSAGE_CHARS).collect();
        let mut refused = self.refused.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(kind) = refused
            .iter_mut()
            .find(|r| r.source == source && r.code == code)
        {
            kind.count += 1;
            kind.last_time = now;
            kind.at = at;
            kind.message = message;
        } else if refused.len() < REFUSED_KINDS {
            refused.push(RefusedAuth {
                source,
                code: code.to_owned(),
                count: 1,
                first_time: now.clone(),
                last_time: now,
                at,
                message,
            });
        }
    }

    /// Each kind of refused authentication, most recent first.
    pub fn refused_auth(&self) -> Vec<RefusedAuth> {
        let mut refused = self
            .refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // RFC 3339 UTC timestamps of one width sort as text.
        refused.sort_by(|a, b| b.last_time.cmp(&a.last_time));
        refused
    }

    /// Newest first.
    pub fn newest_first(&self) -> Vec<ErrorRecord> {
        match self.ring.lock() {
            Ok(ring) => ring.iter().rev().cloned().collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_names_past_the_cap_count_as_other() {
        let counts = EventCounts::default();
        for i in 0..MAX_COUNTED_TYPES + 10 {
            counts.incr(&format!("custom.{i}"));
        }
        counts.incr("custom.0");
        let totals = counts.totals();
        assert_eq!(totals.len(), MAX_COUNTED_TYPES + 1);
        assert_eq!(totals[OTHER_TYPES], 10);
        assert_eq!(totals["custom.0"], 2);
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let errors = RecentErrors::default();
        for i in 0..RECENT_ERRORS + 5 {
            errors.record("http", &format!("c{i}"), String::new(), "m");
        }
        let kept = errors.newest_first();
        assert_eq!(kept.len(), RECENT_ERRORS);
        assert_eq!(kept[0].code, format!("c{}", RECENT_ERRORS + 4));
    }

    #[test]
    fn refused_auth_is_counted_apart_from_the_ring() {
        let errors = RecentErrors::default();
        errors.record("http", "internal", "POST /x".into(), "real");
        for _ in 0..RECENT_ERRORS * 3 {
            errors.refused("http", "unauthorized", "GET /y".into(), "m");
        }
        errors.refused("handshake", "token_invalid", "/".into(), "m");
        assert_eq!(errors.newest_first().len(), 1);
        let refused = errors.refused_auth();
        assert_eq!(refused.len(), 2);
        let http = refused.iter().find(|r| r.source == "http").unwrap();
        assert_eq!(http.count, RECENT_ERRORS as u64 * 3);
        assert_eq!(http.code, "unauthorized");
    }

    #[test]
    fn rates_over_the_window() {
        let rates = Rates::default();
        let t0 = Instant::now() - Duration::from_secs(2);
        rates.sample(t0, HashMap::from([("a".into(), 10)]));
        let per_sec = rates.per_sec(&HashMap::from([("a".into(), 30)]));
        let a = per_sec["a"];
        assert!((9.0..=10.5).contains(&a), "{a}");
    }
}
