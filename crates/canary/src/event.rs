//! Events a rollout emits, drained with [`Rollout::poll_event`](crate::Rollout::poll_event).

use std::sync::Arc;

use crate::share::Share;

/// Who or what made a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Cause {
    /// An operator's command.
    Operator,
    /// The schedule, after a Promote verdict and the step's hold time.
    Schedule,
    /// A Rollback verdict.
    Verdict,
}

/// Something that changed in a rollout. Each records the old and the new.
#[derive(Clone, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "event", rename_all = "snake_case"))]
pub enum Event {
    /// A candidate's share changed.
    ShareChanged {
        /// The candidate's model.
        model: Arc<str>,
        /// The share before.
        old: Share,
        /// The share after.
        new: Share,
        /// Who changed it.
        cause: Cause,
    },
    /// Everyone now gets this candidate.
    FullRollout {
        /// The candidate's model.
        model: Arc<str>,
        /// What the phase was before, as text.
        previous: String,
    },
    /// Everyone is back on the baseline, and stays there until a restart.
    RolledBack {
        /// Why.
        reason: String,
        /// Each candidate's share before.
        shares_before: Vec<(Arc<str>, Share)>,
        /// Who did it.
        cause: Cause,
    },
    /// An operator restarted a rolled-back rollout.
    Restarted,
    /// The rollout was enabled or disabled.
    EnabledChanged {
        /// Before.
        old: bool,
        /// After.
        new: bool,
    },
    /// The schedule reached its last step.
    ScheduleCompleted,
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Cause::Operator => "by an operator",
            Cause::Schedule => "by the schedule",
            Cause::Verdict => "by the analysis",
        })
    }
}

/// One line, e.g. `claude-sonnet-4.5: 10.00% -> 25.00% (by the schedule)`:
/// what logs, dashboards and audit trails show.
impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::ShareChanged {
                model,
                old,
                new,
                cause,
            } => write!(f, "{model}: {old} -> {new} ({cause})"),
            Event::FullRollout { model, previous } => {
                write!(f, "full rollout of {model} (was {previous})")
            }
            Event::RolledBack { reason, cause, .. } => {
                write!(f, "rolled back ({cause}): {reason}")
            }
            Event::Restarted => f.write_str("restarted"),
            Event::EnabledChanged { new: true, .. } => f.write_str("enabled"),
            Event::EnabledChanged { new: false, .. } => f.write_str("disabled"),
            Event::ScheduleCompleted => f.write_str("schedule completed"),
        }
    }
}
