//! The prompt-cache affinity benchmark: 50 conversations of 10 turns each,
//! all at once, through a gateway with 4 keys over a simulated upstream
//! whose keys each keep a prompt cache, with affinity on and off, and
//! through a gateway with one key alone (the best a cache can do). The
//! figure is the share of input tokens read from a cache, and what the
//! input cost at `gpt-4o-mini`'s rates.

use std::io::BufReader;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Process, Storage, round_trip, spawn_listening, start_gateway, wait_until_up};
use crate::Result;

const CONVERSATIONS: usize = 50;
const TURNS: usize = 10;
const KEYS: usize = 4;

/// Input tokens of a run: all, and those read from a cache.
#[derive(Clone, Copy, Debug, Default)]
struct Tokens {
    input: u64,
    cached: u64,
}

impl Tokens {
    fn share(self) -> f64 {
        self.cached as f64 / self.input.max(1) as f64
    }

    /// What the input cost, in micro-dollars, at `gpt-4o-mini`'s rates
    /// ($0.15 a million input tokens, $0.075 cached), rounded up.
    fn micros(self) -> u64 {
        (self.input.saturating_sub(self.cached) * 150_000 + self.cached * 75_000)
            .div_ceil(1_000_000)
    }
}

/// One conversation: `TURNS` requests on one connection, each the whole
/// history so far; what its answers said of input and cached tokens.
fn conversation(addr: SocketAddr, c: usize) -> std::io::Result<Tokens> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut stream = BufReader::new(stream);
    let mut history = vec![
        json!({"role": "system", "content": "You are a coding agent working in a large repository. Read before you write. ".repeat(30)}),
        json!({"role": "user", "content": format!("Task {c}: make the failing tests in crate {c} pass.")}),
    ];
    let mut tokens = Tokens::default();
    let mut answer = Vec::new();
    for turn in 0..TURNS {
        let body = json!({"model": "gpt-4o-mini", "messages": history}).to_string();
        let request = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        if round_trip(&mut stream, request.as_bytes(), &mut answer)? != 200 {
            return Err(std::io::Error::other("an answer was not 200"));
        }
        let text = String::from_utf8_lossy(&answer);
        let json: Value = text
            .split_once("\r\n\r\n")
            .and_then(|(_, b)| serde_json::from_str(b).ok())
            .unwrap_or_default();
        let number = |at: &str| json.pointer(at).and_then(Value::as_u64).unwrap_or(0);
        tokens.input += number("/usage/prompt_tokens");
        tokens.cached += number("/usage/prompt_tokens_details/cached_tokens");
        let reply = json.pointer("/choices/0/message").cloned();
        history.push(reply.unwrap_or_else(|| json!({"role": "assistant", "content": ""})));
        // A tool's output, as agents send back: the history grows by 4 KB a turn.
        history.push(json!({"role": "user", "content": format!("Turn {turn}: the test output is below. ").repeat(100)}));
    }
    Ok(tokens)
}

/// Every conversation at once against `addr`.
fn run(addr: SocketAddr) -> Result<Tokens> {
    let threads: Vec<_> = (0..CONVERSATIONS)
        .map(|c| std::thread::spawn(move || conversation(addr, c)))
        .collect();
    let mut total = Tokens::default();
    for t in threads {
        let tokens = t
            .join()
            .map_err(|_| "a conversation thread panicked".to_owned())?
            .map_err(|e| format!("a conversation failed: {e}"))?;
        total.input += tokens.input;
        total.cached += tokens.cached;
    }
    Ok(total)
}

/// The simulated upstream with `KEYS` keys, each with a prompt cache.
fn upstream(bin: &Path) -> Result<(Process, SocketAddr)> {
    let (sim, addr) = spawn_listening(
        Command::new(bin)
            .args([
                "sim-upstream",
                "--keys",
                &KEYS.to_string(),
                "--prompt-cache",
            ])
            .env("RUST_LOG", "error"),
        "the simulated upstream with prompt caches",
    )?;
    wait_until_up(addr)?;
    Ok((sim, addr))
}

/// The rows and the verdict of the affinity benchmark.
pub(super) fn rows(bin: &Path, dir: &Path) -> Result<(Vec<String>, String)> {
    let mut measured = Vec::new();
    for (target, keys, extra) in [
        ("one key alone", 1, ""),
        ("4 keys, affinity on (the default)", KEYS, ""),
        (
            "4 keys, affinity off",
            KEYS,
            "\n[routing]\ncache_affinity_secs = 0\n",
        ),
    ] {
        // A fresh upstream each time: no cache left over from another run.
        let (sim, upstream) = upstream(bin)?;
        let (gw, addr) = start_gateway(bin, dir, (upstream, keys), Storage::Memory, extra)?;
        let tokens = run(addr)?;
        drop((gw, sim));
        measured.push((target, tokens));
    }
    let rows = measured
        .iter()
        .map(|(target, t)| {
            format!(
                "| {target} | {} | {} | {:.1}% | ${:.4} |",
                t.input,
                t.cached,
                t.share() * 100.0,
                t.micros() as f64 / 1e6
            )
        })
        .collect();
    let share = |i: usize| measured.get(i).map_or(0.0, |(_, t)| t.share());
    let ratio = share(1) / share(0).max(f64::MIN_POSITIVE);
    let verdict = format!(
        "- Prompt-cache affinity, {CONVERSATIONS} conversations of {TURNS} turns over {KEYS} keys: {:.1}% of input tokens cached, {:.0}% of what one key alone gets (target ≥ 90%: {}); {:.1}% with affinity off.",
        share(1) * 100.0,
        ratio * 100.0,
        if ratio >= 0.9 { "met" } else { "MISSED" },
        share(2) * 100.0,
    );
    Ok((rows, verdict))
}
