//! Registration nonces already used, so a recorded `Register` frame cannot be replayed, not even
//! to a restarted coordinator, while its timestamp is still within the accepted clock skew.

use veribench_protocol::{PublicKey, UnixMillis};

use super::row::millis;
use super::{Store, StoreError};

/// A nonce as stored: its 64 bits as a `BIGINT` (a bijection, so distinct nonces stay distinct).
fn nonce_param(nonce: u64) -> i64 {
    i64::from_ne_bytes(nonce.to_ne_bytes())
}

impl Store {
    /// Records that `worker` used `nonce` in a registration signed for `at`. Returns `false`,
    /// storing nothing, when the pair was recorded before: the check and the insert are one
    /// statement, so of two concurrent registrations with one nonce exactly one gets `true`.
    pub async fn use_registration_nonce(
        &self,
        worker: &PublicKey,
        nonce: u64,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO registration_nonces (worker_key, nonce, registered_at) \
             VALUES ($1, $2, $3) ON CONFLICT (worker_key, nonce) DO NOTHING",
        )
        .bind(worker.to_string())
        .bind(nonce_param(nonce))
        .bind(millis(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Forgets nonces of registrations signed before `older_than` (too old to be accepted
    /// anyway); returns how many went.
    pub async fn prune_registration_nonces(
        &self,
        older_than: UnixMillis,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM registration_nonces WHERE registered_at < $1")
            .bind(millis(older_than))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }
}
