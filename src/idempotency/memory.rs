//! The single-node store: keys in memory, forgotten after the window.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{Claim, IdempotencyError, IdempotencyStore};

/// The single-node store: keys in memory, forgotten after the window.
pub struct MemoryIdempotency {
    window: Duration,
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    /// Key -> (when claimed, the answer once finished).
    answers: HashMap<String, (Instant, Option<String>)>,
    /// Keys in claim order, to forget them when the window has passed.
    order: VecDeque<(Instant, String)>,
}

impl MemoryIdempotency {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            state: Mutex::default(),
        }
    }

    /// Puts back an answer given at `at` (read from disk at start): oldest first, so the
    /// keys are forgotten in order.
    pub(crate) fn restore(&self, key: String, at: Instant, answer: String) {
        let _ = self.with(|s| {
            s.order.push_back((at, key.clone()));
            s.answers.insert(key, (at, Some(answer)));
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> Result<T, IdempotencyError> {
        let mut state = self
            .state
            .lock()
            .map_err(|e| IdempotencyError(e.to_string()))?;
        let now = Instant::now();
        while let Some((at, _)) = state.order.front() {
            if now.duration_since(*at) < self.window {
                break;
            }
            if let Some((at, key)) = state.order.pop_front()
                && state
                    .answers
                    .get(&key)
                    .is_some_and(|(claimed, _)| *claimed == at)
            {
                state.answers.remove(&key);
            }
        }
        Ok(f(&mut state))
    }
}

impl IdempotencyStore for MemoryIdempotency {
    fn claim<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Claim, IdempotencyError>> {
        let result = self.with(|s| match s.answers.get(key) {
            Some((_, Some(answer))) => Claim::Done(answer.clone()),
            Some((_, None)) => Claim::Pending,
            None => {
                let now = Instant::now();
                s.answers.insert(key.to_owned(), (now, None));
                s.order.push_back((now, key.to_owned()));
                Claim::New
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn finish<'a>(
        &'a self,
        key: &'a str,
        answer: &'a str,
    ) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        let result = self.with(|s| {
            if let Some((_, slot)) = s.answers.get_mut(key) {
                *slot = Some(answer.to_owned());
            }
        });
        Box::pin(std::future::ready(result))
    }

    fn abandon<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), IdempotencyError>> {
        // The order entry stays; it no longer matches and is skipped when it expires.
        let result = self.with(|s| {
            s.answers.remove(key);
        });
        Box::pin(std::future::ready(result))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn claim_finish_replay_and_expiry() {
        let store = MemoryIdempotency::new(Duration::from_millis(50));
        assert_eq!(store.claim("k").await.unwrap(), Claim::New);
        assert_eq!(store.claim("k").await.unwrap(), Claim::Pending);
        store.finish("k", "{\"id\":1}").await.unwrap();
        assert_eq!(
            store.claim("k").await.unwrap(),
            Claim::Done("{\"id\":1}".into())
        );
        store.abandon("k").await.unwrap();
        assert_eq!(store.claim("k").await.unwrap(), Claim::New);
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(store.claim("k").await.unwrap(), Claim::New);
    }
}
