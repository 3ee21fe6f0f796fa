//! The worker's clock against ours, measured once per registration (SPEC §8.2). A worker whose
//! clock runs ahead sees every challenge closer to its deadline than it is, and refuses it as
//! expired once the skew passes the deadline; it is refused at registration instead, with the
//! measured skew, rather than failing every challenge without saying why.

use super::*;

/// When and over what a `Register` frame arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arrival {
    /// Our clock when the frame was read.
    pub at: UnixMillis,
    /// The connection's round trip as the kernel measured it, if it can say.
    pub rtt: Option<Duration>,
}

impl Arrival {
    /// A frame read now, over a connection with round trip `rtt`.
    pub fn now(rtt: Option<Duration>) -> Self {
        Self { at: UnixMillis::now(), rtt }
    }
}

/// The worker's clock minus ours, in milliseconds: the `Register` was stamped about half a
/// round trip before it arrived (without a round trip, the skew includes the one-way delay).
pub fn clock_skew_ms(stamped: UnixMillis, arrival: &Arrival) -> i64 {
    let one_way = arrival.rtt.map_or(0, |rtt| rtt.as_millis() / 2);
    let ours = i128::from(arrival.at.0) - i128::try_from(one_way).unwrap_or(0);
    let skew = i128::from(stamped.0) - ours;
    i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX })
}

impl Coordinator {
    /// The most a worker's clock may run ahead of ours: half a challenge's deadline, so that a
    /// challenge reaches it with at least half its time left.
    fn max_clock_ahead_ms(&self) -> i64 {
        let half_deadline = secs(self.config.schedule.deadline_secs / 2.0).as_millis();
        i64::try_from(half_deadline).unwrap_or(i64::MAX)
    }

    /// Measures the worker's clock skew; refuses a clock too far ahead for the deadlines.
    pub(super) fn check_clock(&self, reg: &Register, arrival: &Arrival) -> Result<i64, Refusal> {
        let skew = clock_skew_ms(reg.timestamp, arrival);
        let limit = self.max_clock_ahead_ms();
        if skew > limit {
            let uncertainty = arrival.rtt.map_or_else(
                || "one-way delay not known".to_owned(),
                |rtt| format!("±{} ms", rtt.as_millis() / 2),
            );
            return Err(Refusal::new(
                RefusalKind::ClockSkew,
                format!(
                    "this worker's clock is {:.1} s ahead of the coordinator's ({uncertainty}); \
                     challenges expire {} s after issue, so at most {:.1} s ahead is accepted: \
                     synchronise the clock (NTP)",
                    skew as f64 / 1e3,
                    self.config.schedule.deadline_secs,
                    limit as f64 / 1e3,
                ),
            ));
        }
        if skew.unsigned_abs() > 5_000 {
            tracing::warn!(worker = %reg.delegation.worker_key, skew_ms = skew, "worker clock skewed");
        }
        Ok(skew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_is_the_stamp_against_our_clock_half_a_round_trip_earlier() {
        let arrival = Arrival { at: UnixMillis(100_000), rtt: Some(Duration::from_millis(40)) };
        // Stamped 20 ms before arrival by a correct clock: no skew.
        assert_eq!(clock_skew_ms(UnixMillis(99_980), &arrival), 0);
        assert_eq!(clock_skew_ms(UnixMillis(219_980), &arrival), 120_000);
        assert_eq!(clock_skew_ms(UnixMillis(0), &arrival), -99_980);
        let unknown = Arrival { rtt: None, ..arrival };
        assert_eq!(clock_skew_ms(UnixMillis(100_500), &unknown), 500);
        assert_eq!(clock_skew_ms(UnixMillis(u64::MAX), &unknown), i64::MAX);
    }
}
