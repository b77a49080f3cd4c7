//! From a `postgres://` URL to a pool of connections: TLS when the URL asks
//! for it, timeouts, and messages that name the server but never the
//! password.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;

use crate::store::StoreError;

/// How to reach the database: connection settings without the TLS choice,
/// which is ours (see [`Tls`]).
#[derive(Clone)]
pub(crate) struct Target {
    config: tokio_postgres::Config,
    tls: Tls,
    /// `user@host:port/db`, for messages.
    label: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("label", &self.label)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// Whether connections use TLS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Tls {
    /// Plain TCP or a Unix socket: no `sslmode`, or `disable` / `prefer`.
    Off,
    /// TLS with the server's certificate verified against the webpki roots
    /// and `sslrootcert`: `sslmode=require`, `verify-ca` or `verify-full`.
    /// (Unlike libpq's `require`, the certificate is always verified.)
    Verified {
        /// `sslrootcert`: more trusted certificates (PEM).
        root_cert: Option<PathBuf>,
    },
}

impl Target {
    /// Reads a `postgres://` URL (or a `key=value` connection string).
    /// The error never holds the URL, which may hold a password.
    pub(crate) fn parse(url: &str) -> Result<Self, StoreError> {
        let (rest, tls) = take_tls(url)?;
        let config = tokio_postgres::Config::from_str(&rest).map_err(|e| StoreError::Open {
            what: "the Postgres URL".into(),
            reason: e.to_string(),
        })?;
        if config.get_hosts().is_empty() {
            return Err(StoreError::Open {
                what: "the Postgres URL".into(),
                reason: "it names no host".into(),
            });
        }
        let label = label(&config);
        Ok(Target { config, tls, label })
    }

    /// `user@host:port/db`, never the password.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    /// The same server, another database.
    #[cfg(test)]
    pub(crate) fn with_dbname(&self, db: &str) -> Self {
        let mut config = self.config.clone();
        config.dbname(db);
        Target {
            label: label(&config),
            config,
            tls: self.tls.clone(),
        }
    }

    /// A pool of up to `size` connections, each opened within `timeout`
    /// and running its statements for at most `statement_timeout` on the
    /// server.
    pub(crate) fn pool(
        &self,
        size: usize,
        timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Pool, StoreError> {
        let mut config = self.config.clone();
        config.connect_timeout(timeout);
        config.application_name("keypool-gateway");
        let options = format!(
            "{} -c statement_timeout={}",
            config.get_options().unwrap_or_default(),
            statement_timeout.as_millis()
        );
        config.options(options.trim());
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &self.tls {
            Tls::Off => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
            Tls::Verified { root_cert } => {
                let tls = transport::tls_client_config(root_cert.as_deref()).map_err(|e| {
                    StoreError::Open {
                        what: self.label.clone(),
                        reason: e.to_string(),
                    }
                })?;
                let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                Manager::from_config(config, tls, manager_config)
            }
        };
        Pool::builder(manager)
            .max_size(size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(timeout))
            .create_timeout(Some(timeout))
            .recycle_timeout(Some(timeout))
            .build()
            .map_err(|e| StoreError::Open {
                what: self.label.clone(),
                reason: e.to_string(),
            })
    }
}

/// A connection of its own: it listens for change notifications (which a
/// pooled connection cannot, being shared) and holds session locks such as
/// the leader's. When it breaks, [`notified`](Self::notified) ends.
pub(crate) struct Listener {
    client: tokio_postgres::Client,
    notices: tokio::sync::mpsc::UnboundedReceiver<Notice>,
}

/// The channel on which an instance short on a shared budget asks the
/// others to hand back what they hold free.
pub(crate) const SHORT_CHANNEL: &str = "keypool_short";

/// What a notification says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Notice {
    /// A shared table changed.
    Changed,
    /// An instance is short on a shared budget (the pool's key).
    Short(String),
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

impl Listener {
    /// The connection, for statements of its session.
    pub(crate) fn client(&self) -> &tokio_postgres::Client {
        &self.client
    }

    /// Waits for the next notification; `None` once the connection has
    /// broken.
    pub(crate) async fn notified(&mut self) -> Option<Notice> {
        self.notices.recv().await
    }

    /// A notification already received, if any (without waiting).
    pub(crate) fn pending(&mut self) -> Option<Notice> {
        self.notices.try_recv().ok()
    }
}

/// Drives a listening connection, passing notifications on.
async fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    notices: tokio::sync::mpsc::UnboundedSender<Notice>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                let notice = match n.channel() {
                    SHORT_CHANNEL => Notice::Short(n.payload().to_owned()),
                    _ => Notice::Changed,
                };
                if notices.send(notice).is_err() {
                    return;
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return,
        }
    }
}

impl Target {
    /// Opens a [`Listener`] subscribed to `channel` and to the budget's
    /// shortage channel, within `timeout`.
    pub(crate) async fn listen(
        &self,
        channel: &str,
        timeout: Duration,
    ) -> Result<Listener, StoreError> {
        let mut config = self.config.clone();
        config.connect_timeout(timeout);
        config.application_name("keypool-gateway-listener");
        let (notify, notices) = tokio::sync::mpsc::unbounded_channel();
        let connect = async {
            match &self.tls {
                Tls::Off => {
                    let (client, connection) = config
                        .connect(tokio_postgres::NoTls)
                        .await
                        .map_err(|e| unreachable(self, &e))?;
                    tokio::spawn(drive(connection, notify));
                    Ok::<_, StoreError>(client)
                }
                Tls::Verified { root_cert } => {
                    let tls = transport::tls_client_config(root_cert.as_deref())
                        .map_err(|e| unreachable(self, &e))?;
                    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(tls);
                    let (client, connection) = config
                        .connect(tls)
                        .await
                        .map_err(|e| unreachable(self, &e))?;
                    tokio::spawn(drive(connection, notify));
                    Ok(client)
                }
            }
        };
        let client: tokio_postgres::Client = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| unreachable(self, &"no answer in time"))??;
        let listen = format!("LISTEN {channel}; LISTEN {SHORT_CHANNEL}");
        tokio::time::timeout(timeout, client.batch_execute(&listen))
            .await
            .map_err(|_| unreachable(self, &"no answer in time"))?
            .map_err(|e| unreachable(self, &e))?;
        Ok(Listener { client, notices })
    }
}

/// `user@host:port/db` of `config`.
fn label(config: &tokio_postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let port = config.get_ports().get(i).or(config.get_ports().first());
            let host = match h {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            match port {
                Some(p) => format!("{host}:{p}"),
                None => host,
            }
        })
        .collect();
    let user = config
        .get_user()
        .map(|u| format!("{u}@"))
        .unwrap_or_default();
    let db = config.get_dbname().unwrap_or_default();
    format!("{user}{}/{db}", hosts.join(","))
}

/// Takes `sslmode` and `sslrootcert` out of the URL's query (or the
/// connection string), which the driver does not read the way libpq does,
/// and says which TLS they ask for.
fn take_tls(url: &str) -> Result<(String, Tls), StoreError> {
    let bad = |reason: String| StoreError::Open {
        what: "the Postgres URL".into(),
        reason,
    };
    let (rest, params, separator) = if url.contains("://") {
        match url.split_once('?') {
            Some((base, query)) => (base.to_owned(), query.split('&').collect::<Vec<_>>(), "&"),
            None => (url.to_owned(), Vec::new(), "&"),
        }
    } else {
        (String::new(), url.split_whitespace().collect(), " ")
    };
    let (mut mode, mut root_cert, mut kept) = (None, None, Vec::new());
    for p in params {
        match p.split_once('=') {
            Some(("sslmode", v)) => mode = Some(v.to_owned()),
            Some(("sslrootcert", v)) => root_cert = Some(PathBuf::from(v)),
            _ => kept.push(p),
        }
    }
    let asks_for_tls = matches!(
        mode.as_deref(),
        Some("require" | "verify-ca" | "verify-full")
    );
    if !asks_for_tls && root_cert.is_some() {
        return Err(bad(
            "sslrootcert is given but sslmode does not ask for TLS (use sslmode=verify-full)"
                .into(),
        ));
    }
    let tls = match mode.as_deref() {
        None | Some("disable" | "prefer" | "allow") => Tls::Off,
        Some("require" | "verify-ca" | "verify-full") => Tls::Verified { root_cert },
        Some(other) => return Err(bad(format!("sslmode {other:?} is not one Postgres knows"))),
    };
    let rest = match (rest.is_empty(), kept.is_empty()) {
        (true, _) => kept.join(separator),
        (false, true) => rest,
        (false, false) => format!("{rest}?{}", kept.join(separator)),
    };
    Ok((rest, tls))
}

/// What a failure to reach the database says: the server, and the cause
/// (the driver's messages hold no password).
pub(crate) fn unreachable(target: &Target, e: &impl std::fmt::Display) -> StoreError {
    StoreError::Open {
        what: format!("Postgres at {}", target.label()),
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_follows_sslmode_and_the_label_hides_the_password() {
        let t = Target::parse("postgres://gw:s3cret@db.internal:6432/keypool").unwrap();
        assert_eq!(t.tls, Tls::Off);
        assert_eq!(t.label(), "gw@db.internal:6432/keypool");
        assert!(!format!("{t:?}").contains("s3cret"));
        let t = Target::parse(
            "postgres://gw:s3cret@db/keypool?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            t.tls,
            Tls::Verified {
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        assert_eq!(t.label(), "gw@db:5432/keypool");
        let t = Target::parse("host=localhost user=postgres sslmode=require").unwrap();
        assert_eq!(t.tls, Tls::Verified { root_cert: None });
        for bad in [
            "postgres://gw:s3cret@db/k?sslmode=sometimes",
            "postgres://gw:s3cret@db/k?sslrootcert=/ca.pem",
            "postgres://gw:s3cret@db/k?colour=blue",
        ] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
        }
    }
}
