//! What exporting traces costs: a gateway with `[telemetry] otlp_endpoint`
//! pointed at a collector stand-in, against the same gateway without.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Measured, Rig, Section, Storage, alternate, row};
use crate::Result;

/// A collector stand-in: answers every POST with 200 and counts the bytes
/// it was sent (keep-alive, a thread per connection).
fn sink() -> Result<(SocketAddr, Arc<AtomicU64>)> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(std::result::Result::ok) {
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = answer_all(conn, &counter);
            });
        }
    });
    Ok((addr, received))
}

/// Reads requests (headers, then `content-length` bytes) and answers each.
fn answer_all(conn: TcpStream, received: &AtomicU64) -> std::io::Result<()> {
    let mut writer = conn.try_clone()?;
    let mut reader = BufReader::new(conn);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        received.fetch_add(length as u64, Ordering::Relaxed);
        writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")?;
    }
}

/// The gateway alone and the gateway exporting traces take turns for three
/// 3 s runs at 16 connections: each one's median, with its CPU per request.
pub(super) fn trace_cost(rig: &Rig, out: &mut Section) -> Result<()> {
    let (collector, received) = sink()?;
    let (plain, plain_addr) = rig.gateway(Storage::Memory)?;
    let traced_section =
        format!("\n[telemetry]\notlp_endpoint = \"http://{collector}/v1/traces\"\n");
    let (traced, traced_addr) = rig.gateway_with(Storage::Memory, &traced_section)?;
    let addrs = [
        ("gateway", plain_addr),
        ("gateway exporting traces", traced_addr),
    ];
    let pids = [plain.0.id().to_string(), traced.0.id().to_string()];
    let medians = alternate(&addrs, &pids, 3);
    let [plain_run, traced_run] = medians.as_slice() else {
        return Err("the trace runs measured nothing".into());
    };
    let cpu = |m: &Measured| {
        m.1.iter()
            .find(|(n, _)| *n == "gateway")
            .and_then(|(_, us)| *us)
            .unwrap_or(0.0)
    };
    for ((name, _), m) in addrs.iter().zip([plain_run, traced_run]) {
        out.trace_rows.push(row(16, name, &m.0));
    }
    let kept = traced_run.0.requests_per_sec / plain_run.0.requests_per_sec.max(1.0);
    out.verdicts.push(format!(
        "- Exporting traces (a span per request and per upstream attempt, batched over OTLP/HTTP to a collector stand-in that received {} KiB): {:.0}% of the throughput without; the gateway spends {:.1} µs of CPU per request against {:.1} µs.",
        received.load(Ordering::Relaxed) / 1024,
        kept * 100.0,
        cpu(traced_run),
        cpu(plain_run),
    ));
    Ok(())
}
