//! The per-socket event budget, in front of every command handler: [`Budgeted`] wraps a
//! handler and lets an event through only while the socket's token bucket holds one.
//!
//! An event over the budget is dropped and answered with `rate_limited` and
//! `retry_after_ms` (through the ack when it has one, else as an `error` event). A socket
//! refused more than `limits.event_abuse_refusals` times within
//! `limits.event_abuse_window_secs` is sent `error` `{code: "rate_limit_exceeded"}` and
//! disconnected.

use std::sync::Arc;

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
pub struct Budgeted<H>(pub H);

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
        match ctx.limits.event(s.id) {
            EventVerdict::Allowed => self.0.call(s, v, ack_id),
            EventVerdict::Refused(retry_after) => {
                ctx.counters.limited("events");
                tracing::debug!(parent: &span_of(&s), "event refused: rate_limited");
                let retry_after_ms = crate::limits::ceil_ms(retry_after);
                let Ok(reply) = Responder::from_message_parts(&s, &mut v, &ack_id);
                reply.fail(CommandError::RateLimited { retry_after_ms });
            }
            // Events the client had already sent arrive after the disconnect: drop them.
            EventVerdict::Abusive if !s.connected() => {}
            EventVerdict::Abusive => {
                ctx.counters.limited("events");
                Counters::incr(&ctx.counters.rate_limit_disconnects, 1);
                let who = identity_of(&s);
                tracing::info!(
                    parent: &span_of(&s),
                    sid = %s.id,
                    user_id = who.as_ref().map(|w| w.user_id.as_str()),
                    tenant = who.as_ref().map(|w| w.tenant.as_str()),
                    "socket disconnected: rate_limit_exceeded"
                );
                let notice = json!({
                    "code": "rate_limit_exceeded",
                    "message": "too many events were refused: disconnecting",
                });
                if let Err(e) = s.emit("error", &notice) {
                    tracing::debug!(parent: &span_of(&s), sid = %s.id, "cannot send rate_limit_exceeded: {e}");
                }
                // The DISCONNECT follows the notice in the socket's buffer; the connection is
                // closed lingering (`tcp`), so both arrive though the client is still sending.
                if let Err(e) = s.clone().disconnect() {
                    tracing::debug!(parent: &span_of(&s), sid = %s.id, "cannot disconnect: {e}");
                }
            }
        }
    }
}
