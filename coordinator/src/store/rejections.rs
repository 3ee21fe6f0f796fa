//! Counted refusals: one row per (peer address, kind, registered worker), written in batches by
//! the service ([`crate::refusals`]) and bounded by age and by a row cap.

use veribench_protocol::UnixMillis;

use super::row::{self, REJECTION_COLUMNS, millis};
use super::{Rejection, Store, StoreError};

/// Adds a tally to its group's row: counts add up, the span widens, and the detail and claimed
/// key of the more recent refusal win (PostgreSQL and SQLite both read `rejections.*` as the row
/// before the update in every assignment).
const UPSERT: &str = "INSERT INTO rejections \
         (peer, kind, worker_key, last_claimed, count, first_at, last_at, detail) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
     ON CONFLICT (peer, kind, worker_key) DO UPDATE SET \
         count = rejections.count + excluded.count, \
         first_at = CASE WHEN excluded.first_at < rejections.first_at \
             THEN excluded.first_at ELSE rejections.first_at END, \
         last_at = CASE WHEN excluded.last_at > rejections.last_at \
             THEN excluded.last_at ELSE rejections.last_at END, \
         detail = CASE WHEN excluded.last_at >= rejections.last_at \
             THEN excluded.detail ELSE rejections.detail END, \
         last_claimed = CASE WHEN excluded.last_at >= rejections.last_at \
                 AND excluded.last_claimed IS NOT NULL \
             THEN excluded.last_claimed ELSE rejections.last_claimed END";

impl Store {
    /// Adds each tally to its group's row, creating the row if needed, in one transaction.
    pub async fn record_rejections(&self, tallies: &[Rejection]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for r in tallies {
            sqlx::query(UPSERT)
                .bind(&r.peer)
                .bind(&r.kind)
                .bind(r.worker_key.map_or_else(String::new, |k| k.to_string()))
                .bind(r.last_claimed.map(|k| k.to_string()))
                .bind(i64::try_from(r.count).unwrap_or(i64::MAX))
                .bind(millis(r.first_at))
                .bind(millis(r.last_at))
                .bind(&r.detail)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Up to `limit` groups, most recently refused first.
    pub async fn rejections(&self, limit: u32) -> Result<Vec<Rejection>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {REJECTION_COLUMNS} FROM rejections ORDER BY last_at DESC, id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row::rejection).collect()
    }

    /// Deletes the groups last refused before `older_than`, then the least recently refused
    /// beyond the newest `max_rows`; returns how many rows went.
    pub async fn prune_rejections(
        &self,
        older_than: UnixMillis,
        max_rows: u64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let aged = sqlx::query("DELETE FROM rejections WHERE last_at < $1")
            .bind(millis(older_than))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The newest row past the cap; it and everything older go.
        let first_extra = sqlx::query(
            "SELECT last_at, id FROM rejections ORDER BY last_at DESC, id DESC LIMIT 1 OFFSET $1",
        )
        .bind(i64::try_from(max_rows).unwrap_or(i64::MAX))
        .fetch_optional(&mut *tx)
        .await?;
        let capped = match first_extra {
            None => 0,
            Some(r) => sqlx::query(
                "DELETE FROM rejections WHERE last_at < $1 OR (last_at = $1 AND id <= $2)",
            )
            .bind(row::int(&r, "last_at")?)
            .bind(row::int(&r, "id")?)
            .execute(&mut *tx)
            .await?
            .rows_affected(),
        };
        tx.commit().await?;
        Ok(aged + capped)
    }
}
