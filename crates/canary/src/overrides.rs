//! Who bypasses the buckets: the allow-list, the deny-list and the rules,
//! read and replaced as a whole while the rollout runs.

use std::collections::{HashMap, HashSet};

use crate::error::CanaryError;
use crate::rollout::{Rollout, Rule, Target};

/// A rollout's overrides: subjects always sent to a candidate, subjects
/// always kept on the baseline, and rules on what is known about a request.
/// The deny-list beats the allow-list, which beats the rules (see
/// [`Rollout::assign`]).
///
/// ```
/// use canary::{Overrides, Rollout, Share};
/// # fn main() -> Result<(), canary::CanaryError> {
/// let mut r = Rollout::builder("gpt-4.1")
///     .candidate("claude-sonnet-4.5", Share::percent(0)?)
///     .build()?;
/// let mut o = r.overrides();
/// o.allow.push(("qa-user-1".into(), "claude-sonnet-4.5".into()));
/// r.set_overrides(o)?;
/// assert_eq!(&**r.model_for("qa-user-1")?, "claude-sonnet-4.5");
/// assert_eq!(&**r.model_for("anyone-else")?, "gpt-4.1");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// `(subject, candidate model)`: the subject always gets that candidate.
    pub allow: Vec<(String, String)>,
    /// Subjects always kept on the baseline.
    pub deny: Vec<String>,
    /// Rules, tried in order after both lists.
    pub rules: Vec<Rule>,
}

impl Rollout {
    /// The overrides in force, the lists sorted by subject.
    pub fn overrides(&self) -> Overrides {
        let mut allow: Vec<(String, String)> = self
            .allow
            .iter()
            .map(|(subject, &i)| {
                let model = self
                    .candidates
                    .get(usize::from(i))
                    .map(|c| c.model.to_string())
                    .unwrap_or_default();
                (subject.clone(), model)
            })
            .collect();
        allow.sort();
        let mut deny: Vec<String> = self.deny.iter().cloned().collect();
        deny.sort();
        Overrides {
            allow,
            deny,
            rules: self.rules.clone(),
        }
    }

    /// Replaces the overrides. Every model they name must be one of the
    /// rollout's candidates; otherwise nothing changes and the error names
    /// the model. Shares, phase and buckets are untouched.
    pub fn set_overrides(&mut self, overrides: Overrides) -> Result<(), CanaryError> {
        let mut allow = HashMap::with_capacity(overrides.allow.len());
        for (subject, model) in overrides.allow {
            let i = self.index_of(&model)?;
            allow.insert(subject, u8::try_from(i).unwrap_or(u8::MAX));
        }
        for rule in &overrides.rules {
            if let Target::Candidate(model) = &rule.target {
                self.index_of(model)?;
            }
        }
        self.allow = allow;
        self.deny = overrides.deny.into_iter().collect::<HashSet<_>>();
        self.rules = overrides.rules;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attribute, Context, Matcher, Reason, Share};

    fn rollout() -> Rollout {
        Rollout::builder("base")
            .candidate("cand", Share::percent(50).unwrap())
            .salt("s")
            .deny("old-deny")
            .build()
            .unwrap()
    }

    #[test]
    fn replaced_overrides_decide_before_the_buckets() {
        let mut r = rollout();
        let rule = Rule {
            attribute: Attribute::KeyName,
            matcher: Matcher::Contains("test".into()),
            target: Target::Candidate("cand".into()),
        };
        let o = Overrides {
            allow: vec![("qa".into(), "cand".into())],
            deny: vec!["vip".into()],
            rules: vec![rule],
        };
        r.set_overrides(o.clone()).unwrap();
        assert_eq!(r.overrides(), o);
        assert_eq!(
            r.assign(&Context::new("qa")).unwrap().reason,
            Reason::Allowed
        );
        assert_eq!(
            r.assign(&Context::new("vip")).unwrap().reason,
            Reason::Denied
        );
        let ctx = Context::new("someone").key_name("a-test-key");
        assert_eq!(r.assign(&ctx).unwrap().reason, Reason::Rule(0));
        // The old deny-list is gone: that subject goes by its bucket again.
        let old = r.assign(&Context::new("old-deny")).unwrap().reason;
        assert!(matches!(old, Reason::Bucket(_)), "{old:?}");
    }

    #[test]
    fn an_unknown_model_changes_nothing() {
        let mut r = rollout();
        let before = r.overrides();
        let bad = Overrides {
            allow: vec![("qa".into(), "nope".into())],
            ..Overrides::default()
        };
        let err = r.set_overrides(bad).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
        assert_eq!(r.overrides(), before);
    }
}
