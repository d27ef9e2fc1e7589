//! Log redaction where lines are written, whatever the filter lets through.
//!
//! Filters decide which crates speak, not what they say: socketioxide and engineioxide log
//! whole packets (a CONNECT's `auth.token`), requests (`?token=`, `?sid=`) and headers when
//! verbose. So every formatted line passes through [`Redacting`] before it reaches the
//! output, and there:
//! - the value of a credential field is replaced by `[redacted]`: a key ending in `token`
//!   (`token`, `auth.token`, `access_token`), `authorization`, `proxy-authorization`,
//!   `x-api-key`, `api_key`, `secret`, `password`, in any of the forms `key=v`, `key: v`,
//!   `"key":"v"` (also JSON-escaped), `key: Some("v")`;
//! - anything shaped like a JWT (`eyJ….….…`) is replaced by `[redacted]`;
//! - an Engine.IO session id (a polling bearer credential: `sid`, `socket.id`, the sid of
//!   a Socket.IO CONNECT answer) is replaced by `~` and the first 8 hex digits of its
//!   SHA-256, so a session can still be followed through the log and matched by whoever
//!   knows the sid (`printf %s SID | sha256sum | cut -c1-8`), but not replayed. In lines
//!   of socketioxide and engineioxide the field `id` is a session id too (engineioxide's
//!   `heartbeat error` names the socket `id=<sid>`); elsewhere `id` is an event's or a
//!   stream's and stays readable.

use std::borrow::Cow;
use std::io::{self, Write};

use sha2::Digest;
use tracing_subscriber::fmt::MakeWriter;

/// Wraps a [`MakeWriter`] so that each event's formatted line is redacted before it is
/// written (the formatter writes one event per writer, dropped after the event).
#[derive(Debug, Clone)]
pub struct Redacting<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter::new(self.0.make_writer())
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        let mut writer = RedactingWriter::new(self.0.make_writer_for(meta));
        writer.ids_are_sids = ids_are_sids(meta.target());
        writer
    }
}

/// Whether an event of `target` calls a session id `id`: the Socket.IO crates' do.
fn ids_are_sids(target: &str) -> bool {
    ["engineioxide", "socketioxide"].iter().any(|krate| {
        target
            .strip_prefix(krate)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::") || rest.starts_with('_'))
    })
}

/// Collects one event's bytes; redacts and writes them on flush or drop.
pub struct RedactingWriter<W: Write> {
    inner: W,
    buf: Vec<u8>,
    /// The event is socketioxide's or engineioxide's: its `id` is a session id.
    ids_are_sids: bool,
}

impl<W: Write> RedactingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            buf: Vec::new(),
            ids_are_sids: false,
        }
    }

    fn write_out(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&self.buf);
        let clean = redact_line(&text, self.ids_are_sids).into_owned();
        self.buf.clear();
        self.inner.write_all(clean.as_bytes())
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        let _ = self.write_out();
        let _ = self.inner.flush();
    }
}

/// What a field's value becomes.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Secret,
    Sid,
}

fn kind_of(key: &str, ids_are_sids: bool) -> Option<Kind> {
    let key = key.to_ascii_lowercase();
    let key = key.trim_matches(|c| c == '.' || c == '-' || c == '_');
    if key.ends_with("token")
        || key.ends_with("authorization")
        || key.ends_with("secret")
        || key.ends_with("password")
        || matches!(key, "x-api-key" | "api_key" | "apikey" | "api-key")
    {
        return Some(Kind::Secret);
    }
    if key == "sid"
        || key.ends_with(".sid")
        || key == "socket.id"
        || key == "socket_id"
        || (ids_are_sids && key == "id")
    {
        return Some(Kind::Sid);
    }
    None
}

fn is_key_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Skips ANSI colour sequences (`ESC [ … m`) that the text formatter puts around names.
fn skip_ansi(s: &[u8], mut i: usize) -> usize {
    while s.get(i) == Some(&0x1b) && s.get(i + 1) == Some(&b'[') {
        let mut j = i + 2;
        while s.get(j).is_some_and(|b| b.is_ascii_digit() || *b == b';') {
            j += 1;
        }
        if s.get(j) != Some(&b'm') {
            break;
        }
        i = j + 1;
    }
    i
}

/// Skips what may stand between a key and its value: closing quotes (escaped or not),
/// colour codes, blanks, one `=` or `:`, then a `Some(`-like wrapper and opening quotes.
/// `None` when no separator follows (the key was a word in a sentence).
fn value_start(s: &[u8], mut i: usize) -> Option<usize> {
    let skip = |s: &[u8], mut i: usize, also: &[u8]| loop {
        let j = skip_ansi(s, i);
        match s.get(j) {
            Some(b) if also.contains(b) => i = j + 1,
            _ => return j,
        }
    };
    i = skip(s, i, b"\\\"' ");
    if !matches!(s.get(i), Some(b'=' | b':')) {
        return None;
    }
    i = skip(s, i + 1, b" ");
    // `Some("…")`, `String("…")`: a capitalised word and a parenthesis.
    let mut j = i;
    while s.get(j).is_some_and(u8::is_ascii_alphabetic) {
        j += 1;
    }
    if j > i && s[i].is_ascii_uppercase() && s.get(j) == Some(&b'(') {
        i = j + 1;
    }
    Some(skip(s, i, b"\\\"'"))
}

fn value_end(s: &[u8], start: usize) -> usize {
    let stop = |b: u8| {
        b.is_ascii_whitespace()
            || b.is_ascii_control()
            || matches!(
                b,
                b'"' | b'\'' | b'\\' | b'&' | b',' | b';' | b'}' | b')' | b']' | b'>'
            )
    };
    let word = |from: usize| {
        let mut j = from;
        while j < s.len() && !stop(s[j]) {
            j += 1;
        }
        j
    };
    let end = word(start);
    // `Bearer <token>`, `Basic <credentials>`: the scheme and what follows it.
    let scheme = &s[start..end];
    if s.get(end) == Some(&b' ')
        && ["bearer", "basic", "token", "digest"]
            .iter()
            .any(|w| scheme.eq_ignore_ascii_case(w.as_bytes()))
    {
        return word(end + 1);
    }
    end
}

/// The short form of a session id in logs: `~` and 8 hex digits of its SHA-256.
pub fn sid_hash(sid: &str) -> String {
    let digest = sha2::Sha256::digest(sid.as_bytes());
    format!("~{}", &hex::encode(digest)[..8])
}

/// A line with every credential it holds redacted (see the module doc).
pub fn redact(line: &str) -> Cow<'_, str> {
    redact_line(line, false)
}

/// [`redact`]; with `ids_are_sids` a field `id` is a session id as well.
fn redact_line(line: &str, ids_are_sids: bool) -> Cow<'_, str> {
    let keyed = redact_fields(line, ids_are_sids);
    match redact_jwts(&keyed) {
        Cow::Borrowed(_) => keyed,
        Cow::Owned(s) => Cow::Owned(s),
    }
}

fn redact_fields(line: &str, ids_are_sids: bool) -> Cow<'_, str> {
    let s = line.as_bytes();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while i < s.len() {
        if !is_key_byte(s[i]) || (i > 0 && is_key_byte(s[i - 1])) {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < s.len() && is_key_byte(s[end]) {
            end += 1;
        }
        let key = &line[i..end];
        let found = kind_of(key, ids_are_sids).and_then(|kind| {
            let start = value_start(s, end)?;
            let stop = value_end(s, start);
            (stop > start).then_some((kind, start, stop))
        });
        // "connect timeout for socket <sid>", "… for socket: <sid>": a sid-shaped word
        // (16 base64url characters) after the word `socket`.
        let found = found.or_else(|| {
            if !key.eq_ignore_ascii_case("socket") {
                return None;
            }
            let mut start = end;
            if s.get(start) == Some(&b':') {
                start += 1;
            }
            if s.get(start) != Some(&b' ') {
                return None;
            }
            start += 1;
            let stop = value_end(s, start);
            let word = &s[start..stop];
            (word.len() == 16
                && word
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')))
            .then_some((Kind::Sid, start, stop))
        });
        let Some((kind, start, stop)) = found else {
            i = end;
            continue;
        };
        let out = out.get_or_insert_with(|| String::with_capacity(line.len()));
        out.push_str(&line[copied..start]);
        match kind {
            Kind::Secret => out.push_str("[redacted]"),
            Kind::Sid => out.push_str(&sid_hash(&line[start..stop])),
        }
        copied = stop;
        i = stop;
    }
    match out {
        None => Cow::Borrowed(line),
        Some(mut out) => {
            out.push_str(&line[copied..]);
            Cow::Owned(out)
        }
    }
}

/// `eyJ<b64>.<b64>.<b64>`: a JWT's header always starts with `{"`, base64url `eyJ`.
fn redact_jwts(line: &str) -> Cow<'_, str> {
    let s = line.as_bytes();
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    let mut out: Option<String> = None;
    let mut copied = 0;
    let mut i = 0;
    while let Some(at) = line[i..].find("eyJ").map(|p| p + i) {
        if at > 0 && b64(s[at - 1]) {
            i = at + 3;
            continue;
        }
        let mut j = at;
        let mut dots = 0;
        while j < s.len() && (b64(s[j]) || (s[j] == b'.' && dots < 2)) {
            if s[j] == b'.' {
                dots += 1;
            }
            j += 1;
        }
        if dots < 2 {
            i = at + 3;
            continue;
        }
        let out = out.get_or_insert_with(|| String::with_capacity(line.len()));
        out.push_str(&line[copied..at]);
        out.push_str("[redacted]");
        copied = j;
        i = j;
    }
    match out {
        None => Cow::Borrowed(line),
        Some(mut out) => {
            out.push_str(&line[copied..]);
            Cow::Owned(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl";

    #[test]
    fn credentials_in_every_form() {
        for line in [
            "GET /socket.io/?EIO=4&token=opaque123&transport=polling",
            "packet: {\"token\":\"opaque123\"}",
            "{\"message\":\"auth: {\\\"token\\\":\\\"opaque123\\\"}\"}",
            "auth: Object {\"token\": String(\"opaque123\")}",
            "headers: {\"authorization\": \"Bearer opaque123\"}",
            "authorization: Bearer opaque123 next",
            "x-api-key=opaque123",
            "\u{1b}[3mtoken\u{1b}[0m\u{1b}[2m=\u{1b}[0mopaque123",
        ] {
            let clean = redact(line);
            assert!(!clean.contains("opaque123"), "{line} -> {clean}");
            assert!(clean.contains("[redacted]"), "{line} -> {clean}");
        }
        let line = format!("a {JWT} b");
        assert_eq!(redact(&line), "a [redacted] b");
    }

    #[test]
    fn sids_become_short_hashes() {
        let sid = "AbCdEfGh12345678";
        let h = sid_hash(sid);
        for line in [
            format!("socket{{sid={sid} user_id=alice}}"),
            format!("?EIO=4&transport=polling&sid={sid}"),
            format!("0{{\"sid\":\"{sid}\",\"upgrades\":[]}}"),
            format!("[sid={sid}] dropping socket"),
            format!("connect timeout for socket {sid}"),
            format!("closing underlying transport for socket: {sid}"),
            format!("{{\"span\":{{\"sid\":\"{sid}\"}}}}"),
        ] {
            let clean = redact(&line);
            assert!(!clean.contains(sid), "{line} -> {clean}");
            assert!(clean.contains(&h), "{line} -> {clean}");
        }
    }

    #[test]
    fn ordinary_words_are_left_alone() {
        for line in [
            "token expired: disconnecting",
            "event refused: token_invalid",
            "socket disconnected reason=ClientNSDisconnect",
            "sid is unknown",
        ] {
            assert_eq!(redact(line), line);
        }
    }

    /// engineioxide's `heartbeat error` names the socket `id`: hashed in its lines, while an
    /// `id` in Roomcast's own lines (an event's) stays readable.
    #[test]
    fn the_socket_crates_id_is_a_sid() {
        let sid = "AbCdEfGh12345678";
        for line in [
            format!("heartbeat error: heartbeat timeout id={sid}"),
            format!("{{\"fields\":{{\"message\":\"heartbeat error\",\"id\":\"{sid}\"}}}}"),
        ] {
            let clean = redact_line(&line, true);
            assert!(!clean.contains(sid), "{line} -> {clean}");
            assert!(clean.contains(&sid_hash(sid)), "{line} -> {clean}");
            assert_eq!(redact_line(&line, false), line);
        }
        assert!(ids_are_sids("engineioxide::socket"));
        assert!(ids_are_sids("socketioxide"));
        assert!(!ids_are_sids("roomcast::broadcaster"));
        assert!(!ids_are_sids("engineioxidex"));
    }

    #[test]
    fn a_split_write_is_redacted_whole() {
        let mut out = Vec::new();
        {
            let mut w = RedactingWriter::new(&mut out);
            w.write_all(b"token=opa").unwrap();
            w.write_all(b"que123\n").unwrap();
        }
        assert_eq!(String::from_utf8(out).unwrap(), "token=[redacted]\n");
    }
}
