//! Publishes `bench.tick` events over HTTP (`POST /api/v1/broadcast`, keep-alive), each
//! stamped with its send time and a publish number, to a random room of the run.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::json;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::inbox::TICK;
use crate::measure::clock;

/// How publishes may overlap.
#[derive(Clone, Copy)]
pub enum Order {
    /// Overlapping is fine: at a fixed rate each publish is its own task; flat out,
    /// `workers` publishers run back to back.
    Any { workers: usize },
    /// One publish at a time, so the server sees them in publish-number order (`storm`
    /// checks every socket receives them in that order).
    Sequential,
}

pub struct Publisher {
    client: reqwest::Client,
    endpoint: String,
    key: String,
    rooms: Vec<String>,
    next: AtomicU64,
    failed: AtomicU64,
    /// Per room, the publish numbers the server accepted (202).
    accepted: Mutex<Vec<Vec<u64>>>,
}

impl Publisher {
    pub fn new(base: &str, key: &str, rooms: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            client: reqwest::Client::new(),
            endpoint: format!("{base}/api/v1/broadcast"),
            key: key.into(),
            accepted: Mutex::new(vec![Vec::new(); rooms.len()]),
            rooms,
            next: AtomicU64::new(0),
            failed: AtomicU64::new(0),
        })
    }

    /// Publishes for `duration` at `rate` events/s, or flat out when `rate` is 0.
    pub async fn run(self: &Arc<Self>, rate: f64, duration: Duration, order: Order) {
        let deadline = Instant::now() + duration;
        let mut tasks = JoinSet::new();
        if rate > 0.0 {
            let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            while Instant::now() < deadline {
                tick.tick().await;
                match order {
                    Order::Sequential => self.once().await,
                    Order::Any { .. } => {
                        let p = self.clone();
                        tasks.spawn(async move { p.once().await });
                    }
                }
            }
        } else {
            let workers = match order {
                Order::Sequential => 1,
                Order::Any { workers } => workers.max(1),
            };
            for _ in 0..workers {
                let p = self.clone();
                tasks.spawn(async move {
                    while Instant::now() < deadline {
                        p.once().await;
                    }
                });
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    async fn once(&self) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let r = rand::rng().random_range(0..self.rooms.len());
        let body = json!({"room": self.rooms[r], "event": TICK, "data": {"t": clock(), "n": n}});
        let accepted = self
            .client
            .post(&self.endpoint)
            .bearer_auth(&self.key)
            .json(&body)
            .send()
            .await
            .is_ok_and(|r| r.status().as_u16() == 202);
        if accepted {
            if let Ok(mut rooms) = self.accepted.lock() {
                rooms[r].push(n);
            }
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn published(&self) -> u64 {
        self.next.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    pub fn accepted(&self) -> Vec<Vec<u64>> {
        self.accepted.lock().map(|a| a.clone()).unwrap_or_default()
    }
}
