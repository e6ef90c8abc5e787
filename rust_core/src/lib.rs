//! schedsvc timing core: schedules (cron, interval, calendar, once) and a hierarchical timing
//! wheel, as pure Rust; `python.rs` (feature `python`) exposes them as `schedsvc._timing`.

pub mod cron;
pub mod schedule;
pub mod tz;
pub mod wheel;

#[cfg(feature = "python")]
mod python;

pub use schedule::Schedule;
pub use wheel::TimingWheel;

/// Sentinel in batch results meaning "no further fire".
pub const NO_FIRE: i64 = i64::MIN;
