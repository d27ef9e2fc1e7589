//! Yjs documents over HTTP, for backends (an AI agent editing a document people are
//! editing): `GET /api/v1/documents/{room}/{name}?tenant=` (scope `read`) answers the whole
//! document as one Yjs update (`Accept: application/octet-stream`) or as JSON;
//! `POST` (scope `publish`) applies a Yjs update (`Content-Type: application/octet-stream`)
//! or a small JSON edit, stores it and sends it to the document's editors on every node,
//! as an editor's update would be ([`crate::documents::Documents::update`]).

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use yrs::{Doc, Map, Text, Transact};

use super::{ApiCaller, ApiError, AppState, Publish, PublishKey, Read, body_bytes, tenant_for};
use crate::documents::{DocError, DocId};
use crate::errors::Message;
use crate::rooms::Tenant;

#[derive(Deserialize)]
pub(super) struct DocQuery {
    tenant: Option<Tenant>,
    /// Roots to read as `Y.Text`, comma-separated.
    #[serde(default)]
    text: Option<String>,
    /// Roots to read as `Y.Map`, comma-separated.
    #[serde(default)]
    map: Option<String>,
}

fn refused(template: Message, message: String) -> ApiError {
    ApiError::Refused {
        template,
        message,
        retry_after_ms: None,
    }
}

fn doc_id(tenant: Tenant, name: &str) -> Result<DocId, ApiError> {
    DocId::parse(tenant, name)
        .ok_or_else(|| refused(Message::InvalidDocument, Message::InvalidDocument.text()))
}

fn doc_error(e: DocError) -> ApiError {
    match e {
        DocError::InvalidUpdate => refused(Message::InvalidUpdate, Message::InvalidUpdate.text()),
        DocError::UpdateTooLarge { limit } => refused(
            Message::UpdateTooLarge,
            Message::UpdateTooLarge.render(&[("limit", &limit)]),
        ),
        DocError::DocumentTooLarge { limit } => refused(
            Message::DocumentTooLarge,
            Message::DocumentTooLarge.render(&[("limit", &limit)]),
        ),
        DocError::Unavailable(reason) => refused(
            Message::DocumentUnavailable,
            Message::DocumentUnavailable.render(&[("reason", &reason)]),
        ),
    }
}

fn wants_binary(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/octet-stream"))
}

fn list(names: &Option<String>) -> Vec<&str> {
    names
        .as_deref()
        .map(|n| {
            n.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// `GET /api/v1/documents/{room}/{name}`.
pub(super) async fn read(
    ApiCaller(caller, _): ApiCaller<Read>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DocQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = doc_id(tenant_for(&caller, query.tenant.clone())?, &name)?;
    let Some(update) = state
        .services
        .documents
        .read(&id)
        .await
        .map_err(doc_error)?
    else {
        return Err(refused(
            Message::DocumentNotFound,
            Message::DocumentNotFound.render(&[("name", &name)]),
        ));
    };
    if wants_binary(&headers) {
        return Ok(([(header::CONTENT_TYPE, "application/octet-stream")], update).into_response());
    }
    let roots = crate::documents::to_json(&update, &list(&query.text), &list(&query.map))
        .map_err(doc_error)?;
    Ok(Json(json!({ "name": id.path(), "tenant": id.tenant, "roots": roots })).into_response())
}

/// A JSON edit: text inserted into `Y.Text` roots, keys set in `Y.Map` roots.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Edit {
    #[serde(default)]
    text: std::collections::BTreeMap<String, TextEdit>,
    #[serde(default)]
    map: std::collections::BTreeMap<String, serde_json::Map<String, Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TextEdit {
    insert: String,
    /// Where, in UTF-16 code units as Yjs counts (clamped to the length); the end when
    /// left out.
    #[serde(default)]
    index: Option<u32>,
}

/// `POST /api/v1/documents/{room}/{name}`: `{ok, changed}`.
pub(super) async fn write(
    ApiCaller(caller, _): ApiCaller<Publish>,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(query): Query<DocQuery>,
    req: Request,
) -> Result<Response, ApiError> {
    let id = doc_id(tenant_for(&caller, query.tenant.clone())?, &name)?;
    let binary = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    let key = req.extensions().get::<PublishKey>().cloned();
    let bytes = body_bytes(req, &state).await?;
    if let Some(PublishKey(key)) = key
        && let Err(e) = state.services.limits.publish_bytes(&key, bytes.len())
    {
        state.services.counters.limited("publish_bytes");
        return Err(ApiError::RateLimited {
            retry_after_ms: e.retry_after_ms(),
            limit: "publish_bytes_per_key_per_sec",
        });
    }
    let edit = if binary {
        None
    } else {
        let edit: Edit = super::decode_json(&bytes)?;
        Some(edit)
    };
    let documents = &state.services.documents;
    let doc = documents.open(&id).await.map_err(doc_error)?;
    let changed = match edit {
        None => documents.update(&doc, &bytes).await,
        Some(edit) => documents.edit(&doc, |d| apply_edit(d, edit)).await,
    };
    documents.release(&doc).await;
    let changed = changed.map_err(doc_error)?;
    Ok(Json(json!({ "ok": true, "changed": changed })).into_response())
}

/// Makes `edit` on the server's copy; the update it made.
fn apply_edit(doc: &Doc, edit: Edit) -> Option<Vec<u8>> {
    let texts: Vec<_> = edit
        .text
        .into_iter()
        .map(|(root, e)| (doc.get_or_insert_text(root.as_str()), e))
        .collect();
    let maps: Vec<_> = edit
        .map
        .into_iter()
        .map(|(root, e)| (doc.get_or_insert_map(root.as_str()), e))
        .collect();
    let mut txn = doc.transact_mut();
    for (text, e) in texts {
        let len = text.len(&txn);
        let at = e.index.map_or(len, |i| i.min(len));
        text.insert(&mut txn, at, &e.insert);
    }
    for (map, entries) in maps {
        for (key, value) in entries {
            let any: yrs::Any = serde_json::from_value(value).unwrap_or(yrs::Any::Null);
            map.insert(&mut txn, key, any);
        }
    }
    let changed = txn.before_state() != txn.after_state() || !txn.delete_set().is_empty();
    changed.then(|| txn.encode_update_v1())
}
