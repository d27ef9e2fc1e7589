//! Process-wide counters behind `GET /api/v1/websocket/stats`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counters {
    pub events_published: AtomicU64,
    pub auth_failures: AtomicU64,
    /// Deliveries that did not reach one socket (its buffer was full or it was closing).
    /// Counted, never a publish failure: every other recipient got the event.
    pub delivery_failures: AtomicU64,
    /// Cluster: numbered events this node missed on pub/sub and read back from Redis.
    pub repaired_events: AtomicU64,
}

impl Counters {
    pub fn incr(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
