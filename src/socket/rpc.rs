//! `rpc` `{method, data?}` → `{ok: true, result}`: the call is POSTed, signed, to the
//! backend `[rpc]` routes the method to, as `{method, data, user_id, tenant, sid}`; the
//! identity is the socket's (its verified token), never the client's say. One attempt (a
//! call need not be idempotent); `result` is the backend's 2xx JSON body as it is.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::config::{MAX_METHOD_LEN, method_char};
use crate::outbound::{Request, SendError};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Rpc {
    method: String,
    #[serde(default)]
    data: Value,
}

/// The body the backend receives.
#[derive(Serialize)]
struct Call<'a> {
    method: &'a str,
    data: &'a Value,
    user_id: &'a str,
    tenant: &'a str,
    sid: &'a str,
}

impl Command for Rpc {
    const NAME: &str = "rpc";
    const USAGE: &str = "expected {\"method\": \"<name>\", \"data\"?: any}";

    async fn run(self, cx: &CommandCx<'_>) -> Result<Reply, CommandError> {
        if self.method.is_empty()
            || self.method.len() > MAX_METHOD_LEN
            || !self.method.chars().all(method_char)
        {
            return Err(CommandError::InvalidPayload(format!(
                "method is 1 to {MAX_METHOD_LEN} of [A-Za-z0-9_.:-]"
            )));
        }
        let config = &cx.services.config.rpc;
        let (Some(url), Some(secret)) = (config.route(&self.method), &config.secret) else {
            return Err(CommandError::RpcUnavailable(
                "not configured (rpc.url)".into(),
            ));
        };
        let sid = cx.conn.id();
        let body = serde_json::to_vec(&Call {
            method: &self.method,
            data: &self.data,
            user_id: cx.identity.user_id.as_str(),
            tenant: cx.identity.tenant.as_str(),
            sid: &sid,
        })
        .map_err(|e| CommandError::InvalidPayload(e.to_string()))?;
        if body.len() > config.max_request_bytes {
            return Err(CommandError::RpcTooLarge {
                max: config.max_request_bytes,
            });
        }
        let max = config.max_in_flight_per_socket;
        let Some(_slot) = cx.services.limits.rpc_in_flight.enter(&sid, max) else {
            return Err(CommandError::RpcInFlight { max });
        };
        let sent = cx
            .services
            .outbound
            .post(Request {
                url,
                secret: secret.expose().as_bytes(),
                delivery: uuid::Uuid::now_v7(),
                body: Bytes::from(body),
                timeout: Duration::from_millis(config.timeout_ms),
                max_answer: config.max_response_bytes,
            })
            .await;
        let answer = match sent {
            Ok(answer) => answer,
            Err(SendError::Timeout) => {
                return Err(CommandError::RpcTimeout {
                    timeout_ms: config.timeout_ms,
                });
            }
            Err(SendError::Unreachable(e)) => {
                tracing::warn!(%sid, method = %self.method, "rpc backend unreachable: {e}");
                return Err(CommandError::RpcUnavailable(
                    "the backend cannot be reached".into(),
                ));
            }
            Err(SendError::TooLarge(max)) => {
                return Err(CommandError::RpcFailed {
                    status: None,
                    reason: format!(
                        "its answer is larger than {max} bytes (rpc.max_response_bytes)"
                    ),
                });
            }
        };
        if !answer.is_success() {
            return Err(CommandError::RpcFailed {
                status: Some(answer.status),
                reason: format!("it answered HTTP {}", answer.status),
            });
        }
        // An empty 2xx body (204 No Content) is a call with no result.
        let result = if answer.body.iter().all(u8::is_ascii_whitespace) {
            Value::Null
        } else {
            serde_json::from_slice(&answer.body).map_err(|_| CommandError::RpcFailed {
                status: Some(answer.status),
                reason: format!(
                    "it answered HTTP {} with a body that is not JSON",
                    answer.status
                ),
            })?
        };
        Ok(json!({"ok": true, "result": result}))
    }
}
