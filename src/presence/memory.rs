//! The single-node presence store: counts in memory.

use std::collections::HashMap;
use std::sync::Mutex;

use futures_util::future::BoxFuture;

use super::{Changed, Occupancy, PresenceStore, StoreError, Transition};

/// The single-node store: counts in memory.
#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    counts: HashMap<String, HashMap<String, i64>>,
    leaving: HashMap<(String, String), String>,
    next_token: u64,
}

impl PresenceStore for MemoryStore {
    fn change<'a>(
        &'a self,
        key: &'a str,
        field: &'a str,
        delta: i64,
        announce: bool,
    ) -> BoxFuture<'a, Result<Changed, StoreError>> {
        let result = (|| {
            let mut s = self.state.lock().map_err(|e| StoreError(e.to_string()))?;
            // A room is in `counts` while it has a user: its presence is the room's count
            // crossing 0 <-> 1, decided in this one locked step.
            let was_empty = !s.counts.contains_key(key);
            let user = change(&mut s, key, field, delta, announce);
            let now_empty = !s.counts.contains_key(key);
            let room = match (announce, was_empty, now_empty) {
                (true, true, false) => Occupancy::Occupied,
                (true, false, true) => Occupancy::Vacated,
                _ => Occupancy::Unchanged,
            };
            Ok(Changed { user, room })
        })();
        Box::pin(std::future::ready(result))
    }

    fn confirm_left<'a>(
        &'a self,
        key: &'a str,
        field: &'a str,
        token: &'a str,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let result = self
            .state
            .lock()
            .map_err(|e| StoreError(e.to_string()))
            .map(|mut s| {
                let k = (key.to_owned(), field.to_owned());
                if s.leaving.get(&k).map(String::as_str) != Some(token) {
                    return false;
                }
                s.leaving.remove(&k);
                !s.counts.get(key).is_some_and(|r| r.contains_key(field))
            });
        Box::pin(std::future::ready(result))
    }

    fn members<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Vec<(String, u64)>, StoreError>> {
        let result = self
            .state
            .lock()
            .map_err(|e| StoreError(e.to_string()))
            .map(|s| {
                s.counts
                    .get(key)
                    .map(|r| {
                        r.iter()
                            .map(|(u, n)| (u.clone(), (*n).max(0) as u64))
                            .collect()
                    })
                    .unwrap_or_default()
            });
        Box::pin(std::future::ready(result))
    }

    fn count<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<u64, StoreError>> {
        let result = self
            .state
            .lock()
            .map_err(|e| StoreError(e.to_string()))
            .map(|s| s.counts.get(key).map_or(0, |r| r.len() as u64));
        Box::pin(std::future::ready(result))
    }

    fn resync(
        &self,
        _entries: Vec<(String, String, i64)>,
    ) -> BoxFuture<'_, Result<(), StoreError>> {
        // The memory store is never lost while the node runs.
        Box::pin(std::future::ready(Ok(())))
    }
}

/// The user's side of a change, under the store's lock.
fn change(s: &mut MemoryState, key: &str, field: &str, delta: i64, announce: bool) -> Transition {
    let room = s.counts.entry(key.to_owned()).or_default();
    let n = room.entry(field.to_owned()).or_default();
    *n += delta;
    let n = *n;
    if n <= 0 {
        room.remove(field);
        if room.is_empty() {
            s.counts.remove(key);
        }
        if announce {
            s.next_token += 1;
            let token = s.next_token.to_string();
            s.leaving
                .insert((key.to_owned(), field.to_owned()), token.clone());
            return Transition::Leaving(token);
        }
    } else if announce && n == delta {
        let back = s.leaving.remove(&(key.to_owned(), field.to_owned()));
        return if back.is_some() {
            Transition::Rejoined
        } else {
            Transition::Joined
        };
    }
    Transition::Unchanged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn first_join_last_leave_and_rejoin() {
        let s = MemoryStore::default();
        assert_eq!(
            s.change("t/project:1", "u", 1, true).await.unwrap().user,
            Transition::Joined
        );
        assert_eq!(
            s.change("t/project:1", "u", 1, true).await.unwrap().user,
            Transition::Unchanged
        );
        assert_eq!(
            s.change("t/project:1", "u", -1, true).await.unwrap().user,
            Transition::Unchanged
        );
        let Transition::Leaving(token) = s.change("t/project:1", "u", -1, true).await.unwrap().user
        else {
            panic!("expected leaving")
        };
        assert_eq!(
            s.change("t/project:1", "u", 1, true).await.unwrap().user,
            Transition::Rejoined
        );
        assert!(!s.confirm_left("t/project:1", "u", &token).await.unwrap());
        let Transition::Leaving(token) = s.change("t/project:1", "u", -1, true).await.unwrap().user
        else {
            panic!("expected leaving")
        };
        assert!(s.confirm_left("t/project:1", "u", &token).await.unwrap());
        assert!(s.members("t/project:1").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_room_is_occupied_by_its_first_user_and_vacated_by_its_last() {
        let s = MemoryStore::default();
        let room = |c: Result<Changed, StoreError>| c.unwrap().room;
        assert_eq!(
            room(s.change("t/p", "a", 1, true).await),
            Occupancy::Occupied
        );
        assert_eq!(
            room(s.change("t/p", "a", 1, true).await),
            Occupancy::Unchanged
        );
        assert_eq!(
            room(s.change("t/p", "b", 1, true).await),
            Occupancy::Unchanged
        );
        assert_eq!(
            room(s.change("t/p", "a", -2, true).await),
            Occupancy::Unchanged
        );
        assert_eq!(
            room(s.change("t/p", "b", -1, true).await),
            Occupancy::Vacated
        );
        // A stray leave of an empty room changes nothing; unannounced changes report nothing.
        assert_eq!(
            room(s.change("t/p", "b", -1, true).await),
            Occupancy::Unchanged
        );
        assert_eq!(
            room(s.change("t/q", "a", 1, false).await),
            Occupancy::Unchanged
        );
    }
}
