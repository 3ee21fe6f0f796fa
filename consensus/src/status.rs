//! What a node reports about itself: the `GET /api/v1/consensus` status and the metrics.

use serde::{Deserialize, Serialize};

/// A snapshot of a node's progress, updated by the node as it goes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusStatus {
    /// This validator's hotkey.
    pub hotkey: String,
    /// The height in progress (the last one started), if any.
    pub height: Option<u64>,
    /// The round in progress (-1 before the first round of a height).
    pub round: i64,
    /// Whether the height in progress is decided.
    pub decided: bool,
    /// Validators in the current set.
    pub validators: usize,
    /// Peers configured.
    pub peers: usize,
    /// Peers whose last message was delivered.
    pub peers_connected: usize,
    /// Heights decided by this node since it started.
    pub heights_decided: u64,
    /// The last decided height.
    pub last_decided: Option<u64>,
    /// Milliseconds from the start of the last decided height to its decision.
    pub last_decide_ms: Option<u64>,
    /// Rounds the last decided height took.
    pub last_rounds: Option<u32>,
    /// Heights decided through catch-up (`GetDecided`) rather than by voting.
    pub heights_synced: u64,
    /// Equivocations recorded (double votes and double proposals).
    pub equivocations: u64,
    /// Proposals this node voted nil because their value failed a check.
    pub bad_proposals: u64,
    /// Peer messages refused before they reached the core (bad signature, unknown sender, ...).
    pub refused_messages: u64,
    /// Whether the node stopped voting because its write-ahead log failed.
    pub halted: bool,
}

impl ConsensusStatus {
    /// The status as Prometheus text lines (gauges and counters prefixed `veribench_consensus_`).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            out.push_str(&format!(
                "# HELP veribench_consensus_{name} {help}\n# TYPE veribench_consensus_{name} {kind}\nveribench_consensus_{name} {value}\n"
            ));
        };
        line(
            "height",
            "gauge",
            "Consensus height in progress (weights epoch).",
            self.height.unwrap_or(0).to_string(),
        );
        line("round", "gauge", "Round in progress.", self.round.to_string());
        line("validators", "gauge", "Validators in the current set.", self.validators.to_string());
        line(
            "peers_connected",
            "gauge",
            "Peers whose last message was delivered.",
            self.peers_connected.to_string(),
        );
        line(
            "heights_decided_total",
            "counter",
            "Heights decided.",
            self.heights_decided.to_string(),
        );
        line(
            "heights_synced_total",
            "counter",
            "Heights decided through catch-up.",
            self.heights_synced.to_string(),
        );
        line(
            "decide_seconds",
            "gauge",
            "Time to decide the last height.",
            format!("{}", self.last_decide_ms.unwrap_or(0) as f64 / 1000.0),
        );
        line(
            "rounds",
            "gauge",
            "Rounds the last decided height took.",
            self.last_rounds.unwrap_or(0).to_string(),
        );
        line(
            "equivocations_total",
            "counter",
            "Equivocation evidence recorded.",
            self.equivocations.to_string(),
        );
        line(
            "bad_proposals_total",
            "counter",
            "Proposals voted nil because their value failed a check.",
            self.bad_proposals.to_string(),
        );
        line(
            "refused_messages_total",
            "counter",
            "Peer messages refused before the core.",
            self.refused_messages.to_string(),
        );
        line(
            "halted",
            "gauge",
            "1 when the node stopped voting because its write-ahead log failed.",
            u8::from(self.halted).to_string(),
        );
        out
    }
}
