//! Schedules: cron, fixed interval, calendar ("every N days/weeks/months at HH:MM") and one-off,
//! each with optional inclusive start/end bounds and a deterministic jitter.
//!
//! Instants are epoch milliseconds (i64). Cron and calendar fires fall on whole seconds between
//! 0001-01-01 and 9999-12-31 UTC; interval and one-off fires may be any i64 and every step is
//! overflow-checked, so huge inputs give `None`, never a wrap-around or a panic.

use std::sync::Arc;

use crate::cron::Cron;
use crate::tz::{self, Zone, MAX_SEC, MIN_SEC, SECS_PER_DAY};

/// Calendar step unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Days,
    Weeks,
    Months,
}

#[derive(Clone, Debug)]
// Unboxed on purpose: batch evaluation walks many schedules, and a box is one more cache miss.
#[allow(clippy::large_enum_variant)]
enum Kind {
    Cron(Cron),
    Interval {
        every: i64,
        anchor: i64,
    },
    Calendar {
        every: i64,
        unit: Unit,
        /// Local second of day.
        time: i64,
        /// Anchor date as days since 1970-01-01.
        anchor_day: i64,
    },
    Once {
        at: i64,
    },
}

/// An immutable schedule; all methods are pure.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: Kind,
    zone: Arc<Zone>,
    start: Option<i64>,
    end: Option<i64>,
    jitter: i64,
    /// Constructor call without its closing parenthesis, for `repr`.
    description: String,
}

fn check_bounds(start: Option<i64>, end: Option<i64>, jitter: i64) -> Result<(), String> {
    if let (Some(s), Some(e)) = (start, end) {
        if e < s {
            return Err("end before start".into());
        }
    }
    if jitter < 0 {
        return Err("jitter_ms must be >= 0".into());
    }
    Ok(())
}

fn parse_time(s: &str) -> Result<i64, String> {
    const MSG: &str = "calendar: time must be HH:MM or HH:MM:SS";
    let parts: Vec<&str> = s.split(':').collect();
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(MSG.into());
    }
    let n: Vec<i64> = parts.iter().map(|p| p.parse().unwrap_or(99)).collect();
    let (h, m, sec) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    if h > 23 || m > 59 || sec > 59 {
        return Err(format!("calendar: time '{s}' is out of range"));
    }
    Ok(h * 3600 + m * 60 + sec)
}

fn parse_date(s: &str) -> Result<i64, String> {
    let msg = || format!("calendar: anchor_date must be a valid YYYY-MM-DD date, got '{s}'");
    let b = s.as_bytes();
    if b.len() != 10
        || b[4] != b'-'
        || b[7] != b'-'
        || !b
            .iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
    {
        return Err(msg());
    }
    let y: i64 = s[0..4].parse().map_err(|_| msg())?;
    let m: u32 = s[5..7].parse().map_err(|_| msg())?;
    let d: u32 = s[8..10].parse().map_err(|_| msg())?;
    if y < 1 || !(1..=12).contains(&m) || d < 1 || d > tz::days_in_month(y, m) {
        return Err(msg());
    }
    Ok(tz::days_from_civil(y, m, d))
}

/// splitmix64 finalizer: a fixed, platform-independent 64-bit mix.
#[inline]
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// First fire instant (seconds) of a whole-second schedule strictly after `after_ms`.
#[inline]
fn first_second_after(after_ms: i64) -> i64 {
    (after_ms.div_euclid(1000) + 1).max(MIN_SEC)
}

impl Schedule {
    pub fn cron(
        expression: &str,
        zone: Arc<Zone>,
        start: Option<i64>,
        end: Option<i64>,
        jitter: i64,
    ) -> Result<Schedule, String> {
        let cron = Cron::parse(expression)?;
        check_bounds(start, end, jitter)?;
        Ok(Schedule {
            kind: Kind::Cron(cron),
            description: format!("cron({expression:?}, timezone={:?}", zone.name()),
            zone,
            start,
            end,
            jitter,
        })
    }

    pub fn interval(
        every: i64,
        anchor: i64,
        start: Option<i64>,
        end: Option<i64>,
        jitter: i64,
    ) -> Result<Schedule, String> {
        if every < 1000 {
            return Err("interval: every_ms must be >= 1000".into());
        }
        check_bounds(start, end, jitter)?;
        Ok(Schedule {
            kind: Kind::Interval { every, anchor },
            description: format!("interval(every_ms={every}, anchor_ms={anchor}"),
            zone: Zone::utc(),
            start,
            end,
            jitter,
        })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn calendar(
        every: i64,
        unit: &str,
        time: &str,
        zone: Arc<Zone>,
        anchor_date: &str,
        start: Option<i64>,
        end: Option<i64>,
        jitter: i64,
    ) -> Result<Schedule, String> {
        if every < 1 {
            return Err("calendar: every must be >= 1".into());
        }
        let unit_kind = match unit {
            "days" => Unit::Days,
            "weeks" => Unit::Weeks,
            "months" => Unit::Months,
            _ => return Err("calendar: unit must be one of days, weeks, months".into()),
        };
        let time_of_day = parse_time(time)?;
        let anchor_day = parse_date(anchor_date)?;
        check_bounds(start, end, jitter)?;
        Ok(Schedule {
            kind: Kind::Calendar {
                every,
                unit: unit_kind,
                time: time_of_day,
                anchor_day,
            },
            description: format!(
                "calendar(every={every}, unit={unit:?}, time={time:?}, timezone={:?}, anchor_date={anchor_date:?}",
                zone.name()
            ),
            zone,
            start,
            end,
            jitter,
        })
    }

    /// A single fire at `at`; none at all when `at` lies outside `[start, end]` (the bounds apply to
    /// every kind alike).
    pub fn once(
        at: i64,
        start: Option<i64>,
        end: Option<i64>,
        jitter: i64,
    ) -> Result<Schedule, String> {
        check_bounds(start, end, jitter)?;
        Ok(Schedule {
            kind: Kind::Once { at },
            description: format!("once(at_ms={at}"),
            zone: Zone::utc(),
            start,
            end,
            jitter,
        })
    }

    pub fn timezone(&self) -> &str {
        self.zone.name()
    }

    pub fn jitter_ms(&self) -> i64 {
        self.jitter
    }

    pub fn describe(&self) -> String {
        let mut s = self.description.clone();
        if let Some(v) = self.start {
            s.push_str(&format!(", start_ms={v}"));
        }
        if let Some(v) = self.end {
            s.push_str(&format!(", end_ms={v}"));
        }
        if self.jitter != 0 {
            s.push_str(&format!(", jitter_ms={}", self.jitter));
        }
        s.push(')');
        s
    }

    /// The nominal fire strictly after `after`, honouring start/end; None when there is none.
    pub fn next_after(&self, after: i64) -> Option<i64> {
        let after = match self.start {
            Some(s) => after.max(s.saturating_sub(1)),
            None => after,
        };
        let next = self.unbounded_next_after(after)?;
        match self.end {
            Some(e) if next > e => None,
            _ => Some(next),
        }
    }

    fn unbounded_next_after(&self, after: i64) -> Option<i64> {
        match &self.kind {
            Kind::Once { at } => (*at > after).then_some(*at),
            Kind::Interval { every, anchor } => {
                let (every, anchor) = (i128::from(*every), i128::from(*anchor));
                let k = (i128::from(after) - anchor).div_euclid(every) + 1;
                i64::try_from(anchor + k * every).ok()
            }
            Kind::Cron(cron) => {
                let from = first_second_after(after);
                if from > MAX_SEC {
                    return None;
                }
                cron.next_fire(&self.zone, from).map(|s| s * 1000)
            }
            Kind::Calendar {
                every,
                unit,
                time,
                anchor_day,
            } => {
                let from = first_second_after(after);
                if from > MAX_SEC {
                    return None;
                }
                let day_of = |k: i64| -> Option<i64> {
                    match unit {
                        Unit::Days => anchor_day.checked_add(k.checked_mul(*every)?),
                        Unit::Weeks => {
                            anchor_day.checked_add(k.checked_mul(*every)?.checked_mul(7)?)
                        }
                        Unit::Months => {
                            let (y, m, d) = tz::civil_from_days(*anchor_day);
                            let idx =
                                (y * 12 + i64::from(m) - 1).checked_add(k.checked_mul(*every)?)?;
                            let (ny, nm) = (idx.div_euclid(12), idx.rem_euclid(12) as u32 + 1);
                            if ny > 9999 {
                                return None;
                            }
                            Some(tz::days_from_civil(
                                ny,
                                nm,
                                d.min(tz::days_in_month(ny, nm)),
                            ))
                        }
                    }
                };
                // Estimate the occurrence index from the wall date of `from`, start two
                // occurrences early (offsets and gaps shift instants by less than a day) and
                // walk forward.
                let from_day = self.zone.wall_of(from).div_euclid(SECS_PER_DAY);
                let behind = from_day - anchor_day;
                let k0 = match unit {
                    Unit::Days => behind.div_euclid(*every),
                    Unit::Weeks => behind.div_euclid(every.saturating_mul(7)),
                    Unit::Months => {
                        let (fy, fm, _) = tz::civil_from_days(from_day);
                        let (ay, am, _) = tz::civil_from_days(*anchor_day);
                        ((fy - ay) * 12 + i64::from(fm) - i64::from(am)).div_euclid(*every)
                    }
                };
                let first = (k0 - 2).max(0);
                for k in first..first + 8 {
                    let day = day_of(k)?;
                    if day > tz::days_from_civil(9999, 12, 31) {
                        return None;
                    }
                    let t = self.zone.resolve_wall(day * SECS_PER_DAY + time);
                    if t >= from {
                        return (t <= MAX_SEC).then_some(t * 1000);
                    }
                }
                None
            }
        }
    }

    /// Up to `count` fires strictly after `after`, strictly increasing.
    pub fn next_n(&self, after: i64, count: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(count.min(1024));
        let mut t = after;
        while out.len() < count {
            match self.next_after(t) {
                Some(f) => {
                    out.push(f);
                    t = f;
                }
                None => break,
            }
        }
        out
    }

    /// Fires `f` with `after < f <= until`, earliest first, at most `limit`.
    pub fn fires_between(&self, after: i64, until: i64, limit: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = after;
        while out.len() < limit {
            match self.next_after(t) {
                Some(f) if f <= until => {
                    out.push(f);
                    t = f;
                }
                _ => break,
            }
        }
        out
    }

    /// `nominal` plus a deterministic jitter in `[0, jitter_ms]` derived from
    /// `splitmix64(seed ^ splitmix64(nominal))`; saturates at i64::MAX.
    pub fn fire_instant(&self, nominal: i64, seed: u64) -> i64 {
        if self.jitter == 0 {
            return nominal;
        }
        let h = splitmix64(seed ^ splitmix64(nominal as u64));
        let span = self.jitter as u64 + 1;
        nominal.saturating_add((h % span) as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tz::{days_from_civil, test_zone};

    fn cron(
        expression: &str,
        timezone: &str,
        start: Option<i64>,
        end: Option<i64>,
        jitter: i64,
    ) -> Result<Schedule, String> {
        Schedule::cron(expression, test_zone(timezone), start, end, jitter)
    }

    #[allow(clippy::too_many_arguments)]
    fn calendar(
        every: i64,
        unit: &str,
        time: &str,
        timezone: &str,
        anchor_date: &str,
        start: Option<i64>,
        end: Option<i64>,
        jitter: i64,
    ) -> Result<Schedule, String> {
        Schedule::calendar(
            every,
            unit,
            time,
            test_zone(timezone),
            anchor_date,
            start,
            end,
            jitter,
        )
    }

    fn ms(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        (days_from_civil(y, mo, d) * SECS_PER_DAY + h * 3600 + mi * 60) * 1000
    }

    #[test]
    fn validation_messages() {
        let e = |r: Result<Schedule, String>| r.unwrap_err();
        assert_eq!(
            e(Schedule::interval(999, 0, None, None, 0)),
            "interval: every_ms must be >= 1000"
        );
        assert_eq!(
            e(calendar(
                1,
                "years",
                "09:00",
                "UTC",
                "2026-01-01",
                None,
                None,
                0
            )),
            "calendar: unit must be one of days, weeks, months"
        );
        assert_eq!(
            e(calendar(
                1,
                "days",
                "9am",
                "UTC",
                "2026-01-01",
                None,
                None,
                0
            )),
            "calendar: time must be HH:MM or HH:MM:SS"
        );
        assert_eq!(
            e(calendar(
                0,
                "days",
                "09:00",
                "UTC",
                "2026-01-01",
                None,
                None,
                0
            )),
            "calendar: every must be >= 1"
        );
        assert_eq!(
            e(cron("* * * * *", "UTC", Some(10), Some(5), 0)),
            "end before start"
        );
        assert!(e(calendar(
            1,
            "days",
            "09:00",
            "UTC",
            "2026-02-30",
            None,
            None,
            0
        ))
        .contains("anchor_date"));
        assert_eq!(
            e(Schedule::once(0, None, None, -1)),
            "jitter_ms must be >= 0"
        );
    }

    #[test]
    fn interval_anchor_and_bounds() {
        let s = Schedule::interval(60_000, 30_000, None, None, 0).unwrap();
        assert_eq!(s.next_after(0), Some(30_000));
        assert_eq!(s.next_after(30_000), Some(90_000));
        assert_eq!(s.next_after(-100_000), Some(-90_000));
        let b = Schedule::interval(60_000, 30_000, Some(100_000), Some(210_000), 0).unwrap();
        assert_eq!(b.next_n(0, 10), vec![150_000, 210_000]);
        assert_eq!(b.fires_between(0, 200_000, 10), vec![150_000]);
        let huge = Schedule::interval(i64::MAX, i64::MAX, None, None, 0).unwrap();
        assert_eq!(huge.next_after(i64::MAX), None);
        // k = -2: anchor - 2 * every is still representable.
        assert_eq!(huge.next_after(i64::MIN), Some(-i64::MAX));
    }

    #[test]
    fn once_and_jitter() {
        let s = Schedule::once(5_000, None, None, 1_000).unwrap();
        assert_eq!(s.next_after(4_999), Some(5_000));
        assert_eq!(s.next_after(5_000), None);
        // The bounds apply to a once schedule as to every other kind.
        let ended = Schedule::once(5_000, Some(0), Some(4_000), 0).unwrap();
        assert_eq!(ended.next_after(0), None);
        assert_eq!(ended.fires_between(0, 10_000, 10), Vec::<i64>::new());
        let not_started = Schedule::once(5_000, Some(6_000), None, 0).unwrap();
        assert_eq!(not_started.next_after(0), None);
        let inside = Schedule::once(5_000, Some(5_000), Some(5_000), 0).unwrap();
        assert_eq!(inside.next_after(0), Some(5_000));
        for seed in 0..100u64 {
            let f = s.fire_instant(5_000, seed);
            assert!((5_000..=6_000).contains(&f));
            assert_eq!(f, s.fire_instant(5_000, seed));
        }
        assert_eq!(s.fire_instant(i64::MAX, 7), i64::MAX);
        // Fixed value: the hash is part of the contract (same on every machine).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn calendar_months_clamp_to_month_end() {
        let s = calendar(1, "months", "09:00", "UTC", "2026-01-31", None, None, 0).unwrap();
        assert_eq!(
            s.next_n(ms(2026, 1, 1, 0, 0), 4),
            vec![
                ms(2026, 1, 31, 9, 0),
                ms(2026, 2, 28, 9, 0),
                ms(2026, 3, 31, 9, 0),
                ms(2026, 4, 30, 9, 0)
            ]
        );
        let leap = calendar(12, "months", "00:00", "UTC", "2024-02-29", None, None, 0).unwrap();
        assert_eq!(
            leap.next_n(0, 2),
            vec![ms(2024, 2, 29, 0, 0), ms(2025, 2, 28, 0, 0)]
        );
    }

    #[test]
    fn calendar_days_and_weeks_keep_local_time_across_dst() {
        // Berlin: CET (+1) -> CEST (+2) on 2026-03-29.
        let s = calendar(
            1,
            "days",
            "09:00",
            "Europe/Berlin",
            "2026-03-27",
            None,
            None,
            0,
        )
        .unwrap();
        assert_eq!(
            s.next_n(0, 4),
            vec![
                ms(2026, 3, 27, 8, 0),
                ms(2026, 3, 28, 8, 0),
                ms(2026, 3, 29, 7, 0),
                ms(2026, 3, 30, 7, 0)
            ]
        );
        let w = calendar(2, "weeks", "10:30", "UTC", "2026-01-05", None, None, 0).unwrap();
        assert_eq!(
            w.next_n(ms(2026, 1, 6, 0, 0), 2),
            vec![ms(2026, 1, 19, 10, 30), ms(2026, 2, 2, 10, 30)]
        );
        // A wall time in the New York gap moves to 03:00 EDT; in the overlap, the first pass.
        let gap = calendar(
            1,
            "days",
            "02:30",
            "America/New_York",
            "2026-03-07",
            None,
            None,
            0,
        )
        .unwrap();
        assert_eq!(
            gap.next_after(ms(2026, 3, 8, 0, 0)),
            Some(ms(2026, 3, 8, 7, 0))
        );
        let overlap = calendar(
            1,
            "days",
            "01:30",
            "America/New_York",
            "2026-10-31",
            None,
            None,
            0,
        )
        .unwrap();
        assert_eq!(
            overlap.next_n(ms(2026, 11, 1, 0, 0), 2),
            vec![ms(2026, 11, 1, 5, 30), ms(2026, 11, 2, 6, 30)]
        );
    }

    #[test]
    fn cron_bounds_and_extremes() {
        let s = cron(
            "0 * * * *",
            "UTC",
            Some(ms(2026, 1, 1, 0, 30)),
            Some(ms(2026, 1, 1, 3, 0)),
            0,
        )
        .unwrap();
        assert_eq!(
            s.next_n(i64::MIN, 10),
            vec![
                ms(2026, 1, 1, 1, 0),
                ms(2026, 1, 1, 2, 0),
                ms(2026, 1, 1, 3, 0)
            ]
        );
        let any = cron("* * * * *", "Australia/Lord_Howe", None, None, 5).unwrap();
        assert_eq!(any.next_after(i64::MAX), None);
        assert!(any.next_after(i64::MIN).is_some());
        assert_eq!(any.next_after(MAX_SEC * 1000), None);
    }
}
