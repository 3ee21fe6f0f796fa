//! The wall clock the daemon stamps and checks protocol times with: the Register's timestamp, the
//! delegation's validity, challenge admission, heartbeats and run retention.
//!
//! It is the system clock, optionally shifted by a fixed offset so tests can run a worker whose
//! machine clock is wrong (the coordinator and the worker disagree on every deadline) without
//! touching the host's clock. Durations are measured with monotonic clocks elsewhere, never with
//! this one.

use veribench_protocol::UnixMillis;

/// The system wall clock shifted by a fixed number of milliseconds (zero in production).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    /// The system clock, unshifted.
    pub const fn system() -> Self {
        Self { offset_ms: 0 }
    }

    /// The system clock running `offset_ms` ahead (negative: behind), as on a machine whose
    /// clock is that far off.
    pub const fn offset_by(offset_ms: i64) -> Self {
        Self { offset_ms }
    }

    /// The offset from the system clock, in milliseconds.
    pub const fn offset_ms(self) -> i64 {
        self.offset_ms
    }

    /// The current time by this clock, saturating at 0 and `u64::MAX`.
    pub fn now(self) -> UnixMillis {
        self.shift(UnixMillis::now())
    }

    /// `system` shifted by the offset, saturating.
    fn shift(self, system: UnixMillis) -> UnixMillis {
        let ms = if self.offset_ms >= 0 {
            system.0.saturating_add(self.offset_ms.unsigned_abs())
        } else {
            system.0.saturating_sub(self.offset_ms.unsigned_abs())
        };
        UnixMillis(ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_shift_the_system_time_and_saturate() {
        let t = UnixMillis(1_000);
        assert_eq!(Clock::system().shift(t), t);
        assert_eq!(Clock::default(), Clock::system());
        assert_eq!(Clock::offset_by(120_000).shift(t), UnixMillis(121_000));
        assert_eq!(Clock::offset_by(-400).shift(t), UnixMillis(600));
        assert_eq!(Clock::offset_by(-5_000).shift(t), UnixMillis(0));
        assert_eq!(Clock::offset_by(i64::MIN).shift(t), UnixMillis(0));
        assert_eq!(
            Clock::offset_by(i64::MAX).shift(UnixMillis(u64::MAX - 1)),
            UnixMillis(u64::MAX)
        );
    }

    #[test]
    fn a_clock_ahead_reads_later_than_the_system() {
        let before = UnixMillis::now();
        let ahead = Clock::offset_by(120_000).now();
        let after = UnixMillis::now();
        assert!(ahead.0 >= before.0 + 120_000 && ahead.0 <= after.0 + 120_000);
    }
}
