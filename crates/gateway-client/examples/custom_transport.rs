//! Plugging in your own transport: anything that implements `Transport`.
//! This one answers locally and counts the requests it sees; a real one
//! might add request signing, a company proxy, or a different HTTP stack.
//!
//! `cargo run -p gateway-client --example custom_transport`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gateway_client::{ApiRequest, Client, RequestContext};
use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
use transport::{Answer, Request, StreamStart, Transport, TransportError};

#[derive(Debug, Default)]
struct Echo {
    seen: AtomicU64,
}

#[async_trait::async_trait]
impl Transport for Echo {
    async fn send(&self, request: Request) -> Result<Answer, TransportError> {
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        // The secret is only for the Authorization header; never print it.
        println!(
            "request #{n} to {} with key {}",
            request.url(),
            request.secret
        );
        let body = serde_json::json!({
            "choices": [{"message": {"role": "assistant", "content": format!("echo: {}", request.json().pointer("/messages/0/content").unwrap_or(&serde_json::Value::Null))}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 3}
        });
        Ok(Answer {
            status: 200,
            headers: http::HeaderMap::new(),
            body: serde_json::to_vec(&body).unwrap_or_default().into(),
        })
    }

    async fn send_stream(&self, request: Request) -> Result<StreamStart, TransportError> {
        Ok(StreamStart::Answered(self.send(request).await?))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pool = KeyPool::new(PoolConfig::default())?;
    pool.add(
        NewKey::new("only", "sk-echo-0123456789abcdef"),
        Timestamp::from_system_time(std::time::SystemTime::now()),
    )?;
    let echo = Arc::new(Echo::default());
    let client = Client::builder()
        .provider("local", "http://localhost/v1", 0, pool)
        .transport(echo.clone())
        .build()?;
    for word in ["one", "two"] {
        let a = client
            .chat_completion(
                ApiRequest::chat("gpt-4o-mini", &[("user", word)]),
                &RequestContext::default(),
            )
            .await?;
        println!(
            "{}",
            a.body()
                .pointer("/choices/0/message/content")
                .unwrap_or(&serde_json::Value::Null)
        );
    }
    println!(
        "the transport saw {} requests",
        echo.seen.load(Ordering::Relaxed)
    );
    Ok(())
}
