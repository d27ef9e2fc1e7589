//! A single node's task state: a map in memory, entries dropped when their task ends or
//! idles past `tasks.idle_secs`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{Change, Outcome, State, apply};

#[derive(Default)]
pub struct MemoryTasks {
    /// Task key → when its last event came, and its state.
    tasks: Mutex<HashMap<String, (Instant, State)>>,
}

impl MemoryTasks {
    /// Applies `change` at `now_ms` to the task `key`; a state idle past `idle` counts as
    /// none, whether or not the sweeper dropped it yet.
    pub fn update(&self, key: &str, change: Change, now_ms: u64, idle: Duration) -> Outcome {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let state = tasks
            .remove(key)
            .filter(|(seen, _)| seen.elapsed() < idle)
            .map(|(_, state)| state);
        let (state, outcome) = apply(change, state, now_ms);
        if let Some(state) = state {
            tasks.insert(key.to_owned(), (Instant::now(), state));
        }
        outcome
    }

    /// Drops the tasks idle past `idle`.
    pub fn sweep(&self, idle: Duration) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|_, (seen, _)| seen.elapsed() < idle);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.tasks.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_and_idle_tasks_are_forgotten() {
        let tasks = MemoryTasks::default();
        let long = Duration::from_secs(60);
        let started = Change::Started { total: Some(10.0) };
        tasks.update("t/p/1", started, 1_000, long);
        tasks.update("t/p/2", started, 1_000, long);
        let done = tasks.update("t/p/1", Change::Ended, 1_500, long);
        assert_eq!(done.duration_ms, Some(500));
        assert_eq!(tasks.len(), 1);
        // Idle past the limit: as if never started.
        std::thread::sleep(Duration::from_millis(20));
        let progress = Change::Progress {
            current: 5.0,
            total: None,
        };
        let out = tasks.update("t/p/2", progress, 2_000, Duration::from_millis(10));
        assert_eq!((out.total, out.rate_per_sec), (None, None));
        std::thread::sleep(Duration::from_millis(20));
        tasks.sweep(Duration::from_millis(10));
        assert_eq!(tasks.len(), 0);
    }
}
