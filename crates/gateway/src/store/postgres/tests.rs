use std::time::Duration;

use super::*;
use crate::store::conformance;
use crate::testing::TestDatabase;

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!(
            "pg-store-{}",
            crate::ids::random_hex::<8>().unwrap()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn options(url: &str, dir: &Dir, name: &str) -> PostgresOptions {
    PostgresOptions {
        url: url.to_owned(),
        outbox: dir.0.join(format!("{name}.db")),
        pool_size: 4,
        timeout: Duration::from_secs(5),
        ship_every: Duration::from_millis(50),
    }
}

#[tokio::test]
async fn postgres_passes_the_conformance_suite() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = Dir::new();
    let store = PostgresStore::open(options(db.url(), &dir, "a"))
        .await
        .unwrap();
    conformance::run(&store).await;
}

#[tokio::test]
async fn instances_starting_at_once_on_an_empty_database_all_start() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = Dir::new();
    let opened = futures_util::future::join_all(
        (0..4).map(|i| PostgresStore::open(options(db.url(), &dir, &format!("o{i}")))),
    )
    .await;
    for store in opened {
        let store = store.unwrap();
        assert_eq!(store.load().await.unwrap(), Loaded::default());
    }
}

#[tokio::test]
async fn a_record_shipped_twice_is_stored_and_counted_once() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = Dir::new();
    let store = PostgresStore::open(options(db.url(), &dir, "a"))
        .await
        .unwrap();
    let record = conformance::usage_record(1_000, "key_1", "m", 40);
    store.append_usage(record.clone()).await.unwrap();
    // Ship it, then put the same (origin, seq) in a batch again, as after
    // a crash between the shared commit and the local delete.
    let batch = store.inner.outbox.waiting(10).await.unwrap();
    assert_eq!(store.flush().await.unwrap(), 1);
    let origin = store.inner.outbox.origin().to_owned();
    let again = store
        .inner
        .with(async |c| {
            write::ship(c, &origin, &batch)
                .await
                .map_err(StoreError::from)
        })
        .await
        .unwrap();
    assert_eq!(again, 0, "nothing new is stored");
    let lines = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0].totals.requests, 1);
    assert_eq!(lines[0].totals.cost_micros, 40);
}

#[tokio::test]
async fn records_left_in_an_outbox_are_shipped_by_the_next_start() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = Dir::new();
    let mut opts = options(db.url(), &dir, "a");
    opts.ship_every = Duration::from_secs(3600);
    let store = PostgresStore::open(opts.clone()).await.unwrap();
    for i in 0..3 {
        let r = conformance::usage_record(i, "key_1", "m", 1);
        store.append_usage(r).await.unwrap();
    }
    // Gone without shipping, as if killed.
    drop(store);
    opts.ship_every = Duration::from_millis(10);
    let store = PostgresStore::open(opts).await.unwrap();
    let origin = store.inner.outbox.origin().to_owned();
    let shipped = store
        .inner
        .with(async |c| {
            let row = c
                .query_one("SELECT count(*) FROM usage WHERE origin = $1", &[&origin])
                .await
                .map_err(StoreError::from)?;
            Ok(row.get::<_, i64>(0))
        })
        .await;
    // The shipper may or may not have run yet; a report always ships first.
    assert!(matches!(shipped, Ok(0..=3)));
    let lines = store.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines.iter().map(|l| l.totals.requests).sum::<u64>(), 3);
}

#[tokio::test]
async fn a_schema_from_a_newer_gateway_is_refused() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = Dir::new();
    let store = PostgresStore::open(options(db.url(), &dir, "a"))
        .await
        .unwrap();
    store
        .inner
        .with(async |c| {
            c.execute("UPDATE keypool_schema SET version = version + 1", &[])
                .await
                .map_err(StoreError::from)
        })
        .await
        .unwrap();
    drop(store);
    let e = PostgresStore::open(options(db.url(), &dir, "b"))
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::SchemaTooNew { .. }), "{e}");
    assert!(e.to_string().contains("run a newer gateway"), "{e}");
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_the_password() {
    let dir = Dir::new();
    // Nothing listens on port 9 of the loopback address.
    let mut opts = options("postgres://gw:hunter2@127.0.0.1:9/keypool", &dir, "a");
    opts.timeout = Duration::from_secs(2);
    let e = PostgresStore::open(opts).await.unwrap_err().to_string();
    assert!(e.contains("127.0.0.1:9"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

#[tokio::test]
async fn a_missing_database_is_a_clear_error_without_the_password() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = Dir::new();
    let target = Target::parse(db.url()).unwrap();
    let missing = target.with_dbname("keypool_no_such_database");
    // The test server's URL, another database and a password (which a
    // server trusting the test user does not ask for).
    let url = format!(
        "{}?password=hunter2",
        crate::testing::with_db(db.url(), "keypool_no_such_database")
    );
    let e = PostgresStore::open(options(&url, &dir, "a"))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(missing.label()), "{e}");
    assert!(e.contains("does not exist"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
}

/// A closed store has shipped everything and given up its outbox at once,
/// even while something still holds it: a restart in the same process
/// opens the outbox, and the old store takes no more records.
#[tokio::test]
async fn a_closed_store_ships_everything_and_gives_up_its_outbox() {
    let Some(db) = TestDatabase::create().await else {
        return;
    };
    let dir = Dir::new();
    let mut opts = options(db.url(), &dir, "a");
    opts.ship_every = Duration::from_secs(3600);
    let old = PostgresStore::open(opts.clone()).await.unwrap();
    old.append_usage(conformance::usage_record(1, "key_1", "m", 1))
        .await
        .unwrap();
    old.close().await;
    // Still held (as a lingering task would), yet the outbox is free.
    let new = PostgresStore::open(opts).await.unwrap();
    let lines = new.usage(&UsageQuery::default()).await.unwrap();
    assert_eq!(lines.iter().map(|l| l.totals.requests).sum::<u64>(), 1);
    let late = old
        .append_usage(conformance::usage_record(2, "key_1", "m", 1))
        .await;
    assert!(matches!(late, Err(StoreError::Stopped)), "{late:?}");
}
