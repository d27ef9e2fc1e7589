//! Roomcast's own WebSocket transports, beside socketioxide's: connections that need no
//! Engine.IO session, each one task that writes the hub's shared frames in batches.
//! - [`json`]: `/ws/json`, the plain JSON protocol (WEBSOCKET_API.md section 17): the
//!   same commands (`socket::execute_named`), rooms, recovery, presence, limits and token
//!   lifetime as a Socket.IO socket, over [`crate::sse::SseHub`]'s delivery.

pub mod json;
