//! A real `gateway serve` process, awaited until its log says it serves.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `gateway serve` process, killed when dropped so that no gateway
/// outlives a failed test.
pub struct Process {
    child: Child,
    /// Where it serves.
    pub addr: SocketAddr,
}

/// The `gateway` binary built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_gateway")
}

impl Process {
    /// Runs `gateway serve --config <config>` with `env`, and returns once
    /// it logs the address it serves on (the config may say port 0). Its
    /// log is read to its end on a thread, so the process never blocks on a
    /// full pipe; should it exit before serving, the error holds the log.
    pub async fn serve(config: &Path, env: &[(&str, &str)]) -> Process {
        let mut child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(config)
            .envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let (ready, serving) = tokio::sync::oneshot::channel::<Result<SocketAddr, String>>();
        std::thread::spawn(move || watch_log(BufReader::new(stdout), ready));
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("gateway: {line}");
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(60), serving)
            .await
            .expect("the gateway did not say it serves within a minute")
            .unwrap()
            .unwrap_or_else(|log| panic!("the gateway exited before serving:\n{log}"));
        Process { child, addr }
    }

    /// `http://ADDR` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads the log until the line `serving on http://ADDR/v1 …`, says where,
/// then reads on to the end.
fn watch_log(log: impl BufRead, ready: tokio::sync::oneshot::Sender<Result<SocketAddr, String>>) {
    let mut ready = Some(ready);
    let mut seen = String::new();
    for line in log.lines().map_while(Result::ok) {
        let Some(tell) = ready.take() else { continue };
        let addr = line
            .split("serving on http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => {
                let _ = tell.send(Ok(addr));
            }
            None => {
                seen.push_str(&line);
                seen.push('\n');
                ready = Some(tell);
            }
        }
    }
    if let Some(tell) = ready {
        let _ = tell.send(Err(seen));
    }
}
