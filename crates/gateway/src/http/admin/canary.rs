//! `/admin/canary`: rollouts moved while serving.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use serde::Deserialize;

use super::{audit, verb};
use crate::http::error::ApiError;
use crate::http::extract::{Admin, JsonBody};
use crate::state::AppState;
use crate::views::{List, RolloutView};

fn rollouts(s: &AppState) -> List<RolloutView> {
    List::of(RolloutView::all(
        &s.client.snapshot(),
        &s.client.last_verdicts(),
    ))
}

/// `GET /admin/canary`: each rollout's split, phase and latest verdict.
pub(super) async fn list(State(s): State<Arc<AppState>>, _: Admin) -> Json<List<RolloutView>> {
    Json(rollouts(&s))
}

/// What an operator does to a rollout (the last path segment).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Command {
    /// A candidate's share (`{"percent", "candidate"?}`).
    Percent,
    /// Everyone to a candidate (`{"candidate"?}`).
    Rollout,
    /// Everyone back to the baseline until a restart (`{"reason"?}`).
    Rollback,
    /// Out of the rolled-back phase.
    Restart,
}

impl Command {
    fn label(self) -> &'static str {
        match self {
            Command::Percent => "canary.percent",
            Command::Rollout => "canary.rollout",
            Command::Rollback => "canary.rollback",
            Command::Restart => "canary.restart",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CommandBody {
    /// For `percent`: the candidate's new share, 0 to 100.
    #[serde(default)]
    percent: Option<f64>,
    /// Which candidate (default: the first).
    #[serde(default)]
    candidate: Option<String>,
    /// For `rollback`: why.
    #[serde(default)]
    reason: Option<String>,
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_canary_command", message)
}

/// Applies `command` to `r`; the error says why it was refused.
fn apply(
    r: &mut canary::Rollout,
    command: Command,
    c: &CommandBody,
    actor: &str,
    now: std::time::SystemTime,
) -> Result<(), String> {
    let candidate = match &c.candidate {
        Some(m) => m.clone(),
        None => r
            .candidates()
            .first()
            .map(|c| c.model.to_string())
            .unwrap_or_default(),
    };
    match command {
        Command::Percent => {
            let p = c.percent.ok_or("percent is needed")?;
            if !(0.0..=100.0).contains(&p) || !p.is_finite() {
                return Err(format!("percent must be between 0 and 100, not {p}"));
            }
            r.set_fraction(&candidate, p / 100.0)
                .map_err(|e| e.to_string())
        }
        Command::Rollout => r.full_rollout(&candidate).map_err(|e| e.to_string()),
        Command::Rollback => {
            r.rollback(c.reason.clone().unwrap_or_else(|| format!("by {actor}")));
            Ok(())
        }
        Command::Restart => {
            r.restart(now);
            Ok(())
        }
    }
}

/// `POST /admin/canary/{model}/{command}`: applied, saved, audited.
pub(super) async fn command(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    path: Result<Path<(String, Command)>, PathRejection>,
    JsonBody(body): JsonBody<CommandBody>,
) -> Result<Json<List<RolloutView>>, ApiError> {
    let (model, command) = verb(
        path,
        "invalid_canary_command",
        "percent, rollout, rollback, restart",
    )?;
    let _change = s.one_change_at_a_time().await;
    let no_rollout = || ApiError::not_found(format!("no canary rollout for {model:?}"));
    let before = s.rollout_state(&model).ok_or_else(no_rollout)?;
    s.client
        .with_rollout(&model, |r, now| apply(r, command, &body, &admin.0, now))
        .ok_or_else(no_rollout)?
        .map_err(invalid)?;
    let after = s.rollout_state(&model).ok_or_else(no_rollout)?;
    s.store
        .save_rollout(after.clone())
        .await
        .map_err(|e| ApiError::internal(format!("the canary's state could not be saved: {e}")))?;
    let label = command.label();
    audit(
        &s,
        &admin,
        label,
        &model,
        Some(&before.saved),
        Some(&after.saved),
    )
    .await?;
    Ok(Json(rollouts(&s)))
}
