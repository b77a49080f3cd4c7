//! Money: integer micro-dollars, and exact decimal parsing.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign};

use crate::error::BudgetError;

/// An amount of US dollars in integer micro-dollars ($1 = 1 000 000).
///
/// Never floating point. Displays with the precision a person expects: at
/// least cents, and every significant micro-dollar (`$12.50`, `$0.000042`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Money(u64);

impl Money {
    /// Zero dollars.
    pub const ZERO: Money = Money(0);
    /// The largest amount.
    pub const MAX: Money = Money(u64::MAX);

    /// From micro-dollars.
    pub const fn from_micros(micros: u64) -> Self {
        Money(micros)
    }

    /// From whole dollars.
    pub const fn from_dollars(dollars: u64) -> Self {
        Money(dollars.saturating_mul(1_000_000))
    }

    /// From dollars and cents.
    pub const fn from_cents(cents: u64) -> Self {
        Money(cents.saturating_mul(10_000))
    }

    /// Micro-dollars.
    pub const fn micros(self) -> u64 {
        self.0
    }

    /// The amount in dollars with all six decimals and no sign, e.g.
    /// `0.000123`: exact, for headers and JSON numbers.
    pub fn decimal(self) -> String {
        format!("{}.{:06}", self.0 / 1_000_000, self.0 % 1_000_000)
    }

    /// Parses a dollar amount written in decimal (`"12.5"`, `"$0.000042"`,
    /// `"2e-6"`) exactly; digits past the micro-dollar are rounded half up.
    pub fn parse_dollars(s: &str) -> Result<Self, BudgetError> {
        let t = s.trim();
        let t = t.strip_prefix('$').unwrap_or(t);
        parse_scaled(t, 6)
            .map(Money)
            .ok_or_else(|| BudgetError::BadAmount {
                value: s.to_owned(),
            })
    }

    /// The sum, saturating at [`Money::MAX`].
    pub const fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    /// The difference, or zero.
    pub const fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// `self × num / den`, rounded down; `den` must not be zero.
    pub(crate) fn mul_div(self, num: u64, den: u64) -> Money {
        let v = u128::from(self.0) * u128::from(num) / u128::from(den.max(1));
        Money(u64::try_from(v).unwrap_or(u64::MAX))
    }
}

impl Add for Money {
    type Output = Money;
    fn add(self, rhs: Money) -> Money {
        self.saturating_add(rhs)
    }
}

impl AddAssign for Money {
    fn add_assign(&mut self, rhs: Money) {
        *self = self.saturating_add(rhs);
    }
}

impl Sum for Money {
    fn sum<I: Iterator<Item = Money>>(iter: I) -> Money {
        iter.fold(Money::ZERO, Add::add)
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (dollars, micros) = (self.0 / 1_000_000, self.0 % 1_000_000);
        let mut frac = format!("{micros:06}");
        while frac.len() > 2 && frac.ends_with('0') {
            frac.pop();
        }
        write!(f, "${dollars}.{frac}")
    }
}

/// An amount of dollars as a configuration file writes it, parsed exactly:
/// a string (`"12.50"`, `"$0.000042"`, `"2e-6"`) or a number, read through
/// its shortest decimal form (`0.05` is 50 000 micro-dollars, not the
/// float's binary neighbour). Negative amounts are refused.
///
/// ```
/// # #[cfg(feature = "toml")] {
/// #[derive(serde::Deserialize)]
/// struct Limit { daily_usd: budget::Dollars }
/// let l: Limit = toml::from_str("daily_usd = 0.05").unwrap();
/// assert_eq!(l.daily_usd.0, budget::Money::from_micros(50_000));
/// # }
/// ```
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Dollars(pub Money);

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for Dollars {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Dollars;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an amount of dollars, as a number or a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Dollars, E> {
                Money::parse_dollars(v).map(Dollars).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Dollars, E> {
                // Display writes the shortest decimal that reads back as `v`.
                self.visit_str(&v.to_string())
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Dollars, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Dollars, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// Parses a non-negative decimal (`"12.5"`, `".5"`, `"2.5e-6"`) and returns it
/// times 10^`scale` as an integer, rounding half up past that. `None` if it is
/// not a number, negative, or too large.
pub(crate) fn parse_scaled(s: &str, scale: u32) -> Option<u64> {
    let s = s.trim();
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s.get(i + 1..)?.parse::<i32>().ok()?),
        None => (s, 0),
    };
    let mantissa = mantissa.strip_prefix('+').unwrap_or(mantissa);
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // digits × 10^(exp − len(frac) + scale)
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let shift = exp + i32::try_from(scale).ok()? - i32::try_from(frac.len()).ok()?;
    let mut value: u128 = 0;
    if shift >= 0 {
        for b in digits.bytes() {
            value = value.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
        }
        for _ in 0..shift {
            value = value.checked_mul(10)?;
        }
    } else {
        let cut = usize::try_from(-shift).ok()?;
        let keep = digits.len().saturating_sub(cut);
        for b in digits.bytes().take(keep) {
            value = value.checked_mul(10)?.checked_add(u128::from(b - b'0'))?;
        }
        // Round half up on the first dropped digit.
        let first_dropped = if cut > digits.len() {
            0
        } else {
            digits.as_bytes().get(keep).map_or(0, |b| b - b'0')
        };
        if first_dropped >= 5 {
            value += 1;
        }
    }
    u64::try_from(value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_with_the_precision_a_person_expects() {
        assert_eq!(Money::from_micros(42).to_string(), "$0.000042");
        assert_eq!(Money::from_cents(1250).to_string(), "$12.50");
        assert_eq!(Money::from_dollars(100).to_string(), "$100.00");
        assert_eq!(Money::ZERO.to_string(), "$0.00");
        assert_eq!(Money::from_micros(12_345_678).to_string(), "$12.345678");
        assert_eq!(Money::from_micros(1_500).to_string(), "$0.0015");
    }

    #[test]
    fn decimal_keeps_all_six_places() {
        assert_eq!(Money::from_micros(123).decimal(), "0.000123");
        assert_eq!(Money::from_cents(1250).decimal(), "12.500000");
        assert_eq!(Money::ZERO.decimal(), "0.000000");
    }

    #[test]
    fn parses_decimal_dollars_exactly() {
        let p = |s| Money::parse_dollars(s).map(Money::micros);
        assert_eq!(p("12.5"), Ok(12_500_000));
        assert_eq!(p("$0.000042"), Ok(42));
        assert_eq!(p("0.42"), Ok(420_000));
        assert_eq!(p(".5"), Ok(500_000));
        assert_eq!(p("100"), Ok(100_000_000));
        assert_eq!(p("2e-6"), Ok(2));
        assert_eq!(p("1.5E2"), Ok(150_000_000));
        assert_eq!(p("0.0000005"), Ok(1), "half up");
        assert_eq!(p("0.0000004"), Ok(0));
        for bad in ["", "-1", "abc", "1.2.3", "1e", "$", "1,000"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert!(p("99999999999999999999").is_err(), "too large");
    }

    #[test]
    fn scaled_parsing_of_per_token_prices() {
        // LiteLLM writes $/token; we keep micro-dollars per million tokens (×10^12).
        assert_eq!(parse_scaled("0.000002", 12), Some(2_000_000));
        assert_eq!(parse_scaled("2.5e-06", 12), Some(2_500_000));
        assert_eq!(parse_scaled("1.25e-7", 12), Some(125_000));
        assert_eq!(parse_scaled("0", 12), Some(0));
    }
}
