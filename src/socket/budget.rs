//! The per-socket event budget, in front of every command handler: [`Budgeted`] wraps a
//! handler and lets an event through only while the socket's token bucket holds one.
//!
//! An event over the budget is dropped and answered with `rate_limited` and
//! `retry_after_ms` (through the ack when it has one, else as an `error` event). A socket
//! refused more than `limits.event_abuse_refusals` times within
//! `limits.event_abuse_window_secs` is sent `error` `{code: "rate_limit_exceeded"}` and
//! disconnected.
//!
//! The disconnect waits for the client to stop sending: from the notice on, the socket's
//! events are dropped unanswered, and the DISCONNECT is sent once none has arrived for
//! [`QUIET`] (or [`MAX_WAIT`] after the notice). Disconnecting at once lost the notice and
//! the DISCONNECT over polling: the events still in flight arrived for a socket that was
//! gone, socketioxide closed the Engine.IO session for it, and whatever the client had not
//! polled yet went with the session (the client saw `xhr post error` and reconnected).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::json;
use socketioxide::adapter::Adapter;
use socketioxide::extract::State;
use socketioxide::handler::{FromMessageParts, MessageHandler, Value};
use socketioxide::socket::Socket;

use super::reply::{CommandError, Responder};
use super::{SocketCtx, identity_of, span_of};
use crate::limits::EventVerdict;
use crate::metrics::Counters;

/// A message handler behind the socket's event budget. A zero-sized wrapper around a
/// zero-sized handler: registering it per socket allocates nothing more.
#[derive(Clone, Copy)]
pub(super) struct Budgeted<H>(pub H);

impl<A, T, H> MessageHandler<A, T> for Budgeted<H>
where
    A: Adapter,
    T: Send + Sync + 'static,
    H: MessageHandler<A, T>,
{
    fn call(&self, s: Arc<Socket<A>>, mut v: Value, ack_id: Option<i64>) {
        let Ok(State(ctx)) = State::<SocketCtx>::from_message_parts(&s, &mut v, &ack_id) else {
            return self.0.call(s, v, ack_id);
        };
        if let Some(closing) = s.extensions.get::<Arc<Closing>>() {
            return closing.heard();
        }
        match ctx.services.limits.event(s.id) {
            EventVerdict::Allowed => self.0.call(s, v, ack_id),
            EventVerdict::Refused(retry_after) => {
                ctx.services.counters.limited("events");
                tracing::debug!(parent: &span_of(&s), "event refused: rate_limited");
                let retry_after_ms = crate::limits::ceil_ms(retry_after);
                let Ok(reply) = Responder::from_message_parts(&s, &mut v, &ack_id);
                reply.fail(CommandError::RateLimited { retry_after_ms });
            }
            EventVerdict::Abusive => {
                ctx.services.counters.limited("events");
                Counters::incr(&ctx.services.counters.rate_limit_disconnects, 1);
                let who = identity_of(&s);
                tracing::info!(
                    parent: &span_of(&s),
                    sid = %s.id,
                    user_id = who.as_ref().map(|w| w.user_id.as_str()),
                    tenant = who.as_ref().map(|w| w.tenant.as_str()),
                    "socket disconnected: rate_limit_exceeded"
                );
                let notice = json!({
                    "code": crate::errors::Message::EventAbuse.code().as_str(),
                    "message": crate::errors::Message::EventAbuse.text(),
                });
                if let Err(e) = s.emit("error", &notice) {
                    tracing::debug!(parent: &span_of(&s), sid = %s.id, "cannot send rate_limit_exceeded: {e}");
                }
                let closing = Arc::new(Closing::new());
                s.extensions.insert(closing.clone());
                tokio::spawn(async move {
                    closing.quiet().await;
                    // The DISCONNECT follows the notice in the socket's buffer; the connection
                    // is closed lingering (`tcp`), so both arrive even over a websocket whose
                    // client is still sending.
                    if let Err(e) = s.clone().disconnect() {
                        tracing::debug!(parent: &span_of(&s), sid = %s.id, "cannot disconnect: {e}");
                    }
                });
            }
        }
    }
}

/// How long the client of a socket being disconnected must send nothing before the
/// DISCONNECT goes.
pub(super) const QUIET: Duration = Duration::from_millis(500);
/// The longest a socket being disconnected waits for its client to stop sending.
pub(super) const MAX_WAIT: Duration = Duration::from_secs(5);

/// A socket told `rate_limit_exceeded`: its events are dropped until it is disconnected.
struct Closing {
    since: Instant,
    /// When its last event arrived, in milliseconds after `since`.
    last_ms: AtomicU64,
}

impl Closing {
    fn new() -> Self {
        Self {
            since: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    /// An event arrived (and is dropped).
    fn heard(&self) {
        let ms = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Resolves once no event has arrived for [`QUIET`], or [`MAX_WAIT`] after the notice.
    async fn quiet(&self) {
        let give_up = self.since + MAX_WAIT;
        loop {
            let last = self.since + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let wake = (last + QUIET).min(give_up);
            if Instant::now() >= wake {
                return;
            }
            tokio::time::sleep_until(wake.into()).await;
        }
    }
}
