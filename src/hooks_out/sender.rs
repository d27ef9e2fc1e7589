//! One target's sender loop: takes a batch off the queue, sends it until it is accepted or
//! too old, then takes the next. One batch at a time is what keeps the order.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::time::Instant;
use uuid::Uuid;

use super::{HookEvent, Target};
use crate::outbound::{Outbound, Request};

/// The most of a receiver's answer that is read (it is only logged).
const MAX_ANSWER: usize = 4096;

#[derive(Serialize)]
struct Batch<'a> {
    events: &'a [HookEvent],
}

pub(super) async fn run(target: Arc<Target>, outbound: Outbound) {
    // Ends only if a lock was poisoned (a panic while holding it): nothing to send then.
    while let Some(events) = next_batch(&target).await {
        let count = events.len();
        let sent = match serde_json::to_vec(&Batch { events: &events }) {
            Ok(body) => deliver(&target, &outbound, Bytes::from(body)).await,
            // Events are plain JSON values: this cannot happen, and dropping is all it could do.
            Err(e) => {
                tracing::warn!(webhook = target.label, "webhook batch not encoded: {e}");
                false
            }
        };
        if sent {
            target.counters.webhook_sent(&target.label, count as u64);
        } else {
            target
                .counters
                .webhook_dropped(&target.label, "expired", count as u64);
        }
        let idle = {
            let Ok(mut queue) = target.queue.lock() else {
                return;
            };
            queue.in_flight = 0;
            queue.events.is_empty()
        };
        if idle {
            target.idle.notify_waiters();
        }
    }
}

/// Waits for an event, then until `batch_max_events` are queued or the first has waited
/// `batch_max_ms` (not at all during a flush), and takes the batch off the queue.
async fn next_batch(target: &Target) -> Option<Vec<HookEvent>> {
    let max = target.config.batch_max_events;
    let wait = Duration::from_millis(target.config.batch_max_ms);
    loop {
        // Registered before the queue is read, so a push in between is not missed.
        let woken = target.wake.notified();
        let (queued, first) = match target.queue.lock() {
            Ok(q) => (q.events.len(), q.events.front().map(|(at, _)| *at)),
            Err(_) => return None,
        };
        let due = first.map(|at| at + wait);
        let flushing = target.flushing.load(Ordering::Relaxed);
        match due {
            Some(due) if queued >= max || flushing || Instant::now() >= due => break,
            Some(due) => {
                tokio::select! {
                    () = woken => {}
                    () = tokio::time::sleep_until(due) => {}
                }
            }
            None => woken.await,
        }
    }
    let mut queue = target.queue.lock().ok()?;
    let take = queue.events.len().min(max);
    queue.in_flight = take;
    Some(queue.events.drain(..take).map(|(_, e)| e).collect())
}

/// Sends `body` until a 2xx (true) or until it is `retry_max_age_secs` old (false).
async fn deliver(target: &Target, outbound: &Outbound, body: Bytes) -> bool {
    let config = &target.config;
    let delivery = Uuid::now_v7();
    let expires = Instant::now() + Duration::from_secs(config.retry_max_age_secs);
    let mut delay = Duration::from_millis(config.retry_initial_ms);
    let max_delay = Duration::from_millis(config.retry_max_delay_ms);
    loop {
        let outcome = outbound
            .post(Request {
                url: &config.url,
                secret: config.secret.expose().as_bytes(),
                delivery,
                body: body.clone(),
                timeout: Duration::from_millis(config.timeout_ms),
                max_answer: MAX_ANSWER,
            })
            .await;
        match outcome {
            Ok(answer) if answer.is_success() => return true,
            Ok(answer) => tracing::debug!(
                webhook = target.label,
                %delivery,
                status = answer.status,
                "webhook delivery refused"
            ),
            Err(e) => {
                tracing::debug!(webhook = target.label, %delivery, "webhook delivery failed: {e}")
            }
        }
        target.counters.webhook_failed(&target.label);
        // Full jitter over the upper half: retries of many nodes do not line up.
        let jittered = delay.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        let at = Instant::now() + jittered;
        if at >= expires {
            tracing::warn!(
                webhook = target.label,
                %delivery,
                "webhook batch dropped: not accepted within retry_max_age_secs"
            );
            return false;
        }
        tokio::time::sleep_until(at).await;
        target.counters.webhook_retried(&target.label);
        delay = (delay * 2).min(max_delay);
    }
}
