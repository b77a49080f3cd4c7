//! The canary's errors.

/// Everything that can go wrong in the canary.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CanaryError {
    /// Assignment needs a subject; an empty one would silently be bucket 0.
    #[error("canary subject must not be empty")]
    EmptySubject,
    /// A share outside `0.0..=1.0` or `0..=10_000` basis points.
    #[error("share {value} is out of range: use a fraction in 0.0..=1.0 or 0..=10000 basis points")]
    ShareOutOfRange {
        /// The value given, as written.
        value: String,
    },
    /// The candidates' shares would add up to more than everyone.
    #[error("candidate shares would add up to {total_bp} basis points, more than 10000")]
    SharesExceedTotal {
        /// The total that was asked for.
        total_bp: u32,
    },
    /// No candidate arm with that model.
    #[error("no candidate arm for model {model:?}")]
    UnknownModel {
        /// The model asked for.
        model: String,
    },
    /// Two arms (or an arm and the baseline) name the same model.
    #[error("model {model:?} appears twice in the rollout")]
    DuplicateModel {
        /// The model.
        model: String,
    },
    /// A rollout needs at least one candidate.
    #[error("a rollout needs at least one candidate model")]
    NoCandidates,
    /// More candidates than a rollout supports (255).
    #[error("a rollout supports at most 255 candidates")]
    TooManyCandidates,
    /// The seed-compatible scheme is a single threshold: one candidate only.
    #[error("the seed-compatible scheme supports exactly one candidate")]
    SeedSchemeNeedsOneCandidate,
    /// Schedule steps must be non-empty and strictly increasing.
    #[error("schedule steps must be non-empty and strictly increasing (step {step} is not)")]
    BadSchedule {
        /// The first offending step, counted from 0.
        step: usize,
    },
    /// A saved state does not fit this rollout: its arms name other models,
    /// or its bucket ranges are out of order, overlapping or out of range.
    #[error("the saved state does not fit this rollout: {what}")]
    SavedMismatch {
        /// What does not fit.
        what: String,
    },
    /// The rollout was rolled back; only a restart (or a rollback) is accepted.
    #[error("the rollout was rolled back ({reason}); restart it first")]
    RolledBack {
        /// Why it was rolled back.
        reason: String,
    },
}
