//! What one HTTP connection is doing, for its two timeouts:
//!
//! - **Idle**: no request under way and nothing received since the last response (a client
//!   that connected and sends nothing, or sits on a keep-alive connection): closed after
//!   `server.idle_timeout_ms`.
//! - **Head**: bytes of a request head have arrived but not the whole head yet (slowloris
//!   sends it a byte at a time): closed `server.header_read_timeout_ms` after its first byte.
//!
//! A request is "under way" from its complete head until its response has been written to
//! the end: a long poll waiting for data, a slow response body, a request whose body is
//! being read are never cut here. Upgraded websockets are not watched at all: the watch
//! lives in the connection's HTTP task, which ends at the upgrade.
//!
//! hyper's own `header_read_timeout` starts when the connection starts waiting for a head,
//! idle time included, so it cannot tell the two apart: this one can.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Shared by a connection's reads ([`super::Conn`]), its requests ([`Activity::request`])
/// and its watch ([`Activity::expired`]).
#[derive(Default)]
pub struct Activity {
    /// Requests whose response has not been written to the end yet.
    in_flight: AtomicU32,
    /// Bytes have arrived while no request was under way: a head has begun.
    head_begun: AtomicBool,
    changed: Notify,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Busy,
    Idle,
    Head,
}

impl Activity {
    /// Called by the connection after each read that returned bytes.
    pub fn read_some(&self) {
        // Two loads on the hot path of a busy connection; a store and a wake only once per
        // head.
        if self.in_flight.load(Ordering::Acquire) == 0 && !self.head_begun.load(Ordering::Acquire) {
            self.head_begun.store(true, Ordering::Release);
            self.changed.notify_one();
        }
    }

    /// A complete request head has arrived: the connection is busy until the returned guard
    /// is dropped (with the response body, once written).
    pub fn request(self: &std::sync::Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.head_begun.store(false, Ordering::Release);
        self.changed.notify_one();
        InFlight(self.clone())
    }

    fn phase(&self) -> Phase {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            Phase::Busy
        } else if self.head_begun.load(Ordering::Acquire) {
            Phase::Head
        } else {
            Phase::Idle
        }
    }

    /// Resolves when the connection has been idle for `idle`, or has been receiving one
    /// request head for `head`; never while a request is under way.
    pub async fn expired(&self, idle: Duration, head: Duration) {
        let mut phase = Phase::Idle;
        let mut since = Instant::now();
        loop {
            let now = self.phase();
            if now != phase {
                phase = now;
                since = Instant::now();
            }
            let limit = match phase {
                Phase::Busy => {
                    // `notify_one` keeps a permit when nobody waits: no change is missed
                    // between reading the phase and waiting here.
                    self.changed.notified().await;
                    continue;
                }
                Phase::Idle => idle,
                Phase::Head => head,
            };
            tokio::select! {
                _ = self.changed.notified() => {}
                _ = tokio::time::sleep_until(since + limit) => return,
            }
        }
    }
}

/// One request under way on a connection (see [`Activity::request`]).
pub struct InFlight(std::sync::Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const IDLE: Duration = Duration::from_millis(1000);
    const HEAD: Duration = Duration::from_millis(100);

    fn watch(a: &Arc<Activity>) -> tokio::task::JoinHandle<()> {
        let a = a.clone();
        tokio::spawn(async move { a.expired(IDLE, HEAD).await })
    }

    #[tokio::test]
    async fn idle_and_slow_heads_expire_requests_under_way_do_not() {
        let start = Instant::now();
        Activity::default().expired(IDLE, HEAD).await;
        assert!(start.elapsed() >= IDLE);

        // A head expires HEAD after its first byte, long before IDLE.
        let a = Arc::new(Activity::default());
        let watching = watch(&a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let first_byte = Instant::now();
        a.read_some();
        a.read_some();
        watching.await.unwrap();
        assert!(first_byte.elapsed() >= HEAD);
        assert!(first_byte.elapsed() < IDLE);

        // A request under way is never cut; idle time counts from its end.
        let a = Arc::new(Activity::default());
        let request = a.request();
        let mut watching = watch(&a);
        a.read_some(); // its body
        let waited = tokio::time::timeout(IDLE + IDLE / 2, &mut watching).await;
        assert!(waited.is_err(), "a request under way was timed out");
        let end = Instant::now();
        drop(request);
        watching.await.unwrap();
        assert!(end.elapsed() >= IDLE);
    }
}
