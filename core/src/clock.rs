//! Wall-clock time in Unix seconds: the one source of every expiry, lease, backoff and session
//! lifetime, so tests can move time forward instead of waiting for it.
//!
//! Production reads the system clock. A test moves time in two ways: in its own process with a
//! [`Clock::manual`] handle given to the component under test (the job queue), and in the
//! `pathfed` processes it starts through the file named by `PATHFED_TEST_CLOCK_OFFSET_FILE`,
//! which holds seconds added to the system clock and is read at each call, so a write takes
//! effect at once in the server, its workers and every command.

use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// The variable naming the offset file (tests only; unset in production).
pub const OFFSET_FILE_VAR: &str = "PATHFED_TEST_CLOCK_OFFSET_FILE";

/// A source of the current time.
#[derive(Debug, Clone, Default)]
pub struct Clock(Source);

#[derive(Debug, Clone, Default)]
enum Source {
    /// The system clock (plus a test's offset file, when one is named).
    #[default]
    System,
    /// A test's clock, moved by hand.
    Manual(Arc<AtomicI64>),
}

impl Clock {
    /// The system clock.
    pub fn system() -> Self {
        Self(Source::System)
    }

    /// A clock that stands at `start` until [`Clock::advance`] moves it.
    pub fn manual(start: i64) -> Self {
        Self(Source::Manual(Arc::new(AtomicI64::new(start))))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> i64 {
        match &self.0 {
            Source::System => now(),
            Source::Manual(at) => at.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock (and every copy of it) forward by `seconds`; the system clock
    /// cannot be moved and ignores it.
    pub fn advance(&self, seconds: i64) {
        if let Source::Manual(at) = &self.0 {
            at.fetch_add(seconds, Ordering::SeqCst);
        }
    }
}

/// Seconds since the Unix epoch, the time format of every table.
pub fn now() -> i64 {
    let system = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default();
    system + test_offset()
}

/// The offset a test wrote, or 0: no file named, or none written yet.
fn test_offset() -> i64 {
    static FILE: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(path) = FILE.get_or_init(|| std::env::var_os(OFFSET_FILE_VAR).map(PathBuf::from))
    else {
        return 0;
    };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_copies_follow() {
        let clock = Clock::manual(1_000);
        let copy = clock.clone();
        assert_eq!(clock.now(), 1_000);
        copy.advance(61);
        assert_eq!(clock.now(), 1_061);
        let system = Clock::system();
        let before = system.now();
        system.advance(3_600);
        assert!(system.now() - before < 3_600);
    }
}
