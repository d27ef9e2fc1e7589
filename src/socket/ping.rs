//! `ping` → `{pong: true, server_time}`.

use serde_json::json;
use socketioxide::adapter::Adapter;

use super::reply::Responder;
use crate::events::Timestamp;

pub async fn handle<A: Adapter>(reply: Responder<A>) {
    reply.ok(&json!({"pong": true, "server_time": Timestamp::now()}));
}
