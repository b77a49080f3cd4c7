//! Reading the two things classification needs out of an answer's JSON,
//! `usage` and `error`, without building the rest of it.
//!
//! Both probes accept any JSON (a body that is JSON of another shape is
//! still JSON) and skip what they do not need with `IgnoredAny`, which
//! validates it without allocating. A repeated key keeps its last value, as
//! a parse into a map does.

use std::fmt;

use keypool_core::Usage;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// The top-level `usage` and `error` of a body.
#[derive(Default)]
pub(crate) struct Probe {
    pub(crate) usage: Option<UsageProbe>,
    pub(crate) error: Option<serde_json::Value>,
}

/// The token counts of a `usage` object, in OpenAI's shape
/// (`prompt_tokens`, `completion_tokens`, `prompt_tokens_details.cached_tokens`),
/// the Responses API's (`input_tokens`, `input_tokens_details.cached_tokens`,
/// `output_tokens`) or Anthropic's (`input_tokens`, `output_tokens`,
/// `cache_read_input_tokens`).
/// A count that is not a non-negative integer is absent.
#[derive(Default)]
pub(crate) struct UsageProbe {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_details: Details,
    completion_details: Details,
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    /// The Responses API's `input_tokens_details`; its presence also says
    /// `input_tokens` counts the cached tokens.
    input_details: Option<Details>,
    output_details: Details,
}

impl UsageProbe {
    /// The usage: OpenAI's shape when `prompt_tokens` is there, else
    /// Anthropic's when `input_tokens` is, else none.
    pub(crate) fn usage(&self) -> Option<Usage> {
        if let Some(prompt) = self.prompt_tokens {
            let completion = self.completion_tokens.unwrap_or(0);
            return Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                cached_tokens: self.prompt_details.cached.unwrap_or(0),
                cache_write_tokens: 0,
                reasoning_tokens: self
                    .completion_details
                    .reasoning
                    .unwrap_or(0)
                    .min(completion),
            });
        }
        let input = self.input_tokens?;
        let output = self.output_tokens.unwrap_or(0);
        let reasoning = self.output_details.reasoning.unwrap_or(0).min(output);
        if let Some(details) = &self.input_details {
            // The Responses API: the input counts its cached part.
            return Some(Usage {
                prompt_tokens: input,
                completion_tokens: output,
                cached_tokens: details.cached.unwrap_or(0).min(input),
                cache_write_tokens: 0,
                reasoning_tokens: reasoning,
            });
        }
        // Anthropic: the input counts neither what was read from the cache
        // nor what was written to it.
        let read = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        Some(Usage {
            prompt_tokens: input.saturating_add(read).saturating_add(written),
            completion_tokens: output,
            cached_tokens: read,
            cache_write_tokens: written,
            reasoning_tokens: reasoning,
        })
    }
}

/// Implements the visitor methods of a probe that accepts any JSON value:
/// anything but an object reads as the probe's default.
macro_rules! any_json_is_default {
    ($t:ty) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<$t, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(<$t>::default())
        }
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok(<$t>::default())
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok(<$t>::default())
        }
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok(<$t>::default())
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok(<$t>::default())
        }
        fn visit_str<E>(self, _: &str) -> Result<$t, E> {
            Ok(<$t>::default())
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok(<$t>::default())
        }
    };
}

/// Which of its names a key is, if any: compared where it lies, so no
/// string is allocated for it.
struct Key<const N: usize>([&'static str; N]);

impl<'de, const N: usize> serde::de::DeserializeSeed<'de> for Key<N> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        struct KeyVisitor<const N: usize>([&'static str; N]);
        impl<const N: usize> Visitor<'_> for KeyVisitor<N> {
            type Value = Option<usize>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<Option<usize>, E> {
                Ok(self.0.iter().position(|n| *n == key))
            }
        }
        d.deserialize_identifier(KeyVisitor(self.0))
    }
}

/// A token count: a non-negative integer, or absent (whatever else is there).
struct Count(Option<u64>);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = Count;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_u64<E>(self, n: u64) -> Result<Count, E> {
                Ok(Count(Some(n)))
            }
            fn visit_i64<E>(self, n: i64) -> Result<Count, E> {
                Ok(Count(u64::try_from(n).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_unit<E>(self) -> Result<Count, E> {
                Ok(Count(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Count, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Count, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Count(None))
            }
        }
        d.deserialize_any(CountVisitor)
    }
}

/// A `*_tokens_details` object: its `cached_tokens` and `reasoning_tokens`.
#[derive(Clone, Copy, Default)]
struct Details {
    cached: Option<u64>,
    reasoning: Option<u64>,
}

impl<'de> Deserialize<'de> for Details {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct DetailsVisitor;
        impl<'de> Visitor<'de> for DetailsVisitor {
            type Value = Details;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Details, A::Error> {
                let mut d = Details::default();
                while let Some(k) = map.next_key_seed(Key(["cached_tokens", "reasoning_tokens"]))? {
                    match k {
                        Some(0) => d.cached = map.next_value::<Count>()?.0,
                        Some(_) => d.reasoning = map.next_value::<Count>()?.0,
                        None => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(d)
            }
            any_json_is_default!(Details);
        }
        d.deserialize_any(DetailsVisitor)
    }
}

impl<'de> Deserialize<'de> for UsageProbe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        const NAMES: [&str; 10] = [
            "prompt_tokens",
            "completion_tokens",
            "prompt_tokens_details",
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "input_tokens_details",
            "completion_tokens_details",
            "output_tokens_details",
            "cache_creation_input_tokens",
        ];
        struct UsageVisitor;
        impl<'de> Visitor<'de> for UsageVisitor {
            type Value = UsageProbe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UsageProbe, A::Error> {
                let mut u = UsageProbe::default();
                while let Some(k) = map.next_key_seed(Key(NAMES))? {
                    match k {
                        Some(0) => u.prompt_tokens = map.next_value::<Count>()?.0,
                        Some(1) => u.completion_tokens = map.next_value::<Count>()?.0,
                        Some(2) => u.prompt_details = map.next_value()?,
                        Some(3) => u.input_tokens = map.next_value::<Count>()?.0,
                        Some(4) => u.output_tokens = map.next_value::<Count>()?.0,
                        Some(5) => u.cache_read_input_tokens = map.next_value::<Count>()?.0,
                        Some(6) => u.input_details = Some(map.next_value()?),
                        Some(7) => u.completion_details = map.next_value()?,
                        Some(8) => u.output_details = map.next_value()?,
                        Some(9) => u.cache_creation_input_tokens = map.next_value::<Count>()?.0,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(u)
            }
            any_json_is_default!(UsageProbe);
        }
        d.deserialize_any(UsageVisitor)
    }
}

impl<'de> Deserialize<'de> for Probe {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ProbeVisitor;
        impl<'de> Visitor<'de> for ProbeVisitor {
            type Value = Probe;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Probe, A::Error> {
                let mut probe = Probe::default();
                while let Some(k) = map.next_key_seed(Key(["usage", "error"]))? {
                    match k {
                        Some(0) => probe.usage = Some(map.next_value()?),
                        Some(1) => probe.error = Some(map.next_value()?),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(probe)
            }
            any_json_is_default!(Probe);
        }
        d.deserialize_any(ProbeVisitor)
    }
}
