//! Support for tests that need a real Postgres: a database made for one
//! test and dropped after it.
//!
//! The server is the one `KEYPOOL_TEST_POSTGRES_URL` names, else the one on
//! `127.0.0.1:5432` (user `postgres`) when it answers. `cargo xtask ci`
//! makes sure one answers (starting a throwaway cluster when none does) and
//! sets `KEYPOOL_REQUIRE_POSTGRES=1`, so that there a missing server fails
//! the tests instead of skipping them; under plain `cargo test` they are
//! skipped with a printed reason.

use std::time::Duration;

/// The server tried when `KEYPOOL_TEST_POSTGRES_URL` is not set.
const LOCAL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database of its own for one test, dropped (with its connections) when
/// this is dropped.
#[derive(Debug)]
pub struct TestDatabase {
    server: String,
    name: String,
    url: String,
}

/// The server's URL with another database's name.
pub(crate) fn with_db(server: &str, db: &str) -> String {
    let (base, query) = match server.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server, None),
    };
    let base = match base.rsplit_once('/') {
        Some((host, _)) if host.contains("://") && host.len() > "postgres://".len() => host,
        _ => base,
    };
    match query {
        Some(q) => format!("{base}/{db}?{q}"),
        None => format!("{base}/{db}"),
    }
}

async fn admin(server: &str) -> Result<tokio_postgres::Client, String> {
    let connect = tokio_postgres::connect(server, tokio_postgres::NoTls);
    let (client, connection) = tokio::time::timeout(Duration::from_secs(5), connect)
        .await
        .map_err(|_| "no answer within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    Ok(client)
}

impl TestDatabase {
    /// A fresh empty database, or `None` (the reason printed) when no server
    /// answers and `KEYPOOL_REQUIRE_POSTGRES` is not set.
    ///
    /// # Panics
    /// When no server answers and `KEYPOOL_REQUIRE_POSTGRES` is set, or the
    /// server refuses to create a database: the test fails, it does not
    /// skip.
    #[allow(clippy::panic)]
    pub async fn create() -> Option<TestDatabase> {
        let server = std::env::var("KEYPOOL_TEST_POSTGRES_URL").unwrap_or_else(|_| LOCAL.into());
        let client = match admin(&server).await {
            Ok(c) => c,
            Err(e) if std::env::var_os("KEYPOOL_REQUIRE_POSTGRES").is_some() => {
                panic!("no Postgres for the tests ({e}); KEYPOOL_REQUIRE_POSTGRES is set")
            }
            Err(e) => {
                eprintln!(
                    "skipped: no Postgres answers ({e}); set KEYPOOL_TEST_POSTGRES_URL or run `cargo xtask ci`"
                );
                return None;
            }
        };
        let name = format!(
            "keypool_test_{}",
            crate::ids::random_hex::<8>().unwrap_or_default()
        );
        if let Err(e) = client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
        {
            panic!("cannot create a test database: {e}");
        }
        Some(TestDatabase {
            url: with_db(&server, &name),
            server,
            name,
        })
    }

    /// The database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        // A thread with a runtime of its own: this may run inside a runtime
        // that cannot block.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let client = admin(&server).await?;
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if let Ok(Err(e)) = dropped {
            eprintln!("test database {} was not dropped: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_database_name_is_swapped_in_the_url() {
        assert_eq!(
            super::with_db("postgres://postgres@127.0.0.1:5432/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5432/t1"
        );
        assert_eq!(
            super::with_db("postgres://u:p@h/db?sslmode=disable", "t1"),
            "postgres://u:p@h/t1?sslmode=disable"
        );
        assert_eq!(super::with_db("postgres://u@h", "t1"), "postgres://u@h/t1");
    }
}
