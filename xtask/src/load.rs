//! `cargo xtask bench-gateway`: a load benchmark of the gateway against the
//! simulated upstream, both run as release processes on loopback. The load
//! generator is plain keep-alive HTTP/1.1 over `std::net` threads, so the
//! xtask needs no HTTP crate.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Result, root};

/// One load run's figures.
pub(crate) struct Figures {
    pub(crate) requests_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) errors: u64,
}

/// Kills the child when dropped, so no process outlives the benchmark.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(l.local_addr().map_err(|e| e.to_string())?.port())
}

fn wait_until_up(addr: SocketAddr) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on {addr} after 30 s"))
}

/// Sends one request on a kept-alive connection and reads the whole answer.
fn round_trip(stream: &mut BufReader<TcpStream>, request: &[u8]) -> std::io::Result<u16> {
    stream.get_mut().write_all(request)?;
    let mut status_line = String::new();
    stream.read_line(&mut status_line)?;
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body)?;
    Ok(status)
}

/// Drives `connections` keep-alive connections to `addr` for `duration`.
pub(crate) fn load(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Figures {
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello from the load generator"}]}"#;
    let auth = authorization
        .map(|a| format!("authorization: Bearer {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .map(|_| {
            let request = request.clone();
            std::thread::spawn(move || {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let Ok(stream) = TcpStream::connect(addr) else {
                    return (latencies, 1);
                };
                let _ = stream.set_nodelay(true);
                let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                let mut stream = BufReader::new(stream);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match round_trip(&mut stream, &request) {
                        Ok(200) => latencies.push(t.elapsed()),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            match TcpStream::connect(addr) {
                                Ok(s) => stream = BufReader::new(s),
                                Err(_) => break,
                            }
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in threads {
        if let Ok((l, e)) = t.join() {
            all.extend(l);
            errors += e;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort();
    let q = |p: f64| -> f64 {
        if all.is_empty() {
            return f64::NAN;
        }
        let i = ((all.len() as f64 - 1.0) * p).round() as usize;
        all.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
    };
    Figures {
        requests_per_sec: all.len() as f64 / elapsed,
        p50_ms: q(0.50),
        p99_ms: q(0.99),
        errors,
    }
}

fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Builds the release gateway, runs the benchmark, and returns the markdown section.
pub(crate) fn bench_gateway() -> Result<String> {
    crate::cargo(&["build", "--release", "-p", "gateway"], &[])?;
    let bin = root().join("target/release/gateway");
    let dir = root().join("target/bench-gateway");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    const KEYS: usize = 10_000;

    // The simulated upstream, with the 10 000 keys' secrets accepted.
    let mut sim = Process(
        Command::new(&bin)
            .args(["sim-upstream", "--keys", &KEYS.to_string()])
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the simulated upstream: {e}"))?,
    );
    let mut first = String::new();
    if let Some(out) = sim.0.stdout.take() {
        BufReader::new(out)
            .read_line(&mut first)
            .map_err(|e| e.to_string())?;
    }
    let upstream: SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected simulated upstream output {first:?}"))?;

    // The gateway, with 10 000 keys on one provider.
    let port = free_port()?;
    let gateway: SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let config = config_with_keys(&dir, upstream, gateway, KEYS, None)?;
    let gw = Process(
        Command::new(&bin)
            .args(["serve", "--config"])
            .arg(&config)
            .env("RUST_LOG", "error")
            .spawn()
            .map_err(|e| format!("cannot start the gateway: {e}"))?,
    );
    wait_until_up(gateway)?;
    wait_until_up(upstream)?;
    // Warm up both, then measure memory with the keys loaded and traffic seen.
    load(
        gateway,
        "/v1/chat/completions",
        None,
        4,
        Duration::from_secs(1),
    );
    let rss = rss_mib(gw.0.id());

    let mut rows = Vec::new();
    let mut store_rows = Vec::new();
    let mut verdicts = Vec::new();
    for connections in [16usize, 64] {
        let direct = load(
            upstream,
            "/v1/chat/completions",
            Some("sk-bench-0000000000000000"),
            connections,
            Duration::from_secs(5),
        );
        let through = load(
            gateway,
            "/v1/chat/completions",
            None,
            connections,
            Duration::from_secs(5),
        );
        for (target, f) in [
            ("upstream directly", &direct),
            ("through the gateway", &through),
        ] {
            rows.push(format!(
                "| {connections} | {target} | {:.0} | {:.2} ms | {:.2} ms | {} |",
                f.requests_per_sec, f.p50_ms, f.p99_ms, f.errors
            ));
        }
        if connections == 16 {
            let share = through.requests_per_sec / direct.requests_per_sec.max(1.0);
            let added = through.p99_ms - direct.p99_ms;
            verdicts.push(format!(
                "- At 16 connections the gateway keeps {:.0}% of direct throughput (target ≥ 50%: {}) and adds {:.2} ms at p99 (target ≤ 1 ms: {}).",
                share * 100.0,
                if share >= 0.5 { "met" } else { "MISSED" },
                added,
                if added <= 1.0 { "met" } else { "MISSED" }
            ));
        }
    }
    drop(gw);

    // The same gateway keeping every request in SQLite, against the
    // in-memory store: rounds alternate, so both see the same machine.
    let db = dir.join("bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.join(format!("bench.db{suffix}")));
    }
    let (memory_addr, sqlite_addr) = (local(free_port()?)?, local(free_port()?)?);
    let memory_config = config_with_keys(&dir, upstream, memory_addr, KEYS, None)?;
    let memory = spawn_gateway(&bin, &memory_config)?;
    let sqlite_config = config_with_keys(&dir, upstream, sqlite_addr, KEYS, Some(&db))?;
    let sqlite = spawn_gateway(&bin, &sqlite_config)?;
    wait_until_up(memory_addr)?;
    wait_until_up(sqlite_addr)?;
    let mut memory_runs = Vec::new();
    let mut sqlite_runs = Vec::new();
    for _ in 0..5 {
        for (addr, runs) in [
            (memory_addr, &mut memory_runs),
            (sqlite_addr, &mut sqlite_runs),
        ] {
            runs.push(load(
                addr,
                "/v1/chat/completions",
                None,
                16,
                Duration::from_secs(3),
            ));
        }
    }
    let median = |runs: &mut Vec<Figures>| -> Figures {
        runs.sort_by(|a, b| a.requests_per_sec.total_cmp(&b.requests_per_sec));
        runs.swap_remove(runs.len() / 2)
    };
    let (m, q) = (median(&mut memory_runs), median(&mut sqlite_runs));
    for (target, f) in [
        ("gateway, in-memory store", &m),
        ("gateway, SQLite store", &q),
    ] {
        store_rows.push(format!(
            "| 16 | {target} | {:.0} | {:.2} ms | {:.2} ms | {} |",
            f.requests_per_sec, f.p50_ms, f.p99_ms, f.errors
        ));
    }
    let kept = q.requests_per_sec / m.requests_per_sec.max(1.0);
    let stored = recorded_requests(sqlite_addr);
    drop(memory);
    drop(sqlite);
    verdicts.push(format!(
        "- With every request committed to SQLite before its answer, the gateway keeps {:.0}% of its in-memory-store throughput (median of 5 alternating 3 s runs; target ≥ 80%: {}){}.",
        kept * 100.0,
        if kept >= 0.8 { "met" } else { "MISSED" },
        stored.map_or_else(String::new, |n| format!("; its database holds {n} usage records"))
    ));
    verdicts.push(match rss {
        Some(mib) => format!(
            "- Resident memory of the gateway with {KEYS} keys configured, after warm-up: {mib:.1} MiB (target ≤ 30 MB: {}).",
            if mib * 1.048_576 <= 30.0 { "met" } else { "MISSED" }
        ),
        None => "- Resident memory: not measured (no /proc on this machine).".into(),
    });
    drop(sim);
    Ok(format!(
        "## Gateway: load\n\n\
         `cargo xtask bench-gateway`: the release `gateway` serving {KEYS} keys (one provider, \
         least-used) in front of the simulated upstream, each its own process on loopback; \
         keep-alive HTTP/1.1 load from the xtask for 5 s per row at each connection count, against \
         the gateway and against the upstream directly in the same run. All three share the \
         machine's 2 cores.\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n\
         The store's cost, at 16 connections:\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n{}\n",
        rows.join("\n"),
        store_rows.join("\n"),
        verdicts.join("\n")
    ))
}

fn local(port: u16) -> Result<SocketAddr> {
    format!("127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))
}

fn spawn_gateway(bin: &Path, config: &Path) -> Result<Process> {
    Ok(Process(
        Command::new(bin)
            .args(["serve", "--config"])
            .arg(config)
            .env("RUST_LOG", "error")
            .spawn()
            .map_err(|e| format!("cannot start the gateway: {e}"))?,
    ))
}

/// The requests a gateway's store holds, from its own `/v1/usage` (the
/// benchmark's gateways run without authentication, on loopback).
fn recorded_requests(addr: SocketAddr) -> Option<u64> {
    let mut stream = TcpStream::connect(addr).ok()?;
    write!(
        stream,
        "GET /v1/usage HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (_, body) = answer.split_once("\r\n\r\n")?;
    let v: serde_json::Value = serde_json::from_str(body).ok()?;
    v.get("usage")?
        .as_array()?
        .iter()
        .map(|l| l.get("requests").and_then(serde_json::Value::as_u64))
        .sum()
}

fn config_with_keys(
    dir: &Path,
    upstream: SocketAddr,
    listen: SocketAddr,
    keys: usize,
    db: Option<&Path>,
) -> Result<PathBuf> {
    let mut text = format!(
        "[server]\nlisten = \"{listen}\"\n\n[retry]\nattempt_timeout_secs = 10\n\n[[providers]]\nname = \"bench\"\nbase_url = \"http://{upstream}/v1\"\nkeys = [\n"
    );
    for i in 0..keys {
        text.push_str(&format!(
            "  {{ name = \"bench-{i}\", secret = \"sk-bench-{i:016}\" }},\n"
        ));
    }
    text.push_str("]\n");
    if let Some(db) = db {
        text.push_str(&format!("\n[storage]\npath = \"{}\"\n", db.display()));
    }
    let path = dir.join(format!("gateway-{}.toml", listen.port()));
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}
