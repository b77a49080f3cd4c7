//! nginx as the practical one-hop reference: a reverse proxy in front of the
//! simulated upstream that adds the key, with keep-alive to it, and nothing
//! else. Debian's package is installed when it is missing.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use super::{BENCH_KEY, Process, free_port, local, wait_until_up};
use crate::Result;

/// Where Debian's nginx lives.
const NGINX: &str = "/usr/sbin/nginx";

/// Installs Debian's nginx when it is missing.
fn install() -> Result<()> {
    if Path::new(NGINX).exists() {
        return Ok(());
    }
    crate::apt_install(&["nginx"], "the benchmark's one-hop reference")
}

/// The configuration: two workers (one per core, as the gateway's runtime
/// has), bodies up to 16 MiB kept in memory, keep-alive to the upstream.
fn config(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log error;\n\
         events {{ worker_connections 1024; }}\n\
         http {{\n  access_log off;\n  client_max_body_size 16m;\n  client_body_buffer_size 2m;\n\
         client_body_temp_path {d}/nginx-body;\n  proxy_temp_path {d}/nginx-proxy;\n\
         fastcgi_temp_path {d}/nginx-fastcgi;\n  uwsgi_temp_path {d}/nginx-uwsgi;\n  scgi_temp_path {d}/nginx-scgi;\n\
         upstream sim {{ server {upstream}; keepalive 64; keepalive_requests 100000000; }}\n\
         keepalive_requests 100000000;\n\
         server {{\n    listen {listen};\n    location / {{\n      proxy_pass http://sim;\n\
         proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n\
         proxy_set_header Authorization \"Bearer {BENCH_KEY}\";\n    }}\n  }}\n}}\n"
    )
}

/// A running nginx: stopped with its workers when dropped.
pub(super) struct Nginx {
    pub(super) process: Process,
    pub(super) addr: SocketAddr,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers (a SIGKILL would orphan them).
        let _ = Command::new("kill")
            .arg(self.process.0.id().to_string())
            .status();
        let _ = self.process.0.wait();
    }
}

/// Starts nginx in front of `upstream`, its files in `dir`.
pub(super) fn start(dir: &Path, upstream: SocketAddr) -> Result<Nginx> {
    install()?;
    let addr = local(free_port()?)?;
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config(dir, addr, upstream)).map_err(|e| e.to_string())?;
    let process = Process(
        Command::new(NGINX)
            .arg("-c")
            .arg(&file)
            .arg("-p")
            .arg(dir)
            .spawn()
            .map_err(|e| format!("cannot start nginx: {e}"))?,
    );
    wait_until_up(addr)?;
    Ok(Nginx { process, addr })
}
