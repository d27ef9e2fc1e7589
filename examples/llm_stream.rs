//! An LLM's answer streamed to a room from Rust (WEBSOCKET_API.md section 13): the model's
//! tokens go to every viewer of `project:42` as they come, and a viewer's `stream.cancel`
//! stops the generation.
//!
//! ```sh
//! cargo run --example llm_stream
//! # meanwhile, read it over HTTP (or open /debug, connect, subscribe project:42):
//! curl -s 'http://127.0.0.1:8000/api/v1/streams/<stream_id>' -H 'Authorization: Bearer roomcast-dev-key'
//! ```

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use roomcast::broadcaster::StreamSpec;
use roomcast::rooms::{Id, RoomName};
use roomcast::streams::Usage;
use roomcast::{Config, EventBroadcaster, Roomcast};

/// Stands for your model client's streaming call: one token every 50 ms.
fn llm_tokens(_prompt: &str) -> impl Stream<Item = String> {
    let tokens = [
        "Sure",
        "! Here",
        " is",
        " a",
        " haiku",
        " 🌸",
        ":\n",
        "古池や",
        " 蛙",
        "飛び込む",
        " 水の音",
    ];
    futures_util::stream::iter(tokens).then(|token| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        token.to_owned()
    })
}

/// Streams the answer to `prompt` into `project:42`; returns the stream's id.
async fn answer(broadcaster: &EventBroadcaster, prompt: &str) -> anyhow::Result<String> {
    let room = RoomName::parse("project:42").ok_or_else(|| anyhow::anyhow!("bad room"))?;
    let mut spec = StreamSpec::new(room, "llm");
    spec.meta = serde_json::json!({"model": "gpt-x"});
    spec.requested_by = Id::parse("alice"); // with streams.cancel = "requester", only alice may stop it
    let writer = broadcaster.start_stream(spec).await?;
    let id = writer.id().to_string();

    let mut tokens = std::pin::pin!(llm_tokens(prompt));
    let mut count = 0;
    loop {
        tokio::select! {
            token = tokens.next() => {
                let Some(token) = token else { break };
                writer.append(&token).await?;
                count += 1;
            }
            cancel = writer.cancelled() => {
                // A viewer pressed stop: drop the model's stream (it stops generating).
                println!("{id} cancelled by {}", cancel.by);
                return Ok(id);
            }
        }
    }
    let usage = Usage {
        prompt_tokens: Some(9),
        completion_tokens: Some(count),
    };
    writer.finish(Some(usage)).await?;
    Ok(id)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_toml("[server]\nbind = \"127.0.0.1:8000\"")?;
    let server = Roomcast::new(&config).await?;
    let broadcaster = server.broadcaster();
    let listener = tokio::net::TcpListener::bind(config.server.bind).await?;
    tokio::spawn(server.serve(listener, roomcast::shutdown_signal()));

    let id = answer(&broadcaster, "a haiku, please").await?;
    println!("{id}");
    Ok(())
}
