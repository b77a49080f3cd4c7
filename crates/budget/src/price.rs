//! Prices per model, aliases, and the policy for models without a price.

use std::collections::HashMap;

use crate::error::BudgetError;
use crate::money::Money;
#[cfg(feature = "litellm")]
use crate::money::parse_scaled;

/// Token counts of one request, as the upstream reports them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Tokens {
    /// Input tokens, cached ones included.
    pub prompt: u64,
    /// Output tokens.
    pub completion: u64,
    /// Of the input tokens, those served from the upstream's cache.
    pub cached: u64,
    /// Of the input tokens, those the upstream wrote to its cache.
    pub cache_write: u64,
}

impl Tokens {
    /// Prompt and completion tokens, none cached.
    pub const fn new(prompt: u64, completion: u64) -> Self {
        Tokens {
            prompt,
            completion,
            cached: 0,
            cache_write: 0,
        }
    }
}

/// A model's prices in micro-dollars per million tokens, and its context window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ModelPrice {
    /// Per million input tokens.
    pub input_per_mtok: Money,
    /// Per million output tokens.
    pub output_per_mtok: Money,
    /// Per million cached input tokens.
    pub cached_input_per_mtok: Money,
    /// Per million input tokens written to the provider's cache (Anthropic
    /// charges more for them than for plain input).
    pub cache_write_per_mtok: Money,
    /// The context window in tokens, if known.
    pub context_window: Option<u64>,
    /// The most output tokens one answer may have, if known; see
    /// [`max_output`](Self::max_output).
    pub max_output_tokens: Option<u64>,
}

/// The output tokens assumed for a model whose price does not say
/// ([`ModelPrice::max_output_tokens`]): the most that current chat models
/// commonly allow in one answer.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 32_768;

impl ModelPrice {
    /// One blended price for input, output and cached input alike.
    pub const fn blended(per_mtok: Money, context_window: Option<u64>) -> Self {
        ModelPrice {
            input_per_mtok: per_mtok,
            output_per_mtok: per_mtok,
            cached_input_per_mtok: per_mtok,
            cache_write_per_mtok: per_mtok,
            context_window,
            max_output_tokens: None,
        }
    }

    /// This price with `tokens` as the most output tokens of one answer.
    #[must_use]
    pub const fn with_max_output(mut self, tokens: u64) -> Self {
        self.max_output_tokens = Some(tokens);
        self
    }

    /// The most output tokens one answer may have: the model's own figure,
    /// else [`DEFAULT_MAX_OUTPUT_TOKENS`]. What a request without an output
    /// cap reserves, so that a reservation is an upper bound.
    pub fn max_output(&self) -> u64 {
        self.max_output_tokens.unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS)
    }

    /// The cost of `tokens`, rounded up to the micro-dollar (never under-charged):
    /// cached input at the cached rate, input written to the cache at the
    /// cache-write rate, the rest of the input at the input rate.
    pub fn cost(&self, tokens: Tokens) -> Money {
        let cached = tokens.cached.min(tokens.prompt);
        let written = tokens.cache_write.min(tokens.prompt - cached);
        let fresh = tokens.prompt - cached - written;
        let pico = u128::from(fresh) * u128::from(self.input_per_mtok.micros())
            + u128::from(cached) * u128::from(self.cached_input_per_mtok.micros())
            + u128::from(written) * u128::from(self.cache_write_per_mtok.micros())
            + u128::from(tokens.completion) * u128::from(self.output_per_mtok.micros());
        Money::from_micros(u64::try_from(pico.div_ceil(1_000_000)).unwrap_or(u64::MAX))
    }

    /// What `cached` input tokens served from the upstream's cache saved
    /// against the full input rate, rounded down to the micro-dollar (a
    /// saving is never overstated).
    pub fn cache_saving(&self, cached: u64) -> Money {
        let rate = self
            .input_per_mtok
            .micros()
            .saturating_sub(self.cached_input_per_mtok.micros());
        let pico = u128::from(cached) * u128::from(rate);
        Money::from_micros(u64::try_from(pico / 1_000_000).unwrap_or(u64::MAX))
    }

    /// Input plus output price: how "expensive" a model is, for degradation.
    pub(crate) fn weight(&self) -> u64 {
        self.input_per_mtok
            .micros()
            .saturating_add(self.output_per_mtok.micros())
    }
}

/// What to do with a model that has no price.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "policy", rename_all = "snake_case"))]
pub enum UnknownModel {
    /// Refuse the request with [`BudgetError::UnknownModel`].
    #[default]
    Reject,
    /// Charge this price (and emit [`Event::UnknownModelCharged`](crate::Event::UnknownModelCharged) once per model).
    Charge(ModelPrice),
}

/// Prices by canonical model name, aliases, and the unknown-model policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceTable {
    models: HashMap<String, ModelPrice>,
    aliases: HashMap<String, String>,
    unknown: UnknownModel,
}

/// A model name resolved against a [`PriceTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resolved<'t> {
    /// The canonical name (aliases resolved); the name asked for if unknown.
    pub model: &'t str,
    /// Its price.
    pub price: ModelPrice,
    /// Whether the unknown-model default price was used.
    pub defaulted: bool,
}

impl PriceTable {
    /// An empty table that rejects every model.
    pub fn new() -> Self {
        PriceTable::default()
    }

    /// The built-in defaults: the models the seed documents name, at their
    /// list prices per million tokens for input, cached input and output
    /// (November 2026). **Defaults to override** with your providers' own
    /// prices (from TOML or the `LiteLLM` list): a relay's differ.
    ///
    /// | model | input | cached input | output | context window |
    /// |---|---|---|---|---|
    /// | gpt-4.1 | 2.00 | 0.50 | 8.00 | 1 047 576 |
    /// | claude-sonnet-4.5 | 3.00 | 0.30 (cache writes 3.75) | 15.00 | 200 000 |
    /// | gemini-2.5-flash | 0.30 | 0.075 | 2.50 | 1 048 576 |
    /// | deepseek-v3.2 (alias deepseek-chat) | 0.28 | 0.028 | 0.42 | 128 000 |
    /// | gpt-4o-mini | 0.15 | 0.075 | 0.60 | 128 000 |
    pub fn defaults() -> Self {
        let mut t = PriceTable::new();
        // Micro-dollars per million tokens: input, cached input, output.
        for (model, input, cached, output, window, max_output) in [
            ("gpt-4.1", 2_000_000, 500_000, 8_000_000, 1_047_576, 32_768),
            (
                "claude-sonnet-4.5",
                3_000_000,
                300_000,
                15_000_000,
                200_000,
                64_000,
            ),
            (
                "gemini-2.5-flash",
                300_000,
                75_000,
                2_500_000,
                1_048_576,
                65_536,
            ),
            ("deepseek-v3.2", 280_000, 28_000, 420_000, 128_000, 8_192),
            ("gpt-4o-mini", 150_000, 75_000, 600_000, 128_000, 16_384),
        ] {
            // Anthropic charges a quarter more for input it writes to its
            // cache; the others, the input rate.
            let write = if model.starts_with("claude") {
                input / 4 * 5
            } else {
                input
            };
            let price = ModelPrice {
                input_per_mtok: Money::from_micros(input),
                output_per_mtok: Money::from_micros(output),
                cached_input_per_mtok: Money::from_micros(cached),
                cache_write_per_mtok: Money::from_micros(write),
                context_window: Some(window),
                max_output_tokens: Some(max_output),
            };
            t.set(model, price);
        }
        t.alias("deepseek-chat", "deepseek-v3.2");
        t
    }

    /// Sets a model's price (replacing any).
    pub fn set(&mut self, model: impl Into<String>, price: ModelPrice) {
        let model = model.into();
        self.aliases.remove(&model);
        self.models.insert(model, price);
    }

    /// Makes `alias` mean `model`.
    pub fn alias(&mut self, alias: impl Into<String>, model: impl Into<String>) {
        self.aliases.insert(alias.into(), model.into());
    }

    /// Sets the unknown-model policy.
    pub fn on_unknown(&mut self, policy: UnknownModel) {
        self.unknown = policy;
    }

    /// The unknown-model policy.
    pub fn unknown_policy(&self) -> UnknownModel {
        self.unknown
    }

    /// Every priced model, canonical names only.
    pub fn models(&self) -> impl Iterator<Item = (&str, &ModelPrice)> {
        self.models.iter().map(|(m, p)| (m.as_str(), p))
    }

    /// Adds every model and alias of `other`, replacing entries of the same name.
    pub fn merge(&mut self, other: PriceTable) {
        for (m, p) in other.models {
            self.set(m, p);
        }
        self.aliases.extend(other.aliases);
        if other.unknown != UnknownModel::Reject {
            self.unknown = other.unknown;
        }
    }

    /// Resolves aliases and finds the price, or applies the unknown-model policy.
    pub fn resolve<'t>(&'t self, model: &'t str) -> Result<Resolved<'t>, BudgetError> {
        let canonical = self.aliases.get(model).map_or(model, String::as_str);
        if let Some((name, price)) = self.models.get_key_value(canonical) {
            return Ok(Resolved {
                model: name,
                price: *price,
                defaulted: false,
            });
        }
        match self.unknown {
            UnknownModel::Charge(price) => Ok(Resolved {
                model: canonical,
                price,
                defaulted: true,
            }),
            UnknownModel::Reject => Err(BudgetError::UnknownModel {
                model: model.to_owned(),
            }),
        }
    }

    /// Reads a price table from TOML:
    ///
    /// ```toml
    /// [models."gpt-4.1"]
    /// input_per_mtok = "2.00"        # dollars per million tokens: a string or a number
    /// output_per_mtok = 8.00
    /// cached_input_per_mtok = "0.50" # defaults to the input price
    /// cache_write_per_mtok = "2.00"  # defaults to the input price
    /// context_window = 1047576
    /// max_output_tokens = 32768     # what a request without a cap reserves
    /// aliases = ["gpt-4.1-2025-04-14"]
    ///
    /// [unknown_model]
    /// policy = "charge"              # or "reject"
    /// per_mtok = "10.00"
    /// ```
    #[cfg(feature = "toml")]
    pub fn from_toml(text: &str) -> Result<Self, BudgetError> {
        use crate::money::Dollars;
        use serde::Deserialize;

        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            models: HashMap<String, Entry>,
            #[serde(default)]
            unknown_model: Option<Unknown>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Entry {
            input_per_mtok: Dollars,
            output_per_mtok: Dollars,
            cached_input_per_mtok: Option<Dollars>,
            cache_write_per_mtok: Option<Dollars>,
            context_window: Option<u64>,
            max_output_tokens: Option<u64>,
            #[serde(default)]
            aliases: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Unknown {
            policy: String,
            per_mtok: Option<Dollars>,
        }
        let file: File = toml::from_str(text).map_err(|e| BudgetError::Config(e.to_string()))?;
        let mut table = PriceTable::new();
        for (model, e) in file.models {
            let price = ModelPrice {
                input_per_mtok: e.input_per_mtok.0,
                output_per_mtok: e.output_per_mtok.0,
                cached_input_per_mtok: e.cached_input_per_mtok.unwrap_or(e.input_per_mtok).0,
                cache_write_per_mtok: e.cache_write_per_mtok.unwrap_or(e.input_per_mtok).0,
                context_window: e.context_window,
                max_output_tokens: e.max_output_tokens,
            };
            for alias in e.aliases {
                table.alias(alias, model.clone());
            }
            table.set(model, price);
        }
        if let Some(u) = file.unknown_model {
            table.unknown = match (u.policy.as_str(), u.per_mtok) {
                ("reject", _) => UnknownModel::Reject,
                ("charge", Some(a)) => UnknownModel::Charge(ModelPrice::blended(a.0, None)),
                ("charge", None) => {
                    return Err(BudgetError::Config(
                        "unknown_model: policy \"charge\" needs per_mtok".into(),
                    ));
                }
                (other, _) => {
                    return Err(BudgetError::Config(format!(
                        "unknown_model.policy: {other:?} is not \"reject\" or \"charge\""
                    )));
                }
            };
        }
        Ok(table)
    }

    /// Reads `LiteLLM`'s `model_prices_and_context_window.json` format: an object
    /// of models with `input_cost_per_token`, `output_cost_per_token`,
    /// `cache_read_input_token_cost` (dollars per token), `max_input_tokens`
    /// and `max_output_tokens`.
    /// Entries without both costs (images, audio) and the file's
    /// `sample_spec` documentation entry are skipped. Per-token costs are read exactly from their decimal form and
    /// kept as micro-dollars per million tokens.
    #[cfg(feature = "litellm")]
    pub fn from_litellm_json(text: &str) -> Result<Self, BudgetError> {
        let value: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| BudgetError::Config(format!("litellm json: {e}")))?;
        let Some(models) = value.as_object() else {
            return Err(BudgetError::Config(
                "litellm json: expected an object of models".into(),
            ));
        };
        let per_mtok = |v: Option<&serde_json::Value>| -> Option<Money> {
            let v = v?;
            let text = match v {
                serde_json::Value::Number(n) => n.to_string(),
                serde_json::Value::String(s) => s.clone(),
                _ => return None,
            };
            // $/token × 10^12 = micro-dollars per million tokens.
            parse_scaled(&text, 12).map(Money::from_micros)
        };
        let mut table = PriceTable::new();
        for (model, entry) in models.iter().filter(|(m, _)| *m != "sample_spec") {
            let (Some(input), Some(output)) = (
                per_mtok(entry.get("input_cost_per_token")),
                per_mtok(entry.get("output_cost_per_token")),
            ) else {
                continue;
            };
            let cached = per_mtok(entry.get("cache_read_input_token_cost")).unwrap_or(input);
            let write = per_mtok(entry.get("cache_creation_input_token_cost")).unwrap_or(input);
            let field = |f: &str| entry.get(f).and_then(serde_json::Value::as_u64);
            let window = field("max_input_tokens");
            table.set(
                model.clone(),
                ModelPrice {
                    input_per_mtok: input,
                    output_per_mtok: output,
                    cached_input_per_mtok: cached,
                    cache_write_per_mtok: write,
                    context_window: window,
                    max_output_tokens: field("max_output_tokens"),
                },
            );
        }
        Ok(table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_round_up_to_the_micro_dollar() {
        let p = ModelPrice::blended(Money::from_micros(420_000), None); // $0.42 / 1M
        assert_eq!(p.cost(Tokens::new(100, 0)), Money::from_micros(42));
        assert_eq!(
            p.cost(Tokens::new(1, 0)),
            Money::from_micros(1),
            "0.42 µ$ rounds up"
        );
        assert_eq!(p.cost(Tokens::new(0, 0)), Money::ZERO);
        let split = ModelPrice {
            input_per_mtok: Money::from_dollars(2),
            output_per_mtok: Money::from_dollars(8),
            cached_input_per_mtok: Money::from_cents(50),
            cache_write_per_mtok: Money::from_cents(250),
            context_window: None,
            max_output_tokens: None,
        };
        // 1000 input of which 400 cached, 500 output: 600×2 + 400×0.5 + 500×8 = 5400 µ$.
        let mut t = Tokens {
            prompt: 1000,
            completion: 500,
            cached: 400,
            cache_write: 0,
        };
        assert_eq!(split.cost(t), Money::from_micros(5_400));
        // 100 of the others written to the cache: 500×2 + 100×2.5 + 400×0.5 + 500×8.
        t.cache_write = 100;
        assert_eq!(split.cost(t), Money::from_micros(5_450));
        // More written than there is input left is bounded by it.
        t.cache_write = 5_000;
        assert_eq!(split.cost(t), Money::from_micros(600 * 5 / 2 + 200 + 4_000));
    }

    #[test]
    fn a_cache_saves_the_difference_between_the_rates_rounded_down() {
        let split = ModelPrice {
            input_per_mtok: Money::from_cents(15),
            output_per_mtok: Money::from_cents(60),
            cached_input_per_mtok: Money::from_micros(75_000),
            cache_write_per_mtok: Money::from_cents(15),
            context_window: None,
            max_output_tokens: None,
        };
        // 1M cached tokens: $0.15 at the input rate, $0.075 at the cached one.
        assert_eq!(split.cache_saving(1_000_000), Money::from_micros(75_000));
        let full = split.cost(Tokens::new(10_000, 0));
        let cached = split.cost(Tokens {
            prompt: 10_000,
            completion: 0,
            cached: 10_000,
            cache_write: 0,
        });
        assert_eq!(split.cache_saving(10_000), full.saturating_sub(cached));
        assert_eq!(split.cache_saving(13), Money::ZERO, "0.975 µ$ rounds down");
        let flat = ModelPrice::blended(Money::from_micros(420_000), None);
        assert_eq!(flat.cache_saving(1_000_000), Money::ZERO, "no cached rate");
    }

    #[test]
    fn defaults_and_aliases() {
        let t = PriceTable::defaults();
        let r = t.resolve("deepseek-chat").unwrap();
        assert_eq!(
            (r.model, r.price.input_per_mtok, r.defaulted),
            ("deepseek-v3.2", Money::from_micros(280_000), false)
        );
        // A cached input token of gpt-4.1 costs a quarter of a fresh one.
        let gpt = t.resolve("gpt-4.1").unwrap().price;
        assert_eq!(gpt.cached_input_per_mtok, Money::from_cents(50));
        let turn = Tokens {
            prompt: 100_000,
            completion: 1_000,
            cached: 90_000,
            cache_write: 0,
        };
        // 10 000 × $2 + 90 000 × $0.50 + 1 000 × $8, a million each.
        assert_eq!(gpt.cost(turn), Money::from_micros(20_000 + 45_000 + 8_000));
        assert_eq!(
            t.resolve("gpt-4.1").unwrap().price.output_per_mtok,
            Money::from_dollars(8)
        );
        assert_eq!(
            t.resolve("claude-sonnet-4.5").unwrap().price.context_window,
            Some(200_000)
        );
        assert_eq!(t.resolve("gpt-4o-mini").unwrap().price.max_output(), 16_384);
        let unknown = ModelPrice::blended(Money::from_dollars(1), None);
        assert_eq!(unknown.max_output(), DEFAULT_MAX_OUTPUT_TOKENS);
        assert_eq!(
            t.resolve("mystery").unwrap_err().to_string(),
            "model \"mystery\" has no price; add it to the price table or set a default price"
        );
        let mut charge = t.clone();
        charge.on_unknown(UnknownModel::Charge(ModelPrice::blended(
            Money::from_dollars(10),
            None,
        )));
        let r = charge.resolve("mystery").unwrap();
        assert!(r.defaulted);
        assert_eq!(r.model, "mystery");
    }
}
