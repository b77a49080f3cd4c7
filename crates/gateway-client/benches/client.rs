//! The client's own overhead per request (everything but the transport):
//! canary, budget reservation and settlement, lease and report on a 1 000-key
//! pool, classification, statistics. Target: median at most 5 µs.
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use budget::{Ledger, LedgerConfig, Limit, Money, Period, PriceTable, Scope};
use canary::{Rollout, Share};
use criterion::{Criterion, criterion_group, criterion_main};
use gateway_client::{ApiRequest, Client, ManualClock, RequestContext};
use keypool_core::{KeyPool, NewKey, PoolConfig, Timestamp};
use transport::{Answer, Request, StreamStart, Transport, TransportError};

/// Answers instantly with a canned chat completion: measures nothing but the client.
#[derive(Debug)]
struct Canned(Answer);

#[async_trait::async_trait]
impl Transport for Canned {
    async fn send(&self, _: Request) -> Result<Answer, TransportError> {
        Ok(self.0.clone())
    }
    async fn send_stream(&self, _: Request) -> Result<StreamStart, TransportError> {
        Ok(StreamStart::Answered(self.0.clone()))
    }
}

fn bench(c: &mut Criterion) {
    let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_322_452);
    let mut pool = KeyPool::new(PoolConfig::default()).unwrap();
    for i in 0..1000 {
        pool.add(
            NewKey::new(format!("key-{i}"), format!("sk-key-{i:020}")).tokens_per_day(u64::MAX / 4),
            Timestamp::from_system_time(t0),
        )
        .unwrap();
    }
    let body = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help?"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 20, "completion_tokens": 8}
    });
    let answer = Answer {
        status: 200,
        headers: http::HeaderMap::new(),
        body: serde_json::to_vec(&body).unwrap().into(),
    };
    let ledger = Ledger::new(
        LedgerConfig::default(),
        PriceTable::defaults(),
        vec![Limit::new(
            Scope::Global,
            Period::Daily,
            Money::from_dollars(1_000_000_000),
        )],
    )
    .unwrap();
    let rollout = Rollout::builder("gpt-4.1")
        .candidate("claude-sonnet-4.5", Share::percent(10).unwrap())
        .salt("s")
        .build()
        .unwrap();
    let clock = ManualClock::new(t0);
    let client = Client::builder()
        .provider("relay", "http://relay/v1", 0, pool)
        .transport(Arc::new(Canned(answer)))
        .ledger(ledger)
        .rollout(rollout)
        .clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let request = ApiRequest::chat(
        "gpt-4.1",
        &[("system", "You are helpful."), ("user", "Hello there")],
    );
    let ctx = RequestContext {
        user: Some("user-42".into()),
        team: Some("search".into()),
        key_name: Some("web".into()),
        ..RequestContext::default()
    };

    let mut group = c.benchmark_group("client");
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    group.bench_function("chat_completion_overhead_1000_keys", |b| {
        b.iter(|| {
            clock.advance(Duration::from_micros(10));
            let r = rt
                .block_on(client.chat_completion(request.clone(), &ctx))
                .unwrap();
            black_box(r.meta.cost)
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
