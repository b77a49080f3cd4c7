//! `gateway demo`: the gateway on the simulated upstream, with paced
//! synthetic traffic, a key rotation halfway, and the dashboard live.

use std::collections::HashMap;
use std::io::Write as _;
use std::time::{Duration, Instant};

use super::{Result, shutdown_signal};
use crate::runtime::Running;
use crate::sim::{self, Behavior};

/// The secret the healthy demo key is rotated to halfway.
const ROTATED: &str = "sk-sim-healthy-rotated-000000005";

/// Width of the progress bar.
const BAR: usize = 30;

pub(super) async fn demo(
    requests: usize,
    concurrency: usize,
    pace: Duration,
    keep_serving: bool,
) -> Result<()> {
    let mut keys = sim::DEMO_KEYS.to_vec();
    keys.push(("demo-healthy (rotated)", ROTATED, Behavior::Healthy));
    let sim = sim::start(&keys).await?;
    let config = crate::demo_config(&sim.base_url(), "127.0.0.1:0");
    let running = crate::start(&config, &crate::demo_env()).await?;
    let base = format!("http://{}", running.addr);
    println!(
        "gateway on {base}/v1, simulated upstream on {}",
        sim.base_url()
    );
    println!(
        "demo keys: one healthy, one rate-limited (429 + Retry-After), one revoked (401), one flaky (503)"
    );
    println!("live dashboard: {base}/dashboard (open it in a browser)\n");
    let http = reqwest::Client::new();
    let started = Instant::now();
    let done = Traffic::new(&running, &http, &base, requests, concurrency, pace)
        .run()
        .await?;
    println!(
        "\n\n{done} requests in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );
    let status = http
        .get(format!("{base}/status"))
        .send()
        .await?
        .text()
        .await?;
    println!("{status}");
    if keep_serving {
        println!("still serving on {base}/v1; dashboard at {base}/dashboard; Ctrl-C to stop");
        shutdown_signal().await;
    } else {
        println!(
            "(add --keep-serving to keep the gateway and its dashboard at {base}/dashboard up)"
        );
    }
    running.shutdown(Duration::from_secs(5)).await;
    Ok(())
}

/// Paced batches of chat requests, and what came back.
struct Traffic<'a> {
    running: &'a Running,
    http: &'a reqwest::Client,
    base: &'a str,
    requests: usize,
    concurrency: usize,
    gap: Duration,
    statuses: HashMap<u16, usize>,
    done: usize,
    /// In a terminal, the text dashboard is redrawn as the traffic runs.
    live: bool,
    drawn: Instant,
}

impl<'a> Traffic<'a> {
    fn new(
        running: &'a Running,
        http: &'a reqwest::Client,
        base: &'a str,
        requests: usize,
        concurrency: usize,
        pace: Duration,
    ) -> Self {
        let batches = requests.div_ceil(concurrency).max(1);
        Traffic {
            running,
            http,
            base,
            requests,
            concurrency,
            gap: pace / u32::try_from(batches).unwrap_or(u32::MAX),
            statuses: HashMap::new(),
            done: 0,
            live: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            drawn: Instant::now(),
        }
    }

    async fn run(mut self) -> Result<usize> {
        let mut rotated = false;
        let all: Vec<usize> = (0..self.requests).collect();
        for batch in all.chunks(self.concurrency) {
            if !self.gap.is_zero() {
                tokio::time::sleep(self.gap).await;
            }
            self.send(batch).await;
            if !rotated && self.done >= self.requests / 2 {
                rotated = true;
                println!(
                    "\n🔁 rotating demo-healthy to a new secret (the old one drains for 5 s)\n"
                );
                rotate(self.http, self.base).await?;
            }
            self.draw();
        }
        Ok(self.done)
    }

    async fn send(&mut self, batch: &[usize]) {
        let calls = batch.iter().map(|i| {
            let url = format!("{}/v1/chat/completions", self.base);
            let body = serde_json::json!({"model": "gpt-4.1", "user": format!("user-{}", i % 97), "max_tokens": 256, "messages": [{"role": "user", "content": "ทดสอบการเชื่อมต่อ API — xin chào"}]});
            let request = self.http.post(url).json(&body);
            async move { request.send().await.map(|r| r.status().as_u16()) }
        });
        for s in futures_util::future::join_all(calls).await {
            *self.statuses.entry(s.unwrap_or(0)).or_default() += 1;
            self.done += 1;
        }
    }

    fn draw(&mut self) {
        if self.live && self.drawn.elapsed() >= Duration::from_millis(400) {
            self.drawn = Instant::now();
            let status = self.running.client().status_report();
            // Home the cursor and clear the screen, then redraw.
            print!("\x1b[H\x1b[2J{}/dashboard\n\n{status}\n", self.base);
        }
        let filled = self.done * BAR / self.requests.max(1);
        print!(
            "\r[{}{}] {}/{} requests  {:?}",
            "#".repeat(filled),
            " ".repeat(BAR - filled),
            self.done,
            self.requests,
            self.statuses
        );
        let _ = std::io::stdout().flush();
    }
}

/// Rotates the healthy demo key's secret, with a short grace period,
/// through the management API as an operator would.
async fn rotate(http: &reqwest::Client, base: &str) -> Result<()> {
    let keys: serde_json::Value = http
        .get(format!("{base}/admin/upstream-keys"))
        .send()
        .await?
        .json()
        .await?;
    let id = keys
        .get("data")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("keys").and_then(serde_json::Value::as_array))
        .flatten()
        .find(|k| k.get("name").and_then(serde_json::Value::as_str) == Some("demo-healthy"))
        .and_then(|k| k.get("id")?.as_str())
        .ok_or("demo-healthy is not in the pool")?
        .to_owned();
    let r = http
        .post(format!("{base}/admin/upstream-keys/{id}/rotate"))
        .json(&serde_json::json!({"secret": ROTATED, "grace_seconds": 5}))
        .send()
        .await?;
    if !r.status().is_success() {
        return Err(format!("the rotation was refused: {}", r.text().await?).into());
    }
    Ok(())
}
