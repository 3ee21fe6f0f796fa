//! Conversions between the protocol's types and the stored columns, and the decoding of rows.
//!
//! Every stored value is checked as it is read back: a key that is not 64 hex digits, an unknown
//! mode or status, a negative timestamp or an out-of-range dimension becomes
//! [`StoreError::Corrupt`] naming the column, never a panic.

use sqlx::Row;
use sqlx::any::AnyRow;
use veribench_protocol::{ChallengeId, DeviceKey, Mode, PublicKey, Root, Seed, Shape, UnixMillis};

use super::{ChallengeRow, ChallengeStatus, Rejection, StoreError};

/// The columns [`challenge`] reads, in `SELECT` order.
pub(super) const CHALLENGE_COLUMNS: &str = "id, miner_hotkey, worker_key, device_key, mode, m, k, \
     n, seed, status, reason, detail, issued_at, deadline, sent_at, committed_at, finished_at, \
     root, compute_ms, rtt_ms, gflops, credited";

/// The columns [`rejection`] reads, in `SELECT` order.
pub(super) const REJECTION_COLUMNS: &str =
    "peer, kind, worker_key, last_claimed, count, first_at, last_at, detail";

/// A timestamp as stored: milliseconds as `BIGINT`, saturating at `i64::MAX` (year 292 million).
pub(super) fn millis(at: UnixMillis) -> i64 {
    i64::try_from(at.0).unwrap_or(i64::MAX)
}

/// A challenge id as stored; ids above `i64::MAX` cannot exist, so they saturate (and match
/// nothing).
pub(super) fn id_param(id: ChallengeId) -> i64 {
    i64::try_from(id.0).unwrap_or(i64::MAX)
}

/// A boolean as stored: `0` or `1`.
pub(super) fn flag(b: bool) -> i64 {
    i64::from(b)
}

/// A measurement as stored: non-finite values are stored as `NULL` on both databases (SQLite
/// would turn NaN into `NULL` anyway, PostgreSQL would keep it), so both read back `None`.
pub(super) fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

fn corrupt(column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt { column, value: value.to_string() }
}

/// A `TEXT NOT NULL` column.
pub(super) fn text(row: &AnyRow, column: &'static str) -> Result<String, StoreError> {
    Ok(row.try_get::<String, _>(column)?)
}

/// A nullable `TEXT` column.
pub(super) fn opt_text(row: &AnyRow, column: &'static str) -> Result<Option<String>, StoreError> {
    Ok(row.try_get::<Option<String>, _>(column)?)
}

/// An integer column.
pub(super) fn int(row: &AnyRow, column: &'static str) -> Result<i64, StoreError> {
    Ok(row.try_get::<i64, _>(column)?)
}

/// A nullable integer column.
pub(super) fn opt_int(row: &AnyRow, column: &'static str) -> Result<Option<i64>, StoreError> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

/// A nullable floating-point column.
pub(super) fn opt_float(row: &AnyRow, column: &'static str) -> Result<Option<f64>, StoreError> {
    Ok(row.try_get::<Option<f64>, _>(column)?)
}

/// A 0/1 column.
pub(super) fn boolean(row: &AnyRow, column: &'static str) -> Result<bool, StoreError> {
    match int(row, column)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(corrupt(column, other)),
    }
}

/// A non-negative millisecond timestamp.
pub(super) fn time(row: &AnyRow, column: &'static str) -> Result<UnixMillis, StoreError> {
    let v = int(row, column)?;
    u64::try_from(v).map(UnixMillis).map_err(|_| corrupt(column, v))
}

/// A nullable timestamp.
pub(super) fn opt_time(
    row: &AnyRow,
    column: &'static str,
) -> Result<Option<UnixMillis>, StoreError> {
    match row.try_get::<Option<i64>, _>(column)? {
        None => Ok(None),
        Some(v) => u64::try_from(v).map(|v| Some(UnixMillis(v))).map_err(|_| corrupt(column, v)),
    }
}

/// Parses a stored public key.
pub(super) fn parse_key(column: &'static str, s: String) -> Result<PublicKey, StoreError> {
    PublicKey::from_hex(&s).ok_or_else(|| corrupt(column, s))
}

/// A `TEXT` public key column.
pub(super) fn key(row: &AnyRow, column: &'static str) -> Result<PublicKey, StoreError> {
    parse_key(column, text(row, column)?)
}

/// Parses a stored device key.
pub(super) fn parse_device(column: &'static str, s: String) -> Result<DeviceKey, StoreError> {
    // `DeviceKey::new` takes the string by value; keep a copy for the error.
    DeviceKey::new(s.clone()).ok_or_else(|| corrupt(column, s))
}

/// A `TEXT` device key column.
pub(super) fn device(row: &AnyRow, column: &'static str) -> Result<DeviceKey, StoreError> {
    parse_device(column, text(row, column)?)
}

/// A matrix dimension.
fn dim(row: &AnyRow, column: &'static str) -> Result<u32, StoreError> {
    let v = int(row, column)?;
    u32::try_from(v).map_err(|_| corrupt(column, v))
}

/// Decodes one row selected with [`CHALLENGE_COLUMNS`].
pub(super) fn challenge(row: &AnyRow) -> Result<ChallengeRow, StoreError> {
    let id = int(row, "id")?;
    let mode = text(row, "mode")?;
    let status = text(row, "status")?;
    let seed = text(row, "seed")?;
    let root = opt_text(row, "root")?;
    Ok(ChallengeRow {
        id: ChallengeId(u64::try_from(id).map_err(|_| corrupt("id", id))?),
        miner_hotkey: key(row, "miner_hotkey")?,
        worker_key: key(row, "worker_key")?,
        device: device(row, "device_key")?,
        mode: mode.parse::<Mode>().map_err(|_| corrupt("mode", &mode))?,
        shape: Shape { m: dim(row, "m")?, k: dim(row, "k")?, n: dim(row, "n")? },
        seed: Seed::from_hex(&seed).ok_or_else(|| corrupt("seed", &seed))?,
        status: ChallengeStatus::parse(&status).ok_or_else(|| corrupt("status", &status))?,
        reason: opt_text(row, "reason")?,
        detail: opt_text(row, "detail")?,
        issued_at: time(row, "issued_at")?,
        deadline: time(row, "deadline")?,
        sent_at: opt_time(row, "sent_at")?,
        committed_at: opt_time(row, "committed_at")?,
        finished_at: opt_time(row, "finished_at")?,
        root: match root {
            None => None,
            Some(r) => Some(Root::from_hex(&r).ok_or_else(|| corrupt("root", &r))?),
        },
        compute_ms: opt_float(row, "compute_ms")?,
        rtt_ms: opt_float(row, "rtt_ms")?,
        gflops: opt_float(row, "gflops")?,
        credited: boolean(row, "credited")?,
    })
}

/// Decodes one row selected with [`REJECTION_COLUMNS`].
pub(super) fn rejection(row: &AnyRow) -> Result<Rejection, StoreError> {
    let worker_key = text(row, "worker_key")?;
    Ok(Rejection {
        peer: text(row, "peer")?,
        kind: text(row, "kind")?,
        // '' rather than NULL when no registered worker: NULLs would not collide in the unique key.
        worker_key: match worker_key.is_empty() {
            true => None,
            false => Some(parse_key("worker_key", worker_key)?),
        },
        last_claimed: match opt_text(row, "last_claimed")? {
            None => None,
            Some(k) => Some(parse_key("last_claimed", k)?),
        },
        count: small(row, "count")?,
        first_at: time(row, "first_at")?,
        last_at: time(row, "last_at")?,
        detail: text(row, "detail")?,
    })
}

/// A `NOT NULL` floating-point column.
pub(super) fn float(row: &AnyRow, column: &'static str) -> Result<f64, StoreError> {
    Ok(row.try_get::<f64, _>(column)?)
}

/// A non-negative integer column that fits in `T` (a count, a uid, a weight).
pub(super) fn small<T: TryFrom<i64>>(row: &AnyRow, column: &'static str) -> Result<T, StoreError> {
    let v = int(row, column)?;
    T::try_from(v).map_err(|_| corrupt(column, v))
}
