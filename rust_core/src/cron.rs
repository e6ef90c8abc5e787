//! Cron expressions: parser, day/time matcher and the next-fire search.
//!
//! The grammar and the matching rules follow Debian/Vixie cron as implemented by the Python
//! package `cronsim` (the test oracle), field by field, including its quirks (`5-5/2` means
//! `5/2`; day-of-month and day-of-week combine with AND when either field starts with `*`,
//! otherwise OR). Extensions, each documented in docs/schedules.md: `?` (same as `*`), `nW`
//! (nearest weekday), `<NAME>L` (last named weekday), `@` macros, and DST "fixed time" handling
//! for 6-field expressions too.

use crate::tz::{
    civil_from_days, days_from_civil, days_in_month, weekday, Zone, MAX_SEC, SECS_PER_DAY,
};

const FIELD_NAMES: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];
const RANGES: [(u32, u32); 6] = [(0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 7)];
const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const MONTH_NAMES: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

const SECOND: usize = 0;
const MINUTE: usize = 1;
const HOUR: usize = 2;
const DOM: usize = 3;
const MONTH: usize = 4;
const DOW: usize = 5;

/// Search horizon in months. The Gregorian calendar repeats every 400 years, and parsing
/// rejects expressions that match no date, so a search this long only ends empty at the edge
/// of the supported range.
const MAX_MONTHS_SEARCHED: u32 = 400 * 12 + 24;

/// The set one field term denotes.
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Items {
    values: u64,
    /// `L` in day-of-month.
    last: bool,
    /// `LW` in day-of-month.
    last_weekday: bool,
    /// `nW` in day-of-month: bit n set.
    nearest: u32,
    /// `nL` in day-of-week: bit n (0..=7) set.
    dow_last: u8,
    /// `d#n` in day-of-week: bit (n - 1) * 8 + d.
    dow_nth: u64,
}

impl Items {
    fn union(self, o: Items) -> Items {
        Items {
            values: self.values | o.values,
            last: self.last || o.last,
            last_weekday: self.last_weekday || o.last_weekday,
            nearest: self.nearest | o.nearest,
            dow_last: self.dow_last | o.dow_last,
            dow_nth: self.dow_nth | o.dow_nth,
        }
    }

    fn only_values(&self) -> bool {
        !self.last
            && !self.last_weekday
            && self.nearest == 0
            && self.dow_last == 0
            && self.dow_nth == 0
    }
}

fn field_err(field: usize, msg: impl std::fmt::Display) -> String {
    format!("cron: {} field: {msg}", FIELD_NAMES[field])
}

/// Parses a run of ASCII digits, saturating (a huge step simply selects the first value,
/// and a huge value is reported as out of range).
fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(s.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

fn value(field: usize, s: &str) -> Result<u32, String> {
    if field == MONTH {
        if let Some(i) = MONTHS.iter().position(|n| *n == s) {
            return Ok(i as u32 + 1);
        }
    }
    if field == DOW {
        if let Some(i) = DAYS.iter().position(|n| *n == s) {
            return Ok(i as u32);
        }
    }
    let (lo, hi) = RANGES[field];
    let v = match digits(s) {
        Some(v) => v,
        None if s.is_empty() => return Err(field_err(field, "empty value")),
        None => return Err(field_err(field, format_args!("invalid value '{s}'"))),
    };
    if v < u64::from(lo) || v > u64::from(hi) {
        return Err(field_err(
            field,
            format_args!("value {v} out of range {lo}-{hi}"),
        ));
    }
    Ok(v as u32)
}

fn full(field: usize) -> u64 {
    let (lo, hi) = RANGES[field];
    (lo..=hi).fold(0, |acc, v| acc | (1u64 << v))
}

fn parse_term(field: usize, s: &str) -> Result<Items, String> {
    if s == "*" {
        return Ok(Items {
            values: full(field),
            ..Items::default()
        });
    }
    if s.contains(',') {
        let mut acc = Items::default();
        for term in s.split(',') {
            acc = acc.union(parse_term(field, term)?);
        }
        return Ok(acc);
    }
    if field == DOW && s.contains('L') {
        let Some(head) = s.strip_suffix('L') else {
            return Err(field_err(field, format_args!("invalid value '{s}'")));
        };
        // cronsim accepts a number before L; a day name (FRIL) is our extension.
        if digits(head).is_none() && !DAYS.contains(&head) {
            return Err(field_err(field, format_args!("invalid value '{s}'")));
        }
        let d = value(field, head)?;
        return Ok(Items {
            dow_last: 1 << d,
            ..Items::default()
        });
    }
    if field == DOW && s.contains('#') {
        let (term, nth) = s.split_once('#').unwrap_or((s, ""));
        let n = digits(nth).ok_or_else(|| field_err(field, format_args!("invalid value '{s}'")))?;
        if !(1..=5).contains(&n) {
            return Err(field_err(
                field,
                format_args!("occurrence #{n} out of range 1-5"),
            ));
        }
        let d = value(field, term)?;
        return Ok(Items {
            dow_nth: 1u64 << ((n as u32 - 1) * 8 + d),
            ..Items::default()
        });
    }
    if let Some((term, step)) = s.split_once('/') {
        let step = match digits(step) {
            Some(0) => return Err(field_err(field, "step must be >= 1")),
            Some(n) => n,
            None => return Err(field_err(field, format_args!("invalid step '{step}'"))),
        };
        let items = parse_term(field, term)?;
        let only_last = Items {
            last: true,
            ..Items::default()
        };
        let only_lw = Items {
            last_weekday: true,
            ..Items::default()
        };
        if items == only_last || items == only_lw {
            return Ok(items);
        }
        if !items.only_values() {
            return Err(field_err(
                field,
                format_args!("'{term}' cannot take a step"),
            ));
        }
        let mut values = 0u64;
        if items.values.count_ones() == 1 {
            // A single start value runs to the end of the field's range (`a/n`, and `a-a/n`).
            let start = items.values.trailing_zeros();
            let mut v = u64::from(start);
            while v <= u64::from(RANGES[field].1) {
                values |= 1 << v;
                v = v.saturating_add(step);
            }
        } else {
            let mut rest = items.values;
            let mut i = 0u64;
            while rest != 0 {
                let v = rest.trailing_zeros();
                rest &= rest - 1;
                if i.is_multiple_of(step) {
                    values |= 1 << v;
                }
                i += 1;
            }
        }
        return Ok(Items {
            values,
            ..Items::default()
        });
    }
    if let Some((a, b)) = s.split_once('-') {
        let a = value(field, a)?;
        let b = value(field, b)?;
        if b < a {
            return Err(field_err(field, format_args!("reversed range {a}-{b}")));
        }
        let values = (a..=b).fold(0u64, |acc, v| acc | (1 << v));
        return Ok(Items {
            values,
            ..Items::default()
        });
    }
    if field == DOM && s == "LW" {
        return Ok(Items {
            last_weekday: true,
            ..Items::default()
        });
    }
    if field == DOM && s == "L" {
        return Ok(Items {
            last: true,
            ..Items::default()
        });
    }
    if field == DOM {
        if let Some(day) = s.strip_suffix('W') {
            if digits(day).is_some() {
                let d = value(field, day)?;
                return Ok(Items {
                    nearest: 1 << d,
                    ..Items::default()
                });
            }
        }
    }
    let v = value(field, s)?;
    Ok(Items {
        values: 1 << v,
        ..Items::default()
    })
}

/// A parsed cron expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    /// Bits 1..=12.
    months: u64,
    dom: u32,
    dom_last: bool,
    dom_last_weekday: bool,
    dom_nearest: u32,
    /// Bits 0..=6, Sunday = 0 (7 is folded into 0).
    dow: u8,
    dow_last: u8,
    /// Bit (n - 1) * 8 + d for "the n-th weekday d of the month".
    dow_nth: u64,
    /// Day-of-month AND day-of-week (either field starts with `*`), else OR.
    day_and: bool,
    /// Minute and hour both name fixed values (neither starts with `*`): DST gaps move the fire
    /// to the end of the gap and overlaps fire once, as Debian cron does.
    fixed_time: bool,
}

fn fold_dow(bits: u64) -> u8 {
    ((bits & 0x7f) | ((bits >> 7) & 1)) as u8
}

fn fold_dow8(bits: u8) -> u8 {
    (bits & 0x7f) | (bits >> 7)
}

fn fold_nth(bits: u64) -> u64 {
    let mut out = 0u64;
    for n in 0..5 {
        let byte = ((bits >> (n * 8)) & 0xff) as u8;
        out |= u64::from(fold_dow8(byte)) << (n * 8);
    }
    out
}

fn expand_macro(expr: &str) -> Result<&'static str, String> {
    Ok(match expr.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => return Err("cron: @reboot is not supported".into()),
        _ => return Err(format!("cron: unknown macro '{expr}'")),
    })
}

/// Next set bit at or above `from`.
#[inline]
fn next_bit(mask: u64, from: u32) -> Option<u32> {
    if from >= 64 {
        return None;
    }
    let m = mask & (!0u64 << from);
    (m != 0).then(|| m.trailing_zeros())
}

impl Cron {
    /// Parses a 5-field (`min hour dom mon dow`) or 6-field (seconds first) expression or an
    /// `@` macro. Every schedule that can never fire is rejected here.
    pub fn parse(expression: &str) -> Result<Cron, String> {
        let trimmed = expression.trim();
        let text = if trimmed.starts_with('@') {
            expand_macro(trimmed)?.to_string()
        } else {
            trimmed.to_ascii_uppercase().replace('?', "*")
        };
        let mut parts: Vec<&str> = text.split_whitespace().collect();
        match parts.len() {
            5 => parts.insert(0, "0"),
            6 => {}
            n => return Err(format!("cron: expected 5 or 6 fields, got {n}")),
        }
        let mut items = [Items::default(); 6];
        for (field, part) in parts.iter().enumerate() {
            items[field] = parse_term(field, part)?;
        }
        let cron = Cron {
            seconds: items[SECOND].values,
            minutes: items[MINUTE].values,
            hours: items[HOUR].values,
            months: items[MONTH].values,
            dom: items[DOM].values as u32,
            dom_last: items[DOM].last,
            dom_last_weekday: items[DOM].last_weekday,
            dom_nearest: items[DOM].nearest,
            dow: fold_dow(items[DOW].values),
            dow_last: fold_dow8(items[DOW].dow_last),
            dow_nth: fold_nth(items[DOW].dow_nth),
            day_and: parts[DOM].starts_with('*') || parts[DOW].starts_with('*'),
            fixed_time: !parts[MINUTE].starts_with('*') && !parts[HOUR].starts_with('*'),
        };
        cron.check_can_fire()?;
        Ok(cron)
    }

    /// Whether wall-clock fixed-time DST rules apply (see [`Cron::fixed_time`]).
    pub fn is_fixed_time(&self) -> bool {
        self.fixed_time
    }

    fn check_can_fire(&self) -> Result<(), String> {
        // Every (month, length, weekday of the 1st) combination occurs in the 400-year cycle,
        // so the expression fires iff one of them has a matching day.
        for m in 1..=12u32 {
            if self.months & (1 << m) == 0 {
                continue;
            }
            let lengths: &[u32] = match m {
                2 => &[28, 29],
                4 | 6 | 9 | 11 => &[30],
                _ => &[31],
            };
            for &len in lengths {
                for first in 0..7 {
                    if self.day_mask_for(len, first) != 0 {
                        return Ok(());
                    }
                }
            }
        }
        let plain_dom_only = !self.dom_last && !self.dom_last_weekday && self.dom_nearest == 0;
        let day = self.dom.trailing_zeros();
        let selected = || (1..=12u32).filter(|m| self.months & (1 << m) != 0);
        let longest = selected()
            .map(|m| days_in_month(2000, m))
            .max()
            .unwrap_or(31);
        if self.day_and && plain_dom_only && self.dom != 0 && day > longest {
            let months: Vec<&str> = selected().map(|m| MONTH_NAMES[m as usize - 1]).collect();
            let list = match months.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => months.join(""),
            };
            return Err(format!(
                "cron: schedule can never fire: day {day} does not exist in {list}"
            ));
        }
        Err(
            "cron: schedule can never fire: no date matches both day-of-month and day-of-week"
                .into(),
        )
    }

    /// Matching days (bit d for day d) of a month with `len` days whose 1st is weekday `first`.
    fn day_mask_for(&self, len: u32, first: u32) -> u32 {
        let full = ((1u64 << (len + 1)) - 2) as u32;
        let weekday_of = |d: u32| (first + d - 1) % 7;
        let mut dom = self.dom & full;
        if self.dom_last {
            dom |= 1 << len;
        }
        if self.dom_last_weekday {
            let d = match weekday_of(len) {
                0 => len - 2,
                6 => len - 1,
                _ => len,
            };
            dom |= 1 << d;
        }
        let mut nearest = self.dom_nearest;
        while nearest != 0 {
            let n = nearest.trailing_zeros();
            nearest &= nearest - 1;
            if n > len {
                continue;
            }
            let d = match weekday_of(n) {
                6 if n == 1 => 3,
                6 => n - 1,
                0 if n == len => n - 2,
                0 => n + 1,
                _ => n,
            };
            dom |= 1 << d;
        }
        let mut dow = 0u64;
        const EVERY_WEEK: u64 = 1 | 1 << 7 | 1 << 14 | 1 << 21 | 1 << 28;
        for w in 0..7u32 {
            let d0 = 1 + (w + 7 - first) % 7;
            if self.dow & (1 << w) != 0 {
                dow |= EVERY_WEEK << d0;
            }
            if self.dow_last & (1 << w) != 0 {
                dow |= 1 << (d0 + 7 * ((len - d0) / 7));
            }
            for n in 0..5u32 {
                if self.dow_nth & (1 << (n * 8 + w)) != 0 {
                    dow |= 1 << (d0 + 7 * n);
                }
            }
        }
        let dow = (dow & u64::from(full)) as u32;
        if self.day_and {
            dom & dow
        } else {
            dom | dow
        }
    }

    fn day_mask(&self, y: i64, m: u32) -> u32 {
        let len = days_in_month(y, m);
        let first = weekday(days_from_civil(y, m, 1));
        self.day_mask_for(len, first)
    }

    /// First second-of-day at or after `sod` whose hour, minute and second match.
    fn next_time_of_day(&self, sod: u32) -> Option<u32> {
        let (mut h, mut mi, mut s) = (sod / 3600, sod / 60 % 60, sod % 60);
        loop {
            let nh = next_bit(self.hours, h)?;
            if nh != h {
                (h, mi, s) = (nh, 0, 0);
            }
            let Some(nm) = next_bit(self.minutes, mi) else {
                (h, mi, s) = (h + 1, 0, 0);
                continue;
            };
            if nm != mi {
                (mi, s) = (nm, 0);
            }
            let Some(ns) = next_bit(self.seconds, s) else {
                (mi, s) = (mi + 1, 0);
                continue;
            };
            return Some(h * 3600 + mi * 60 + ns);
        }
    }

    /// First matching wall-clock second `w` with `from <= w < until`.
    pub fn next_wall(&self, from: i64, until: i64) -> Option<i64> {
        let mut day = from.div_euclid(SECS_PER_DAY);
        let mut sod = from.rem_euclid(SECS_PER_DAY) as u32;
        let (mut y, mut m, mut d) = civil_from_days(day);
        let mut months_seen = 0u32;
        loop {
            if day.saturating_mul(SECS_PER_DAY) >= until || months_seen > MAX_MONTHS_SEARCHED {
                return None;
            }
            let mask = if self.months & (1 << m) != 0 {
                self.day_mask(y, m) & !((1u32 << d) - 1)
            } else {
                0
            };
            if mask == 0 {
                // Nothing left this month: first day of the next month in the set.
                (y, m) = match next_bit(self.months, m + 1) {
                    Some(nm) => (y, nm),
                    None => (y + 1, self.months.trailing_zeros()),
                };
                d = 1;
                sod = 0;
                day = days_from_civil(y, m, 1);
                months_seen += 1;
                continue;
            }
            let nd = mask.trailing_zeros();
            if nd != d {
                day += i64::from(nd - d);
                d = nd;
                sod = 0;
            }
            if let Some(t) = self.next_time_of_day(sod) {
                let w = day * SECS_PER_DAY + i64::from(t);
                return (w < until).then_some(w);
            }
            // No time left today: continue from the next day's midnight.
            day += 1;
            sod = 0;
            if d >= days_in_month(y, m) {
                (y, m, d) = civil_from_days(day);
                months_seen += 1;
            } else {
                d += 1;
            }
        }
    }

    /// First fire instant (seconds) at or after instant `from`, in `zone`.
    pub fn next_fire(&self, zone: &Zone, from: i64) -> Option<i64> {
        let limit = MAX_SEC + SECS_PER_DAY;
        let t = if self.fixed_time {
            // Search in wall time, then map the wall time to an instant (gap -> end of gap,
            // overlap -> first occurrence).
            let w = self.next_wall(zone.fixed_search_start(from), limit)?;
            zone.resolve_wall(w)
        } else {
            // Real-time matching: within each constant-offset segment wall and real time move
            // together, so search the segment's wall range and convert with its offset.
            let mut seg = zone.segment_of(from);
            let mut from = from;
            loop {
                let off = zone.segment_offset(seg);
                let end = zone.segment_end(seg);
                let until = end.map_or(limit, |e| (e + off).min(limit));
                if let Some(w) = self.next_wall(from + off, until) {
                    break w - off;
                }
                from = end?;
                seg += 1;
            }
        };
        (t <= MAX_SEC).then_some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tz::{test_zone as zone, Zone};

    fn err(expr: &str) -> String {
        Cron::parse(expr).unwrap_err()
    }

    #[test]
    fn parse_errors_have_clear_messages() {
        assert_eq!(err("* * *"), "cron: expected 5 or 6 fields, got 3");
        assert_eq!(err(""), "cron: expected 5 or 6 fields, got 0");
        assert_eq!(
            err("61 * * * *"),
            "cron: minute field: value 61 out of range 0-59"
        );
        assert_eq!(
            err("0 0 20-10 * *"),
            "cron: day-of-month field: reversed range 20-10"
        );
        assert_eq!(
            err("0 0 30 2 *"),
            "cron: schedule can never fire: day 30 does not exist in February"
        );
        assert_eq!(
            err("0 0 31 4,6 *"),
            "cron: schedule can never fire: day 31 does not exist in April or June"
        );
        assert_eq!(err("@reboot"), "cron: @reboot is not supported");
        assert_eq!(err("*/0 * * * *"), "cron: minute field: step must be >= 1");
        assert_eq!(
            err("0 0 * * 1#6"),
            "cron: day-of-week field: occurrence #6 out of range 1-5"
        );
        assert_eq!(
            err("0 0 0 * *"),
            "cron: day-of-month field: value 0 out of range 1-31"
        );
        assert_eq!(err("0 0 * * MON-"), "cron: day-of-week field: empty value");
        assert_eq!(err("0 0 * FOO *"), "cron: month field: invalid value 'FOO'");
        assert!(err("0 0 L * 5L/2").starts_with("cron: day-of-week field"));
        assert_eq!(
            err("0 0 */3 2 5#5"),
            "cron: schedule can never fire: no date matches both day-of-month and day-of-week"
        );
    }

    #[test]
    fn parse_fields() {
        let c = Cron::parse("*/15 9-17 * jan,Jul mon-fri").unwrap();
        assert_eq!(c.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
        assert_eq!(c.hours, (9..=17).fold(0, |a, h| a | 1 << h));
        assert_eq!(c.months, 1 << 1 | 1 << 7);
        assert_eq!(c.dow, 0b011_1110);
        assert!(c.day_and);
        assert!(!c.fixed_time);
        // 7 and 0 are both Sunday; `a/n` runs to the end of the range; `5-5/2` acts like `5/2`.
        assert_eq!(Cron::parse("0 0 * * 7").unwrap().dow, 1);
        assert_eq!(
            Cron::parse("5/20 * * * *").unwrap().minutes,
            1 << 5 | 1 << 25 | 1 << 45
        );
        assert_eq!(
            Cron::parse("5-5/20 * * * *").unwrap().minutes,
            1 << 5 | 1 << 25 | 1 << 45
        );
        assert_eq!(
            Cron::parse("1-10/3 * * * *").unwrap().minutes,
            1 << 1 | 1 << 4 | 1 << 7 | 1 << 10
        );
        // A huge step selects only the start.
        assert_eq!(
            Cron::parse("5/99999999999999999999999 * * * *")
                .unwrap()
                .minutes,
            1 << 5
        );
        assert_eq!(
            Cron::parse("*/99999999999999999999999 * * * *")
                .unwrap()
                .minutes,
            1
        );
        // Six fields: seconds first.
        assert_eq!(
            Cron::parse("*/20 * * * * *").unwrap().seconds,
            1 | 1 << 20 | 1 << 40
        );
        assert_eq!(
            Cron::parse("@daily").unwrap(),
            Cron::parse("0 0 * * *").unwrap()
        );
        assert_eq!(
            Cron::parse("0 0 ? * MON").unwrap(),
            Cron::parse("0 0 * * MON").unwrap()
        );
        assert_eq!(
            Cron::parse("0 0 * * FRIL").unwrap(),
            Cron::parse("0 0 * * 5L").unwrap()
        );
    }

    fn utc_ts(y: i64, mo: u32, d: u32, h: i64, mi: i64) -> i64 {
        days_from_civil(y, mo, d) * SECS_PER_DAY + h * 3600 + mi * 60
    }

    fn next_utc(expr: &str, from: i64) -> i64 {
        Cron::parse(expr)
            .unwrap()
            .next_fire(&Zone::utc(), from)
            .unwrap()
    }

    #[test]
    fn special_days() {
        // 2026-02: Feb 1 is a Sunday, 28 days; last day Saturday 28th.
        let from = utc_ts(2026, 2, 1, 0, 0);
        assert_eq!(next_utc("0 0 L * *", from), utc_ts(2026, 2, 28, 0, 0));
        assert_eq!(next_utc("0 0 LW * *", from), utc_ts(2026, 2, 27, 0, 0));
        // The 15th is a Sunday: nearest weekday is Monday the 16th.
        assert_eq!(next_utc("0 0 15W * *", from), utc_ts(2026, 2, 16, 0, 0));
        // 1st is a Sunday -> Monday 2nd (never crosses into the previous month).
        assert_eq!(next_utc("0 0 1W * *", from), utc_ts(2026, 2, 2, 0, 0));
        assert_eq!(next_utc("0 0 * * 5L", from), utc_ts(2026, 2, 27, 0, 0));
        assert_eq!(next_utc("0 0 * * 5#2", from), utc_ts(2026, 2, 13, 0, 0));
        assert_eq!(next_utc("0 0 * * FRI#2", from), utc_ts(2026, 2, 13, 0, 0));
        // OR semantics when neither day field starts with '*': the 13th or any Friday.
        assert_eq!(next_utc("0 0 13 * 5", from), utc_ts(2026, 2, 6, 0, 0));
        // AND semantics when one does: Friday the 13th.
        assert_eq!(next_utc("0 0 13 * */7,5", from), utc_ts(2026, 2, 13, 0, 0));
        // 29 February on a Sunday: 2032.
        assert_eq!(next_utc("0 0 29 2 */7", from), utc_ts(2032, 2, 29, 0, 0));
    }

    #[test]
    fn macros_and_seconds() {
        let from = utc_ts(2026, 5, 17, 10, 30);
        assert_eq!(next_utc("@hourly", from), utc_ts(2026, 5, 17, 11, 0));
        assert_eq!(next_utc("@daily", from), utc_ts(2026, 5, 18, 0, 0));
        assert_eq!(next_utc("@weekly", from), utc_ts(2026, 5, 24, 0, 0));
        assert_eq!(next_utc("@monthly", from), utc_ts(2026, 6, 1, 0, 0));
        assert_eq!(next_utc("@yearly", from), utc_ts(2027, 1, 1, 0, 0));
        assert_eq!(next_utc("@annually", from), utc_ts(2027, 1, 1, 0, 0));
        assert_eq!(next_utc("@midnight", from), utc_ts(2026, 5, 18, 0, 0));
        assert_eq!(next_utc("*/10 * * * * *", from + 1), from + 10);
        assert_eq!(
            next_utc("59 59 23 31 12 *", from),
            utc_ts(2026, 12, 31, 23, 59) + 59
        );
    }

    fn fires(expr: &str, tz: &str, from: i64, n: usize) -> Vec<i64> {
        let c = Cron::parse(expr).unwrap();
        let z = zone(tz);
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            let f = c.next_fire(&z, t).unwrap();
            out.push(f);
            t = f + 1;
        }
        out
    }

    #[test]
    fn new_york_spring_forward() {
        // 2026-03-08: 02:00 EST -> 03:00 EDT (07:00Z).
        let from = utc_ts(2026, 3, 7, 12, 0);
        // Fixed 02:30 fires at 03:00 EDT on the 8th, 02:30 EDT the next days.
        assert_eq!(
            fires("30 2 * * *", "America/New_York", from, 3),
            vec![
                utc_ts(2026, 3, 8, 7, 0),
                utc_ts(2026, 3, 9, 6, 30),
                utc_ts(2026, 3, 10, 6, 30)
            ]
        );
        // Wildcard minutes skip the missing hour.
        assert_eq!(
            fires(
                "*/30 * * * *",
                "America/New_York",
                utc_ts(2026, 3, 8, 6, 15),
                3
            ),
            vec![
                utc_ts(2026, 3, 8, 6, 30),
                utc_ts(2026, 3, 8, 7, 0),
                utc_ts(2026, 3, 8, 7, 30)
            ]
        );
        // Searching from the very end of the gap still finds the moved fire.
        assert_eq!(
            fires(
                "30 2 * * *",
                "America/New_York",
                utc_ts(2026, 3, 8, 7, 0),
                1
            ),
            vec![utc_ts(2026, 3, 8, 7, 0)]
        );
        // Six-field fixed times follow the same rule.
        assert_eq!(
            fires(
                "0 30 2 * * *",
                "America/New_York",
                utc_ts(2026, 3, 8, 0, 0),
                1
            ),
            vec![utc_ts(2026, 3, 8, 7, 0)]
        );
    }

    #[test]
    fn new_york_fall_back() {
        // 2026-11-01: 02:00 EDT -> 01:00 EST (06:00Z).
        let from = utc_ts(2026, 11, 1, 4, 0);
        assert_eq!(
            fires("30 1 * * *", "America/New_York", from, 2),
            vec![utc_ts(2026, 11, 1, 5, 30), utc_ts(2026, 11, 2, 6, 30)]
        );
        assert_eq!(
            fires(
                "*/30 * * * *",
                "America/New_York",
                utc_ts(2026, 11, 1, 4, 45),
                5
            ),
            vec![
                utc_ts(2026, 11, 1, 5, 0),
                utc_ts(2026, 11, 1, 5, 30),
                utc_ts(2026, 11, 1, 6, 0),
                utc_ts(2026, 11, 1, 6, 30),
                utc_ts(2026, 11, 1, 7, 0)
            ]
        );
        // Searching from inside the second pass, or from its very start, never returns the
        // first pass.
        let c = Cron::parse("30 1 * * *").unwrap();
        let z = zone("America/New_York");
        assert_eq!(
            c.next_fire(&z, utc_ts(2026, 11, 1, 6, 0)),
            Some(utc_ts(2026, 11, 2, 6, 30))
        );
        assert_eq!(
            c.next_fire(&z, utc_ts(2026, 11, 1, 6, 15)),
            Some(utc_ts(2026, 11, 2, 6, 30))
        );
    }

    #[test]
    fn london_transitions() {
        // 2026-03-29 01:00Z: GMT -> BST; 2026-10-25 01:00Z: BST -> GMT.
        assert_eq!(
            fires("30 1 * * *", "Europe/London", utc_ts(2026, 3, 29, 0, 0), 1),
            vec![utc_ts(2026, 3, 29, 1, 0)]
        );
        assert_eq!(
            fires(
                "0 * * * *",
                "Europe/London",
                utc_ts(2026, 10, 24, 23, 30),
                3
            ),
            vec![
                utc_ts(2026, 10, 25, 0, 0),
                utc_ts(2026, 10, 25, 1, 0),
                utc_ts(2026, 10, 25, 2, 0)
            ]
        );
        assert_eq!(
            fires(
                "15 1 * * *",
                "Europe/London",
                utc_ts(2026, 10, 24, 23, 30),
                2
            ),
            vec![utc_ts(2026, 10, 25, 0, 15), utc_ts(2026, 10, 26, 1, 15)]
        );
    }

    #[test]
    fn lord_howe_half_hour_shift() {
        // Lord Howe: +10:30 standard, +11:00 summer. 2026-10-04 02:00 -> 02:30 (15:30Z Oct 3);
        // 2026-04-05 02:00 -> 01:30 (15:00Z Apr 4).
        let z = "Australia/Lord_Howe";
        assert_eq!(
            fires("15 2 * * *", z, utc_ts(2026, 10, 3, 12, 0), 1),
            vec![utc_ts(2026, 10, 3, 15, 30)]
        );
        assert_eq!(
            fires("*/20 * * * *", z, utc_ts(2026, 10, 3, 15, 15), 3),
            vec![
                utc_ts(2026, 10, 3, 15, 40),
                utc_ts(2026, 10, 3, 16, 0),
                utc_ts(2026, 10, 3, 16, 20)
            ]
        );
        // Fall back: 01:45 happens twice; fixed fires once, wildcard fires in both passes.
        assert_eq!(
            fires("45 1 * * *", z, utc_ts(2026, 4, 4, 12, 0), 2),
            vec![utc_ts(2026, 4, 4, 14, 45), utc_ts(2026, 4, 5, 15, 15)]
        );
        assert_eq!(
            fires("45 * * * *", z, utc_ts(2026, 4, 4, 14, 0), 3),
            vec![
                utc_ts(2026, 4, 4, 14, 45),
                utc_ts(2026, 4, 4, 15, 15),
                utc_ts(2026, 4, 4, 16, 15)
            ]
        );
    }

    #[test]
    fn dst_rules_hold_in_far_years() {
        // Issue 15: past 2099 the old tables had no transitions; Berlin keeps CEST in July 2100.
        assert_eq!(
            fires("0 12 * * *", "Europe/Berlin", utc_ts(2100, 7, 1, 0, 0), 1),
            vec![utc_ts(2100, 7, 1, 10, 0)]
        );
        // 9999-03-14 is New York's second Sunday of March: 02:30 moves to the end of the gap,
        // and on 9999-11-07 01:30 fires once, at its first pass (EDT).
        assert_eq!(
            fires(
                "30 2 * * *",
                "America/New_York",
                utc_ts(9999, 3, 13, 12, 0),
                2
            ),
            vec![utc_ts(9999, 3, 14, 7, 0), utc_ts(9999, 3, 15, 6, 30)]
        );
        assert_eq!(
            fires(
                "30 1 * * *",
                "America/New_York",
                utc_ts(9999, 11, 6, 12, 0),
                2
            ),
            vec![utc_ts(9999, 11, 7, 5, 30), utc_ts(9999, 11, 8, 6, 30)]
        );
        assert_eq!(
            fires(
                "*/30 * * * *",
                "America/New_York",
                utc_ts(9999, 11, 7, 4, 45),
                4
            ),
            vec![
                utc_ts(9999, 11, 7, 5, 0),
                utc_ts(9999, 11, 7, 5, 30),
                utc_ts(9999, 11, 7, 6, 0),
                utc_ts(9999, 11, 7, 6, 30)
            ]
        );
    }

    #[test]
    fn edges_of_the_supported_range() {
        let c = Cron::parse("* * * * *").unwrap();
        let z = zone("America/New_York");
        assert_eq!(c.next_fire(&z, MAX_SEC + 1), None);
        assert!(c.next_fire(&z, MAX_SEC - 600).is_some());
        assert!(c.next_fire(&z, crate::tz::MIN_SEC).is_some());
    }
}
