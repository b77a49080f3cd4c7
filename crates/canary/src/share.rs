//! A share of users, in basis points.

use std::fmt;

use crate::error::CanaryError;

/// A share of users: `0..=10_000` basis points (100 bp = 1%).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Share(u16);

impl Share {
    /// Nobody.
    pub const ZERO: Share = Share(0);
    /// Everybody.
    pub const ALL: Share = Share(10_000);

    /// A share in basis points; more than 10 000 is an error.
    pub fn from_bp(bp: u32) -> Result<Self, CanaryError> {
        u16::try_from(bp)
            .ok()
            .filter(|&bp| bp <= 10_000)
            .map(Share)
            .ok_or_else(|| CanaryError::ShareOutOfRange {
                value: format!("{bp} bp"),
            })
    }

    /// A share as a fraction in `0.0..=1.0`, rounded to the nearest basis point.
    /// NaN and anything outside the range is an error.
    pub fn from_fraction(fraction: f64) -> Result<Self, CanaryError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(CanaryError::ShareOutOfRange {
                value: fraction.to_string(),
            });
        }
        // In range: the product is within 0..=10 000.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let bp = (fraction * 10_000.0).round() as u16;
        Ok(Share(bp))
    }

    /// A whole percentage, `0..=100`.
    pub fn percent(percent: u8) -> Result<Self, CanaryError> {
        Self::from_bp(u32::from(percent) * 100)
    }

    /// Basis points.
    pub const fn bp(self) -> u16 {
        self.0
    }

    /// As a fraction, for display.
    pub fn fraction(self) -> f64 {
        f64::from(self.0) / 10_000.0
    }
}

impl fmt::Display for Share {
    /// `10%`, `12.5%`, `0.01%`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (whole, rest) = (self.0 / 100, self.0 % 100);
        if rest == 0 {
            write!(f, "{whole}%")
        } else if rest % 10 == 0 {
            write!(f, "{whole}.{}%", rest / 10)
        } else {
            write!(f, "{whole}.{rest:02}%")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_validate_and_round() {
        assert_eq!(Share::from_fraction(0.1).unwrap().bp(), 1000);
        assert_eq!(Share::from_fraction(0.07).unwrap().bp(), 700);
        assert_eq!(Share::from_fraction(0.123_45).unwrap().bp(), 1235);
        assert_eq!(Share::from_fraction(1.0).unwrap(), Share::ALL);
        for bad in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            assert!(
                matches!(
                    Share::from_fraction(bad),
                    Err(CanaryError::ShareOutOfRange { .. })
                ),
                "{bad}"
            );
        }
        assert_eq!(Share::from_bp(10_000).unwrap(), Share::ALL);
        assert_eq!(
            Share::from_bp(10_001).unwrap_err().to_string(),
            "share 10001 bp is out of range: use a fraction in 0.0..=1.0 or 0..=10000 basis points"
        );
        assert_eq!(Share::percent(10).unwrap().bp(), 1000);
        assert!(Share::percent(101).is_err());
    }

    #[test]
    fn displays_as_percent() {
        assert_eq!(Share::from_bp(1000).unwrap().to_string(), "10%");
        assert_eq!(Share::from_bp(1250).unwrap().to_string(), "12.5%");
        assert_eq!(Share::from_bp(1).unwrap().to_string(), "0.01%");
        assert_eq!(Share::ALL.to_string(), "100%");
    }
}
