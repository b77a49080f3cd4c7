//! A streamed chat completion passed through as server-sent events, with
//! its usage committed before the client sees `[DONE]`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::StreamExt;
use gateway_client::{ClientStream, ResponseMeta};
use serde::Serialize;

use super::admission::Admitted;
use super::error::ApiError;
use super::meta::meta_headers;
use crate::auth::ClientKey;
use crate::state::AppState;

/// Starts the stream (failing over until its first chunk) and answers with
/// its events.
pub(super) async fn serve(
    s: &Arc<AppState>,
    a: Admitted,
) -> Result<(Response, ResponseMeta), ApiError> {
    let stream = s.client.chat_completion_stream(a.request, &a.ctx).await?;
    let meta = stream.meta().clone();
    let mut response = Response::new(Body::empty());
    meta_headers(&mut response, &meta, false);
    let state = Passing {
        stream: Some(stream),
        failed: false,
        app: s.clone(),
        key: a.key,
    };
    *response.body_mut() = Body::from_stream(futures_util::stream::unfold(state, next_chunk));
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok((response, meta))
}

/// A stream being passed through; usage is saved when it ends.
struct Passing {
    stream: Option<ClientStream>,
    failed: bool,
    app: Arc<AppState>,
    key: Option<Arc<ClientKey>>,
}

#[derive(Serialize)]
struct StreamError {
    error: StreamErrorInner,
}

#[derive(Serialize)]
struct StreamErrorInner {
    message: String,
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
}

async fn next_chunk(
    mut st: Passing,
) -> Option<(Result<bytes::Bytes, std::convert::Infallible>, Passing)> {
    let stream = st.stream.as_mut()?;
    match stream.next().await {
        Some(Ok(data)) => Some((Ok(bytes::Bytes::from(format!("data: {data}\n\n"))), st)),
        Some(Err(e)) => {
            st.failed = true;
            let err = StreamError {
                error: StreamErrorInner {
                    message: e.to_string(),
                    kind: "api_error",
                    code: "stream_failed",
                },
            };
            let text = serde_json::to_string(&err).unwrap_or_default();
            Some((Ok(bytes::Bytes::from(format!("data: {text}\n\n"))), st))
        }
        None => {
            let ended = st.stream.take()?;
            if !st.failed {
                // Saved before the client sees the end of the answer.
                st.app.record_usage(st.key.as_deref(), ended.meta()).await;
            }
            Some((Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")), st))
        }
    }
}
