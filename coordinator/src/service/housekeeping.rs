//! Work off the scheduler's path, once a second: probing the database with a write (what
//! `/healthz` reports), writing buffered heartbeats and refusals, and clearing the `online` flag
//! of workers not heard from. And the ordered shutdown: stop deciding, let the outcome writes
//! land, then write what is buffered before the pool closes.

use super::*;

/// How often stale `online` flags are cleared.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Coordinator {
    /// One housekeeping pass (every second, see [`crate::server`]). Nothing else is written
    /// while the probe fails: the buffers keep what they hold until the database is back.
    pub async fn housekeeping(&self) {
        self.probe_store().await;
        if !self.store.health().is_ok() {
            return;
        }
        if self.flush_liveness().await {
            self.sweep_offline().await;
        }
        self.persist_refusals(false).await;
    }

    /// A bounded write probe; logs when the database starts or stops failing.
    async fn probe_store(&self) {
        let limit = secs(self.config.storage.probe_timeout_secs);
        if tokio::time::timeout(limit, self.store.probe(UnixMillis::now())).await.is_err() {
            let error = format!("the database did not take a write within {limit:?}");
            self.store.health().record_outage(error);
        }
        let report = self.store.health().report();
        let was_ok = std::mem::replace(&mut self.state().store_was_ok, report.ok);
        match (was_ok, report.ok) {
            (true, false) => tracing::error!(
                error = report.error.as_deref().unwrap_or_default(),
                "the database is failing: no rounds start, and decided challenges wait for it"
            ),
            (false, true) => tracing::warn!("the database takes writes again"),
            _ => {}
        }
    }

    /// Writes buffered heartbeats; a batch that fails goes back to the buffer. Returns whether
    /// the store now holds every heartbeat received.
    async fn flush_liveness(&self) -> bool {
        let batch: Vec<(PublicKey, UnixMillis)> = self.state().unflushed.drain().collect();
        if batch.is_empty() {
            return true;
        }
        let started = Instant::now();
        match self.store.health().observe(self.store.touch_many(&batch).await) {
            Ok(_) => {
                self.metrics.liveness_flush.observe(started.elapsed());
                true
            }
            Err(e) => {
                tracing::error!(error = %e, workers = batch.len(), "cannot persist heartbeats; kept for the next pass");
                let mut s = self.state();
                for (worker, at) in batch {
                    // Only workers still connected; a newer heartbeat wins.
                    if s.workers.contains_key(&worker) {
                        let newest = s.unflushed.entry(worker).or_insert(at);
                        *newest = (*newest).max(at);
                    }
                }
                false
            }
        }
    }

    /// Marks offline the workers not heard from within the offline timeout: a connection that
    /// ended while the database was failing left its flag set. Connected workers' heartbeats
    /// are flushed first, so none of them is caught.
    async fn sweep_offline(&self) {
        {
            let mut s = self.state();
            if s.last_sweep.is_some_and(|t| t.elapsed() < SWEEP_EVERY) {
                return;
            }
            s.last_sweep = Some(Instant::now());
        }
        let offline_after = secs(self.config.liveness.offline_after_secs).as_millis();
        let now = UnixMillis::now();
        let cutoff = UnixMillis(now.0.saturating_sub(u64::try_from(offline_after).unwrap_or(0)));
        match self.store.health().observe(self.store.mark_stale_offline(cutoff).await) {
            Ok(stale) if stale.is_empty() => {}
            Ok(stale) => {
                tracing::info!(workers = stale.len(), "marked workers not heard from offline")
            }
            Err(e) => tracing::error!(error = %e, "cannot mark stale workers offline"),
        }
    }

    /// The first step of an ordered shutdown, once the listeners stopped accepting: no new
    /// rounds or registrations, every challenge still waiting on its worker fails as
    /// `coordinator_shutdown`, and the outcome writes get `grace` to land (after it they give
    /// up, and the next start fails those challenges as `coordinator_restart`).
    pub async fn drain(&self, grace: Duration) {
        let waiting: Vec<ChallengeId> = {
            let mut s = self.state();
            s.shutting_down = true;
            s.pending.iter().filter(|(_, p)| p.phase.awaits_worker()).map(|(id, _)| *id).collect()
        };
        if !waiting.is_empty() {
            tracing::info!(
                challenges = waiting.len(),
                "failing challenges in flight: shutting down"
            );
        }
        for id in waiting {
            let detail = "the coordinator is shutting down";
            self.conclude(id, Outcome::failed(Failure::CoordinatorShutdown, detail));
        }
        self.records.close();
        if tokio::time::timeout(grace, self.records.wait()).await.is_err() {
            tracing::error!(
                ?grace,
                "challenge outcomes still unwritten after the shutdown grace; giving up on them"
            );
            self.stop_recording.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(2), self.records.wait()).await;
        }
    }

    /// The last step of an ordered shutdown, after the connections closed: writes buffered
    /// heartbeats and refusals, and marks offline any worker whose connection's own clean-up
    /// could not (the pool is closed only after this).
    pub async fn flush_before_close(&self) {
        self.flush_liveness().await;
        self.persist_refusals(true).await;
        let left: Vec<PublicKey> = self.state().workers.drain().map(|(k, _)| k).collect();
        let now = UnixMillis::now();
        for worker in left {
            if let Err(e) = self.store.set_offline(&worker, now).await {
                tracing::error!(error = %e, worker = %worker, "cannot mark a worker offline at shutdown");
            }
        }
    }
}
