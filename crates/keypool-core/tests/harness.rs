//! Like quinn-proto's `tests/util.rs`: the test owns the clock and steps it to
//! the pool's next wakeup. Nothing ever sleeps.

use std::time::Duration;

use keypool_core::{
    Event, KeyId, KeyPool, Lease, NewKey, NoKeyAvailable, Outcome, PoolConfig, Timestamp,
};

/// 2026-11-22T04:40:52Z, a Sunday, 11:40 in Bangkok.
pub const T0: Timestamp = Timestamp::from_unix_secs(1_795_322_452);

pub fn secret(n: u64) -> String {
    format!("sk-test-{n:016x}")
}

pub struct Sim {
    pub pool: KeyPool,
    pub now: Timestamp,
    pub events: Vec<Event>,
    next_secret: u64,
}

impl Sim {
    pub fn new() -> Self {
        Self::with(PoolConfig::default())
    }

    pub fn with(config: PoolConfig) -> Self {
        Sim {
            pool: KeyPool::new(config).expect("valid config"),
            now: T0,
            events: Vec::new(),
            next_secret: 1,
        }
    }

    /// Adds keys named by `names`, with no limits.
    pub fn keys<const N: usize>(&mut self, names: [&str; N]) -> [KeyId; N] {
        names.map(|n| {
            let secret = self.fresh_secret();
            self.add(NewKey::new(n, secret))
        })
    }

    pub fn fresh_secret(&mut self) -> String {
        self.next_secret += 1;
        secret(self.next_secret)
    }

    pub fn add(&mut self, key: NewKey) -> KeyId {
        let id = self.pool.add(key, self.now).expect("valid key");
        self.drain();
        id
    }

    pub fn drain(&mut self) {
        while let Some(e) = self.pool.poll_event() {
            self.events.push(e);
        }
    }

    /// Events seen since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.drain();
        std::mem::take(&mut self.events)
    }

    pub fn acquire(&mut self) -> Result<Lease, NoKeyAvailable> {
        let r = self.pool.acquire(self.now);
        self.drain();
        r
    }

    pub fn report(&mut self, lease: Lease, outcome: Outcome) {
        self.pool.report(lease, outcome, self.now);
        self.drain();
    }

    /// Acquires a key, reports `outcome` for it, returns the key.
    pub fn serve(&mut self, outcome: Outcome) -> KeyId {
        let lease = self.acquire().expect("a key is available");
        let key = lease.key();
        self.report(lease, outcome);
        key
    }

    /// Moves the clock forward by `d` and applies what is due.
    pub fn advance(&mut self, d: Duration) {
        self.now = self.now.saturating_add(d);
        self.pool.handle_timeout(self.now);
        self.drain();
    }

    /// Steps to the pool's next wakeup. Returns it, or `None` if there is none.
    pub fn step(&mut self) -> Option<Timestamp> {
        let t = self.pool.poll_timeout()?;
        if t > self.now {
            self.now = t;
        }
        self.pool.handle_timeout(self.now);
        self.drain();
        let after = self.pool.poll_timeout();
        assert!(
            after.is_none_or(|a| a > self.now),
            "poll_timeout {after:?} not after handle_timeout({})",
            self.now
        );
        Some(t)
    }

    /// Steps through every wakeup up to `until`, then sets the clock to it.
    pub fn drive_until(&mut self, until: Timestamp) {
        while self.pool.poll_timeout().is_some_and(|t| t <= until) {
            self.step();
        }
        self.now = self.now.max(until);
        self.pool.handle_timeout(self.now);
        self.drain();
    }

    /// Steps at most `max` times; returns how many steps were taken.
    pub fn drive_bounded(&mut self, max: usize) -> usize {
        (0..max).take_while(|_| self.step().is_some()).count()
    }
}

pub fn ok(prompt: u64, completion: u64) -> Outcome {
    Outcome::success(prompt, completion, Duration::from_millis(100))
}

pub fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

pub fn mins(m: u64) -> Duration {
    Duration::from_secs(m * 60)
}
