//! A streamed answer (chat, legacy completions, the Responses API) passed
//! through as server-sent events, with its usage committed before the
//! client sees its end (`[DONE]`, or the Responses API's last event).

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures_util::StreamExt;
use gateway_client::{ClientStream, Endpoint, ResponseMeta};
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
    endpoint: Endpoint,
    span: tracing::Span,
) -> Result<(Response, ResponseMeta), ApiError> {
    let stream = s.client.send_stream(endpoint, a.request, &a.ctx).await?;
    let meta = stream.meta().clone();
    let mut response = Response::new(Body::empty());
    meta_headers(&mut response, &meta, false);
    let state = Passing {
        stream: Some(stream),
        app: s.clone(),
        key: a.key,
        span,
        typed: endpoint == Endpoint::Responses,
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
    /// Events named by their `type` (`event: response.output_text.delta`),
    /// and no `[DONE]`: the Responses API's framing.
    typed: bool,
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
        Some(Ok(data)) if st.typed => {
            let frame = match typed(&data) {
                Some(event) => {
                    if let Some(id) = event.made() {
                        let meta = stream.meta();
                        let now = st.app.now_ms();
                        st.app.pins.learn(id, &meta.provider, &meta.key, now).await;
                    }
                    format!("event: {}\ndata: {data}\n\n", event.kind)
                }
                None => format!("data: {data}\n\n"),
            };
            Some((Ok(bytes::Bytes::from(frame)), st))
        }
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
            let name = if st.typed { "event: error\n" } else { "" };
            Some((
                Ok(bytes::Bytes::from(format!("{name}data: {text}\n\n"))),
                st,
            ))
        }
        None => {
            // Saved before the client sees the end of the answer, whether it
            // ended well or with an upstream error after its first chunk.
            let ended = st.stream.take()?;
            crate::telemetry::answered(&st.span, 200, Some(ended.meta()));
            st.app.record_usage(st.key.as_deref(), ended.meta()).await;
            if st.typed {
                // The Responses API ends with its last event: nothing follows.
                return Some((Ok(bytes::Bytes::new()), st));
            }
            Some((Ok(bytes::Bytes::from_static(b"data: [DONE]\n\n")), st))
        }
    }
}

/// A Responses API event's `type`, and the id of the response it carries.
#[derive(serde::Deserialize)]
struct Typed {
    #[serde(rename = "type")]
    kind: String,
    response: Option<Made>,
}

#[derive(serde::Deserialize)]
struct Made {
    id: Option<String>,
}

impl Typed {
    /// The stateful id `response.created` announces.
    fn made(&self) -> Option<String> {
        let id = self.response.as_ref()?.id.as_deref()?;
        (self.kind == "response.created" && crate::pins::is_stateful(id)).then(|| id.to_owned())
    }
}

/// An event read without building the rest of it; `None` if it has no
/// `type`, or one that would not fit on an `event:` line.
fn typed(data: &str) -> Option<Typed> {
    let t: Typed = serde_json::from_str(data).ok()?;
    (!t.kind.is_empty() && !t.kind.contains(['\r', '\n'])).then_some(t)
}
