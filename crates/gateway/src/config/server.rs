//! `[server]`: where and how the gateway listens.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// `[server]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Default `127.0.0.1:9000`.
    pub listen: String,
    /// Largest request body in bytes. Default 10 MiB.
    pub body_limit_bytes: usize,
    /// On SIGTERM, in-flight requests get this long to finish. Default 10 s.
    pub shutdown_grace_secs: u64,
    /// Threads serving requests, each with a single-threaded runtime of its
    /// own (`gateway serve`). Default: one per core.
    pub workers: Option<std::num::NonZeroUsize>,
    /// Whether `/metrics`, `/status`, `/status.json` and `/dashboard.json`
    /// answer anyone (`true`) or need the master key or a client key with
    /// `status:read` (`false`). Default: public on a loopback address only.
    pub public_status: Option<bool>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:9000".into(),
            body_limit_bytes: 10 * 1024 * 1024,
            shutdown_grace_secs: 10,
            workers: None,
            public_status: None,
        }
    }
}

impl ServerConfig {
    /// The listen address.
    pub fn listen(&self) -> Result<SocketAddr, ConfigError> {
        self.listen.parse().map_err(|_| {
            ConfigError::new(
                "server.listen",
                format!("{:?} is not an address like 127.0.0.1:9000", self.listen),
            )
        })
    }

    /// Whether the operators' views answer anyone: as the file says, else
    /// on a loopback address only.
    pub fn status_is_public(&self) -> Result<bool, ConfigError> {
        match self.public_status {
            Some(public) => Ok(public),
            None => Ok(self.listen()?.ip().is_loopback()),
        }
    }

    /// How long SIGTERM waits for in-flight requests.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_secs)
    }
}
