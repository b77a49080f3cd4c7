//! The reqwest backend: one shared client, rustls with Mozilla's roots.

use std::path::PathBuf;
use std::time::Duration;

use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http::header::{ACCEPT, CONTENT_TYPE};

use crate::classify::Answer;
use crate::error::{ErrorKind, TransportError};
use crate::transport::{DEFAULT_MAX_BODY, Request, StreamStart, Transport, chat_stream};

/// How the reqwest backend is set up. There is deliberately no option to
/// switch certificate verification off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReqwestConfig {
    /// Time allowed to connect. Default 10 s.
    pub connect_timeout: Duration,
    /// Idle pooled connections are closed after this. Default 90 s.
    pub pool_idle_timeout: Duration,
    /// The largest body read. Default 16 MiB.
    pub max_body_bytes: usize,
    /// A PEM bundle of extra roots to trust besides Mozilla's (e.g. a corporate CA).
    pub extra_ca_file: Option<PathBuf>,
    /// Use `HTTP_PROXY`, `HTTPS_PROXY` and `NO_PROXY` as reqwest does. Default true.
    pub use_env_proxy: bool,
    /// The `User-Agent`.
    pub user_agent: String,
}

impl Default for ReqwestConfig {
    fn default() -> Self {
        ReqwestConfig {
            connect_timeout: Duration::from_secs(10),
            pool_idle_timeout: Duration::from_secs(90),
            max_body_bytes: DEFAULT_MAX_BODY,
            extra_ca_file: None,
            use_env_proxy: true,
            user_agent: concat!("keypool/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Sends requests with one shared [`reqwest::Client`]: connection pooling,
/// keep-alive, HTTP/2 where the server offers it, rustls verifying against
/// Mozilla's roots (plus an optional extra bundle). Cheap to clone.
#[derive(Clone, Debug)]
pub struct ReqwestTransport {
    client: reqwest::Client,
    max_body: usize,
}

impl ReqwestTransport {
    /// Builds the client. Fails if the extra CA bundle cannot be read or parsed.
    pub fn new(config: &ReqwestConfig) -> Result<Self, TransportError> {
        let mut roots: Vec<reqwest::Certificate> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok())
            .collect();
        if let Some(path) = &config.extra_ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                TransportError::new(
                    ErrorKind::Config,
                    format!("cannot read CA bundle {}: {e}", path.display()),
                )
            })?;
            let extra = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                TransportError::new(
                    ErrorKind::Config,
                    format!("CA bundle {} is not PEM certificates", path.display()),
                )
                .with_source(e.without_url())
            })?;
            if extra.is_empty() {
                return Err(TransportError::new(
                    ErrorKind::Config,
                    format!("CA bundle {} holds no certificate", path.display()),
                ));
            }
            roots.extend(extra);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(config.pool_idle_timeout)
            .user_agent(config.user_agent.clone())
            .tls_certs_only(roots);
        if !config.use_env_proxy {
            builder = builder.no_proxy();
        }
        let client = builder.build().map_err(|e| {
            TransportError::new(ErrorKind::Config, "cannot build the HTTP client")
                .with_source(e.without_url())
        })?;
        Ok(ReqwestTransport {
            client,
            max_body: config.max_body_bytes,
        })
    }

    fn build(
        &self,
        request: &Request,
        body: &serde_json::Value,
    ) -> Result<reqwest::RequestBuilder, TransportError> {
        let body = serde_json::to_vec(body).map_err(|_| {
            TransportError::new(ErrorKind::Request, "request body is not serializable")
        })?;
        let mut rb = self
            .client
            .post(request.url())
            .bearer_auth(request.secret.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        for (name, value) in &request.headers {
            rb = rb.header(name, value);
        }
        Ok(rb)
    }

    /// Reads a body up to the limit, refusing early on a larger Content-Length.
    async fn read_body(
        &self,
        mut response: reqwest::Response,
    ) -> Result<bytes::Bytes, TransportError> {
        let too_large = || {
            TransportError::new(
                ErrorKind::BodyTooLarge,
                format!("upstream answer is larger than {} bytes", self.max_body),
            )
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_body as u64)
        {
            return Err(too_large());
        }
        let mut body = bytes::BytesMut::new();
        while let Some(chunk) = response.chunk().await? {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body.freeze())
    }
}

#[async_trait::async_trait]
impl Transport for ReqwestTransport {
    async fn send(&self, request: Request) -> Result<Answer, TransportError> {
        let rb = self
            .build(&request, &request.body)?
            .timeout(request.timeout);
        let response = rb.send().await?;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = self.read_body(response).await?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }

    async fn send_stream(&self, request: Request) -> Result<StreamStart, TransportError> {
        let body = request.streaming_body();
        let rb = self
            .build(&request, &body)?
            .header(ACCEPT, "text/event-stream");
        let response = tokio::time::timeout(request.timeout, rb.send())
            .await
            .map_err(|_| TransportError::new(ErrorKind::Timeout, "upstream timed out"))??;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        if !response.status().is_success() {
            let body = tokio::time::timeout(request.timeout, self.read_body(response))
                .await
                .map_err(|_| TransportError::new(ErrorKind::Timeout, "upstream timed out"))??;
            return Ok(StreamStart::Answered(Answer {
                status,
                headers,
                body,
            }));
        }
        let raw = response
            .bytes_stream()
            .eventsource()
            .map(|event| match event {
                Ok(e) => Ok(e.data),
                Err(eventsource_stream::EventStreamError::Transport(e)) => {
                    Err(TransportError::from(e))
                }
                Err(_) => Err(TransportError::new(
                    ErrorKind::Stream,
                    "upstream sent a malformed event stream",
                )),
            });
        let events = chat_stream(Box::pin(raw), request.timeout, self.max_body);
        Ok(StreamStart::Events {
            status,
            headers,
            events,
        })
    }
}
