//! AI streams over HTTP: `POST /api/v1/streams` (create), `POST /api/v1/streams/{id}/append`,
//! `…/finish`, `…/fail` (scope `publish`, each request one from the key's publish budget)
//! and `GET /api/v1/streams/{id}?offset=&tenant=` (scope `read`). The stream lives in the
//! tenant the request acts in (`tenant` in the create body, `?tenant=` afterwards; a key
//! bound to a tenant needs neither). What they do is [`EventBroadcaster`]'s, as for a
//! stream written from Rust.

use axum::Json;
use axum::body::Body;
use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiCaller, ApiError, AppState, Publish, PublishBody, Read, TenantQuery, tenant_for};
use crate::auth::Caller;
use crate::broadcaster::{EventBroadcaster, StreamSpec};
use crate::events::FieldError;
use crate::rooms::{Id, RoomName, Tenant};
use crate::streams::{StreamId, Usage};

/// The longest `kind`.
const MAX_KIND: usize = 64;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    room: String,
    #[serde(default)]
    stream_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    meta: Option<Value>,
    #[serde(default)]
    tenant: Option<Tenant>,
    #[serde(default)]
    requested_by: Option<Id>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AppendBody {
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FinishBody {
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FailBody {
    error: String,
}

#[derive(Deserialize)]
pub(super) struct ReadQuery {
    tenant: Option<Tenant>,
    #[serde(default)]
    offset: u64,
}

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::InvalidPayload(FieldError::new(field, message))
}

fn stream_id(id: &str) -> Result<StreamId, ApiError> {
    StreamId::parse(id).ok_or_else(|| {
        invalid(
            "stream_id",
            format!("invalid stream id {id:?}: 1 to 128 of [A-Za-z0-9_.-]"),
        )
    })
}

fn broadcaster(
    state: &AppState,
    caller: &Caller,
    tenant: Option<Tenant>,
) -> Result<EventBroadcaster, ApiError> {
    Ok(state.broadcaster.with_tenant(tenant_for(caller, tenant)?))
}

/// `201 {stream_id, room}`; the room receives `stream.started`.
pub(super) async fn create(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    PublishBody(body): PublishBody<CreateBody>,
) -> Result<Response, ApiError> {
    let broadcaster = broadcaster(&state, &caller, body.tenant)?;
    let room = RoomName::parse(&body.room).ok_or_else(|| {
        ApiError::InvalidRoom(FieldError::new(
            "room",
            format!("invalid room {:?}", body.room),
        ))
    })?;
    let id = body.stream_id.as_deref().map(stream_id).transpose()?;
    let kind = body.kind.unwrap_or_else(|| "llm".into());
    if kind.is_empty()
        || kind.len() > MAX_KIND
        || !kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.:-".contains(&b))
    {
        return Err(invalid(
            "kind",
            format!("kind is 1 to {MAX_KIND} of [a-z0-9_.:-]"),
        ));
    }
    let meta = body.meta.unwrap_or_else(|| json!({}));
    if !meta.is_object() {
        return Err(invalid("meta", "meta is a JSON object".into()));
    }
    let info = broadcaster
        .create_stream(StreamSpec {
            room,
            id,
            kind,
            meta,
            requested_by: body.requested_by,
        })
        .await?;
    let answer = json!({"stream_id": info.id, "room": info.room});
    Ok((StatusCode::CREATED, Json(answer)).into_response())
}

/// `202 {offset, length}`: where the text starts in the stream, and the stream's length
/// after it, in code points. With `Content-Type: application/x-ndjson` the request is a
/// long one of lines `{"text": …}`, each appended as it arrives and answered at once with a
/// line of the `200` response body (see [`append_lines`]).
pub(super) async fn append(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let broadcaster = broadcaster(&state, &caller, query.tenant)?;
    let id = stream_id(&id)?;
    let ndjson = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(NDJSON));
    if ndjson {
        return Ok(append_lines(
            state,
            caller,
            broadcaster,
            id,
            req.into_body(),
        ));
    }
    let PublishBody(body) = PublishBody::<AppendBody>::from_request(req, &state).await?;
    let offset = broadcaster.append_stream(&id, &body.text).await?;
    let length = offset + body.text.chars().count() as u64;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"offset": offset, "length": length})),
    )
        .into_response())
}

const NDJSON: &str = "application/x-ndjson";

/// The NDJSON form of an append: every line `{"text": …}` of the request is appended as it
/// arrives and answered with a line `{"offset", "length"}` of the response, which starts
/// (`200`) before the request ends. Each line costs one from the key's publish budget and
/// its bytes from the byte budget; a line longer than `limits.max_http_body_bytes` is
/// refused. The first refusal is answered with a line `{"error": {code, message}}` and
/// ends both (the rest of the request is not read). Blank lines are skipped.
fn append_lines(
    state: AppState,
    caller: Caller,
    broadcaster: EventBroadcaster,
    id: StreamId,
    body: Body,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(async move {
        let max_line = state.services.config.limits.max_http_body_bytes;
        let mut chunks = body.into_data_stream();
        let mut pending: Vec<u8> = Vec::new();
        let mut ended = false;
        loop {
            // Every full line received so far, then the next chunk.
            while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=at).collect();
                if !answer_line(&state, &caller, &broadcaster, &id, &line[..at], &tx).await {
                    return;
                }
            }
            if ended {
                if !pending.is_empty() {
                    let line = std::mem::take(&mut pending);
                    answer_line(&state, &caller, &broadcaster, &id, &line, &tx).await;
                }
                return;
            }
            if pending.len() > max_line {
                let _ = tx.send(error_line(&ApiError::PayloadTooLarge)).await;
                return;
            }
            match chunks.next().await {
                Some(Ok(chunk)) => pending.extend_from_slice(&chunk),
                Some(Err(_)) => return,
                None => ended = true,
            }
        }
    });
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|line| (Ok::<_, std::convert::Infallible>(line), rx))
    });
    ([(header::CONTENT_TYPE, NDJSON)], Body::from_stream(lines)).into_response()
}

/// Appends one NDJSON line and sends its answer; false when the request should end (a
/// refusal, or the producer gone).
async fn answer_line(
    state: &AppState,
    caller: &Caller,
    broadcaster: &EventBroadcaster,
    id: &StreamId,
    line: &[u8],
    tx: &tokio::sync::mpsc::Sender<Bytes>,
) -> bool {
    if line.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    let limits = &state.services.limits;
    let charged = limits
        .publish(&caller.name)
        .map_err(|e| ("publish_per_key_per_sec", e))
        .and_then(|()| {
            limits
                .publish_bytes(&caller.name, line.len())
                .map_err(|e| ("publish_bytes_per_key_per_sec", e))
        });
    let answer = match charged {
        Err((limit, e)) => {
            state.services.counters.limited("publish");
            Err(ApiError::RateLimited {
                retry_after_ms: e.retry_after_ms(),
                limit,
            })
        }
        Ok(()) => match crate::events::request::decode_json::<AppendBody>(line) {
            Err(e) => Err(ApiError::from(e)),
            Ok(body) => broadcaster
                .append_stream(id, &body.text)
                .await
                .map(|offset| (offset, offset + body.text.chars().count() as u64))
                .map_err(ApiError::from),
        },
    };
    match answer {
        Ok((offset, length)) => {
            let line = json!({"offset": offset, "length": length});
            tx.send(Bytes::from(format!("{line}\n"))).await.is_ok()
        }
        Err(e) => {
            let _ = tx.send(error_line(&e)).await;
            false
        }
    }
}

fn error_line(e: &ApiError) -> Bytes {
    Bytes::from(format!("{}\n", json!({"error": e.to_json()})))
}

/// `200` with what `stream.finished` says.
pub(super) async fn finish(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
    PublishBody(body): PublishBody<FinishBody>,
) -> Result<Response, ApiError> {
    let broadcaster = broadcaster(&state, &caller, query.tenant)?;
    let finished = broadcaster
        .finish_stream(&stream_id(&id)?, body.usage)
        .await?;
    Ok(Json(finished).into_response())
}

/// `200` with what `stream.failed` says.
pub(super) async fn fail(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
    PublishBody(body): PublishBody<FailBody>,
) -> Result<Response, ApiError> {
    let broadcaster = broadcaster(&state, &caller, query.tenant)?;
    let failed = broadcaster
        .fail_stream(&stream_id(&id)?, &body.error)
        .await?;
    Ok(Json(failed).into_response())
}

/// `200 {stream_id, room, kind, status, offset, length, text}`: the text from `offset`.
pub(super) async fn read(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Read>,
    Path(id): Path<String>,
    Query(query): Query<ReadQuery>,
) -> Result<Response, ApiError> {
    let tenant = tenant_for(&caller, query.tenant)?;
    let id = stream_id(&id)?;
    let snapshot = state
        .services
        .streams
        .read(&tenant, &id, query.offset)
        .await?;
    Ok(Json(json!({
        "stream_id": id,
        "room": snapshot.info.room,
        "kind": snapshot.info.kind,
        "status": snapshot.info.status,
        "offset": snapshot.offset,
        "length": snapshot.info.length,
        "text": snapshot.text,
    }))
    .into_response())
}
