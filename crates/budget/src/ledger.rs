//! The ledger: limits, reservations, settlements, events and reports.

mod edit;
mod share;

pub use self::share::ShareView;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::calendar::{Calendar, from_unix_ms, unix_ms};
use crate::error::BudgetError;
use crate::limits::{Limit, Period, Scope};
use crate::money::Money;
use crate::price::{ModelPrice, PriceTable, Tokens};

/// Percentages of a hard limit that emit [`Event::Threshold`] when crossed.
pub const THRESHOLDS: [u8; 4] = [50, 75, 90, 100];
const SOFT_BIT: u8 = 1 << 4;
const NO_NAME: u32 = u32::MAX;
/// Distinct key, team and model names kept for reports; past it they count as "(other)".
const MAX_NAMES: usize = 100_000;
const PERIODS: [Period; 3] = [Period::Daily, Period::Weekly, Period::Monthly];

/// How a [`Ledger`] keeps time and memory.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct LedgerConfig {
    /// Where days, weeks and months begin.
    pub calendar: Calendar,
    /// A reservation neither settled nor cancelled within this time is booked
    /// as spent in full (see [`Ledger::settle`]). Default 10 minutes.
    pub reservation_ttl: Duration,
    /// Days of per-key, team and model usage kept for reports. Default 90.
    pub report_retention_days: u32,
    /// Events kept until drained; past this the oldest are dropped. Default 1024.
    pub event_capacity: usize,
    /// Today's spend is an anomaly ([`Event::Anomaly`]) when it passes the
    /// trailing average at the same hour times this factor, in per mille
    /// (more than 1000). Default 1500 (150%).
    pub anomaly_permille: u32,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            calendar: Calendar::default(),
            reservation_ttl: Duration::from_secs(600),
            report_retention_days: 90,
            event_capacity: 1024,
            anomaly_permille: 1500,
        }
    }
}

impl LedgerConfig {
    /// Checks the fields; the error names the first that is wrong.
    pub fn validate(&self) -> Result<(), BudgetError> {
        if self.event_capacity == 0 {
            return Err(BudgetError::Config(
                "event_capacity must be at least 1".into(),
            ));
        }
        if self.anomaly_permille <= 1000 {
            return Err(BudgetError::Config(
                "anomaly_permille must be more than 1000 (a factor above 1)".into(),
            ));
        }
        Ok(())
    }
}

/// Who a request is for: the scopes besides global and model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scopes<'a> {
    /// The client's team.
    pub team: Option<&'a str>,
    /// The client key's name.
    pub key: Option<&'a str>,
}

/// A model switched for a cheaper one because a soft limit was passed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Degradation {
    /// The model asked for (canonical name).
    pub from: String,
    /// The model used.
    pub to: String,
    /// The limit whose soft threshold was passed.
    pub scope: Scope,
    /// Its period.
    pub period: Period,
}

/// Money held for one request until it is settled or cancelled. Consumed by
/// [`Ledger::settle`] or [`Ledger::cancel`], so it cannot be booked twice.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "settle or cancel the reservation, or it is booked in full when it expires"]
pub struct Reservation {
    id: u64,
    amount: Money,
    output_tokens: u64,
    model: Arc<str>,
    price: ModelPrice,
    degraded: Option<Degradation>,
    limits: Arc<[u16]>,
    names: [u32; 3],
    expires_at: SystemTime,
    /// The ledger's limit epoch when it was made.
    epoch: u32,
}

/// The output tokens a reservation may hold: `max` if it fits, else the
/// most that fits down to `min`.
#[derive(Clone, Copy, Debug)]
struct Output {
    max: u64,
    min: u64,
}

/// A model name's resolution, cached by name id.
#[derive(Clone, Copy, Debug)]
struct Resolution {
    /// The canonical model's name id.
    canonical: u32,
    price: ModelPrice,
    defaulted: bool,
}

impl Reservation {
    /// The reservation's number.
    pub fn id(&self) -> u64 {
        self.id
    }
    /// The worst-case cost held.
    pub fn amount(&self) -> Money {
        self.amount
    }
    /// The output tokens the holding covers: what was asked for, or less if
    /// [`Ledger::reserve_up_to`] had to clamp it.
    pub fn output_tokens(&self) -> u64 {
        self.output_tokens
    }
    /// The model to call (canonical, and the fallback if degraded).
    pub fn model(&self) -> &str {
        &self.model
    }
    /// The price the settlement will use.
    pub fn price(&self) -> &ModelPrice {
        &self.price
    }
    /// Why the model differs from the one asked for, if it does.
    pub fn degraded(&self) -> Option<&Degradation> {
        self.degraded.as_ref()
    }
    /// When an unsettled reservation is booked in full.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }
}

/// What [`Ledger::settle`] booked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settlement {
    /// The real cost, now spent.
    pub cost: Money,
    /// What had been reserved.
    pub reserved: Money,
    /// Whether the reservation had already expired (and been booked in full).
    pub late: bool,
}

/// Something the ledger noticed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
pub enum Event {
    /// Spend crossed 50, 75, 90 or 100% of a limit.
    Threshold {
        /// The limit's scope.
        scope: Scope,
        /// Its period.
        period: Period,
        /// The percentage crossed.
        percent: u8,
        /// Spent so far this period.
        spent: Money,
        /// The limit.
        limit: Money,
    },
    /// Spend plus reservations passed a limit's soft threshold: dearer models
    /// now go to its fallback (if it has one).
    SoftLimit {
        /// The limit's scope.
        scope: Scope,
        /// Its period.
        period: Period,
        /// The fallback model, if any.
        fallback: Option<String>,
    },
    /// A new period began for a limit.
    PeriodReset {
        /// The limit's scope.
        scope: Scope,
        /// Its period.
        period: Period,
        /// What the ended period spent.
        spent: Money,
    },
    /// A reservation expired unsettled and was booked in full.
    ReservationExpired {
        /// Its number.
        reservation: u64,
        /// The amount booked.
        amount: Money,
    },
    /// A request cost more than it reserved; the whole cost was booked.
    Overrun {
        /// The reservation's number.
        reservation: u64,
        /// What was reserved.
        reserved: Money,
        /// What it cost.
        cost: Money,
    },
    /// A model without a price was charged the default price (said once per model).
    UnknownModelCharged {
        /// The model.
        model: String,
        /// The price charged.
        price: ModelPrice,
    },
    /// Today's spend passed the trailing average at the same time of day
    /// times [`LedgerConfig::anomaly_permille`] (150% by default).
    Anomaly {
        /// Spent today so far.
        today: Money,
        /// The average of the previous days (up to 7) up to the same hour.
        trailing_average: Money,
        /// How many previous days the average covers.
        days: u32,
    },
}

/// One line of a usage report.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct UsageLine {
    /// The client key's name, if the requests had one.
    pub key: Option<String>,
    /// The team, if any.
    pub team: Option<String>,
    /// The model used (canonical).
    pub model: String,
    /// Requests settled.
    pub requests: u64,
    /// Input tokens.
    pub prompt_tokens: u64,
    /// Output tokens.
    pub completion_tokens: u64,
    /// Input plus output tokens.
    pub total_tokens: u64,
    /// What they cost.
    pub estimated_cost: Money,
}

/// Usage per key, team and model over a span of days, with a total.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    /// Lines, dearest first.
    pub usage: Vec<UsageLine>,
    /// The sum of the lines' costs.
    pub total_estimated_cost: Money,
}

/// Which usage a report includes; `None` matches everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportFilter<'a> {
    /// Only this key.
    pub key: Option<&'a str>,
    /// Only this team.
    pub team: Option<&'a str>,
    /// Only this model.
    pub model: Option<&'a str>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Agg {
    requests: u64,
    prompt: u64,
    completion: u64,
    cost: u64,
}

#[derive(Clone, Debug)]
struct LimitState {
    limit: Limit,
    soft: Option<Money>,
    period_id: i64,
    spent: Money,
    reserved: Money,
    /// Bits 0-3: thresholds crossed this period; bit 4: soft limit passed.
    crossed: u8,
    /// This process's share of a limit several processes share; `None`
    /// when the limit is this process's alone.
    share: Option<Share>,
    /// Removed while running ([`Ledger::remove_limit`]): no longer applies
    /// to any request, kept so that limit positions never move.
    removed: bool,
}

/// What this process may spend of a shared limit this period, and what of
/// its own it has spent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Share {
    held: Money,
    own_spent: Money,
}

/// A fast hasher for maps keyed by the ledger's own integer ids (never by
/// anything a client chose; string-keyed maps keep the default `SipHash`).
#[derive(Clone, Copy, Debug, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            self.write_u64(u64::from_le_bytes(word));
        }
        for &b in words.remainder() {
            self.write_u64(u64::from(b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
    fn write_i64(&mut self, n: i64) {
        self.write_u64(n as u64);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_u64(&mut self, n: u64) {
        // FxHash's step: rotate, xor, multiply by a large odd constant.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// Reservations in id order. Ids grow and the time to live is fixed, so id
/// order is expiry order: a deque with tombstones gives O(1) insert, remove
/// and expiry.
#[derive(Debug, Default)]
struct PendingQueue {
    /// The id of `slots[0]`.
    first: u64,
    slots: VecDeque<Option<Pending>>,
    len: usize,
}

impl PendingQueue {
    fn push(&mut self, id: u64, p: Pending) {
        if self.slots.is_empty() {
            self.first = id;
        }
        self.slots.push_back(Some(p));
        self.len += 1;
    }

    fn remove(&mut self, id: u64) -> Option<Pending> {
        let i = usize::try_from(id.checked_sub(self.first)?).ok()?;
        let p = self.slots.get_mut(i)?.take()?;
        self.len -= 1;
        self.trim();
        Some(p)
    }

    /// Drops tombstones at the front.
    fn trim(&mut self) {
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.first += 1;
        }
    }

    fn first_expiry(&self) -> Option<i64> {
        self.slots
            .front()
            .and_then(|p| p.as_ref())
            .map(|p| p.expires_ms)
    }

    /// Removes and returns the oldest reservation if it expires by `ms`.
    fn pop_expired(&mut self, ms: i64) -> Option<(u64, Pending)> {
        if self.first_expiry()? > ms {
            return None;
        }
        let id = self.first;
        let p = self.slots.pop_front().flatten()?;
        self.first += 1;
        self.len -= 1;
        self.trim();
        Some((id, p))
    }
}

#[derive(Clone, Debug)]
struct Pending {
    expires_ms: i64,
    amount: Money,
    /// The limits it holds money against (shared with the token).
    limits: Arc<[u16]>,
}

/// The budget ledger: a pure state machine over limits and reservations.
///
/// A limit counts what is spent plus what is reserved, and [`reserve`](Self::reserve)
/// holds a request's worst-case cost against every limit that applies before
/// the request is sent. So however many requests run at once, spend can only
/// pass a hard limit by what requests cost beyond their own reservations
/// (reported as [`Event::Overrun`]).
///
/// # Settling, cancelling, expiring
///
/// - [`settle`](Self::settle) releases the reservation and books the real cost,
///   whether less or more than reserved. More is booked in full: the upstream
///   has already charged it, so the ledger records the truth, which may pass a
///   hard limit; further reservations are then refused.
/// - [`cancel`](Self::cancel) releases the reservation and books nothing.
/// - A reservation neither settled nor cancelled within
///   [`LedgerConfig::reservation_ttl`] is **booked as spent in full**: the
///   request may have happened, so no money is lost. A settlement that comes
///   later books the difference (refunding what was booked beyond the real
///   cost), and a later cancel refunds the whole amount.
///
/// Reservations outlive period boundaries: one taken before midnight still
/// counts after it, and its cost is booked in the period it is settled in.
///
/// Complexity: `reserve` and `settle` are `O(s)` in the limits that apply to
/// the request (hash lookups by scope name), independent of the number of
/// limits configured.
#[derive(Debug)]
pub struct Ledger {
    cfg: LedgerConfig,
    prices: PriceTable,
    limits: Vec<LimitState>,
    /// Bumped whenever limits are set or removed while running.
    epoch: u32,
    /// Whether limits are shared ([`share_limits`](Self::share_limits)):
    /// limits added later are shared too.
    shared: bool,
    global: Vec<u16>,
    by_team: HashMap<String, Vec<u16>>,
    by_key: HashMap<String, Vec<u16>>,
    by_model: HashMap<String, Vec<u16>>,
    names: HashMap<Arc<str>, u32>,
    name_list: Vec<Arc<str>>,
    /// The last few names looked up: most requests repeat their key, team
    /// and model, and comparing a short string is cheaper than hashing it.
    recent: [(Arc<str>, u32); 4],
    recent_next: usize,
    /// By name id: the name's resolution as a model, once resolved.
    resolutions: Vec<Option<Resolution>>,
    /// The limits that apply to a (key, team, canonical model) triple of name ids.
    applicable_cache: IdMap<[u32; 3], Arc<[u16]>>,
    pending: PendingQueue,
    next_id: u64,
    usage: IdMap<(i64, [u32; 3]), Agg>,
    hourly: BTreeMap<i64, [u64; 24]>,
    first_day: Option<i64>,
    alerted_day: Option<i64>,
    /// Today's global spend so far: (day, micro-dollars).
    today: (i64, u64),
    /// The trailing average for (day, hour): (day, hour, average, days).
    trailing: Option<(i64, usize, u64, u32)>,
    warned_unknown: HashSet<String>,
    events: VecDeque<Event>,
    events_dropped: u64,
    now_ms: i64,
    current: [Option<i64>; 3],
    next_boundary_ms: i64,
}

impl Ledger {
    /// A ledger with prices and limits. Fails if a limit is malformed or names
    /// a fallback model without a price.
    pub fn new(
        cfg: LedgerConfig,
        prices: PriceTable,
        limits: Vec<Limit>,
    ) -> Result<Self, BudgetError> {
        if limits.len() > usize::from(u16::MAX) {
            return Err(BudgetError::Config("at most 65535 limits".into()));
        }
        cfg.validate()?;
        let mut ledger = Ledger {
            cfg,
            prices,
            limits: Vec::with_capacity(limits.len()),
            epoch: 0,
            shared: false,
            global: Vec::new(),
            by_team: HashMap::new(),
            by_key: HashMap::new(),
            by_model: HashMap::new(),
            names: HashMap::new(),
            name_list: Vec::new(),
            recent: std::array::from_fn(|_| (Arc::from(""), NO_NAME)),
            recent_next: 0,
            resolutions: Vec::new(),
            applicable_cache: IdMap::default(),
            pending: PendingQueue::default(),
            next_id: 0,
            usage: IdMap::default(),
            hourly: BTreeMap::new(),
            first_day: None,
            alerted_day: None,
            today: (i64::MIN, 0),
            trailing: None,
            warned_unknown: HashSet::new(),
            events: VecDeque::new(),
            events_dropped: 0,
            now_ms: i64::MIN,
            current: [None; 3],
            next_boundary_ms: i64::MIN,
        };
        for limit in limits {
            ledger.check_limit(&limit)?;
            ledger
                .limits
                .push(LimitState::new(limit, i64::MIN, Money::ZERO));
        }
        ledger.reindex();
        Ok(ledger)
    }

    // ----- getters -------------------------------------------------------

    /// The price table.
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Each limit with what is spent and reserved against it this period.
    pub fn limits(&self) -> impl Iterator<Item = (&Limit, Money, Money)> {
        self.limits
            .iter()
            .filter(|l| !l.removed)
            .map(|l| (&l.limit, l.spent, l.reserved))
    }

    /// Reservations neither settled, cancelled nor expired.
    pub fn outstanding(&self) -> usize {
        self.pending.len
    }

    /// Events dropped because they were not drained.
    pub fn events_dropped(&self) -> u64 {
        self.events_dropped
    }

    fn emit(&mut self, event: Event) {
        if self.events.len() >= self.cfg.event_capacity {
            self.events.pop_front();
            self.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    // ----- outputs -------------------------------------------------------

    /// The next event, oldest first. Drain until `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest time the ledger changes by itself: a reservation expires
    /// or a period begins.
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        let expiry = self.pending.first_expiry();
        let boundary = (self.next_boundary_ms != i64::MIN).then_some(self.next_boundary_ms);
        match (expiry, boundary) {
            (Some(a), Some(b)) => Some(from_unix_ms(a.min(b))),
            (a, b) => a.or(b).map(from_unix_ms),
        }
    }

    // ----- time ----------------------------------------------------------

    /// Applies everything due by `now`: expiries and period resets. Early or
    /// repeated calls are harmless.
    pub fn handle_timeout(&mut self, now: SystemTime) {
        self.advance(now);
    }

    fn advance(&mut self, now: SystemTime) {
        let ms = unix_ms(now).max(self.now_ms);
        self.now_ms = ms;
        let now = from_unix_ms(ms);
        if ms >= self.next_boundary_ms {
            self.roll_periods(now);
        }
        while let Some((id, p)) = self.pending.pop_expired(ms) {
            self.expire(id, &p);
        }
    }

    fn roll_periods(&mut self, now: SystemTime) {
        let cal = self.cfg.calendar;
        let day = cal.day(now);
        if self.first_day.is_none() {
            self.first_day = Some(day);
        }
        let mut next = cal.next_period_start(Period::Daily, now);
        for (k, kind) in PERIODS.into_iter().enumerate() {
            let id = cal.period_id(kind, now);
            if let Some(slot) = self.current.get_mut(k) {
                *slot = Some(id);
            }
            next = next.min(cal.next_period_start(kind, now));
        }
        let mut resets = Vec::new();
        for l in &mut self.limits {
            let id = cal.period_id(l.limit.period, now);
            if l.period_id != id {
                if l.period_id != i64::MIN {
                    resets.push(Event::PeriodReset {
                        scope: l.limit.scope.clone(),
                        period: l.limit.period,
                        spent: l.spent,
                    });
                }
                l.period_id = id;
                l.spent = Money::ZERO;
                l.crossed = 0;
                if let Some(share) = &mut l.share {
                    *share = Share::default();
                }
            }
        }
        for e in resets {
            self.emit(e);
        }
        // Forget usage older than the retention, and hourly spend older than a week.
        let keep_from = day - i64::from(self.cfg.report_retention_days);
        self.usage.retain(|(d, _), _| *d >= keep_from);
        self.hourly.retain(|d, _| *d >= day - 7);
        self.next_boundary_ms = unix_ms(next);
    }

    // ----- commands ------------------------------------------------------

    /// The id of a known name: the recent cache first, then the map.
    fn lookup(&mut self, name: &str) -> Option<u32> {
        if let Some((_, id)) = self
            .recent
            .iter()
            .find(|(n, id)| *id != NO_NAME && &**n == name)
        {
            return Some(*id);
        }
        let id = *self.names.get(name)?;
        let slot = self.recent_next % self.recent.len();
        if let (Some(r), Some(text)) = (self.recent.get_mut(slot), self.name_list.get(id as usize))
        {
            *r = (text.clone(), id);
        }
        self.recent_next = self.recent_next.wrapping_add(1);
        Some(id)
    }

    fn intern(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name else { return NO_NAME };
        if let Some(id) = self.lookup(name) {
            return id;
        }
        let name: Arc<str> = if self.name_list.len() >= MAX_NAMES {
            Arc::from("(other)")
        } else {
            Arc::from(name)
        };
        if let Some(&id) = self.names.get(&name) {
            return id;
        }
        let id = self.name_list.len() as u32;
        self.name_list.push(name.clone());
        self.resolutions.push(None);
        self.names.insert(name, id);
        id
    }

    fn name(&self, id: u32) -> Arc<str> {
        self.name_list
            .get(id as usize)
            .cloned()
            .unwrap_or_else(|| Arc::from(""))
    }

    /// Resolves a model name through the price table, once per name: the
    /// result is cached by name id. Unknown models that are rejected are not
    /// interned, so client-chosen names cannot fill the table.
    fn resolve(&mut self, model: &str) -> Result<Resolution, BudgetError> {
        if let Some(id) = self.lookup(model)
            && let Some(Some(r)) = self.resolutions.get(id as usize)
        {
            return Ok(*r);
        }
        let resolved = self.prices.resolve(model)?;
        let (canonical, price, defaulted) = (
            resolved.model.to_owned(),
            resolved.price,
            resolved.defaulted,
        );
        let canonical = self.intern(Some(&canonical));
        let r = Resolution {
            canonical,
            price,
            defaulted,
        };
        let id = self.intern(Some(model));
        if let Some(slot) = self.resolutions.get_mut(id as usize) {
            *slot = Some(r);
        }
        Ok(r)
    }

    /// The limits for a (key, team, canonical model) triple, cached.
    fn applicable(&mut self, names: [u32; 3]) -> Arc<[u16]> {
        if let Some(list) = self.applicable_cache.get(&names) {
            return list.clone();
        }
        let mut out = self.global.clone();
        for (map, id) in [
            (&self.by_key, names[0]),
            (&self.by_team, names[1]),
            (&self.by_model, names[2]),
        ] {
            let Some(name) = self.name_list.get(id as usize) else {
                continue;
            };
            if let Some(v) = map.get(&**name) {
                out.extend_from_slice(v);
            }
        }
        let list: Arc<[u16]> = out.into();
        if self.applicable_cache.len() >= MAX_NAMES {
            self.applicable_cache.clear();
        }
        self.applicable_cache.insert(names, list.clone());
        list
    }

    /// Holds the worst-case cost of a request (`input_tokens` in, up to
    /// `max_output_tokens` out, no cache discount) against every limit that
    /// applies: global, the team's, the key's and the model's.
    ///
    /// Above a limit's soft threshold a model dearer than the limit's fallback
    /// is replaced by the fallback ([`Reservation::degraded`] says so). If any
    /// hard limit would be passed, nothing is held and the error names it.
    pub fn reserve(
        &mut self,
        scopes: &Scopes<'_>,
        model: &str,
        input_tokens: u64,
        max_output_tokens: u64,
        now: SystemTime,
    ) -> Result<Reservation, BudgetError> {
        let output = Output {
            max: max_output_tokens,
            min: max_output_tokens,
        };
        self.reserve_output(scopes, model, input_tokens, output, now)
    }

    /// [`reserve`](Self::reserve), but when the limits cannot hold
    /// `max_output_tokens` of output, holds the most output they can, as
    /// long as that is at least `min_output_tokens`; below that the error
    /// names the limit. [`Reservation::output_tokens`] says how much output
    /// was held: the caller caps the request there, and can never spend more
    /// than the limits allow.
    pub fn reserve_up_to(
        &mut self,
        scopes: &Scopes<'_>,
        model: &str,
        input_tokens: u64,
        (min_output_tokens, max_output_tokens): (u64, u64),
        now: SystemTime,
    ) -> Result<Reservation, BudgetError> {
        let output = Output {
            max: max_output_tokens,
            min: min_output_tokens.min(max_output_tokens),
        };
        self.reserve_output(scopes, model, input_tokens, output, now)
    }

    fn reserve_output(
        &mut self,
        scopes: &Scopes<'_>,
        model: &str,
        input_tokens: u64,
        output: Output,
        now: SystemTime,
    ) -> Result<Reservation, BudgetError> {
        self.advance(now);
        let mut resolved = self.resolve(model)?;
        let (key, team) = (self.intern(scopes.key), self.intern(scopes.team));
        let mut limits = self.applicable([key, team, resolved.canonical]);

        // Degrade when a soft threshold is passed and a cheaper fallback exists.
        let degraded = match self.degrade(&limits, &resolved) {
            Some((degradation, fallback)) => {
                resolved = fallback;
                limits = self.applicable([key, team, resolved.canonical]);
                Some(degradation)
            }
            None => None,
        };
        let price = resolved.price;
        let output_tokens = self.affordable_output(&limits, &price, input_tokens, output)?;
        let needed = price.cost(Tokens::new(input_tokens, output_tokens));
        let model = self.name(resolved.canonical);
        if resolved.defaulted
            && !self.warned_unknown.contains(&*model)
            && self.warned_unknown.len() < MAX_NAMES
        {
            self.warned_unknown.insert(model.to_string());
            self.emit(Event::UnknownModelCharged {
                model: model.to_string(),
                price,
            });
        }
        for &i in limits.iter() {
            self.hold(i, needed);
        }
        let id = self.next_id;
        self.next_id += 1;
        let ttl = i64::try_from(self.cfg.reservation_ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_ms = self.now_ms.saturating_add(ttl);
        self.pending.push(
            id,
            Pending {
                expires_ms,
                amount: needed,
                limits: limits.clone(),
            },
        );
        Ok(Reservation {
            id,
            amount: needed,
            output_tokens,
            model,
            price,
            degraded,
            limits,
            names: [key, team, resolved.canonical],
            expires_at: from_unix_ms(expires_ms),
            epoch: self.epoch,
        })
    }

    /// The fallback of the first of `limits` past its soft threshold whose
    /// model is cheaper than `resolved`, and the degradation to report.
    fn degrade(
        &mut self,
        limits: &[u16],
        resolved: &Resolution,
    ) -> Option<(Degradation, Resolution)> {
        for &i in limits {
            let Some(l) = self.limits.get(usize::from(i)) else {
                continue;
            };
            let (Some(soft), Some(fallback)) = (l.soft, &l.limit.fallback) else {
                continue;
            };
            if l.spent.saturating_add(l.reserved) < soft {
                continue;
            }
            let (scope, period, fallback) =
                (l.limit.scope.clone(), l.limit.period, fallback.clone());
            let Ok(f) = self.resolve(&fallback) else {
                continue;
            };
            if f.price.weight() < resolved.price.weight() {
                let degradation = Degradation {
                    from: self.name(resolved.canonical).to_string(),
                    to: self.name(f.canonical).to_string(),
                    scope,
                    period,
                };
                return Some((degradation, f));
            }
        }
        None
    }

    /// The most output (up to `output.max`) that `limits` can hold beside
    /// `input` tokens; an error naming the limit when not even `output.min`
    /// fits.
    fn affordable_output(
        &self,
        limits: &[u16],
        price: &ModelPrice,
        input: u64,
        output: Output,
    ) -> Result<u64, BudgetError> {
        if self
            .check_room(limits, price.cost(Tokens::new(input, output.max)))
            .is_ok()
        {
            return Ok(output.max);
        }
        self.check_room(limits, price.cost(Tokens::new(input, output.min)))?;
        let room = limits
            .iter()
            .filter_map(|&i| self.limits.get(usize::from(i)))
            .map(|l| {
                let hard = l
                    .limit
                    .hard
                    .saturating_sub(l.spent.saturating_add(l.reserved));
                l.share.map_or(hard, |s| {
                    hard.min(
                        s.held
                            .saturating_sub(s.own_spent.saturating_add(l.reserved)),
                    )
                })
            })
            .min()
            .unwrap_or(Money::MAX);
        // cost(input, o) ≤ room ⇔ input·in + o·out ≤ room·10⁶ (costs round up).
        let budget = u128::from(room.micros()) * 1_000_000;
        let spent_on_input = u128::from(input) * u128::from(price.input_per_mtok.micros());
        let per_output = u128::from(price.output_per_mtok.micros()).max(1);
        let most = budget.saturating_sub(spent_on_input) / per_output;
        Ok(u64::try_from(most)
            .unwrap_or(u64::MAX)
            .clamp(output.min, output.max))
    }

    /// Refuses `needed` if it would take any of `limits` past its hard limit.
    fn check_room(&self, limits: &[u16], needed: Money) -> Result<(), BudgetError> {
        for &i in limits {
            let Some(l) = self.limits.get(usize::from(i)) else {
                continue;
            };
            if l.spent.saturating_add(l.reserved).saturating_add(needed) > l.limit.hard {
                return Err(BudgetError::BudgetExceeded {
                    scope: l.limit.scope.clone(),
                    period: l.limit.period,
                    limit: l.limit.hard,
                    spent: l.spent,
                    reserved: l.reserved,
                    needed,
                });
            }
            if let Some(s) = l.share {
                let holding = s
                    .own_spent
                    .saturating_add(l.reserved)
                    .saturating_add(needed);
                if holding > s.held {
                    return Err(BudgetError::ShareSpent {
                        scope: l.limit.scope.clone(),
                        period: l.limit.period,
                        limit: usize::from(i),
                        short: holding.saturating_sub(s.held),
                        needed,
                    });
                }
            }
        }
        Ok(())
    }

    fn hold(&mut self, i: u16, amount: Money) {
        let Some(l) = self.limits.get_mut(usize::from(i)) else {
            return;
        };
        l.reserved = l.reserved.saturating_add(amount);
        let passed_soft = l
            .soft
            .is_some_and(|s| l.spent.saturating_add(l.reserved) >= s);
        if passed_soft && l.crossed & SOFT_BIT == 0 {
            l.crossed |= SOFT_BIT;
            let event = Event::SoftLimit {
                scope: l.limit.scope.clone(),
                period: l.limit.period,
                fallback: l.limit.fallback.clone(),
            };
            self.emit(event);
        }
    }

    /// For limit `i`: releases `release` from reserved, adds `add` to spent and
    /// takes `refund` off it, then emits any threshold newly crossed.
    fn book(&mut self, i: u16, release: Money, add: Money, refund: Money) {
        self.book_as(i, (release, add, refund), true);
    }

    /// [`book`](Self::book); `own` is false for spend restored from a log
    /// (which may be other processes'): it does not use this process's share.
    fn book_as(&mut self, i: u16, (release, add, refund): (Money, Money, Money), own: bool) {
        let Some(l) = self.limits.get_mut(usize::from(i)) else {
            return;
        };
        l.reserved = l.reserved.saturating_sub(release);
        l.spent = l.spent.saturating_add(add).saturating_sub(refund);
        if let Some(share) = l.share.as_mut().filter(|_| own) {
            share.own_spent = share.own_spent.saturating_add(add).saturating_sub(refund);
        }
        if l.crossed & 0x0f == 0x0f {
            return;
        }
        // Whole percent of the limit spent (the limit is never zero).
        let percent = u128::from(l.spent.micros()) * 100 / u128::from(l.limit.hard.micros().max(1));
        if percent < 50 {
            return;
        }
        let mut crossed = Vec::new();
        for (bit, pct) in THRESHOLDS.iter().enumerate() {
            let flag = 1u8 << bit;
            let reached = percent >= u128::from(*pct);
            if reached && l.crossed & flag == 0 {
                l.crossed |= flag;
                crossed.push(Event::Threshold {
                    scope: l.limit.scope.clone(),
                    period: l.limit.period,
                    percent: *pct,
                    spent: l.spent,
                    limit: l.limit.hard,
                });
            }
        }
        for e in crossed {
            self.emit(e);
        }
    }

    /// Books an unsettled reservation in full: no money is lost if the request happened.
    fn expire(&mut self, id: u64, p: &Pending) {
        for &i in p.limits.iter() {
            self.book(i, p.amount, p.amount, Money::ZERO);
        }
        self.emit(Event::ReservationExpired {
            reservation: id,
            amount: p.amount,
        });
    }

    /// Books what the request really cost (from `tokens` at the reserved
    /// model's price) and releases its reservation. Returns the cost.
    #[allow(clippy::needless_pass_by_value)] // consuming the reservation is the point
    pub fn settle(
        &mut self,
        reservation: Reservation,
        tokens: Tokens,
        now: SystemTime,
    ) -> Settlement {
        self.advance(now);
        let r = reservation;
        let cost = r.price.cost(tokens);
        let late = self.pending.remove(r.id).is_none();
        for &i in r.limits.iter() {
            if late {
                // Booked in full at expiry: correct to the real cost.
                self.book(i, Money::ZERO, cost, r.amount);
            } else {
                self.book(i, r.amount, cost, Money::ZERO);
            }
        }
        if cost > r.amount {
            self.emit(Event::Overrun {
                reservation: r.id,
                reserved: r.amount,
                cost,
            });
        }
        if r.epoch != self.epoch {
            self.book_added_limits(&r.limits, r.names, cost);
        }
        self.record_usage(r.names, tokens, cost);
        Settlement {
            cost,
            reserved: r.amount,
            late,
        }
    }

    /// Releases a reservation without booking anything (the request was not
    /// made). If it had expired and been booked, the booking is refunded.
    #[allow(clippy::needless_pass_by_value)] // consuming the reservation is the point
    pub fn cancel(&mut self, reservation: Reservation, now: SystemTime) {
        self.advance(now);
        let r = reservation;
        let late = self.pending.remove(r.id).is_none();
        for &i in r.limits.iter() {
            if late {
                self.book(i, Money::ZERO, Money::ZERO, r.amount);
            } else {
                self.book(i, r.amount, Money::ZERO, Money::ZERO);
            }
        }
    }

    /// Books money spent before a restart, from a usage log (`requests`
    /// requests that used `tokens` and cost `cost` in all): `cost` counts
    /// against every limit whose current period contains `at`, and the
    /// request appears in [`report`](Self::report) on its day. Replaying a
    /// period's log after a restart makes the budget continue from what was
    /// spent, and the spend-anomaly check compare today with the days before
    /// (from the hour of `at`). Thresholds crossed by the replay are
    /// announced again.
    #[allow(clippy::too_many_arguments)] // one usage record, field by field
    pub fn restore(
        &mut self,
        scopes: &Scopes<'_>,
        model: &str,
        requests: u64,
        tokens: Tokens,
        cost: Money,
        at: SystemTime,
        now: SystemTime,
    ) {
        self.advance(now);
        let model = match self.resolve(model) {
            Ok(r) => r.canonical,
            // A model no longer priced still counts against the other scopes.
            Err(_) => self.intern(Some(model)),
        };
        let names = [self.intern(scopes.key), self.intern(scopes.team), model];
        let cal = self.cfg.calendar;
        for &i in self.applicable(names).iter() {
            let current = self
                .limits
                .get(usize::from(i))
                .is_some_and(|l| cal.period_id(l.limit.period, at) == l.period_id);
            if current {
                self.book_as(i, (Money::ZERO, cost, Money::ZERO), false);
            }
        }
        let at_ms = unix_ms(at);
        let day = cal.day_of_ms(at_ms);
        let agg = self.usage.entry((day, names)).or_default();
        agg.requests += requests;
        agg.prompt += tokens.prompt;
        agg.completion += tokens.completion;
        agg.cost = agg.cost.saturating_add(cost.micros());
        self.restore_hourly(at_ms, cost);
    }

    /// Books restored spend into the hourly history the anomaly check
    /// compares today with, so that it works on the first day after a
    /// restart.
    fn restore_hourly(&mut self, at_ms: i64, cost: Money) {
        let cal = self.cfg.calendar;
        let (day, today) = (cal.day_of_ms(at_ms), cal.day_of_ms(self.now_ms));
        if cost == Money::ZERO || day > today || day < today - 7 {
            return;
        }
        self.first_day = Some(self.first_day.map_or(day, |f| f.min(day)));
        let hour = usize::try_from(cal.ms_of_day(at_ms) / 3_600_000)
            .unwrap_or(0)
            .min(23);
        if let Some(h) = self.hourly.entry(day).or_insert([0; 24]).get_mut(hour) {
            *h = h.saturating_add(cost.micros());
        }
        if day == today {
            if self.today.0 != day {
                self.today = (day, 0);
            }
            self.today.1 = self.today.1.saturating_add(cost.micros());
        }
        self.trailing = None;
    }

    fn record_usage(&mut self, names: [u32; 3], tokens: Tokens, cost: Money) {
        let cal = self.cfg.calendar;
        let day = cal.day_of_ms(self.now_ms);
        let agg = self.usage.entry((day, names)).or_default();
        agg.requests += 1;
        agg.prompt += tokens.prompt;
        agg.completion += tokens.completion;
        agg.cost = agg.cost.saturating_add(cost.micros());
        if cost == Money::ZERO {
            return;
        }
        // Hourly global spend, for the anomaly check.
        let hour = usize::try_from(cal.ms_of_day(self.now_ms) / 3_600_000)
            .unwrap_or(0)
            .min(23);
        let buckets = self.hourly.entry(day).or_insert([0; 24]);
        if let Some(h) = buckets.get_mut(hour) {
            *h = h.saturating_add(cost.micros());
        }
        if self.today.0 != day {
            self.today = (day, 0);
        }
        self.today.1 = self.today.1.saturating_add(cost.micros());
        self.check_anomaly(day, hour);
    }

    /// Today's spend so far against the average of the previous days (up to
    /// 7, those the ledger has seen) up to the end of the same hour. The
    /// average is computed once an hour.
    fn check_anomaly(&mut self, day: i64, hour: usize) {
        if self.alerted_day == Some(day) {
            return;
        }
        let (average, days) = match self.trailing {
            Some((d, h, average, days)) if d == day && h == hour => (average, days),
            _ => {
                let first = self.first_day.unwrap_or(day).max(day - 7);
                let days = u32::try_from(day - first).unwrap_or(0);
                let through = |d: i64| -> u64 {
                    self.hourly
                        .get(&d)
                        .map_or(0, |h| h.iter().take(hour + 1).sum())
                };
                let previous: u64 = (first..day).map(through).sum();
                let average = previous.checked_div(u64::from(days)).unwrap_or(0);
                self.trailing = Some((day, hour, average, days));
                (average, days)
            }
        };
        let today = self.today.1;
        let factor = u128::from(self.cfg.anomaly_permille);
        if average > 0 && u128::from(today) * 1000 > u128::from(average) * factor {
            self.alerted_day = Some(day);
            self.emit(Event::Anomaly {
                today: Money::from_micros(today),
                trailing_average: Money::from_micros(average),
                days,
            });
        }
    }

    // ----- reports -------------------------------------------------------

    /// Usage per key, team and model on every local day that the span
    /// `from..to` touches (usage is kept per day, so a span within one day
    /// reports that whole day). Dearest lines first.
    pub fn report(&self, from: SystemTime, to: SystemTime, filter: &ReportFilter<'_>) -> Report {
        let cal = self.cfg.calendar;
        let first = cal.day(from);
        // The day holding the span's last instant, included.
        let last = cal.day(from_unix_ms(unix_ms(to).saturating_sub(1)).max(from)) + 1;
        let id_of = |name: Option<&str>| name.map(|n| self.names.get(n).copied());
        let want = [id_of(filter.key), id_of(filter.team), id_of(filter.model)];
        let mut lines: BTreeMap<[u32; 3], Agg> = BTreeMap::new();
        for (&(day, names), agg) in &self.usage {
            if day < first || day >= last {
                continue;
            }
            let matches = want.iter().zip(names).all(|(w, n)| match w {
                None => true,
                Some(Some(id)) => *id == n,
                Some(None) => false,
            });
            if !matches {
                continue;
            }
            let line = lines.entry(names).or_default();
            line.requests += agg.requests;
            line.prompt += agg.prompt;
            line.completion += agg.completion;
            line.cost = line.cost.saturating_add(agg.cost);
        }
        let name = |id: u32| self.name_list.get(id as usize).map(ToString::to_string);
        let mut usage: Vec<UsageLine> = lines
            .into_iter()
            .map(|([k, t, m], a)| UsageLine {
                key: name(k),
                team: name(t),
                model: name(m).unwrap_or_default(),
                requests: a.requests,
                prompt_tokens: a.prompt,
                completion_tokens: a.completion,
                total_tokens: a.prompt + a.completion,
                estimated_cost: Money::from_micros(a.cost),
            })
            .collect();
        usage.sort_by(|a, b| {
            b.estimated_cost
                .cmp(&a.estimated_cost)
                .then_with(|| a.model.cmp(&b.model))
        });
        let total_estimated_cost = usage.iter().map(|l| l.estimated_cost).sum();
        Report {
            usage,
            total_estimated_cost,
        }
    }
}

/// One line, e.g. `team "search" daily: 90% spent ($9.00 of $10.00)`: what
/// logs, dashboards and audit trails show.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::Threshold {
                scope,
                period,
                percent,
                spent,
                limit,
            } => write!(f, "{scope} {period}: {percent}% spent ({spent} of {limit})"),
            Event::SoftLimit {
                scope,
                period,
                fallback: Some(model),
            } => write!(
                f,
                "{scope} {period}: soft limit passed, dearer models go to {model}"
            ),
            Event::SoftLimit { scope, period, .. } => {
                write!(f, "{scope} {period}: soft limit passed")
            }
            Event::PeriodReset {
                scope,
                period,
                spent,
            } => write!(
                f,
                "{scope} {period}: new period (the last one spent {spent})"
            ),
            Event::ReservationExpired {
                reservation,
                amount,
            } => write!(
                f,
                "reservation {reservation} expired unsettled: {amount} booked"
            ),
            Event::Overrun {
                reservation,
                reserved,
                cost,
            } => write!(
                f,
                "reservation {reservation} cost {cost}, more than the {reserved} reserved"
            ),
            Event::UnknownModelCharged { model, price } => write!(
                f,
                "model {model:?} has no price: charged {} per million input tokens",
                price.input_per_mtok
            ),
            Event::Anomaly {
                today,
                trailing_average,
                days,
            } => write!(
                f,
                "spend anomaly: {today} today against {trailing_average} on average over {days} days"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(expires_ms: i64) -> Pending {
        Pending {
            expires_ms,
            amount: Money::from_micros(1),
            limits: Arc::from([0u16].as_slice()),
        }
    }

    #[test]
    fn pending_queue_removes_in_any_order_and_expires_in_id_order() {
        let mut q = PendingQueue::default();
        for id in 10..15 {
            q.push(id, pending(id as i64 * 100));
        }
        assert_eq!(q.len, 5);
        assert!(q.remove(12).is_some());
        assert!(q.remove(12).is_none(), "removed once");
        assert!(q.remove(9).is_none() && q.remove(99).is_none());
        assert!(q.remove(10).is_some());
        assert_eq!(q.first, 11, "front tombstones are trimmed");
        assert_eq!(q.first_expiry(), Some(1100));
        assert_eq!(q.pop_expired(1099).map(|(id, _)| id), None);
        assert_eq!(q.pop_expired(1300).map(|(id, _)| id), Some(11));
        assert_eq!(
            q.pop_expired(1300).map(|(id, _)| id),
            Some(13),
            "the tombstone of 12 is skipped"
        );
        assert_eq!(q.len, 1);
        assert!(q.remove(14).is_some());
        assert_eq!((q.len, q.first_expiry()), (0, None));
        // A new push after draining starts a fresh window.
        q.push(20, pending(5));
        assert!(q.remove(20).is_some());
    }
}
