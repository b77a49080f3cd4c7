//! The gateway on Postgres: a database for the benchmark, and three
//! instances behind a round-robin spread of connections.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

use super::{Rig, Section, Storage, load_many, row};
use crate::Result;

/// A fresh `keypool_bench` database on the tests' Postgres server (the
/// server kept running as long as the returned guard), or `None` with a
/// printed reason where `psql` cannot reach one.
pub(super) fn database(_rig: &Rig) -> Result<Option<(String, crate::postgres::Server)>> {
    // An A/B run of a build from before the Postgres store leaves them out.
    if std::env::var_os("KEYPOOL_BENCH_NO_POSTGRES").is_some() {
        eprintln!("xtask: the Postgres rows are left out (KEYPOOL_BENCH_NO_POSTGRES)");
        return Ok(None);
    }
    let server = match crate::postgres::server() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("xtask: the Postgres rows are left out: {e}");
            return Ok(None);
        }
    };
    let created = Command::new(psql())
        .arg(&server.url)
        .args(["-q", "-v", "ON_ERROR_STOP=1"])
        .args(["-c", "DROP DATABASE IF EXISTS keypool_bench WITH (FORCE)"])
        .args(["-c", "CREATE DATABASE keypool_bench"])
        .status();
    match created {
        Ok(s) if s.success() => {}
        other => {
            eprintln!(
                "xtask: the Postgres rows are left out: psql could not make a database ({other:?})"
            );
            return Ok(None);
        }
    }
    let url = match server.url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/keypool_bench"),
        None => return Ok(None),
    };
    Ok(Some((url, server)))
}

/// `psql` on the path, else Debian's newest.
fn psql() -> std::path::PathBuf {
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .into_iter()
        .flatten()
        .filter_map(std::result::Result::ok)
        .map(|e| e.path().join("bin/psql"))
        .filter(|p| p.exists())
        .max();
    debian
        .filter(|_| Command::new("psql").arg("--version").output().is_err())
        .unwrap_or_else(|| "psql".into())
}

/// `gateway_store_statements_total` from an instance's `/metrics` (the
/// benchmark's gateways run without authentication, on loopback).
fn statements(addr: SocketAddr) -> Option<u64> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET /metrics HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer
        .lines()
        .find_map(|l| l.strip_prefix("gateway_store_statements_total "))
        .and_then(|n| n.trim().parse().ok())
}

fn total_statements(addrs: &[SocketAddr]) -> u64 {
    addrs.iter().filter_map(|a| statements(*a)).sum()
}

/// Three instances on one Postgres database, 48 connections spread over
/// them round-robin for 5 s: throughput, latency, and the statements the
/// instances sent Postgres per answered request (usage batches, key facts,
/// polls and heartbeats included).
pub(super) fn three_instances(rig: &Rig, url: &str, out: &mut Section) -> Result<()> {
    let mut instances = Vec::new();
    for name in ["pg-a", "pg-b", "pg-c"] {
        let data_dir = rig.dir.join(name);
        let _ = std::fs::remove_dir_all(&data_dir);
        instances.push(rig.gateway(Storage::Postgres {
            url,
            data_dir: &data_dir,
        })?);
    }
    let addrs: Vec<SocketAddr> = instances.iter().map(|(_, a)| *a).collect();
    let path = "/v1/chat/completions";
    // Warm up (pools, connections), then measure.
    load_many(&addrs, path, None, 12, Duration::from_secs(1));
    let before = total_statements(&addrs);
    let f = load_many(&addrs, path, None, 48, Duration::from_secs(5));
    // Let the last batches ship before counting.
    std::thread::sleep(Duration::from_millis(600));
    let sent = total_statements(&addrs).saturating_sub(before);
    drop(instances);
    out.store_rows
        .push(row(48, "three gateways on one Postgres, round-robin", &f));
    let per_request = sent as f64 / (f.requests.max(1) as f64);
    out.verdicts.push(format!(
        "- Three instances on one Postgres (48 connections spread round-robin, all on this machine's 2 cores with the upstream and the load): {:.0} requests/s, p99 {:.2} ms; they sent Postgres {sent} statements for {} answers, {per_request:.4} per answered request (target ≤ 0.1: {}).",
        f.requests_per_sec,
        f.p99_ms,
        f.requests,
        if per_request <= 0.1 { "met" } else { "MISSED" }
    ));
    Ok(())
}
