//! Operators' error rules: how a relay's own ways of answering (an account
//! suspension in a 403 body, an overload as a 503) are read, before the
//! built-in classification.

use std::time::{Duration, SystemTime};

use crate::classify::{Answer, Class, Classification, classify};

/// What a rule makes of an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleAction {
    /// The key is disabled until an operator enables it.
    Disable,
    /// The key's quota is spent until the daily reset.
    Exhausted,
    /// The key rests this long.
    Cooldown(Duration),
    /// A server error: another key is tried, the breaker counts it.
    Retry,
    /// The caller's fault: handed back, no key penalised.
    ClientError,
}

/// Answers with `status` (and, when given, a body containing
/// `body_contains`) are read as `action`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ErrorRule {
    /// The HTTP status it matches.
    pub status: u16,
    /// Text the body must contain (compared as bytes, case-sensitively).
    pub body_contains: Option<String>,
    /// What a matching answer means.
    pub action: RuleAction,
}

impl ErrorRule {
    /// Whether `answer` matches.
    pub fn matches(&self, answer: &Answer) -> bool {
        answer.status == self.status
            && self.body_contains.as_deref().is_none_or(|text| {
                !text.is_empty()
                    && answer
                        .body
                        .windows(text.len())
                        .any(|w| w == text.as_bytes())
            })
    }
}

/// [`classify`], except that the first of `rules` that matches decides the
/// class (rate limits, usage and the upstream's error are still read).
pub fn classify_with(
    answer: &Answer,
    rules: &[ErrorRule],
    latency: Duration,
    now: SystemTime,
) -> Classification {
    let mut c = classify(answer, latency, now);
    let Some(rule) = rules.iter().find(|r| r.matches(answer)) else {
        return c;
    };
    let status = answer.status;
    c.class = match rule.action {
        RuleAction::Disable => Class::Forbidden,
        RuleAction::Exhausted => Class::QuotaExhausted,
        RuleAction::Cooldown(wait) => Class::RateLimited {
            retry_after: Some(wait),
        },
        RuleAction::Retry => Class::ServerError { status },
        RuleAction::ClientError => Class::ClientError { status },
    };
    if c.class != Class::Success {
        c.usage = None;
    }
    c.outcome = c.class.outcome(c.usage.unwrap_or_default(), latency);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Answer {
        Answer {
            status,
            headers: http::HeaderMap::new(),
            body: body.to_owned().into(),
        }
    }

    fn class(rules: &[ErrorRule], a: &Answer) -> Class {
        classify_with(a, rules, Duration::ZERO, SystemTime::UNIX_EPOCH).class
    }

    #[test]
    fn the_first_matching_rule_decides_and_others_classify_as_built_in() {
        let rules = [
            ErrorRule {
                status: 403,
                body_contains: Some("suspended".into()),
                action: RuleAction::Disable,
            },
            ErrorRule {
                status: 503,
                body_contains: None,
                action: RuleAction::Cooldown(Duration::from_secs(30)),
            },
            ErrorRule {
                status: 400,
                body_contains: Some("model_not_found".into()),
                action: RuleAction::ClientError,
            },
            ErrorRule {
                status: 200,
                body_contains: Some("\"error\"".into()),
                action: RuleAction::Retry,
            },
        ];
        let suspended = answer(403, r#"{"error":{"message":"account suspended"}}"#);
        assert_eq!(class(&rules, &suspended), Class::Forbidden);
        let overloaded = answer(503, "busy");
        assert_eq!(
            class(&rules, &overloaded),
            Class::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        let c = classify_with(&overloaded, &rules, Duration::ZERO, SystemTime::UNIX_EPOCH);
        assert_eq!(
            c.outcome,
            keypool_core::Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(30))
            }
        );
        let missing = answer(400, r#"{"error":{"code":"model_not_found"}}"#);
        assert_eq!(class(&rules, &missing), Class::ClientError { status: 400 });
        let in_disguise = answer(200, r#"{"error":"overloaded","usage":{"prompt_tokens":1}}"#);
        let c = classify_with(&in_disguise, &rules, Duration::ZERO, SystemTime::UNIX_EPOCH);
        assert_eq!(
            (c.class, c.usage),
            (Class::ServerError { status: 200 }, None)
        );
        // No rule matches: the built-in reading.
        let forbidden = answer(403, r#"{"error":{"message":"region"}}"#);
        assert_eq!(class(&rules, &forbidden), Class::Forbidden);
        assert_eq!(class(&rules, &answer(200, "{}")), Class::Success);
        assert_eq!(
            class(&[], &answer(503, "busy")),
            Class::ServerError { status: 503 }
        );
    }
}
