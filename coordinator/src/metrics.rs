//! Counters, gauges and latency summaries, rendered in Prometheus text format at `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Latency samples kept per summary; quantiles are over the most recent ones.
const WINDOW: usize = 16_384;

/// A latency summary over a sliding window of samples.
#[derive(Debug, Default)]
pub struct Summary {
    samples: Mutex<VecDeque<f64>>,
    count: AtomicU64,
}

impl Summary {
    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut s) = self.samples.lock() {
            if s.len() == WINDOW {
                s.pop_front();
            }
            s.push_back(d.as_secs_f64());
        }
    }

    /// The `q` quantile (0..=1) of the window, in seconds; 0 without samples.
    pub fn quantile(&self, q: f64) -> f64 {
        let Ok(s) = self.samples.lock() else { return 0.0 };
        let mut v: Vec<f64> = s.iter().copied().collect();
        if v.is_empty() {
            return 0.0;
        }
        v.sort_by(f64::total_cmp);
        let at = ((v.len() - 1) as f64 * q.clamp(0.0, 1.0)).round() as usize;
        v[at]
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
        for q in [0.5, 0.9, 0.99] {
            let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", self.quantile(q));
        }
        let _ = writeln!(out, "{name}_count {}", self.count.load(Ordering::Relaxed));
    }
}

/// The coordinator's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// WebSocket connections accepted.
    pub connections: AtomicU64,
    /// Registrations accepted.
    pub registrations: AtomicU64,
    /// Frames received (all kinds).
    pub frames: AtomicU64,
    /// Heartbeats handled.
    pub heartbeats: AtomicU64,
    /// Time to handle one heartbeat, from frame receipt to liveness recorded.
    pub heartbeat_latency: Summary,
    /// Time to persist one batch of liveness updates.
    pub liveness_flush: Summary,
    /// Time to verify one challenge's openings.
    pub verify_latency: Summary,
    /// Time to issue one round, from its start to its last frame queued: the width of the
    /// window a synchronized round's challenges go out in.
    pub round_issue: Summary,
    /// Time to store one round's challenges (one transaction).
    pub round_store: Summary,
    /// Rounds issued.
    pub rounds: AtomicU64,
    /// Challenges stored by rounds.
    pub round_challenges: AtomicU64,
    /// Challenges a worker refused as `busy` (its device serving another validator).
    pub busy_refusals: AtomicU64,
    /// The block of this coordinator's announcement on chain, as last read or written (0: none
    /// yet, or `announce.url` unset).
    pub announced_block: AtomicU64,
    /// Announcements written by `run`.
    pub announcements: AtomicU64,
    /// Announcement writes the chain refused with a rate limit.
    pub announce_rate_limited: AtomicU64,
    /// The last round: its challenges, store time and issue time.
    last_round: Mutex<(u64, Duration, Duration)>,
    rejections: Mutex<BTreeMap<String, u64>>,
    challenges: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
    /// Counts one rejection of `kind`.
    pub fn rejected(&self, kind: &str) {
        if let Ok(mut m) = self.rejections.lock() {
            *m.entry(kind.to_owned()).or_default() += 1;
        }
    }

    /// Counts one challenge reaching `status`.
    pub fn challenge(&self, status: &'static str) {
        if let Ok(mut m) = self.challenges.lock() {
            *m.entry(status).or_default() += 1;
        }
    }

    /// Counts one round of `challenges`, stored in `stored` and issued in `issued`.
    pub fn round_issued(&self, challenges: usize, stored: Duration, issued: Duration) {
        self.rounds.fetch_add(1, Ordering::Relaxed);
        self.round_challenges.fetch_add(challenges as u64, Ordering::Relaxed);
        self.round_store.observe(stored);
        self.round_issue.observe(issued);
        if let Ok(mut last) = self.last_round.lock() {
            *last = (challenges as u64, stored, issued);
        }
    }

    /// Rejections counted so far, by kind.
    pub fn rejection_counts(&self) -> BTreeMap<String, u64> {
        self.rejections.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Prometheus text exposition, with the gauges passed in.
    pub fn render(&self, workers_online: usize, pending: usize) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        counter(
            &mut out,
            "veribench_connections_total",
            "WebSocket connections accepted.",
            self.connections.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_registrations_total",
            "Worker registrations accepted.",
            self.registrations.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_frames_total",
            "Frames received.",
            self.frames.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_heartbeats_total",
            "Heartbeats handled.",
            self.heartbeats.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_rounds_total",
            "Challenge rounds issued.",
            self.rounds.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_round_challenges_total",
            "Challenges stored by rounds.",
            self.round_challenges.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_busy_refusals_total",
            "Challenges refused by workers as busy (their device serving another validator).",
            self.busy_refusals.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_announcements_total",
            "Endpoint announcements written on chain.",
            self.announcements.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "veribench_announcement_rate_limited_total",
            "Endpoint announcements refused by a chain rate limit (tried again later).",
            self.announce_rate_limited.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP veribench_announcement_block Block of this coordinator's announcement on chain (0: none).\n# TYPE veribench_announcement_block gauge\nveribench_announcement_block {}",
            self.announced_block.load(Ordering::Relaxed)
        );
        let (size, stored, issued) = self.last_round.lock().map(|l| *l).unwrap_or_default();
        let _ = writeln!(
            out,
            "# HELP veribench_round_last Size, store and issue seconds of the last round.\n\
             # TYPE veribench_round_last gauge\n\
             veribench_round_last{{what=\"challenges\"}} {size}\n\
             veribench_round_last{{what=\"store_seconds\"}} {}\n\
             veribench_round_last{{what=\"issue_seconds\"}} {}",
            stored.as_secs_f64(),
            issued.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "# HELP veribench_workers_online Connected, registered workers.\n# TYPE veribench_workers_online gauge\nveribench_workers_online {workers_online}"
        );
        let _ = writeln!(
            out,
            "# HELP veribench_challenges_pending Challenges in flight.\n# TYPE veribench_challenges_pending gauge\nveribench_challenges_pending {pending}"
        );
        let _ = writeln!(
            out,
            "# HELP veribench_challenges_total Challenges by the status they reached.\n# TYPE veribench_challenges_total counter"
        );
        if let Ok(m) = self.challenges.lock() {
            for (status, v) in m.iter() {
                let _ = writeln!(out, "veribench_challenges_total{{status=\"{status}\"}} {v}");
            }
        }
        let _ = writeln!(
            out,
            "# HELP veribench_rejections_total Refused peer inputs by kind.\n# TYPE veribench_rejections_total counter"
        );
        for (kind, v) in self.rejection_counts() {
            let _ = writeln!(out, "veribench_rejections_total{{kind=\"{kind}\"}} {v}");
        }
        self.heartbeat_latency.render(
            &mut out,
            "veribench_heartbeat_handling_seconds",
            "Heartbeat handling latency.",
        );
        self.liveness_flush.render(
            &mut out,
            "veribench_liveness_flush_seconds",
            "Time to persist one batch of heartbeats.",
        );
        self.verify_latency.render(
            &mut out,
            "veribench_verify_seconds",
            "Openings verification time.",
        );
        self.round_issue.render(
            &mut out,
            "veribench_round_issue_seconds",
            "Time to issue one round, from its start to its last frame queued.",
        );
        self.round_store.render(
            &mut out,
            "veribench_round_store_seconds",
            "Time to store one round's challenges in one transaction.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_and_rendering() {
        let m = Metrics::default();
        for ms in 1..=100 {
            m.heartbeat_latency.observe(Duration::from_millis(ms));
        }
        assert!((m.heartbeat_latency.quantile(0.5) - 0.050).abs() < 0.002);
        assert!((m.heartbeat_latency.quantile(0.99) - 0.099).abs() < 0.002);
        m.rejected("malformed_frame");
        m.challenge("verified");
        m.busy_refusals.fetch_add(2, Ordering::Relaxed);
        m.announced_block.store(1234, Ordering::Relaxed);
        let text = m.render(3, 1);
        assert!(text.contains("veribench_busy_refusals_total 2"));
        assert!(text.contains("veribench_announcement_block 1234"));
        assert!(text.contains("veribench_workers_online 3"));
        assert!(text.contains("veribench_rejections_total{kind=\"malformed_frame\"} 1"));
        assert!(text.contains("veribench_challenges_total{status=\"verified\"} 1"));
        assert!(text.contains("veribench_heartbeat_handling_seconds_count 100"));
    }
}
