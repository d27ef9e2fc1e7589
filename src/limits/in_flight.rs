//! Requests of one socket waiting for their answer at once (the RPC proxy's
//! `rpc.max_in_flight_per_socket`): a client cannot pile up calls to a slow backend.
//!
//! A counted request holds an [`InFlightGuard`], which gives its place back when dropped
//! (answered, failed or abandoned); a socket with none in flight has no entry.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Default)]
pub struct InFlight {
    counts: Mutex<HashMap<String, usize>>,
}

/// One request counted for its socket until dropped.
pub struct InFlightGuard {
    in_flight: Arc<InFlight>,
    key: String,
}

impl InFlight {
    /// Counts one more request of `key` (a socket id), or `None` when it already has `max`.
    pub fn enter(self: &Arc<Self>, key: &str, max: usize) -> Option<InFlightGuard> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key.to_owned()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(InFlightGuard {
            in_flight: self.clone(),
            key: key.to_owned(),
        })
    }

    /// Sockets with a request in flight.
    pub fn len(&self) -> usize {
        self.counts.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        let mut counts = self
            .in_flight
            .counts
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_holds_at_most_max_and_gets_them_back() {
        let in_flight = Arc::new(InFlight::default());
        let a: Vec<_> = (0..2).map(|_| in_flight.enter("a", 2).unwrap()).collect();
        assert!(in_flight.enter("a", 2).is_none());
        let b = in_flight.enter("b", 2).unwrap();
        drop(a);
        assert_eq!(in_flight.len(), 1);
        assert!(in_flight.enter("a", 2).is_some());
        drop(b);
        assert!(in_flight.is_empty());
    }
}
