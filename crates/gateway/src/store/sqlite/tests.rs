use std::path::PathBuf;

use super::*;
use crate::store::HOUR_MS;
use crate::store::conformance::{self, client_key, usage_record};

/// A fresh directory for one test's database.
fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gateway-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn a_sqlite_store_passes_the_conformance_suite_and_keeps_it_across_reopening() {
    let dir = temp_dir("conformance");
    let path = dir.join("unit.db");
    let store = SqliteStore::open(&path).unwrap();
    conformance::run(&store).await;
    let before = store.load().await.unwrap();
    let usage = store.usage(&UsageQuery::default()).await.unwrap();
    drop(store);
    let again = SqliteStore::open(&path).unwrap();
    assert_eq!(again.load().await.unwrap(), before);
    assert_eq!(again.usage(&UsageQuery::default()).await.unwrap(), usage);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_database_in_use_is_refused_with_a_clear_error() {
    let dir = temp_dir("busy");
    let path = dir.join("busy.db");
    let first = SqliteStore::open(&path).unwrap();
    let e = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(e, StoreError::InUse { .. }), "{e}");
    assert!(e.to_string().contains("in use by another process"), "{e}");
    drop(first);
    assert!(SqliteStore::open(&path).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_database_from_a_newer_gateway_is_refused() {
    let dir = temp_dir("newer");
    let path = dir.join("newer.db");
    let conn = Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", schema::LATEST + 1)
        .unwrap();
    drop(conn);
    let e = SqliteStore::open(&path).unwrap_err();
    assert!(
        matches!(e, StoreError::SchemaTooNew { found, .. } if found == schema::LATEST + 1),
        "{e}"
    );
    assert!(e.to_string().contains("run a newer gateway"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_version_1_database_is_migrated_with_its_states() {
    let dir = temp_dir("v1");
    let path = dir.join("v1.db");
    let conn = Connection::open(&path).unwrap();
    // What the first gateways wrote: no version, states as JSON documents.
    let tx_setup = "CREATE TABLE upstream_keys (provider TEXT NOT NULL, name TEXT NOT NULL,
            state TEXT NOT NULL, PRIMARY KEY (provider, name));
        CREATE TABLE canaries (model TEXT PRIMARY KEY, state TEXT NOT NULL);
        CREATE TABLE usage (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, key_id TEXT,
            key_name TEXT, team TEXT, provider TEXT NOT NULL, upstream_key TEXT NOT NULL,
            model TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,
            completion_tokens INTEGER NOT NULL, cost_micros INTEGER NOT NULL);
        INSERT INTO usage (at, provider, upstream_key, model, prompt_tokens,
            completion_tokens, cost_micros) VALUES (5, 'relay', 'alpha', 'gpt-4o', 1, 2, 3);
        INSERT INTO upstream_keys VALUES ('relay', 'alpha',
            '{\"state\":{\"state\":\"disabled\",\"cause\":\"manual\"},\"day\":20414,\"requests_today\":3,\"tokens_today\":40}');
        INSERT INTO upstream_keys VALUES ('relay', 'broken', 'not json');
        INSERT INTO canaries VALUES ('gpt-4.1',
            '{\"shares_bp\":{\"claude-sonnet-4.5\":2500},\"phase\":{\"running\":null},\"enabled\":false}');";
    conn.execute_batch(tx_setup).unwrap();
    drop(conn);
    let store = SqliteStore::open(&path).unwrap();
    let loaded = store.load().await.unwrap();
    assert_eq!(
        loaded.upstream_keys.len(),
        1,
        "the unreadable document is dropped"
    );
    let alpha = &loaded.upstream_keys[0];
    assert_eq!(
        (alpha.provider.as_str(), alpha.name.as_str()),
        ("relay", "alpha")
    );
    assert_eq!(alpha.id, crate::store::config_key_id("relay", "alpha"));
    assert_eq!(alpha.origin, crate::store::KeyOrigin::Config);
    let saved = alpha.saved.clone().unwrap();
    assert_eq!(
        saved.state,
        keypool_core::KeyState::Disabled {
            cause: keypool_core::DisableCause::Manual
        }
    );
    assert_eq!((saved.requests_today, saved.tokens_today), (3, 40));
    let rollout = &loaded.rollouts[0];
    assert_eq!(rollout.model, "gpt-4.1");
    assert!(!rollout.saved.enabled);
    assert_eq!(rollout.saved.arms[0].buckets, vec![(0, 2_500)]);
    let usage = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(usage[0].totals.cost_micros, 3, "usage is kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_failed_batch_writes_nothing_and_is_retried_one_by_one() {
    let dir = temp_dir("tx");
    let store = SqliteStore::open(&dir.join("tx.db")).unwrap();
    let twin = |id: &str| StoredClientKey {
        hash: "same".into(),
        ..client_key(id, 0)
    };
    store.save_client_key(twin("a")).await.unwrap();
    // The second key repeats the first one's hash: its write fails, and
    // the usage record committed in the same group still lands.
    let bad = store.save_client_key(twin("b"));
    let good = store.append_usage(usage_record(1, "a", "m", 1));
    let (bad, good) = futures_util::join!(bad, good);
    assert!(bad.is_err() && good.is_ok());
    assert_eq!(store.load().await.unwrap().client_keys.len(), 1);
    let lines = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines[0].totals.requests, 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Polls `f` once.
fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    Future::poll(f, &mut cx)
}

#[tokio::test]
async fn a_write_waits_for_company_and_is_committed_even_if_its_task_is_dropped() {
    let dir = temp_dir("dropped");
    let store = SqliteStore::open(&dir.join("dropped.db")).unwrap();
    {
        let write = std::pin::pin!(store.append_usage(usage_record(1, "k", "m", 1)));
        // Polled once: queued, now yielding so that others can join.
        assert!(poll_once(write).is_pending(), "yields once for company");
        assert_eq!(store.queued(), 1, "queued");
    }
    assert_eq!(
        store.queued(),
        0,
        "committed when the task was dropped, not left for the next writer"
    );
    let lines = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines.first().map(|l| l.totals.requests), Some(1));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn reads_do_not_wait_for_the_write_connection() {
    let dir = temp_dir("reads");
    let store = SqliteStore::open(&dir.join("reads.db")).unwrap();
    store
        .append_usage(usage_record(1, "k", "m", 1))
        .await
        .unwrap();
    let inner = store.inner.clone();
    let (held, hold) = std::sync::mpsc::channel::<()>();
    let (release, released) = std::sync::mpsc::channel::<()>();
    // A thread holds the write connection inside an open write transaction
    // (as a long prune batch would)...
    let holder = std::thread::spawn(move || {
        inner.writer.with_connection(|c| {
            let tx = c.transaction().unwrap();
            let r = usage_record(2, "k", "m", 1);
            write::apply(&tx, &Write::Usage(r.clone())).unwrap();
            write::add_hours(&tx, std::iter::once(&r)).unwrap();
            held.send(()).unwrap();
            released.recv().unwrap();
            tx.commit().unwrap();
        });
    });
    hold.recv().unwrap();
    // ...and a report still answers, from what is committed.
    let lines = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines[0].totals.requests, 1);
    assert_eq!(store.audit(10).await.unwrap().len(), 0);
    release.send(()).unwrap();
    holder.join().unwrap();
    let lines = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines[0].totals.requests, 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn pruning_deletes_in_batches_until_done() {
    let dir = temp_dir("prune");
    let store = SqliteStore::open(&dir.join("prune.db")).unwrap();
    let n = usize::try_from(PRUNE_BATCH).unwrap() * 2 + 7;
    store.inner.writer.with_connection(|c| {
        let tx = c.transaction().unwrap();
        let records: Vec<_> = (0..n)
            .map(|i| usage_record(i as i64, "k", "m", 1))
            .collect();
        for r in &records {
            write::apply(&tx, &Write::Usage(r.clone())).unwrap();
        }
        write::add_hours(&tx, records.iter()).unwrap();
        tx.commit().unwrap();
    });
    let later = HOUR_MS * 2;
    store
        .append_usage(usage_record(later, "k", "m", 1))
        .await
        .unwrap();
    assert_eq!(store.prune_usage(later).await.unwrap(), n as u64);
    let lines = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines[0].totals.requests, 1);
    let _ = std::fs::remove_dir_all(&dir);
}
