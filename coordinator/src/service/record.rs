//! The end of a challenge. Its outcome (a verdict, or a failure with its reason) is decided
//! once, written until the write lands, and only then told to the worker: a worker never hears
//! a verdict that is not stored. While the database is failing the write is retried with
//! backoff and the challenge stays in flight (its device busy); if the coordinator stops before
//! the write lands, the worker is told nothing and the restart fails the challenge as
//! `coordinator_restart`, a coordinator-side reason.
//!
//! The intermediate transitions (committed, verifying) are written behind, best effort: the
//! deciding write fills in a commitment they lost.

use veribench_protocol::ErrorCode;
use veribench_protocol::wire::VerdictMsg;
use veribench_support::RetryPolicy;

use super::*;
use crate::store::{Credit, Withheld, is_outage};

/// How an outcome's write is retried while the database is failing: soon at first, then every
/// few seconds, for as long as the coordinator runs.
const RECORD_RETRY: RetryPolicy =
    RetryPolicy { attempts: u32::MAX, initial_delay_ms: 250, max_delay_ms: 5_000 };

/// How a decided challenge ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// The openings verified.
    Verified {
        /// The commitment, as measured.
        commitment: CommitRecord,
        /// The measured rate, GFLOP/s (GOP/s for int8).
        gflops: f64,
        /// Rates above this are implausible for the device (SPEC §8.1).
        bound: f64,
        /// Who computed it.
        worker: PublicKey,
        /// On which device.
        device: DeviceKey,
        /// When the verdict was reached.
        at: UnixMillis,
    },
    /// It failed.
    Failed {
        /// Why.
        failure: Failure,
        /// For the operator and the worker.
        detail: String,
        /// When it was decided.
        at: UnixMillis,
    },
}

impl Outcome {
    /// A failure decided now.
    pub(super) fn failed(failure: Failure, detail: impl Into<String>) -> Self {
        Outcome::Failed { failure, detail: detail.into(), at: UnixMillis::now() }
    }
}

/// What verifying one challenge's openings needs, taken from its pending state.
#[derive(Debug)]
pub(super) struct Check {
    pub(super) id: ChallengeId,
    pub(super) challenge: Challenge,
    pub(super) seed: DeviceSeed,
    pub(super) commitment: CommitRecord,
    pub(super) rows: Vec<u32>,
    pub(super) compute: Duration,
    pub(super) peak_gops: f64,
    pub(super) worker: PublicKey,
    pub(super) device: DeviceKey,
}

/// What a landed write did.
#[derive(Debug)]
struct Written {
    /// Whether the stored challenge allowed the transition.
    applied: bool,
    /// The credit decided with a verdict.
    credit: Option<Credit>,
}

impl Coordinator {
    /// Marks a challenge in flight as decided; returns where its worker is told, or `None` if
    /// it is not in flight or already decided (a deadline and a late frame can race).
    fn decide(&self, id: ChallengeId) -> Option<(PublicKey, u64)> {
        let mut s = self.state();
        let p = s.pending.get_mut(&id)?;
        if matches!(p.phase, Phase::Recording) {
            return None;
        }
        p.phase = Phase::Recording;
        Some((p.worker, p.conn))
    }

    /// Decides a challenge in flight with `outcome` and writes it in the background.
    pub(super) fn conclude(&self, id: ChallengeId, outcome: Outcome) {
        if let Some(to) = self.decide(id) {
            self.spawn_record(id, Some(to), outcome);
        }
    }

    /// Writes the outcome of a challenge that was stored but never queued.
    pub(super) fn record_unsent(&self, id: ChallengeId, outcome: Outcome) {
        self.spawn_record(id, None, outcome);
    }

    fn spawn_record(&self, id: ChallengeId, to: Option<(PublicKey, u64)>, outcome: Outcome) {
        if let Some(me) = self.me.upgrade() {
            self.records.spawn(async move { me.record(id, to, outcome).await });
        }
    }

    /// Writes `committed` behind the open request, unless the store is failing (then the
    /// verdict's write records the commitment).
    pub(super) fn write_behind_committed(&self, id: ChallengeId) {
        let commitment = match self.state().pending.get(&id).map(|p| &p.phase) {
            Some(Phase::Committed { commitment, .. }) => *commitment,
            _ => return,
        };
        let Some(me) = self.me.upgrade() else { return };
        if !self.store.health().is_ok() {
            return;
        }
        self.records.spawn(async move {
            let written = me.store.mark_committed(id, &commitment).await;
            if let Err(e) = me.store.health().observe(written) {
                tracing::warn!(challenge = %id, error = %e, "cannot record a commitment now; the verdict's write will");
            }
        });
    }

    /// Verifies openings, then decides and writes the verdict.
    pub(super) async fn verify(self: Arc<Self>, check: Check, openings: OpeningsMsg) {
        let id = check.id;
        if self.store.health().is_ok() {
            let verifying = self.store.mark_verifying(id, UnixMillis::now()).await;
            if let Err(e) = self.store.health().observe(verifying) {
                tracing::warn!(challenge = %id, error = %e, "cannot record verifying now");
            }
        }
        let started = Instant::now();
        let verdict = {
            let _permit = self.verifiers.acquire().await;
            let (mode, shape, seed) = (check.challenge.mode, check.challenge.shape, check.seed);
            let (root, rows) = (check.commitment.root, check.rows);
            tokio::task::spawn_blocking(move || {
                verify_openings(mode, shape, &seed, &root, &rows, &openings.openings)
            })
            .await
        };
        let outcome = match verdict {
            // Our fault, not the worker's: fail without blaming its openings.
            Err(e) => Outcome::failed(Failure::VerifierError, e.to_string()),
            Ok(Verdict::Rejected(reason)) => {
                let detail = reason.to_string();
                Outcome::failed(Failure::Rejected(reason), detail)
            }
            Ok(Verdict::Accepted) => {
                self.metrics.verify_latency.observe(started.elapsed());
                let gflops = check.challenge.shape.ops() / check.compute.as_secs_f64() / 1e9;
                Outcome::Verified {
                    commitment: check.commitment,
                    gflops,
                    bound: check.peak_gops * self.config.timing.plausibility_factor,
                    worker: check.worker,
                    device: check.device,
                    at: UnixMillis::now(),
                }
            }
        };
        if let Some(to) = self.decide(id) {
            self.record(id, Some(to), outcome).await;
        }
    }

    /// Writes `outcome` until it lands (or shutdown gives up), frees the challenge's device,
    /// and tells its worker on connection `to`, if any.
    async fn record(&self, id: ChallengeId, to: Option<(PublicKey, u64)>, outcome: Outcome) {
        let mut attempt = 0;
        let written = loop {
            match self.write_outcome(id, &outcome).await {
                Ok(written) => {
                    self.store.health().record_ok();
                    break Some(written);
                }
                Err(e) if is_outage(&e) => {
                    self.store.health().record_error(&e);
                    if attempt == 0 {
                        tracing::warn!(challenge = %id, error = %e, "cannot record a challenge's outcome yet; retrying until the database is back");
                    }
                    let delay = RECORD_RETRY.delay(attempt);
                    attempt += 1;
                    tokio::select! {
                        _ = self.stop_recording.cancelled() => break None,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => {
                    tracing::error!(challenge = %id, error = %e, "cannot record a challenge's outcome");
                    break None;
                }
            }
        };
        self.release(id);
        let Some(written) = written else {
            tracing::error!(challenge = %id, "outcome not stored: the worker is not told, and the next start fails the challenge as coordinator_restart");
            return;
        };
        if !written.applied {
            tracing::error!(challenge = %id, "stored challenge was not in a state allowing its outcome; the worker is not told");
            return;
        }
        let message = self.announce(id, &outcome, written.credit);
        if let (Some((worker, conn)), Some(message)) = (to, message) {
            self.send_on(&worker, conn, &message);
        }
    }

    /// One attempt at writing `outcome`; a verdict's credit is decided with it (the device
    /// claim is read from the store).
    async fn write_outcome(
        &self,
        id: ChallengeId,
        outcome: &Outcome,
    ) -> Result<Written, StoreError> {
        match outcome {
            Outcome::Verified { commitment, gflops, bound, worker, device, at } => {
                // Written so that a NaN rate is implausible too.
                let plausible = gflops <= bound;
                let credit = if !plausible {
                    // SPEC §8.1: faster than the claimed hardware can go.
                    Credit::Withheld(Withheld::ImplausibleRate)
                } else if !self.holds(worker, device).await? {
                    Credit::Withheld(Withheld::DeviceConflict)
                } else {
                    Credit::Credited
                };
                let applied =
                    self.store.mark_verified(id, *at, *gflops, credit, commitment).await?;
                Ok(Written { applied, credit: Some(credit) })
            }
            Outcome::Failed { failure, detail, at } => {
                let applied = self.store.mark_failed(id, *at, failure.as_str(), detail).await?;
                Ok(Written { applied, credit: None })
            }
        }
    }

    /// Counts and logs a stored outcome; returns what its worker is told.
    fn announce(
        &self,
        id: ChallengeId,
        outcome: &Outcome,
        credit: Option<Credit>,
    ) -> Option<Message> {
        match outcome {
            Outcome::Verified { gflops, bound, worker, .. } => {
                self.metrics.challenge("verified");
                match credit {
                    Some(Credit::Withheld(reason)) => {
                        self.metrics.challenge("uncredited");
                        tracing::warn!(challenge = %id, worker = %worker, gflops, bound, reason = reason.as_str(), "challenge verified, not credited");
                    }
                    _ => {
                        tracing::info!(challenge = %id, worker = %worker, gflops, "challenge verified")
                    }
                }
                Some(Message::Verdict(VerdictMsg { challenge_id: id, verdict: Verdict::Accepted }))
            }
            Outcome::Failed { failure: Failure::Rejected(reason), .. } => {
                self.metrics.challenge("failed");
                tracing::warn!(challenge = %id, reason = %reason, "challenge failed verification");
                let verdict = Verdict::Rejected(reason.clone());
                Some(Message::Verdict(VerdictMsg { challenge_id: id, verdict }))
            }
            Outcome::Failed { failure, detail, .. } => {
                self.metrics.challenge("failed");
                tracing::warn!(challenge = %id, reason = failure.as_str(), detail, "challenge failed");
                let max_text = self.config.wire_limits().max_text_bytes;
                failure
                    .told_as()
                    .map(|code| Message::Error(ErrorMsg::new(code, Some(id), detail, max_text)))
            }
        }
    }

    /// Removes a challenge from flight and frees its device.
    fn release(&self, id: ChallengeId) {
        let mut s = self.state();
        let Some(p) = s.pending.remove(&id) else { return };
        if let Some(c) = s.workers.get_mut(&p.worker) {
            for slot in c.devices.iter_mut().filter(|d| d.busy == Some(id)) {
                slot.busy = None;
            }
        }
        *s.finished.entry(p.worker).or_default() += 1;
    }

    /// An `Error` from a worker on its connection `conn`. One naming a challenge sent to that
    /// worker on that connection and still awaiting it (SPEC §8.2) fails the challenge at once,
    /// with the detail `<code>: <message>` (as version 1 stored it): as `busy` when the code is
    /// `busy` (never counted against the worker; its device is challenged again after
    /// `schedule.busy_retry_secs`, up to `schedule.busy_retries` times a round), as
    /// `worker_refused` otherwise. Any other is logged and changes nothing. The worker is sent
    /// no answer.
    pub(super) fn on_worker_error(&self, worker: &PublicKey, conn: u64, e: &ErrorMsg) {
        let Some(id) = e.challenge_id else {
            tracing::warn!(worker = %worker, code = %e.code, message = %e.message, "worker reported an error");
            return;
        };
        let device = self
            .state()
            .pending
            .get(&id)
            .filter(|p| &p.worker == worker && p.conn == conn && p.phase.awaits_worker())
            .map(|p| (p.device.clone(), p.busy_retry));
        let Some((device, retried)) = device else {
            tracing::warn!(challenge = %id, worker = %worker, code = %e.code, message = %e.message, "worker reported an error about a challenge it does not hold; ignored");
            return;
        };
        let detail = crate::detail::bounded(&refusal_detail(e));
        if matches!(e.code, ErrorCode::Busy) {
            self.metrics.busy_refusals.fetch_add(1, Ordering::Relaxed);
            let retry = retried < self.config.schedule.busy_retries;
            tracing::info!(challenge = %id, worker = %worker, %device, message = %e.message, retried, retry, "device busy with another validator's challenge");
            self.conclude(id, Outcome::failed(Failure::Busy, detail));
            if retry {
                self.retry_busy(*worker, device, retried + 1);
            }
            return;
        }
        tracing::warn!(challenge = %id, worker = %worker, code = %e.code, message = %e.message, "worker refused its challenge");
        self.conclude(id, Outcome::failed(Failure::WorkerRefused, detail));
    }
}

/// The stored detail of a worker's refusal: its code's name, then its text.
fn refusal_detail(e: &ErrorMsg) -> String {
    format!("{}: {}", e.code, e.message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use veribench_protocol::ErrorCode;

    #[test]
    fn a_worker_refusal_is_stored_as_its_code_and_text() {
        let busy =
            ErrorMsg::new(ErrorCode::Busy, Some(ChallengeId(7)), "device GPU-0 is busy", 256);
        assert_eq!(refusal_detail(&busy), "busy: device GPU-0 is busy");
        let expired = ErrorMsg::new(ErrorCode::Expired, None, "expired at 5 ms (now 9 ms)", 256);
        assert_eq!(refusal_detail(&expired), "expired: expired at 5 ms (now 9 ms)");
        // A code from a newer worker is stored with its index.
        let newer = ErrorMsg::new(ErrorCode::Unknown(99), None, "new", 256);
        assert_eq!(refusal_detail(&newer), "unknown (99): new");
    }
}
