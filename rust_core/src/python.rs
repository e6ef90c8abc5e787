//! Python bindings: the `schedsvc._timing` extension module.
//!
//! Zones come from Python: the first schedule in a zone asks `schedsvc.timing.zonedb` for its
//! TZif bytes (read where `zoneinfo` reads them), and the zone built from them is kept for the
//! life of the process.
//!
//! Every validation failure is a `ValueError`; integers outside 64 bits are reported as
//! `ValueError` too (not `OverflowError`), so callers catch one exception type. Batch calls
//! (`next_fires`, `insert_many`, `cancel_many`, `pop_due`, long `next_n`/`fires_between`)
//! release the GIL while they compute.

use std::sync::{Arc, LazyLock, Mutex, MutexGuard};

use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyOverflowError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyInt, PyList, PyString, PyTuple};

use crate::schedule;
use crate::tz::{Zone, ZoneCache};
use crate::wheel;
use crate::NO_FIRE;

/// Largest `count` / `limit` accepted by `next_n` and `fires_between`.
const MAX_BATCH: i64 = 1_000_000;
/// Above this many results, `next_n` / `fires_between` compute without the GIL.
const DETACH_ABOVE: usize = 64;

fn value_error(msg: impl Into<String>) -> PyErr {
    PyValueError::new_err(msg.into())
}

/// A Python int that must fit in i64; overflow becomes a ValueError.
struct I64(i64);

impl<'a, 'py> FromPyObject<'a, 'py> for I64 {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        match obj.extract::<i64>() {
            Ok(v) => Ok(I64(v)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => Err(value_error(
                "integer out of range for a signed 64-bit value",
            )),
            Err(e) => Err(e),
        }
    }
}

/// A Python int read as 64 raw bits: 0..2**64, or a negative i64 taken as two's complement
/// (seeds often come from signed 64-bit storage).
struct Bits64(u64);

impl<'a, 'py> FromPyObject<'a, 'py> for Bits64 {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(v) = obj.extract::<u64>() {
            return Ok(Bits64(v));
        }
        match obj.extract::<i64>() {
            Ok(v) => Ok(Bits64(v as u64)),
            Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) => {
                Err(value_error("integer out of range for 64 bits"))
            }
            Err(e) => Err(e),
        }
    }
}

fn non_negative_u64(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<u64> {
    match obj.extract::<u64>() {
        Ok(v) => Ok(v),
        Err(e) if e.is_instance_of::<PyOverflowError>(obj.py()) || obj.extract::<i64>().is_ok() => {
            Err(value_error(format!("{what} must be in range 0..2**64")))
        }
        Err(e) => Err(e),
    }
}

fn bounded_count(v: i64, what: &str) -> PyResult<usize> {
    if !(0..=MAX_BATCH).contains(&v) {
        return Err(value_error(format!(
            "{what} must be between 0 and {MAX_BATCH}"
        )));
    }
    Ok(v as usize)
}

/// How `int64s` reads integers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ints {
    /// i64 values (deadlines, instants).
    Signed,
    /// u64 values (keys); negatives are rejected.
    Unsigned,
    /// Raw 64 bits: u64, or i64 as two's complement (seeds, handles).
    Bits,
}

fn one_int(item: &Bound<'_, PyAny>, what: &str, mode: Ints) -> PyResult<u64> {
    match mode {
        Ints::Signed => Ok(item.extract::<I64>()?.0 as u64),
        Ints::Unsigned => non_negative_u64(item, what),
        Ints::Bits => Ok(item.extract::<Bits64>()?.0),
    }
}

/// Reads a sequence of 64-bit integers: a list, tuple or other iterable of ints, or a buffer of
/// 8-byte integers (array.array('q'/'Q'), numpy int64/uint64) or of raw native-endian bytes.
fn int64s(obj: &Bound<'_, PyAny>, what: &str, mode: Ints) -> PyResult<Vec<u64>> {
    if let Ok(list) = obj.cast::<PyList>() {
        return list.iter().map(|item| one_int(&item, what, mode)).collect();
    }
    if let Ok(tuple) = obj.cast::<PyTuple>() {
        return tuple
            .iter()
            .map(|item| one_int(&item, what, mode))
            .collect();
    }
    let py = obj.py();
    let out_of_range = || match mode {
        Ints::Unsigned => value_error(format!("{what} must be in range 0..2**64")),
        _ => value_error("integer out of range for a signed 64-bit value"),
    };
    if let Ok(buf) = PyBuffer::<i64>::get(obj) {
        let v = buf.to_vec(py)?;
        if mode == Ints::Unsigned && v.iter().any(|&x| x < 0) {
            return Err(out_of_range());
        }
        return Ok(v.into_iter().map(|x| x as u64).collect());
    }
    if let Ok(buf) = PyBuffer::<u64>::get(obj) {
        let v = buf.to_vec(py)?;
        if mode == Ints::Signed && v.iter().any(|&x| x > i64::MAX as u64) {
            return Err(out_of_range());
        }
        return Ok(v);
    }
    if let Ok(buf) = PyBuffer::<u8>::get(obj) {
        // Raw bytes, e.g. the output of next_fires: native-endian 8-byte integers.
        let bytes = buf.to_vec(py)?;
        if bytes.len() % 8 != 0 {
            return Err(value_error(format!(
                "{what}: byte buffer length {} is not a multiple of 8",
                bytes.len()
            )));
        }
        let mut v = Vec::with_capacity(bytes.len() / 8);
        for chunk in bytes.chunks_exact(8) {
            let mut raw = [0u8; 8];
            raw.copy_from_slice(chunk);
            v.push(u64::from_ne_bytes(raw));
        }
        // Raw bytes carry their own sign: read as i64 for Signed and as u64 otherwise.
        return Ok(v);
    }
    if obj.is_instance_of::<PyString>() {
        return Err(value_error(format!(
            "{what} must be a sequence of ints, not str"
        )));
    }
    obj.try_iter()?
        .map(|item| one_int(&item?, what, mode))
        .collect()
}

fn i64s(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<i64>> {
    Ok(int64s(obj, what, Ints::Signed)?
        .into_iter()
        .map(|x| x as i64)
        .collect())
}

fn i64s_to_bytes<'py>(py: Python<'py>, values: &[i64]) -> PyResult<Bound<'py, PyBytes>> {
    PyBytes::new_with(py, values.len() * 8, |buf| {
        for (chunk, v) in buf.chunks_exact_mut(8).zip(values) {
            chunk.copy_from_slice(&v.to_ne_bytes());
        }
        Ok(())
    })
}

/// The Python function that returns a zone's TZif bytes, or None for an unknown zone.
const ZONE_SOURCE: (&str, &str) = ("schedsvc.timing.zonedb", "tzif");

static ZONES: LazyLock<ZoneCache> = LazyLock::new(ZoneCache::default);

/// The zone `name`, built from the TZif bytes Python hands over the first time it is used.
fn zone(py: Python<'_>, name: &str) -> PyResult<Arc<Zone>> {
    ZONES.get_or_try_insert_with(name, || {
        let (module, function) = ZONE_SOURCE;
        let tzif = py.import(module)?.getattr(function)?.call1((name,))?;
        if tzif.is_none() {
            return Err(value_error(format!("unknown time zone '{name}'")));
        }
        Zone::from_tzif(name, tzif.cast::<PyBytes>()?.as_bytes()).map_err(value_error)
    })
}

/// A schedule (cron, interval, calendar or once). Immutable and thread-safe.
#[pyclass(frozen, module = "schedsvc._timing", name = "Schedule")]
struct PySchedule {
    inner: schedule::Schedule,
}

fn wrap(r: Result<schedule::Schedule, String>) -> PyResult<PySchedule> {
    r.map(|inner| PySchedule { inner }).map_err(value_error)
}

#[pymethods]
impl PySchedule {
    #[staticmethod]
    #[pyo3(signature = (expression, timezone = "UTC", start_ms = None, end_ms = None, jitter_ms = I64(0)))]
    fn cron(
        py: Python<'_>,
        expression: &str,
        timezone: &str,
        start_ms: Option<I64>,
        end_ms: Option<I64>,
        jitter_ms: I64,
    ) -> PyResult<Self> {
        wrap(schedule::Schedule::cron(
            expression,
            zone(py, timezone)?,
            start_ms.map(|v| v.0),
            end_ms.map(|v| v.0),
            jitter_ms.0,
        ))
    }

    #[staticmethod]
    #[pyo3(signature = (every_ms, anchor_ms, start_ms = None, end_ms = None, jitter_ms = I64(0)))]
    fn interval(
        every_ms: I64,
        anchor_ms: I64,
        start_ms: Option<I64>,
        end_ms: Option<I64>,
        jitter_ms: I64,
    ) -> PyResult<Self> {
        wrap(schedule::Schedule::interval(
            every_ms.0,
            anchor_ms.0,
            start_ms.map(|v| v.0),
            end_ms.map(|v| v.0),
            jitter_ms.0,
        ))
    }

    #[staticmethod]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (every, unit, time, timezone, anchor_date, start_ms = None, end_ms = None, jitter_ms = I64(0)))]
    fn calendar(
        py: Python<'_>,
        every: I64,
        unit: &str,
        time: &str,
        timezone: &str,
        anchor_date: &str,
        start_ms: Option<I64>,
        end_ms: Option<I64>,
        jitter_ms: I64,
    ) -> PyResult<Self> {
        wrap(schedule::Schedule::calendar(
            every.0,
            unit,
            time,
            zone(py, timezone)?,
            anchor_date,
            start_ms.map(|v| v.0),
            end_ms.map(|v| v.0),
            jitter_ms.0,
        ))
    }

    #[staticmethod]
    #[pyo3(signature = (at_ms, start_ms = None, end_ms = None, jitter_ms = I64(0)))]
    fn once(
        at_ms: I64,
        start_ms: Option<I64>,
        end_ms: Option<I64>,
        jitter_ms: I64,
    ) -> PyResult<Self> {
        wrap(schedule::Schedule::once(
            at_ms.0,
            start_ms.map(|v| v.0),
            end_ms.map(|v| v.0),
            jitter_ms.0,
        ))
    }

    fn next_after(&self, after_ms: I64) -> Option<i64> {
        self.inner.next_after(after_ms.0)
    }

    fn next_n(&self, py: Python<'_>, after_ms: I64, count: I64) -> PyResult<Vec<i64>> {
        let count = bounded_count(count.0, "count")?;
        let s = &self.inner;
        Ok(if count > DETACH_ABOVE {
            py.detach(|| s.next_n(after_ms.0, count))
        } else {
            s.next_n(after_ms.0, count)
        })
    }

    fn fires_between(
        &self,
        py: Python<'_>,
        after_ms: I64,
        until_ms: I64,
        limit: I64,
    ) -> PyResult<Vec<i64>> {
        let limit = bounded_count(limit.0, "limit")?;
        let s = &self.inner;
        Ok(if limit > DETACH_ABOVE {
            py.detach(|| s.fires_between(after_ms.0, until_ms.0, limit))
        } else {
            s.fires_between(after_ms.0, until_ms.0, limit)
        })
    }

    fn fire_instant(&self, nominal_ms: I64, seed: Bits64) -> i64 {
        self.inner.fire_instant(nominal_ms.0, seed.0)
    }

    #[getter]
    fn timezone(&self) -> &str {
        self.inner.timezone()
    }

    #[getter]
    fn jitter_ms(&self) -> i64 {
        self.inner.jitter_ms()
    }

    fn __repr__(&self) -> String {
        format!("Schedule.{}", self.inner.describe())
    }
}

/// Batch next fire: see the stub (`_timing.pyi`) for the contract.
#[pyfunction]
#[pyo3(signature = (schedules, after_ms, seeds = None))]
fn next_fires<'py>(
    py: Python<'py>,
    schedules: &Bound<'py, PyAny>,
    after_ms: &Bound<'py, PyAny>,
    seeds: Option<&Bound<'py, PyAny>>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let owned: Vec<Bound<'py, PySchedule>> = if let Ok(list) = schedules.cast::<PyList>() {
        list.iter()
            .map(|item| item.cast_into::<PySchedule>().map_err(PyErr::from))
            .collect::<PyResult<_>>()?
    } else {
        schedules
            .try_iter()?
            .map(|item| item.and_then(|i| i.cast_into::<PySchedule>().map_err(PyErr::from)))
            .collect::<PyResult<_>>()?
    };
    let after = i64s(after_ms, "after_ms")?;
    let seeds = match seeds {
        Some(s) if !s.is_none() => Some(int64s(s, "seeds", Ints::Bits)?),
        _ => None,
    };
    if after.len() != owned.len() {
        return Err(value_error(format!(
            "next_fires: {} schedules but {} after_ms values",
            owned.len(),
            after.len()
        )));
    }
    if let Some(s) = &seeds {
        if s.len() != owned.len() {
            return Err(value_error(format!(
                "next_fires: {} schedules but {} seeds",
                owned.len(),
                s.len()
            )));
        }
    }
    let refs: Vec<&schedule::Schedule> = owned.iter().map(|b| &b.get().inner).collect();
    let (nominal, due) = py.detach(|| {
        let mut nominal = Vec::with_capacity(refs.len());
        let mut due = Vec::with_capacity(refs.len());
        for (i, s) in refs.iter().enumerate() {
            match s.next_after(after[i]) {
                Some(n) => {
                    nominal.push(n);
                    due.push(match &seeds {
                        Some(seeds) => s.fire_instant(n, seeds[i]),
                        None => n,
                    });
                }
                None => {
                    nominal.push(NO_FIRE);
                    due.push(NO_FIRE);
                }
            }
        }
        (nominal, due)
    });
    Ok((i64s_to_bytes(py, &nominal)?, i64s_to_bytes(py, &due)?))
}

/// Hierarchical timing wheel; see the stub for the contract. Safe to share between threads
/// (an internal lock serialises calls; batch calls hold it without the GIL).
#[pyclass(frozen, module = "schedsvc._timing", name = "TimingWheel")]
struct PyTimingWheel {
    inner: Mutex<wheel::TimingWheel>,
}

impl PyTimingWheel {
    fn lock(&self) -> MutexGuard<'_, wheel::TimingWheel> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn wheel_full(_: wheel::WheelFull) -> PyErr {
    value_error("timing wheel is full (2**32 - 1 timers)")
}

#[pymethods]
impl PyTimingWheel {
    #[new]
    #[pyo3(signature = (start_ms, tick_ms = I64(1)))]
    fn new(start_ms: I64, tick_ms: I64) -> PyResult<Self> {
        let w = wheel::TimingWheel::new(start_ms.0, tick_ms.0).map_err(value_error)?;
        Ok(PyTimingWheel {
            inner: Mutex::new(w),
        })
    }

    fn insert(&self, deadline_ms: I64, key: &Bound<'_, PyAny>) -> PyResult<u64> {
        let key = non_negative_u64(key, "key")?;
        self.lock().insert(deadline_ms.0, key).map_err(wheel_full)
    }

    fn insert_many(
        &self,
        py: Python<'_>,
        deadlines_ms: &Bound<'_, PyAny>,
        keys: &Bound<'_, PyAny>,
    ) -> PyResult<Vec<u64>> {
        let deadlines = i64s(deadlines_ms, "deadlines_ms")?;
        let keys = int64s(keys, "keys", Ints::Unsigned)?;
        if deadlines.len() != keys.len() {
            return Err(value_error(format!(
                "insert_many: {} deadlines but {} keys",
                deadlines.len(),
                keys.len()
            )));
        }
        py.detach(|| self.lock().insert_many(&deadlines, &keys))
            .map_err(wheel_full)
    }

    fn cancel(&self, handle: &Bound<'_, PyAny>) -> PyResult<bool> {
        match handle.extract::<u64>() {
            Ok(h) => Ok(self.lock().cancel(h)),
            // An int outside 0..2**64 was never a handle.
            Err(_) if handle.is_instance_of::<PyInt>() => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn cancel_many(&self, py: Python<'_>, handles: &Bound<'_, PyAny>) -> PyResult<usize> {
        // Values that are not u64 handles are read as raw bits; they fail the generation check.
        let handles = int64s(handles, "handles", Ints::Bits)?;
        Ok(py.detach(|| self.lock().cancel_many(&handles)))
    }

    #[pyo3(signature = (now_ms, limit = None))]
    fn pop_due<'py>(
        &self,
        py: Python<'py>,
        now_ms: I64,
        limit: Option<I64>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        let limit = match limit {
            None => usize::MAX,
            Some(I64(v)) if v < 0 => return Err(value_error("limit must be >= 0")),
            Some(I64(v)) => usize::try_from(v).unwrap_or(usize::MAX),
        };
        let due = py.detach(|| self.lock().pop_due(now_ms.0, limit));
        let keys = PyList::new(py, due.iter().map(|&(k, _)| k))?;
        let deadlines = PyList::new(py, due.iter().map(|&(_, d)| d))?;
        Ok((keys, deadlines))
    }

    fn next_deadline(&self) -> Option<i64> {
        self.lock().next_deadline()
    }

    fn __len__(&self) -> usize {
        self.lock().len()
    }

    fn memory_bytes(&self) -> usize {
        self.lock().memory_bytes()
    }

    fn __repr__(&self) -> String {
        let w = self.lock();
        format!("TimingWheel(len={}, now_ms={})", w.len(), w.now_ms())
    }
}

#[pymodule]
fn _timing(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("NO_FIRE", NO_FIRE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<PySchedule>()?;
    m.add_class::<PyTimingWheel>()?;
    m.add_function(wrap_pyfunction!(next_fires, m)?)?;
    Ok(())
}
