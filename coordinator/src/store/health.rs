//! How the database is doing, as the coordinator sees it: a write probe every second plus every
//! failure its own writes meet. `/healthz` reads this rather than querying, so it answers at once
//! during an outage; rounds are not started while it says the store is failing; and a connection
//! that was open when a disk or I/O fault was seen is not handed out again (SQLite keeps a
//! connection's write lock after some failed commits, and only closing it releases the lock).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use veribench_protocol::UnixMillis;

#[cfg(test)]
use super::queries::SQLITE_POOL_CONNECTIONS;
use super::row::millis;
use super::{Store, StoreError};

/// Longest error text kept for the health report.
const MAX_ERROR_CHARS: usize = 200;

/// SQLite primary result codes that mean the database cannot take writes now: BUSY, LOCKED,
/// READONLY, IOERR, CORRUPT, FULL, CANTOPEN, NOTADB.
const SQLITE_OUTAGE_CODES: [i64; 8] = [5, 6, 8, 10, 11, 13, 14, 26];

/// PostgreSQL SQLSTATE classes that mean the server cannot serve us now: connection exceptions,
/// insufficient resources (disk full), operator intervention (shutdown), system errors.
const POSTGRES_OUTAGE_CLASSES: [&str; 4] = ["08", "53", "57", "58"];

/// Whether `e` says the database is unavailable or faulty (rather than that a query was wrong):
/// such an error marks the store as failing, and the connections open at the time as suspect.
pub fn is_outage(e: &StoreError) -> bool {
    let StoreError::Database(e) = e else { return false };
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            match code.parse::<i64>() {
                // SQLite: the extended code's low byte is the primary code.
                Ok(extended) => SQLITE_OUTAGE_CODES.contains(&(extended & 0xff)),
                Err(_) => POSTGRES_OUTAGE_CLASSES.iter().any(|class| code.starts_with(class)),
            }
        }
        _ => false,
    }
}

/// The store's health as last observed.
#[derive(Clone, Debug, PartialEq)]
pub struct HealthReport {
    /// Whether the last observation was a success.
    pub ok: bool,
    /// How long the store has been failing, when it is.
    pub failing_for: Option<Duration>,
    /// The last outage error, while failing.
    pub error: Option<String>,
    /// Time since the last successful write or probe, if any.
    pub last_ok_ago: Option<Duration>,
}

#[derive(Debug, Default)]
struct Observed {
    failing_since: Option<Instant>,
    error: Option<String>,
    last_ok: Option<Instant>,
}

/// Shared by every clone of a [`Store`] and by its pool's connection hooks.
#[derive(Debug)]
pub struct StoreHealth {
    origin: Instant,
    /// When (milliseconds after `origin`, plus one) the last outage was seen; 0 for never.
    /// Connections older than that are closed instead of reused.
    fault_at: AtomicU64,
    observed: Mutex<Observed>,
}

impl Default for StoreHealth {
    fn default() -> Self {
        Self { origin: Instant::now(), fault_at: AtomicU64::new(0), observed: Mutex::default() }
    }
}

impl StoreHealth {
    fn observed(&self) -> std::sync::MutexGuard<'_, Observed> {
        self.observed.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn since_origin(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// A write went through.
    pub fn record_ok(&self) {
        let mut o = self.observed();
        o.failing_since = None;
        o.error = None;
        o.last_ok = Some(Instant::now());
    }

    /// Notes a failed call: an outage marks the store failing and every open connection suspect;
    /// other errors (a constraint, a corrupt value) say nothing about availability.
    pub fn record_error(&self, e: &StoreError) {
        if is_outage(e) {
            self.record_outage(e.to_string());
        }
    }

    /// Notes that the database did not answer or failed in a way that calls for fresh connections.
    pub fn record_outage(&self, error: String) {
        self.fault_at.store(self.since_origin() + 1, Ordering::Release);
        let mut o = self.observed();
        o.failing_since.get_or_insert_with(Instant::now);
        o.error = Some(error.chars().take(MAX_ERROR_CHARS).collect());
    }

    /// Records `result`'s outcome (a write's) and passes it on.
    pub fn observe<T>(&self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        match &result {
            Ok(_) => self.record_ok(),
            Err(e) => self.record_error(e),
        }
        result
    }

    /// Whether the store is taking writes, as last observed.
    pub fn is_ok(&self) -> bool {
        self.observed().failing_since.is_none()
    }

    /// The last observation.
    pub fn report(&self) -> HealthReport {
        let o = self.observed();
        HealthReport {
            ok: o.failing_since.is_none(),
            failing_for: o.failing_since.map(|t| t.elapsed()),
            error: o.error.clone(),
            last_ok_ago: o.last_ok.map(|t| t.elapsed()),
        }
    }

    /// Whether a connection of age `age` was open when the last outage was seen, and so must
    /// not be reused.
    pub(super) fn is_suspect(&self, age: Duration) -> bool {
        let fault = self.fault_at.load(Ordering::Acquire);
        if fault == 0 {
            return false;
        }
        let opened =
            self.since_origin().saturating_sub(u64::try_from(age.as_millis()).unwrap_or(0));
        opened < fault
    }
}

impl Store {
    /// What the coordinator has observed of this database.
    pub fn health(&self) -> &StoreHealth {
        &self.health
    }

    /// A write that proves the database takes writes now; its outcome is recorded in
    /// [`Store::health`]. A read would pass on a full disk.
    pub async fn probe(&self, at: UnixMillis) -> Result<(), StoreError> {
        let written = sqlx::query("UPDATE store_probe SET at = $1 WHERE id = 1")
            .bind(millis(at))
            .execute(&self.pool)
            .await
            .map(|_| ())
            .map_err(StoreError::from);
        self.health.observe(written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_marks_older_connections_suspect_and_a_success_clears_the_failure() {
        let h = StoreHealth::default();
        assert!(h.is_ok());
        assert!(!h.is_suspect(Duration::from_secs(3600)));
        std::thread::sleep(Duration::from_millis(5));
        h.record_error(&StoreError::Database(sqlx::Error::PoolTimedOut));
        let r = h.report();
        assert!(!r.ok && r.failing_for.is_some(), "{r:?}");
        assert!(r.error.as_deref().is_some_and(|e| e.contains("timed out")), "{r:?}");
        // Opened before the fault: suspect. Opened after it (age 0 now, a little later): not.
        assert!(h.is_suspect(Duration::from_millis(4)));
        std::thread::sleep(Duration::from_millis(3));
        assert!(!h.is_suspect(Duration::ZERO));
        h.record_ok();
        assert!(h.is_ok() && h.report().error.is_none());
    }

    /// SQLite ends a transaction by itself after some failures (SQLITE_FULL, SQLITE_IOERR),
    /// behind sqlx's back: sqlx's rollback then fails and it still counts the connection as in a
    /// transaction. Reused, such a connection opens savepoints instead of transactions, and
    /// `ROLLBACK TO` leaves the transaction open with the database's write lock held, so every
    /// other write fails with `database is locked` until a restart. A connection sqlx counts
    /// as inside a transaction when it is released is closed instead.
    #[tokio::test]
    async fn a_connection_left_inside_a_transaction_is_closed_not_reused() {
        use sqlx::Connection;
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("c.db").display());
        let store = Store::connect(&url).await.expect("store");
        {
            let mut conn = store.pool.acquire().await.expect("connection");
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query("UPDATE store_probe SET at = 1").execute(&mut *tx).await.expect("write");
            // What SQLite's automatic rollback does to sqlx.
            sqlx::query("ROLLBACK").execute(&mut *tx).await.expect("rollback");
        }
        // Every pooled connection in turn takes a write in a transaction, abandoned on an error
        // path; a write must still go through at once afterwards.
        for _ in 0..2 * SQLITE_POOL_CONNECTIONS {
            let mut conn = store.pool.acquire().await.expect("connection");
            let mut tx = conn.begin().await.expect("begin");
            sqlx::query("UPDATE store_probe SET at = 2").execute(&mut *tx).await.expect("write");
            drop(tx);
            drop(conn);
            let probe = tokio::time::timeout(Duration::from_secs(2), store.probe(UnixMillis(3)));
            assert!(
                matches!(probe.await, Ok(Ok(()))),
                "a write waits for a lock held by a pooled connection"
            );
        }
        store.close().await.expect("close");
    }

    #[test]
    fn errors_that_are_not_outages_leave_the_store_healthy() {
        let h = StoreHealth::default();
        h.record_error(&StoreError::Corrupt { column: "mode", value: "x".into() });
        h.record_error(&StoreError::Database(sqlx::Error::RowNotFound));
        assert!(h.is_ok());
        assert!(!h.is_suspect(Duration::from_secs(1)));
    }
}
