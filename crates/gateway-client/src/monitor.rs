//! Driving the layers' timers, analysing canaries, and tracing events.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use canary::{Arm, Verdict, judge};
use keypool_core::Timestamp;

use crate::client::{Client, ClientEvent, lock};

/// How the request path tells the monitor that a timer moved earlier, without
/// waking it on every request: the monitor publishes the time it sleeps until,
/// and a change wakes it only when its own deadline comes sooner.
#[derive(Debug)]
pub(crate) struct MonitorWake {
    notify: tokio::sync::Notify,
    /// Unix milliseconds the monitor sleeps until; `0` while it is awake (or
    /// before it first sleeps), meaning "always notify".
    sleeps_until_ms: AtomicU64,
}

impl MonitorWake {
    pub(crate) fn new() -> Self {
        MonitorWake {
            notify: tokio::sync::Notify::new(),
            sleeps_until_ms: AtomicU64::new(0),
        }
    }

    /// Wakes the monitor unconditionally (an operator changed a layer).
    pub(crate) fn now(&self) {
        self.notify.notify_one();
    }

    /// Wakes the monitor if something is due at `due`, before it would wake.
    /// Call after the change, with the layer's new `poll_timeout`, still
    /// holding or after releasing the layer's lock: the monitor computes its
    /// deadline under the same lock, so either it saw the change, or it had
    /// not published its deadline yet (`0`) and is notified.
    pub(crate) fn if_sooner(&self, due: Option<Timestamp>) {
        let Some(due) = due else { return };
        let sleeps_until = self.sleeps_until_ms.load(Ordering::SeqCst);
        if sleeps_until == 0 || due.as_unix_millis() < sleeps_until {
            self.notify.notify_one();
        }
    }
}

/// Writes an event to `tracing` with structured fields (names, never secrets).
pub(crate) fn trace(event: &ClientEvent) {
    use keypool_core::Event as P;
    match event {
        ClientEvent::Pool { provider, event } => match event {
            P::Disabled { name, cause, .. } => {
                tracing::warn!(provider = %provider, key = %name, cause = %cause, "key disabled");
            }
            P::BreakerOpened { name, until, .. } => {
                tracing::warn!(provider = %provider, key = %name, until = %until, "circuit breaker opened");
            }
            P::PoolEmpty { retry_at } => {
                let retry_at = retry_at.map(|t| t.to_string());
                tracing::warn!(provider = %provider, retry_at = ?retry_at, "no key can serve");
            }
            P::Exhausted { name, until, .. } => {
                tracing::warn!(provider = %provider, key = %name, until = %until, "key quota exhausted");
            }
            P::CoolingDown {
                name, until, cause, ..
            } => {
                tracing::info!(provider = %provider, key = %name, until = %until, cause = ?cause, "key cooling down");
            }
            P::Rotated {
                name, revoke_at, ..
            } => {
                tracing::info!(provider = %provider, key = %name, revoke_at = %revoke_at, "key rotated");
            }
            P::Revoked { name, .. } => {
                tracing::info!(provider = %provider, key = %name, "key revoked");
            }
            P::UsageWarning {
                name,
                limit,
                percent,
                ..
            } => {
                tracing::info!(provider = %provider, key = %name, limit = ?limit, percent, "key usage warning");
            }
            other => {
                tracing::debug!(provider = %provider, event = ?other, "key pool event");
            }
        },
        ClientEvent::Budget(e) => {
            if matches!(
                e,
                budget::Event::Anomaly { .. }
                    | budget::Event::Threshold { .. }
                    | budget::Event::Overrun { .. }
            ) {
                tracing::warn!(event = ?e, "budget");
            } else {
                tracing::info!(event = ?e, "budget");
            }
        }
        ClientEvent::Canary { rollout, event } => {
            tracing::info!(rollout = %rollout, event = ?event, "canary");
        }
    }
}

impl Client {
    /// The earliest time a layer changes by itself (a cooldown, a reset, a
    /// reservation's expiry, a schedule step).
    pub fn next_wakeup(&self) -> Option<SystemTime> {
        let mut next: Option<SystemTime> = None;
        let mut take = |t: Option<SystemTime>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for p in &self.inner.providers {
            take(lock(&p.pool).poll_timeout().map(Timestamp::to_system_time));
        }
        if let Some(l) = &self.inner.ledger {
            take(lock(l).poll_timeout());
        }
        for slot in self.inner.rollouts.values() {
            take(lock(&slot.rollout).poll_timeout());
        }
        next
    }

    /// Applies everything due now in every layer and publishes the events.
    pub fn tick(&self) {
        let now = self.inner.clock.now();
        for p in &self.inner.providers {
            let mut pool = lock(&p.pool);
            pool.handle_timeout(Timestamp::from_system_time(now));
            self.drain_pool(p, &mut pool);
        }
        if let Some(l) = &self.inner.ledger {
            let mut ledger = lock(l);
            ledger.handle_timeout(now);
            self.drain_ledger(&mut ledger);
        }
        for slot in self.inner.rollouts.values() {
            let mut rollout = lock(&slot.rollout);
            rollout.handle_timeout(now);
            self.drain_rollout(&slot.name, &mut rollout);
        }
    }

    /// Judges each rollout's first candidate against its baseline on the
    /// statistics gathered since the last verdict (rollouts whose analysis
    /// is off are left out), and feeds the verdict to the rollout (which
    /// may advance its schedule or roll back). Returns the verdicts by
    /// rollout.
    pub fn analyze(&self) -> Vec<(String, Verdict)> {
        self.judge_where(|_| true)
    }

    /// Judges the rollouts whose own interval (else `default_interval`)
    /// has passed since they were last judged; the first look at a rollout
    /// only schedules it. With `judge` false the intervals move on and
    /// nothing is judged (another process judges).
    pub fn analyze_due(&self, default_interval: Duration, judge: bool) -> Vec<(String, Verdict)> {
        let now = self.inner.clock.now();
        let mut due = std::collections::HashSet::new();
        for (model, slot) in &self.inner.rollouts {
            let analysis = lock(&slot.analysis).clone();
            if !analysis.enabled {
                continue;
            }
            let every = analysis.interval.unwrap_or(default_interval);
            let mut next = lock(&slot.next_analysis);
            match *next {
                Some(t) if t <= now => {
                    *next = Some(now + every);
                    due.insert(model.clone());
                }
                Some(_) => {}
                None => *next = Some(now + every),
            }
        }
        if !judge || due.is_empty() {
            return Vec::new();
        }
        self.judge_where(|model| due.contains(model))
    }

    /// When a rollout is next due for judging (`None` before the first
    /// [`analyze_due`](Self::analyze_due), or with every analysis off).
    pub fn next_analysis(&self) -> Option<SystemTime> {
        self.inner
            .rollouts
            .values()
            .filter(|slot| lock(&slot.analysis).enabled)
            .filter_map(|slot| *lock(&slot.next_analysis))
            .min()
    }

    fn judge_where(&self, pick: impl Fn(&str) -> bool) -> Vec<(String, Verdict)> {
        let now = self.inner.clock.now();
        let mut verdicts = Vec::new();
        for (model, slot) in &self.inner.rollouts {
            if !lock(&slot.analysis).enabled || !pick(model) {
                continue;
            }
            let verdict = self.judge_one(slot);
            {
                let mut rollout = lock(&slot.rollout);
                rollout.handle_verdict(&verdict, now);
                self.drain_rollout(&slot.name, &mut rollout);
            }
            verdicts.push((model.clone(), verdict));
        }
        let mut last = lock(&self.inner.verdicts);
        for (model, v) in &verdicts {
            last.insert(model.clone(), (now, v.clone()));
        }
        verdicts
    }

    /// A verdict on `slot`'s statistics; once there is enough evidence for
    /// one, a new window of evidence starts for the next.
    fn judge_one(&self, slot: &crate::client::RolloutSlot) -> Verdict {
        let gates = lock(&slot.analysis)
            .gates
            .clone()
            .unwrap_or_else(|| self.inner.gates.clone());
        let mut stats = lock(&self.inner.stats);
        let get = |arm| {
            stats
                .arms
                .get(&(slot.name.to_string(), arm))
                .cloned()
                .unwrap_or_default()
        };
        let verdict = judge(&get(Arm::Baseline), &get(Arm::Candidate(0)), &gates);
        if !matches!(verdict, Verdict::Hold { .. }) {
            stats
                .arms
                .retain(|(rollout, _), _| rollout.as_str() != &*slot.name);
        }
        verdict
    }

    /// The analysis of the rollout of `model`; `None` if it has none.
    pub fn analysis(&self, model: &str) -> Option<crate::Analysis> {
        let slot = self.inner.rollouts.get(model)?;
        Some(lock(&slot.analysis).clone())
    }

    /// Replaces the analysis of the rollout of `model` (whether it is
    /// judged, how often, by which gates); its next judging is scheduled
    /// afresh at the next [`analyze_due`](Self::analyze_due). `false` if
    /// it has no rollout.
    pub fn set_analysis(&self, model: &str, analysis: crate::Analysis) -> bool {
        let Some(slot) = self.inner.rollouts.get(model) else {
            return false;
        };
        *lock(&slot.analysis) = analysis;
        *lock(&slot.next_analysis) = None;
        self.inner.wake.now();
        true
    }

    /// Each rollout's latest verdict and when it was reached, by baseline model.
    pub fn last_verdicts(&self) -> std::collections::BTreeMap<String, (SystemTime, Verdict)> {
        lock(&self.inner.verdicts).clone()
    }

    /// Spawns the monitor: it sleeps until the next wakeup (or until a layer
    /// changes), applies timers, and every `analysis_interval` judges the
    /// canaries. Use with [`SystemClock`](crate::SystemClock); with a
    /// [`ManualClock`](crate::ManualClock), call [`tick`](Self::tick) and
    /// [`analyze`](Self::analyze) yourself.
    pub fn spawn_monitor(&self, analysis_interval: Duration) -> tokio::task::JoinHandle<()> {
        self.spawn_monitor_gated(analysis_interval, None)
    }

    /// [`spawn_monitor`](Self::spawn_monitor), judging the canaries only
    /// while `analyze` (when given) is true: where several processes share
    /// rollouts, one of them judges and the others follow its verdicts.
    pub fn spawn_monitor_gated(
        &self,
        analysis_interval: Duration,
        analyze: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
    ) -> tokio::task::JoinHandle<()> {
        let client = self.clone();
        tokio::spawn(async move {
            let clock = client.inner.clock.clone();
            let judges = |a: &Option<std::sync::Arc<std::sync::atomic::AtomicBool>>| {
                a.as_ref().is_none_or(|a| a.load(Ordering::SeqCst))
            };
            // The first look schedules every rollout's analysis.
            client.analyze_due(analysis_interval, false);
            loop {
                let now = clock.now();
                let wake = [client.next_wakeup(), client.next_analysis()]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(now + analysis_interval);
                let wait = wake.duration_since(now).unwrap_or(Duration::ZERO);
                let until_ms = wake
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(1, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                    .max(1);
                let signal = &client.inner.wake;
                signal.sleeps_until_ms.store(until_ms, Ordering::SeqCst);
                tokio::select! {
                    () = clock.sleep(wait) => {}
                    () = signal.notify.notified() => {}
                }
                signal.sleeps_until_ms.store(0, Ordering::SeqCst);
                client.tick();
                client.analyze_due(analysis_interval, judges(&analyze));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn notified(w: &MonitorWake) -> bool {
        use std::future::Future;
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let fut = std::pin::pin!(w.notify.notified());
        fut.poll(&mut cx).is_ready()
    }

    #[test]
    fn wakes_only_for_a_sooner_deadline() {
        let w = MonitorWake::new();
        // Awake (never slept): every change notifies.
        w.if_sooner(Some(Timestamp::from_unix_millis(5_000)));
        assert!(notified(&w));
        w.sleeps_until_ms.store(10_000, Ordering::SeqCst);
        w.if_sooner(Some(Timestamp::from_unix_millis(10_000)));
        w.if_sooner(Some(Timestamp::from_unix_millis(20_000)));
        w.if_sooner(None);
        assert!(!notified(&w), "nothing earlier than its deadline");
        w.if_sooner(Some(Timestamp::from_unix_millis(9_999)));
        assert!(notified(&w));
        w.now();
        assert!(notified(&w));
    }
}
