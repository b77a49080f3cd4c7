//! A Postgres server for the tests that need one.
//!
//! `KEYPOOL_TEST_POSTGRES_URL` when set; else the server on
//! `127.0.0.1:5432` (user `postgres`, trust authentication) when one
//! answers; else a throwaway cluster made with Debian's `postgresql`
//! package (installed when missing) in `target/xtask-postgres`, on a free
//! port, stopped when the returned guard is dropped
//! (`KEYPOOL_XTASK_POSTGRES=throwaway` asks for one even when a local
//! server answers). Each test then makes a database of its own on it
//! (`gateway::testing::TestDatabase`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::{Result, root};

/// The server the tests use; a throwaway one stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Server {
    /// Its URL (`postgres://postgres@127.0.0.1:PORT/postgres`).
    pub(crate) url: String,
    cluster: Option<Cluster>,
}

#[derive(Debug)]
struct Cluster {
    bin: PathBuf,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(c) = &self.cluster {
            let pg_ctl = c.bin.join("pg_ctl");
            let data = c.data.display().to_string();
            let _ = as_postgres(&pg_ctl, &["-D", &data, "-m", "immediate", "stop"]).status();
        }
    }
}

/// Finds or starts the server (see the module's doc).
pub(crate) fn server() -> Result<Server> {
    if let Ok(url) = std::env::var("KEYPOOL_TEST_POSTGRES_URL") {
        return Ok(Server { url, cluster: None });
    }
    let local: SocketAddr = ([127, 0, 0, 1], 5432).into();
    let throwaway_asked = std::env::var("KEYPOOL_XTASK_POSTGRES").is_ok_and(|v| v == "throwaway");
    if !throwaway_asked && TcpStream::connect_timeout(&local, Duration::from_secs(2)).is_ok() {
        return Ok(Server {
            url: "postgres://postgres@127.0.0.1:5432/postgres".into(),
            cluster: None,
        });
    }
    eprintln!("xtask: no Postgres on 127.0.0.1:5432; starting a throwaway cluster");
    throwaway()
}

/// The directory of Debian's Postgres programs, newest version first.
fn debian_bin() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(std::result::Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn install_postgres() -> Result<()> {
    crate::apt_install(&["postgresql"], "for the tests on a shared store")
}

/// Whether this process runs as root (Postgres refuses to): read from
/// `/proc/self/status`, without a dependency for one number.
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// `program args`, as the `postgres` user when this process is root.
fn as_postgres(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program).args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

fn run(mut c: Command, what: &str) -> Result<()> {
    let status = c.status().map_err(|e| format!("cannot run {what}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// `initdb` (trust authentication) in a fresh directory and `pg_ctl start` on
/// a free port, its socket in the same directory.
fn throwaway() -> Result<Server> {
    if debian_bin().is_none() {
        install_postgres()?;
    }
    let bin = debian_bin().ok_or("postgresql is installed but no initdb was found")?;
    let dir = root().join("target/xtask-postgres");
    let _ = std::fs::remove_dir_all(&dir);
    let data = dir.join("data");
    std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
    if is_root() {
        run(
            {
                let mut c = Command::new("chown");
                c.args(["-R", "postgres:postgres"]).arg(&dir);
                c
            },
            "chown",
        )?;
    }
    let data_s = data.display().to_string();
    let init = as_postgres(
        &bin.join("initdb"),
        &["-D", &data_s, "-A", "trust", "-U", "postgres", "-E", "UTF8"],
    );
    run(init, "initdb")?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
        dir.display()
    );
    let log = dir.join("postgres.log").display().to_string();
    let start = as_postgres(
        &bin.join("pg_ctl"),
        &["-D", &data_s, "-o", &options, "-l", &log, "-w", "start"],
    );
    let server = Server {
        url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        cluster: Some(Cluster { bin, data }),
    };
    run(start, "pg_ctl start")?;
    Ok(server)
}
