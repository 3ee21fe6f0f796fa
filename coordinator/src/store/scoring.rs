//! What scoring reads (online buckets, IP changes, verified and rejected results, leases) and
//! writes (score runs with every component, weight vectors and their way to the chain).

use std::collections::HashMap;

use sqlx::Row;
use sqlx::any::AnyRow;
use veribench_protocol::{PublicKey, UnixMillis};

use super::row::{self, millis};
use super::{ChallengeRow, ChallengeStatus, Store, StoreError};
use crate::scoring::{RejectCode, WorkerScore};

/// Length of an availability bucket: 5 minutes.
pub const BUCKET_MS: u64 = 300_000;

/// The bucket holding `at`.
pub fn bucket_of(at: UnixMillis) -> i64 {
    i64::try_from(at.0 / BUCKET_MS).unwrap_or(i64::MAX)
}

impl ChallengeRow {
    /// This row's entry in the scorer's
    /// [`WorkerInputs::verified`](crate::scoring::WorkerInputs::verified): `(finish, GFLOP/s)`
    /// if it is [`ChallengeStatus::Verified`], credited, and has both; the rule of
    /// [`Store::verified_since`] for a row already loaded. The window is the scorer's to apply.
    pub fn verified_sample(&self) -> Option<(UnixMillis, f64)> {
        if self.status != ChallengeStatus::Verified || !self.credited {
            return None;
        }
        Some((self.finished_at?, self.gflops?))
    }
}

/// A lease as reported through the API.
#[derive(Clone, Debug, PartialEq)]
pub struct NewLease {
    /// BLAKE3 of the request body: a replayed request is refused as a duplicate.
    pub request_id: String,
    /// The leased worker.
    pub worker_key: PublicKey,
    /// Lease score in `[0, 1]`.
    pub score: f64,
    /// Start of the lease.
    pub starts_at: UnixMillis,
    /// End of the lease (exclusive).
    pub ends_at: UnixMillis,
    /// Who reported it: `token` or the signer's hotkey.
    pub submitted_by: String,
}

/// A stored lease.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseRow {
    /// Database id.
    pub id: i64,
    /// When it was recorded.
    pub created_at: UnixMillis,
    /// The lease.
    pub lease: NewLease,
}

/// One worker's line in a score run.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerScoreRecord {
    /// The worker.
    pub worker_key: PublicKey,
    /// Its miner.
    pub miner_hotkey: PublicKey,
    /// Whether it was leased at scoring time.
    pub leased: bool,
    /// Its lease score (0 if not leased).
    pub lease_score: f64,
    /// Verified, credited challenges in the window.
    pub verified: u32,
    /// Online 5-minute buckets in the availability horizon.
    pub online_buckets: u32,
    /// IP changes in the availability horizon.
    pub ip_changes: u32,
    /// Challenges rejected as wrong in the window (SPEC §6): any one makes performance 0.
    pub penalised: u32,
    /// The computed factors.
    pub score: WorkerScore,
}

/// One miner's line in a score run.
#[derive(Clone, Debug, PartialEq)]
pub struct MinerScoreRecord {
    /// The miner.
    pub hotkey: PublicKey,
    /// Its uid, when registered.
    pub uid: Option<u16>,
    /// Whether any of its workers was online.
    pub online: bool,
    /// Its workers.
    pub workers: u32,
    /// Challenge part.
    pub challenge: f64,
    /// Lease part.
    pub lease: f64,
    /// Total.
    pub total: f64,
}

/// One weight of a vector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightEntry {
    /// The uid.
    pub uid: u16,
    /// The hotkey at that uid when the vector was computed.
    pub hotkey: PublicKey,
    /// The u16 weight.
    pub weight: u16,
}

/// Where a weight vector is on its way to the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightSetStatus {
    /// Computed, not yet on chain.
    Pending,
    /// Commit-reveal: the hash is on chain, the reveal is not.
    Committed,
    /// On chain.
    Submitted,
    /// All zero: never submitted (the previous weights stay in force).
    Skipped,
    /// A newer vector was computed before this one could be submitted.
    Superseded,
    /// The chain refused it for good (no permit, not registered, bad version key).
    Failed,
    /// Consensus is on: this validator's own vector, offered to the other validators; never
    /// submitted (the agreed vector is).
    Proposed,
}

impl WeightSetStatus {
    const ALL: [Self; 7] = [
        Self::Pending,
        Self::Committed,
        Self::Submitted,
        Self::Skipped,
        Self::Superseded,
        Self::Failed,
        Self::Proposed,
    ];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Committed => "committed",
            Self::Submitted => "submitted",
            Self::Skipped => "skipped",
            Self::Superseded => "superseded",
            Self::Failed => "failed",
            Self::Proposed => "proposed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A score computation to store, with the weight vector it yields.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRun {
    /// When it was computed.
    pub at: UnixMillis,
    /// The chain block of the metagraph used.
    pub block: Option<u64>,
    /// The scoring constants, as JSON.
    pub config_json: String,
    /// Miner lines.
    pub miners: Vec<MinerScoreRecord>,
    /// Worker lines.
    pub workers: Vec<WorkerScoreRecord>,
    /// The weights over uids.
    pub weights: Vec<WeightEntry>,
}

/// A stored score run.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreRunRow {
    /// Database id.
    pub id: i64,
    /// The run.
    pub run: ScoreRun,
}

/// A stored weight vector.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSetRow {
    /// Database id.
    pub id: i64,
    /// The score run it came from.
    pub run_id: i64,
    /// When it was computed.
    pub created_at: UnixMillis,
    /// Where it is.
    pub status: WeightSetStatus,
    /// Submission attempts so far.
    pub attempts: u32,
    /// The last submission error.
    pub last_error: Option<String>,
    /// Commit-reveal: the reveal (JSON of `veribench_chain::WeightReveal`), kept until revealed.
    pub reveal_json: Option<String>,
    /// Commit-reveal: the block of the commit.
    pub commit_block: Option<u64>,
    /// When it went on chain.
    pub submitted_at: Option<UnixMillis>,
    /// The block that included it.
    pub block: Option<u64>,
    /// The extrinsic hash.
    pub tx_hash: Option<String>,
    /// An agreed vector: the consensus height of the decision it comes from.
    pub decision_height: Option<u64>,
    /// The weights.
    pub entries: Vec<WeightEntry>,
}

/// A change to a weight set after a submission attempt.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightSetUpdate {
    /// New status.
    pub status: WeightSetStatus,
    /// Error of this attempt, if it failed.
    pub error: Option<String>,
    /// Commit-reveal state to keep (reveal JSON, commit block).
    pub commit: Option<(String, u64)>,
    /// Inclusion: (time, block, extrinsic hash).
    pub included: Option<(UnixMillis, u64, String)>,
}

fn block_param(b: u64) -> i64 {
    i64::try_from(b).unwrap_or(i64::MAX)
}

fn opt_block(r: &AnyRow, column: &'static str) -> Result<Option<u64>, StoreError> {
    Ok(row::opt_time(r, column)?.map(|t| t.0))
}

/// The status of a vector to submit: `skipped` when all zero (the previous weights stay in
/// force), else `pending`, superseding older pending vectors (committed ones keep their reveal).
/// Its first statement is a write when it writes at all, as SQLite transactions need.
async fn submission_status(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    weights: &[WeightEntry],
) -> Result<WeightSetStatus, StoreError> {
    if weights.iter().all(|e| e.weight == 0) {
        return Ok(WeightSetStatus::Skipped);
    }
    sqlx::query("UPDATE weight_sets SET status = 'superseded' WHERE status = 'pending'")
        .execute(&mut **tx)
        .await?;
    Ok(WeightSetStatus::Pending)
}

/// Stores the entries of weight set `set_id`.
async fn insert_entries(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    set_id: i64,
    weights: &[WeightEntry],
) -> Result<(), StoreError> {
    for e in weights {
        sqlx::query(
            "INSERT INTO weight_entries (set_id, uid, hotkey, weight) VALUES ($1, $2, $3, $4)",
        )
        .bind(set_id)
        .bind(i64::from(e.uid))
        .bind(e.hotkey.to_string())
        .bind(i64::from(e.weight))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

/// The IP of a peer address `ip:port` / `[v6]:port` (the whole string if it has no port).
pub(super) fn ip_of(address: &str) -> &str {
    match address.parse::<std::net::SocketAddr>() {
        Ok(_) => {
            let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
            host.trim_start_matches('[').trim_end_matches(']')
        }
        Err(_) => address,
    }
}

impl Store {
    // ------------------------------------------------------------ availability

    /// Records that each worker was online in the bucket of its time (idempotent).
    pub(super) async fn record_buckets(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        seen: &[(PublicKey, UnixMillis)],
    ) -> Result<(), StoreError> {
        for (worker, at) in seen {
            sqlx::query(
                "INSERT INTO worker_online_buckets (worker_key, bucket) VALUES ($1, $2) \
                 ON CONFLICT (worker_key, bucket) DO NOTHING",
            )
            .bind(worker.to_string())
            .bind(bucket_of(*at))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }

    /// Records an IP change if `address` has another IP than the worker's last registration.
    /// One `INSERT … SELECT`, so that it is the transaction's first statement and a write (an
    /// SQLite transaction that reads first cannot upgrade to a write under contention).
    pub(super) async fn record_ip_change(
        tx: &mut sqlx::Transaction<'_, sqlx::Any>,
        worker: &PublicKey,
        address: &str,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO worker_ip_changes (worker_key, at, old_ip, new_ip) \
             SELECT worker_key, $2, ip, $3 FROM workers \
             WHERE worker_key = $1 AND ip <> '' AND ip <> $3",
        )
        .bind(worker.to_string())
        .bind(millis(at))
        .bind(ip_of(address))
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Online buckets per worker from `since_bucket` on.
    pub async fn online_bucket_counts(
        &self,
        since_bucket: i64,
    ) -> Result<HashMap<PublicKey, u32>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker_key, COUNT(*) AS n FROM worker_online_buckets WHERE bucket >= $1 \
             GROUP BY worker_key",
        )
        .bind(since_bucket)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((row::key(r, "worker_key")?, row::small(r, "n")?))).collect()
    }

    /// Deletes buckets older than `before_bucket`; returns how many.
    pub async fn prune_online_buckets(&self, before_bucket: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM worker_online_buckets WHERE bucket < $1")
            .bind(before_bucket)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    /// IP changes per worker since `since`.
    pub async fn ip_change_counts(
        &self,
        since: UnixMillis,
    ) -> Result<HashMap<PublicKey, u32>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker_key, COUNT(*) AS n FROM worker_ip_changes WHERE at >= $1 \
             GROUP BY worker_key",
        )
        .bind(millis(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok((row::key(r, "worker_key")?, row::small(r, "n")?))).collect()
    }

    /// Verified, credited challenges finished at or after `since`: (worker, credited miner,
    /// finish, GFLOP/s).
    pub async fn verified_since(
        &self,
        since: UnixMillis,
    ) -> Result<Vec<(PublicKey, PublicKey, UnixMillis, f64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker_key, miner_hotkey, finished_at, gflops FROM challenges \
             WHERE status = 'verified' AND credited = 1 AND finished_at >= $1 \
               AND gflops IS NOT NULL",
        )
        .bind(millis(since))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    row::key(r, "worker_key")?,
                    row::key(r, "miner_hotkey")?,
                    row::time(r, "finished_at")?,
                    row::float(r, "gflops")?,
                ))
            })
            .collect()
    }

    /// Challenges the verifier rejected (failed with a [`RejectCode`] reason) that finished at or
    /// after `since`: (worker, finish, code). Deadline misses, timeouts and other failures are
    /// not returned; which codes are penalised is the scoring's decision.
    pub async fn rejected_since(
        &self,
        since: UnixMillis,
    ) -> Result<Vec<(PublicKey, UnixMillis, RejectCode)>, StoreError> {
        let codes: Vec<String> =
            (0..RejectCode::ALL.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT worker_key, finished_at, reason FROM challenges \
             WHERE status = 'failed' AND finished_at >= $1 AND reason IN ({})",
            codes.join(", ")
        );
        let mut query = sqlx::query(&sql).bind(millis(since));
        for code in RejectCode::ALL {
            query = query.bind(code.as_str());
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let reason = row::text(r, "reason")?;
                let code = RejectCode::parse(&reason)
                    .ok_or(StoreError::Corrupt { column: "reason", value: reason })?;
                Ok((row::key(r, "worker_key")?, row::time(r, "finished_at")?, code))
            })
            .collect()
    }

    // ------------------------------------------------------------------ leases

    /// Stores a lease; `None` if a lease with the same request id exists (a replay).
    pub async fn insert_lease(
        &self,
        lease: &NewLease,
        at: UnixMillis,
    ) -> Result<Option<i64>, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO leases \
                 (request_id, worker_key, score, starts_at, ends_at, created_at, submitted_by) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (request_id) DO NOTHING RETURNING id",
        )
        .bind(&lease.request_id)
        .bind(lease.worker_key.to_string())
        .bind(lease.score)
        .bind(millis(lease.starts_at))
        .bind(millis(lease.ends_at))
        .bind(millis(at))
        .bind(&lease.submitted_by)
        .fetch_optional(&self.pool)
        .await?;
        Ok(id)
    }

    /// Leases in force at `at` (all leases if `None`), newest first, at most `limit`.
    pub async fn leases(
        &self,
        at: Option<UnixMillis>,
        limit: u32,
    ) -> Result<Vec<LeaseRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, request_id, worker_key, score, starts_at, ends_at, created_at, \
                    submitted_by FROM leases \
             WHERE ($1 < 0 OR (starts_at <= $1 AND ends_at > $1)) ORDER BY id DESC LIMIT $2",
        )
        .bind(at.map_or(-1, millis))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseRow {
                    id: row::int(r, "id")?,
                    created_at: row::time(r, "created_at")?,
                    lease: NewLease {
                        request_id: row::text(r, "request_id")?,
                        worker_key: row::key(r, "worker_key")?,
                        score: row::float(r, "score")?,
                        starts_at: row::time(r, "starts_at")?,
                        ends_at: row::time(r, "ends_at")?,
                        submitted_by: row::text(r, "submitted_by")?,
                    },
                })
            })
            .collect()
    }

    // -------------------------------------------------------------- score runs

    /// Stores a run with every component and its weight vector in one transaction; returns
    /// (run id, weight set id). An all-zero vector is stored as `skipped`; a pending one
    /// supersedes older pending vectors (committed ones keep their reveal).
    pub async fn record_score_run(&self, run: &ScoreRun) -> Result<(i64, i64), StoreError> {
        self.record_score_run_as(run, WeightSetStatus::Pending).await
    }

    /// [`Self::record_score_run`] with the run's vector stored as `status`. Only `Pending` gets
    /// the submission rules (all zero → `skipped`, supersedes older pending vectors); any other
    /// status is stored as asked and supersedes nothing. With consensus on the run is recorded
    /// as [`WeightSetStatus::Proposed`], which [`Self::next_weight_set`] never returns.
    pub async fn record_score_run_as(
        &self,
        run: &ScoreRun,
        status: WeightSetStatus,
    ) -> Result<(i64, i64), StoreError> {
        let mut tx = self.pool.begin().await?;
        let run_id: i64 = sqlx::query_scalar(
            "INSERT INTO score_runs (at, block, config_json) VALUES ($1, $2, $3) RETURNING id",
        )
        .bind(millis(run.at))
        .bind(run.block.map(block_param))
        .bind(&run.config_json)
        .fetch_one(&mut *tx)
        .await?;
        for m in &run.miners {
            sqlx::query(
                "INSERT INTO miner_scores \
                     (run_id, hotkey, uid, online, workers, challenge, lease, total) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            )
            .bind(run_id)
            .bind(m.hotkey.to_string())
            .bind(m.uid.map(i64::from))
            .bind(row::flag(m.online))
            .bind(i64::from(m.workers))
            .bind(m.challenge)
            .bind(m.lease)
            .bind(m.total)
            .execute(&mut *tx)
            .await?;
        }
        for w in &run.workers {
            sqlx::query(
                "INSERT INTO worker_scores \
                     (run_id, worker_key, miner_hotkey, leased, lease_score, verified, \
                      online_buckets, ip_changes, penalised, mean_gflops, participation, \
                      availability, performance) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .bind(run_id)
            .bind(w.worker_key.to_string())
            .bind(w.miner_hotkey.to_string())
            .bind(row::flag(w.leased))
            .bind(w.lease_score)
            .bind(i64::from(w.verified))
            .bind(i64::from(w.online_buckets))
            .bind(i64::from(w.ip_changes))
            .bind(i64::from(w.penalised))
            .bind(w.score.mean_gflops)
            .bind(w.score.participation)
            .bind(w.score.availability)
            .bind(w.score.performance)
            .execute(&mut *tx)
            .await?;
        }
        let status = match status {
            WeightSetStatus::Pending => submission_status(&mut tx, &run.weights).await?,
            other => other,
        };
        let set_id: i64 = sqlx::query_scalar(
            "INSERT INTO weight_sets (run_id, created_at, status) VALUES ($1, $2, $3) \
             RETURNING id",
        )
        .bind(run_id)
        .bind(millis(run.at))
        .bind(status.as_str())
        .fetch_one(&mut *tx)
        .await?;
        insert_entries(&mut tx, set_id, &run.weights).await?;
        tx.commit().await?;
        Ok((run_id, set_id))
    }

    /// Stores the vector consensus agreed on at `height` as a weight set to submit, linked to
    /// this validator's run `run_id` of that epoch; returns its id. Like a pending run vector, it
    /// is `skipped` when all zero and otherwise supersedes older pending vectors. Its time is
    /// the decision's when the decision is stored, else the run's.
    pub async fn record_agreed_weights(
        &self,
        run_id: i64,
        height: u64,
        entries: &[WeightEntry],
    ) -> Result<i64, StoreError> {
        let height = i64::try_from(height)
            .map_err(|_| StoreError::OutOfRange { column: "decision_height", value: height })?;
        let mut tx = self.pool.begin().await?;
        let status = submission_status(&mut tx, entries).await?;
        let set_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO weight_sets (run_id, created_at, status, decision_height) \
             SELECT r.id, COALESCE((SELECT d.decided_at FROM decisions d \
                                    WHERE d.height = $3), r.at), $2, $3 \
             FROM score_runs r WHERE r.id = $1 \
             RETURNING id",
        )
        .bind(run_id)
        .bind(status.as_str())
        .bind(height)
        .fetch_optional(&mut *tx)
        .await?;
        // Dropping the transaction rolls the superseding back.
        let set_id = set_id.ok_or(StoreError::UnknownScoreRun(run_id))?;
        insert_entries(&mut tx, set_id, entries).await?;
        tx.commit().await?;
        Ok(set_id)
    }

    /// The newest `limit` score runs with their components, newest first.
    pub async fn score_runs(&self, limit: u32) -> Result<Vec<ScoreRunRow>, StoreError> {
        let runs = sqlx::query(
            "SELECT id, at, block, config_json FROM score_runs ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(runs.len());
        for r in &runs {
            let id = row::int(r, "id")?;
            let miners = sqlx::query(
                "SELECT hotkey, uid, online, workers, challenge, lease, total FROM miner_scores \
                 WHERE run_id = $1 ORDER BY total DESC, hotkey",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|m| {
                Ok(MinerScoreRecord {
                    hotkey: row::key(m, "hotkey")?,
                    uid: m
                        .try_get::<Option<i64>, _>("uid")?
                        .map(|u| {
                            u16::try_from(u).map_err(|_| StoreError::Corrupt {
                                column: "uid",
                                value: u.to_string(),
                            })
                        })
                        .transpose()?,
                    online: row::boolean(m, "online")?,
                    workers: row::small(m, "workers")?,
                    challenge: row::float(m, "challenge")?,
                    lease: row::float(m, "lease")?,
                    total: row::float(m, "total")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let workers = sqlx::query(
                "SELECT worker_key, miner_hotkey, leased, lease_score, verified, online_buckets, \
                        ip_changes, penalised, mean_gflops, participation, availability, \
                        performance \
                 FROM worker_scores WHERE run_id = $1 ORDER BY performance DESC, worker_key",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|w| {
                Ok(WorkerScoreRecord {
                    worker_key: row::key(w, "worker_key")?,
                    miner_hotkey: row::key(w, "miner_hotkey")?,
                    leased: row::boolean(w, "leased")?,
                    lease_score: row::float(w, "lease_score")?,
                    verified: row::small(w, "verified")?,
                    online_buckets: row::small(w, "online_buckets")?,
                    ip_changes: row::small(w, "ip_changes")?,
                    penalised: row::small(w, "penalised")?,
                    score: WorkerScore {
                        mean_gflops: row::float(w, "mean_gflops")?,
                        participation: row::float(w, "participation")?,
                        availability: row::float(w, "availability")?,
                        performance: row::float(w, "performance")?,
                    },
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            // The run's own vector, not an agreed one linked to it.
            let own = "s.run_id = $1 AND s.decision_height IS NULL";
            let weights = match self.weight_sets_where(own, id, 1, false).await?.pop() {
                Some(set) => set.entries,
                None => Vec::new(),
            };
            out.push(ScoreRunRow {
                id,
                run: ScoreRun {
                    at: row::time(r, "at")?,
                    block: opt_block(r, "block")?,
                    config_json: row::text(r, "config_json")?,
                    miners,
                    workers,
                    weights,
                },
            });
        }
        Ok(out)
    }

    // ------------------------------------------------------------- weight sets

    /// The newest `limit` weight vectors, newest first.
    pub async fn weight_sets(&self, limit: u32) -> Result<Vec<WeightSetRow>, StoreError> {
        self.weight_sets_where("$1 = $1", 0, limit, false).await
    }

    /// The vector the submitter should work on: the oldest committed one (its reveal is due),
    /// else the newest pending one.
    pub async fn next_weight_set(&self) -> Result<Option<WeightSetRow>, StoreError> {
        let committed =
            self.weight_sets_where("s.status = 'committed' AND $1 = $1", 0, 1, true).await?;
        if let Some(set) = committed.into_iter().next() {
            return Ok(Some(set));
        }
        Ok(self.weight_sets_where("s.status = 'pending' AND $1 = $1", 0, 1, false).await?.pop())
    }

    async fn weight_sets_where(
        &self,
        condition: &str,
        param: i64,
        limit: u32,
        oldest_first: bool,
    ) -> Result<Vec<WeightSetRow>, StoreError> {
        let order = if oldest_first { "ASC" } else { "DESC" };
        let sets = sqlx::query(&format!(
            "SELECT s.id, s.run_id, s.created_at, s.status, s.attempts, s.last_error, \
                    s.reveal_json, s.commit_block, s.submitted_at, s.block, s.tx_hash, \
                    s.decision_height \
             FROM weight_sets s WHERE {condition} ORDER BY s.id {order} LIMIT $2"
        ))
        .bind(param)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(sets.len());
        for r in &sets {
            let id = row::int(r, "id")?;
            let entries = sqlx::query(
                "SELECT uid, hotkey, weight FROM weight_entries WHERE set_id = $1 ORDER BY uid",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|e| {
                Ok(WeightEntry {
                    uid: row::small(e, "uid")?,
                    hotkey: row::key(e, "hotkey")?,
                    weight: row::small(e, "weight")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let status = row::text(r, "status")?;
            out.push(WeightSetRow {
                id,
                run_id: row::int(r, "run_id")?,
                created_at: row::time(r, "created_at")?,
                status: WeightSetStatus::parse(&status)
                    .ok_or(StoreError::Corrupt { column: "status", value: status })?,
                attempts: row::small(r, "attempts")?,
                last_error: row::opt_text(r, "last_error")?,
                reveal_json: row::opt_text(r, "reveal_json")?,
                commit_block: opt_block(r, "commit_block")?,
                submitted_at: row::opt_time(r, "submitted_at")?,
                block: opt_block(r, "block")?,
                tx_hash: row::opt_text(r, "tx_hash")?,
                decision_height: opt_block(r, "decision_height")?,
                entries,
            });
        }
        Ok(out)
    }

    /// Records a submission attempt's outcome on weight set `id`.
    pub async fn update_weight_set(
        &self,
        id: i64,
        update: &WeightSetUpdate,
    ) -> Result<(), StoreError> {
        let (reveal, commit_block) = match &update.commit {
            Some((json, block)) => (Some(json.as_str()), Some(block_param(*block))),
            None => (None, None),
        };
        let (submitted_at, block, hash) = match &update.included {
            Some((at, block, hash)) => {
                (Some(millis(*at)), Some(block_param(*block)), Some(hash.as_str()))
            }
            None => (None, None, None),
        };
        sqlx::query(
            "UPDATE weight_sets SET status = $2, attempts = attempts + 1, last_error = $3, \
                 reveal_json = COALESCE($4, reveal_json), \
                 commit_block = COALESCE($5, commit_block), \
                 submitted_at = COALESCE($6, submitted_at), block = COALESCE($7, block), \
                 tx_hash = COALESCE($8, tx_hash) \
             WHERE id = $1",
        )
        .bind(id)
        .bind(update.status.as_str())
        .bind(update.error.as_deref())
        .bind(reveal)
        .bind(commit_block)
        .bind(submitted_at)
        .bind(block)
        .bind(hash)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::ip_of;

    #[test]
    fn ip_of_strips_ports_and_brackets() {
        assert_eq!(ip_of("10.0.0.1:5000"), "10.0.0.1");
        assert_eq!(ip_of("[::1]:80"), "::1");
        assert_eq!(ip_of("not an address"), "not an address");
    }
}
