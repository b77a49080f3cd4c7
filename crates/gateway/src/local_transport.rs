//! hyper's client, one per thread: what serving threads that each run their
//! own runtime need to keep every request on its thread.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use transport::{
    Answer, HttpConfig, HyperTransport, RawAnswer, RawRequest, Request, StreamStart, Transport,
    TransportError,
};

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's client for each `ThreadLocalHyper`, by its id.
    static CLIENTS: RefCell<Vec<(u64, HyperTransport)>> = const { RefCell::new(Vec::new()) };
}

/// A [`HyperTransport`] per thread, built on the thread's first request.
///
/// hyper's pool runs each connection as a task on the runtime that opened
/// it, so with one shared client a request on one serving thread could be
/// handed to a connection owned by another and wake that thread twice. With
/// a client per thread, connections stay where their requests are. Cheap to
/// share: it holds only the configuration.
#[derive(Debug)]
pub struct ThreadLocalHyper {
    config: HttpConfig,
    id: u64,
}

impl ThreadLocalHyper {
    /// Checks `config` by building this thread's client (a CA bundle that
    /// cannot be read fails here, not on the first request).
    pub fn new(config: HttpConfig) -> Result<Self, TransportError> {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let client = HyperTransport::new(&config)?;
        CLIENTS.with(|c| c.borrow_mut().push((id, client)));
        Ok(ThreadLocalHyper { config, id })
    }

    /// This thread's client.
    fn local(&self) -> Result<HyperTransport, TransportError> {
        CLIENTS.with(|c| {
            let mut clients = c.borrow_mut();
            if let Some((_, client)) = clients.iter().find(|(id, _)| *id == self.id) {
                return Ok(client.clone());
            }
            let client = HyperTransport::new(&self.config)?;
            clients.push((self.id, client.clone()));
            Ok(client)
        })
    }
}

impl Drop for ThreadLocalHyper {
    fn drop(&mut self) {
        // Other threads' clients go when their threads end.
        let _ = CLIENTS.try_with(|c| {
            if let Ok(mut clients) = c.try_borrow_mut() {
                clients.retain(|(id, _)| *id != self.id);
            }
        });
    }
}

#[async_trait::async_trait]
impl Transport for ThreadLocalHyper {
    async fn send(&self, request: Request) -> Result<Answer, TransportError> {
        self.local()?.send(request).await
    }

    async fn send_stream(&self, request: Request) -> Result<StreamStart, TransportError> {
        self.local()?.send_stream(request).await
    }

    async fn send_raw(&self, request: RawRequest) -> Result<RawAnswer, TransportError> {
        self.local()?.send_raw(request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_per_thread_and_instance() {
        let count = |id: u64| CLIENTS.with(|c| c.borrow().iter().filter(|(i, _)| *i == id).count());
        let a = ThreadLocalHyper::new(HttpConfig::default()).unwrap();
        let b = ThreadLocalHyper::new(HttpConfig::default()).unwrap();
        assert_ne!(a.id, b.id);
        a.local().unwrap();
        a.local().unwrap();
        assert_eq!(count(a.id), 1);
        // Another thread builds its own.
        std::thread::scope(|s| {
            s.spawn(|| {
                assert_eq!(count(a.id), 0);
                a.local().unwrap();
                assert_eq!(count(a.id), 1);
            });
        });
        assert_eq!(count(a.id), 1);
        let gone = a.id;
        drop(a);
        assert_eq!((count(gone), count(b.id)), (0, 1));
    }
}
