//! Deterministic gray release of a new model: which users get the candidate.
//!
//! A [`Rollout`] sends a share of users (in basis points) to one or more
//! candidate models and everyone else to the baseline. A user's arm comes
//! from an md5 bucket of a salted subject, so it is sticky (the same user gets
//! the same model on every request, on every replica, after every restart),
//! and ramps are monotonic (raising a share only adds users to the candidate).
//! Overrides (deny-list, allow-list, rules on the key name, team or headers)
//! are checked first. [`judge`] compares the arms' counters and decides to
//! promote, hold or roll back, and a [`Schedule`] ramps step by step.
//!
//! # Key design decision: pure and deterministic
//!
//! Like `keypool-core`, this crate does no I/O, never reads a clock (time is
//! passed in as a `SystemTime` value) and uses no randomness: assignment is a
//! function of the salt, the subject and the rollout's history of changes. The
//! bucket formulas are pinned by golden vectors, so an upgrade never moves a user.
//!
//! # Example: a 10% rollout
//!
//! ```
//! use canary::{Context, Rollout, Share};
//!
//! # fn main() -> Result<(), canary::CanaryError> {
//! let mut rollout = Rollout::builder("gpt-4.1")
//!     .candidate("claude-sonnet-4.5", Share::percent(10)?)
//!     .salt("launch-1")
//!     .build()?;
//!
//! let model = rollout.model_for("user-42")?;
//! assert_eq!(model, rollout.model_for("user-42")?); // sticky
//!
//! // About 10% of users get the candidate.
//! let on_candidate = (0..10_000)
//!     .filter(|i| &**rollout.model_for(&format!("user-{i}")).unwrap() == "claude-sonnet-4.5")
//!     .count();
//! assert!((900..1100).contains(&on_candidate));
//!
//! // Ramp up: everyone who had the candidate keeps it.
//! rollout.set_share("claude-sonnet-4.5", Share::percent(25)?)?;
//! let a = rollout.assign(&Context::new("user-42").key_name("prod-app"))?;
//! println!("{} ({:?})", a.model, a.reason);
//! # Ok(())
//! # }
//! ```

mod bucket;
mod error;
mod event;
mod judge;
mod overrides;
mod rollout;
mod saved;
mod share;

pub use bucket::{BUCKETS, SeedBuckets, bucket, seed_bucket};
pub use error::CanaryError;
pub use event::{Cause, Event};
pub use judge::{ArmStats, GateFailure, Gates, LatencyHistogram, Verdict, judge};
pub use overrides::Overrides;
pub use rollout::{
    Arm, Assignment, Attribute, Candidate, Context, Matcher, Phase, Reason, Rollout,
    RolloutBuilder, Rule, Schedule, Scheme, Step, Target,
};
pub use saved::{SavedArm, SavedRollout};
pub use share::Share;
