//! Time as the pool sees it: a wall-clock timestamp passed in by the caller.
//!
//! The pool never reads a clock. Every operation that depends on time takes a
//! [`Timestamp`], and calendar rules (the daily reset at midnight of a
//! configured [`UtcOffset`]) are computed from it with integer arithmetic.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

const MS_PER_DAY: i64 = 86_400_000;
const MS_PER_MINUTE: u64 = 60_000;

/// A point in wall-clock time: milliseconds since the Unix epoch (UTC).
///
/// The caller produces it (from `SystemTime::now()` in production, from a
/// simulated clock in tests); the pool only compares and adds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch, 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest representable time; used as "never".
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// A timestamp `ms` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(ms: u64) -> Self {
        Timestamp(ms)
    }

    /// A timestamp `secs` seconds after the Unix epoch.
    pub const fn from_unix_secs(secs: u64) -> Self {
        Timestamp(secs.saturating_mul(1000))
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_unix_millis(self) -> u64 {
        self.0
    }

    /// This time plus `d`, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, d: Duration) -> Self {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    /// Converts a wall-clock `SystemTime` (a value the caller read; this
    /// reads no clock). Times before the epoch become the epoch.
    pub fn from_system_time(t: std::time::SystemTime) -> Self {
        let ms = t
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Timestamp(ms)
    }

    /// This time as a `SystemTime`.
    pub fn to_system_time(self) -> std::time::SystemTime {
        std::time::SystemTime::UNIX_EPOCH + Duration::from_millis(self.0)
    }

    /// Index of the UTC minute this time falls in (minutes since the epoch).
    pub(crate) fn minute_index(self) -> u64 {
        self.0 / MS_PER_MINUTE
    }

    /// The start of the minute after the one this time falls in.
    pub(crate) fn next_minute(self) -> Timestamp {
        Timestamp((self.minute_index() + 1).saturating_mul(MS_PER_MINUTE))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-22T04:40:52.000Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Timestamp::MAX {
            return f.write_str("never");
        }
        let ms = self.0;
        let days = i64::try_from(ms / 86_400_000).unwrap_or(i64::MAX);
        let rem = ms % 86_400_000;
        let (y, m, d) = civil_from_days(days);
        let (h, min, s, milli) = (
            rem / 3_600_000,
            rem / 60_000 % 60,
            rem / 1000 % 60,
            rem % 1000,
        );
        write!(f, "{y:04}-{m:02}-{d:02}T{h:02}:{min:02}:{s:02}.{milli:03}Z")
    }
}

/// Converts days since 1970-01-01 to a (year, month, day) civil date.
///
/// Howard Hinnant's `civil_from_days`, exact for the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    // d is in 1..=31 and m in 1..=12 by construction.
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// A fixed offset from UTC, such as `+07:00` for Bangkok and Hanoi.
///
/// The daily reset happens at midnight of this offset.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "String", into = "String"))]
pub struct UtcOffset {
    seconds: i32,
}

impl UtcOffset {
    /// UTC itself.
    pub const UTC: UtcOffset = UtcOffset { seconds: 0 };

    /// An offset of `seconds` east of UTC; it must lie strictly within ±24 hours.
    pub fn from_seconds(seconds: i32) -> Result<Self, ParseOffsetError> {
        if seconds.unsigned_abs() >= 86_400 {
            return Err(ParseOffsetError::OutOfRange);
        }
        Ok(UtcOffset { seconds })
    }

    /// An offset of `hours` and `minutes` east of UTC (both negative for west).
    pub fn from_hm(hours: i8, minutes: i8) -> Result<Self, ParseOffsetError> {
        Self::from_seconds(i32::from(hours) * 3600 + i32::from(minutes) * 60)
    }

    /// Seconds east of UTC.
    pub const fn as_seconds(self) -> i32 {
        self.seconds
    }

    fn offset_ms(self) -> i64 {
        i64::from(self.seconds) * 1000
    }

    /// The local calendar day `t` falls in, counted from 1970-01-01 local.
    pub fn day_index(self, t: Timestamp) -> i64 {
        let local = i64::try_from(t.as_unix_millis()).unwrap_or(i64::MAX) + self.offset_ms();
        local.div_euclid(MS_PER_DAY)
    }

    /// The first instant of local day `day`, in UTC.
    pub fn day_start(self, day: i64) -> Timestamp {
        let ms = day.saturating_mul(MS_PER_DAY) - self.offset_ms();
        Timestamp(u64::try_from(ms).unwrap_or(0))
    }

    /// The next local midnight strictly after `t`.
    pub fn next_midnight(self, t: Timestamp) -> Timestamp {
        self.day_start(self.day_index(t) + 1)
    }
}

impl fmt::Display for UtcOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.seconds < 0 { '-' } else { '+' };
        let abs = self.seconds.unsigned_abs();
        write!(f, "{sign}{:02}:{:02}", abs / 3600, abs / 60 % 60)
    }
}

/// Why a string is not a UTC offset.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseOffsetError {
    /// Not of the form `+HH:MM`, `-HH:MM` or `Z`.
    #[error("utc offset must look like +07:00, -05:30 or Z")]
    Syntax,
    /// Twenty-four hours or more away from UTC.
    #[error("utc offset must be within ±23:59")]
    OutOfRange,
}

impl FromStr for UtcOffset {
    type Err = ParseOffsetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s == "Z" || s == "z" || s.eq_ignore_ascii_case("utc") {
            return Ok(UtcOffset::UTC);
        }
        let (sign, rest) = match s.as_bytes().first() {
            Some(b'+') => (1, &s[1..]),
            Some(b'-') => (-1, &s[1..]),
            _ => return Err(ParseOffsetError::Syntax),
        };
        let (h, m) = rest.split_once(':').ok_or(ParseOffsetError::Syntax)?;
        let digits = |p: &str| p.len() == 2 && p.bytes().all(|b| b.is_ascii_digit());
        if !digits(h) || !digits(m) {
            return Err(ParseOffsetError::Syntax);
        }
        let h: i32 = h.parse().map_err(|_| ParseOffsetError::Syntax)?;
        let m: i32 = m.parse().map_err(|_| ParseOffsetError::Syntax)?;
        if m >= 60 {
            return Err(ParseOffsetError::OutOfRange);
        }
        UtcOffset::from_seconds(sign * (h * 3600 + m * 60))
    }
}

impl TryFrom<String> for UtcOffset {
    type Error = ParseOffsetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<UtcOffset> for String {
    fn from(o: UtcOffset) -> String {
        o.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(Timestamp::EPOCH.to_string(), "1970-01-01T00:00:00.000Z");
        // 2026-11-22T04:40:52Z
        let t = Timestamp::from_unix_secs(1_795_322_452);
        assert_eq!(t.to_string(), "2026-11-22T04:40:52.000Z");
        // A leap day.
        let t = Timestamp::from_unix_millis(951_782_400_123);
        assert_eq!(t.to_string(), "2000-02-29T00:00:00.123Z");
        assert_eq!(Timestamp::MAX.to_string(), "never");
    }

    #[test]
    fn parses_offsets() {
        assert_eq!("+07:00".parse::<UtcOffset>().unwrap().as_seconds(), 25_200);
        assert_eq!("-05:30".parse::<UtcOffset>().unwrap().as_seconds(), -19_800);
        assert_eq!("Z".parse::<UtcOffset>().unwrap(), UtcOffset::UTC);
        assert_eq!("+07:00".parse::<UtcOffset>().unwrap().to_string(), "+07:00");
        assert_eq!("-05:30".parse::<UtcOffset>().unwrap().to_string(), "-05:30");
        for bad in ["7", "+7:00", "+07", "07:00", "+0a:00", "+07:000", ""] {
            assert_eq!(
                bad.parse::<UtcOffset>(),
                Err(ParseOffsetError::Syntax),
                "{bad}"
            );
        }
        assert_eq!(
            "+24:00".parse::<UtcOffset>(),
            Err(ParseOffsetError::OutOfRange)
        );
        assert_eq!(
            "+01:60".parse::<UtcOffset>(),
            Err(ParseOffsetError::OutOfRange)
        );
    }

    #[test]
    fn midnight_in_bangkok_is_17_utc() {
        let bkk = UtcOffset::from_hm(7, 0).unwrap();
        // 2026-11-22T04:40:52Z is 11:40 in Bangkok; next midnight is 2026-11-22T17:00Z.
        let t = Timestamp::from_unix_secs(1_795_322_452);
        assert_eq!(bkk.next_midnight(t).to_string(), "2026-11-22T17:00:00.000Z");
        // At the boundary itself the day has already begun: next midnight is a day later.
        let boundary = bkk.next_midnight(t);
        assert_eq!(bkk.day_index(boundary), bkk.day_index(t) + 1);
        assert_eq!(
            bkk.day_index(Timestamp::from_unix_millis(boundary.as_unix_millis() - 1)),
            bkk.day_index(t)
        );
        assert_eq!(
            bkk.next_midnight(boundary).to_string(),
            "2026-11-23T17:00:00.000Z"
        );
    }

    #[test]
    fn negative_offset_midnight() {
        let ny = UtcOffset::from_hm(-5, 0).unwrap();
        let t = Timestamp::from_unix_secs(1_795_322_452); // 23:40 on the 21st in UTC-5
        assert_eq!(ny.next_midnight(t).to_string(), "2026-11-22T05:00:00.000Z");
    }

    #[test]
    fn system_time_round_trip() {
        let t = Timestamp::from_unix_millis(1_795_322_452_123);
        assert_eq!(Timestamp::from_system_time(t.to_system_time()), t);
        let before_epoch = std::time::SystemTime::UNIX_EPOCH - Duration::from_secs(5);
        assert_eq!(Timestamp::from_system_time(before_epoch), Timestamp::EPOCH);
    }

    #[test]
    fn minute_boundaries() {
        let t = Timestamp::from_unix_millis(60_000 * 5 + 59_999);
        assert_eq!(t.next_minute(), Timestamp::from_unix_millis(360_000));
        assert_eq!(t.minute_index(), 5);
    }
}
