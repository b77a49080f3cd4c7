//! A minimal client: two keys on one provider, a rate limit, a failover.
//! Runs without network or real keys, on the mock transport.
//!
//! `cargo run -p gateway-client --example minimal`

use std::sync::Arc;

use gateway_client::{ApiRequest, Client, RequestContext};
use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
use transport::{MockReply, MockTransport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut pool = KeyPool::new(PoolConfig::default())?;
    let now = Timestamp::from_system_time(std::time::SystemTime::now());
    pool.add(NewKey::new("prod-1", "sk-prod-aaaaaaaaaaaaaaaa"), now)?;
    pool.add(NewKey::new("prod-2", "sk-prod-bbbbbbbbbbbbbbbb"), now)?;

    // In production: Arc::new(ReqwestTransport::new(&HttpConfig::default())?).
    let upstream = MockTransport::new();
    upstream.script(
        "sk-prod-aaaaaaaaaaaaaaaa",
        [
            MockReply::error(429, "requests", "rate_limit_exceeded", "slow down")
                .header("retry-after", "30"),
        ],
    );
    upstream.fallback(|_| MockReply::chat("สวัสดีครับ", 14, 6));

    let client = Client::builder()
        .provider("relay", "https://relay.example/v1", 0, pool)
        .transport(Arc::new(upstream))
        .build()?;
    let answer = client
        .chat_completion(
            ApiRequest::chat("gpt-4.1", &[("user", "ทดสอบการเชื่อมต่อ API")]),
            &RequestContext::user("customer_12345"),
        )
        .await?;
    println!(
        "answered by {} after {} attempt(s): {}",
        answer.meta.key,
        answer.meta.attempts,
        answer
            .body()
            .pointer("/choices/0/message/content")
            .unwrap_or(&serde_json::Value::Null)
    );
    println!("{}", client.status_report());
    Ok(())
}
