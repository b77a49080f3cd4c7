//! Group commit without a thread of its own.
//!
//! Writes queue; whichever writer finds the connection free commits every
//! queued write in one transaction and answers each writer; whoever finds it
//! busy leaves its write to the holder, which looks at the queue again after
//! letting go, so no write is left behind. A writer yields to the runtime
//! once before leading, so that the tasks ready on its thread queue their
//! writes first and share the commit. Measured on 2 cores, handing each
//! write to a writer thread instead cost two context switches per request,
//! most of the store's cost.
//!
//! The connection's mutex is only ever held by synchronous code (a commit
//! takes microseconds: WAL appends without fsync), never across an `.await`.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError, TryLockError};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::store::StoreError;

type Waiter = oneshot::Sender<Result<(), String>>;

/// Writes waiting for the next commit.
struct Pending<W> {
    writes: Vec<W>,
    /// (index in `writes`, who waits for it).
    waiters: Vec<(usize, Waiter)>,
}

impl<W> Default for Pending<W> {
    fn default() -> Self {
        Pending {
            writes: Vec::new(),
            waiters: Vec::new(),
        }
    }
}

/// Commits a batch of writes in one transaction.
pub(super) type CommitAll<W> = fn(&mut Connection, &[W]) -> rusqlite::Result<()>;

/// The write connection and its queue of writes of type `W`.
pub(super) struct Writer<W> {
    conn: Mutex<Connection>,
    pending: Mutex<Pending<W>>,
    commit_all: CommitAll<W>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<W> Writer<W> {
    /// A writer on `conn` whose batches `commit_all` commits.
    pub(super) fn new(conn: Connection, commit_all: CommitAll<W>) -> Self {
        Writer {
            conn: Mutex::new(conn),
            pending: Mutex::new(Pending::default()),
            commit_all,
        }
    }

    /// Queues `w` and returns once it is committed.
    pub(super) async fn write(&self, w: W) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            let i = p.writes.len();
            p.writes.push(w);
            p.waiters.push((i, done));
        }
        // Should this task be dropped while it yields (its client went
        // away), the guard still commits the write.
        let lead = Lead(self);
        tokio::task::yield_now().await;
        drop(lead);
        match wait.await {
            Ok(r) => r.map_err(StoreError::Engine),
            Err(_) => Err(StoreError::Stopped),
        }
    }

    /// Runs `f` on the connection between commits of the queue (for work
    /// that is not a queued write, such as pruning), then leads.
    pub(super) fn with_connection<R>(&self, f: impl FnOnce(&mut Connection) -> R) -> R {
        let mut conn = lock(&self.conn);
        self.drain(&mut conn);
        let r = f(&mut conn);
        self.drain(&mut conn);
        drop(conn);
        self.lead();
        r
    }

    /// Commits what is queued if the connection is free (see the module's doc).
    fn lead(&self) {
        loop {
            let mut conn = match self.conn.try_lock() {
                Ok(c) => c,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => return,
            };
            self.drain(&mut conn);
            drop(conn);
            if lock(&self.pending).writes.is_empty() {
                return;
            }
        }
    }

    /// Commits what is queued, batch after batch, until nothing is.
    fn drain(&self, conn: &mut Connection) {
        loop {
            let batch = std::mem::take(&mut *lock(&self.pending));
            if batch.writes.is_empty() {
                return;
            }
            commit(conn, batch, self.commit_all);
        }
    }

    #[cfg(test)]
    pub(super) fn queued(&self) -> usize {
        lock(&self.pending).writes.len()
    }
}

fn commit<W>(conn: &mut Connection, batch: Pending<W>, commit_all: CommitAll<W>) {
    if commit_all(conn, &batch.writes).is_ok() {
        for (_, done) in batch.waiters {
            let _ = done.send(Ok(()));
        }
        return;
    }
    // One bad write must not cost the others: retry them one by one.
    tracing::warn!(
        "a batch of {} writes failed; retrying each",
        batch.writes.len()
    );
    let mut answers: HashMap<usize, Waiter> = batch.waiters.into_iter().collect();
    for (i, w) in batch.writes.iter().enumerate() {
        let result = commit_all(conn, std::slice::from_ref(w)).map_err(|e| e.to_string());
        if let Err(e) = &result {
            tracing::error!("a write was not saved: {e}");
        }
        if let Some(done) = answers.remove(&i) {
            let _ = done.send(result);
        }
    }
}

/// Leads a group commit when dropped, however the task holding it ends.
struct Lead<'a, W>(&'a Writer<W>);

impl<W> Drop for Lead<'_, W> {
    fn drop(&mut self) {
        self.0.lead();
    }
}
