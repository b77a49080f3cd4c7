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
    let config = config_with_keys(&dir, upstream, gateway, KEYS)?;
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
    verdicts.push(match rss {
        Some(mib) => format!(
            "- Resident memory of the gateway with {KEYS} keys configured, after warm-up: {mib:.1} MiB (target ≤ 30 MB: {}).",
            if mib * 1.048_576 <= 30.0 { "met" } else { "MISSED" }
        ),
        None => "- Resident memory: not measured (no /proc on this machine).".into(),
    });
    drop(gw);
    drop(sim);
    Ok(format!(
        "## Gateway: load\n\n\
         `cargo xtask bench-gateway`: the release `gateway` serving {KEYS} keys (one provider, \
         least-used) in front of the simulated upstream, each its own process on loopback; \
         keep-alive HTTP/1.1 load from the xtask for 5 s per row at each connection count, against \
         the gateway and against the upstream directly in the same run. All three share the \
         machine's 2 cores.\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n{}\n",
        rows.join("\n"),
        verdicts.join("\n")
    ))
}

fn config_with_keys(
    dir: &Path,
    upstream: SocketAddr,
    listen: SocketAddr,
    keys: usize,
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
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}
