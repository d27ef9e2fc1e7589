//! `ping` → `{pong: true, server_time}`, whatever the payload.

use serde::Deserialize;
use serde_json::{Value, json};

use super::command::{Command, CommandCx, Reply};
use super::reply::CommandError;
use crate::events::Timestamp;

#[derive(Deserialize)]
pub(super) struct Ping {}

impl Command for Ping {
    const NAME: &str = "ping";
    const USAGE: &str = "any payload, or none";

    fn decode(_: Result<Value, String>) -> Result<Self, CommandError> {
        Ok(Self {})
    }

    async fn run(self, _: &CommandCx<'_>) -> Result<Reply, CommandError> {
        Ok(json!({"pong": true, "server_time": Timestamp::now()}))
    }
}
