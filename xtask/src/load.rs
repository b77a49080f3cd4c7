//! `cargo xtask bench-gateway`: a load benchmark of the gateway against the
//! simulated upstream, both run as release processes on loopback. The load
//! generator is plain keep-alive HTTP/1.1 over `std::net` threads, so the
//! xtask needs no HTTP crate.

mod affinity;
mod agent;
mod cluster;
mod nginx;
mod traces;

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
    /// Answered requests.
    pub(crate) requests: u64,
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

/// Reads one HTTP/1.1 message (head and `Content-Length` body) into `out`,
/// byte for byte.
fn read_message(stream: &mut BufReader<TcpStream>, out: &mut Vec<u8>) -> std::io::Result<()> {
    out.clear();
    let mut length = 0usize;
    loop {
        let start = out.len();
        if stream.read_until(b'\n', out)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = out
            .get(start..)
            .and_then(|l| std::str::from_utf8(l).ok())
            .unwrap_or("")
            .trim_end();
        if line.is_empty() && start > 0 {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().unwrap_or(0);
        }
    }
    let head = out.len();
    out.resize(head + length, 0);
    stream.read_exact(out.get_mut(head..).unwrap_or_default())
}

/// Sends one request on a kept-alive connection and reads the whole answer.
fn round_trip(
    stream: &mut BufReader<TcpStream>,
    request: &[u8],
    answer: &mut Vec<u8>,
) -> std::io::Result<u16> {
    stream.get_mut().write_all(request)?;
    read_message(stream, answer)?;
    let status_line = answer.split(|b| *b == b'\n').next().unwrap_or_default();
    Ok(std::str::from_utf8(status_line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0))
}

/// A bare forwarder: a thread per client connection, each with its own
/// kept-alive upstream connection, passing each request's bytes on with the
/// upstream key added and the answer's bytes back. No parsing beyond finding
/// where a message ends, no pool, no accounting: the cheapest proxy there is,
/// measured to show what any proxy costs on this machine.
///
/// It runs as its own process (`cargo xtask forward UPSTREAM KEY`, printing
/// `listening on ADDR`), so that its CPU time is counted apart.
pub(crate) fn run_forwarder(upstream: &str, authorization: &str) -> Result<()> {
    let upstream: SocketAddr = upstream
        .parse()
        .map_err(|e| format!("bad upstream address {upstream:?}: {e}"))?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("listening on {addr}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    let auth = format!("authorization: Bearer {authorization}\r\n").into_bytes();
    for client in listener.incoming().flatten() {
        let auth = auth.clone();
        std::thread::spawn(move || {
            let _ = forward(client, upstream, &auth);
        });
    }
    Ok(())
}

/// Starts a process that prints `listening on ADDR` first, and reads that address.
fn spawn_listening(command: &mut Command, what: &str) -> Result<(Process, SocketAddr)> {
    let mut child = Process(
        command
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?,
    );
    let mut first = String::new();
    if let Some(out) = child.0.stdout.take() {
        BufReader::new(out)
            .read_line(&mut first)
            .map_err(|e| e.to_string())?;
    }
    let addr = first
        .trim()
        .strip_prefix("listening on ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("unexpected output from {what}: {first:?}"))?;
    Ok((child, addr))
}

fn forward(client: TcpStream, upstream: SocketAddr, auth: &[u8]) -> std::io::Result<()> {
    let up = TcpStream::connect(upstream)?;
    for s in [&client, &up] {
        s.set_nodelay(true)?;
    }
    let (mut client, mut up) = (BufReader::new(client), BufReader::new(up));
    let (mut request, mut answer, mut out) = (Vec::new(), Vec::new(), Vec::new());
    loop {
        read_message(&mut client, &mut request)?;
        let line_end = request
            .iter()
            .position(|b| *b == b'\n')
            .map_or(0, |i| i + 1);
        out.clear();
        let (line, rest) = request.split_at(line_end);
        out.extend_from_slice(line);
        out.extend_from_slice(auth);
        out.extend_from_slice(rest);
        up.get_mut().write_all(&out)?;
        read_message(&mut up, &mut answer)?;
        client.get_mut().write_all(&answer)?;
    }
}

/// Drives `connections` keep-alive connections to `addr` for `duration`.
pub(crate) fn load(
    addr: SocketAddr,
    path: &str,
    authorization: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Figures {
    load_many(&[addr], path, authorization, connections, duration)
}

/// The small chat request most rows send.
const SMALL_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello from the load generator"}]}"#;

/// [`load`], the connections spread round-robin over `addrs` (a simple
/// load balancer in front of several instances).
pub(crate) fn load_many(
    addrs: &[SocketAddr],
    path: &str,
    authorization: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Figures {
    load_body(
        addrs,
        (path, SMALL_BODY),
        authorization,
        connections,
        duration,
    )
}

/// [`load_many`] sending `body` to `path`.
fn load_body(
    addrs: &[SocketAddr],
    (path, body): (&str, &str),
    authorization: Option<&str>,
    connections: usize,
    duration: Duration,
) -> Figures {
    let host = addrs.first().map(ToString::to_string).unwrap_or_default();
    let auth = authorization
        .map(|a| format!("authorization: Bearer {a}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n{auth}content-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes();
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let threads: Vec<_> = (0..connections)
        .filter_map(|i| addrs.get(i % addrs.len().max(1)).copied())
        .map(|addr| {
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
                let mut answer = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match round_trip(&mut stream, &request, &mut answer) {
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
        requests: all.len() as u64,
    }
}

/// CPU time (user + system) a process has used so far, from
/// Stands for every process of the Postgres server in [`with_cpu`].
const POSTGRES_SERVER: &str = "postgres-server";

/// The CPU time of `pid`, or of every process of the Postgres server for
/// [`POSTGRES_SERVER`]; `None` where there is no /proc.
fn cpu_time(pid: &str) -> Option<Duration> {
    if pid != POSTGRES_SERVER {
        return process_cpu_time(pid);
    }
    let pids = std::fs::read_dir("/proc").ok()?.filter_map(|e| {
        let name = e.ok()?.file_name().into_string().ok()?;
        name.bytes().all(|b| b.is_ascii_digit()).then_some(name)
    });
    let server = pids.filter(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "postgres")
    });
    Some(server.filter_map(|pid| process_cpu_time(&pid)).sum())
}

/// `/proc/<pid>/stat`; `None` where there is no /proc.
fn process_cpu_time(pid: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
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

/// The upstream key the benchmark uses when it calls the simulated upstream
/// itself (directly, or through the bare forwarder).
const BENCH_KEY: &str = "sk-bench-0000000000000000";

/// Runs `run`, and returns with its figures the CPU time each of `processes`
/// spent per answered request, in microseconds.
fn with_cpu(processes: &[(&'static str, String)], run: impl FnOnce() -> Figures) -> Measured {
    let before: Vec<_> = processes.iter().map(|(_, pid)| cpu_time(pid)).collect();
    let figures = run();
    let per_request = processes
        .iter()
        .zip(before)
        .map(|((name, pid), before)| {
            let used = cpu_time(pid)
                .zip(before)
                .and_then(|(a, b)| a.checked_sub(b));
            let us = used.map(|u| u.as_secs_f64() * 1e6 / figures.requests.max(1) as f64);
            (*name, us)
        })
        .collect();
    (figures, per_request)
}

/// A run's figures with its processes' CPU time per request.
type Measured = (Figures, Vec<(&'static str, Option<f64>)>);

/// The run with the median throughput. `runs` is not empty.
fn median(mut runs: Vec<Measured>) -> Measured {
    runs.sort_by(|a, b| a.0.requests_per_sec.total_cmp(&b.0.requests_per_sec));
    runs.swap_remove(runs.len() / 2)
}

/// The processes a benchmark run measures, started once.
struct Rig {
    bin: PathBuf,
    dir: PathBuf,
    upstream: SocketAddr,
    /// The simulated upstream.
    sim: Process,
    forwarder: Process,
    forwarder_addr: SocketAddr,
    nginx: nginx::Nginx,
}

/// How many keys the measured gateways serve.
const KEYS: usize = 10_000;

/// Usage records in the store a report is run against while traffic flows.
const REPORT_RECORDS: u64 = 1_000_000;

/// Builds the release gateway and starts the simulated upstream (accepting
/// the keys' secrets) and the bare forwarder.
fn start_rig() -> Result<Rig> {
    // KEYPOOL_BENCH_BIN measures another build of the gateway (an older
    // commit's, for an A/B comparison on the same machine in one session).
    let bin = match std::env::var_os("KEYPOOL_BENCH_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => {
            crate::cargo(&["build", "--release", "-p", "gateway"], &[])?;
            root().join("target/release/gateway")
        }
    };
    let dir = root().join("target/bench-gateway");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let (sim, upstream) = spawn_listening(
        Command::new(&bin)
            .args(["sim-upstream", "--keys", &KEYS.to_string()])
            .env("RUST_LOG", "error"),
        "the simulated upstream",
    )?;
    let me_exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let (forwarder, forwarder_addr) = spawn_listening(
        Command::new(me_exe).args(["forward", &upstream.to_string(), BENCH_KEY]),
        "the bare forwarder",
    )?;
    wait_until_up(upstream)?;
    let nginx = nginx::start(&dir, upstream)?;
    Ok(Rig {
        bin,
        dir,
        upstream,
        sim,
        forwarder,
        forwarder_addr,
        nginx,
    })
}

/// Where a measured gateway keeps its state.
#[derive(Clone, Copy, Debug)]
enum Storage<'a> {
    Memory,
    Sqlite(&'a Path),
    /// A Postgres database shared with other instances, this one's outbox
    /// in its own directory.
    Postgres {
        url: &'a str,
        data_dir: &'a Path,
    },
}

impl Storage<'_> {
    /// The configuration's `[storage]` (and `[cluster]`) sections.
    fn sections(&self) -> String {
        match self {
            Storage::Memory => String::new(),
            Storage::Sqlite(db) => format!("\n[storage]\npath = \"{}\"\n", db.display()),
            Storage::Postgres { url, data_dir } => format!(
                "\n[storage]\nurl = \"{url}\"\n\n[cluster]\ndata_dir = \"{}\"\n",
                data_dir.display()
            ),
        }
    }
}

impl Rig {
    /// A gateway serving the keys, its state kept as `storage` says.
    fn gateway(&self, storage: Storage<'_>) -> Result<(Process, SocketAddr)> {
        self.gateway_with(storage, "")
    }

    /// [`gateway`](Self::gateway), with `extra` sections in its file.
    fn gateway_with(&self, storage: Storage<'_>, extra: &str) -> Result<(Process, SocketAddr)> {
        let upstream = (self.upstream, KEYS);
        start_gateway(&self.bin, &self.dir, upstream, storage, extra)
    }
}

/// A gateway serving the first `keys` of `upstream`'s keys, its state kept
/// as `storage` says, with `extra` sections in its file; ready to serve.
fn start_gateway(
    bin: &Path,
    dir: &Path,
    (upstream, keys): (SocketAddr, usize),
    storage: Storage<'_>,
    extra: &str,
) -> Result<(Process, SocketAddr)> {
    let addr = local(free_port()?)?;
    let config = config_with_keys(dir, upstream, addr, keys, storage)?;
    if !extra.is_empty() {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&config)
            .map_err(|e| e.to_string())?;
        file.write_all(extra.as_bytes())
            .map_err(|e| e.to_string())?;
    }
    let gw = spawn_gateway(bin, &config)?;
    wait_until_up(addr)?;
    Ok((gw, addr))
}

/// What a benchmark section is made of.
#[derive(Default)]
struct Section {
    rows: Vec<String>,
    cpu_rows: Vec<String>,
    store_rows: Vec<String>,
    store_cpu_rows: Vec<String>,
    trace_rows: Vec<String>,
    report_rows: Vec<String>,
    agent_rows: Vec<String>,
    affinity_rows: Vec<String>,
    verdicts: Vec<String>,
}

/// What a benchmark run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Only {
    /// Everything, for docs/benchmarks.md.
    Everything,
    /// The 16-connection comparison, for profiling sessions.
    Comparison,
    /// The store's cost and reports beside traffic.
    Store,
    /// What exporting traces costs.
    Traces,
    /// Prompt-cache affinity's cached share.
    Affinity,
}

/// Builds the release gateway, runs the benchmark, and returns the markdown section.
pub(crate) fn bench_gateway(only: Only) -> Result<String> {
    let rig = start_rig()?;
    if only == Only::Affinity {
        let (rows, verdict) = affinity::rows(&rig.bin, &rig.dir)?;
        return Ok(format!("{}\n\n{verdict}\n", rows.join("\n")));
    }
    if only == Only::Traces {
        let mut out = Section::default();
        traces::trace_cost(&rig, &mut out)?;
        return Ok(format!(
            "{}\n\n{}\n",
            out.trace_rows.join("\n"),
            out.verdicts.join("\n")
        ));
    }
    if only == Only::Store {
        let mut out = Section::default();
        store_cost(&rig, &mut out)?;
        report_under_load(&rig, &mut out)?;
        return Ok(format!(
            "{}

{}

{}

{}
",
            out.store_rows.join("\n"),
            out.store_cpu_rows.join("\n"),
            out.report_rows.join("\n"),
            out.verdicts.join("\n")
        ));
    }
    let quick = only == Only::Comparison;
    let (gw, gateway) = rig.gateway(Storage::Memory)?;
    // Warm up, then measure memory with the keys loaded and traffic seen.
    load(
        gateway,
        "/v1/chat/completions",
        None,
        4,
        Duration::from_secs(1),
    );
    let rss = rss_mib(gw.0.id());
    let mut out = Section::default();
    let connection_counts: &[usize] = if quick { &[16] } else { &[16, 64] };
    for &connections in connection_counts {
        compare(&rig, (&gw, gateway), connections, &mut out);
    }
    agent::rows(&rig, gateway, &mut out);
    out.verdicts.push(match rss {
        Some(mib) => format!(
            "- Resident memory of the gateway with {KEYS} keys configured, after warm-up: {mib:.1} MiB (target ≤ 30 MB: {}).",
            if mib * 1.048_576 <= 30.0 { "met" } else { "MISSED" }
        ),
        None => "- Resident memory: not measured (no /proc on this machine).".into(),
    });
    drop(gw);
    if quick {
        return Ok(format!(
            "{}\n\n{}\n\n{}\n\n{}\n",
            out.rows.join("\n"),
            out.cpu_rows.join("\n"),
            out.agent_rows.join("\n"),
            out.verdicts.join("\n")
        ));
    }
    traces::trace_cost(&rig, &mut out)?;
    store_cost(&rig, &mut out)?;
    report_under_load(&rig, &mut out)?;
    let (rows, verdict) = affinity::rows(&rig.bin, &rig.dir)?;
    out.affinity_rows = rows;
    out.verdicts.push(verdict);
    drop(rig);
    Ok(markdown(&out))
}

/// The gateway, the upstream directly and the bare forwarder at
/// `connections`: throughput, latency, and CPU per request.
fn compare(
    rig: &Rig,
    (gw, gateway): (&Process, SocketAddr),
    connections: usize,
    out: &mut Section,
) {
    let me = std::process::id().to_string();
    let (sim_pid, gw_pid) = (rig.sim.0.id().to_string(), gw.0.id().to_string());
    let forwarder_pid = rig.forwarder.0.id().to_string();
    let run = |addr, authorization, proxy: Option<(&'static str, &String)>| {
        let mut processes = vec![
            ("load generator", me.clone()),
            ("upstream", sim_pid.clone()),
        ];
        processes.extend(proxy.map(|(name, pid)| (name, pid.clone())));
        with_cpu(&processes, || {
            load(
                addr,
                "/v1/chat/completions",
                authorization,
                connections,
                Duration::from_secs(5),
            )
        })
    };
    // This machine's noise is large (the same binary's share of direct
    // throughput has read from 16% to 33%), so at 16 connections the three
    // targets take turns for three rounds and each keeps its median round.
    let rounds = if connections == 16 { 3 } else { 1 };
    let (mut direct, mut bare, mut through) = (Vec::new(), Vec::new(), Vec::new());
    let mut nginx = Vec::new();
    for _ in 0..rounds {
        direct.push(run(rig.upstream, Some(BENCH_KEY), None));
        bare.push(run(
            rig.forwarder_addr,
            None,
            Some(("proxy", &forwarder_pid)),
        ));
        // nginx's workers are processes of their own: no CPU row for it.
        nginx.push(run(rig.nginx.addr, None, None));
        through.push(run(gateway, None, Some(("proxy", &gw_pid))));
    }
    let (direct, bare, through) = (median(direct), median(bare), median(through));
    let nginx = median(nginx);
    for (target, (f, cpu)) in [
        ("upstream directly", &direct),
        ("through a bare forwarder", &bare),
        ("through nginx", &nginx),
        ("through the gateway", &through),
    ] {
        out.rows.push(row(connections, target, f));
        if connections == 16 && target != "through nginx" {
            out.cpu_rows.push(cpu_row(target, cpu));
        }
    }
    if connections == 16 {
        out.verdicts
            .extend(share_verdicts(&direct.0, &bare.0, &through.0));
        let share = through.0.requests_per_sec / nginx.0.requests_per_sec.max(1.0);
        out.verdicts.push(format!(
            "- Small requests at 16 connections: the gateway reaches {:.2} of nginx's throughput (target ≥ 0.65: {}).",
            share,
            if share >= 0.65 { "met" } else { "MISSED" }
        ));
    }
}

/// One row of the CPU table.
fn cpu_row(target: &str, cpu: &[(&'static str, Option<f64>)]) -> String {
    let cell = |name: &str| {
        cpu.iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, us)| *us)
            .map_or_else(|| "–".to_owned(), |us| format!("{us:.1} µs"))
    };
    let total: Option<f64> = cpu.iter().map(|(_, us)| *us).sum();
    format!(
        "| {target} | {} | {} | {} | {} |",
        cell("load generator"),
        cell("upstream"),
        cell("proxy"),
        total.map_or_else(|| "–".to_owned(), |us| format!("{us:.1} µs"))
    )
}

/// A latency difference rounded to hundredths, with no "-0.00" from noise.
fn delta_ms(ms: f64) -> f64 {
    let rounded = (ms * 100.0).round() / 100.0;
    if rounded == 0.0 { 0.0 } else { rounded }
}

fn share_verdicts(direct: &Figures, bare: &Figures, through: &Figures) -> [String; 2] {
    let share = |f: &Figures| f.requests_per_sec / direct.requests_per_sec.max(1.0);
    let added = through.p99_ms - direct.p99_ms;
    [
        format!(
            "- At 16 connections the gateway keeps {:.0}% of direct throughput (target ≥ 50%: {}) and adds {:.2} ms at p99 (target ≤ 1 ms: {}).",
            share(through) * 100.0,
            if share(through) >= 0.5 {
                "met"
            } else {
                "MISSED"
            },
            delta_ms(added),
            if added <= 1.0 { "met" } else { "MISSED" }
        ),
        format!(
            "- For scale, the bare forwarder (no parsing, no pool, no accounting) keeps {:.0}% of direct throughput and adds {:.2} ms at p99; the gateway reaches {:.0}% of the forwarder's throughput.",
            share(bare) * 100.0,
            delta_ms(bare.p99_ms - direct.p99_ms),
            through.requests_per_sec / bare.requests_per_sec.max(1.0) * 100.0
        ),
    ]
}

/// The same gateway keeping every request in SQLite, and (where a Postgres
/// server answers) in Postgres, against the in-memory store: rounds
/// alternate, so all see the same machine.
fn store_cost(rig: &Rig, out: &mut Section) -> Result<()> {
    let db = rig.dir.join("bench.db");
    remove_db(&db);
    let pg = cluster::database(rig)?;
    let (memory, memory_addr) = rig.gateway(Storage::Memory)?;
    let (sqlite, sqlite_addr) = rig.gateway(Storage::Sqlite(&db))?;
    let postgres = match &pg {
        Some((url, _server)) => Some(rig.gateway(Storage::Postgres {
            url,
            data_dir: &rig.dir.join("pg-one"),
        })?),
        None => None,
    };
    let mut addrs = vec![
        ("gateway, in-memory store", memory_addr),
        ("gateway, SQLite store", sqlite_addr),
    ];
    addrs.extend(
        postgres
            .as_ref()
            .map(|(_, a)| ("gateway, Postgres store", *a)),
    );
    let pids: Vec<String> = [
        Some(&memory),
        Some(&sqlite),
        postgres.as_ref().map(|(p, _)| p),
    ]
    .into_iter()
    .flatten()
    .map(|p| p.0.id().to_string())
    .collect();
    let medians = alternate(&addrs, &pids, 5);
    for ((target, _), (f, cpu)) in addrs.iter().zip(&medians) {
        out.store_rows.push(row(16, target, f));
        out.store_cpu_rows.push(store_cpu_row(target, cpu));
    }
    store_verdicts(&medians, recorded_requests(sqlite_addr), out);
    drop((memory, sqlite, postgres));
    if let Some((url, _server)) = &pg {
        cluster::three_instances(rig, url, out)?;
    }
    Ok(())
}

/// `rounds` rounds of 3 s runs at 16 connections, taking turns between
/// `addrs` (served by the gateways `pids`): each target's median run, with
/// the CPU its gateway and the Postgres server spent.
fn alternate(addrs: &[(&str, SocketAddr)], pids: &[String], rounds: usize) -> Vec<Measured> {
    let mut runs: Vec<Vec<Measured>> = addrs.iter().map(|_| Vec::new()).collect();
    for _ in 0..rounds {
        for (((_, addr), runs), pid) in addrs.iter().zip(&mut runs).zip(pids) {
            let processes = [
                ("gateway", pid.clone()),
                ("database server", POSTGRES_SERVER.to_owned()),
            ];
            runs.push(with_cpu(&processes, || {
                load(
                    *addr,
                    "/v1/chat/completions",
                    None,
                    16,
                    Duration::from_secs(3),
                )
            }));
        }
    }
    runs.into_iter().map(median).collect()
}

/// The store's verdicts from the median runs (memory, SQLite, and Postgres
/// when there is one) and the records the SQLite store holds.
fn store_verdicts(medians: &[Measured], stored: Option<u64>, out: &mut Section) {
    let cpu = |i: usize, name: &str| {
        medians
            .get(i)
            .and_then(|(_, cpu)| cpu.iter().find(|(n, _)| *n == name))
            .and_then(|(_, us)| *us)
            .unwrap_or(0.0)
    };
    let rps = |i: usize| medians.get(i).map_or(0.0, |(f, _)| f.requests_per_sec);
    let kept = rps(1) / rps(0).max(1.0);
    out.verdicts.push(format!(
        "- With every request committed to SQLite before its answer, the gateway keeps {:.0}% of its in-memory-store throughput (median of 5 alternating 3 s runs; target ≥ 80%: {}){}.",
        kept * 100.0,
        if kept >= 0.8 { "met" } else { "MISSED" },
        stored.map_or_else(String::new, |n| format!("; its database holds {n} usage records"))
    ));
    if medians.len() > 2 {
        let kept = rps(2) / rps(1).max(1.0);
        out.verdicts.push(format!(
            "- One instance on Postgres (answers committed to its local outbox, shipped in batches) keeps {:.0}% of its SQLite throughput (target ≥ 90%: {}). The gateway process spends {:.1} µs of CPU per answer on Postgres against {:.1} µs on SQLite; the Postgres server spends {:.1} µs per answer storing it, on the same 2 cores as the gateway, the upstream and the load generator.",
            kept * 100.0,
            if kept >= 0.9 { "met" } else { "MISSED" },
            cpu(2, "gateway"),
            cpu(1, "gateway"),
            cpu(2, "database server"),
        ));
    }
}

/// One row of the store runs' CPU table: the gateway's and the Postgres
/// server's CPU time per answered request.
fn store_cpu_row(target: &str, cpu: &[(&'static str, Option<f64>)]) -> String {
    let cell = |name: &str| {
        cpu.iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, us)| *us)
            .map_or_else(|| "–".to_owned(), |us| format!("{us:.1} µs"))
    };
    format!(
        "| {target} | {} | {} |",
        cell("gateway"),
        cell("database server")
    )
}

fn row(connections: usize, target: &str, f: &Figures) -> String {
    format!(
        "| {connections} | {target} | {:.0} | {:.2} ms | {:.2} ms | {} |",
        f.requests_per_sec, f.p50_ms, f.p99_ms, f.errors
    )
}

fn remove_db(db: &Path) {
    for suffix in ["", "-wal", "-shm", ".lock"] {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// Chat latency on a SQLite store of [`REPORT_RECORDS`] usage records,
/// alone and while full usage reports run back to back beside it.
fn report_under_load(rig: &Rig, out: &mut Section) -> Result<()> {
    let db = rig.dir.join("report.db");
    remove_db(&db);
    let filled = Command::new(&rig.bin)
        .args([
            "fill-usage",
            "--records",
            &REPORT_RECORDS.to_string(),
            "--db",
        ])
        .arg(&db)
        .env("RUST_LOG", "error")
        .status()
        .map_err(|e| format!("cannot fill the store: {e}"))?;
    if !filled.success() {
        return Err(format!("gateway fill-usage failed ({filled})"));
    }
    let (gw, addr) = rig.gateway(Storage::Sqlite(&db))?;
    let chat = || {
        load(
            addr,
            "/v1/chat/completions",
            None,
            4,
            Duration::from_secs(5),
        )
    };
    let alone = chat();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reports = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut took = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                if recorded_requests(addr).is_some() {
                    took.push(t.elapsed());
                }
            }
            took
        })
    };
    let beside = chat();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut took = reports.join().map_err(|_| "the report thread panicked")?;
    drop(gw);
    took.sort();
    let report_ms = took
        .get(took.len() / 2)
        .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    out.report_rows.push(row(4, "chat alone", &alone));
    out.report_rows
        .push(row(4, "chat while usage reports run back to back", &beside));
    let added = beside.p99_ms - alone.p99_ms;
    out.verdicts.push(format!(
        "- With {REPORT_RECORDS} usage records stored, {} full `/v1/usage` reports ran during the second run (median {report_ms:.0} ms each, on their own read connection); chat answers' p99 moved by {added:+.2} ms (target: a few ms, ≤ 5 ms: {}).",
        took.len(),
        if added <= 5.0 { "met" } else { "MISSED" }
    ));
    Ok(())
}

fn markdown(out: &Section) -> String {
    format!(
        "## Gateway: load\n\n\
         `cargo xtask bench-gateway`: the release `gateway` serving {KEYS} keys (one provider, \
         least-used) in front of the simulated upstream, each its own process on loopback; \
         keep-alive HTTP/1.1 load from the xtask for 5 s per row at each connection count, against \
         the gateway, against the upstream directly and, for scale, through a bare forwarder \
         (`cargo xtask forward`: a blocking thread per connection that passes bytes on with the \
         key added, and nothing else) and through nginx, in the same run. At 16 connections the \
         four take turns for three rounds and each row is the median round. The load generator, \
         the upstream and the proxy share the machine's 2 cores.\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n\
         CPU time each process spent per answered request at 16 connections (user + system, \
         from /proc), which is what bounds throughput when all three share 2 cores:\n\n\
         | target | load generator | upstream | proxy | all |\n|---|---|---|---|---|\n{}\n\n\
         A coding agent's request: a 200 KB chat history (turns of text, tool calls with JSON \
         arguments, tool results of escaped code), directly, through nginx \
         (`worker_processes 2`, keep-alive to the upstream, the key added: the practical one-hop \
         reference) and through the gateway, taking turns for three rounds of 3 s; each row is \
         the median round (by p50 at 1 connection, by throughput at 16):\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n\
         The store's cost at 16 connections (every answer committed to SQLite, or to the \
         local outbox of an instance on Postgres and shipped in batches), and three instances \
         on one Postgres database with 48 connections spread over them:\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n\
         CPU time per answered request in those single-instance runs (median run), of the gateway \
         and of every process of the Postgres server (which shares the same 2 cores here):\n\n\
         | target | gateway | Postgres server |\n|---|---|---|\n{}\n\n\
         Traces: the gateway (in-memory store) with and without `[telemetry] otlp_endpoint` \
         pointed at a collector stand-in in the load generator, taking turns for three 3 s runs \
         (median run):\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n\
         Usage reports beside traffic: a gateway on a SQLite store of {REPORT_RECORDS} usage \
         records (`gateway fill-usage`: 30 days, 50 client keys, 5 teams, 4 models), chat at 4 \
         connections for 5 s alone, then again while a client asks for the full `/v1/usage` \
         report (every record aggregated) back to back:\n\n\
         | connections | target | requests/s | p50 | p99 | errors |\n|---|---|---|---|---|---|\n{}\n\n\
         Prompt-cache affinity: 50 conversations of 10 turns (a 2 KB system prompt, 4 KB of tool \
         output a turn, each turn the whole history so far), all at once, through a gateway over a simulated upstream \
         whose keys each keep a prompt cache (`gateway sim-upstream --prompt-cache`: the \
         leading messages a key saw in the last 5 minutes are read from its cache); input \
         priced at `gpt-4o-mini`'s rates ($0.15 a million tokens, $0.075 cached):\n\n\
         | target | input tokens | cached | cached share | input cost |\n|---|---|---|---|---|\n{}\n\n{}\n",
        out.rows.join("\n"),
        out.cpu_rows.join("\n"),
        out.agent_rows.join("\n"),
        out.store_rows.join("\n"),
        out.store_cpu_rows.join("\n"),
        out.trace_rows.join("\n"),
        out.report_rows.join("\n"),
        out.affinity_rows.join("\n"),
        out.verdicts.join("\n")
    )
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
    storage: Storage<'_>,
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
    text.push_str(&storage.sections());
    let path = dir.join(format!("gateway-{}.toml", listen.port()));
    std::fs::write(&path, text).map_err(|e| e.to_string())?;
    Ok(path)
}
