//! AI streams over HTTP: `POST /api/v1/streams` (create), `POST /api/v1/streams/{id}/append`,
//! `…/finish`, `…/fail` (scope `publish`, each request one from the key's publish budget)
//! and `GET /api/v1/streams/{id}?offset=&tenant=` (scope `read`). The stream lives in the
//! tenant the request acts in (`tenant` in the create body, `?tenant=` afterwards; a key
//! bound to a tenant needs neither). What they do is [`EventBroadcaster`]'s, as for a
//! stream written from Rust.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
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
/// after it, in code points.
pub(super) async fn append(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    Path(id): Path<String>,
    Query(query): Query<TenantQuery>,
    PublishBody(body): PublishBody<AppendBody>,
) -> Result<Response, ApiError> {
    let broadcaster = broadcaster(&state, &caller, query.tenant)?;
    let id = stream_id(&id)?;
    let offset = broadcaster.append_stream(&id, &body.text).await?;
    let length = offset + body.text.chars().count() as u64;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"offset": offset, "length": length})),
    )
        .into_response())
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
