//! A canary rollout through the client: 10% of users get the candidate,
//! sticky per user; the judge compares the arms and rolls back a candidate
//! whose error rate is worse. Simulated time and upstream.
//!
//! `cargo run -p gateway-client --example canary_rollout`

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use canary::{Gates, Rollout, Schedule, Share};
use gateway_client::{ApiRequest, Client, ManualClock, RequestContext};
use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
use transport::{MockReply, MockTransport};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452);
    let clock = ManualClock::new(start);
    let mut pool = KeyPool::new(PoolConfig::default())?;
    for i in 0..4 {
        pool.add(
            NewKey::new(format!("key-{i}"), format!("sk-canary-key-{i:08}")),
            Timestamp::from_system_time(start),
        )?;
    }
    // The candidate model fails one request in five.
    let upstream = MockTransport::new();
    let mut n = 0u64;
    let counter = std::sync::Mutex::new(0u64);
    upstream.fallback(move |r| {
        let mut c = counter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *c += 1;
        if r.json().get("model").and_then(serde_json::Value::as_str) == Some("claude-sonnet-4.5")
            && (*c).is_multiple_of(5)
        {
            MockReply::error(
                400,
                "invalid_request_error",
                "bad_output",
                "the candidate misbehaved",
            )
        } else {
            MockReply::chat("ok", 20, 10)
        }
    });
    let steps = [100, 500, 1000, 2500]
        .map(|bp| Share::from_bp(bp).unwrap_or(Share::ZERO))
        .to_vec();
    let rollout = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::ZERO)
        .salt("launch-1")
        .schedule(Schedule::even(steps, Duration::from_secs(600)))
        .build()?;
    let client = Client::builder()
        .provider("relay", "https://relay.example/v1", 0, pool)
        .transport(Arc::new(upstream))
        .rollout(rollout)
        // A demo-sized minimum of evidence per arm (production keeps more).
        .gates(Gates {
            min_requests: 30,
            ..Gates::default()
        })
        .clock(Arc::new(clock.clone()))
        .build()?;
    client.with_rollout("gpt-4.1", |r, now| r.start(now));

    let mut models: HashMap<String, usize> = HashMap::new();
    for round in 0..3 {
        for i in 0..5_000 {
            let ctx = RequestContext::user(format!("user-{round}-{i}"));
            if let Ok(a) = client
                .chat_completion(ApiRequest::chat("gpt-4.1", &[("user", "hi")]), &ctx)
                .await
            {
                *models.entry(a.meta.model_used).or_default() += 1;
            }
            n += 1;
        }
        clock.advance(Duration::from_secs(601));
        client.tick();
        for (model, verdict) in client.analyze() {
            println!("round {round}: {model}: {verdict:?}");
        }
    }
    println!("{n} requests; models used: {models:?}");
    print!("{}", client.status_report());
    Ok(())
}
