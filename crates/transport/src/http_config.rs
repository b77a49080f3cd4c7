//! What the HTTP backends share: their configuration, the CA bundle reader
//! and the reading of a body as server-sent events.

use std::path::{Path, PathBuf};
use std::time::Duration;

use eventsource_stream::{EventStreamError, Eventsource};
use futures_util::{Stream, StreamExt};

use crate::error::{ErrorKind, TransportError};
use crate::transport::{ChatStream, DEFAULT_MAX_BODY, chat_stream};

/// How an HTTP backend ([`ReqwestTransport`](crate::ReqwestTransport) or
/// [`HyperTransport`](crate::HyperTransport)) is set up. There is
/// deliberately no option to switch certificate verification off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Time allowed to connect. Default 10 s.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// The largest body read. Default 16 MiB.
    pub max_body_bytes: usize,
    /// A PEM bundle of extra roots to trust besides Mozilla's (e.g. a corporate CA).
    pub extra_ca_file: Option<PathBuf>,
    /// Use `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` as reqwest does. Default
    /// true. The reqwest backend only: the hyper backend never uses a proxy.
    pub use_env_proxy: bool,
    /// The `User-Agent`.
    pub user_agent: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            max_body_bytes: DEFAULT_MAX_BODY,
            extra_ca_file: None,
            use_env_proxy: true,
            user_agent: concat!("keypool/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Reads an extra CA bundle, with an error that names the file.
pub(crate) fn read_ca_bundle(path: &Path) -> Result<Vec<u8>, TransportError> {
    std::fs::read(path).map_err(|e| {
        TransportError::new(
            ErrorKind::Config,
            format!("cannot read CA bundle {}: {e}", path.display()),
        )
    })
}

/// A 2xx streamed body, as chat events: `body_error` turns the backend's
/// read errors into transport errors; `idle` and `max_bytes` are
/// [`chat_stream`]'s.
pub(crate) fn sse_chat_stream<S, B, E>(
    body: S,
    body_error: fn(E) -> TransportError,
    idle: Duration,
    max_bytes: usize,
) -> ChatStream
where
    S: Stream<Item = Result<B, E>> + Send + 'static,
    B: AsRef<[u8]> + Send + 'static,
    E: Send + 'static,
{
    let raw = body.eventsource().map(move |event| match event {
        Ok(e) => Ok(e.data),
        Err(EventStreamError::Transport(e)) => Err(body_error(e)),
        Err(_) => Err(TransportError::new(
            ErrorKind::Stream,
            "upstream sent a malformed event stream",
        )),
    });
    chat_stream(Box::pin(raw), idle, max_bytes)
}
