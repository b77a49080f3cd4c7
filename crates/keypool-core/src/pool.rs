//! The key pool state machine.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::config::{PoolConfig, Strategy};
use crate::error::{AddKeyError, ConfigError, NoKeyAvailable, Unavailable, UnknownKey};
use crate::event::Event;
use crate::index::{Dense, Heap, Index};
use crate::key::{
    AcquireOptions, BLOCK_KINDS, Block, CompactLimits, Entry, FailureWindow, Health, Lease,
    LeaseRecord, Models, NewKey, WARNED,
};
use crate::outcome::Outcome;

/// How much busier than the strategy's pick a preferred key may be and
/// still be leased ([`AcquireOptions::prefer`]): its in-flight requests at
/// most twice the pick's, plus this. Affinity saves a cache miss; it must
/// not pile a hot conversation set onto one key while others idle.
pub const AFFINITY_SLACK: u32 = 4;
use crate::rng::SplitMix64;
use crate::secret::Secret;
use crate::state::{CooldownCause, DisableCause, KeyId, KeyState, LeaseId, LimitKind, SavedKey};
use crate::time::Timestamp;

/// Stride numerator for [`Strategy::Weighted`]: a key of weight `w` advances its
/// virtual time by `STRIDE / w` per pick.
const STRIDE: u64 = 1 << 20;

/// What happened to a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reported {
    /// The outcome was applied to the key.
    Applied,
    /// The lease had already expired: its usage was still counted (tokens the
    /// upstream used are never lost), but the key's health was not changed,
    /// because the pool already released the lease.
    Late,
    /// The key has left the pool since the lease was taken; nothing to record.
    KeyGone,
}

/// A pool of upstream API keys: a pure, deterministic state machine.
///
/// Methods come in the groups of a sans-IO state machine:
/// - getters (`&self`): [`len`](Self::len), [`state`](Self::state),
///   [`snapshot`](Self::snapshot), [`status_report`](Self::status_report), …
/// - commands: [`add`](Self::add), [`acquire`](Self::acquire), [`rotate`](Self::rotate),
///   [`schedule_revoke`](Self::schedule_revoke), [`disable`](Self::disable),
///   [`enable`](Self::enable), [`remove`](Self::remove);
/// - things that happened: [`report`](Self::report), [`handle_timeout`](Self::handle_timeout);
/// - outputs: [`poll_event`](Self::poll_event) (drain until `None`) and
///   [`poll_timeout`](Self::poll_timeout).
///
/// Every method that takes `now` first applies everything due by `now`, so
/// the pool is never stale; `handle_timeout` exists so a driver can apply
/// timers (and emit their events) while no request is being made. Time never
/// goes backwards inside the pool: a `now` earlier than one already seen is
/// treated as the latest seen.
///
/// Complexity, for `n` keys: `acquire` and `report` are `O(log n)` (plus
/// `O(k log k)` for `k` excluded keys); `add`, `rotate`, `disable`, `enable`,
/// `remove` and each due timer are `O(log n)`; the daily reset is `O(n log n)`
/// once a day; `snapshot` and `status_report` are `O(n)`.
#[derive(Debug)]
pub struct KeyPool {
    cfg: PoolConfig,
    soft_ppm: u64,
    window_ms: u64,
    /// Entries by slot; boxed so that free and growing capacity costs 8 bytes a slot.
    slots: Vec<Option<Box<Entry>>>,
    /// Each slot's generation, bumped when its key leaves, so ids are never reused.
    generations: Vec<u32>,
    free: Vec<u32>,
    len: usize,
    /// 32-bit secret fingerprint → slot, to reject duplicate secrets without
    /// storing them twice. Equal fingerprints are confirmed on the secrets.
    by_secret: HashMap<u32, u32>,
    /// Slots whose fingerprint was taken by another key when they were added.
    collided: Vec<u32>,
    groups: Vec<Arc<str>>,
    /// The models of keys that serve only some, by slot.
    models: HashMap<u32, Arc<Models>>,
    index: Index,
    /// Keys to re-evaluate at a time: cooldowns and per-minute limits ending.
    wakes: BTreeSet<(Timestamp, KeyId)>,
    revocations: BTreeSet<(Timestamp, KeyId)>,
    /// Leases by id; ids grow with time, so this is also deadline order.
    leases: BTreeMap<u64, LeaseRecord>,
    next_lease: u64,
    events: VecDeque<Event>,
    events_dropped: u64,
    now: Timestamp,
    day: Option<i64>,
    blocked: BlockCounts,
    healthy: u32,
    announced_empty: bool,
    rng: SplitMix64,
    vtime: u64,
}

impl KeyPool {
    /// An empty pool. Fails if the configuration is invalid.
    pub fn new(config: PoolConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let index = match config.strategy {
            Strategy::PowerOfTwo => Index::Dense(Dense::default()),
            _ => Index::Heap(Heap::default()),
        };
        Ok(KeyPool {
            soft_ppm: config.soft_limit_ppm(),
            window_ms: u64::try_from(config.breaker.window.as_millis()).unwrap_or(u64::MAX),
            rng: SplitMix64::new(config.seed),
            cfg: config,
            slots: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            len: 0,
            by_secret: HashMap::new(),
            collided: Vec::new(),
            groups: Vec::new(),
            models: HashMap::new(),
            index,
            wakes: BTreeSet::new(),
            revocations: BTreeSet::new(),
            leases: BTreeMap::new(),
            next_lease: 0,
            events: VecDeque::new(),
            events_dropped: 0,
            now: Timestamp::EPOCH,
            day: None,
            blocked: BlockCounts::default(),
            healthy: 0,
            announced_empty: false,
            vtime: 0,
        })
    }

    // ----- getters -------------------------------------------------------

    /// The configuration.
    pub fn config(&self) -> &PoolConfig {
        &self.cfg
    }

    /// Number of keys in the pool (revoked and removed keys are gone).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the pool has no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of keys that could be selected right now.
    pub fn available(&self) -> usize {
        self.index.len()
    }

    /// Leases handed out and not yet reported or expired.
    pub fn outstanding_leases(&self) -> usize {
        self.leases.len()
    }

    /// The latest time the pool has seen.
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Events dropped because nobody drained them (see [`PoolConfig::event_capacity`]).
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    /// The ids of all keys, in slot order.
    pub fn key_ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.slots
            .iter()
            .zip(&self.generations)
            .enumerate()
            .filter_map(|(i, (e, &generation))| {
                e.as_ref().map(|_| KeyId {
                    slot: i as u32,
                    generation,
                })
            })
    }

    fn id_of_slot(&self, slot: u32) -> Option<KeyId> {
        let generation = *self.generations.get(slot as usize)?;
        Some(KeyId { slot, generation })
    }

    /// A key's state.
    pub fn state(&self, id: KeyId) -> Option<KeyState> {
        self.entry(id).map(|e| self.state_of(e))
    }

    /// A key's name.
    pub fn name(&self, id: KeyId) -> Option<&Arc<str>> {
        self.entry(id).map(|e| &e.name)
    }

    /// A key's secret.
    pub fn secret(&self, id: KeyId) -> Option<&Secret> {
        self.entry(id).map(|e| &e.secret)
    }

    /// The first key with this name, if any. `O(n)`.
    pub fn find(&self, name: &str) -> Option<KeyId> {
        self.key_ids()
            .find(|&id| self.entry(id).is_some_and(|e| &*e.name == name))
    }

    /// The key with this name that serves on: during a rotation's grace
    /// period two keys share a name, and this is the new one (the old one
    /// only while it is the only one). `O(n)`.
    pub fn find_serving(&self, name: &str) -> Option<KeyId> {
        let named = |id: &KeyId| self.entry(*id).is_some_and(|e| &*e.name == name);
        self.key_ids()
            .filter(named)
            .find(|&id| self.entry(id).is_some_and(|e| !e.is_draining()))
            .or_else(|| self.find(name))
    }

    pub(crate) fn entry(&self, id: KeyId) -> Option<&Entry> {
        if self.generations.get(id.slot as usize) != Some(&id.generation) {
            return None;
        }
        self.slots.get(id.slot as usize)?.as_deref()
    }

    fn entry_at(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize)?.as_deref()
    }

    /// Whether the key could be selected right now.
    pub(crate) fn is_selectable(&self, id: KeyId) -> bool {
        self.entry(id).is_some() && self.index.contains(id.slot)
    }

    pub(crate) fn group_name(&self, e: &Entry) -> Arc<str> {
        self.groups
            .get(usize::from(e.group))
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    pub(crate) fn soft_threshold(&self, limit: u64) -> u64 {
        // ceil(limit × soft), at least 1, computed in u128 to avoid overflow.
        let t = (u128::from(limit) * u128::from(self.soft_ppm)).div_ceil(1_000_000);
        u64::try_from(t).unwrap_or(u64::MAX).max(1)
    }

    pub(crate) fn state_of(&self, e: &Entry) -> KeyState {
        match e.health {
            Health::Cooling(cause) => KeyState::CoolingDown {
                until: e.until,
                cause,
            },
            Health::Exhausted => KeyState::Exhausted {
                until: self.next_reset(),
            },
            Health::Disabled(cause) => KeyState::Disabled { cause },
            Health::HalfOpen => KeyState::HalfOpen,
            Health::Active if e.is_draining() => KeyState::Draining {
                revoke_at: e.revoke_at,
            },
            Health::Active => KeyState::Active,
        }
    }

    fn next_reset(&self) -> Timestamp {
        self.cfg.utc_offset.next_midnight(self.now)
    }

    /// The earliest time the pool changes by itself: a cooldown, a minute
    /// limit, a grace period or a lease ends, or a day begins. `None` for an
    /// empty pool with no leases out.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        let mut t = self.wakes.first().map(|&(t, _)| t);
        let mut earliest = |c: Option<Timestamp>| {
            if let Some(c) = c {
                t = Some(t.map_or(c, |t| t.min(c)));
            }
        };
        earliest(self.revocations.first().map(|&(t, _)| t));
        earliest(self.leases.first_key_value().map(|(_, r)| r.deadline));
        if self.len > 0 {
            earliest(Some(self.next_reset()));
        }
        t
    }

    // ----- outputs -------------------------------------------------------

    /// The next event, oldest first. Drain until `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.events.pop_front();
        if event.is_none() && self.events.capacity() > 64 {
            // Give back what a burst (a daily reset of many keys) took.
            self.events.shrink_to(64);
        }
        event
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= self.cfg.event_capacity {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    // ----- things that happened -----------------------------------------

    /// Applies everything due by `now`: cooldowns and minute limits ending,
    /// the daily reset, revocations, lease timeouts. Calling it early, or
    /// twice, is a harmless no-op.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        self.advance(now);
    }

    fn advance(&mut self, now: Timestamp) {
        if now > self.now {
            self.now = now;
        }
        let now = self.now;
        let day = self.cfg.utc_offset.day_index(now);
        match self.day {
            None => self.day = Some(day),
            Some(d) if d < day => {
                self.day = Some(day);
                self.daily_reset();
            }
            Some(_) => {}
        }
        while let Some(&(t, id)) = self.wakes.first() {
            if t > now {
                break;
            }
            self.wakes.pop_first();
            self.on_wake(id);
        }
        while let Some(&(t, id)) = self.revocations.first() {
            if t > now {
                break;
            }
            self.revocations.pop_first();
            self.drop_key(id);
        }
        while let Some((&lid, rec)) = self.leases.first_key_value() {
            if rec.deadline > now {
                break;
            }
            let rec = *rec;
            self.leases.remove(&lid);
            self.expire_lease(LeaseId(lid), rec);
        }
    }

    fn daily_reset(&mut self) {
        let ids: Vec<KeyId> = self.key_ids().collect();
        for id in ids {
            self.with_entry(id, |pool, id, e| {
                e.tokens_today = 0;
                e.requests_today = 0;
                e.errors_today = 0;
                e.flags &= !WARNED;
                if e.health == Health::Exhausted {
                    pool.leave_cooldown(id, e);
                }
            });
        }
    }

    fn on_wake(&mut self, id: KeyId) {
        self.with_entry(id, |pool, id, e| {
            if matches!(e.health, Health::Cooling(_)) && e.until <= pool.now {
                pool.leave_cooldown(id, e);
            }
        });
    }

    /// A cooling or exhausted key becomes usable again: half-open if its
    /// breaker has opened, otherwise active.
    fn leave_cooldown(&mut self, id: KeyId, e: &mut Entry) {
        let name = e.name.clone();
        if e.opens > 0 {
            e.health = Health::HalfOpen;
            self.emit(Event::BreakerHalfOpen { key: id, name });
        } else {
            e.health = Health::Active;
            self.emit(Event::Recovered { key: id, name });
        }
    }

    fn expire_lease(&mut self, lease: LeaseId, rec: LeaseRecord) {
        self.with_entry(rec.key, |pool, id, e| {
            release(e, &rec);
            pool.emit(Event::LeaseExpired {
                lease,
                key: id,
                name: e.name.clone(),
            });
        });
    }

    /// Reports the outcome of the attempt made with `lease`. See [`Outcome`]
    /// for what each does to the key, and [`Reported`] for late reports.
    /// The lease is consumed, so one lease cannot be reported twice.
    #[allow(clippy::needless_pass_by_value)] // consuming the lease is the point
    pub fn report(&mut self, lease: Lease, outcome: Outcome, now: Timestamp) -> Reported {
        self.advance(now);
        let Some(rec) = self.leases.remove(&lease.id.0) else {
            // Expired already: count the usage, which really happened, and nothing else.
            let Outcome::Success { usage, .. } = outcome else {
                return if self.entry(lease.key).is_some() {
                    Reported::Late
                } else {
                    Reported::KeyGone
                };
            };
            let found = self.with_entry(lease.key, |pool, id, e| {
                pool.count_usage(id, e, usage.total());
            });
            return if found {
                Reported::Late
            } else {
                Reported::KeyGone
            };
        };
        let found = self.with_entry(rec.key, |pool, id, e| {
            release(e, &rec);
            pool.apply(id, e, outcome, rec.probe);
        });
        if found {
            Reported::Applied
        } else {
            Reported::KeyGone
        }
    }

    /// Counts `tokens` a key used against its daily and per-minute limits
    /// without reporting an outcome: what a stream cut short used (its lease
    /// reported `Cancelled` or failed, which counts no tokens). `false` if the
    /// key has left the pool. `O(log n)`.
    pub fn count_tokens(&mut self, id: KeyId, tokens: u64, now: Timestamp) -> bool {
        self.advance(now);
        self.with_entry(id, |pool, id, e| pool.count_usage(id, e, tokens))
    }

    fn count_usage(&mut self, id: KeyId, e: &mut Entry, tokens: u64) {
        e.tokens_today = e.tokens_today.saturating_add(tokens);
        if e.minute == self.now.minute_index() as u32 {
            e.minute_tokens = e
                .minute_tokens
                .saturating_add(u32::try_from(tokens).unwrap_or(u32::MAX));
        }
        self.check_warnings(id, e);
    }

    fn apply(&mut self, id: KeyId, e: &mut Entry, outcome: Outcome, probe: bool) {
        let now = self.now;
        if outcome.is_retryable() {
            e.errors_today = e.errors_today.saturating_add(1);
        }
        match outcome {
            Outcome::Success { usage, latency } => {
                self.count_usage(id, e, usage.total());
                let sample = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
                e.latency_ewma_us = if e.latency_ewma_us == 0 {
                    sample
                } else {
                    // EWMA with alpha = 1/8, in integers.
                    let old = i64::from(e.latency_ewma_us);
                    u32::try_from(old + (i64::from(sample) - old) / 8).unwrap_or(u32::MAX)
                };
                self.healthy_answer(id, e, probe);
            }
            Outcome::ClientError => self.healthy_answer(id, e, probe),
            Outcome::Cancelled => {}
            Outcome::RateLimited { retry_after } => {
                let wait = retry_after
                    .unwrap_or(self.cfg.rate_limit_cooldown)
                    .min(self.cfg.max_cooldown);
                let until = now.saturating_add(wait);
                self.cool_down(id, e, until, CooldownCause::RateLimited);
            }
            Outcome::QuotaExhausted => {
                if !matches!(e.health, Health::Disabled(_) | Health::Exhausted) {
                    e.health = Health::Exhausted;
                    let until = self.next_reset();
                    self.emit(Event::Exhausted {
                        key: id,
                        name: e.name.clone(),
                        until,
                    });
                }
            }
            Outcome::Unauthorized => self.disable_entry(id, e, DisableCause::Unauthorized),
            Outcome::Forbidden => self.disable_entry(id, e, DisableCause::Forbidden),
            Outcome::ServerError | Outcome::Timeout | Outcome::Connect => {
                e.consecutive_failures = e.consecutive_failures.saturating_add(1);
                e.window.record(now, self.window_ms, true);
                let probe_failed = probe && e.health == Health::HalfOpen;
                if probe_failed || (e.health == Health::Active && self.breaker_trips(e)) {
                    self.open_breaker(id, e);
                }
            }
        }
    }

    /// The key answered (success or the caller's own error): the failure
    /// streak resets, and a half-open probe closes the breaker.
    fn healthy_answer(&mut self, id: KeyId, e: &mut Entry, probe: bool) {
        e.consecutive_failures = 0;
        e.window.record(self.now, self.window_ms, false);
        if probe && e.health == Health::HalfOpen {
            e.health = Health::Active;
            e.opens = 0;
            e.window.reset();
            let name = e.name.clone();
            self.emit(Event::BreakerClosed {
                key: id,
                name: name.clone(),
            });
            self.emit(Event::Recovered { key: id, name });
        }
    }

    fn breaker_trips(&self, e: &mut Entry) -> bool {
        let b = &self.cfg.breaker;
        if u32::from(e.consecutive_failures) >= b.consecutive_failures {
            return true;
        }
        let (requests, failures) = e.window.estimate(self.now, self.window_ms);
        requests >= u64::from(b.min_requests)
            && failures * 100 >= u64::from(b.failure_rate_percent) * requests
    }

    fn open_breaker(&mut self, id: KeyId, e: &mut Entry) {
        let b = &self.cfg.breaker;
        e.opens = e.opens.saturating_add(1);
        let doublings = u32::from(e.opens - 1).min(16);
        let cooldown = b
            .cooldown
            .checked_mul(1 << doublings)
            .unwrap_or(b.max_cooldown)
            .min(b.max_cooldown);
        e.health = Health::Cooling(CooldownCause::BreakerOpen);
        e.until = self.now.saturating_add(cooldown);
        e.consecutive_failures = 0;
        e.window.reset();
        self.emit(Event::BreakerOpened {
            key: id,
            name: e.name.clone(),
            until: e.until,
        });
    }

    /// Cools a key down until `until`; a longer cooldown extends the current
    /// one, a shorter one never shortens it. Disabled and exhausted keys stay so.
    fn cool_down(&mut self, id: KeyId, e: &mut Entry, until: Timestamp, cause: CooldownCause) {
        let cause = match e.health {
            Health::Disabled(_) | Health::Exhausted => return,
            Health::Cooling(current) => {
                if until <= e.until {
                    return;
                }
                current
            }
            Health::Active | Health::HalfOpen => cause,
        };
        e.health = Health::Cooling(cause);
        e.until = until;
        self.emit(Event::CoolingDown {
            key: id,
            name: e.name.clone(),
            until,
            cause,
        });
    }

    fn disable_entry(&mut self, id: KeyId, e: &mut Entry, cause: DisableCause) {
        if matches!(e.health, Health::Disabled(_)) {
            return;
        }
        e.health = Health::Disabled(cause);
        self.emit(Event::Disabled {
            key: id,
            name: e.name.clone(),
            cause,
        });
    }

    fn check_warnings(&mut self, id: KeyId, e: &mut Entry) {
        let checks = [
            (
                e.limits.tokens_per_day.map(|l| (e.tokens_today, l.get())),
                LimitKind::TokensPerDay,
                0,
            ),
            (
                e.limits
                    .requests_per_day
                    .map(|l| (u64::from(e.requests_today), u64::from(l.get()))),
                LimitKind::RequestsPerDay,
                2,
            ),
        ];
        for (usage, limit, bit) in checks {
            let Some((used, max)) = usage else { continue };
            for (percent, b) in [(75u8, bit), (90u8, bit + 1)] {
                let flag = 1u8 << b;
                if e.flags & flag == 0
                    && u128::from(used) * 100 >= u128::from(max) * u128::from(percent)
                {
                    e.flags |= flag;
                    self.emit(Event::UsageWarning {
                        key: id,
                        name: e.name.clone(),
                        limit,
                        percent,
                    });
                }
            }
        }
    }

    // ----- commands ------------------------------------------------------

    /// Adds a key after checking its secret against the pool's [`KeyRule`](crate::KeyRule)
    /// and against the secrets already in the pool. `O(log n)`.
    pub fn add(&mut self, key: NewKey, now: Timestamp) -> Result<KeyId, AddKeyError> {
        self.advance(now);
        let name = key.name.trim();
        if name.is_empty() {
            return Err(AddKeyError::EmptyName);
        }
        self.cfg.key_rule.check(name, key.secret.expose())?;
        if key.weight == 0 {
            return Err(AddKeyError::ZeroWeight {
                name: name.to_owned(),
            });
        }
        let limits = CompactLimits::new(name, &key.limits)?;
        let fp = fingerprint(&key.secret);
        let existing = self
            .by_secret
            .get(&fp)
            .copied()
            .into_iter()
            .chain(self.collided.iter().copied())
            .find_map(|slot| self.entry_at(slot).filter(|e| e.secret == key.secret));
        if let Some(existing) = existing {
            return Err(AddKeyError::DuplicateSecret {
                name: name.to_owned(),
                existing: existing.name.to_string(),
            });
        }
        let group = self.intern_group(&key.group);
        let slot = self.free_slot()?;
        let generation = self.generations.get(slot as usize).copied().unwrap_or(0);
        let id = KeyId { slot, generation };
        let name: Arc<str> = Arc::from(name);
        let entry = Entry {
            name: name.clone(),
            secret: key.secret,
            limits,
            tokens_today: 0,
            reserved_tokens: 0,
            pass: self.vtime,
            until: Timestamp::EPOCH,
            revoke_at: Timestamp::MAX,
            last_used: Timestamp::EPOCH,
            window: FailureWindow::default(),
            weight: key.weight,
            requests_today: 0,
            minute: self.now.minute_index() as u32,
            minute_requests: 0,
            minute_tokens: 0,
            in_flight: 0,
            errors_today: 0,
            latency_ewma_us: 0,
            consecutive_failures: 0,
            health: Health::Active,
            group,
            tier: key.tier,
            opens: 0,
            flags: 0,
        };
        match self.by_secret.entry(fp) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(slot);
            }
            std::collections::hash_map::Entry::Occupied(_) => self.collided.push(slot),
        }
        self.len += 1;
        self.emit(Event::Added { key: id, name });
        if let Some(models) = key.models {
            self.models.insert(slot, models);
        }
        let mut entry = Box::new(entry);
        // Register the new key in the counters and the index.
        self.refresh(id, &mut entry, Previously::Nothing);
        if let Some(s) = self.slots.get_mut(slot as usize) {
            *s = Some(entry);
        }
        Ok(id)
    }

    /// A slot for a new key: a freed one, or a new one at the end.
    fn free_slot(&mut self) -> Result<u32, AddKeyError> {
        if let Some(s) = self.free.pop() {
            return Ok(s);
        }
        let s = u32::try_from(self.slots.len())
            .ok()
            .filter(|&s| s < u32::MAX)
            .ok_or(AddKeyError::PoolFull)?;
        self.slots.push(None);
        self.generations.push(0);
        Ok(s)
    }

    fn intern_group(&mut self, group: &str) -> u8 {
        if let Some(i) = self.groups.iter().position(|g| &**g == group) {
            return i as u8;
        }
        if self.groups.len() > usize::from(u8::MAX) {
            // More than 256 distinct groups: they share the last label rather than fail.
            return u8::MAX;
        }
        self.groups.push(Arc::from(group));
        (self.groups.len() - 1) as u8
    }

    /// Leases the best key that can serve now. Same as
    /// [`acquire_with`](Self::acquire_with) with default options.
    pub fn acquire(&mut self, now: Timestamp) -> Result<Lease, NoKeyAvailable> {
        self.acquire_with(now, &AcquireOptions::default())
    }

    /// Leases the best key that can serve now, by the pool's [`Strategy`],
    /// among keys not excluded whose remaining token budgets hold the estimate.
    /// `O(log n)`, plus `O(k log k)` for `k` keys skipped.
    pub fn acquire_with(
        &mut self,
        now: Timestamp,
        opts: &AcquireOptions<'_>,
    ) -> Result<Lease, NoKeyAvailable> {
        self.advance(now);
        let picked = match opts.only {
            Some(id) => self.can_serve(id, opts).then_some(id),
            None => self.pick_preferring(opts),
        };
        let Some(id) = picked else {
            return Err(self.no_key(opts));
        };
        let reserved = u32::try_from(opts.estimated_tokens).unwrap_or(u32::MAX);
        let lease_id = self.next_lease;
        self.next_lease += 1;
        let deadline = self.now.saturating_add(self.cfg.lease_timeout);
        let weighted = self.cfg.strategy == Strategy::Weighted;
        let mut lease = None;
        self.with_entry(id, |pool, id, e| {
            roll_minute(e, pool.now);
            e.in_flight += 1;
            e.requests_today = e.requests_today.saturating_add(1);
            e.minute_requests = e.minute_requests.saturating_add(1);
            e.reserved_tokens = e.reserved_tokens.saturating_add(reserved);
            e.last_used = pool.now;
            let probe = e.health == Health::HalfOpen;
            if probe {
                e.set_probe_out(true);
            }
            if weighted {
                pool.vtime = pool.vtime.max(e.pass);
                e.pass = e.pass.saturating_add((STRIDE / u64::from(e.weight)).max(1));
            }
            pool.check_warnings(id, e);
            pool.leases.insert(
                lease_id,
                LeaseRecord {
                    key: id,
                    deadline,
                    reserved,
                    probe,
                },
            );
            lease = Some(Lease {
                id: LeaseId(lease_id),
                key: id,
                name: e.name.clone(),
                secret: e.secret.clone(),
                probe,
                acquired_at: pool.now,
            });
        });
        lease.ok_or_else(|| self.no_key(opts))
    }

    /// Whether key `id` can serve now, as `opts` ask.
    fn can_serve(&self, id: KeyId, opts: &AcquireOptions<'_>) -> bool {
        self.entry(id).is_some() && self.index.contains(id.slot) && !self.skipped(id.slot, opts)
    }

    /// The strategy's pick, or the preferred key while it can serve and its
    /// in-flight requests stay within the bound of the pick's.
    fn pick_preferring(&mut self, opts: &AcquireOptions<'_>) -> Option<KeyId> {
        let best = self.pick(opts).and_then(|slot| self.id_of_slot(slot));
        let Some(preferred) = opts.prefer.filter(|&id| self.can_serve(id, opts)) else {
            return best;
        };
        let load = |id: KeyId| self.entry(id).map_or(0, |e| e.in_flight);
        match best {
            Some(b) if load(preferred) > load(b).saturating_mul(2) + AFFINITY_SLACK => Some(b),
            _ => Some(preferred),
        }
    }

    /// Whether the caller's options rule this slot out.
    fn skipped(&self, slot: u32, opts: &AcquireOptions<'_>) -> bool {
        let Some(id) = self.id_of_slot(slot) else {
            return true;
        };
        opts.exclude.contains(&id)
            || !self.serves(slot, opts.model)
            || (opts.estimated_tokens > 0 && !self.fits(slot, opts.estimated_tokens))
    }

    /// Whether the key in `slot` may serve a model known by `names`.
    pub(crate) fn serves(&self, slot: u32, names: &[&str]) -> bool {
        names.is_empty() || self.models.get(&slot).is_none_or(|m| m.serve(names))
    }

    /// Whether the pool's keys leave a model known by `names` to it: false
    /// only when every key is limited to other models (an empty pool is a
    /// pool whose keys are gone, not one for other models). `O(1)` unless
    /// every key is limited to some models.
    pub fn may_serve(&self, names: &[&str]) -> bool {
        self.models.len() < self.len
            || self.len == 0
            || self.models.values().any(|m| m.serve(names))
    }

    /// The models the key in `slot` is limited to, if it is.
    pub(crate) fn models_of(&self, slot: u32) -> Option<&Models> {
        self.models.get(&slot).map(|m| &**m)
    }

    /// Whether the estimate fits the key's remaining daily and per-minute token budgets.
    fn fits(&self, slot: u32, estimate: u64) -> bool {
        let Some(e) = self.entry_at(slot) else {
            return false;
        };
        let reserved = u64::from(e.reserved_tokens);
        let day_ok = e.limits.tokens_per_day.is_none_or(|l| {
            e.tokens_today
                .saturating_add(reserved)
                .saturating_add(estimate)
                <= l.get()
        });
        let same_minute = e.minute == self.now.minute_index() as u32;
        let minute_used = if same_minute {
            u64::from(e.minute_tokens)
        } else {
            0
        };
        let minute_ok = e.limits.tokens_per_minute.is_none_or(|l| {
            minute_used
                .saturating_add(reserved)
                .saturating_add(estimate)
                <= u64::from(l.get())
        });
        day_ok && minute_ok
    }

    fn pick(&mut self, opts: &AcquireOptions<'_>) -> Option<u32> {
        if self.cfg.strategy != Strategy::PowerOfTwo {
            return self.index.heap_best(|slot| self.skipped(slot, opts));
        }
        // Power of two choices within the best class that has a usable key.
        let mut rng = self.rng.clone();
        let mut chosen = None;
        for members in self.index.dense_classes() {
            let sample = |rng: &mut SplitMix64| -> Option<u32> {
                // A few random draws find a usable member almost always; if the
                // caller skipped most of the class, draw among the usable ones.
                for _ in 0..4 {
                    let s = members.get(rng.below(members.len())).copied();
                    if let Some(s) = s.filter(|&s| !self.skipped(s, opts)) {
                        return Some(s);
                    }
                }
                let usable: Vec<u32> = members
                    .iter()
                    .copied()
                    .filter(|&s| !self.skipped(s, opts))
                    .collect();
                usable.get(rng.below(usable.len().max(1))).copied()
            };
            let Some(a) = sample(&mut rng) else { continue };
            let b = sample(&mut rng).unwrap_or(a);
            chosen = Some(if self.p2c_cost(b) < self.p2c_cost(a) {
                b
            } else {
                a
            });
            break;
        }
        self.rng = rng;
        chosen
    }

    fn p2c_cost(&self, slot: u32) -> u64 {
        self.entry_at(slot).map_or(u64::MAX, |e| {
            (u64::from(e.in_flight) + 1) * (u64::from(e.latency_ewma_us) + 1)
        })
    }

    fn no_key(&self, opts: &AcquireOptions<'_>) -> NoKeyAvailable {
        let b = &self.blocked;
        let mut unavailable = Unavailable {
            cooling_down: b.get(Block::CoolingDown),
            breaker_open: b.get(Block::BreakerOpen),
            exhausted: b.get(Block::Exhausted),
            unauthorized: b.get(Block::Unauthorized),
            forbidden: b.get(Block::Forbidden),
            disabled: b.get(Block::Disabled),
            busy: b.get(Block::Busy),
            minute_limited: b.get(Block::MinuteLimit),
            daily_limited: b.get(Block::DailyLimit),
            excluded: 0,
            other_models: 0,
        };
        // Keys in the index were all skipped: by exclusion, or because the
        // estimate does not fit their token budget for the day or the minute.
        // (This walk happens only when the index is not empty, so it costs
        // nothing in the common case where every key is blocked.)
        if self.index.len() > 0 {
            for id in self.key_ids() {
                let Some(e) = self.entry(id) else { continue };
                if !self.index.contains(id.slot) {
                    continue;
                }
                if opts.exclude.contains(&id) || opts.only.is_some_and(|o| o != id) {
                    unavailable.excluded += 1;
                } else if !self.serves(id.slot, opts.model) {
                    unavailable.other_models += 1;
                } else if e.limits.tokens_per_day.is_some_and(|l| {
                    e.tokens_today
                        .saturating_add(u64::from(e.reserved_tokens))
                        .saturating_add(opts.estimated_tokens)
                        > l.get()
                }) {
                    unavailable.daily_limited += 1;
                } else {
                    unavailable.minute_limited += 1;
                }
            }
        }
        NoKeyAvailable {
            unavailable,
            retry_at: self.retry_at(),
        }
    }

    /// The earliest time a key becomes usable by itself.
    fn retry_at(&self) -> Option<Timestamp> {
        let wake = self.wakes.first().map(|&(t, _)| t);
        let daily = self.blocked.get(Block::Exhausted) + self.blocked.get(Block::DailyLimit);
        let reset = (daily > 0).then(|| self.next_reset());
        match (wake, reset) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Replaces a key's secret: a new key with the old key's name, group,
    /// tier, weight and limits is added as Active, and the old key drains
    /// (chosen only when no other key can serve) until `now + grace`, then is
    /// revoked. Returns the new key's id.
    pub fn rotate(
        &mut self,
        old: KeyId,
        new_secret: impl Into<Secret>,
        grace: Duration,
        now: Timestamp,
    ) -> Result<KeyId, AddKeyError> {
        self.advance(now);
        let e = self.entry(old).ok_or(AddKeyError::UnknownKey(old))?;
        let new_key = NewKey {
            name: e.name.to_string(),
            secret: new_secret.into(),
            group: self.group_name(e).to_string(),
            tier: e.tier,
            weight: e.weight,
            limits: e.limits.expand(),
            models: self.models.get(&old.slot).cloned(),
        };
        let name = e.name.clone();
        let new = self.add(new_key, now)?;
        let revoke_at = self.now.saturating_add(grace);
        self.set_revoke(old, revoke_at);
        self.emit(Event::Rotated {
            old,
            new,
            name,
            revoke_at,
        });
        self.advance(now);
        Ok(new)
    }

    /// Puts a key in Draining until `at`, when it leaves the pool. An earlier
    /// existing schedule is kept.
    pub fn schedule_revoke(
        &mut self,
        id: KeyId,
        at: Timestamp,
        now: Timestamp,
    ) -> Result<(), UnknownKey> {
        self.advance(now);
        let name = self.entry(id).ok_or(UnknownKey(id))?.name.clone();
        let at = self.set_revoke(id, at);
        self.emit(Event::RevokeScheduled { key: id, name, at });
        self.advance(now);
        Ok(())
    }

    fn set_revoke(&mut self, id: KeyId, at: Timestamp) -> Timestamp {
        let mut effective = at;
        self.with_entry(id, |pool, id, e| {
            if e.revoke_at != Timestamp::MAX {
                pool.revocations.remove(&(e.revoke_at, id));
            }
            e.revoke_at = e.revoke_at.min(at);
            effective = e.revoke_at;
            pool.revocations.insert((e.revoke_at, id));
        });
        effective
    }

    /// Rests a key until `until` because the upstream said it has (about) no
    /// requests or tokens left until then: it is not selected, so the 429 is
    /// never paid for. Like a rate-limit cooldown, a later time extends the
    /// rest and an earlier one never shortens it; disabled and exhausted keys
    /// stay as they are.
    pub fn defer(&mut self, id: KeyId, until: Timestamp, now: Timestamp) -> Result<(), UnknownKey> {
        self.advance(now);
        let until = until.min(self.now.saturating_add(self.cfg.max_cooldown));
        let found = self.with_entry(id, |pool, id, e| {
            if until > pool.now {
                pool.cool_down(id, e, until, CooldownCause::Deferred);
            }
        });
        found.then_some(()).ok_or(UnknownKey(id))
    }

    /// What of key `id` should outlive the process: its state and today's
    /// counters. Store it, and give it to [`restore`](Self::restore) after a
    /// restart.
    pub fn saved(&self, id: KeyId) -> Option<SavedKey> {
        let e = self.entry(id)?;
        Some(SavedKey {
            state: self.state(id)?,
            day: self.cfg.utc_offset.day_index(self.now),
            requests_today: e.requests_today,
            tokens_today: e.tokens_today,
        })
    }

    /// Applies what [`saved`](Self::saved) returned before a restart: a
    /// disabled key stays disabled, a cooldown or a rotation's grace period
    /// continues until its end, an exhausted key stays exhausted for the rest
    /// of its day, and today's counters continue (those of an earlier day are
    /// ignored). A half-open breaker restarts closed.
    pub fn restore(
        &mut self,
        id: KeyId,
        saved: &SavedKey,
        now: Timestamp,
    ) -> Result<(), UnknownKey> {
        self.advance(now);
        let today = self.cfg.utc_offset.day_index(self.now);
        let found = self.with_entry(id, |pool, id, e| {
            if saved.day == today {
                e.requests_today = e.requests_today.max(saved.requests_today);
                e.tokens_today = e.tokens_today.max(saved.tokens_today);
            }
            match saved.state {
                KeyState::Disabled { cause } => pool.disable_entry(id, e, cause),
                KeyState::CoolingDown { until, cause } if until > pool.now => {
                    pool.cool_down(id, e, until, cause);
                }
                KeyState::Exhausted { .. }
                    if saved.day == today && !matches!(e.health, Health::Disabled(_)) =>
                {
                    e.health = Health::Exhausted;
                    pool.emit(Event::Exhausted {
                        key: id,
                        name: e.name.clone(),
                        until: pool.next_reset(),
                    });
                }
                _ => {}
            }
        });
        if !found {
            return Err(UnknownKey(id));
        }
        if let KeyState::Draining { revoke_at } = saved.state {
            self.schedule_revoke(id, revoke_at, now)?;
        }
        Ok(())
    }

    /// Disables a key until [`enable`](Self::enable).
    pub fn disable(&mut self, id: KeyId, now: Timestamp) -> Result<(), UnknownKey> {
        self.advance(now);
        let found = self.with_entry(id, |pool, id, e| {
            if e.health != Health::Disabled(DisableCause::Manual) {
                e.health = Health::Disabled(DisableCause::Manual);
                pool.emit(Event::Disabled {
                    key: id,
                    name: e.name.clone(),
                    cause: DisableCause::Manual,
                });
            }
        });
        found.then_some(()).ok_or(UnknownKey(id))
    }

    /// Makes a key Active whatever its state (disabled, cooling, exhausted,
    /// half-open) and resets its circuit breaker.
    pub fn enable(&mut self, id: KeyId, now: Timestamp) -> Result<(), UnknownKey> {
        self.advance(now);
        let found = self.with_entry(id, |pool, id, e| {
            let was_active = e.health == Health::Active;
            e.health = Health::Active;
            e.opens = 0;
            e.consecutive_failures = 0;
            e.set_probe_out(false);
            e.window.reset();
            if !was_active {
                pool.emit(Event::Recovered {
                    key: id,
                    name: e.name.clone(),
                });
            }
        });
        found.then_some(()).ok_or(UnknownKey(id))
    }

    /// Removes a key at once. Its outstanding leases report [`Reported::KeyGone`].
    pub fn remove(&mut self, id: KeyId, now: Timestamp) -> Result<(), UnknownKey> {
        self.advance(now);
        if self.drop_key(id) {
            Ok(())
        } else {
            Err(UnknownKey(id))
        }
    }

    fn drop_key(&mut self, id: KeyId) -> bool {
        if self.entry(id).is_none() {
            return false;
        }
        let Some(e) = self.slots.get_mut(id.slot as usize).and_then(Option::take) else {
            return false;
        };
        if let Some(g) = self.generations.get_mut(id.slot as usize) {
            *g = g.wrapping_add(1);
        }
        self.free.push(id.slot);
        self.models.remove(&id.slot);
        self.len -= 1;
        self.index.remove(id.slot);
        if let Some(wake) = self.wake_of(&e) {
            self.wakes.remove(&(wake, id));
        }
        if e.revoke_at != Timestamp::MAX {
            self.revocations.remove(&(e.revoke_at, id));
        }
        if let Some(b) = self.block_of(&e) {
            self.blocked.dec(b);
        }
        if e.health.is_serviceable() {
            self.healthy -= 1;
        }
        let fp = fingerprint(&e.secret);
        if self.by_secret.get(&fp) == Some(&id.slot) {
            self.by_secret.remove(&fp);
            // Promote a collided key with the same fingerprint, if any.
            if let Some(pos) = self.collided.iter().position(|&s| {
                self.entry_at(s)
                    .is_some_and(|c| fingerprint(&c.secret) == fp)
            }) {
                let s = self.collided.swap_remove(pos);
                self.by_secret.insert(fp, s);
            }
        } else {
            self.collided.retain(|&s| s != id.slot);
        }
        self.emit(Event::Revoked {
            key: id,
            name: e.name.clone(),
        });
        self.announce_empty();
        true
    }

    // ----- the one place that keeps derived state in step ---------------

    /// Runs `f` on a key's entry, then brings everything derived from the
    /// entry up to date: the block counters, the wake set, its place in the
    /// eligibility index, the healthy count. Every mutation of an entry goes
    /// through here. Returns whether the key exists.
    fn with_entry(&mut self, id: KeyId, f: impl FnOnce(&mut Self, KeyId, &mut Entry)) -> bool {
        if self.generations.get(id.slot as usize) != Some(&id.generation) {
            return false;
        }
        let Some(mut e) = self.slots.get_mut(id.slot as usize).and_then(Option::take) else {
            return false;
        };
        // What the entry is registered as, before it changes.
        let before = Previously::Registered {
            block: self.block_of(&e),
            wake: self.wake_of(&e),
            healthy: e.health.is_serviceable(),
        };
        f(self, id, &mut e);
        self.refresh(id, &mut e, before);
        if let Some(s) = self.slots.get_mut(id.slot as usize) {
            *s = Some(e);
        }
        true
    }

    fn refresh(&mut self, id: KeyId, e: &mut Entry, before: Previously) {
        roll_minute(e, self.now);
        let (old_block, old_wake, was_healthy) = match before {
            Previously::Nothing => (None, None, false),
            Previously::Registered {
                block,
                wake,
                healthy,
            } => (block, wake, healthy),
        };
        let block = self.block_of(e);
        if block != old_block {
            if let Some(b) = old_block {
                self.blocked.dec(b);
            }
            if let Some(b) = block {
                self.blocked.inc(b);
            }
        }
        let wake = self.wake_of(e);
        if wake != old_wake {
            if let Some(t) = old_wake {
                self.wakes.remove(&(t, id));
            }
            if let Some(t) = wake {
                self.wakes.insert((t, id));
            }
        }

        let was_indexed = self.index.remove(id.slot);
        if block.is_none() {
            let (primary, secondary) = match self.cfg.strategy {
                Strategy::LeastUsed => (
                    e.tokens_today.saturating_add(u64::from(e.reserved_tokens)),
                    e.in_flight,
                ),
                Strategy::RoundRobin => (u64::from(e.requests_today), 0),
                Strategy::Weighted => {
                    if !was_indexed {
                        // A key rejoining starts at the current virtual time, so it
                        // gets its share from now on instead of a burst of catch-up.
                        e.pass = e.pass.max(self.vtime);
                    }
                    (e.pass, 0)
                }
                Strategy::PowerOfTwo => (0, 0),
            };
            self.index.insert(id.slot, e.class(), primary, secondary);
        }

        match (was_healthy, e.health.is_serviceable()) {
            (false, true) => self.healthy += 1,
            (true, false) => self.healthy -= 1,
            _ => {}
        }
        self.announce_empty();
    }

    /// When the pool must look at this key again by itself: the end of its
    /// cooldown, or of the minute whose limit it reached. A pure function of
    /// the entry, so it need not be stored.
    fn wake_of(&self, e: &Entry) -> Option<Timestamp> {
        match (self.block_of(e), e.health) {
            (Some(Block::CoolingDown | Block::BreakerOpen), Health::Cooling(_)) => Some(e.until),
            (Some(Block::MinuteLimit), _) => {
                Some(Timestamp::from_unix_millis(u64::from(e.minute) * 60_000).next_minute())
            }
            _ => None,
        }
    }

    /// Emits [`Event::PoolEmpty`] / [`Event::PoolRecovered`] when the number of
    /// healthy keys reaches or leaves zero.
    fn announce_empty(&mut self) {
        let empty = self.healthy == 0;
        if empty == self.announced_empty {
            return;
        }
        self.announced_empty = empty;
        if empty {
            let retry_at = self.retry_at();
            self.emit(Event::PoolEmpty { retry_at });
        } else {
            self.emit(Event::PoolRecovered);
        }
    }

    fn block_of(&self, e: &Entry) -> Option<Block> {
        match e.health {
            Health::Disabled(DisableCause::Unauthorized) => return Some(Block::Unauthorized),
            Health::Disabled(DisableCause::Forbidden) => return Some(Block::Forbidden),
            Health::Disabled(DisableCause::Manual) => return Some(Block::Disabled),
            Health::Exhausted => return Some(Block::Exhausted),
            Health::Cooling(CooldownCause::RateLimited | CooldownCause::Deferred) => {
                return Some(Block::CoolingDown);
            }
            Health::Cooling(CooldownCause::BreakerOpen) => return Some(Block::BreakerOpen),
            Health::HalfOpen if e.probe_out() => return Some(Block::BreakerOpen),
            Health::HalfOpen | Health::Active => {}
        }
        let l = &e.limits;
        if l.max_in_flight.is_some_and(|m| e.in_flight >= m.get()) {
            return Some(Block::Busy);
        }
        let day_requests = l.requests_per_day.is_some_and(|m| {
            u64::from(e.requests_today) >= self.soft_threshold(u64::from(m.get()))
        });
        let day_tokens = l.tokens_per_day.is_some_and(|m| {
            e.tokens_today.saturating_add(u64::from(e.reserved_tokens))
                >= self.soft_threshold(m.get())
        });
        if day_requests || day_tokens {
            return Some(Block::DailyLimit);
        }
        let minute_requests = l
            .requests_per_minute
            .is_some_and(|m| e.minute_requests >= m.get());
        let minute_tokens = l.tokens_per_minute.is_some_and(|m| {
            u64::from(e.minute_tokens).saturating_add(u64::from(e.reserved_tokens))
                >= u64::from(m.get())
        });
        if minute_requests || minute_tokens {
            return Some(Block::MinuteLimit);
        }
        None
    }
}

/// Starts a new per-minute window if the minute has changed.
fn roll_minute(e: &mut Entry, now: Timestamp) {
    let minute = now.minute_index() as u32;
    if e.minute != minute {
        e.minute = minute;
        e.minute_requests = 0;
        e.minute_tokens = 0;
    }
}

/// Returns a lease's in-flight count, reservation and probe slot to its key.
fn release(e: &mut Entry, rec: &LeaseRecord) {
    e.in_flight = e.in_flight.saturating_sub(1);
    e.reserved_tokens = e.reserved_tokens.saturating_sub(rec.reserved);
    if rec.probe {
        e.set_probe_out(false);
    }
}

/// How many keys are out of the index, by reason.
#[derive(Clone, Copy, Debug, Default)]
struct BlockCounts([u32; BLOCK_KINDS]);

impl BlockCounts {
    fn get(&self, b: Block) -> u32 {
        self.0.get(b as usize).copied().unwrap_or(0)
    }
    fn inc(&mut self, b: Block) {
        if let Some(c) = self.0.get_mut(b as usize) {
            *c += 1;
        }
    }
    fn dec(&mut self, b: Block) {
        if let Some(c) = self.0.get_mut(b as usize) {
            *c -= 1;
        }
    }
}

/// What an entry was registered as before a change (see `KeyPool::with_entry`).
#[derive(Clone, Copy)]
enum Previously {
    /// A new entry: registered nowhere yet.
    Nothing,
    Registered {
        block: Option<Block>,
        wake: Option<Timestamp>,
        healthy: bool,
    },
}

/// A deterministic 32-bit fingerprint of a secret (`SipHash` with fixed keys).
fn fingerprint(secret: &Secret) -> u32 {
    let mut h = DefaultHasher::new();
    secret.expose().hash(&mut h);
    (h.finish() >> 32) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_event_gives_back_memory_after_a_burst() {
        let mut pool = KeyPool::new(PoolConfig::default()).unwrap();
        let t0 = Timestamp::from_unix_secs(1_795_322_452);
        for i in 0..500 {
            pool.add(
                NewKey::new(format!("k{i}"), format!("sk-test-{i:016x}")),
                t0,
            )
            .unwrap();
        }
        assert!(pool.events.capacity() >= 500);
        assert_eq!(std::iter::from_fn(|| pool.poll_event()).count(), 500);
        assert!(pool.events.capacity() <= 64, "{}", pool.events.capacity());
    }
}
