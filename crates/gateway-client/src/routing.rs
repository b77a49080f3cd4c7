//! Model routing: which providers serve a model, by which name, and which
//! models to try when none of its keys can serve.

use std::collections::{BTreeMap, BTreeSet};

/// What a provider serves: a list of models (absent: any model), and
/// aliases from the names clients use to the names the upstream knows.
///
/// ```
/// use gateway_client::Catalog;
///
/// let relay = Catalog::only(["gpt-4.1", "deepseek-chat"]).alias("deepseek-v3.2", "deepseek-chat");
/// assert!(relay.serves("deepseek-v3.2"));
/// assert_eq!(relay.upstream_name("deepseek-v3.2"), "deepseek-chat");
/// assert!(!relay.serves("claude-sonnet-4.5"));
/// assert!(Catalog::any().serves("claude-sonnet-4.5"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Catalog {
    models: Option<BTreeSet<String>>,
    aliases: BTreeMap<String, String>,
}

impl Catalog {
    /// A provider that serves whatever it is asked for.
    pub fn any() -> Self {
        Catalog::default()
    }

    /// A provider that serves only `models` (and the aliases added).
    pub fn only<S: Into<String>>(models: impl IntoIterator<Item = S>) -> Self {
        Catalog {
            models: Some(models.into_iter().map(Into::into).collect()),
            aliases: BTreeMap::new(),
        }
    }

    /// Clients' `name` reaches this provider as `upstream`.
    #[must_use]
    pub fn alias(mut self, name: impl Into<String>, upstream: impl Into<String>) -> Self {
        self.aliases.insert(name.into(), upstream.into());
        self
    }

    /// Whether a request for `model` may go to this provider.
    pub fn serves(&self, model: &str) -> bool {
        self.aliases.contains_key(model) || self.models.as_ref().is_none_or(|m| m.contains(model))
    }

    /// The name the upstream knows `model` by.
    pub fn upstream_name<'a>(&'a self, model: &'a str) -> &'a str {
        self.aliases.get(model).map_or(model, String::as_str)
    }

    /// The models listed, aliases included; `None` for a provider that
    /// serves any model.
    pub fn listed(&self) -> Option<Vec<&str>> {
        let models = self.models.as_ref()?;
        let mut all: Vec<&str> = models
            .iter()
            .chain(self.aliases.keys())
            .map(String::as_str)
            .collect();
        all.sort_unstable();
        all.dedup();
        Some(all)
    }

    /// The aliases, client's name first.
    pub fn aliases(&self) -> impl Iterator<Item = (&str, &str)> {
        self.aliases.iter().map(|(a, b)| (a.as_str(), b.as_str()))
    }
}

/// Per model, the models to try in turn when none of its keys can serve
/// (`[routing] fallbacks`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fallbacks {
    chains: BTreeMap<String, Vec<String>>,
}

impl Fallbacks {
    /// No fallbacks.
    pub fn none() -> Self {
        Fallbacks::default()
    }

    /// When `model` cannot be served, `then` in turn.
    #[must_use]
    pub fn with<S: Into<String>>(
        mut self,
        model: impl Into<String>,
        then: impl IntoIterator<Item = S>,
    ) -> Self {
        self.chains
            .insert(model.into(), then.into_iter().map(Into::into).collect());
        self
    }

    /// `model`, then its fallbacks, each once.
    pub fn chain<'a>(&'a self, model: &'a str) -> Vec<&'a str> {
        let mut chain = vec![model];
        for next in self.chains.get(model).into_iter().flatten() {
            if !chain.contains(&next.as_str()) {
                chain.push(next);
            }
        }
        chain
    }

    /// Every model named as a fallback.
    pub fn targets(&self) -> impl Iterator<Item = &str> {
        self.chains.values().flatten().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_each_model_once_in_order() {
        let f = Fallbacks::none().with("a", ["b", "a", "c", "b"]);
        assert_eq!(f.chain("a"), ["a", "b", "c"]);
        assert_eq!(f.chain("z"), ["z"]);
    }

    #[test]
    fn an_alias_is_served_even_when_not_listed() {
        let c = Catalog::only(["m"]).alias("n", "m");
        assert!(c.serves("m") && c.serves("n") && !c.serves("o"));
        assert_eq!(c.upstream_name("m"), "m");
        assert_eq!(c.listed(), Some(vec!["m", "n"]));
        assert_eq!(Catalog::any().alias("n", "m").listed(), None);
    }
}
