//! Logs carry one span per connection, `socket{sid, user_id, tenant, ns}`, around the
//! socket's connect, refusal and disconnect lines; and no token appears in them.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use serde_json::json;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[tokio::test]
async fn a_connection_logs_within_its_span() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_env_filter("roomcast=debug")
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let server = TestServer::start_with(
        "[limits]\nevents_per_sec = 1\nevents_burst = 1\nevent_abuse_refusals = 5",
    )
    .await;
    let t = token_for("alice", "acme", &[]);
    let mut c = server.connect(&t).await;
    let sid = c.established["sid"].as_str().unwrap().to_owned();
    c.emit_with_ack("ping", json!({})).await;
    let ack = c.emit_with_ack("ping", json!({})).await;
    assert_eq!(ack["error"]["code"], "rate_limited");
    drop(c);
    let span = format!("socket{{sid={sid} user_id=alice tenant=acme ns=/}}");
    let deadline = tokio::time::Instant::now() + DEADLINE;
    loop {
        let text = captured.text();
        let lines = |what: &str| text.lines().any(|l| l.contains(&span) && l.contains(what));
        if lines("socket connected")
            && lines("event refused: rate_limited")
            && lines("socket disconnected")
        {
            assert!(!text.contains(&t), "a token was logged");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "missing span lines for {span}:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
