//! The reqwest backend: one shared client, rustls with Mozilla's roots.

use http::header::{ACCEPT, CONTENT_TYPE};

use crate::classify::Answer;
use crate::error::{ErrorKind, TransportError};
use crate::http_config::{HttpConfig, read_ca_bundle, sse_chat_stream};
use crate::raw::{RawAnswer, RawRequest, idle_limited};
use crate::transport::{Request, StreamStart, Transport};

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
    pub fn new(config: &HttpConfig) -> Result<Self, TransportError> {
        let mut roots: Vec<reqwest::Certificate> = webpki_root_certs::TLS_SERVER_ROOT_CERTS
            .iter()
            .filter_map(|c| reqwest::Certificate::from_der(c.as_ref()).ok())
            .collect();
        if let Some(path) = &config.extra_ca_file {
            let pem = read_ca_bundle(path)?;
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
        body: bytes::Bytes,
    ) -> Result<reqwest::RequestBuilder, TransportError> {
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
            .build(&request, request.body_bytes())?
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
            .build(&request, body)?
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
        let events = sse_chat_stream(
            response.bytes_stream(),
            TransportError::from,
            request.timeout,
            self.max_body,
        );
        Ok(StreamStart::Events {
            status,
            headers,
            events,
        })
    }

    async fn send_raw(&self, request: RawRequest) -> Result<RawAnswer, TransportError> {
        let mut rb = self
            .client
            .request(request.method.clone(), request.url())
            .body(request.body.clone());
        for (name, value) in &request.headers {
            rb = rb.header(name, value);
        }
        let rb = rb.bearer_auth(request.secret.expose());
        let response = tokio::time::timeout(request.timeout, rb.send())
            .await
            .map_err(|_| TransportError::new(ErrorKind::Timeout, "upstream timed out"))??;
        let (status, headers) = (response.status().as_u16(), response.headers().clone());
        let body = idle_limited(
            response.bytes_stream(),
            request.timeout,
            TransportError::from,
        );
        Ok(RawAnswer {
            status,
            headers,
            body,
        })
    }
}
