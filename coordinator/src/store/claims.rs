//! Device claims: which worker identity holds a device key.
//!
//! Device keys are names a worker reports about itself, and anyone can copy one from
//! `GET /api/v1/workers`, so a claim proves precedence, not possession: the oldest active claim
//! holds the device, another identity claiming it meanwhile is refused, and a claim lapses after
//! a configured time without activity (SPEC §2.1).
//!
//! A claim is active while it was made (registered) after `since`, or while its worker still
//! offers the device and is online or was seen after `since`, where `since` is now minus the
//! expiry. [`active`] is that predicate, written once for every query.

use sqlx::Executor;
use veribench_protocol::{DeviceKey, PublicKey, UnixMillis};

use super::row::{self, millis};
use super::{DbKind, Store, StoreError};

/// A device another worker identity holds, so a claim on it was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldDevice {
    /// The device.
    pub device: DeviceKey,
    /// The identity holding it (the oldest active claim).
    pub holder: PublicKey,
}

/// SQL: whether the claim row `claim` (a table name or alias of `device_claims`) is active,
/// `since` being the parameter holding the earliest activity that still counts.
fn active(claim: &str, since: &str) -> String {
    format!(
        "({claim}.last_claimed_at >= {since} OR EXISTS (\
             SELECT 1 FROM workers aw JOIN worker_devices ad ON ad.worker_key = aw.worker_key \
             WHERE aw.worker_key = {claim}.worker_key AND ad.device_key = {claim}.device_key \
               AND (aw.online = 1 OR aw.last_seen >= {since})))"
    )
}

/// The oldest active claim on `device`: its worker identity.
async fn holder<'e, E>(
    executor: E,
    device: &DeviceKey,
    since: UnixMillis,
) -> Result<Option<PublicKey>, StoreError>
where
    E: Executor<'e, Database = sqlx::Any>,
{
    let r = sqlx::query(&format!(
        "SELECT c.worker_key FROM device_claims c WHERE c.device_key = $1 AND {} \
         ORDER BY c.first_claimed_at, c.worker_key LIMIT 1",
        active("c", "$2")
    ))
    .bind(device.as_str())
    .bind(millis(since))
    .fetch_optional(executor)
    .await?;
    r.as_ref().map(|r| row::key(r, "worker_key")).transpose()
}

impl Store {
    /// Claims `devices` for `worker_key` (delegated by `miner_hotkey`) at `at`, counting as
    /// active every claim with activity after `active_since`.
    ///
    /// If another identity holds one of the devices (the oldest active claim on it is not this
    /// identity's), nothing is recorded and those devices are returned with their holders.
    /// Otherwise the claims are recorded, the lapsed claims of other identities on these devices
    /// are deleted, and the result is empty.
    ///
    /// Claims are serialised (`BEGIN IMMEDIATE` on SQLite, a table lock on PostgreSQL), so of
    /// two identities claiming a free device at once exactly one gets it.
    pub async fn claim_devices(
        &self,
        worker_key: &PublicKey,
        miner_hotkey: &PublicKey,
        devices: &[DeviceKey],
        at: UnixMillis,
        active_since: UnixMillis,
    ) -> Result<Vec<HeldDevice>, StoreError> {
        let mut unique: Vec<&DeviceKey> = Vec::with_capacity(devices.len());
        for device in devices {
            if !unique.contains(&device) {
                unique.push(device);
            }
        }
        let mut tx = match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => {
                let mut tx = self.pool.begin().await?;
                // Conflicts with itself and with writers, not with readers (credit checks).
                tx.execute("LOCK TABLE device_claims IN SHARE ROW EXCLUSIVE MODE").await?;
                tx
            }
        };
        let mut held = Vec::new();
        for device in &unique {
            match holder(&mut *tx, device, active_since).await? {
                Some(holder) if holder != *worker_key => {
                    held.push(HeldDevice { device: (*device).clone(), holder });
                }
                _ => {}
            }
        }
        if !held.is_empty() {
            tx.rollback().await?;
            return Ok(held);
        }
        let (worker, miner) = (worker_key.to_string(), miner_hotkey.to_string());
        let prune = format!(
            "DELETE FROM device_claims WHERE device_key = $1 AND worker_key <> $2 AND NOT {}",
            active("device_claims", "$3")
        );
        for device in &unique {
            sqlx::query(
                "INSERT INTO device_claims \
                     (device_key, worker_key, miner_hotkey, first_claimed_at, last_claimed_at) \
                 VALUES ($1, $2, $3, $4, $4) \
                 ON CONFLICT (device_key, worker_key) DO UPDATE SET \
                     miner_hotkey = excluded.miner_hotkey, \
                     last_claimed_at = excluded.last_claimed_at",
            )
            .bind(device.as_str())
            .bind(&worker)
            .bind(&miner)
            .bind(millis(at))
            .execute(&mut *tx)
            .await?;
            sqlx::query(&prune)
                .bind(device.as_str())
                .bind(&worker)
                .bind(millis(active_since))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    /// The identity holding `device`: the oldest claim with activity after `active_since`.
    pub async fn device_holder(
        &self,
        device: &DeviceKey,
        active_since: UnixMillis,
    ) -> Result<Option<PublicKey>, StoreError> {
        holder(&self.pool, device, active_since).await
    }

    /// Every device with more than one active claim, sorted by key: devices whose credit the
    /// oldest claim takes (claims made before refusals existed, or by hand). Empty normally.
    pub async fn conflicted_devices(
        &self,
        active_since: UnixMillis,
    ) -> Result<Vec<DeviceKey>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT c.device_key FROM device_claims c WHERE {} \
             GROUP BY c.device_key HAVING COUNT(*) > 1",
            active("c", "$1")
        ))
        .bind(millis(active_since))
        .fetch_all(&self.pool)
        .await?;
        let mut devices =
            rows.iter().map(|r| row::device(r, "device_key")).collect::<Result<Vec<_>, _>>()?;
        // Byte order on both databases, whatever PostgreSQL's collation.
        devices.sort();
        Ok(devices)
    }
}
