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
/// its events; the request's `span` lasts as long as the stream and gets
/// its final usage.
pub(super) async fn serve(
    s: &Arc<AppState>,
    a: Admitted,
    span: tracing::Span,
) -> Result<(Response, ResponseMeta), ApiError> {
    let stream = s.client.chat_completion_stream(a.request, &a.ctx).await?;
    let meta = stream.meta().clone();
    let mut response = Response::new(Body::empty());
    meta_headers(&mut response, &meta, false);
    let state = Passing {
        stream: Some(stream),
        app: s.clone(),
        key: a.key,
        span,
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

/// A stream being passed through; usage is saved when it ends, or, if the
/// client goes away first (the body is dropped), for what was delivered.
struct Passing {
    stream: Option<ClientStream>,
    app: Arc<AppState>,
    key: Option<Arc<ClientKey>>,
    /// The request's span, ended with the stream.
    span: tracing::Span,
}

impl Drop for Passing {
    fn drop(&mut self) {
        let Some(mut stream) = self.stream.take() else {
            return;
        };
        let Some(meta) = stream.cut_short().cloned() else {
            return;
        };
        crate::telemetry::answered(&self.span, 200, Some(&meta));
        // The client went away mid-stream: the upstream billed what it
        // generated, so it is recorded all the same (off the dropped task).
        let (app, key) = (self.app.clone(), self.key.clone());
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(async move { app.record_usage(key.as_deref(), &meta).await })),
            Err(_) => tracing::error!("a stream cut short could not be recorded: no runtime"),
        }
    }
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
            // Saved before the client sees the end of the answer, whether it
            // ended well or with an upstream error after its first chunk.
            let ended = st.stream.take()?;
            crate::telemetry::answered(&st.span, 200, Some(ended.meta()));
            st.app.record_usage(st.key.as_deref(), ended.meta()).await;
            Some((Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")), st))
        }
    }
}
