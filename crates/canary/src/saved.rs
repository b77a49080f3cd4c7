//! What of a rollout outlives a restart of the process that holds it.

use std::sync::Arc;
use std::time::SystemTime;

use crate::bucket::BUCKETS;
use crate::rollout::Phase;
use crate::share::Share;

/// A [`Rollout`](crate::Rollout)'s state that outlives a restart: who owns
/// which bucket, the phase, whether it is enabled, and where its schedule
/// stands. Its configuration (baseline, salt, scheme, overrides, schedule)
/// is not part of it: that comes from wherever the rollout was built from.
///
/// Saving the bucket table rather than each arm's share keeps every user on
/// the arm they had, however the shares were changed before the restart.
///
/// ```
/// use canary::{Context, Rollout, Share};
/// # fn main() -> Result<(), canary::CanaryError> {
/// let build = || Rollout::builder("gpt-4.1").candidate("claude-sonnet-4.5", Share::percent(10)?).build();
/// let mut before = build()?;
/// before.set_share("claude-sonnet-4.5", Share::percent(30)?)?;
/// let saved = before.saved();
///
/// let mut after = build()?; // a new process, built from the same config
/// after.restore(&saved)?;
/// assert_eq!(after.share("claude-sonnet-4.5"), Some(Share::percent(30)?));
/// let ctx = Context::new("user-42");
/// assert_eq!(after.assign(&ctx)?.model, before.assign(&ctx)?.model);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SavedRollout {
    /// Each candidate arm, in declaration order.
    pub arms: Vec<SavedArm>,
    /// The phase.
    pub phase: Phase,
    /// Whether the rollout is enabled.
    pub enabled: bool,
    /// The schedule's current step (0 without a schedule).
    pub step: u32,
    /// When the current step began, while a step's hold is running.
    pub step_started: Option<SystemTime>,
    /// Whether a Promote verdict came since the current step began.
    pub promoted: bool,
}

/// One candidate arm of a [`SavedRollout`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct SavedArm {
    /// The candidate's model.
    pub model: Arc<str>,
    /// The buckets it owns, as half-open ranges `(start, end)` of bucket
    /// numbers (`0..10_000`), ascending and not overlapping. Their total
    /// length is the arm's share in basis points.
    pub buckets: Vec<(u16, u16)>,
}

impl SavedArm {
    /// The arm's share in basis points: the buckets it owns.
    pub fn share_bp(&self) -> u32 {
        self.buckets
            .iter()
            .map(|&(a, b)| u32::from(b.saturating_sub(a)))
            .sum()
    }
}

impl crate::Rollout {
    /// The state to save, so that [`restore`](Self::restore) in a new
    /// process continues where this one is.
    pub fn saved(&self) -> SavedRollout {
        let arms = self
            .candidates
            .iter()
            .enumerate()
            .map(|(i, c)| SavedArm {
                model: c.model.clone(),
                buckets: runs_of(&self.owners, (i + 1) as u8),
            })
            .collect();
        SavedRollout {
            arms,
            phase: self.phase.clone(),
            enabled: self.enabled,
            step: u32::try_from(self.step).unwrap_or(u32::MAX),
            step_started: self.step_started,
            promoted: self.promoted,
        }
    }

    /// Continues from a state [`saved`](Self::saved) before a restart. The
    /// saved arms must name exactly this rollout's candidates (in any order)
    /// and own valid, disjoint bucket ranges; otherwise nothing changes and
    /// the error says what does not fit. Emits no event: nothing changed,
    /// the rollout only remembered.
    pub fn restore(&mut self, saved: &SavedRollout) -> Result<(), CrateError> {
        let owners = self.owners_from(saved)?;
        if let Phase::FullRollout { model } = &saved.phase
            && !self.candidates.iter().any(|c| c.model == *model)
        {
            return Err(mismatch(format!("full rollout of unknown model {model:?}")));
        }
        for (i, c) in self.candidates.iter_mut().enumerate() {
            let owned = owners.iter().filter(|&&o| usize::from(o) == i + 1).count();
            c.share = Share::from_bp(u32::try_from(owned).unwrap_or(u32::MAX))?;
        }
        self.owners = owners;
        self.phase = saved.phase.clone();
        self.enabled = saved.enabled;
        let steps = self.schedule.as_ref().map_or(1, |s| s.steps.len());
        self.step = usize::try_from(saved.step)
            .unwrap_or(usize::MAX)
            .min(steps.saturating_sub(1));
        self.step_started = saved.step_started.filter(|_| self.schedule.is_some());
        self.promoted = saved.promoted;
        Ok(())
    }

    /// The bucket table `saved` describes, checked against this rollout.
    fn owners_from(&self, saved: &SavedRollout) -> Result<Box<[u8]>, CrateError> {
        if saved.arms.len() != self.candidates.len() {
            return Err(mismatch(format!(
                "{} saved arms for {} candidates",
                saved.arms.len(),
                self.candidates.len()
            )));
        }
        let mut owners = vec![0u8; usize::from(BUCKETS)].into_boxed_slice();
        for arm in &saved.arms {
            let i = self
                .candidates
                .iter()
                .position(|c| c.model == arm.model)
                .ok_or_else(|| mismatch(format!("no candidate {:?}", arm.model)))?;
            for &(start, end) in &arm.buckets {
                let run = owners
                    .get_mut(usize::from(start)..usize::from(end))
                    .filter(|_| start < end)
                    .ok_or_else(|| mismatch(format!("bucket range {start}..{end}")))?;
                if run.iter().any(|&o| o != 0) {
                    return Err(mismatch(format!("bucket range {start}..{end} overlaps")));
                }
                run.fill((i + 1) as u8);
            }
        }
        Ok(owners)
    }
}

type CrateError = crate::CanaryError;

fn mismatch(what: String) -> CrateError {
    CrateError::SavedMismatch { what }
}

/// The half-open runs of `owner` in `owners`, ascending.
fn runs_of(owners: &[u8], owner: u8) -> Vec<(u16, u16)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (b, &o) in owners.iter().enumerate() {
        let b = u16::try_from(b).unwrap_or(u16::MAX);
        match (o == owner, start) {
            (true, None) => start = Some(b),
            (false, Some(s)) => {
                runs.push((s, b));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, BUCKETS));
    }
    runs
}
