//! Calendar periods at a fixed UTC offset, with integer arithmetic only.

use std::time::{Duration, SystemTime};

use crate::limits::Period;

const MS_PER_DAY: i64 = 86_400_000;

/// A day of the week.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Weekday {
    /// Monday (ISO weeks start here; the default).
    #[default]
    Monday,
    /// Tuesday.
    Tuesday,
    /// Wednesday.
    Wednesday,
    /// Thursday.
    Thursday,
    /// Friday.
    Friday,
    /// Saturday.
    Saturday,
    /// Sunday.
    Sunday,
}

impl Weekday {
    fn index(self) -> i64 {
        self as i64
    }
}

/// Where periods begin: midnight at `utc_offset_seconds`, weeks on `week_start`,
/// months on the 1st.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(default, deny_unknown_fields))]
pub struct Calendar {
    /// Seconds east of UTC, e.g. 25 200 for UTC+7 (Bangkok, Hanoi).
    pub utc_offset_seconds: i32,
    /// The first day of a week.
    pub week_start: Weekday,
}

/// Milliseconds since the Unix epoch (negative before it).
pub(crate) fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

pub(crate) fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_millis(ms.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// Days since 1970-01-01 for a civil date (Howard Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count (Howard Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

impl Calendar {
    /// A calendar at `utc_offset_seconds` with ISO weeks.
    pub fn new(utc_offset_seconds: i32) -> Self {
        Calendar {
            utc_offset_seconds,
            week_start: Weekday::Monday,
        }
    }

    fn offset_ms(&self) -> i64 {
        i64::from(self.utc_offset_seconds) * 1000
    }

    /// The local day `t` falls in, counted from 1970-01-01.
    pub fn day(&self, t: SystemTime) -> i64 {
        self.day_of_ms(unix_ms(t))
    }

    /// The local day of a time in milliseconds since the epoch.
    pub(crate) fn day_of_ms(&self, ms: i64) -> i64 {
        (ms + self.offset_ms()).div_euclid(MS_PER_DAY)
    }

    /// The milliseconds since local midnight of a time in ms since the epoch.
    pub(crate) fn ms_of_day(&self, ms: i64) -> i64 {
        (ms + self.offset_ms()).rem_euclid(MS_PER_DAY)
    }

    /// The first day of the period of `kind` that contains local day `day`.
    fn period_first_day(&self, kind: Period, day: i64) -> i64 {
        match kind {
            Period::Daily => day,
            // 1970-01-01 was a Thursday (index 3 with Monday = 0).
            Period::Weekly => day - (day + 3 - self.week_start.index()).rem_euclid(7),
            Period::Monthly => {
                let (y, m, _) = civil_from_days(day);
                days_from_civil(y, m, 1)
            }
        }
    }

    /// The first day of the next period after the one containing `day`.
    fn next_period_first_day(&self, kind: Period, day: i64) -> i64 {
        match kind {
            Period::Daily => day + 1,
            Period::Weekly => self.period_first_day(kind, day) + 7,
            Period::Monthly => {
                let (y, m, _) = civil_from_days(day);
                if m == 12 {
                    days_from_civil(y + 1, 1, 1)
                } else {
                    days_from_civil(y, m + 1, 1)
                }
            }
        }
    }

    /// An id of the period of `kind` containing `t` (its first local day).
    pub fn period_id(&self, kind: Period, t: SystemTime) -> i64 {
        self.period_first_day(kind, self.day(t))
    }

    /// When the period of `kind` containing `t` began.
    pub fn period_start(&self, kind: Period, t: SystemTime) -> SystemTime {
        self.day_start(self.period_first_day(kind, self.day(t)))
    }

    /// When the next period of `kind` after the one containing `t` begins.
    pub fn next_period_start(&self, kind: Period, t: SystemTime) -> SystemTime {
        self.day_start(self.next_period_first_day(kind, self.day(t)))
    }

    /// The first instant of local day `day`.
    pub(crate) fn day_start(&self, day: i64) -> SystemTime {
        from_unix_ms(day.saturating_mul(MS_PER_DAY) - self.offset_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn civil_round_trip() {
        for day in [-800_000, -1, 0, 1, 10_957, 11_016, 20_779, 2_932_896] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(days_from_civil(2026, 11, 22), 20_779);
    }

    #[test]
    fn bangkok_periods() {
        let bkk = Calendar::new(7 * 3600);
        // 2026-11-22T04:40:52Z = 11:40 on Sunday the 22nd in Bangkok.
        let t = at(1_795_322_452);
        let fmt = |t: SystemTime| unix_ms(t) / 1000;
        // Next midnight: 2026-11-22T17:00Z.
        assert_eq!(fmt(bkk.next_period_start(Period::Daily, t)), 1_795_366_800);
        // ISO week: began Monday 2026-11-16 00:00 local = 2026-11-15T17:00Z.
        assert_eq!(
            fmt(bkk.period_start(Period::Weekly, t)),
            1_795_366_800 - 7 * 86_400
        );
        // Weeks starting on Sunday began today.
        let sunday = Calendar {
            week_start: Weekday::Sunday,
            ..bkk
        };
        assert_eq!(
            fmt(sunday.period_start(Period::Weekly, t)),
            1_795_366_800 - 86_400
        );
        // Month: 2026-11-01 00:00 local = 2026-10-31T17:00Z; next 2026-11-30T17:00Z.
        assert_eq!(fmt(bkk.period_start(Period::Monthly, t)), 1_793_466_000);
        assert_eq!(
            fmt(bkk.next_period_start(Period::Monthly, t)),
            1_796_058_000
        );
    }

    #[test]
    fn the_boundary_instant_belongs_to_the_new_period() {
        let bkk = Calendar::new(7 * 3600);
        let midnight = at(1_795_366_800);
        let before = midnight - Duration::from_millis(1);
        assert_eq!(
            bkk.period_id(Period::Daily, midnight),
            bkk.period_id(Period::Daily, before) + 1
        );
        assert_ne!(
            bkk.period_id(Period::Monthly, at(1_796_058_000)),
            bkk.period_id(
                Period::Monthly,
                at(1_796_058_000) - Duration::from_millis(1)
            )
        );
    }

    #[test]
    fn december_rolls_into_january() {
        let utc = Calendar::new(0);
        let dec = at(1_798_761_600 - 3600); // 2026-12-31T23:00Z
        assert_eq!(
            unix_ms(utc.next_period_start(Period::Monthly, dec)) / 1000,
            1_798_761_600
        );
    }
}
