//! `POST /admin/upstream-keys/import`: many upstream keys at once, as a
//! list or as a paste of lines, each checked by the provider's key rule
//! and, when asked, by a one-token request, then added, stored and audited
//! like a single addition; the answer reports every line.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use futures_util::StreamExt as _;
use keypool_core::{KeyRule, Limits, NewKey, Secret, redact};
use serde::{Deserialize, Serialize};

use super::upstream::{add_key, check_models, sealer, with_models};
use crate::http::error::ApiError;
use crate::http::extract::{Admin, JsonBody};
use crate::state::AppState;

/// The most keys one import takes.
const MOST: usize = 1000;

/// Probes sent at once during an import.
const PROBES_AT_ONCE: usize = 8;

/// One key of `keys`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportKey {
    #[serde(default)]
    name: Option<String>,
    secret: String,
}

/// The body: `keys`, or `text` with a key a line (`secret`, or `name secret`;
/// blank lines and lines starting with `#` are skipped).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Import {
    provider: String,
    #[serde(default)]
    keys: Vec<ImportKey>,
    #[serde(default)]
    text: Option<String>,
    /// Names of keys given without one: `{name_prefix}-{n}`.
    #[serde(default)]
    name_prefix: Option<String>,
    /// Prove each key with a one-token request of this model first.
    #[serde(default)]
    probe_model: Option<String>,
    #[serde(default)]
    tier: u8,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    limits: Limits,
    /// The only models the keys are picked for.
    #[serde(default)]
    models: Option<Vec<String>>,
}

/// What became of one line.
#[derive(Debug, Serialize)]
pub(super) struct LineReport {
    /// The line of `text`, or the position in `keys`, from 1.
    line: usize,
    name: String,
    /// The secret, redacted.
    secret: String,
    /// `added`, `refused` (the key rule, a duplicate) or `probe_failed`.
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The answer: counts and every line.
#[derive(Debug, Serialize)]
pub(super) struct ImportReport {
    provider: String,
    added: usize,
    refused: usize,
    lines: Vec<LineReport>,
}

/// A key to import: (line, name, secret).
type Candidate = (usize, String, String);

/// The keys of `text`: `secret` or `name secret` (any whitespace, `=` or
/// `,` between), skipping blank lines and `#` comments.
fn parse_text(text: &str, prefix: &str) -> Vec<Candidate> {
    let mut n = 0;
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let fields: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == '=' || c == ',')
                .filter(|f| !f.is_empty())
                .collect();
            let (name, secret) = match fields.as_slice() {
                [name, secret] => ((*name).to_owned(), (*secret).to_owned()),
                _ => {
                    n += 1;
                    (format!("{prefix}-{n}"), line.to_owned())
                }
            };
            Some((i + 1, name, secret))
        })
        .collect()
}

impl Import {
    fn candidates(&self) -> Result<Vec<Candidate>, ApiError> {
        let prefix = self.name_prefix.as_deref().unwrap_or("imported");
        let mut all: Vec<Candidate> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let name = k
                    .name
                    .clone()
                    .unwrap_or_else(|| format!("{prefix}-{}", i + 1));
                (i + 1, name, k.secret.clone())
            })
            .collect();
        if let Some(text) = &self.text {
            all.extend(parse_text(text, prefix));
        }
        match all.len() {
            0 => Err(ApiError::bad_request(
                "no_keys",
                "give the keys as `keys` (a list of {\"name\"?, \"secret\"}) or `text` (a key a line)",
            )),
            n if n > MOST => Err(ApiError::bad_request(
                "too_many_keys",
                format!("{n} keys: at most {MOST} in one import"),
            )),
            _ => Ok(all),
        }
    }

    fn new_key(&self, name: &str, secret: &str) -> NewKey {
        let key = NewKey::new(name.to_owned(), secret.to_owned())
            .group(self.provider.clone())
            .tier(self.tier)
            .weight(self.weight.unwrap_or(1))
            .limits(self.limits);
        with_models(key, self.models.as_ref())
    }
}

fn report(c: &Candidate, status: &'static str) -> LineReport {
    LineReport {
        line: c.0,
        name: c.1.clone(),
        secret: redact(&c.2),
        status,
        id: None,
        error: None,
    }
}

/// Checks `c` by the key rule and, with a probe model, by a request: the
/// refusal, if any.
async fn check(s: &AppState, i: &Import, rule: &KeyRule, c: &Candidate) -> Option<LineReport> {
    if let Err(e) = rule.check(&c.1, &c.2) {
        return Some(LineReport {
            error: Some(e.to_string()),
            ..report(c, "refused")
        });
    }
    let model = i.probe_model.as_deref()?;
    let outcome = s
        .client
        .probe(&i.provider, Secret::new(c.2.as_str()), model)
        .await?;
    (!outcome.works()).then(|| LineReport {
        error: Some(outcome.to_string()),
        ..report(c, "probe_failed")
    })
}

/// `POST /admin/upstream-keys/import`.
pub(super) async fn import(
    State(s): State<Arc<AppState>>,
    admin: Admin,
    JsonBody(i): JsonBody<Import>,
) -> Result<Json<ImportReport>, ApiError> {
    let rule = s
        .client
        .read_pool(&i.provider, |p| p.config().key_rule.clone())
        .ok_or_else(|| ApiError::not_found(format!("no provider {:?}", i.provider)))?;
    check_models(i.models.as_ref())?;
    let candidates = i.candidates()?;
    // Refused as a whole when no key could be stored.
    sealer(&s)?;
    // Probes go out a few at a time (each may wait for an upstream);
    // additions are then made one by one, in the order given.
    let checks: Vec<_> = candidates.iter().map(|c| check(&s, &i, &rule, c)).collect();
    let checked: Vec<Option<LineReport>> = futures_util::stream::iter(checks)
        .buffered(PROBES_AT_ONCE)
        .collect()
        .await;
    let mut lines = Vec::with_capacity(candidates.len());
    for (c, refused) in candidates.iter().zip(checked) {
        if let Some(refused) = refused {
            lines.push(refused);
            continue;
        }
        lines.push(
            match add_key(&s, &admin, &i.provider, &c.2, i.new_key(&c.1, &c.2)).await {
                Ok(view) => LineReport {
                    id: view.key.id.clone(),
                    ..report(c, "added")
                },
                Err(e) => LineReport {
                    error: Some(e.message().to_owned()),
                    ..report(c, "refused")
                },
            },
        );
    }
    let added = lines.iter().filter(|l| l.status == "added").count();
    Ok(Json(ImportReport {
        provider: i.provider,
        added,
        refused: lines.len() - added,
        lines,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_paste_reads_names_secrets_comments_and_blank_lines() {
        let text = "# from the relay's console\n\nsk-aaaaaaaaaaaaaaaaaaaa1\nbackup = sk-bbbbbbbbbbbbbbbbbbbb2\n  spare,sk-cccccccccccccccccccc3  \nsk-dddddddddddddddddddd4\n";
        let got = parse_text(text, "relay");
        let names: Vec<(usize, &str)> = got.iter().map(|(l, n, _)| (*l, n.as_str())).collect();
        assert_eq!(
            names,
            [(3, "relay-1"), (4, "backup"), (5, "spare"), (6, "relay-2")]
        );
        assert_eq!(got[2].2, "sk-cccccccccccccccccccc3");
    }
}
