//! The bounded reads behind the status pages ([`crate::status`]): every query is limited by a
//! time window on an indexed column, by one miner on an indexed column, or by `LIMIT`.

use sqlx::any::AnyRow;
use veribench_protocol::{PublicKey, UnixMillis};

use super::queries::count;
use super::row::{self, CHALLENGE_COLUMNS, millis};
use super::{ChallengeRow, MinerRow, Store, StoreError, WorkerRow};

/// Challenges that reached a terminal status in a time range.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Throughput {
    /// Verified (credited or not).
    pub verified: u64,
    /// Failed, for any reason.
    pub failed: u64,
}

/// One verified challenge's measured rate: a point of a worker's GFLOP/s plot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RateSample {
    /// The worker.
    pub worker_key: PublicKey,
    /// When it was verified.
    pub at: UnixMillis,
    /// Its GFLOP/s (GOP/s for int8).
    pub gflops: f64,
}

/// A worker's change of IP between two registrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpChange {
    /// The worker.
    pub worker_key: PublicKey,
    /// When the new address registered.
    pub at: UnixMillis,
    /// The previous IP.
    pub old_ip: String,
    /// The new IP.
    pub new_ip: String,
}

/// A lease as the status pages show it: without its request id.
#[derive(Clone, Debug, PartialEq)]
pub struct LeaseSummary {
    /// The leased worker.
    pub worker_key: PublicKey,
    /// Lease score in `[0, 1]`.
    pub score: f64,
    /// Start.
    pub starts_at: UnixMillis,
    /// End (exclusive).
    pub ends_at: UnixMillis,
    /// When it was recorded.
    pub created_at: UnixMillis,
    /// `token` or the signer's hotkey.
    pub submitted_by: String,
}

impl Store {
    /// Challenges finished at or after `since` (the `challenges_finished_at` index).
    pub async fn throughput_since(&self, since: UnixMillis) -> Result<Throughput, StoreError> {
        let r = sqlx::query(
            "SELECT COUNT(CASE WHEN status = 'verified' THEN 1 END) AS verified, \
                    COUNT(CASE WHEN status = 'failed' THEN 1 END) AS failed \
             FROM challenges WHERE finished_at >= $1",
        )
        .bind(millis(since))
        .fetch_one(&self.pool)
        .await?;
        Ok(Throughput { verified: count(&r, "verified")?, failed: count(&r, "failed")? })
    }

    /// [`Store::miners`] over the challenges finished at or after `since` only (verified and
    /// failed as there: credited results, failures the worker is answerable for), ordered by
    /// hotkey. A miner appears when it has a registered worker or a challenge in the window.
    pub async fn miners_since(&self, since: UnixMillis) -> Result<Vec<MinerRow>, StoreError> {
        self.miners_of(Some(since)).await
    }

    /// The workers registered under `miner`, with their devices, ordered by key.
    pub async fn miner_workers(&self, miner: &PublicKey) -> Result<Vec<WorkerRow>, StoreError> {
        self.workers_of(Some(miner)).await
    }

    /// `miner`'s newest `limit` challenges, newest first (the `challenges_miner_id` index).
    pub async fn miner_challenges(
        &self,
        miner: &PublicKey,
        limit: u32,
    ) -> Result<Vec<ChallengeRow>, StoreError> {
        let sql = format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE miner_hotkey = $1 \
             ORDER BY id DESC LIMIT $2"
        );
        self.miner_listing(&sql, miner, limit, row::challenge).await
    }

    /// The measured rates of `miner`'s verified challenges finished at or after `since`, at
    /// most the newest `limit`, oldest first.
    pub async fn miner_rates(
        &self,
        miner: &PublicKey,
        since: UnixMillis,
        limit: u32,
    ) -> Result<Vec<RateSample>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker_key, finished_at, gflops FROM challenges \
             WHERE miner_hotkey = $1 AND status = 'verified' AND finished_at >= $2 \
               AND gflops IS NOT NULL \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(miner.to_string())
        .bind(millis(since))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(RateSample {
                    worker_key: row::key(r, "worker_key")?,
                    at: row::time(r, "finished_at")?,
                    gflops: row::float(r, "gflops")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        out.sort_by_key(|s| s.at);
        Ok(out)
    }

    /// The newest `limit` IP changes of `miner`'s workers, newest first.
    pub async fn miner_ip_changes(
        &self,
        miner: &PublicKey,
        limit: u32,
    ) -> Result<Vec<IpChange>, StoreError> {
        let sql = format!(
            "SELECT worker_key, at, old_ip, new_ip FROM worker_ip_changes \
             WHERE {OF_MINERS_WORKERS} ORDER BY at DESC, id DESC LIMIT $2"
        );
        self.miner_listing(&sql, miner, limit, ip_change).await
    }

    /// The newest `limit` leases of `miner`'s workers, newest first.
    pub async fn miner_leases(
        &self,
        miner: &PublicKey,
        limit: u32,
    ) -> Result<Vec<LeaseSummary>, StoreError> {
        let sql = format!(
            "SELECT worker_key, score, starts_at, ends_at, created_at, submitted_by FROM leases \
             WHERE {OF_MINERS_WORKERS} ORDER BY id DESC LIMIT $2"
        );
        self.miner_listing(&sql, miner, limit, lease_summary).await
    }

    /// The rows of `sql`, whose `$1` is `miner` and `$2` a `LIMIT` of `limit`, each read by
    /// `read`.
    async fn miner_listing<T>(
        &self,
        sql: &str,
        miner: &PublicKey,
        limit: u32,
        read: fn(&AnyRow) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let rows = sqlx::query(sql)
            .bind(miner.to_string())
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(read).collect()
    }
}

/// The rows of `$1`'s workers, for tables keyed by `worker_key`.
const OF_MINERS_WORKERS: &str =
    "worker_key IN (SELECT worker_key FROM workers WHERE miner_hotkey = $1)";

fn ip_change(r: &AnyRow) -> Result<IpChange, StoreError> {
    Ok(IpChange {
        worker_key: row::key(r, "worker_key")?,
        at: row::time(r, "at")?,
        old_ip: row::text(r, "old_ip")?,
        new_ip: row::text(r, "new_ip")?,
    })
}

fn lease_summary(r: &AnyRow) -> Result<LeaseSummary, StoreError> {
    Ok(LeaseSummary {
        worker_key: row::key(r, "worker_key")?,
        score: row::float(r, "score")?,
        starts_at: row::time(r, "starts_at")?,
        ends_at: row::time(r, "ends_at")?,
        created_at: row::time(r, "created_at")?,
        submitted_by: row::text(r, "submitted_by")?,
    })
}
