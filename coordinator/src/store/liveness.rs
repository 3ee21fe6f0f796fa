//! Batched liveness: heartbeats are buffered by the service and written here in one transaction,
//! so their cost does not grow with the number of workers times the heartbeat rate.

use veribench_protocol::{PublicKey, UnixMillis};

use super::row::millis;
use super::{Store, StoreError};

impl Store {
    /// Advances `last_seen` of each worker (never backwards) and records its online 5-minute
    /// bucket, in one transaction; returns how many workers were updated.
    pub async fn touch_many(&self, seen: &[(PublicKey, UnixMillis)]) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut updated = 0;
        for (worker, at) in seen {
            let done = sqlx::query(
                "UPDATE workers SET last_seen = CASE WHEN last_seen < $2 THEN $2 ELSE last_seen END \
                 WHERE worker_key = $1",
            )
            .bind(worker.to_string())
            .bind(millis(*at))
            .execute(&mut *tx)
            .await?;
            updated += done.rows_affected();
        }
        Store::record_buckets(&mut tx, seen).await?;
        tx.commit().await?;
        Ok(updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::WorkerRecord;

    #[tokio::test]
    async fn touch_many_advances_last_seen_in_one_batch_and_never_backwards() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("c.db").display()))
            .await
            .expect("store");
        let keys: Vec<PublicKey> = (1..=3u8).map(|i| PublicKey([i; 32])).collect();
        for key in &keys {
            let record = WorkerRecord {
                worker_key: *key,
                miner_hotkey: PublicKey([9; 32]),
                name: "w".into(),
                address: "127.0.0.1:1".into(),
                hardware_json: "{}".into(),
                devices: vec![],
                clock_skew_ms: None,
            };
            store.upsert_worker(&record, UnixMillis(100)).await.expect("upsert");
        }
        let batch = [
            (keys[0], UnixMillis(500)),
            (keys[1], UnixMillis(50)),
            (PublicKey([7; 32]), UnixMillis(9)),
        ];
        assert_eq!(store.touch_many(&batch).await.expect("touch"), 2);
        let seen: Vec<(PublicKey, u64)> = store
            .workers()
            .await
            .expect("workers")
            .iter()
            .map(|w| (w.record.worker_key, w.last_seen.0))
            .collect();
        assert!(seen.contains(&(keys[0], 500)));
        assert!(seen.contains(&(keys[1], 100)), "never moves backwards: {seen:?}");
        assert!(seen.contains(&(keys[2], 100)));
    }
}
