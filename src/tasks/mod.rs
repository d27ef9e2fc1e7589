//! Task progress: what the broadcaster adds to `task.*` events, computed from each task's
//! recent progress (the payloads are in [`crate::events::task`]).
//!
//! - `task.progress` gets `percent` (`100 × current / total`, at most 100, when a total is
//!   known), `rate_per_sec` (units of `current` per second) and `eta_ms`
//!   (`(total − current) / rate`, when both are known and the rate is above 0; 0 once
//!   `current ≥ total`). A progress without `total` uses the last one given, and carries it.
//! - `task.completed` and `task.failed` get `duration_ms` (since `task.started`, when the
//!   server saw it), and end the task's state.
//!
//! The rate is an exponentially weighted average: the units done over the recent past
//! divided by the time they took, each interval between two events of the task weighted by
//! `2^(−age / 10 s)` ([`RATE_HALF_LIFE_MS`]). Over a task younger than the half-life it is
//! close to the plain average since the start; later it follows a change of pace within
//! tens of seconds, and a stall (the same `current` again) pulls it down. Weighting
//! intervals by their length (rather than weighting each event alike) makes it indifferent
//! to how often a publisher reports: two reports a millisecond apart move it no more than
//! one. `task.started` counts as `current = 0` at its time, so the first progress after it
//! has a rate; a task first heard of by a progress has none until its next one (the fields
//! are then absent, not `null`). A `current` below the last one (a retry, a restart) is no
//! sample: it becomes the new baseline and the rate so far is kept. Times are the store's
//! clock (Redis's `TIME` in a cluster), so two nodes never mix clocks.
//!
//! Where the state is kept is decided once, in [`crate::stores`]: [`memory`] on a single
//! node, [`redis`] in a cluster, where each change is a compare-and-set of the task's state
//! so that two nodes receiving progress for the same task compute from the same history.
//! A task's state is dropped at `task.completed` / `task.failed`, and `tasks.idle_secs`
//! after its last event.

pub mod memory;
pub mod redis;

pub use memory::MemoryTasks;
pub use redis::RedisTasks;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::config::TasksConfig;
use crate::events::Event;
use crate::rooms::{Id, Tenant};

/// The half-life of the weights of the rate's samples: an interval 10 s old counts half
/// as much as one that just ended.
pub const RATE_HALF_LIFE_MS: f64 = 10_000.0;

/// What the store keeps of one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// When `task.started` was seen (Unix ms of the store's clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ms: Option<u64>,
    /// The last total given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<f64>,
    /// The baseline the next sample is measured from: the last `current` and its time.
    pub at_ms: u64,
    pub current: f64,
    /// The decayed sums of the units done and of the time taken (ms); their ratio is the
    /// rate.
    pub units: f64,
    pub elapsed_ms: f64,
}

/// A `task.*` event, as the store sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    Started {
        total: Option<f64>,
    },
    Progress {
        current: f64,
        total: Option<f64>,
    },
    /// `task.completed` or `task.failed`.
    Ended,
}

/// What the server adds to the event.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Outcome {
    /// The total in force (the event's, or the last one given).
    pub total: Option<f64>,
    pub percent: Option<f64>,
    pub rate_per_sec: Option<f64>,
    pub eta_ms: Option<u64>,
    pub duration_ms: Option<u64>,
}

/// Applies `change` at `now_ms` to a task's state (`None`: unknown, or forgotten):
/// the state to keep (`None`: drop it) and what the event gets.
pub fn apply(change: Change, state: Option<State>, now_ms: u64) -> (Option<State>, Outcome) {
    match change {
        Change::Started { total } => {
            let state = State {
                started_ms: Some(now_ms),
                total,
                at_ms: now_ms,
                current: 0.0,
                units: 0.0,
                elapsed_ms: 0.0,
            };
            (Some(state), Outcome::default())
        }
        Change::Ended => {
            let duration_ms = state
                .and_then(|s| s.started_ms)
                .map(|started| now_ms.saturating_sub(started));
            (
                None,
                Outcome {
                    duration_ms,
                    ..Outcome::default()
                },
            )
        }
        Change::Progress { current, total } => {
            let mut s = match state {
                Some(s) => s,
                // The first we hear of it: a baseline, no rate yet.
                None => State {
                    started_ms: None,
                    total: None,
                    at_ms: now_ms,
                    current,
                    units: 0.0,
                    elapsed_ms: 0.0,
                },
            };
            let done = current - s.current;
            if done >= 0.0 {
                // A clock that stepped back counts as no time.
                let dt = now_ms.saturating_sub(s.at_ms) as f64;
                let decay = (-dt / RATE_HALF_LIFE_MS).exp2();
                s.units = s.units * decay + done;
                s.elapsed_ms = s.elapsed_ms * decay + dt;
            }
            // Backwards: no sample, the new baseline (the rate so far stays).
            s.current = current;
            s.at_ms = s.at_ms.max(now_ms);
            if total.is_some() {
                s.total = total;
            }
            let outcome = s.outcome();
            (Some(s), outcome)
        }
    }
}

impl State {
    /// `percent`, `rate_per_sec` and `eta_ms` at the current baseline. The rate is an
    /// estimate: it is given to 4 significant digits, and the ETA is computed from that, so
    /// a client can check one against the other.
    fn outcome(&self) -> Outcome {
        let rate_per_sec = (self.elapsed_ms > 0.0)
            .then(|| significant(self.units / self.elapsed_ms * 1000.0, 4).max(0.0));
        let percent = self
            .total
            .map(|total| (self.current * 100.0 / total).clamp(0.0, 100.0));
        let eta_ms = match (self.total, rate_per_sec) {
            (Some(total), _) if self.current >= total => Some(0),
            (Some(total), Some(rate)) if rate > 0.0 => {
                let ms = (total - self.current) / rate * 1000.0;
                // `as` saturates: a rate of almost nothing is a very long (not a wrong) ETA.
                Some(ms.round() as u64)
            }
            _ => None,
        };
        Outcome {
            total: self.total,
            percent,
            rate_per_sec,
            eta_ms,
            duration_ms: None,
        }
    }
}

/// `x` rounded to `digits` significant digits.
fn significant(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

/// The store could not be read or written: the event goes out without the server's fields.
#[derive(Debug, thiserror::Error)]
#[error("task store: {0}")]
pub struct TaskError(pub String);

/// A task's key in its store: `<tenant>/<project_id>/<task_id>` (ids have no `/`).
pub fn key(tenant: &Tenant, project_id: &Id, task_id: &Id) -> String {
    format!("{tenant}/{project_id}/{task_id}")
}

/// Where this node keeps task progress.
pub struct Tasks {
    backend: Backend,
    config: TasksConfig,
}

enum Backend {
    Memory(MemoryTasks),
    Redis(RedisTasks),
}

impl Tasks {
    /// A single node's task state, in memory.
    pub fn memory(config: TasksConfig) -> Self {
        Self {
            backend: Backend::Memory(MemoryTasks::default()),
            config,
        }
    }

    /// The cluster's task state, in Redis.
    pub fn redis(store: RedisTasks, config: TasksConfig) -> Self {
        Self {
            backend: Backend::Redis(store),
            config,
        }
    }

    fn idle(&self) -> Duration {
        Duration::from_secs(self.config.idle_secs)
    }

    /// Applies `change` to the task `key`, atomically (cluster-wide in Redis).
    pub async fn update(&self, key: &str, change: Change) -> Result<Outcome, TaskError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.update(key, change, now_ms(), self.idle())),
            Backend::Redis(r) => r.update(key, change, self.idle()).await,
        }
    }

    /// `event` with the fields the server computes, when it is a `task.*` event (others
    /// pass through). A store that fails is logged, and the event goes out without them.
    pub async fn observe(&self, tenant: &Tenant, event: Event) -> Event {
        let (project, task, change) = match &event {
            Event::TaskStarted(e) => (
                &e.project_id,
                &e.task_id,
                Change::Started { total: e.total },
            ),
            Event::TaskProgress(e) => (
                &e.project_id,
                &e.task_id,
                Change::Progress {
                    current: e.current,
                    total: e.total,
                },
            ),
            Event::TaskCompleted(e) => (&e.project_id, &e.task_id, Change::Ended),
            Event::TaskFailed(e) => (&e.project_id, &e.task_id, Change::Ended),
            _ => return event,
        };
        let outcome = match self.update(&key(tenant, project, task), change).await {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(task_id = %task, "{e}; the event goes out without its progress fields");
                return event;
            }
        };
        match event {
            Event::TaskProgress(mut e) => {
                e.total = e.total.or(outcome.total);
                e.percent = outcome.percent;
                e.rate_per_sec = outcome.rate_per_sec;
                e.eta_ms = outcome.eta_ms;
                Event::TaskProgress(e)
            }
            Event::TaskCompleted(mut e) => {
                e.duration_ms = outcome.duration_ms;
                Event::TaskCompleted(e)
            }
            Event::TaskFailed(mut e) => {
                e.duration_ms = outcome.duration_ms;
                Event::TaskFailed(e)
            }
            other => other,
        }
    }

    /// Drops the state of tasks idle past `tasks.idle_secs` (memory only: Redis expires
    /// its keys itself; an idle task is also ignored when next heard of, sweeper or not).
    pub async fn run_sweeper(self: Arc<Self>) {
        let period = self
            .idle()
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            tokio::time::sleep(period).await;
            if let Backend::Memory(m) = &self.backend {
                m.sweep(self.idle());
            }
        }
    }
}

/// Unix milliseconds of this node's clock (memory only).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn progress(current: f64, total: Option<f64>) -> Change {
        Change::Progress { current, total }
    }

    /// Applies `changes` (each at its time) from no state; the last outcome.
    fn run(changes: &[(u64, Change)]) -> (Option<State>, Outcome) {
        let mut state = None;
        let mut last = Outcome::default();
        for &(at, change) in changes {
            (state, last) = apply(change, state, at);
        }
        (state, last)
    }

    #[test]
    fn a_steady_task_has_its_true_rate_and_eta() {
        let mut changes = vec![(1_000, Change::Started { total: Some(100.0) })];
        // 10 units every 100 ms: 100 units/s.
        for i in 1..=5 {
            changes.push((1_000 + i * 100, progress(i as f64 * 10.0, None)));
        }
        let (_, out) = run(&changes);
        assert_eq!(out.total, Some(100.0));
        assert_eq!(out.percent, Some(50.0));
        let rate = out.rate_per_sec.unwrap();
        assert!((rate - 100.0).abs() < 1e-9, "{rate}");
        assert_eq!(out.eta_ms, Some(500));
    }

    #[test]
    fn the_first_progress_without_a_start_has_no_rate() {
        let (_, out) = run(&[(5, progress(3.0, Some(10.0)))]);
        assert_eq!(out.percent, Some(30.0));
        assert_eq!((out.rate_per_sec, out.eta_ms), (None, None));
        let (_, out) = run(&[(5, progress(3.0, Some(10.0))), (1_005, progress(5.0, None))]);
        assert_eq!(out.rate_per_sec, Some(2.0));
        assert_eq!(out.eta_ms, Some(2_500));
    }

    #[test]
    fn the_rate_follows_a_change_of_pace_with_the_half_life() {
        // 60 s at 10 units/s, then 10 s (one half-life) at 30 units/s, one report a second.
        let mut changes = vec![(0, Change::Started { total: None })];
        let mut current = 0.0;
        for s in 1..=70u64 {
            current += if s <= 60 { 10.0 } else { 30.0 };
            changes.push((s * 1000, progress(current, None)));
        }
        let (_, out) = run(&changes);
        let rate = out.rate_per_sec.unwrap();
        // Half the weight is on the last 10 s: about half-way between 10 and 30.
        assert!((19.0..=21.5).contains(&rate), "{rate}");
        assert_eq!((out.percent, out.eta_ms), (None, None));
    }

    #[test]
    fn report_frequency_does_not_matter() {
        let steady = run(&[
            (0, Change::Started { total: Some(10.0) }),
            (1_000, progress(2.0, None)),
        ])
        .1;
        // The same progress, reported in two bursts a millisecond apart.
        let bursty = run(&[
            (0, Change::Started { total: Some(10.0) }),
            (999, progress(1.0, None)),
            (1_000, progress(2.0, None)),
        ])
        .1;
        assert_eq!(steady.rate_per_sec, Some(2.0));
        let rate = bursty.rate_per_sec.unwrap();
        assert!((rate - 2.0).abs() < 1e-3, "{rate}");
        // Two reports in the same millisecond: the second adds units, no time.
        let (_, same) = run(&[
            (0, Change::Started { total: Some(10.0) }),
            (1_000, progress(1.0, None)),
            (1_000, progress(2.0, None)),
        ]);
        assert_eq!(same.rate_per_sec, Some(2.0));
    }

    #[test]
    fn a_stall_lowers_the_rate_and_raises_the_eta() {
        let base = [
            (0, Change::Started { total: Some(100.0) }),
            (1_000, progress(10.0, None)),
        ];
        let (state, before) = run(&base);
        let (_, after) = apply(progress(10.0, None), state, 3_000);
        assert!(after.rate_per_sec.unwrap() < before.rate_per_sec.unwrap());
        assert!(after.eta_ms.unwrap() > before.eta_ms.unwrap());
    }

    #[test]
    fn current_going_backwards_is_a_new_baseline_keeping_the_rate() {
        let (state, before) = run(&[
            (0, Change::Started { total: Some(100.0) }),
            (1_000, progress(50.0, None)),
        ]);
        assert_eq!(before.rate_per_sec, Some(50.0));
        let (state, back) = apply(progress(20.0, None), state, 2_000);
        assert_eq!(back.rate_per_sec, Some(50.0), "no sample");
        assert_eq!(back.percent, Some(20.0));
        assert_eq!(back.eta_ms, Some(1_600));
        // The next sample is measured from 20 at 2 s.
        let (_, next) = apply(progress(70.0, None), state, 3_000);
        let rate = next.rate_per_sec.unwrap();
        assert!((rate - 50.0).abs() < 1e-9, "{rate}");
    }

    #[test]
    fn total_changes_and_completion() {
        let (state, out) = run(&[
            (0, Change::Started { total: Some(100.0) }),
            (1_000, progress(50.0, None)),
        ]);
        assert_eq!(out.eta_ms, Some(1_000));
        // The task grew: the new total is kept for later progress without one.
        let (state, grown) = apply(progress(100.0, Some(400.0)), state, 2_000);
        assert_eq!(grown.percent, Some(25.0));
        assert_eq!(grown.eta_ms, Some(6_000));
        let (state, later) = apply(progress(150.0, None), state, 3_000);
        assert_eq!(later.total, Some(400.0));
        // Past the total: 100 %, nothing left.
        let (state, over) = apply(progress(500.0, None), state, 4_000);
        assert_eq!((over.percent, over.eta_ms), (Some(100.0), Some(0)));
        let (state, done) = apply(Change::Ended, state, 4_500);
        assert_eq!(state, None);
        assert_eq!(done.duration_ms, Some(4_500));
        // Unknown (forgotten or never started): no duration.
        assert_eq!(apply(Change::Ended, None, 1).1.duration_ms, None);
    }

    #[test]
    fn the_rate_has_four_significant_digits() {
        assert_eq!(significant(9.84251968503937, 4), 9.843);
        assert_eq!(significant(0.000_276_543, 4), 0.0002765);
        assert_eq!(significant(123_456.0, 4), 123_500.0);
        assert_eq!(significant(0.0, 4), 0.0);
        let (_, out) = run(&[
            (0, Change::Started { total: Some(1.0) }),
            (3_000, progress(0.1, None)),
        ]);
        assert_eq!(out.rate_per_sec, Some(0.03333));
        assert_eq!(out.eta_ms, Some(27_003), "from the rate given");
    }

    #[test]
    fn the_state_round_trips_through_json() {
        let (state, _) = run(&[
            (7, Change::Started { total: Some(3.5) }),
            (1_007, progress(1.25, None)),
        ]);
        let state = state.unwrap();
        let json = serde_json::to_string(&state).unwrap();
        assert_eq!(serde_json::from_str::<State>(&json).unwrap(), state);
    }
}
