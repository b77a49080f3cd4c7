//! The agent-history rows: a 200 KB chat request (turns of text, tool calls
//! with JSON arguments, tool results full of escaped code), sent directly,
//! through nginx and through the gateway, at 1 and 16 connections.

use std::net::SocketAddr;
use std::time::Duration;

use super::{BENCH_KEY, Figures, Rig, Section, delta_ms, load_body, row};

/// A chat body of at least `kb` KB, as a coding agent sends it.
pub(super) fn history(kb: usize) -> String {
    let mut messages = vec![format!(
        r#"{{"role":"system","content":"{}"}}"#,
        "You are a coding agent. ".repeat(40)
    )];
    let mut i = 0;
    while messages.iter().map(String::len).sum::<usize>() < kb * 1024 {
        let ask = format!("Step {i}: fix the failing test in src/lib.rs, line {i}. ").repeat(6);
        messages.push(format!(r#"{{"role":"user","content":"{ask}"}}"#));
        messages.push(format!(
            r#"{{"role":"assistant","content":null,"tool_calls":[{{"id":"call_{i}","type":"function","function":{{"name":"read_file","arguments":"{{\"path\":\"src/m{i}.rs\",\"lines\":[1,400]}}"}}}}]}}"#
        ));
        let code = r#"fn main() {\n    println!(\"hello\\tworld\");\n}\n"#.repeat(12);
        messages.push(format!(
            r#"{{"role":"tool","tool_call_id":"call_{i}","content":"{code}"}}"#
        ));
        i += 1;
    }
    format!(
        r#"{{"model":"gpt-4o-mini","messages":[{}],"tools":[{{"type":"function","function":{{"name":"read_file","parameters":{{"type":"object"}}}}}}]}}"#,
        messages.join(",")
    )
}

/// One run of `body` against `addr` for 3 s.
fn run(addr: SocketAddr, body: &str, authorization: Option<&str>, connections: usize) -> Figures {
    load_body(
        &[addr],
        ("/v1/chat/completions", body),
        authorization,
        connections,
        Duration::from_secs(3),
    )
}

/// Rounds in which the three targets take turns: one 5 s run read from
/// 0.46 to 0.75 ms for the same build's added latency, so each target
/// keeps its median round.
const ROUNDS: usize = 3;

/// The median of `runs` (not empty) by `by`.
fn median_by(mut runs: Vec<Figures>, by: impl Fn(&Figures) -> f64) -> Figures {
    runs.sort_by(|a, b| by(a).total_cmp(&by(b)));
    runs.swap_remove(runs.len() / 2)
}

/// The rows and verdicts of the 200 KB request.
pub(super) fn rows(rig: &Rig, gateway: SocketAddr, out: &mut Section) {
    let body = history(200);
    let kb = body.len() / 1024;
    let mut at = |connections: usize| {
        let (mut direct, mut nginx, mut through) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            direct.push(run(rig.upstream, &body, Some(BENCH_KEY), connections));
            nginx.push(run(rig.nginx.addr, &body, None, connections));
            through.push(run(gateway, &body, None, connections));
        }
        // One connection is judged on latency, sixteen on throughput.
        let by = |f: &Figures| {
            if connections == 1 {
                f.p50_ms
            } else {
                f.requests_per_sec
            }
        };
        let (direct, nginx, through) = (
            median_by(direct, by),
            median_by(nginx, by),
            median_by(through, by),
        );
        for (target, f) in [
            ("upstream directly", &direct),
            ("through nginx", &nginx),
            ("through the gateway", &through),
        ] {
            out.agent_rows.push(row(connections, target, f));
        }
        (direct, nginx, through)
    };
    let (direct, nginx, through) = at(1);
    let added = through.p50_ms - direct.p50_ms;
    out.verdicts.push(format!(
        "- A {kb} KB agent history at 1 connection: the gateway adds {:.2} ms at p50 over direct (target ≤ 0.3 ms: {}); nginx adds {:.2} ms.",
        delta_ms(added),
        if added <= 0.3 { "met" } else { "MISSED" },
        delta_ms(nginx.p50_ms - direct.p50_ms),
    ));
    let (direct, nginx, through) = at(16);
    let share = |f: &Figures| f.requests_per_sec / direct.requests_per_sec.max(1.0);
    out.verdicts.push(format!(
        "- A {kb} KB agent history at 16 connections: the gateway keeps {:.0}% of direct throughput (target ≥ 50%: {}); nginx keeps {:.0}%.",
        share(&through) * 100.0,
        if share(&through) >= 0.5 { "met" } else { "MISSED" },
        share(&nginx) * 100.0,
    ));
}
