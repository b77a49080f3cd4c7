//! `[cluster]`: this instance among several sharing one Postgres database.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[cluster]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// This instance's name in logs, `/readyz` and the leader's record
    /// (default: the host name and the process id).
    #[serde(default)]
    pub instance: Option<String>,
    /// Where this instance keeps its own files: the outbox of usage records
    /// not yet shipped to Postgres (default `gateway-data`). Restart an
    /// instance with the same directory so that nothing it answered for
    /// before a crash is lost; two instances never share one.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// How often this instance looks for the others' changes when no
    /// notification comes (the backstop for notifications lost while a
    /// connection was down), in milliseconds (default 1000).
    #[serde(default)]
    pub poll_ms: Option<u64>,
}

/// The data directory when none is configured.
const DEFAULT_DATA_DIR: &str = "gateway-data";

impl ClusterConfig {
    /// This instance's name.
    pub fn instance(&self) -> String {
        self.instance.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "gateway".into());
            format!("{host}-{}", std::process::id())
        })
    }

    /// How often to poll for changes.
    pub fn poll_every(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.poll_ms.unwrap_or(1_000).max(10))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.data_dir
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DATA_DIR))
    }

    /// Checks the section against the storage it needs.
    pub(super) fn check(
        &self,
        present: bool,
        storage: &super::StorageConfig,
    ) -> Result<Vec<String>, ConfigError> {
        if present && storage.url.is_none() {
            return Err(ConfigError::new(
                "cluster",
                "[cluster] needs [storage] url = \"${DATABASE_URL}\" (a Postgres database the instances share)",
            ));
        }
        if let Some(name) = &self.instance
            && (name.is_empty() || name.len() > 64 || name.chars().any(char::is_control))
        {
            return Err(ConfigError::new(
                "cluster.instance",
                "must be 1 to 64 printable characters",
            ));
        }
        Ok(if storage.url.is_some() {
            vec![format!(
                "cluster: instance {}, data in {}",
                self.instance(),
                self.data_dir().display()
            )]
        } else {
            Vec::new()
        })
    }
}
