//! The hyper backend: hyper-util's pooled client over rustls, without
//! reqwest's per-request layers (URL re-parsing, redirect and retry
//! policies, extensions), which cost the gateway about a third of its
//! allocations per proxied request.

use std::sync::Arc;

use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, USER_AGENT};
use http::{HeaderValue, Method, Uri};
use http_body_util::{BodyDataStream, BodyExt, Full, Limited};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::classify::Answer;
use crate::error::{ErrorKind, TransportError};
use crate::http_config::{HttpConfig, read_ca_bundle, sse_chat_stream};
use crate::raw::{RawAnswer, RawRequest, idle_limited};
use crate::transport::{Request, StreamStart, Transport};

type Connector = HttpsConnector<HttpConnector>;

/// Sends requests with one pooled hyper client: keep-alive, HTTP/2 where the
/// server offers it (ALPN), rustls verifying against Mozilla's roots (plus an
/// optional extra bundle). Cheap to clone.
///
/// It never uses a proxy: [`HttpConfig::use_env_proxy`] is ignored. Behind
/// a proxy, use [`ReqwestTransport`](crate::ReqwestTransport).
#[derive(Clone)]
pub struct HyperTransport {
    client: Client<Connector, Full<Bytes>>,
    user_agent: HeaderValue,
    max_body: usize,
}

impl std::fmt::Debug for HyperTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HyperTransport")
            .field("max_body", &self.max_body)
            .finish_non_exhaustive()
    }
}

/// The upstream's URI, checked (no credentials in it), and the key's
/// `Authorization` header, marked sensitive.
fn target(url: &str, secret: &keypool_core::Secret) -> Result<(Uri, HeaderValue), TransportError> {
    let invalid = |what: &str| TransportError::new(ErrorKind::Request, what.to_owned());
    let uri: Uri = url.parse().map_err(|_| invalid("invalid upstream URL"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(invalid("the upstream URL must not hold credentials"));
    }
    let mut auth = HeaderValue::try_from(format!("Bearer {}", secret.expose()))
        .map_err(|_| invalid("the key is not a valid header value"))?;
    auth.set_sensitive(true);
    Ok((uri, auth))
}

fn config_error(message: String) -> TransportError {
    TransportError::new(ErrorKind::Config, message)
}

/// The TLS settings every connection the gateway makes uses: the webpki
/// roots, plus the PEM certificates of `extra_ca_file` when given, with
/// certificate verification always on. Fails if the bundle cannot be read
/// or holds no usable certificate.
pub fn tls_client_config(
    extra_ca_file: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
    if let Some(path) = extra_ca_file {
        let pem = read_ca_bundle(path)?;
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|_| {
                config_error(format!(
                    "CA bundle {} is not PEM certificates",
                    path.display()
                ))
            })?;
        if certs.is_empty() {
            return Err(config_error(format!(
                "CA bundle {} holds no certificate",
                path.display()
            )));
        }
        let (_, ignored) = roots.add_parsable_certificates(certs);
        if ignored > 0 {
            return Err(config_error(format!(
                "CA bundle {} holds {ignored} certificate(s) that cannot be parsed",
                path.display()
            )));
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls: rustls::ClientConfig = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TransportError::new(ErrorKind::Config, "cannot set up TLS").with_source(e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tls)
}

impl HyperTransport {
    /// Builds the client. Fails if the extra CA bundle cannot be read or
    /// parsed, or the user agent is not a valid header value.
    pub fn new(config: &HttpConfig) -> Result<Self, TransportError> {
        let tls = tls_client_config(config.extra_ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.connect_timeout));
        let https = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_timer(TokioTimer::new())
            .build(https);
        let user_agent = HeaderValue::from_str(&config.user_agent)
            .map_err(|_| config_error("the user agent is not a valid header value".into()))?;
        Ok(HyperTransport {
            client,
            user_agent,
            max_body: config.max_body_bytes,
        })
    }

    fn build(
        &self,
        request: &Request,
        body: Bytes,
        stream: bool,
    ) -> Result<http::Request<Full<Bytes>>, TransportError> {
        let (uri, auth) = target(&request.url(), &request.secret)?;
        let mut r = http::Request::new(Full::new(body));
        *r.method_mut() = Method::POST;
        *r.uri_mut() = uri;
        let headers = r.headers_mut();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, self.user_agent.clone());
        if stream {
            headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        }
        for (name, value) in &request.headers {
            headers.append(name, value.clone());
        }
        Ok(r)
    }

    /// A request passed on as the client made it, with the key's authorization.
    fn build_raw(
        &self,
        request: &RawRequest,
    ) -> Result<http::Request<Full<Bytes>>, TransportError> {
        let (uri, auth) = target(&request.url(), &request.secret)?;
        let mut r = http::Request::new(Full::new(request.body.clone()));
        *r.method_mut() = request.method.clone();
        *r.uri_mut() = uri;
        let headers = r.headers_mut();
        for (name, value) in &request.headers {
            headers.append(name, value.clone());
        }
        headers.insert(AUTHORIZATION, auth);
        headers.insert(USER_AGENT, self.user_agent.clone());
        Ok(r)
    }

    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
    ) -> Result<http::Response<hyper::body::Incoming>, TransportError> {
        // Either way the network's fault, never the key's: the connection
        // could not be made, or failed while the request was under way.
        self.client.request(request).await.map_err(|e| {
            let message = if e.is_connect() {
                "could not connect to the upstream"
            } else {
                "the upstream connection failed"
            };
            TransportError::new(ErrorKind::Connect, message).with_source(e)
        })
    }

    /// Reads a body up to the limit, refusing early on a larger Content-Length.
    async fn read_body(
        &self,
        headers: &http::HeaderMap,
        body: hyper::body::Incoming,
    ) -> Result<Bytes, TransportError> {
        let too_large = || {
            TransportError::new(
                ErrorKind::BodyTooLarge,
                format!("upstream answer is larger than {} bytes", self.max_body),
            )
        };
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(too_large());
        }
        match Limited::new(body, self.max_body).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
            Err(e) => Err(TransportError::new(
                ErrorKind::Body,
                "could not read the upstream's answer",
            )
            .with_boxed_source(e)),
        }
    }
}

#[async_trait::async_trait]
impl Transport for HyperTransport {
    async fn send(&self, request: Request) -> Result<Answer, TransportError> {
        let http_request = self.build(&request, request.body_bytes(), false)?;
        let work = async {
            let (parts, body) = self.exchange(http_request).await?.into_parts();
            let body = self.read_body(&parts.headers, body).await?;
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(request.timeout, work)
            .await
            .map_err(|_| TransportError::new(ErrorKind::Timeout, "upstream timed out"))?
    }

    async fn send_stream(&self, request: Request) -> Result<StreamStart, TransportError> {
        let timed_out = || TransportError::new(ErrorKind::Timeout, "upstream timed out");
        let http_request = self.build(&request, request.streaming_body(), true)?;
        let response = tokio::time::timeout(request.timeout, self.exchange(http_request))
            .await
            .map_err(|_| timed_out())??;
        let (parts, body) = response.into_parts();
        let status = parts.status.as_u16();
        if !parts.status.is_success() {
            let body = tokio::time::timeout(request.timeout, self.read_body(&parts.headers, body))
                .await
                .map_err(|_| timed_out())??;
            return Ok(StreamStart::Answered(Answer {
                status,
                headers: parts.headers,
                body,
            }));
        }
        let events = sse_chat_stream(
            BodyDataStream::new(body),
            |e| {
                TransportError::new(ErrorKind::Body, "could not read the upstream's answer")
                    .with_source(e)
            },
            request.timeout,
            self.max_body,
        );
        Ok(StreamStart::Events {
            status,
            headers: parts.headers,
            events,
        })
    }

    async fn send_raw(&self, request: RawRequest) -> Result<RawAnswer, TransportError> {
        let http_request = self.build_raw(&request)?;
        let response = tokio::time::timeout(request.timeout, self.exchange(http_request))
            .await
            .map_err(|_| TransportError::new(ErrorKind::Timeout, "upstream timed out"))??;
        let (parts, body) = response.into_parts();
        let body = idle_limited(BodyDataStream::new(body), request.timeout, |e| {
            TransportError::new(ErrorKind::Body, "could not read the upstream's answer")
                .with_source(e)
        });
        Ok(RawAnswer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}
