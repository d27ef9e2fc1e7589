//! The one table of client-visible error codes. [`Code`] is each stable code a client can
//! see: its wire string, its HTTP status (where it answers an HTTP request) and where it
//! can occur; [`Message`] is each message template, under its code (a code such as
//! `rate_limited` has one per situation). HTTP errors (`http::ApiError`), command errors
//! (`socket::CommandError`), handshake refusals (`socket::auth`), token errors
//! (`auth::AuthError`) and limit refusals (`limits::LimitError`) take their code, status
//! and message from here, and a test below checks that WEBSOCKET_API.md section 7 lists
//! exactly these codes, with these statuses and places.
//!
//! Codes from elsewhere (Socket.IO's `Invalid namespace`, Engine.IO's
//! `{"code":4,"message":"Forbidden"}`) are documented there but are not Roomcast's.

use std::fmt::{self, Write as _};

use http::StatusCode as S;

/// Where a code can reach a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Where {
    /// The `error` object of an HTTP answer: `{"error": {code, message, field?, ...}}`.
    Http,
    /// The answer to a socket command: in the ack, or as an `error` event without one.
    Command,
    /// The message of a Socket.IO `connect_error`: the code alone.
    ConnectError,
    /// The HTTP answer to the request opening an Engine.IO session (refused before any
    /// session exists): `{code, message, retry_after_ms?}`.
    HandshakeHttp,
    /// An event the server sends on its own (`error` before a disconnect, `auth.expired`).
    Event,
    /// The per-room report of a connect with `since` (`{"error": code}`).
    Recover,
}

macro_rules! codes {
    ($($(#[$meta:meta])* $name:ident = $wire:literal, $status:expr, [$($at:ident),+];)+) => {
        /// A stable, documented error code (WEBSOCKET_API.md section 7).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code {
            $($(#[$meta])* $name,)+
        }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)+];

            /// The code as the client sees it.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$name => $wire,)+
                }
            }

            /// The status of an HTTP answer carrying this code; `None` for a code that
            /// never answers an HTTP request on its own.
            pub const fn status(self) -> Option<S> {
                match self {
                    $(Self::$name => $status,)+
                }
            }

            pub const fn occurs(self) -> &'static [Where] {
                match self {
                    $(Self::$name => &[$(Where::$at),+],)+
                }
            }
        }
    };
}

codes! {
    TokenMissing = "token_missing", Some(S::UNAUTHORIZED), [ConnectError, HandshakeHttp, Http];
    TokenInvalid = "token_invalid", Some(S::UNAUTHORIZED), [ConnectError, HandshakeHttp, Command, Http];
    TokenExpired = "token_expired", Some(S::UNAUTHORIZED), [ConnectError, HandshakeHttp, Command, Event, Http];
    TooManyPreauthSessions = "too_many_preauth_sessions", Some(S::TOO_MANY_REQUESTS), [HandshakeHttp];
    /// `GET /api/v1/sse` answers it `429`; a socket gets it as its `connect_error`.
    TooManyConnections = "too_many_connections", Some(S::TOO_MANY_REQUESTS), [ConnectError, Http];
    RateLimited = "rate_limited", Some(S::TOO_MANY_REQUESTS), [ConnectError, HandshakeHttp, Command, Http];
    RateLimitExceeded = "rate_limit_exceeded", None, [Event];
    InvalidPayload = "invalid_payload", Some(S::UNPROCESSABLE_ENTITY), [Command, Http];
    InvalidRoom = "invalid_room", Some(S::UNPROCESSABLE_ENTITY), [Command, Http, Recover];
    /// Also the `connect_error` of a `/yjs|...` connect to a document whose room the token
    /// does not grant.
    Forbidden = "forbidden", Some(S::FORBIDDEN), [ConnectError, Command, Http, Recover];
    TooManyRooms = "too_many_rooms", Some(S::UNPROCESSABLE_ENTITY), [Command, Http, Recover];
    UnknownCommand = "unknown_command", None, [Command];
    NotSubscribed = "not_subscribed", None, [Command];
    RefreshMismatch = "refresh_mismatch", None, [Command];
    /// `rpc`: the backend answered, but not with a 2xx JSON body (`status` is its HTTP status).
    RpcFailed = "rpc_failed", None, [Command];
    /// `rpc`: no answer within `rpc.timeout_ms`.
    RpcTimeout = "rpc_timeout", None, [Command];
    /// `rpc`: RPC is not configured, or the backend cannot be reached.
    RpcUnavailable = "rpc_unavailable", None, [Command];
    IdempotencyInProgress = "idempotency_in_progress", Some(S::CONFLICT), [Http];
    InvalidIdempotencyKey = "invalid_idempotency_key", Some(S::BAD_REQUEST), [Http];
    ClusterUnavailable = "cluster_unavailable", Some(S::SERVICE_UNAVAILABLE), [Command, Http];
    Unauthorized = "unauthorized", Some(S::UNAUTHORIZED), [Http];
    MalformedJson = "malformed_json", Some(S::BAD_REQUEST), [Http];
    UnknownEventType = "unknown_event_type", Some(S::UNPROCESSABLE_ENTITY), [Http];
    InvalidEventName = "invalid_event_name", Some(S::UNPROCESSABLE_ENTITY), [Http];
    PayloadTooLarge = "payload_too_large", Some(S::PAYLOAD_TOO_LARGE), [Http, Command];
    /// `publish` of an event name `[client_events] events` does not allow (or reserved).
    EventNotAllowed = "event_not_allowed", None, [Command];
    BatchTooLarge = "batch_too_large", Some(S::UNPROCESSABLE_ENTITY), [Http];
    /// A per-event result inside a batch answer, whose status is the failed event's.
    Skipped = "skipped", None, [Http];
    InvalidSignature = "invalid_signature", Some(S::UNAUTHORIZED), [Http];
    GithubNotConfigured = "github_not_configured", Some(S::NOT_FOUND), [Http];
    ServerBusy = "server_busy", Some(S::SERVICE_UNAVAILABLE), [Http];
    /// No stream with this id in the tenant (never created, or expired).
    StreamNotFound = "stream_not_found", Some(S::NOT_FOUND), [Http, Command];
    /// `POST /api/v1/streams` with the `stream_id` of a stream that exists.
    StreamExists = "stream_exists", Some(S::CONFLICT), [Http];
    /// An append, finish, fail or cancel of a stream that already finished or failed.
    StreamEnded = "stream_ended", Some(S::CONFLICT), [Http, Command];
    /// An append, finish or fail of a stream a viewer cancelled.
    StreamCancelled = "stream_cancelled", Some(S::CONFLICT), [Http, Command];
    /// An append that would take the stream's text past `streams.max_bytes`.
    StreamTooLarge = "stream_too_large", Some(S::PAYLOAD_TOO_LARGE), [Http];
    /// A document name that is not `<room>/<name>` (`/yjs|...` connect, `/api/v1/documents`).
    InvalidDocument = "invalid_document", Some(S::UNPROCESSABLE_ENTITY), [ConnectError, Http];
    /// A `/yjs|...` connect past `documents.max_documents_per_connection`.
    TooManyDocuments = "too_many_documents", None, [ConnectError];
    /// A Yjs or awareness update larger than `documents.max_update_bytes`.
    UpdateTooLarge = "update_too_large", Some(S::PAYLOAD_TOO_LARGE), [Event, Http];
    /// An update that would take a document past `documents.max_document_bytes`.
    DocumentTooLarge = "document_too_large", Some(S::PAYLOAD_TOO_LARGE), [Event, Http];
    /// Bytes that are not a Yjs update (v1) or awareness update.
    InvalidUpdate = "invalid_update", Some(S::UNPROCESSABLE_ENTITY), [Event, Http];
    /// `GET /api/v1/documents/...` of a document never stored in this tenant.
    DocumentNotFound = "document_not_found", Some(S::NOT_FOUND), [Http];
    /// The documents' store cannot be read or written.
    DocumentUnavailable = "document_unavailable", Some(S::SERVICE_UNAVAILABLE), [ConnectError, Event, Http];
    Internal = "internal", Some(S::INTERNAL_SERVER_ERROR), [Http];
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! messages {
    ($($(#[$meta:meta])* $name:ident: $code:ident = $template:literal;)+) => {
        /// A message template and its code. `{name}` is filled by [`Message::render`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Message {
            $($(#[$meta])* $name,)+
        }

        impl Message {
            pub const ALL: &'static [Message] = &[$(Message::$name,)+];

            pub const fn code(self) -> Code {
                match self {
                    $(Self::$name => Code::$code,)+
                }
            }

            pub const fn template(self) -> &'static str {
                match self {
                    $(Self::$name => $template,)+
                }
            }
        }
    };
}

messages! {
    // The handshake (an Engine.IO v3 HTTP refusal, and the recent errors of a connect_error).
    HandshakeTokenMissing: TokenMissing = "no token in the handshake";
    HandshakeTokenInvalid: TokenInvalid = "the token does not verify";
    HandshakeTokenExpired: TokenExpired = "the token has expired";
    PreauthSessions: TooManyPreauthSessions = "too many sessions waiting to authenticate";
    HandshakesFromAddress: RateLimited = "too many handshakes from this address";

    // Socket commands.
    CommandPayload: InvalidPayload = "{message}";
    CommandRoom: InvalidRoom =
        "rooms are global, user:<id>, project:<id> or agent:<id>; an id is 1 to 128 of [A-Za-z0-9_.-]";
    RoomNotGranted: Forbidden = "your token does not grant this room";
    MustStay: Forbidden = "a socket stays in global and its own user room";
    SocketRooms: TooManyRooms = "a socket may be in at most {limit} rooms";
    NotSubscribed: NotSubscribed = "subscribe to the room first";
    UnknownCommand: UnknownCommand = "unknown command {name}";
    CommandCluster: ClusterUnavailable = "the cluster is unreachable: {reason}";
    /// `auth.refresh` with a token that does not verify (the code is the token's).
    RefreshTokenInvalid: TokenInvalid = "the new token does not verify";
    RefreshMismatch: RefreshMismatch =
        "the new token must be for the same user (sub) and tenant";
    EventBudget: RateLimited = "too many events: this one was dropped (limits.events_per_sec)";
    /// `publish` into a room kind `[client_events] rooms` does not list, or that the
    /// token's `publish` claim leaves out.
    PublishNotAllowed: Forbidden = "clients may not publish into this room ({reason})";
    ClientEventName: EventNotAllowed = "{message}";
    ClientEventTooLarge: PayloadTooLarge =
        "data is {size} bytes serialized; client_events.max_bytes allows {max}";
    ClientEventSchema: InvalidPayload = "data does not match the schema of {event}: {message}";
    EventAbuse: RateLimitExceeded = "too many events were refused: disconnecting";
    RpcFailed: RpcFailed = "the RPC backend failed: {reason}";
    RpcTimeout: RpcTimeout = "the RPC backend did not answer within {timeout_ms} ms (rpc.timeout_ms)";
    RpcUnavailable: RpcUnavailable = "RPC is unavailable: {reason}";
    RpcTooLarge: PayloadTooLarge =
        "the rpc request is larger than {max} bytes (rpc.max_request_bytes); it was not sent";
    RpcInFlight: RateLimited =
        "this socket has {max} rpc calls awaiting an answer (rpc.max_in_flight_per_socket); wait for one";

    // Streams (socket commands and HTTP alike).
    StreamNotFound: StreamNotFound = "no stream {stream_id} in this tenant (never created, or expired)";
    StreamExists: StreamExists = "a stream {stream_id} exists already";
    StreamEnded: StreamEnded = "the stream {stream_id} is {status}";
    StreamCancelled: StreamCancelled = "the stream {stream_id} was cancelled by a viewer";
    StreamTooLarge: StreamTooLarge =
        "the stream's text would exceed {max} bytes (streams.max_bytes); nothing was appended";
    StreamCancelNotAllowed: Forbidden =
        "only the user who requested the stream may cancel it (streams.cancel = \"requester\")";

    // Documents (Yjs): `error` events before a disconnect, and HTTP.
    InvalidDocument: InvalidDocument =
        "a document is <room>/<name>: a room, then 1 to 128 of [A-Za-z0-9_.-]";
    DocumentNotGranted: Forbidden = "your token does not grant the document's room";
    UpdateTooLarge: UpdateTooLarge =
        "the update is larger than {limit} bytes (documents.max_update_bytes); it was not applied";
    DocumentTooLarge: DocumentTooLarge =
        "the document would grow past {limit} bytes (documents.max_document_bytes); the update was not applied";
    InvalidUpdate: InvalidUpdate = "not a Yjs update (v1) or awareness update; it was not applied";
    DocumentNotFound: DocumentNotFound = "no document {name} in this tenant";
    DocumentUnavailable: DocumentUnavailable = "the documents' storage failed: {reason}";

    // HTTP.
    Unauthorized: Unauthorized =
        "a valid API key is required in Authorization: Bearer <key> or X-API-Key";
    HttpForbidden: Forbidden = "{message}";
    MalformedJson: MalformedJson = "the body is not valid JSON: {error}";
    UnknownEventType: UnknownEventType =
        "unknown event type {type}; the known types are listed in WEBSOCKET_API.md";
    HttpPayload: InvalidPayload = "{message}";
    InvalidEventName: InvalidEventName = "{message}";
    HttpRoom: InvalidRoom = "{message}";
    PayloadTooLarge: PayloadTooLarge = "the request body exceeds limits.max_http_body_bytes";
    HttpCluster: ClusterUnavailable = "the cluster is unreachable, nothing was delivered: {reason}";
    IdempotencyInProgress: IdempotencyInProgress =
        "a publish with this idempotency key is still in progress; retry shortly";
    InvalidIdempotencyKey: InvalidIdempotencyKey =
        "Idempotency-Key must be 1 to 255 visible ASCII characters";
    InvalidSignature: InvalidSignature =
        "X-Hub-Signature-256 is missing or does not match the body (github.webhook_secret)";
    GithubNotConfigured: GithubNotConfigured = "GitHub webhooks are off: set github.webhook_secret";
    BatchTooLarge: BatchTooLarge =
        "a batch holds 1 to {max} events (publish.max_batch_events, and no more than limits.publish_per_key_burst)";
    Skipped: Skipped = "not published: events[{failed}] failed and events are published in order";
    KeyBudget: RateLimited = "this API key is over limits.{limit}; nothing was published";
    PublishRooms: TooManyRooms =
        "a publish may name at most {max} rooms (limits.max_rooms_per_publish); nothing was published";
    ServerBusy: ServerBusy =
        "the server is at its connection limit (limits.fd_reserve): only /health and /ready are served; retry later";
    AuthThrottled: RateLimited =
        "too many refused API keys from this address (limits.auth_failures_per_ip_per_sec); the key was not checked";
    Internal: Internal = "{message}";

    // Server-Sent Events (`GET /api/v1/sse`), refused before the stream starts.
    SseTokenMissing: TokenMissing =
        "no token: send the client JWT in Authorization: Bearer <jwt> or ?token=<jwt>";
    SseUserHandshakes: RateLimited =
        "too many connections opened by this user (limits.handshakes_per_user_per_sec)";
    SseConnections: TooManyConnections =
        "the {which} connection limit ({limit}) is reached: close another connection or retry later";
    SseRooms: TooManyRooms =
        "an SSE connection may read at most {limit} rooms (limits.max_rooms_per_socket)";
}

impl Message {
    /// The template with each `{name}` replaced by its value in `args`; a placeholder
    /// without a value is left as it is.
    pub fn render(self, args: &[(&str, &dyn fmt::Display)]) -> String {
        let template = self.template();
        let mut out = String::with_capacity(template.len() + 16);
        let mut rest = template;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                out.push_str(&rest[start..]);
                return out;
            };
            let name = &after[..end];
            match args.iter().find(|(n, _)| *n == name) {
                // Writing into a String cannot fail.
                Some((_, value)) => {
                    let _ = write!(out, "{value}");
                }
                None => out.push_str(&rest[start..start + end + 2]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    /// The template as it is, for a message without placeholders.
    pub fn text(self) -> String {
        self.render(&[])
    }
}

/// `Retry-After` for a wait of `retry_after_ms`: whole seconds, rounded up (HTTP has no
/// finer unit) and at least 1; the exact wait goes in the body as `retry_after_ms`.
pub fn retry_after_secs(retry_after_ms: u64) -> u64 {
    retry_after_ms.div_ceil(1000).max(1)
}

/// Sets `Retry-After` (see [`retry_after_secs`]) on an HTTP answer.
pub fn set_retry_after(headers: &mut http::HeaderMap, retry_after_ms: u64) {
    headers.insert(
        http::header::RETRY_AFTER,
        retry_after_secs(retry_after_ms).into(),
    );
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const API_DOC: &str = include_str!("../WEBSOCKET_API.md");

    /// What the rows of one code in WEBSOCKET_API.md section 7 state.
    #[derive(Debug, Default, PartialEq, Eq)]
    struct Documented {
        statuses: BTreeSet<u16>,
        /// The places the "Where" cells name: `connect_error`, `ack`, `HTTP`.
        places: BTreeSet<&'static str>,
    }

    /// The places of the table that the doc's "Where" column names.
    fn places(code: Code) -> BTreeSet<&'static str> {
        code.occurs()
            .iter()
            .filter_map(|at| match at {
                Where::ConnectError => Some("connect_error"),
                Where::Command => Some("ack"),
                Where::Http | Where::HandshakeHttp => Some("HTTP"),
                Where::Event | Where::Recover => None,
            })
            .collect()
    }

    /// The codes of WEBSOCKET_API.md section 7: a row's first cell names its codes in
    /// backticks (snake_case ones are Roomcast's), its second where they occur, its third
    /// starts with the HTTP status or is `–`.
    fn documented(doc: &str) -> BTreeMap<String, Documented> {
        let start = doc
            .find("\n## 7.")
            .expect("WEBSOCKET_API.md has a section 7");
        let section = &doc[start + 1..];
        let section = &section[..section.find("\n## ").unwrap_or(section.len())];
        let mut codes: BTreeMap<String, Documented> = BTreeMap::new();
        for line in section.lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let (Some(first), Some(at), Some(http)) = (cells.get(1), cells.get(2), cells.get(3))
            else {
                continue;
            };
            let status = http
                .get(..3)
                .and_then(|s| s.parse::<u16>().ok())
                .filter(|_| http.len() == 3 || !http.as_bytes()[3].is_ascii_digit());
            let names = first.split('`').skip(1).step_by(2).filter(|name| {
                name.starts_with(|c: char| c.is_ascii_lowercase())
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            });
            let words: BTreeSet<&str> = at
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .collect();
            for name in names {
                let entry = codes.entry(name.to_owned()).or_default();
                entry.statuses.extend(status);
                for place in ["connect_error", "ack", "HTTP"] {
                    if words.contains(place) {
                        entry.places.insert(place);
                    }
                }
            }
        }
        codes
    }

    #[test]
    fn the_api_doc_lists_exactly_the_codes_of_the_table() {
        let documented = documented(API_DOC);
        let in_doc: BTreeSet<&str> = documented.keys().map(String::as_str).collect();
        let in_table: BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(
            in_doc.difference(&in_table).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "codes in WEBSOCKET_API.md section 7 but not in src/errors.rs"
        );
        assert_eq!(
            in_table.difference(&in_doc).collect::<Vec<_>>(),
            Vec::<&&str>::new(),
            "codes in src/errors.rs but not in WEBSOCKET_API.md section 7"
        );
        for code in Code::ALL {
            let Documented {
                statuses: stated,
                places: at,
            } = &documented[code.as_str()];
            assert_eq!(at, &places(*code), "{code}: the doc's places");
            let status = code.status().map(|s| s.as_u16());
            match status {
                Some(status) => assert_eq!(
                    stated,
                    &BTreeSet::from([status]),
                    "{code}: the doc's HTTP status"
                ),
                None => assert!(stated.is_empty(), "{code}: the doc states {stated:?}"),
            }
        }
    }

    #[test]
    fn the_doc_parser_sees_codes_and_statuses() {
        let doc = "## 7. Error codes\n\n| Code | Where | HTTP | Meaning |\n|---|---|---|---|\n\
                   | `a_b` | HTTP | 422 (`field`) | y |\n| `c`, `d_1` | `connect_error`; ack | – | y |\n\
                   | `c` | back / HTTPS | 4xx | y |\n\
                   | `Invalid namespace` | x | – | y |\n| Engine.IO `{\"code\":4}` | x | 403 | y |\n\
                   \n## 8. Next\n| `e` | x | 200 | y |\n";
        let codes = documented(&format!("intro\n{doc}"));
        assert_eq!(
            codes,
            BTreeMap::from([
                (
                    "a_b".to_owned(),
                    Documented {
                        statuses: BTreeSet::from([422]),
                        places: BTreeSet::from(["HTTP"]),
                    }
                ),
                (
                    "c".to_owned(),
                    Documented {
                        statuses: BTreeSet::new(),
                        places: BTreeSet::from(["connect_error", "ack"]),
                    }
                ),
                (
                    "d_1".to_owned(),
                    Documented {
                        statuses: BTreeSet::new(),
                        places: BTreeSet::from(["connect_error", "ack"]),
                    }
                ),
            ])
        );
    }

    #[test]
    fn codes_are_unique_and_every_code_has_a_place() {
        let wire: BTreeSet<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(wire.len(), Code::ALL.len());
        for code in Code::ALL {
            assert!(!code.occurs().is_empty(), "{code}");
            let http = code.occurs().contains(&Where::Http);
            assert!(
                !http || code.status().is_some() || *code == Code::Skipped,
                "{code} answers HTTP without a status"
            );
            // `socket::auth::refused` takes the status from here.
            if code.occurs().contains(&Where::HandshakeHttp) {
                assert!(code.status().is_some(), "{code}");
            }
        }
    }

    #[test]
    fn templates_render_their_placeholders() {
        assert_eq!(
            Message::SocketRooms.render(&[("limit", &3)]),
            "a socket may be in at most 3 rooms"
        );
        assert_eq!(
            Message::UnknownEventType.render(&[("type", &format_args!("{:?}", "x{y}"))]),
            "unknown event type \"x{y}\"; the known types are listed in WEBSOCKET_API.md"
        );
        assert_eq!(
            Message::KeyBudget.render(&[]),
            Message::KeyBudget.template()
        );
        for message in Message::ALL {
            let text = message.text();
            assert!(!text.is_empty(), "{message:?}");
            if !message.template().contains('{') {
                assert_eq!(text, message.template());
            }
        }
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(0), 1);
        assert_eq!(retry_after_secs(1), 1);
        assert_eq!(retry_after_secs(1000), 1);
        assert_eq!(retry_after_secs(1001), 2);
    }
}
