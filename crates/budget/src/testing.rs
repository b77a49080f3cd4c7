//! Prices for tests whose figures are worked out by hand.

use crate::money::Money;
use crate::price::{ModelPrice, PriceTable};

/// One blended price a model, for input, output and cached input alike
/// (gpt-4.1 at $8 a million tokens, claude-sonnet-4.5 at $15, gemini-2.5-flash
/// at $2.50, deepseek-v3.2 at $0.42, gpt-4o-mini at $0.15), with the
/// defaults' context windows and output caps: what the workspace's tests
/// use where a test is about budget mechanics rather than list prices,
/// so that every cost in them is a token count times one rate.
/// [`PriceTable::defaults`] holds list prices, per direction.
pub fn blended_prices() -> PriceTable {
    let mut t = PriceTable::new();
    for (model, per_mtok, window, max_output) in [
        ("gpt-4.1", 8_000_000, 1_047_576, 32_768),
        ("claude-sonnet-4.5", 15_000_000, 200_000, 64_000),
        ("gemini-2.5-flash", 2_500_000, 1_048_576, 65_536),
        ("deepseek-v3.2", 420_000, 128_000, 8_192),
        ("gpt-4o-mini", 150_000, 128_000, 16_384),
    ] {
        let price = ModelPrice::blended(Money::from_micros(per_mtok), Some(window));
        t.set(model, price.with_max_output(max_output));
    }
    t.alias("deepseek-chat", "deepseek-v3.2");
    t
}
