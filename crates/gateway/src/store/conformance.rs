//! The behaviour every [`Store`] backend must have, run by each backend's
//! tests: `conformance::run(&store).await` on an empty store.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use keypool_core::{DisableCause, KeyState, SavedKey, Timestamp};

use super::records::{
    AuditEntry, KeyOrigin, KeySettings, PinRecord, RolloutRecord, SettingKind, SettingRecord,
    StoredClientKey, UpstreamKeyRecord, UsageQuery, UsageRecord, config_key_id,
};
use super::{HOUR_MS, Store};

/// Runs every check on `store`, which must start empty.
pub(crate) async fn run(store: &dyn Store) {
    assert_eq!(store.load().await.unwrap(), super::Loaded::default());
    client_keys(store).await;
    upstream_keys(store).await;
    rollouts(store).await;
    settings(store).await;
    pins(store).await;
    usage(store).await;
    audit(store).await;
    concurrent_appends(store).await;
}

pub(crate) fn client_key(id: &str, created_at: i64) -> StoredClientKey {
    StoredClientKey {
        id: id.into(),
        name: format!("name-{id}"),
        team: Some("search".into()),
        hash: format!("{id:0>64}"),
        scopes: vec!["chat:write".into()],
        models: vec!["gpt-4.1".into()],
        rate_limit: Some(200),
        created_at,
        revoke_at: None,
        rotated_to: None,
    }
}

pub(crate) fn usage_record(at: i64, key: &str, model: &str, cost: u64) -> UsageRecord {
    UsageRecord {
        at,
        key_id: Some(key.into()),
        key_name: Some(format!("name-{key}")),
        team: Some(if key == "key_2" { "ads" } else { "search" }.into()),
        provider: "relay".into(),
        upstream_key: "prod-1".into(),
        model: model.into(),
        prompt_tokens: 10,
        completion_tokens: 5,
        cost_micros: cost,
        // Some of every prompt from the provider's cache.
        cached_tokens: cost % 7,
        cache_write_tokens: cost % 3,
        reasoning_tokens: cost % 5,
    }
}

async fn client_keys(store: &dyn Store) {
    let (a, b) = (client_key("key_a", 1), client_key("key_b", 2));
    store.save_client_key(b.clone()).await.unwrap();
    store.save_client_key(a.clone()).await.unwrap();
    let revoked = StoredClientKey {
        revoke_at: Some(99),
        rotated_to: Some("key_b".into()),
        ..a
    };
    store.save_client_key(revoked.clone()).await.unwrap();
    let loaded = store.load().await.unwrap().client_keys;
    assert_eq!(
        loaded,
        vec![revoked, b],
        "by creation time, updated in place"
    );
}

async fn upstream_keys(store: &dyn Store) {
    let saved = |state| SavedKey {
        state,
        day: 20_414,
        requests_today: 3,
        tokens_today: 5_000,
    };
    let configured = UpstreamKeyRecord {
        id: config_key_id("relay", "alpha"),
        provider: "relay".into(),
        name: "alpha".into(),
        origin: KeyOrigin::Config,
        fingerprint: "ab".repeat(32),
        sealed_secret: None,
        settings: KeySettings::default(),
        saved: Some(saved(KeyState::Exhausted {
            until: Timestamp::from_unix_millis(1_795_322_452_000),
        })),
        removed: false,
    };
    let added = UpstreamKeyRecord {
        id: "uk_0123456789abcdef".into(),
        name: "alpha".into(),
        origin: KeyOrigin::Runtime,
        sealed_secret: Some(vec![0, 1, 2, 255]),
        settings: KeySettings {
            tier: 2,
            weight: 3,
            limits: keypool_core::Limits {
                tokens_per_day: Some(1_000_000),
                max_in_flight: Some(4),
                ..keypool_core::Limits::default()
            },
            models: Some(vec!["gpt-4o-mini".into(), "deepseek-chat".into()]),
        },
        saved: None,
        ..configured.clone()
    };
    store.save_upstream_key(configured.clone()).await.unwrap();
    store.save_upstream_key(added.clone()).await.unwrap();
    // The configured key is disabled, then drains out of the pool.
    let disabled = UpstreamKeyRecord {
        saved: Some(saved(KeyState::Disabled {
            cause: DisableCause::Manual,
        })),
        removed: true,
        ..configured
    };
    store.save_upstream_key(disabled.clone()).await.unwrap();
    let mut loaded = store.load().await.unwrap().upstream_keys;
    loaded.sort_by(|a, b| a.id.cmp(&b.id));
    let mut want = vec![added, disabled];
    want.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(loaded, want, "by id: two keys may share a name");
}

async fn rollouts(store: &dyn Store) {
    let saved = canary::SavedRollout {
        arms: vec![
            canary::SavedArm {
                model: Arc::from("claude-sonnet-4.5"),
                buckets: vec![(0, 1_000), (3_000, 3_500)],
            },
            canary::SavedArm {
                model: Arc::from("gpt-5"),
                buckets: vec![],
            },
        ],
        phase: canary::Phase::Running,
        enabled: false,
        step: 2,
        step_started: Some(SystemTime::UNIX_EPOCH + Duration::from_millis(1_795_322_452_000)),
        promoted: true,
    };
    let record = RolloutRecord {
        model: "gpt-4.1".into(),
        saved: saved.clone(),
    };
    store.save_rollout(record.clone()).await.unwrap();
    let rolled_back = RolloutRecord {
        model: "gpt-4.1".into(),
        saved: canary::SavedRollout {
            arms: saved.arms[..1].to_vec(),
            phase: canary::Phase::RolledBack {
                reason: "p95 too high".into(),
            },
            step_started: None,
            ..saved
        },
    };
    store.save_rollout(rolled_back.clone()).await.unwrap();
    assert_eq!(store.load().await.unwrap().rollouts, vec![rolled_back]);
}

/// Settings are kept by kind and name: saved again, the newer value wins;
/// a removal is kept as such.
async fn settings(store: &dyn Store) {
    let limit = serde_json::json!({"scope": "team", "name": "eng", "daily_usd": 5});
    let setting = |kind, name: &str, value: Option<serde_json::Value>, at| SettingRecord {
        kind,
        name: name.into(),
        value,
        at,
    };
    let first = setting(SettingKind::BudgetLimit, "team:eng", Some(limit), 1);
    let analysis = serde_json::json!({"enabled": false});
    let other = setting(SettingKind::CanaryAnalysis, "gpt-4.1", Some(analysis), 2);
    store.save_setting(first).await.unwrap();
    store.save_setting(other.clone()).await.unwrap();
    let removed = setting(SettingKind::BudgetLimit, "team:eng", None, 3);
    store.save_setting(removed.clone()).await.unwrap();
    let mut loaded = store.load().await.unwrap().settings;
    loaded.sort_by_key(|s| (s.kind, s.name.clone()));
    assert_eq!(loaded, vec![removed, other]);
}

async fn pins(store: &dyn Store) {
    let pin = |id: &str, key: &str, at: i64| PinRecord {
        id: id.into(),
        provider: "relay".into(),
        key: key.into(),
        at,
    };
    store.save_pin(pin("resp_1", "k1", 1_000)).await.unwrap();
    store.save_pin(pin("file-2", "k2", 2_000)).await.unwrap();
    assert_eq!(
        store.find_pin("resp_1", 0).await.unwrap(),
        Some(pin("resp_1", "k1", 1_000))
    );
    assert_eq!(
        store.find_pin("resp_1", 1_001).await.unwrap(),
        None,
        "too old"
    );
    assert_eq!(store.find_pin("nope", 0).await.unwrap(), None);
    // The newest record of an id wins.
    store.save_pin(pin("resp_1", "k3", 3_000)).await.unwrap();
    assert_eq!(
        store.find_pin("resp_1", 0).await.unwrap().unwrap().key,
        "k3"
    );
    assert_eq!(store.prune_pins(2_500).await.unwrap(), 1, "file-2 went");
    assert_eq!(store.find_pin("file-2", 0).await.unwrap(), None);
    assert!(store.find_pin("resp_1", 0).await.unwrap().is_some());
}

async fn usage(store: &dyn Store) {
    for r in [
        usage_record(1_000, "key_1", "gpt-4o", 300),
        usage_record(2_000, "key_1", "gpt-4o", 200),
        usage_record(HOUR_MS * 5, "key_2", "gpt-4o-mini", 7),
        usage_record(HOUR_MS * 5 + 1, "key_1", "gpt-4o-mini", 7),
    ] {
        store.append_usage(r).await.unwrap();
    }
    let all = store.usage(&UsageQuery::default()).await.unwrap();
    let shape: Vec<(&str, &str, u64, u64, u64)> = all
        .iter()
        .map(|l| {
            let key = l.key_id.as_deref().unwrap_or_default();
            (
                key,
                l.model.as_str(),
                l.totals.requests,
                l.totals.cost_micros,
                l.totals.cached_tokens,
            )
        })
        .collect();
    assert_eq!(
        shape,
        vec![
            ("key_1", "gpt-4o", 2, 500, 300 % 7 + 200 % 7),
            ("key_1", "gpt-4o-mini", 1, 7, 0),
            ("key_2", "gpt-4o-mini", 1, 7, 0)
        ],
        "dearest first, then by model"
    );
    assert_eq!(all[0].totals.prompt_tokens, 20);
    assert_eq!(all[0].team.as_deref(), Some("search"));
    let query = |q: UsageQuery| async move { store.usage(&q).await.unwrap() };
    let by_key = query(UsageQuery {
        key_id: Some("key_2".into()),
        ..UsageQuery::default()
    })
    .await;
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].key_name.as_deref(), Some("name-key_2"));
    let by_team = query(UsageQuery {
        team: Some("search".into()),
        model: Some("gpt-4o-mini".into()),
        ..UsageQuery::default()
    })
    .await;
    assert_eq!(by_team.len(), 1);
    assert_eq!(by_team[0].key_id.as_deref(), Some("key_1"));
    let late = query(UsageQuery {
        from: Some(HOUR_MS),
        ..UsageQuery::default()
    })
    .await;
    assert_eq!(late.iter().map(|l| l.totals.requests).sum::<u64>(), 2);
    let early = query(UsageQuery {
        to: Some(HOUR_MS),
        ..UsageQuery::default()
    })
    .await;
    assert_eq!(early.iter().map(|l| l.totals.requests).sum::<u64>(), 2);
    spend_and_prune(store).await;
}

/// After [`usage`]'s records: spend by the hour, and pruning.
async fn spend_and_prune(store: &dyn Store) {
    let spend = store.spend_since(0).await.unwrap();
    assert_eq!(spend.iter().map(|s| s.totals.cost_micros).sum::<u64>(), 514);
    let sum = |f: fn(&super::Totals) -> u64| spend.iter().map(|s| f(&s.totals)).sum::<u64>();
    assert_eq!(sum(|t| t.cached_tokens), 300 % 7 + 200 % 7);
    // Costs 300, 200, 7 and 7: cache writes cost % 3, reasoning cost % 5.
    let costs = [300u64, 200, 7, 7];
    assert_eq!(
        sum(|t| t.cache_write_tokens),
        costs.iter().map(|c| c % 3).sum::<u64>()
    );
    assert_eq!(
        sum(|t| t.reasoning_tokens),
        costs.iter().map(|c| c % 5).sum::<u64>()
    );
    assert_eq!(spend.iter().map(|s| s.totals.requests).sum::<u64>(), 4);
    assert!(
        spend.windows(2).all(|w| w[0].hour <= w[1].hour),
        "oldest first"
    );
    assert!(spend.iter().all(|s| s.hour % HOUR_MS == 0));
    let recent = store.spend_since(HOUR_MS * 5).await.unwrap();
    assert_eq!(recent.iter().map(|s| s.totals.requests).sum::<u64>(), 2);

    store.prune_usage(HOUR_MS).await.unwrap();
    let left = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(
        left.iter().map(|l| l.totals.requests).sum::<u64>(),
        2,
        "the records of the first hour are gone"
    );
    assert!(left.iter().all(|l| l.model == "gpt-4o-mini"));
}

async fn audit(store: &dyn Store) {
    for i in 0..5 {
        store
            .append_audit(AuditEntry {
                at: i,
                actor: "master".into(),
                action: format!("action.{i}"),
                target: "key_1".into(),
                before: (i > 0).then(|| serde_json::json!({"n": i - 1})),
                after: Some(serde_json::json!({"n": i, "name": "web"})),
            })
            .await
            .unwrap();
    }
    let newest = store.audit(2).await.unwrap();
    assert_eq!(newest.len(), 2);
    assert_eq!(newest[0].action, "action.4");
    assert_eq!(newest[1].action, "action.3");
    assert_eq!(
        newest[0].after,
        Some(serde_json::json!({"n": 4, "name": "web"}))
    );
    let all = store.audit(100).await.unwrap();
    assert_eq!(all.len(), 5);
    assert_eq!(all[4].before, None);
}

async fn concurrent_appends(store: &dyn Store) {
    let at = HOUR_MS * 100;
    let writes = (0..200).map(|i| store.append_usage(usage_record(at + i, "key_c", "m", 1)));
    for r in futures_util::future::join_all(writes).await {
        r.unwrap();
    }
    let lines = store
        .usage(&UsageQuery {
            key_id: Some("key_c".into()),
            ..UsageQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(
        lines[0].totals.requests, 200,
        "every append is counted once"
    );
}
