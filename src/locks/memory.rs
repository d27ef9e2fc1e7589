//! A single node's locks, in memory behind one mutex: every operation is atomic, and
//! expiry is judged by this node's clock. The fencing counter lives here too, reserved on
//! disk with `[storage] path` ([`super::disk`]).

use std::collections::HashMap;
use std::sync::Mutex;

use super::disk::{BLOCK, DiskFence};
use super::{Acquired, Answer, Held, Holder, LockError, Outcome, Owner};
use crate::disk::now_ms;
use crate::rooms::Id;

struct Lock {
    token: u64,
    holder: Holder,
    owner: Owner,
    expires_ms: u64,
}

/// The fencing counter: the next token. Without a disk it is floored at the time in
/// microseconds (so it grows across restarts unless the clock goes back); with one, the
/// reservations on disk carry it across restarts and it counts from 1.
struct Fence {
    next: u64,
    /// With a disk: the first token not reserved on it.
    reserved: u64,
    disk: Option<DiskFence>,
}

impl Fence {
    fn take(&mut self, now_ms: u64) -> Result<u64, LockError> {
        let token = match &self.disk {
            Some(_) => self.next.max(1),
            None => self.next.max(now_ms.saturating_mul(1000)),
        };
        if let Some(disk) = &self.disk
            && token >= self.reserved
        {
            let end = token + BLOCK;
            disk.reserve(end)
                .map_err(|e| LockError::Unavailable(e.to_string()))?;
            self.reserved = end;
        }
        self.next = token + 1;
        Ok(token)
    }
}

#[derive(Default)]
struct State {
    locks: HashMap<String, Lock>,
}

impl State {
    /// Claims the lock of `key` if its time is up: its token.
    fn reap(&mut self, key: &str, now: u64) -> Option<u64> {
        if self.locks.get(key)?.expires_ms > now {
            return None;
        }
        self.locks.remove(key).map(|lock| lock.token)
    }
}

pub struct MemoryLocks {
    state: Mutex<State>,
    fence: Mutex<Fence>,
}

impl MemoryLocks {
    /// Locks whose fencing count starts at `next`, reserved on `disk` when given (and
    /// floored at the time without one).
    pub fn new(next: u64, disk: Option<DiskFence>) -> Self {
        Self {
            state: Mutex::default(),
            fence: Mutex::new(Fence {
                next,
                reserved: next,
                disk,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn acquire(
        &self,
        key: &str,
        ttl_ms: u64,
        user_id: Option<&Id>,
        owner: &Owner,
    ) -> Result<Answer<Acquired>, LockError> {
        let now = now_ms();
        let mut state = self.state();
        let reaped = state.reap(key, now);
        if let Some(lock) = state.locks.get(key) {
            let held = Held {
                token: lock.token,
                holder: lock.holder.clone(),
                expires_ms: lock.expires_ms,
            };
            return Ok(Answer {
                answer: Acquired::Locked(held),
                reaped,
            });
        }
        // Under the state's lock: grants are numbered in the order they happen.
        let token = self
            .fence
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(now);
        let token = match token {
            Ok(token) => token,
            Err(e) => {
                if let Some(token) = reaped {
                    // Claimed already: the caller must still announce it.
                    tracing::warn!(key, token, "lock expired, but no new token: {e}");
                }
                return Err(e);
            }
        };
        let expires_ms = now + ttl_ms;
        state.locks.insert(
            key.to_owned(),
            Lock {
                token,
                holder: Holder {
                    user_id: user_id.cloned(),
                    kind: owner.kind(),
                },
                owner: owner.clone(),
                expires_ms,
            },
        );
        Ok(Answer {
            answer: Acquired::Granted { token, expires_ms },
            reaped,
        })
    }

    pub fn release(&self, key: &str, token: u64, owner: &Owner) -> Answer<Outcome> {
        self.change(key, token, owner, Outcome::NotHolder, |state, key| {
            state.locks.remove(key);
            Outcome::Done { expires_ms: 0 }
        })
    }

    pub fn renew(&self, key: &str, token: u64, owner: &Owner, ttl_ms: u64) -> Answer<Outcome> {
        let expires_ms = now_ms() + ttl_ms;
        self.change(key, token, owner, Outcome::Lost, |state, key| {
            if let Some(lock) = state.locks.get_mut(key) {
                lock.expires_ms = expires_ms;
            }
            Outcome::Done { expires_ms }
        })
    }

    /// Runs `change` on the lock of `key` if `token` is its token and `owner` may change it
    /// (its socket, or any HTTP caller); `not_held` when the token is not the lock's (a
    /// release is `NotHolder`, a renew `Lost`); `Lost` when the lock expired just now.
    fn change(
        &self,
        key: &str,
        token: u64,
        owner: &Owner,
        not_held: Outcome,
        change: impl FnOnce(&mut State, &str) -> Outcome,
    ) -> Answer<Outcome> {
        let mut state = self.state();
        let reaped = state.reap(key, now_ms());
        let answer = match state.locks.get(key) {
            _ if reaped == Some(token) => Outcome::Lost,
            Some(lock) if lock.token == token => {
                if *owner != Owner::Api && lock.owner != *owner {
                    Outcome::NotHolder
                } else {
                    change(&mut state, key)
                }
            }
            _ => not_held,
        };
        Answer { answer, reaped }
    }

    pub fn get(&self, key: &str) -> Option<Held> {
        let now = now_ms();
        let state = self.state();
        let lock = state.locks.get(key).filter(|l| l.expires_ms > now)?;
        Some(Held {
            token: lock.token,
            holder: lock.holder.clone(),
            expires_ms: lock.expires_ms,
        })
    }

    /// Claims up to `max` locks whose time is up: their keys and tokens.
    pub fn reap(&self, max: usize) -> Vec<(String, u64)> {
        let now = now_ms();
        let mut state = self.state();
        let due: Vec<String> = state
            .locks
            .iter()
            .filter(|(_, lock)| lock.expires_ms <= now)
            .map(|(key, _)| key.clone())
            .take(max)
            .collect();
        due.into_iter()
            .filter_map(|key| {
                let token = state.locks.remove(&key)?.token;
                Some((key, token))
            })
            .collect()
    }
}
