//! A real TLS upstream with a self-signed certificate made for the test:
//! refused without the extra CA, spoken to with it. Certificate
//! verification cannot be switched off, so this is the only way in.

use std::sync::Arc;
use std::time::Duration;

use keypool_core::Secret;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use transport::{HttpConfig, Request, Transport, TransportError};

/// A TLS server on a free loopback port that answers every request with a
/// small chat completion; its certificate's PEM.
async fn tls_upstream() -> (String, String) {
    let cert =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                answer_once(&mut tls).await;
            });
        }
    });
    (format!("https://{addr}/v1"), pem)
}

/// Reads one HTTP/1.1 request and answers it.
async fn answer_once(s: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin)) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let Ok(n) = s.read(&mut buf).await else {
            return;
        };
        if n == 0 {
            return;
        }
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                })
                .unwrap_or(0);
            if got.len() >= head_end + 4 + length {
                break;
            }
        }
    }
    let body = r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(answer.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// A backend by name, built from a config (or why it could not be).
type Built = (&'static str, Result<Arc<dyn Transport>, TransportError>);

fn backends(config: &HttpConfig) -> Vec<Built> {
    vec![
        #[cfg(feature = "hyper")]
        (
            "hyper",
            transport::HyperTransport::new(config).map(|t| Arc::new(t) as Arc<dyn Transport>),
        ),
        #[cfg(feature = "reqwest")]
        (
            "reqwest",
            transport::ReqwestTransport::new(config).map(|t| Arc::new(t) as Arc<dyn Transport>),
        ),
    ]
}

fn chat(base_url: &str) -> Request {
    let mut r = Request::with_json(
        base_url.to_owned(),
        "/chat/completions",
        Secret::new("sk-test-0123456789abcdefTLS"),
        &serde_json::json!({"model": "gpt-4.1", "messages": []}),
    )
    .unwrap();
    r.timeout = Duration::from_secs(5);
    r
}

#[tokio::test]
async fn a_self_signed_upstream_is_refused_without_its_ca_and_spoken_to_with_it() {
    let (base_url, pem) = tls_upstream().await;
    let dir = std::env::temp_dir().join(format!("transport-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, pem).unwrap();
    let plain = HttpConfig {
        use_env_proxy: false,
        ..HttpConfig::default()
    };
    for (name, t) in backends(&plain) {
        let e = t.unwrap().send(chat(&base_url)).await.unwrap_err();
        assert!(
            e.is_connect(),
            "{name}: an untrusted certificate must be refused: {e:?}"
        );
    }
    let trusting = HttpConfig {
        extra_ca_file: Some(ca),
        ..plain
    };
    for (name, t) in backends(&trusting) {
        let answer = t.unwrap().send(chat(&base_url)).await;
        let answer = answer.unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(answer.status, 200, "{name}");
        assert!(
            String::from_utf8_lossy(&answer.body).contains("usage"),
            "{name}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
