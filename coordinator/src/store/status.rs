//! The bounded reads behind the status pages ([`crate::status`]): every query is limited by a
//! time window on an indexed column, by one miner on an indexed column, or by `LIMIT`.

use std::collections::HashMap;

use veribench_protocol::{PublicKey, UnixMillis};

use super::queries::not_counted_failures;
use super::row::{self, CHALLENGE_COLUMNS, millis};
use super::{ChallengeRow, MinerRow, Store, StoreError, WorkerRecord, WorkerRow};
use crate::failure::Failure;

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

fn count(r: &sqlx::any::AnyRow, column: &'static str) -> Result<u64, StoreError> {
    let v = row::int(r, column)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt { column, value: v.to_string() })
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
        let mut miners: HashMap<PublicKey, MinerRow> = HashMap::new();
        let empty = |hotkey| MinerRow {
            hotkey,
            workers: 0,
            online_workers: 0,
            verified: 0,
            failed: 0,
            busy: 0,
            mean_gflops: 0.0,
        };
        let workers = sqlx::query(
            "SELECT miner_hotkey, COUNT(*) AS workers, \
                    COUNT(CASE WHEN online = 1 THEN 1 END) AS online_workers \
             FROM workers GROUP BY miner_hotkey",
        )
        .fetch_all(&self.pool)
        .await?;
        for r in &workers {
            let hotkey = row::key(r, "miner_hotkey")?;
            let m = miners.entry(hotkey).or_insert_with(|| empty(hotkey));
            m.workers = u32::try_from(count(r, "workers")?).unwrap_or(u32::MAX);
            m.online_workers = u32::try_from(count(r, "online_workers")?).unwrap_or(u32::MAX);
        }
        let challenges = sqlx::query(&format!(
            "SELECT miner_hotkey, \
                    COUNT(CASE WHEN status = 'verified' AND credited = 1 THEN 1 END) AS verified, \
                    COUNT(CASE WHEN status = 'failed' AND reason NOT IN {NOT_COUNTED} \
                        THEN 1 END) AS failed, \
                    COUNT(CASE WHEN status = 'failed' AND reason = '{BUSY}' THEN 1 END) AS busy, \
                    AVG(CASE WHEN status = 'verified' AND credited = 1 THEN gflops END) \
                        AS mean_gflops \
             FROM challenges WHERE finished_at >= $1 GROUP BY miner_hotkey",
            NOT_COUNTED = not_counted_failures(),
            BUSY = Failure::Busy.as_str(),
        ))
        .bind(millis(since))
        .fetch_all(&self.pool)
        .await?;
        for r in &challenges {
            let hotkey = row::key(r, "miner_hotkey")?;
            let m = miners.entry(hotkey).or_insert_with(|| empty(hotkey));
            m.verified = count(r, "verified")?;
            m.failed = count(r, "failed")?;
            m.busy = count(r, "busy")?;
            m.mean_gflops = row::opt_float(r, "mean_gflops")?.unwrap_or(0.0);
        }
        let mut out: Vec<MinerRow> = miners.into_values().collect();
        out.sort_by_key(|m| m.hotkey);
        Ok(out)
    }

    /// The workers registered under `miner`, with their devices, ordered by key.
    pub async fn miner_workers(&self, miner: &PublicKey) -> Result<Vec<WorkerRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT w.worker_key, w.miner_hotkey, w.name, w.address, w.hardware_json, w.online, \
                    w.connected_at, w.last_seen, w.clock_skew_ms, d.device_key \
             FROM workers w LEFT JOIN worker_devices d ON d.worker_key = w.worker_key \
             WHERE w.miner_hotkey = $1 ORDER BY w.worker_key, d.position",
        )
        .bind(miner.to_string())
        .fetch_all(&self.pool)
        .await?;
        let mut out: Vec<WorkerRow> = Vec::new();
        for r in &rows {
            let worker_key = row::key(r, "worker_key")?;
            if out.last().map(|w| w.record.worker_key) != Some(worker_key) {
                out.push(WorkerRow {
                    record: WorkerRecord {
                        worker_key,
                        miner_hotkey: row::key(r, "miner_hotkey")?,
                        name: row::text(r, "name")?,
                        address: row::text(r, "address")?,
                        hardware_json: row::text(r, "hardware_json")?,
                        devices: Vec::new(),
                        clock_skew_ms: row::opt_int(r, "clock_skew_ms")?,
                    },
                    online: row::boolean(r, "online")?,
                    connected_at: row::time(r, "connected_at")?,
                    last_seen: row::time(r, "last_seen")?,
                });
            }
            if let (Some(device), Some(current)) = (row::opt_text(r, "device_key")?, out.last_mut())
            {
                current.record.devices.push(row::parse_device("device_key", device)?);
            }
        }
        Ok(out)
    }

    /// `miner`'s newest `limit` challenges, newest first (the `challenges_miner_id` index).
    pub async fn miner_challenges(
        &self,
        miner: &PublicKey,
        limit: u32,
    ) -> Result<Vec<ChallengeRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE miner_hotkey = $1 \
             ORDER BY id DESC LIMIT $2"
        ))
        .bind(miner.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::challenge).collect()
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
        let rows = sqlx::query(
            "SELECT worker_key, at, old_ip, new_ip FROM worker_ip_changes \
             WHERE worker_key IN (SELECT worker_key FROM workers WHERE miner_hotkey = $1) \
             ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(miner.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(IpChange {
                    worker_key: row::key(r, "worker_key")?,
                    at: row::time(r, "at")?,
                    old_ip: row::text(r, "old_ip")?,
                    new_ip: row::text(r, "new_ip")?,
                })
            })
            .collect()
    }

    /// The newest `limit` leases of `miner`'s workers, newest first.
    pub async fn miner_leases(
        &self,
        miner: &PublicKey,
        limit: u32,
    ) -> Result<Vec<LeaseSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT worker_key, score, starts_at, ends_at, created_at, submitted_by FROM leases \
             WHERE worker_key IN (SELECT worker_key FROM workers WHERE miner_hotkey = $1) \
             ORDER BY id DESC LIMIT $2",
        )
        .bind(miner.to_string())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(LeaseSummary {
                    worker_key: row::key(r, "worker_key")?,
                    score: row::float(r, "score")?,
                    starts_at: row::time(r, "starts_at")?,
                    ends_at: row::time(r, "ends_at")?,
                    created_at: row::time(r, "created_at")?,
                    submitted_by: row::text(r, "submitted_by")?,
                })
            })
            .collect()
    }
}
