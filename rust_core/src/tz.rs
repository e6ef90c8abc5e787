//! Time-zone offsets as explicit transition tables, and proleptic Gregorian date arithmetic.
//!
//! chrono-tz answers "what is the offset at instant t" but does not expose its transitions, and
//! the cron and calendar searches need them: within one stretch of constant offset, wall time and
//! real time move together, so a search can run on wall-clock fields and convert once. The table
//! is recovered from chrono-tz once per zone (sampling every 7 days and bisecting each change to
//! the second, about a millisecond per zone) and cached for the life of the process. No zone has
//! two transitions within 7 days that cancel out (which sampling would miss): the ignored test
//! `scan_check` compares against hourly sampling for every zone; run it after bumping chrono-tz
//! (`cargo test --release scan_check -- --ignored`).
//!
//! All instants here are whole seconds since the Unix epoch; "wall" values are local wall-clock
//! seconds counted the same way (wall = instant + offset).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Offset, TimeZone};
use chrono_tz::Tz;

pub const SECS_PER_DAY: i64 = 86_400;
/// 0001-01-01T00:00:00Z, the first instant the schedules support.
pub const MIN_SEC: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the last instant the schedules support.
pub const MAX_SEC: i64 = 253_402_300_799;

/// Transitions are recovered over this span; outside it the nearest known offset holds
/// (chrono-tz itself has no transitions after 2099).
const SCAN_FROM: i64 = -5_364_662_400; // 1800-01-01
const SCAN_TO: i64 = 4_102_444_800; // 2100-01-01
const SCAN_STEP: i64 = 7 * SECS_PER_DAY;

/// One IANA zone as a list of offset changes.
#[derive(Debug)]
pub struct Zone {
    tz: Tz,
    /// Instants (UTC seconds) at which the offset changes, ascending.
    transitions: Vec<i64>,
    /// `offsets[i]` holds from `transitions[i - 1]` (or the beginning of time) up to
    /// `transitions[i]` (or forever); one more entry than `transitions`.
    offsets: Vec<i32>,
}

fn chrono_offset(tz: Tz, t: i64) -> i32 {
    // Only called inside the scan span, where from_timestamp cannot fail.
    match DateTime::from_timestamp(t, 0) {
        Some(dt) => tz
            .offset_from_utc_datetime(&dt.naive_utc())
            .fix()
            .local_minus_utc(),
        None => 0,
    }
}

impl Zone {
    fn build(tz: Tz) -> Zone {
        Self::build_with_step(tz, SCAN_STEP)
    }

    fn build_with_step(tz: Tz, step: i64) -> Zone {
        let mut transitions = Vec::new();
        let mut offsets = vec![chrono_offset(tz, SCAN_FROM)];
        let mut t = SCAN_FROM;
        let mut current = offsets[0];
        while t < SCAN_TO {
            let next = t + step;
            let off = chrono_offset(tz, next);
            if off != current {
                // Bisect to the first second carrying the new offset.
                let (mut lo, mut hi) = (t, next);
                while hi - lo > 1 {
                    let mid = lo + (hi - lo) / 2;
                    if chrono_offset(tz, mid) == current {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                transitions.push(hi);
                offsets.push(off);
                current = off;
            }
            t = next;
        }
        Zone {
            tz,
            transitions,
            offsets,
        }
    }

    /// The IANA name, e.g. `Europe/Berlin`.
    pub fn name(&self) -> &'static str {
        self.tz.name()
    }

    /// Index of the constant-offset segment containing instant `t`.
    #[inline]
    pub fn segment_of(&self, t: i64) -> usize {
        self.transitions.partition_point(|&x| x <= t)
    }

    #[inline]
    pub fn segment_offset(&self, seg: usize) -> i64 {
        i64::from(self.offsets[seg])
    }

    /// First instant of segment `seg` (None for the first segment).
    #[inline]
    pub fn segment_start(&self, seg: usize) -> Option<i64> {
        seg.checked_sub(1).map(|i| self.transitions[i])
    }

    /// First instant after segment `seg` (None for the last segment).
    #[inline]
    pub fn segment_end(&self, seg: usize) -> Option<i64> {
        self.transitions.get(seg).copied()
    }

    #[inline]
    pub fn offset_at(&self, t: i64) -> i64 {
        self.segment_offset(self.segment_of(t))
    }

    /// Wall-clock seconds of instant `t`.
    #[inline]
    pub fn wall_of(&self, t: i64) -> i64 {
        t + self.offset_at(t)
    }

    /// The instant a wall-clock time denotes: the first occurrence when the wall time repeats
    /// (fall-back overlap) and the first instant after the gap when it does not exist
    /// (spring-forward gap).
    pub fn resolve_wall(&self, w: i64) -> i64 {
        let n = self.transitions.len();
        // Wall-clock ends of the segments increase (every segment is longer than the offset
        // change that ends it), so the first segment whose wall range ends after `w` is found
        // by bisection.
        let mut lo = 0usize;
        let mut hi = n;
        while lo < hi {
            let mid = (lo + hi) / 2;
            if self.transitions[mid] + i64::from(self.offsets[mid]) <= w {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        let seg = lo;
        let off = self.segment_offset(seg);
        match self.segment_start(seg) {
            Some(start) if w < start + off => start,
            _ => w - off,
        }
    }

    /// Where a "fixed wall time" search for fires at or after instant `t` must begin, in wall
    /// time.
    ///
    /// Normally the wall time of `t`. When `t` is exactly the end of a spring-forward gap, the
    /// gap's wall times resolve to `t` itself, so the search starts at the beginning of the gap.
    /// When `t` lies in the second pass of a fall-back overlap, wall times up to the end of the
    /// overlap already happened (their first occurrence is before `t`), so the search starts
    /// where the overlap ends.
    pub fn fixed_search_start(&self, t: i64) -> i64 {
        let seg = self.segment_of(t);
        let w = t + self.segment_offset(seg);
        if let Some(start) = self.segment_start(seg) {
            // The wall time at which the previous segment ended: the start of a gap that ends
            // at `start`, or the end of an overlap that begins at `start`.
            let prev_wall_end = start + self.segment_offset(seg - 1);
            if t == start || w < prev_wall_end {
                return prev_wall_end;
            }
        }
        w
    }
}

/// Looks up an IANA zone by its exact name; the table is built once per zone and shared.
pub fn zone(name: &str) -> Result<Arc<Zone>, String> {
    let tz: Tz = name
        .parse()
        .map_err(|_| format!("unknown time zone '{name}'"))?;
    Ok(zone_for(tz))
}

pub fn zone_for(tz: Tz) -> Arc<Zone> {
    static CACHE: OnceLock<Mutex<HashMap<Tz, Arc<Zone>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(z) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(&tz) {
        return Arc::clone(z);
    }
    // Build outside the lock: a few milliseconds, and two racing builders agree.
    let built = Arc::new(Zone::build(tz));
    let mut guard = cache.lock().unwrap_or_else(|e| e.into_inner());
    Arc::clone(guard.entry(tz).or_insert(built))
}

pub fn utc() -> Arc<Zone> {
    zone_for(Tz::UTC)
}

// ---- civil dates (proleptic Gregorian), days counted from 1970-01-01 ----

pub fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

pub fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of the given date (valid for any year that fits comfortably in i64).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Day of week of a day count, 0 = Sunday.
#[inline]
pub fn weekday(days: i64) -> u32 {
    (days + 4).rem_euclid(7) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for z in [-719_468i64, -1, 0, 1, 11_016, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(weekday(0), 4);
        assert_eq!(days_from_civil(1, 1, 1) * SECS_PER_DAY, MIN_SEC);
    }

    #[test]
    fn new_york_transitions_2026() {
        let z = zone("America/New_York").unwrap();
        // 2026-03-08 07:00Z: EST -> EDT; 2026-11-01 06:00Z: EDT -> EST.
        assert_eq!(z.offset_at(1_772_953_199), -5 * 3600);
        assert_eq!(z.offset_at(1_772_953_200), -4 * 3600);
        assert_eq!(z.offset_at(1_793_512_799), -4 * 3600);
        assert_eq!(z.offset_at(1_793_512_800), -5 * 3600);
        // 02:30 on 2026-03-08 does not exist: the gap ends at 03:00 EDT (07:00Z).
        let wall_0230 = days_from_civil(2026, 3, 8) * SECS_PER_DAY + 2 * 3600 + 1800;
        assert_eq!(z.resolve_wall(wall_0230), 1_772_953_200);
        // 01:30 on 2026-11-01 happens twice: the first is 01:30 EDT (05:30Z).
        let wall_0130 = days_from_civil(2026, 11, 1) * SECS_PER_DAY + 3600 + 1800;
        assert_eq!(z.resolve_wall(wall_0130), 1_793_511_000);
        // Fixed-time searches: from the gap's end, the gap's wall times still count; from the
        // start of the second pass (or inside it), the overlap's wall times are over.
        let wall_0200 = days_from_civil(2026, 3, 8) * SECS_PER_DAY + 2 * 3600;
        assert_eq!(z.fixed_search_start(1_772_953_200), wall_0200);
        let wall_nov_0200 = days_from_civil(2026, 11, 1) * SECS_PER_DAY + 2 * 3600;
        assert_eq!(z.fixed_search_start(1_793_512_800), wall_nov_0200);
        assert_eq!(z.fixed_search_start(1_793_512_800 + 60), wall_nov_0200);
        assert_eq!(z.fixed_search_start(1_793_512_799), wall_nov_0200 - 1);
    }

    #[test]
    fn unknown_zone() {
        assert_eq!(
            zone("Mars/Base").unwrap_err(),
            "unknown time zone 'Mars/Base'"
        );
    }
}

#[cfg(test)]
mod scan_check {
    use super::*;

    /// Weekly sampling finds exactly the transitions hourly sampling finds, in every zone.
    #[test]
    #[ignore = "slow (about a minute); run after updating chrono-tz"]
    fn weekly_sampling_misses_no_transition() {
        let missed: Vec<&str> = chrono_tz::TZ_VARIANTS
            .iter()
            .filter(|&&tz| {
                Zone::build_with_step(tz, SCAN_STEP).transitions
                    != Zone::build_with_step(tz, 3_600).transitions
            })
            .map(|tz| tz.name())
            .collect();
        assert!(missed.is_empty(), "{missed:?}");
    }
}
