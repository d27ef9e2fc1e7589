//! A single node's locks, in memory behind one mutex: every operation is atomic, and
//! expiry is judged by this node's clock. The fencing counter lives here too, reserved on
//! disk with `[storage] path` ([`super::disk`]).

use std::collections::{BTreeSet, HashMap};
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
    /// `(expires_ms, key)` of every lock: what has expired, earliest first, without a scan.
    by_expiry: BTreeSet<(u64, String)>,
}

impl State {
    /// Claims the lock of `key` if its time is up: its token.
    fn reap(&mut self, key: &str, now: u64) -> Option<u64> {
        if self.locks.get(key)?.expires_ms > now {
            return None;
        }
        self.remove(key).map(|lock| lock.token)
    }

    fn insert(&mut self, key: &str, lock: Lock) {
        self.by_expiry.insert((lock.expires_ms, key.to_owned()));
        if let Some(old) = self.locks.insert(key.to_owned(), lock) {
            self.by_expiry.remove(&(old.expires_ms, key.to_owned()));
        }
    }

    fn remove(&mut self, key: &str) -> Option<Lock> {
        let lock = self.locks.remove(key)?;
        self.by_expiry.remove(&(lock.expires_ms, key.to_owned()));
        Some(lock)
    }

    fn set_expiry(&mut self, key: &str, expires_ms: u64) {
        if let Some(lock) = self.locks.get_mut(key) {
            self.by_expiry.remove(&(lock.expires_ms, key.to_owned()));
            lock.expires_ms = expires_ms;
            self.by_expiry.insert((expires_ms, key.to_owned()));
        }
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
        state.insert(
            key,
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
            state.remove(key);
            Outcome::Done { expires_ms: 0 }
        })
    }

    pub fn renew(&self, key: &str, token: u64, owner: &Owner, ttl_ms: u64) -> Answer<Outcome> {
        let expires_ms = now_ms() + ttl_ms;
        self.change(key, token, owner, Outcome::Lost, |state, key| {
            state.set_expiry(key, expires_ms);
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
            .by_expiry
            .iter()
            .take_while(|(expires_ms, _)| *expires_ms <= now)
            .take(max)
            .map(|(_, key)| key.clone())
            .collect();
        due.into_iter()
            .filter_map(|key| {
                let token = state.remove(&key)?.token;
                Some((key, token))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket(sid: &str) -> Owner {
        Owner::Socket(sid.into())
    }

    fn granted(answer: Answer<Acquired>) -> u64 {
        match answer.answer {
            Acquired::Granted { token, .. } => token,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_expiry_is_claimed_once_and_renewals_move_it() {
        let locks = MemoryLocks::new(0, None);
        let a = granted(locks.acquire("t/global/a", 1, None, &socket("s")).unwrap());
        let b = granted(
            locks
                .acquire("t/global/b", 60_000, None, &socket("s"))
                .unwrap(),
        );
        assert!(b > a);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(locks.reap(10), vec![("t/global/a".to_owned(), a)]);
        assert_eq!(locks.reap(10), vec![], "claimed once");
        // b renewed to a short TTL expires; renewed back, it does not.
        let renewed = locks.renew("t/global/b", b, &socket("s"), 1);
        assert!(matches!(renewed.answer, Outcome::Done { .. }));
        std::thread::sleep(std::time::Duration::from_millis(5));
        // The next operation on the resource claims it: the caller announces `reaped`.
        let late = locks.release("t/global/b", b, &socket("s"));
        assert_eq!((late.answer, late.reaped), (Outcome::Lost, Some(b)));
        assert_eq!(locks.reap(10), vec![]);
    }

    #[test]
    fn tokens_from_the_time_without_a_disk() {
        let locks = MemoryLocks::new(0, None);
        let token = granted(
            locks
                .acquire("t/global/a", 1000, None, &Owner::Api)
                .unwrap(),
        );
        let now_us = crate::disk::now_ms() * 1000;
        assert!(
            token <= now_us && token + 1_000_000 > now_us,
            "{token} {now_us}"
        );
        assert!(token < 1 << 53, "a safe integer in JavaScript");
    }
}
