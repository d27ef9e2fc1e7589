//! Process-wide counters behind `GET /api/v1/websocket/stats` and the admin overview:
//! totals, publishes per event type with their recent rate, and a small ring of recent
//! client-facing errors.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::events::Timestamp;

#[derive(Debug, Default)]
pub struct Counters {
    pub events_published: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Deliveries that did not reach one socket (its buffer was full or it was closing).
    /// Counted, never a publish failure: every other recipient got the event.
    pub delivery_failures: AtomicU64,
    /// Cluster: numbered events this node missed on pub/sub and read back from Redis.
    pub repaired_events: AtomicU64,
    /// Publishes per event type (the same publishes as `events_published`).
    pub by_type: EventCounts,
    /// The last few client-facing errors, for the admin page.
    pub errors: RecentErrors,
}

impl Counters {
    pub fn incr(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
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
    /// Samples `counters` until the process ends.
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

/// A bounded ring of the last [`RECENT_ERRORS`] client-facing errors, newest last.
#[derive(Debug, Default)]
pub struct RecentErrors {
    ring: Mutex<VecDeque<ErrorRecord>>,
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
    fn rates_over_the_window() {
        let rates = Rates::default();
        let t0 = Instant::now() - Duration::from_secs(2);
        rates.sample(t0, HashMap::from([("a".into(), 10)]));
        let per_sec = rates.per_sec(&HashMap::from([("a".into(), 30)]));
        let a = per_sec["a"];
        assert!((9.0..=10.5).contains(&a), "{a}");
    }
}
