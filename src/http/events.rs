//! `POST /api/v1/events` (typed events) and `POST /api/v1/broadcast` (custom events).

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiCaller, ApiError, AppState, Publish, PublishBody, tenant_for};
use crate::auth::Caller;
use crate::broadcaster::{EventBroadcaster, Published};
use crate::events::request::{PublishBatch, PublishCustom, PublishEvent};
use crate::idempotency::Publisher;
use crate::rooms::Tenant;

/// The broadcaster for the tenant a caller asked for, if the caller may publish there,
/// publishing once per idempotency key when the request carries one.
fn broadcaster_for(
    state: &AppState,
    caller: &Caller,
    asked: Option<Tenant>,
    volatile: bool,
    key: Option<&str>,
) -> Result<EventBroadcaster, ApiError> {
    let mut broadcaster = state.broadcaster.with_tenant(tenant_for(caller, asked)?);
    if volatile {
        broadcaster = broadcaster.volatile();
    }
    let Some(key) = key else {
        return Ok(broadcaster);
    };
    // Keys are per API key: two callers never share an answer.
    Ok(broadcaster.with_idempotency_key(Publisher::ApiKey(&caller.name).scoped(key)))
}

/// The `Idempotency-Key` (or `X-GitHub-Delivery`) of a publish request.
fn request_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    idempotency_key(headers, &["idempotency-key", "x-github-delivery"])
}

/// The first of `names` present in `headers`, as an idempotency key: 1 to 255 visible ASCII
/// characters, else `400 invalid_idempotency_key`.
pub(super) fn idempotency_key<'h>(
    headers: &'h HeaderMap,
    names: &[&str],
) -> Result<Option<&'h str>, ApiError> {
    let Some(key) = names.iter().find_map(|name| headers.get(*name)) else {
        return Ok(None);
    };
    key.to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(Some)
        .ok_or(ApiError::InvalidIdempotencyKey)
}

/// `202` with the publish, marked `Idempotent-Replayed: true` when it is a stored answer.
pub(super) fn accepted(published: Published) -> Response {
    let replayed = published.replayed;
    let mut response = (StatusCode::ACCEPTED, Json(published)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

pub(super) async fn publish_event(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    headers: HeaderMap,
    PublishBody(mut body): PublishBody<PublishEvent>,
) -> Result<Response, ApiError> {
    let key = request_key(&headers)?;
    let broadcaster = broadcaster_for(&state, &caller, body.tenant.take(), body.volatile, key)?;
    let event = body.into_event()?;
    Ok(accepted(broadcaster.publish(event).await?))
}

/// Validates every event first (one bad event: nothing is published), then publishes them
/// in order. With `Idempotency-Key: K`, event `i` is published once per key `K#i`, so a
/// retry after a partial failure publishes only what is missing.
///
/// A batch costs the key's publish budget one request per event: the request took one,
/// the other events are taken at once (all or none) before anything is published. A batch
/// larger than the budget's burst could never pass: `422 batch_too_large`, like one over
/// `publish.max_batch_events`.
pub(super) async fn publish_batch(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    headers: HeaderMap,
    PublishBody(body): PublishBody<PublishBatch>,
) -> Result<Response, ApiError> {
    let max = state
        .services
        .limits
        .publish_burst()
        .map_or(state.services.config.publish.max_batch_events, |burst| {
            burst.min(state.services.config.publish.max_batch_events)
        });
    if body.events.is_empty() || body.events.len() > max {
        return Err(ApiError::BatchTooLarge(max));
    }
    let key = request_key(&headers)?;
    let mut ready = Vec::with_capacity(body.events.len());
    for (i, mut e) in body.events.into_iter().enumerate() {
        let in_batch = |e: ApiError| ApiError::InBatch(i, Box::new(e));
        let key = key.map(|k| format!("{k}#{i}"));
        let broadcaster =
            broadcaster_for(&state, &caller, e.tenant.take(), e.volatile, key.as_deref())
                .map_err(in_batch)?;
        let event = e.into_batch_event().map_err(|e| in_batch(e.into()))?;
        ready.push((broadcaster, event));
    }
    // Valid: the rest of the batch is charged now (an invalid one cost its request only).
    if let Err(e) = state
        .services
        .limits
        .publish_n(&caller.name, ready.len().saturating_sub(1))
    {
        state.services.counters.limited("publish");
        return Err(ApiError::RateLimited {
            retry_after_ms: e.retry_after_ms(),
            limit: "publish_per_key_per_sec",
        });
    }
    let mut results = Vec::with_capacity(ready.len());
    let mut failed: Option<(usize, ApiError)> = None;
    for (i, (broadcaster, event)) in ready.into_iter().enumerate() {
        if let Some((at, _)) = &failed {
            results.push(json!({"error": ApiError::Skipped(*at).to_json()}));
            continue;
        }
        match broadcaster.publish(event).await {
            Ok(published) => {
                let replayed = published.replayed;
                let mut answer = serde_json::to_value(published)
                    .map_err(|e| ApiError::Internal(e.to_string()))?;
                if replayed {
                    answer["replayed"] = true.into();
                }
                results.push(answer);
            }
            Err(e) => {
                let e = ApiError::from(e);
                results.push(json!({"error": e.to_json()}));
                failed = Some((i, e));
            }
        }
    }
    let status = failed.map_or(StatusCode::ACCEPTED, |(_, e)| e.status());
    Ok((status, Json(json!({"events": results}))).into_response())
}

pub(super) async fn publish_custom(
    State(state): State<AppState>,
    ApiCaller(caller, _): ApiCaller<Publish>,
    headers: HeaderMap,
    PublishBody(body): PublishBody<PublishCustom>,
) -> Result<Response, ApiError> {
    let key = request_key(&headers)?;
    let broadcaster = broadcaster_for(&state, &caller, body.tenant.clone(), body.volatile, key)?;
    let (name, rooms) = body.name_and_rooms()?;
    Ok(accepted(
        broadcaster.publish_custom(&name, rooms, &body.data).await?,
    ))
}
