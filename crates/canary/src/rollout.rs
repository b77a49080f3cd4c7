//! Rollouts: a baseline model, candidate arms, overrides, a schedule.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::bucket::{BUCKETS, SeedBuckets, bucket, seed_bucket, seed_in_candidate};
use crate::error::CanaryError;
use crate::event::{Cause, Event};
use crate::judge::Verdict;
use crate::share::Share;

/// How subjects are mapped to buckets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Scheme {
    /// [`bucket`]: salted md5 into 10 000 buckets. Any number of candidates.
    #[default]
    Salted,
    /// [`seed_bucket`]: the seed scripts' unsalted md5 modulo 100 or 1000,
    /// in the candidate when `bucket / N < share`. One candidate.
    Seed(SeedBuckets),
}

/// What is known about a request, for overrides and assignment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context<'a> {
    /// Who is assigned: a user id, a session id, an API key name. Must not be empty.
    pub subject: &'a str,
    /// The client API key's name, if any.
    pub key_name: Option<&'a str>,
    /// The client's team, if any.
    pub team: Option<&'a str>,
    /// Request headers (names compared case-insensitively).
    pub headers: &'a [(&'a str, &'a str)],
}

impl<'a> Context<'a> {
    /// A context with only a subject.
    pub fn new(subject: &'a str) -> Self {
        Context {
            subject,
            ..Context::default()
        }
    }

    /// With the client key's name.
    pub fn key_name(mut self, name: &'a str) -> Self {
        self.key_name = Some(name);
        self
    }

    /// With the team.
    pub fn team(mut self, team: &'a str) -> Self {
        self.team = Some(team);
        self
    }

    /// With headers.
    pub fn headers(mut self, headers: &'a [(&'a str, &'a str)]) -> Self {
        self.headers = headers;
        self
    }

    fn attribute(&self, attribute: &Attribute) -> Option<&'a str> {
        match attribute {
            Attribute::Subject => Some(self.subject),
            Attribute::KeyName => self.key_name,
            Attribute::Team => self.team,
            Attribute::Header(name) => self
                .headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|&(_, v)| v),
        }
    }
}

/// A request attribute a [`Rule`] looks at.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Attribute {
    /// The subject itself.
    Subject,
    /// The client API key's name.
    KeyName,
    /// The team.
    Team,
    /// A header, by name (case-insensitive).
    Header(String),
}

/// How a [`Rule`] matches an attribute's value. Comparisons ignore ASCII case.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Matcher {
    /// The whole value.
    Equals(String),
    /// A part of the value.
    Contains(String),
    /// The start of the value.
    StartsWith(String),
}

impl Matcher {
    fn matches(&self, value: &str) -> bool {
        match self {
            Matcher::Equals(p) => value.eq_ignore_ascii_case(p),
            Matcher::Contains(p) => {
                p.is_empty()
                    || value
                        .as_bytes()
                        .windows(p.len())
                        .any(|w| w.eq_ignore_ascii_case(p.as_bytes()))
            }
            Matcher::StartsWith(p) => value
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p)),
        }
    }
}

/// Where an override sends a request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Target {
    /// The baseline model.
    Baseline,
    /// A candidate, by model.
    Candidate(String),
}

/// An override on a request attribute, checked before hashing, e.g. the first
/// seed's "keys whose name contains `test` get the new model":
///
/// ```
/// use canary::{Attribute, Matcher, Rule, Target};
/// let rule = Rule {
///     attribute: Attribute::KeyName,
///     matcher: Matcher::Contains("test".into()),
///     target: Target::Candidate("claude-sonnet-4.5".into()),
/// };
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Rule {
    /// What to look at.
    pub attribute: Attribute,
    /// How to match it.
    pub matcher: Matcher,
    /// Where a match goes.
    pub target: Target,
}

/// One step of a [`Schedule`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Step {
    /// The first candidate's share during the step.
    pub share: Share,
    /// The least time the step lasts (the last step's is never waited on).
    pub hold: Duration,
}

/// A ramp schedule for the first candidate: steps of rising shares, each
/// held at least its `hold` and left only after a Promote verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Schedule {
    /// Strictly increasing shares, e.g. 1% → 5% → 25% → 50% → 100%.
    pub steps: Vec<Step>,
}

impl Schedule {
    /// Steps of `shares`, each held `hold`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use canary::{Schedule, Share};
    /// let ramp = Schedule::even([5, 50, 100].map(|p| Share::percent(p).unwrap()), Duration::from_secs(3600));
    /// assert_eq!(ramp.steps.len(), 3);
    /// ```
    pub fn even(shares: impl IntoIterator<Item = Share>, hold: Duration) -> Self {
        Schedule {
            steps: shares
                .into_iter()
                .map(|share| Step { share, hold })
                .collect(),
        }
    }

    /// Checks that steps are non-empty and strictly increasing.
    pub fn validate(&self) -> Result<(), CanaryError> {
        if self.steps.is_empty() {
            return Err(CanaryError::BadSchedule { step: 0 });
        }
        match self
            .steps
            .windows(2)
            .position(|w| matches!(w, [a, b] if a.share >= b.share))
        {
            Some(i) => Err(CanaryError::BadSchedule { step: i + 1 }),
            None => Ok(()),
        }
    }

    fn share(&self, step: usize) -> Option<Share> {
        self.steps.get(step).map(|s| s.share)
    }
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "phase", rename_all = "snake_case"))]
pub enum Phase {
    /// Candidates get their shares.
    Running,
    /// Everyone gets this candidate.
    FullRollout {
        /// The candidate's model.
        model: Arc<str>,
    },
    /// Everyone gets the baseline until an operator restarts the rollout.
    RolledBack {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Phase::Running => f.write_str("running"),
            Phase::FullRollout { model } => write!(f, "full rollout of {model}"),
            Phase::RolledBack { reason } => write!(f, "rolled back: {reason}"),
        }
    }
}

/// Which arm a request is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Arm {
    /// The baseline.
    Baseline,
    /// The candidate at this index (in the order they were declared).
    Candidate(u8),
}

/// Why a request got its arm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Reason {
    /// The rollout is disabled.
    Disabled,
    /// The rollout was rolled back.
    RolledBack,
    /// Full rollout.
    FullRollout,
    /// The subject is on the deny-list.
    Denied,
    /// The subject is on the allow-list.
    Allowed,
    /// A rule matched (its index).
    Rule(u16),
    /// The subject's bucket.
    Bucket(u16),
}

/// The result of [`Rollout::assign`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assignment<'r> {
    /// The model to call.
    pub model: &'r Arc<str>,
    /// The arm.
    pub arm: Arm,
    /// Why.
    pub reason: Reason,
}

/// A candidate arm.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Candidate {
    /// The model.
    pub model: Arc<str>,
    /// Its share.
    pub share: Share,
}

/// A gray release of one or more candidate models against a baseline.
///
/// Methods follow the sans-IO shape: getters; [`assign`](Self::assign) (pure);
/// commands ([`set_share`](Self::set_share), [`full_rollout`](Self::full_rollout),
/// [`rollback`](Self::rollback), [`restart`](Self::restart),
/// [`set_enabled`](Self::set_enabled), [`start`](Self::start)); things that
/// happened ([`handle_verdict`](Self::handle_verdict),
/// [`handle_timeout`](Self::handle_timeout)); outputs
/// ([`poll_event`](Self::poll_event), [`poll_timeout`](Self::poll_timeout)).
///
/// # Who is in which arm
///
/// In the salted scheme the rollout records which arm owns each of the
/// 10 000 buckets. Raising a candidate's share gives it the lowest-numbered
/// buckets the baseline owns; lowering it returns its highest-numbered
/// buckets to the baseline. So raising a share only ever moves users from the
/// baseline to that candidate, lowering only moves that candidate's users to
/// the baseline, and other candidates' users never move. With one candidate
/// at share `s` its buckets are exactly `0..s`. Ownership depends on the order
/// of changes; the same rollout built and changed the same way always gives
/// the same assignment. `assign` is one md5 and an array lookup.
#[derive(Clone, Debug)]
pub struct Rollout {
    baseline: Arc<str>,
    pub(crate) candidates: Vec<Candidate>,
    salt: String,
    scheme: Scheme,
    /// For each bucket: 0 for the baseline, `i + 1` for candidate `i`.
    pub(crate) owners: Box<[u8]>,
    pub(crate) allow: HashMap<String, u8>,
    pub(crate) deny: HashSet<String>,
    pub(crate) rules: Vec<Rule>,
    pub(crate) enabled: bool,
    pub(crate) phase: Phase,
    pub(crate) schedule: Option<Schedule>,
    pub(crate) step: usize,
    pub(crate) step_started: Option<SystemTime>,
    pub(crate) promoted: bool,
    /// Whether a step waits for a Promote verdict as well as its hold.
    gated: bool,
    events: VecDeque<Event>,
}

/// Builds a [`Rollout`]; see [`Rollout::builder`].
#[derive(Clone, Debug)]
pub struct RolloutBuilder {
    baseline: String,
    candidates: Vec<(String, Share)>,
    salt: String,
    scheme: Scheme,
    allow: Vec<(String, String)>,
    deny: Vec<String>,
    rules: Vec<Rule>,
    schedule: Option<Schedule>,
    enabled: bool,
    gated: bool,
}

impl RolloutBuilder {
    /// Adds a candidate arm with its initial share.
    pub fn candidate(mut self, model: impl Into<String>, share: Share) -> Self {
        self.candidates.push((model.into(), share));
        self
    }

    /// The salt; different salts give independent assignments.
    pub fn salt(mut self, salt: impl Into<String>) -> Self {
        self.salt = salt.into();
        self
    }

    /// The bucket scheme (default [`Scheme::Salted`]).
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = scheme;
        self
    }

    /// Always sends `subject` to the candidate `model`.
    pub fn allow(mut self, subject: impl Into<String>, model: impl Into<String>) -> Self {
        self.allow.push((subject.into(), model.into()));
        self
    }

    /// Always sends `subject` to the baseline. Beats the allow-list and rules.
    pub fn deny(mut self, subject: impl Into<String>) -> Self {
        self.deny.push(subject.into());
        self
    }

    /// Adds a rule; rules are checked in order, after the lists.
    pub fn rule(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Ramps the first candidate by a schedule once [`Rollout::start`] is called.
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = Some(schedule);
        self
    }

    /// Whether the schedule waits for a Promote verdict at each step (the
    /// default). With `false`, each step lasts its hold and no more: the
    /// ramp runs on time alone, for rollouts whose analysis is switched
    /// off (a Rollback verdict still rolls back).
    pub fn promote_on_verdicts(mut self, gated: bool) -> Self {
        self.gated = gated;
        self
    }

    /// Starts disabled (everyone on the baseline) when `false`.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Validates and builds the rollout.
    pub fn build(self) -> Result<Rollout, CanaryError> {
        if self.candidates.is_empty() {
            return Err(CanaryError::NoCandidates);
        }
        if self.candidates.len() > usize::from(u8::MAX) {
            return Err(CanaryError::TooManyCandidates);
        }
        if matches!(self.scheme, Scheme::Seed(_)) && self.candidates.len() != 1 {
            return Err(CanaryError::SeedSchemeNeedsOneCandidate);
        }
        let mut seen: HashSet<&str> = HashSet::from([self.baseline.as_str()]);
        for (model, _) in &self.candidates {
            if !seen.insert(model) {
                return Err(CanaryError::DuplicateModel {
                    model: model.clone(),
                });
            }
        }
        let total: u32 = self.candidates.iter().map(|(_, s)| u32::from(s.bp())).sum();
        if total > u32::from(BUCKETS) {
            return Err(CanaryError::SharesExceedTotal { total_bp: total });
        }
        if let Some(schedule) = &self.schedule {
            schedule.validate()?;
        }
        let index_of = |model: &str| {
            self.candidates
                .iter()
                .position(|(m, _)| m == model)
                .map(|i| i as u8)
                .ok_or_else(|| CanaryError::UnknownModel {
                    model: model.to_owned(),
                })
        };
        let mut allow = HashMap::new();
        for (subject, model) in &self.allow {
            allow.insert(subject.clone(), index_of(model)?);
        }
        for rule in &self.rules {
            if let Target::Candidate(model) = &rule.target {
                index_of(model)?;
            }
        }
        let mut rollout = Rollout {
            baseline: Arc::from(self.baseline.as_str()),
            candidates: self
                .candidates
                .iter()
                .map(|(m, _)| Candidate {
                    model: Arc::from(m.as_str()),
                    share: Share::ZERO,
                })
                .collect(),
            salt: self.salt,
            scheme: self.scheme,
            owners: vec![0u8; usize::from(BUCKETS)].into_boxed_slice(),
            allow,
            deny: self.deny.into_iter().collect(),
            rules: self.rules,
            enabled: self.enabled,
            phase: Phase::Running,
            schedule: self.schedule,
            step: 0,
            step_started: None,
            promoted: false,
            gated: self.gated,
            events: VecDeque::new(),
        };
        for (i, (_, share)) in self.candidates.iter().enumerate() {
            rollout.resize(i, *share);
        }
        Ok(rollout)
    }
}

impl Rollout {
    /// A rollout from `baseline`; add candidates, then [`build`](RolloutBuilder::build).
    pub fn builder(baseline: impl Into<String>) -> RolloutBuilder {
        RolloutBuilder {
            baseline: baseline.into(),
            candidates: Vec::new(),
            salt: String::new(),
            scheme: Scheme::Salted,
            allow: Vec::new(),
            deny: Vec::new(),
            rules: Vec::new(),
            schedule: None,
            enabled: true,
            gated: true,
        }
    }

    // ----- getters -------------------------------------------------------

    /// The baseline model.
    pub fn baseline(&self) -> &Arc<str> {
        &self.baseline
    }

    /// The candidate arms, in declaration order.
    pub fn candidates(&self) -> &[Candidate] {
        &self.candidates
    }

    /// A candidate's share.
    pub fn share(&self, model: &str) -> Option<Share> {
        self.candidates
            .iter()
            .find(|c| &*c.model == model)
            .map(|c| c.share)
    }

    /// The phase.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// Whether the rollout is enabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The salt.
    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// The schedule's current step, if there is a schedule.
    pub fn step(&self) -> Option<usize> {
        self.schedule.as_ref().map(|_| self.step)
    }

    /// The model for `model`'s arm, if `model` is the baseline or a candidate.
    fn model_of(&self, arm: Arm) -> &Arc<str> {
        match arm {
            Arm::Baseline => &self.baseline,
            Arm::Candidate(i) => self
                .candidates
                .get(usize::from(i))
                .map_or(&self.baseline, |c| &c.model),
        }
    }

    pub(crate) fn index_of(&self, model: &str) -> Result<usize, CanaryError> {
        self.candidates
            .iter()
            .position(|c| &*c.model == model)
            .ok_or_else(|| CanaryError::UnknownModel {
                model: model.to_owned(),
            })
    }

    // ----- assignment ----------------------------------------------------

    /// Which model serves this request. Checked in order: disabled or rolled
    /// back (baseline), full rollout (the candidate), deny-list (baseline),
    /// allow-list, rules, then the subject's bucket. An empty subject is an
    /// error. Pure: the same rollout and context always give the same answer.
    pub fn assign(&self, ctx: &Context<'_>) -> Result<Assignment<'_>, CanaryError> {
        if ctx.subject.is_empty() {
            return Err(CanaryError::EmptySubject);
        }
        let done = |arm, reason| {
            Ok(Assignment {
                model: self.model_of(arm),
                arm,
                reason,
            })
        };
        if !self.enabled {
            return done(Arm::Baseline, Reason::Disabled);
        }
        match &self.phase {
            Phase::RolledBack { .. } => return done(Arm::Baseline, Reason::RolledBack),
            Phase::FullRollout { model } => {
                let i = self.index_of(model).unwrap_or(0);
                return done(Arm::Candidate(i as u8), Reason::FullRollout);
            }
            Phase::Running => {}
        }
        if !self.deny.is_empty() && self.deny.contains(ctx.subject) {
            return done(Arm::Baseline, Reason::Denied);
        }
        if let Some(&i) = self.allow.get(ctx.subject) {
            return done(Arm::Candidate(i), Reason::Allowed);
        }
        for (n, rule) in self.rules.iter().enumerate() {
            if ctx
                .attribute(&rule.attribute)
                .is_some_and(|v| rule.matcher.matches(v))
            {
                let arm = match &rule.target {
                    Target::Baseline => Arm::Baseline,
                    Target::Candidate(m) => Arm::Candidate(self.index_of(m).unwrap_or(0) as u8),
                };
                return done(arm, Reason::Rule(u16::try_from(n).unwrap_or(u16::MAX)));
            }
        }
        match self.scheme {
            Scheme::Salted => {
                let b = bucket(&self.salt, ctx.subject)?;
                let owner = self.owners.get(usize::from(b)).copied().unwrap_or(0);
                let arm = if owner == 0 {
                    Arm::Baseline
                } else {
                    Arm::Candidate(owner - 1)
                };
                done(arm, Reason::Bucket(b))
            }
            Scheme::Seed(n) => {
                let b = seed_bucket(ctx.subject, n)?;
                let share = self.candidates.first().map_or(0, |c| c.share.bp());
                let arm = if seed_in_candidate(b, n, share) {
                    Arm::Candidate(0)
                } else {
                    Arm::Baseline
                };
                done(arm, Reason::Bucket(b as u16))
            }
        }
    }

    /// Shorthand: the model for a subject with no other context.
    pub fn model_for(&self, subject: &str) -> Result<&Arc<str>, CanaryError> {
        self.assign(&Context::new(subject)).map(|a| a.model)
    }

    // ----- commands ------------------------------------------------------

    /// Sets a candidate's share. Out-of-range totals are an error and change
    /// nothing. From a full rollout this returns to running at the new share.
    pub fn set_share(&mut self, model: &str, share: Share) -> Result<(), CanaryError> {
        self.refuse_if_rolled_back()?;
        let i = self.index_of(model)?;
        let room = self.room_for(i);
        if share > room {
            let total = u32::from(BUCKETS) - u32::from(room.bp()) + u32::from(share.bp());
            return Err(CanaryError::SharesExceedTotal { total_bp: total });
        }
        if matches!(self.phase, Phase::FullRollout { .. }) {
            self.phase = Phase::Running;
        }
        self.change_share(i, share, Cause::Operator);
        Ok(())
    }

    /// Sets a candidate's share from a fraction in `0.0..=1.0`.
    pub fn set_fraction(&mut self, model: &str, fraction: f64) -> Result<(), CanaryError> {
        self.set_share(model, Share::from_fraction(fraction)?)
    }

    /// Everyone gets `model`.
    pub fn full_rollout(&mut self, model: &str) -> Result<(), CanaryError> {
        self.refuse_if_rolled_back()?;
        let i = self.index_of(model)?;
        let model = self.model_of(Arm::Candidate(i as u8)).clone();
        let previous = self.phase.to_string();
        self.phase = Phase::FullRollout {
            model: model.clone(),
        };
        self.events
            .push_back(Event::FullRollout { model, previous });
        Ok(())
    }

    /// Everyone goes back to the baseline, and stays there until [`restart`](Self::restart).
    pub fn rollback(&mut self, reason: impl Into<String>) {
        self.roll_back(reason.into(), Cause::Operator);
    }

    fn roll_back(&mut self, reason: String, cause: Cause) {
        let shares_before = self
            .candidates
            .iter()
            .map(|c| (c.model.clone(), c.share))
            .collect();
        for i in 0..self.candidates.len() {
            self.resize(i, Share::ZERO);
        }
        self.phase = Phase::RolledBack {
            reason: reason.clone(),
        };
        self.promoted = false;
        self.events.push_back(Event::RolledBack {
            reason,
            shares_before,
            cause,
        });
    }

    /// Leaves the rolled-back phase. With a schedule, the ramp starts again
    /// from its first step at `now`; without one, shares stay at zero until set.
    pub fn restart(&mut self, now: SystemTime) {
        if !matches!(self.phase, Phase::RolledBack { .. }) {
            return;
        }
        self.phase = Phase::Running;
        self.events.push_back(Event::Restarted);
        if self.schedule.is_some() {
            self.start(now);
        }
    }

    /// Enables or disables the rollout (disabled: everyone on the baseline).
    pub fn set_enabled(&mut self, enabled: bool) {
        if enabled != self.enabled {
            self.events.push_back(Event::EnabledChanged {
                old: self.enabled,
                new: enabled,
            });
            self.enabled = enabled;
        }
    }

    /// Whether a schedule's step also waits for a Promote verdict before it
    /// moves on (see [`RolloutBuilder::promote_on_verdicts`]); changed when
    /// the rollout's analysis is switched on or off.
    pub fn set_promote_on_verdicts(&mut self, gated: bool) {
        self.gated = gated;
    }

    /// Starts the schedule at its first step. Without a schedule, does nothing.
    pub fn start(&mut self, now: SystemTime) {
        let Some(first) = self.schedule.as_ref().and_then(|s| s.share(0)) else {
            return;
        };
        self.step = 0;
        self.step_started = Some(now);
        self.promoted = false;
        self.change_share(0, first, Cause::Schedule);
    }

    fn refuse_if_rolled_back(&self) -> Result<(), CanaryError> {
        match &self.phase {
            Phase::RolledBack { reason } => Err(CanaryError::RolledBack {
                reason: reason.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// The most candidate `i` may have given the others' shares.
    fn room_for(&self, i: usize) -> Share {
        let others: u32 = self
            .candidates
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, c)| u32::from(c.share.bp()))
            .sum();
        Share::from_bp(u32::from(BUCKETS).saturating_sub(others)).unwrap_or(Share::ZERO)
    }

    fn change_share(&mut self, i: usize, share: Share, cause: Cause) {
        // A schedule step never takes buckets another candidate holds.
        let share = share.min(self.room_for(i));
        let Some(old) = self.candidates.get(i).map(|c| c.share) else {
            return;
        };
        if old == share {
            return;
        }
        self.resize(i, share);
        let model = self.model_of(Arm::Candidate(i as u8)).clone();
        self.events.push_back(Event::ShareChanged {
            model,
            old,
            new: share,
            cause,
        });
    }

    /// Grows or shrinks candidate `i`'s buckets to `share` (see the type's docs).
    fn resize(&mut self, i: usize, share: Share) {
        let Some(c) = self.candidates.get_mut(i) else {
            return;
        };
        let owner = (i + 1) as u8;
        let (old, new) = (c.share.bp(), share.bp());
        c.share = share;
        if new > old {
            let mut need = new - old;
            for o in self.owners.iter_mut().filter(|o| **o == 0) {
                if need == 0 {
                    break;
                }
                *o = owner;
                need -= 1;
            }
        } else {
            let mut give = old - new;
            for o in self.owners.iter_mut().rev().filter(|o| **o == owner) {
                if give == 0 {
                    break;
                }
                *o = 0;
                give -= 1;
            }
        }
    }

    // ----- things that happened -----------------------------------------

    /// Records an analysis verdict for the first candidate. Rollback rolls
    /// back at once; Promote lets the schedule advance once the step's hold
    /// time has passed (at once, if it has); Hold changes nothing.
    pub fn handle_verdict(&mut self, verdict: &Verdict, now: SystemTime) {
        match verdict {
            Verdict::Rollback { reason } => {
                if !matches!(self.phase, Phase::RolledBack { .. }) {
                    self.roll_back(reason.to_string(), Cause::Verdict);
                }
            }
            Verdict::Promote => {
                if self.phase == Phase::Running && self.step_started.is_some() {
                    self.promoted = true;
                    self.handle_timeout(now);
                }
            }
            Verdict::Hold { .. } => {}
        }
    }

    /// Advances the schedule if the current step's hold time has passed and a
    /// Promote verdict came since it began. Early or repeated calls do nothing.
    pub fn handle_timeout(&mut self, now: SystemTime) {
        let Some(due) = self.step_due() else { return };
        if now < due || !self.may_advance() {
            return;
        }
        let Some(next) = self.schedule.as_ref().and_then(|s| s.share(self.step + 1)) else {
            return;
        };
        self.step += 1;
        self.step_started = Some(now);
        self.promoted = false;
        self.change_share(0, next, Cause::Schedule);
        let last = self
            .schedule
            .as_ref()
            .is_some_and(|s| self.step + 1 == s.steps.len());
        if last {
            self.step_started = None;
            self.events.push_back(Event::ScheduleCompleted);
            if next == Share::ALL
                && let Some(model) = self.candidates.first().map(|c| c.model.clone())
            {
                let previous = self.phase.to_string();
                self.phase = Phase::FullRollout {
                    model: model.clone(),
                };
                self.events
                    .push_back(Event::FullRollout { model, previous });
            }
        }
    }

    /// When the current step's hold time ends, if a schedule is running and
    /// has a next step.
    fn step_due(&self) -> Option<SystemTime> {
        if self.phase != Phase::Running {
            return None;
        }
        let schedule = self.schedule.as_ref()?;
        if self.step + 1 >= schedule.steps.len() {
            return None;
        }
        let hold = schedule.steps.get(self.step)?.hold;
        self.step_started?.checked_add(hold)
    }

    // ----- outputs -------------------------------------------------------

    /// When the schedule may next advance by itself: the end of the current
    /// step's hold, once a Promote verdict has come (or at once, for a
    /// rollout that does not wait for verdicts). `None` otherwise (a verdict
    /// will advance it when it arrives).
    pub fn poll_timeout(&self) -> Option<SystemTime> {
        self.step_due().filter(|_| self.may_advance())
    }

    /// Whether the current step may end once its hold has passed.
    fn may_advance(&self) -> bool {
        self.promoted || !self.gated
    }

    /// The next event, oldest first. Drain until `None`.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}
