//! The server's long-running loops (heartbeats, sweepers, samplers, consumers), each
//! started by name from one list in [`crate::Roomcast::new`] and stopped together at the
//! end of [`crate::Roomcast::serve`]'s drain. A loop that outlived the server would keep
//! touching shared state: a cluster node would go on sending heartbeats after it left.
//!
//! Short tasks tied to one request or one socket are not workers: they end with it.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The set of running workers. Clones share it.
#[derive(Clone, Default)]
pub struct Workers {
    tracker: TaskTracker,
    stop: CancellationToken,
    /// Names of the workers still running, in the order they started.
    running: Arc<Mutex<Vec<&'static str>>>,
}

impl Workers {
    /// Runs `work` until it ends by itself or the workers are stopped. A worker is dropped
    /// at its next await point, so it must leave nothing half-done that matters there
    /// (each loop's own comments say why that holds).
    pub fn start(&self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        if self.stop.is_cancelled() {
            return;
        }
        if let Ok(mut running) = self.running.lock() {
            running.push(name);
        }
        let stop = self.stop.clone();
        let listed = Listed {
            name,
            running: self.running.clone(),
        };
        self.tracker.spawn(async move {
            // Unlisted on every way out, cancellation included.
            let _listed = listed;
            tokio::select! {
                () = work => tracing::debug!(worker = name, "worker ended"),
                () = stop.cancelled() => {}
            }
        });
    }

    /// Names of the workers still running.
    pub fn running(&self) -> Vec<&'static str> {
        self.running.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Cancels every worker and waits until each has been dropped. Cancelling takes effect
    /// at a worker's next await point, so this returns promptly. Later starts do nothing.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Takes its worker's name off the running list when the worker's task ends.
struct Listed {
    name: &'static str,
    running: Arc<Mutex<Vec<&'static str>>>,
}

impl Drop for Listed {
    fn drop(&mut self) {
        if let Ok(mut running) = self.running.lock()
            && let Some(at) = running.iter().position(|n| *n == self.name)
        {
            running.remove(at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn stop_cancels_and_joins_every_worker() {
        let workers = Workers::default();
        let (dropped_tx, mut dropped) = tokio::sync::mpsc::unbounded_channel::<()>();
        struct Guard(tokio::sync::mpsc::UnboundedSender<()>);
        impl Drop for Guard {
            fn drop(&mut self) {
                let _ = self.0.send(());
            }
        }
        for name in ["a", "b"] {
            let guard = Guard(dropped_tx.clone());
            workers.start(name, async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            });
        }
        workers.start("ends", async {});
        tokio::time::timeout(Duration::from_secs(5), async {
            while workers.running().len() != 2 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the worker that ends is unlisted");
        assert_eq!(workers.running(), ["a", "b"]);

        tokio::time::timeout(Duration::from_secs(5), workers.stop())
            .await
            .expect("stop joins promptly");
        assert!(workers.running().is_empty());
        drop(dropped_tx);
        let mut count = 0;
        while dropped.recv().await.is_some() {
            count += 1;
        }
        assert_eq!(count, 2, "both pending workers were dropped");

        workers.start("late", std::future::pending());
        assert!(workers.running().is_empty(), "nothing starts after stop");
    }
}
