//! What the simulator keeps per key, as an upstream account does: stored
//! responses and uploaded files, which only the key that made them can
//! read, cancel or delete (another key gets a 404, as it would upstream).

use std::sync::{Arc, PoisonError};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Sim, error, misbehave, token};

/// Something a key made.
#[derive(Clone, Debug)]
pub(super) struct Owned {
    /// The secret of the key that made it.
    secret: String,
    /// Its object (a response, a file's metadata).
    pub(super) object: Value,
    /// A response's input items, a file's content.
    content: bytes::Bytes,
}

/// Records that the request's key made `object` (with `content`).
pub(super) fn keep(sim: &Sim, headers: &HeaderMap, object: &Value, content: bytes::Bytes) {
    let (Some(id), Some(secret)) = (object.get("id").and_then(Value::as_str), token(headers))
    else {
        return;
    };
    let owned = Owned {
        secret: secret.to_owned(),
        object: object.clone(),
        content,
    };
    sim.owned
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(id.to_owned(), owned);
}

/// What the request's key made under `id`, or the 404 another key gets.
pub(super) fn mine(sim: &Sim, headers: &HeaderMap, id: &str) -> Result<Owned, Box<Response>> {
    if let Some(r) = misbehave(sim, headers) {
        return Err(Box::new(r));
    }
    let owned = sim.owned.lock().unwrap_or_else(PoisonError::into_inner);
    owned
        .get(id)
        .filter(|o| Some(o.secret.as_str()) == token(headers))
        .cloned()
        .ok_or_else(|| {
            Box::new(error(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "not_found",
                &format!("No object with id '{id}' found."),
            ))
        })
}

/// `GET /v1/responses/{id}`.
pub(super) async fn get_response(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match mine(&sim, &headers, &id) {
        Ok(o) => axum::Json(o.object).into_response(),
        Err(r) => *r,
    }
}

/// `POST /v1/responses/{id}/cancel`: a finished response stays as it is.
pub(super) async fn cancel_response(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    get_response(State(sim), headers, Path(id)).await
}

/// `GET /v1/responses/{id}/input_items`.
pub(super) async fn input_items(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match mine(&sim, &headers, &id) {
        Ok(o) => {
            let items: Value = serde_json::from_slice(&o.content).unwrap_or_else(|_| json!([]));
            axum::Json(json!({"object": "list", "data": items, "has_more": false})).into_response()
        }
        Err(r) => *r,
    }
}

/// `DELETE /v1/responses/{id}` and `DELETE /v1/files/{id}`.
pub(super) async fn delete(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let o = match mine(&sim, &headers, &id) {
        Ok(o) => o,
        Err(r) => return *r,
    };
    sim.owned
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .remove(&id);
    let object = o.object.get("object").cloned().unwrap_or(Value::Null);
    axum::Json(json!({"id": id, "object": object, "deleted": true})).into_response()
}

/// `GET /v1/files/{id}`.
pub(super) async fn get_file(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    get_response(State(sim), headers, Path(id)).await
}

/// `GET /v1/files/{id}/content`.
pub(super) async fn file_content(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    match mine(&sim, &headers, &id) {
        Ok(o) => (
            [(header::CONTENT_TYPE, "application/octet-stream")],
            o.content,
        )
            .into_response(),
        Err(r) => *r,
    }
}

/// `POST /v1/files`: a `multipart/form-data` body with a `file` and a
/// `purpose`; one cut short or without them is a 400.
pub(super) async fn upload_file(
    State(sim): State<Arc<Sim>>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    if let Some(r) = misbehave(&sim, &headers) {
        return r;
    }
    let boundary = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|t| t.split("boundary=").nth(1))
        .map(|b| b.trim_matches('"').to_owned());
    let form = boundary.and_then(|b| parts(&body, &b));
    let file = form
        .as_ref()
        .and_then(|f| f.iter().find(|p| p.name == "file"));
    let purpose = form
        .as_ref()
        .and_then(|f| f.iter().find(|p| p.name == "purpose"));
    let (Some(file), Some(purpose)) = (file, purpose) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_multipart",
            "The body must be multipart/form-data with a file and a purpose.",
        );
    };
    let n = sim
        .owned
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len();
    let object = json!({
        "id": format!("file-sim{n:06}"), "object": "file", "bytes": file.data.len(),
        "created_at": 1_795_322_452, "filename": file.filename,
        "purpose": String::from_utf8_lossy(&purpose.data), "status": "processed",
    });
    keep(&sim, &headers, &object, file.data.clone());
    // What an upstream says of the account behind the key, as OpenAI does.
    let account = [
        ("openai-organization", "org-sim"),
        ("x-ratelimit-remaining-requests", "4999"),
        ("set-cookie", "__cf_bm=sim; path=/"),
    ];
    let mut r = axum::Json(object).into_response();
    for (name, value) in account {
        r.headers_mut()
            .insert(name, HeaderValue::from_static(value));
    }
    r
}

/// One part of a multipart form.
struct Part {
    name: String,
    filename: Option<String>,
    data: bytes::Bytes,
}

/// The parts of a multipart body; `None` when it is cut short (no closing
/// boundary) or a part has no headers.
fn parts(body: &bytes::Bytes, boundary: &str) -> Option<Vec<Part>> {
    let delimiter = format!("--{boundary}");
    let text = body.as_ref();
    let closing = format!("{delimiter}--");
    find(text, closing.as_bytes())?;
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = find(rest, delimiter.as_bytes()) {
        rest = rest.get(start + delimiter.len()..)?;
        if rest.starts_with(b"--") {
            return Some(out);
        }
        let end = find(rest, delimiter.as_bytes())?;
        let part = rest.get(..end)?;
        let split = find(part, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(part.get(..split)?);
        let data = part.get(split + 4..)?;
        let data = data.strip_suffix(b"\r\n").unwrap_or(data);
        let field = |k: &str| {
            head.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .map(str::to_owned)
        };
        out.push(Part {
            name: field("name")?,
            filename: field("filename"),
            data: bytes::Bytes::copy_from_slice(data),
        });
    }
    Some(out)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
