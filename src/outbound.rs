//! [`Outbound`]: the one signed HTTP sender for the calls Roomcast makes to backends
//! (outbound webhooks, the RPC proxy). Every request is a JSON `POST` carrying
//!
//! - `X-Roomcast-Signature: sha256=<hex HMAC-SHA256 of the body>`, keyed with the target's
//!   secret (the scheme GitHub uses for its webhooks, so receivers can reuse their check);
//! - `X-Roomcast-Delivery: <uuid>`: the same on every retry of one delivery, so a receiver
//!   can drop a duplicate.
//!
//! It sends once; retrying (and how often) is the caller's decision. Redirects are not
//! followed (a signed body must not be replayed to another host), and an answer body is
//! read up to a limit only.

use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The signature header's name.
pub const SIGNATURE: &str = "x-roomcast-signature";
/// The delivery id header's name.
pub const DELIVERY: &str = "x-roomcast-delivery";

/// `sha256=<hex HMAC-SHA256 of body>` keyed with `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a `sha256=<hex>` signature of `body` in constant time.
pub fn signature_valid(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(digest) = header
        .and_then(|h| h.strip_prefix("sha256="))
        .and_then(|h| hex::decode(h.trim()).ok())
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    // `verify_slice` compares in constant time (and refuses a wrong length).
    mac.verify_slice(&digest).is_ok()
}

/// One signed request to send.
pub struct Request<'a> {
    pub url: &'a str,
    pub secret: &'a [u8],
    /// The same for every attempt of one delivery.
    pub delivery: Uuid,
    /// JSON.
    pub body: Bytes,
    /// For the whole exchange: connect, send, answer read.
    pub timeout: Duration,
    /// The most of the answer's body that is read; a longer one is [`SendError::TooLarge`].
    pub max_answer: usize,
}

/// What the receiver answered (any status).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("no answer within the timeout")]
    Timeout,
    #[error("cannot reach the receiver: {0}")]
    Unreachable(String),
    #[error("the answer is larger than {0} bytes")]
    TooLarge(usize),
}

/// The sender: one connection pool for every backend.
#[derive(Clone)]
pub struct Outbound {
    client: reqwest::Client,
}

impl Outbound {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("roomcast/", env!("CARGO_PKG_VERSION")))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            // Only a broken TLS backend fails here; a client without options then.
            .unwrap_or_else(|_| reqwest::Client::new());
        Self { client }
    }

    /// Sends `request` once and reads the answer (its body up to `max_answer` bytes).
    pub async fn post(&self, request: Request<'_>) -> Result<Answer, SendError> {
        let signature = signature(request.secret, &request.body);
        let exchange = async {
            let response = self
                .client
                .post(request.url)
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE, signature)
                .header(DELIVERY, request.delivery.to_string())
                .body(request.body)
                .send()
                .await
                .map_err(|e| SendError::Unreachable(without_url(&e)))?;
            let status = response.status().as_u16();
            let mut body = Vec::new();
            let mut response = response;
            while let Some(chunk) = response
                .chunk()
                .await
                .map_err(|e| SendError::Unreachable(without_url(&e)))?
            {
                if body.len() + chunk.len() > request.max_answer {
                    return Err(SendError::TooLarge(request.max_answer));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Answer {
                status,
                body: body.into(),
            })
        };
        tokio::time::timeout(request.timeout, exchange)
            .await
            .unwrap_or(Err(SendError::Timeout))
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Self::new()
    }
}

/// The error without its URL: a receiver's URL may carry a token in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut e = e.to_string();
    if let Some(at) = e.find(" for url (") {
        e.truncate(at);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_like_github() {
        // The example of GitHub's "Validating webhook deliveries" page.
        assert_eq!(
            signature(b"It's a Secret to Everybody", b"Hello, World!"),
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
        );
        let body = b"{\"a\":1}";
        let sig = signature(b"k", body);
        assert!(signature_valid(b"k", body, Some(&sig)));
        assert!(!signature_valid(b"other", body, Some(&sig)));
        assert!(!signature_valid(b"k", b"{\"a\":2}", Some(&sig)));
        assert!(!signature_valid(b"k", body, None));
    }
}
