//! `[[canary]]`: gray releases of candidate models against a baseline.

use std::time::Duration;

use canary::{
    Attribute, Gates, Matcher, Overrides, Rollout, Rule, Schedule, Scheme, SeedBuckets, Share,
    Step, Target,
};
use gateway_client::Analysis;
use serde::Deserialize;

use super::ConfigError;

/// `[[canary]]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// The baseline model.
    pub model: String,
    /// The candidate model (or `candidates`, for several).
    pub candidate: Option<String>,
    /// Percent of users on `candidate` (0 to 100, decimals allowed). With
    /// a `schedule`, the rollout starts at its first step instead.
    pub percent: Option<f64>,
    /// Several candidates, each with its share.
    #[serde(default)]
    pub candidates: Vec<CandidateConfig>,
    /// Salt for the assignment. Default: the baseline's name.
    pub salt: Option<String>,
    /// How users map to buckets: `"salted"` (default), or `"seed-100"` /
    /// `"seed-1000"`, the seed scripts' unsalted md5 buckets.
    pub scheme: Option<SchemeConfig>,
    /// Subjects always sent to the (first) candidate.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Subjects always sent to the baseline (beats `allow` and rules).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Overrides on the request, checked in order after the lists.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
    /// A ramp for the (first) candidate.
    #[serde(default)]
    pub schedule: Vec<StepConfig>,
    /// How the candidate is judged.
    #[serde(default)]
    pub analysis: AnalysisConfig,
}

/// One of `candidates`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateConfig {
    /// The candidate model.
    pub model: String,
    /// Its percent of users.
    pub percent: f64,
}

/// `scheme`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum SchemeConfig {
    /// Salted md5 into 10 000 buckets.
    #[serde(rename = "salted")]
    Salted,
    /// The seed scripts' md5 modulo 100.
    #[serde(rename = "seed-100")]
    Seed100,
    /// The seed scripts' md5 modulo 1000.
    #[serde(rename = "seed-1000")]
    Seed1000,
}

/// One override: exactly one matcher, and where a match goes.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The subject is exactly this.
    pub subject_equals: Option<String>,
    /// The subject contains this.
    pub subject_contains: Option<String>,
    /// The subject starts with this.
    pub subject_starts_with: Option<String>,
    /// The client key's name is exactly this.
    pub key_name_equals: Option<String>,
    /// The client key's name contains this.
    pub key_name_contains: Option<String>,
    /// The client key's name starts with this.
    pub key_name_starts_with: Option<String>,
    /// The client key's team is exactly this.
    pub team_equals: Option<String>,
    /// The team contains this.
    pub team_contains: Option<String>,
    /// The team starts with this.
    pub team_starts_with: Option<String>,
    /// A request header (an `x-` header), matched by `equals`, `contains`
    /// or `starts_with`.
    pub header: Option<String>,
    /// With `header`: its value is exactly this.
    pub equals: Option<String>,
    /// With `header`: its value contains this.
    pub contains: Option<String>,
    /// With `header`: its value starts with this.
    pub starts_with: Option<String>,
    /// `"candidate"` (the first), `"baseline"`, or a candidate's model.
    pub arm: String,
}

/// One step of `schedule`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// The candidate's percent during the step.
    pub percent: f64,
    /// The least time at this step, in seconds (not for the last step).
    pub hold_secs: Option<u64>,
}

/// `analysis`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalysisConfig {
    /// Judge the candidate. Off: no automatic rollback, and a schedule
    /// ramps on its holds alone. Default on.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds between verdicts. Default 60.
    pub interval_secs: Option<u64>,
    /// Requests each arm needs before a verdict. Default 100.
    pub min_requests: Option<u64>,
    /// How far the candidate's error rate may pass the baseline's, as a
    /// fraction (0.01 is one percentage point). Default 0.01.
    pub max_error_rate_increase: Option<f64>,
    /// The candidate's p95 latency over the baseline's, at most. Default 1.2.
    pub max_p95_factor: Option<f64>,
    /// The candidate's cost per request over the baseline's, at most.
    /// Default: cost is not judged.
    pub max_cost_factor: Option<f64>,
}

fn yes() -> bool {
    true
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        AnalysisConfig {
            enabled: true,
            interval_secs: None,
            min_requests: None,
            max_error_rate_increase: None,
            max_p95_factor: None,
            max_cost_factor: None,
        }
    }
}

/// `value × scale`, rounded, for a value checked to lie in `range`.
fn scaled(
    field: String,
    value: f64,
    range: std::ops::RangeInclusive<f64>,
    scale: f64,
) -> Result<u64, ConfigError> {
    if !value.is_finite() || !range.contains(&value) {
        return Err(ConfigError::new(
            field,
            format!("must be between {} and {}", range.start(), range.end()),
        ));
    }
    // Checked finite and within a small range: the product fits.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok((value * scale).round() as u64)
}

fn share(field: String, percent: f64) -> Result<Share, ConfigError> {
    Share::from_fraction(percent / 100.0).map_err(|e| ConfigError::new(field, e.to_string()))
}

/// A rollout's overrides as the management API takes them: the same
/// fields as `[[canary]]` (`allow` subjects get the first candidate).
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesConfig {
    /// Subjects always sent to the first candidate.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Subjects always kept on the baseline.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Rules, tried in order after both lists.
    #[serde(default)]
    pub rules: Vec<RuleConfig>,
}

impl OverridesConfig {
    /// The overrides of a rollout whose candidates are `candidates`;
    /// `field` names where they came from in errors.
    pub fn build(&self, field: &str, candidates: &[String]) -> Result<Overrides, ConfigError> {
        let first = candidates.first().cloned().unwrap_or_default();
        let rules = self
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| r.build(&format!("{field}.rules[{i}]"), candidates))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Overrides {
            allow: self
                .allow
                .iter()
                .map(|s| (s.clone(), first.clone()))
                .collect(),
            deny: self.deny.clone(),
            rules,
        })
    }
}

impl AnalysisConfig {
    /// How the rollout is judged; `field` names where it came from in errors.
    pub fn build(&self, field: &str) -> Result<Analysis, ConfigError> {
        let d = Gates::default();
        let gates = Gates {
            min_requests: self.min_requests.unwrap_or(d.min_requests).max(1),
            max_error_rate_increase_bp: match self.max_error_rate_increase {
                Some(f) => scaled(
                    format!("{field}.max_error_rate_increase"),
                    f,
                    0.0..=1.0,
                    10_000.0,
                )?,
                None => d.max_error_rate_increase_bp,
            },
            max_p95_ratio_permille: match self.max_p95_factor {
                Some(f) => scaled(format!("{field}.max_p95_factor"), f, 1.0..=100.0, 1000.0)?,
                None => d.max_p95_ratio_permille,
            },
            max_cost_ratio_permille: match self.max_cost_factor {
                Some(f) => Some(scaled(
                    format!("{field}.max_cost_factor"),
                    f,
                    1.0..=100.0,
                    1000.0,
                )?),
                None => d.max_cost_ratio_permille,
            },
        };
        if self.interval_secs == Some(0) {
            return Err(ConfigError::new(
                format!("{field}.interval_secs"),
                "must be at least 1",
            ));
        }
        Ok(Analysis {
            enabled: self.enabled,
            interval: self.interval_secs.map(Duration::from_secs),
            gates: Some(gates),
        })
    }
}

impl RuleConfig {
    /// The matcher the rule names: exactly one.
    fn matcher(&self, field: &str) -> Result<(Attribute, Matcher), ConfigError> {
        let attribute_matchers = [
            (
                Attribute::Subject,
                &self.subject_equals,
                &self.subject_contains,
                &self.subject_starts_with,
            ),
            (
                Attribute::KeyName,
                &self.key_name_equals,
                &self.key_name_contains,
                &self.key_name_starts_with,
            ),
            (
                Attribute::Team,
                &self.team_equals,
                &self.team_contains,
                &self.team_starts_with,
            ),
        ];
        let mut found = Vec::new();
        for (attribute, equals, contains, starts) in attribute_matchers {
            found.extend(matchers(equals, contains, starts).map(|m| (attribute.clone(), m)));
        }
        let header_matchers: Vec<Matcher> =
            matchers(&self.equals, &self.contains, &self.starts_with).collect();
        match &self.header {
            Some(name) => found.extend(
                header_matchers
                    .into_iter()
                    .map(|m| (Attribute::Header(name.to_ascii_lowercase()), m)),
            ),
            None if !header_matchers.is_empty() => {
                return Err(ConfigError::new(
                    field,
                    "`equals`, `contains` and `starts_with` need a `header`",
                ));
            }
            None => {}
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            n => Err(ConfigError::new(
                field,
                format!(
                    "a rule needs exactly one matcher (such as `key_name_contains = \"test\"`, or `header` with `equals`), found {n}"
                ),
            )),
        }
    }

    fn build(&self, field: &str, candidates: &[String]) -> Result<Rule, ConfigError> {
        let (attribute, matcher) = self.matcher(field)?;
        let target = match self.arm.as_str() {
            "baseline" => Target::Baseline,
            "candidate" => Target::Candidate(candidates.first().cloned().unwrap_or_default()),
            model if candidates.iter().any(|c| c == model) => Target::Candidate(model.to_owned()),
            other => {
                return Err(ConfigError::new(
                    format!("{field}.arm"),
                    format!("{other:?} is not \"candidate\", \"baseline\" or a candidate's model"),
                ));
            }
        };
        Ok(Rule {
            attribute,
            matcher,
            target,
        })
    }
}

fn matchers<'a>(
    equals: &'a Option<String>,
    contains: &'a Option<String>,
    starts: &'a Option<String>,
) -> impl Iterator<Item = Matcher> + 'a {
    let equals = equals.clone().map(Matcher::Equals);
    let contains = contains.clone().map(Matcher::Contains);
    let starts = starts.clone().map(Matcher::StartsWith);
    equals.into_iter().chain(contains).chain(starts)
}

impl CanaryConfig {
    /// The candidates with their shares, from `candidate` and `percent` or
    /// from `candidates`.
    fn candidates(&self, field: &str) -> Result<Vec<(String, Share)>, ConfigError> {
        let first_step = self.schedule.first().map(|s| s.percent);
        match (&self.candidate, self.candidates.is_empty()) {
            (Some(model), true) => {
                let percent = match (self.percent, first_step) {
                    (Some(p), Some(s)) if (p - s).abs() > f64::EPSILON => {
                        return Err(ConfigError::new(
                            format!("{field}.percent"),
                            format!(
                                "the schedule starts at {s}%; leave `percent` out or make it {s}"
                            ),
                        ));
                    }
                    (Some(p), _) => p,
                    (None, Some(s)) => s,
                    (None, None) => {
                        return Err(ConfigError::new(
                            format!("{field}.percent"),
                            "needed with `candidate` (or give a `schedule`)",
                        ));
                    }
                };
                Ok(vec![(
                    model.clone(),
                    share(format!("{field}.percent"), percent)?,
                )])
            }
            (None, false) => self
                .candidates
                .iter()
                .enumerate()
                .map(|(i, c)| {
                    let share = share(format!("{field}.candidates[{i}].percent"), c.percent)?;
                    Ok((c.model.clone(), share))
                })
                .collect(),
            (Some(_), false) => Err(ConfigError::new(
                field,
                "give `candidate` or `candidates`, not both",
            )),
            (None, true) => Err(ConfigError::new(
                format!("{field}.candidate"),
                "a rollout needs a `candidate` (or `candidates`)",
            )),
        }
    }

    fn schedule(&self, field: &str) -> Result<Option<Schedule>, ConfigError> {
        if self.schedule.is_empty() {
            return Ok(None);
        }
        let last = self.schedule.len() - 1;
        let mut steps = Vec::new();
        for (i, s) in self.schedule.iter().enumerate() {
            let here = format!("{field}.schedule[{i}]");
            let hold = match s.hold_secs {
                Some(h) => Duration::from_secs(h),
                None if i == last => Duration::ZERO,
                None => {
                    return Err(ConfigError::new(
                        format!("{here}.hold_secs"),
                        "every step but the last needs a hold",
                    ));
                }
            };
            steps.push(Step {
                share: share(format!("{here}.percent"), s.percent)?,
                hold,
            });
        }
        let schedule = Schedule { steps };
        schedule
            .validate()
            .map_err(|e| ConfigError::new(format!("{field}.schedule"), e.to_string()))?;
        Ok(Some(schedule))
    }

    /// The models this rollout serves besides the baseline.
    pub fn candidate_models(&self) -> Vec<String> {
        self.candidate
            .iter()
            .cloned()
            .chain(self.candidates.iter().map(|c| c.model.clone()))
            .collect()
    }

    /// The rollout and how it is judged; `field` is where it is in the file
    /// (`canary[0]`).
    pub(super) fn build(&self, field: &str) -> Result<(Rollout, Analysis), ConfigError> {
        let candidates = self.candidates(field)?;
        let models: Vec<String> = candidates.iter().map(|(m, _)| m.clone()).collect();
        let scheme = match self.scheme {
            None | Some(SchemeConfig::Salted) => Scheme::Salted,
            Some(SchemeConfig::Seed100) => Scheme::Seed(SeedBuckets::Hundred),
            Some(SchemeConfig::Seed1000) => Scheme::Seed(SeedBuckets::Thousand),
        };
        let analysis = self.analysis.build(&format!("{field}.analysis"))?;
        let mut builder = Rollout::builder(self.model.clone())
            .salt(self.salt.clone().unwrap_or_else(|| self.model.clone()))
            .scheme(scheme)
            .promote_on_verdicts(analysis.enabled);
        for (model, share) in candidates {
            builder = builder.candidate(model, share);
        }
        if let Some(first) = models.first() {
            for subject in &self.allow {
                builder = builder.allow(subject.clone(), first.clone());
            }
        }
        for subject in &self.deny {
            builder = builder.deny(subject.clone());
        }
        for (i, r) in self.rules.iter().enumerate() {
            builder = builder.rule(r.build(&format!("{field}.rules[{i}]"), &models)?);
        }
        if let Some(schedule) = self.schedule(field)? {
            builder = builder.schedule(schedule);
        }
        let rollout = builder
            .build()
            .map_err(|e| ConfigError::new(field, e.to_string()))?;
        Ok((rollout, analysis))
    }
}
