//! Circuit artifact fetch attempts (`circuit_fetches`), one row per
//! [`veribench_circuit::FetchRecord`].

use veribench_circuit::{ArtifactHash, FetchRecord};
use veribench_protocol::PublicKey;

use super::row::{self, millis};
use super::{Store, StoreError};

impl Store {
    /// Stores one fetch attempt.
    pub async fn record_fetch(&self, r: &FetchRecord) -> Result<(), StoreError> {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        sqlx::query(
            "INSERT INTO circuit_fetches \
                 (miner_hotkey, hash, outcome, reason, bytes, duration_ms, at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.miner.to_string())
        .bind(r.hash.to_hex())
        .bind(&r.outcome)
        .bind(r.reason.as_deref())
        .bind(int(r.bytes))
        .bind(int(r.duration_ms))
        .bind(millis(r.at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Up to `limit` fetch attempts, newest first, of one miner or of all.
    pub async fn fetches(
        &self,
        miner: Option<&PublicKey>,
        limit: u32,
    ) -> Result<Vec<FetchRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT miner_hotkey, hash, outcome, reason, bytes, duration_ms, at \
             FROM circuit_fetches WHERE ($1 = '' OR miner_hotkey = $1) \
             ORDER BY at DESC, id DESC LIMIT $2",
        )
        .bind(miner.map(ToString::to_string).unwrap_or_default())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let hash = row::text(r, "hash")?;
                Ok(FetchRecord {
                    miner: row::key(r, "miner_hotkey")?,
                    hash: hash
                        .parse::<ArtifactHash>()
                        .map_err(|_| StoreError::Corrupt { column: "hash", value: hash })?,
                    outcome: row::text(r, "outcome")?,
                    reason: row::opt_text(r, "reason")?,
                    bytes: row::small(r, "bytes")?,
                    duration_ms: row::small(r, "duration_ms")?,
                    at: row::time(r, "at")?,
                })
            })
            .collect()
    }
}
