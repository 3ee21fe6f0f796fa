//! `impl Store`: connecting and migrating, and every query the coordinator runs.
//!
//! All SQL is written once for both databases: `$n` placeholders (sqlx's SQLite driver accepts
//! them), `ON CONFLICT … DO UPDATE` with `excluded`, `RETURNING`, `CASE` rather than
//! `MAX`/`GREATEST`, and aggregates that yield `BIGINT`/`DOUBLE PRECISION` on PostgreSQL (a `SUM`
//! of integers would be `NUMERIC`, which the `Any` driver cannot decode). State transitions are
//! single `UPDATE`s whose `WHERE` clause names the allowed previous statuses, so concurrent callers
//! cannot both move a challenge.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnectionMetadata;
use sqlx::{AnyConnection, Connection, Executor};
use veribench_protocol::{ChallengeId, PublicKey, UnixMillis};

use crate::failure::Failure;

use super::row::{self, CHALLENGE_COLUMNS, finite, flag, id_param, millis};
use super::{
    ChallengeRow, ChallengeStatus, CommitRecord, Credit, DbKind, MinerRow, NewChallenge, Store,
    StoreError, StoreHealth, StoreOptions, WorkerRecord, WorkerRow,
};

/// The SQLite schema.
static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("./migrations/sqlite");
/// The PostgreSQL schema.
static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("./migrations/postgres");

/// How long an SQLite connection waits for another writer's lock before failing.
const SQLITE_BUSY_TIMEOUT_MS: u32 = 5_000;
/// Pool size for an SQLite file (WAL: many readers, one writer at a time).
const SQLITE_POOL_SIZE: u32 = 8;
/// [`SQLITE_POOL_SIZE`], for tests that go through every connection.
#[cfg(test)]
pub(super) const SQLITE_POOL_CONNECTIONS: usize = SQLITE_POOL_SIZE as usize;
/// Pool size for PostgreSQL.
const POSTGRES_POOL_SIZE: u32 = 10;

/// The statuses a challenge can still leave, as an SQL list.
const NON_TERMINAL: &str = "('created', 'sent', 'committed', 'verifying')";

/// Challenges per `INSERT` of [`Store::insert_sent_challenges`]: 11 parameters a row stays far
/// below SQLite's 32,766 and PostgreSQL's 65,535 bound parameters per statement.
const ROUND_ROWS_PER_STATEMENT: usize = 500;

/// Moves a worker's `last_seen` forward, never backwards.
const TOUCH: &str = "UPDATE workers \
     SET last_seen = CASE WHEN last_seen < $2 THEN $2 ELSE last_seen END WHERE worker_key = $1";

/// Detail stored by [`Store::fail_unfinished`].
const UNFINISHED_DETAIL: &str = "not finished when the coordinator stopped";

/// Where a `sqlite:` URL points.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum SqliteTarget {
    /// `sqlite::memory:` or `mode=memory`: one connection, gone when the store closes.
    Memory {
        /// The URL handed to sqlx.
        url: String,
    },
    /// A file, created with its directory if missing.
    File {
        /// The path as written in the URL.
        path: String,
        /// The URL handed to sqlx (`mode=rwc` added unless a mode is given).
        url: String,
    },
}

/// Splits `sqlite:path`, `sqlite://path` or `sqlite:///abs/path` (with an optional `?query`).
///
/// The URL given to sqlx is rebuilt as `sqlite:<path>` because `sqlite://dir/file` would make
/// `dir` a URL host, which the URL parser lower-cases.
pub(super) fn sqlite_target(url: &str) -> Option<SqliteTarget> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let params: Vec<&str> = query.into_iter().flat_map(|q| q.split('&')).collect();
    if path == ":memory:" || params.contains(&"mode=memory") {
        return Some(SqliteTarget::Memory { url: url.to_owned() });
    }
    if path.is_empty() {
        return None;
    }
    let mut params = params;
    if !params.iter().any(|p| p.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    Some(SqliteTarget::File {
        path: path.to_owned(),
        url: format!("sqlite:{path}?{}", params.join("&")),
    })
}

/// Sets the per-connection SQLite settings (sqlx's defaults already include a busy timeout and
/// foreign keys; they are set here explicitly so the store does not depend on those defaults).
async fn sqlite_session(conn: &mut AnyConnection) -> Result<(), sqlx::Error> {
    conn.execute(format!("PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}").as_str()).await?;
    conn.execute("PRAGMA foreign_keys = ON").await?;
    Ok(())
}

/// [`sqlite_session`] as a pool's `after_connect` hook.
fn sqlite_session_hook(
    conn: &mut AnyConnection,
    _: PoolConnectionMetadata,
) -> BoxFuture<'_, Result<(), sqlx::Error>> {
    Box::pin(sqlite_session(conn))
}

/// The failure reasons never counted against a worker, as an SQL list (constants, not peer
/// input).
fn not_counted_failures() -> String {
    let quoted: Vec<String> = Failure::NOT_COUNTED.iter().map(|r| format!("'{r}'")).collect();
    format!("({})", quoted.join(", "))
}

/// A non-negative count column.
pub(super) fn count(r: &sqlx::any::AnyRow, column: &'static str) -> Result<u64, StoreError> {
    let v = row::int(r, column)?;
    u64::try_from(v).map_err(|_| StoreError::Corrupt { column, value: v.to_string() })
}

impl Store {
    /// Opens (creating if needed) and migrates the database at `url` with the default
    /// [`StoreOptions`]: `sqlite:path`, `sqlite://path`, `sqlite::memory:` or `postgres://…` /
    /// `postgresql://…`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit options.
    ///
    /// An SQLite file is created with its parent directory and put in WAL mode. Both pools wait
    /// at most `options.acquire_timeout` for a connection, and close a connection rather than
    /// reuse it when it was open during an outage ([`StoreHealth`]) or, on SQLite, when it comes
    /// back still inside a transaction (it would hold the write lock for good).
    pub async fn connect_with(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let health = Arc::new(StoreHealth::default());
        let base = AnyPoolOptions::new().acquire_timeout(options.acquire_timeout);
        // Not for `:memory:`, whose one connection is the database.
        let (on_acquire, on_release) = (health.clone(), health.clone());
        let recycling = base
            .clone()
            .before_acquire(move |_, meta| {
                let reuse = !on_acquire.is_suspect(meta.age);
                Box::pin(async move { Ok(reuse) })
            })
            .after_release(move |conn, meta| {
                let stuck = conn.backend_name() == "SQLite" && conn.is_in_transaction();
                let reuse = !stuck && !on_release.is_suspect(meta.age);
                Box::pin(async move { Ok(reuse) })
            });
        let (pool, kind) = if url.starts_with("sqlite:") {
            let target =
                sqlite_target(url).ok_or_else(|| StoreError::UnsupportedUrl(url.to_owned()))?;
            let pool = match target {
                SqliteTarget::Memory { url } => {
                    // Every sqlx connection to `:memory:` is a database of its own: keep one.
                    base.after_connect(sqlite_session_hook)
                        .max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .connect(&url)
                        .await?
                }
                SqliteTarget::File { path, url } => {
                    if let Some(dir) = Path::new(&path).parent()
                        && !dir.as_os_str().is_empty()
                    {
                        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                            path: dir.display().to_string(),
                            source,
                        })?;
                    }
                    let pool = recycling
                        .after_connect(sqlite_session_hook)
                        .max_connections(SQLITE_POOL_SIZE)
                        .connect(&url)
                        .await?;
                    // Persistent in the file; needs no other connection to be writing.
                    sqlx::query("PRAGMA journal_mode = WAL").fetch_all(&pool).await?;
                    pool
                }
            };
            (pool, DbKind::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (recycling.max_connections(POSTGRES_POOL_SIZE).connect(url).await?, DbKind::Postgres)
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let store = Store { pool, kind, health };
        store.migrator().run(&store.pool).await?;
        Ok(store)
    }

    /// The migration set of this database.
    pub(super) fn migrator(&self) -> &'static Migrator {
        match self.kind {
            DbKind::Sqlite => &SQLITE_MIGRATOR,
            DbKind::Postgres => &POSTGRES_MIGRATOR,
        }
    }

    /// Which database this is.
    pub fn kind(&self) -> DbKind {
        self.kind
    }

    /// Closes every connection, waiting for those in use to be returned.
    pub async fn close(&self) -> Result<(), StoreError> {
        self.pool.close().await;
        Ok(())
    }

    // ---------------------------------------------------------------- workers

    /// Records a (re-)registration: the worker is online, `connected_at` and `last_seen` are
    /// `at`, and its device list is replaced by `worker.devices`.
    pub async fn upsert_worker(
        &self,
        worker: &WorkerRecord,
        at: UnixMillis,
    ) -> Result<(), StoreError> {
        let key = worker.worker_key.to_string();
        let mut tx = self.pool.begin().await?;
        Store::record_ip_change(&mut tx, &worker.worker_key, &worker.address, at).await?;
        sqlx::query(
            "INSERT INTO workers \
                 (worker_key, miner_hotkey, name, address, hardware_json, online, connected_at, \
                  last_seen, ip, clock_skew_ms) \
             VALUES ($1, $2, $3, $4, $5, 1, $6, $6, $7, $8) \
             ON CONFLICT (worker_key) DO UPDATE SET \
                 miner_hotkey = excluded.miner_hotkey, name = excluded.name, \
                 address = excluded.address, hardware_json = excluded.hardware_json, online = 1, \
                 connected_at = excluded.connected_at, last_seen = excluded.last_seen, \
                 ip = excluded.ip, clock_skew_ms = excluded.clock_skew_ms",
        )
        .bind(&key)
        .bind(worker.miner_hotkey.to_string())
        .bind(&worker.name)
        .bind(&worker.address)
        .bind(&worker.hardware_json)
        .bind(millis(at))
        .bind(super::scoring::ip_of(&worker.address))
        .bind(worker.clock_skew_ms)
        .execute(&mut *tx)
        .await?;
        Store::record_buckets(&mut tx, &[(worker.worker_key, at)]).await?;
        sqlx::query("DELETE FROM worker_devices WHERE worker_key = $1")
            .bind(&key)
            .execute(&mut *tx)
            .await?;
        for (position, device) in (0_i64..).zip(&worker.devices) {
            sqlx::query(
                "INSERT INTO worker_devices (worker_key, position, device_key) VALUES ($1, $2, $3)",
            )
            .bind(&key)
            .bind(position)
            .bind(device.as_str())
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Moves `last_seen` forward to `at` (never backwards). Returns whether the worker is known.
    /// It does not bring an offline worker back online: only a registration does.
    pub async fn touch(&self, worker_key: &PublicKey, at: UnixMillis) -> Result<bool, StoreError> {
        let done = sqlx::query(TOUCH)
            .bind(worker_key.to_string())
            .bind(millis(at))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks the worker offline because the connection that started at or before `at` ended.
    /// A registration newer than `at` (a reconnection that raced the old connection's clean-up) is
    /// left online. Returns whether a row was updated.
    pub async fn set_offline(
        &self,
        worker_key: &PublicKey,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE workers SET online = 0 WHERE worker_key = $1 AND connected_at <= $2",
        )
        .bind(worker_key.to_string())
        .bind(millis(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Marks offline every online worker last seen before `older_than`; returns those workers.
    pub async fn mark_stale_offline(
        &self,
        older_than: UnixMillis,
    ) -> Result<Vec<PublicKey>, StoreError> {
        let rows = sqlx::query(
            "UPDATE workers SET online = 0 WHERE online = 1 AND last_seen < $1 \
             RETURNING worker_key",
        )
        .bind(millis(older_than))
        .fetch_all(&self.pool)
        .await?;
        let mut keys =
            rows.iter().map(|r| row::key(r, "worker_key")).collect::<Result<Vec<_>, _>>()?;
        keys.sort();
        Ok(keys)
    }

    /// Every worker with its devices, ordered by worker key.
    pub async fn workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        self.workers_of(None).await
    }

    /// The workers with their devices, of `miner` or of every miner, ordered by worker key.
    pub(super) async fn workers_of(
        &self,
        miner: Option<&PublicKey>,
    ) -> Result<Vec<WorkerRow>, StoreError> {
        let filter = if miner.is_some() { "WHERE w.miner_hotkey = $1" } else { "" };
        let sql = format!(
            "SELECT w.worker_key, w.miner_hotkey, w.name, w.address, w.hardware_json, w.online, \
                    w.connected_at, w.last_seen, w.clock_skew_ms, d.device_key \
             FROM workers w LEFT JOIN worker_devices d ON d.worker_key = w.worker_key \
             {filter} ORDER BY w.worker_key, d.position"
        );
        let mut query = sqlx::query(&sql);
        if let Some(miner) = miner {
            query = query.bind(miner.to_string());
        }
        let rows = query.fetch_all(&self.pool).await?;
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
        // The SQL order only groups a worker's rows; sort by key bytes whatever the collation.
        out.sort_by_key(|w| w.record.worker_key);
        Ok(out)
    }

    // ------------------------------------------------------------- challenges

    /// Stores a new challenge in status `created`; the id comes from the database and is never
    /// reused.
    pub async fn insert_challenge(
        &self,
        challenge: &NewChallenge,
        at: UnixMillis,
    ) -> Result<ChallengeId, StoreError> {
        // `at` is when the row is written; the challenge carries its own issue time.
        let _ = at;
        let r = sqlx::query(
            "INSERT INTO challenges \
                 (miner_hotkey, worker_key, device_key, mode, m, k, n, seed, status, issued_at, \
                  deadline, credited) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'created', $9, $10, 0) \
             RETURNING id",
        )
        .bind(challenge.miner_hotkey.to_string())
        .bind(challenge.worker_key.to_string())
        .bind(challenge.device.as_str())
        .bind(challenge.mode.as_str())
        .bind(i64::from(challenge.shape.m))
        .bind(i64::from(challenge.shape.k))
        .bind(i64::from(challenge.shape.n))
        .bind(challenge.seed.to_string())
        .bind(millis(challenge.issued_at))
        .bind(millis(challenge.deadline))
        .fetch_one(&self.pool)
        .await?;
        let id = row::int(&r, "id")?;
        u64::try_from(id)
            .map(ChallengeId)
            .map_err(|_| StoreError::Corrupt { column: "id", value: id.to_string() })
    }

    /// created → sent.
    pub async fn mark_sent(&self, id: ChallengeId, at: UnixMillis) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE challenges SET status = 'sent', sent_at = $2 \
             WHERE id = $1 AND status = 'created'",
        )
        .bind(id_param(id))
        .bind(millis(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Stores a round of new challenges directly in status `sent` (sent at `at`), in one
    /// transaction of a few multi-row statements, and returns their ids in the order given.
    ///
    /// A round is stored as sent before any of its frames leaves, so a fast worker's commitment
    /// always finds its challenge sent; a frame that then cannot be queued fails its challenge
    /// (`not_sent`). One transaction, not one per challenge, keeps a synchronized round of
    /// thousands of devices within a short window.
    pub async fn insert_sent_challenges(
        &self,
        challenges: &[NewChallenge],
        at: UnixMillis,
    ) -> Result<Vec<ChallengeId>, StoreError> {
        const COLUMNS: usize = 11;
        let mut returned: HashMap<String, VecDeque<i64>> = HashMap::new();
        let mut tx = self.pool.begin().await?;
        for chunk in challenges.chunks(ROUND_ROWS_PER_STATEMENT) {
            let values: Vec<String> = (0..chunk.len())
                .map(|i| {
                    let p: Vec<String> =
                        (1..=COLUMNS).map(|c| format!("${}", i * COLUMNS + c)).collect();
                    format!(
                        "({}, {}, {}, {}, {}, {}, {}, {}, 'sent', {}, {}, {}, 0)",
                        p[0], p[1], p[2], p[3], p[4], p[5], p[6], p[7], p[8], p[9], p[10]
                    )
                })
                .collect();
            let sql = format!(
                "INSERT INTO challenges \
                     (miner_hotkey, worker_key, device_key, mode, m, k, n, seed, status, \
                      issued_at, deadline, sent_at, credited) \
                 VALUES {} RETURNING id, seed",
                values.join(", ")
            );
            let mut query = sqlx::query(&sql);
            for c in chunk {
                query = query
                    .bind(c.miner_hotkey.to_string())
                    .bind(c.worker_key.to_string())
                    .bind(c.device.as_str())
                    .bind(c.mode.as_str())
                    .bind(i64::from(c.shape.m))
                    .bind(i64::from(c.shape.k))
                    .bind(i64::from(c.shape.n))
                    .bind(c.seed.to_string())
                    .bind(millis(c.issued_at))
                    .bind(millis(c.deadline))
                    .bind(millis(at));
            }
            for r in query.fetch_all(&mut *tx).await? {
                returned.entry(row::text(&r, "seed")?).or_default().push_back(row::int(&r, "id")?);
            }
        }
        tx.commit().await?;
        // RETURNING order is unspecified (SQLite documents it as arbitrary): match rows by their
        // fresh seed; ids of equal seeds are handed out in insertion order.
        returned.values_mut().for_each(|ids| ids.make_contiguous().sort_unstable());
        challenges
            .iter()
            .map(|c| {
                let seed = c.seed.to_string();
                let id = returned.get_mut(&seed).and_then(VecDeque::pop_front);
                let id = id.ok_or(StoreError::Corrupt { column: "seed", value: seed })?;
                u64::try_from(id)
                    .map(ChallengeId)
                    .map_err(|_| StoreError::Corrupt { column: "id", value: id.to_string() })
            })
            .collect()
    }

    /// sent → committed, with the root and the coordinator's timing.
    pub async fn mark_committed(
        &self,
        id: ChallengeId,
        commitment: &CommitRecord,
    ) -> Result<bool, StoreError> {
        let CommitRecord { at, root, compute_ms, rtt_ms } = *commitment;
        let done = sqlx::query(
            "UPDATE challenges SET status = 'committed', committed_at = $2, root = $3, \
                 compute_ms = $4, rtt_ms = $5 \
             WHERE id = $1 AND status = 'sent'",
        )
        .bind(id_param(id))
        .bind(millis(at))
        .bind(root.to_string())
        .bind(finite(compute_ms))
        .bind(finite(rtt_ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// committed → verifying.
    pub async fn mark_verifying(
        &self,
        id: ChallengeId,
        at: UnixMillis,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE challenges SET status = 'verifying', verifying_at = $2 \
             WHERE id = $1 AND status = 'committed'",
        )
        .bind(id_param(id))
        .bind(millis(at))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// sent, committed or verifying → verified (terminal), with the measured rate and whether it
    /// counts. The commitment's columns are filled from `commitment` where still empty: the
    /// intermediate writes are best effort, and the one that decides a verdict must leave the
    /// row complete even if they were lost to an outage.
    pub async fn mark_verified(
        &self,
        id: ChallengeId,
        at: UnixMillis,
        gflops: f64,
        credit: Credit,
        commitment: &CommitRecord,
    ) -> Result<bool, StoreError> {
        let (credited, withheld) = match credit {
            Credit::Credited => (true, None),
            Credit::Withheld(reason) => (false, Some(reason.as_str())),
        };
        let done = sqlx::query(
            "UPDATE challenges SET status = 'verified', finished_at = $2, gflops = $3, \
                 credited = $4, reason = $5, committed_at = COALESCE(committed_at, $6), \
                 root = COALESCE(root, $7), compute_ms = COALESCE(compute_ms, $8), \
                 rtt_ms = COALESCE(rtt_ms, $9) \
             WHERE id = $1 AND status IN ('sent', 'committed', 'verifying')",
        )
        .bind(id_param(id))
        .bind(millis(at))
        .bind(finite(gflops))
        .bind(flag(credited))
        .bind(withheld)
        .bind(millis(commitment.at))
        .bind(commitment.root.to_string())
        .bind(finite(commitment.compute_ms))
        .bind(finite(commitment.rtt_ms))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Any non-terminal status → failed (terminal), with a reason code and a detail.
    pub async fn mark_failed(
        &self,
        id: ChallengeId,
        at: UnixMillis,
        reason: &str,
        detail: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE challenges SET status = 'failed', finished_at = $2, reason = $3, \
                 detail = $4, credited = 0 \
             WHERE id = $1 AND status IN {NON_TERMINAL}"
        ))
        .bind(id_param(id))
        .bind(millis(at))
        .bind(reason)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Fails every non-terminal challenge with `reason` (at start-up: nothing in flight survived
    /// the previous process). Returns how many.
    pub async fn fail_unfinished(&self, at: UnixMillis, reason: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(&format!(
            "UPDATE challenges SET status = 'failed', finished_at = $1, reason = $2, \
                 detail = $3, credited = 0 \
             WHERE status IN {NON_TERMINAL}"
        ))
        .bind(millis(at))
        .bind(reason)
        .bind(UNFINISHED_DETAIL)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// One challenge.
    pub async fn challenge(&self, id: ChallengeId) -> Result<Option<ChallengeRow>, StoreError> {
        let r = sqlx::query(&format!("SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE id = $1"))
            .bind(id_param(id))
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(row::challenge).transpose()
    }

    /// Up to `limit` challenges, newest first, optionally only those in `status`.
    pub async fn challenges(
        &self,
        status: Option<ChallengeStatus>,
        limit: u32,
    ) -> Result<Vec<ChallengeRow>, StoreError> {
        let rows = match status {
            Some(status) => {
                sqlx::query(&format!(
                    "SELECT {CHALLENGE_COLUMNS} FROM challenges WHERE status = $1 \
                     ORDER BY id DESC LIMIT $2"
                ))
                .bind(status.as_str())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {CHALLENGE_COLUMNS} FROM challenges ORDER BY id DESC LIMIT $1"
                ))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(row::challenge).collect()
    }

    // ----------------------------------------------------------------- miners

    /// Per-miner totals over workers and challenges, ordered by hotkey. A miner appears when it
    /// has a registered worker or any challenge.
    pub async fn miners(&self) -> Result<Vec<MinerRow>, StoreError> {
        self.miners_of(None).await
    }

    /// [`Store::miners`], counting only the challenges finished at or after `since` when given.
    pub(super) async fn miners_of(
        &self,
        since: Option<UnixMillis>,
    ) -> Result<Vec<MinerRow>, StoreError> {
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
        let window = if since.is_some() { "WHERE finished_at >= $1" } else { "" };
        let sql = format!(
            "SELECT miner_hotkey, \
                    COUNT(CASE WHEN status = 'verified' AND credited = 1 THEN 1 END) AS verified, \
                    COUNT(CASE WHEN status = 'failed' AND reason NOT IN {NOT_COUNTED} \
                        THEN 1 END) AS failed, \
                    COUNT(CASE WHEN status = 'failed' AND reason = '{BUSY}' THEN 1 END) AS busy, \
                    AVG(CASE WHEN status = 'verified' AND credited = 1 THEN gflops END) \
                        AS mean_gflops \
             FROM challenges {window} GROUP BY miner_hotkey",
            NOT_COUNTED = not_counted_failures(),
            BUSY = Failure::Busy.as_str(),
        );
        let mut query = sqlx::query(&sql);
        if let Some(since) = since {
            query = query.bind(millis(since));
        }
        for r in &query.fetch_all(&self.pool).await? {
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
}
