//! The prover market: participants are handed batches to prove, one at a time, and submit a
//! proof with what it cost them and what they would charge.
//!
//! A batch is queued, assigned to one participant, and answered by that participant's accepted
//! submission. Handing out is serialised (`BEGIN IMMEDIATE` on SQLite, a table lock on
//! PostgreSQL) and a partial unique index keeps one outstanding batch per participant, so two
//! callers never get the same batch and a participant never holds two. Answering is a
//! conditional `UPDATE` in the submission's transaction, so a replayed proof writes nothing.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{Any, Executor, Transaction};
use veribench_protocol::UnixMillis;

use super::row::{self, millis};
use super::{DbKind, Store, StoreError};

/// Most submissions one listing returns.
pub const MAX_SUBMISSION_LISTING: u32 = 1_000;

/// Most accepted submissions (the newest) the summary's medians are computed over.
pub const MAX_SUMMARY_SUBMISSIONS: u32 = 100_000;

/// The columns [`batch_row`] reads, in `SELECT` order.
const BATCH_COLUMNS: &str = "id, request_id, token, system, descriptor, ops, state, \
     participant_id, assigned_at, answered_at, created_at";

/// The columns [`submission_row`] reads, in `SELECT` order.
const SUBMISSION_COLUMNS: &str = "id, participant_id, request_id, batch_id, verdict, reason, \
     proving_time_ms, cost_cents, price_cents, deployment_version, extra, server_ms, ops, \
     submitted_at";

/// Someone allowed to take batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Participant {
    /// The unguessable id (their credential).
    pub id: String,
    /// Display name.
    pub name: String,
    /// When it was added.
    pub created_at: UnixMillis,
}

/// Where a batch is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BatchState {
    /// Waiting for a participant.
    Queued,
    /// Handed to a participant, no accepted proof yet.
    Assigned,
    /// Proved: an accepted submission answered it.
    Answered,
}

impl BatchState {
    /// Every state.
    pub const ALL: [Self; 3] = [Self::Queued, Self::Assigned, Self::Answered];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Assigned => "assigned",
            Self::Answered => "answered",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A batch to queue.
#[derive(Clone, Debug, PartialEq)]
pub struct NewBatch {
    /// Random, below 2^63 (above is refused as [`StoreError::OutOfRange`]).
    pub request_id: u64,
    /// The unguessable part of the batch file's path.
    pub token: String,
    /// `matmul` or an external proof system's name.
    pub system: String,
    /// The batch file's bytes (JSON).
    pub descriptor: String,
    /// Operations in the batch; finite and non-negative.
    pub ops: f64,
}

/// A stored batch.
#[derive(Clone, Debug, PartialEq)]
pub struct BatchRow {
    /// Assigned by the database, never reused.
    pub id: i64,
    /// What submissions name.
    pub request_id: u64,
    /// The file path part.
    pub token: String,
    /// Proof system.
    pub system: String,
    /// The batch file (JSON).
    pub descriptor: String,
    /// Operations in the batch.
    pub ops: f64,
    /// Where it is.
    pub state: BatchState,
    /// Who holds or answered it.
    pub participant_id: Option<String>,
    /// When it was handed out.
    pub assigned_at: Option<UnixMillis>,
    /// When an accepted submission answered it.
    pub answered_at: Option<UnixMillis>,
    /// When it was queued.
    pub created_at: UnixMillis,
}

/// How a submission was judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// The proof verified.
    Accepted,
    /// It did not, or named no open request (`reason` says which).
    Rejected,
}

impl Verdict {
    /// Every verdict.
    pub const ALL: [Self; 2] = [Self::Accepted, Self::Rejected];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// A submission to record. Integers above `i64::MAX` and non-finite or negative `ops` are
/// refused ([`StoreError::OutOfRange`], [`StoreError::InvalidMeasure`]): they are the peer's,
/// and saturating them would change what it said.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmissionRecord {
    /// Who submitted.
    pub participant_id: String,
    /// The request id it named.
    pub request_id: u64,
    /// The batch it answers, `None` when the request id named none.
    pub batch_id: Option<i64>,
    /// How it was judged.
    pub verdict: Verdict,
    /// Why it was rejected (`invalid_proof`, `unknown_request`, …).
    pub reason: Option<String>,
    /// The participant's proving time.
    pub proving_time_ms: u64,
    /// What proving cost them.
    pub cost_cents: u64,
    /// What they charge.
    pub price_cents: u64,
    /// The JSON value as sent (a number or a string), as JSON text: `3` and `"3"` differ.
    pub deployment_version: String,
    /// A JSON object of the fields not understood, `{}` when none.
    pub extra: String,
    /// The coordinator's own time from handing the batch out to this submission (saturating).
    pub server_ms: Option<u64>,
    /// The batch's operations (0 when unknown).
    pub ops: f64,
    /// When it arrived.
    pub submitted_at: UnixMillis,
}

/// A stored submission: what was recorded, and its row id.
#[derive(Clone, Debug, PartialEq)]
pub struct SubmissionRow {
    /// Assigned by the database, never reused.
    pub id: i64,
    /// The submission as recorded.
    pub record: SubmissionRecord,
}

/// The market per (participant, deployment version).
#[derive(Clone, Debug, PartialEq)]
pub struct SummaryRow {
    /// The participant.
    pub participant_id: String,
    /// JSON text as sent.
    pub deployment_version: String,
    /// Accepted submissions.
    pub accepted: u64,
    /// Rejected submissions.
    pub rejected: u64,
    /// Median proving time of the accepted ones.
    pub median_proving_time_ms: Option<f64>,
    /// Median cost per 10^12 operations of the accepted ones with operations.
    pub median_cost_per_tops_cents: Option<f64>,
    /// Median price per 10^12 operations of the accepted ones with operations.
    pub median_price_per_tops_cents: Option<f64>,
    /// Median price over median cost, when the median cost is positive.
    pub price_over_cost: Option<f64>,
}

fn corrupt(column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt { column, value: value.to_string() }
}

/// A peer's integer as stored: refused above `i64::MAX`.
fn int_param(column: &'static str, value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| StoreError::OutOfRange { column, value })
}

/// An operation count as stored: finite and non-negative (SQLite would store NaN as `NULL`).
fn ops_param(column: &'static str, value: f64) -> Result<f64, StoreError> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(StoreError::InvalidMeasure { column, value })
    }
}

fn opt_unsigned(r: &AnyRow, column: &'static str) -> Result<Option<u64>, StoreError> {
    row::opt_int(r, column)?.map(|v| u64::try_from(v).map_err(|_| corrupt(column, v))).transpose()
}

fn participant_row(r: &AnyRow) -> Result<Participant, StoreError> {
    Ok(Participant {
        id: row::text(r, "id")?,
        name: row::text(r, "name")?,
        created_at: row::time(r, "created_at")?,
    })
}

/// Decodes one row selected with [`BATCH_COLUMNS`].
fn batch_row(r: &AnyRow) -> Result<BatchRow, StoreError> {
    let state = row::text(r, "state")?;
    Ok(BatchRow {
        id: row::int(r, "id")?,
        request_id: row::small(r, "request_id")?,
        token: row::text(r, "token")?,
        system: row::text(r, "system")?,
        descriptor: row::text(r, "descriptor")?,
        ops: row::float(r, "ops")?,
        state: BatchState::parse(&state).ok_or_else(|| corrupt("state", state))?,
        participant_id: row::opt_text(r, "participant_id")?,
        assigned_at: row::opt_time(r, "assigned_at")?,
        answered_at: row::opt_time(r, "answered_at")?,
        created_at: row::time(r, "created_at")?,
    })
}

/// Decodes one row selected with [`SUBMISSION_COLUMNS`].
fn submission_row(r: &AnyRow) -> Result<SubmissionRow, StoreError> {
    let verdict = row::text(r, "verdict")?;
    let record = SubmissionRecord {
        participant_id: row::text(r, "participant_id")?,
        request_id: row::small(r, "request_id")?,
        batch_id: row::opt_int(r, "batch_id")?,
        verdict: Verdict::parse(&verdict).ok_or_else(|| corrupt("verdict", verdict))?,
        reason: row::opt_text(r, "reason")?,
        proving_time_ms: row::small(r, "proving_time_ms")?,
        cost_cents: row::small(r, "cost_cents")?,
        price_cents: row::small(r, "price_cents")?,
        deployment_version: row::text(r, "deployment_version")?,
        extra: row::text(r, "extra")?,
        server_ms: opt_unsigned(r, "server_ms")?,
        ops: row::float(r, "ops")?,
        submitted_at: row::time(r, "submitted_at")?,
    };
    Ok(SubmissionRow { id: row::int(r, "id")?, record })
}

/// The median, `None` of nothing.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

/// Accepted submissions of one (participant, deployment version), for the medians.
#[derive(Default)]
struct Samples {
    proving_ms: Vec<f64>,
    cost_per_tops: Vec<f64>,
    price_per_tops: Vec<f64>,
}

impl Store {
    /// A transaction that holds the market's write lock from its start, so what it reads stays
    /// true until it commits.
    async fn market_write(&self) -> Result<Transaction<'static, Any>, StoreError> {
        Ok(match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DbKind::Postgres => {
                let mut tx = self.pool.begin().await?;
                // Conflicts with itself and with writers, not with readers.
                tx.execute("LOCK TABLE market_batches IN SHARE ROW EXCLUSIVE MODE").await?;
                tx
            }
        })
    }

    /// Adds a participant; an id already taken is a database error.
    pub async fn add_participant(
        &self,
        id: &str,
        name: &str,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO market_participants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id)
            .bind(name)
            .bind(millis(now))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The participant with this id.
    pub async fn participant(&self, id: &str) -> Result<Option<Participant>, StoreError> {
        let r = sqlx::query("SELECT id, name, created_at FROM market_participants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(participant_row).transpose()
    }

    /// Every participant, oldest first.
    pub async fn participants(&self) -> Result<Vec<Participant>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, name, created_at FROM market_participants ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(participant_row).collect()
    }

    /// Queues `batches` in one transaction (all or none: a request id or token already stored
    /// is a database error); returns how many were queued.
    pub async fn add_batches(
        &self,
        batches: &[NewBatch],
        now: UnixMillis,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let mut added = 0;
        for b in batches {
            let done = sqlx::query(
                "INSERT INTO market_batches \
                     (request_id, token, system, descriptor, ops, state, created_at) \
                 VALUES ($1, $2, $3, $4, $5, 'queued', $6)",
            )
            .bind(int_param("request_id", b.request_id)?)
            .bind(&b.token)
            .bind(&b.system)
            .bind(&b.descriptor)
            .bind(ops_param("ops", b.ops)?)
            .bind(millis(now))
            .execute(&mut *tx)
            .await?;
            added += done.rows_affected();
        }
        tx.commit().await?;
        Ok(added)
    }

    /// How many batches wait for a participant.
    pub async fn queued_batches(&self) -> Result<u64, StoreError> {
        let n: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM market_batches WHERE state = 'queued'")
                .fetch_one(&self.pool)
                .await?;
        u64::try_from(n).map_err(|_| corrupt("count", n))
    }

    /// The participant's outstanding (assigned, unanswered) batch if any; else assigns it the
    /// oldest queued batch. `None` when it holds none and nothing is queued.
    ///
    /// Serialised with every other market write, so two callers never get the same batch and
    /// a participant never holds two (the partial unique index `market_batches_one_open` would
    /// refuse it anyway).
    pub async fn assign_batch(
        &self,
        participant_id: &str,
        now: UnixMillis,
    ) -> Result<Option<BatchRow>, StoreError> {
        let mut tx = self.market_write().await?;
        let outstanding = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM market_batches \
             WHERE participant_id = $1 AND state = 'assigned' ORDER BY id LIMIT 1"
        ))
        .bind(participant_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = outstanding {
            tx.rollback().await?;
            return batch_row(&r).map(Some);
        }
        let assigned = sqlx::query(&format!(
            "UPDATE market_batches SET state = 'assigned', participant_id = $1, assigned_at = $2 \
             WHERE state = 'queued' AND id = \
                 (SELECT id FROM market_batches WHERE state = 'queued' ORDER BY id LIMIT 1) \
             RETURNING {BATCH_COLUMNS}"
        ))
        .bind(participant_id)
        .bind(millis(now))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        assigned.as_ref().map(batch_row).transpose()
    }

    /// The batch whose file path part is `token`.
    pub async fn batch_by_token(&self, token: &str) -> Result<Option<BatchRow>, StoreError> {
        let r =
            sqlx::query(&format!("SELECT {BATCH_COLUMNS} FROM market_batches WHERE token = $1"))
                .bind(token)
                .fetch_optional(&self.pool)
                .await?;
        r.as_ref().map(batch_row).transpose()
    }

    /// The participant's assigned, unanswered batch with this request id (someone else's,
    /// unknown, or already answered: `None`).
    pub async fn open_request(
        &self,
        participant_id: &str,
        request_id: u64,
    ) -> Result<Option<BatchRow>, StoreError> {
        // No request id above i64::MAX can be stored.
        let Ok(request_id) = i64::try_from(request_id) else { return Ok(None) };
        let r = sqlx::query(&format!(
            "SELECT {BATCH_COLUMNS} FROM market_batches \
             WHERE request_id = $1 AND participant_id = $2 AND state = 'assigned'"
        ))
        .bind(request_id)
        .bind(participant_id)
        .fetch_optional(&self.pool)
        .await?;
        r.as_ref().map(batch_row).transpose()
    }

    /// Records a submission; `Ok(true)` when written.
    ///
    /// With `answer = Some(batch_id)` and an accepted verdict, the batch is marked answered (at
    /// `submitted_at`) in the same transaction, only if it is still assigned to this participant
    /// and unanswered; otherwise nothing is written and the result is `Ok(false)` (a replay).
    /// A rejected submission is always written and leaves its batch assigned, so the
    /// participant may retry it.
    pub async fn record_submission(
        &self,
        s: &SubmissionRecord,
        answer: Option<i64>,
    ) -> Result<bool, StoreError> {
        let request_id = int_param("request_id", s.request_id)?;
        let proving_time_ms = int_param("proving_time_ms", s.proving_time_ms)?;
        let cost_cents = int_param("cost_cents", s.cost_cents)?;
        let price_cents = int_param("price_cents", s.price_cents)?;
        let ops = ops_param("ops", s.ops)?;
        // The coordinator's own measurement: saturating, it is not a key.
        let server_ms = s.server_ms.map(|ms| i64::try_from(ms).unwrap_or(i64::MAX));
        let mut tx = self.pool.begin().await?;
        if let (Some(batch_id), Verdict::Accepted) = (answer, s.verdict) {
            // A row lock on PostgreSQL: a concurrent replay waits, then finds it answered.
            let done = sqlx::query(
                "UPDATE market_batches SET state = 'answered', answered_at = $1 \
                 WHERE id = $2 AND participant_id = $3 AND state = 'assigned'",
            )
            .bind(millis(s.submitted_at))
            .bind(batch_id)
            .bind(&s.participant_id)
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(false);
            }
        }
        sqlx::query(
            "INSERT INTO market_submissions \
                 (participant_id, request_id, batch_id, verdict, reason, proving_time_ms, \
                  cost_cents, price_cents, deployment_version, extra, server_ms, ops, \
                  submitted_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        )
        .bind(&s.participant_id)
        .bind(request_id)
        .bind(s.batch_id)
        .bind(s.verdict.as_str())
        .bind(s.reason.as_deref())
        .bind(proving_time_ms)
        .bind(cost_cents)
        .bind(price_cents)
        .bind(&s.deployment_version)
        .bind(&s.extra)
        .bind(server_ms)
        .bind(ops)
        .bind(millis(s.submitted_at))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Submissions newest first, of one participant when given, at most `limit` (capped at
    /// [`MAX_SUBMISSION_LISTING`]).
    pub async fn submissions(
        &self,
        participant_id: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SubmissionRow>, StoreError> {
        let limit = i64::from(limit.min(MAX_SUBMISSION_LISTING));
        let rows = match participant_id {
            Some(p) => {
                sqlx::query(&format!(
                    "SELECT {SUBMISSION_COLUMNS} FROM market_submissions \
                     WHERE participant_id = $1 ORDER BY id DESC LIMIT $2"
                ))
                .bind(p)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {SUBMISSION_COLUMNS} FROM market_submissions \
                     ORDER BY id DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(submission_row).collect()
    }

    /// Per (participant, deployment version), sorted by both: counts of every submission, and
    /// medians over the newest [`MAX_SUMMARY_SUBMISSIONS`] accepted ones. Cost and price per
    /// tera-op are `cents / (ops / 1e12)`, over submissions with positive `ops`.
    pub async fn market_summary(&self) -> Result<Vec<SummaryRow>, StoreError> {
        let counts = sqlx::query(
            "SELECT participant_id, deployment_version, \
                    COUNT(CASE WHEN verdict = 'accepted' THEN 1 END) AS accepted, \
                    COUNT(CASE WHEN verdict = 'rejected' THEN 1 END) AS rejected \
             FROM market_submissions GROUP BY participant_id, deployment_version",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut summary: BTreeMap<(String, String), (SummaryRow, Samples)> = BTreeMap::new();
        for r in &counts {
            let (participant_id, deployment_version) =
                (row::text(r, "participant_id")?, row::text(r, "deployment_version")?);
            let s = SummaryRow {
                participant_id: participant_id.clone(),
                deployment_version: deployment_version.clone(),
                accepted: row::small(r, "accepted")?,
                rejected: row::small(r, "rejected")?,
                median_proving_time_ms: None,
                median_cost_per_tops_cents: None,
                median_price_per_tops_cents: None,
                price_over_cost: None,
            };
            summary.insert((participant_id, deployment_version), (s, Samples::default()));
        }
        let accepted = sqlx::query(
            "SELECT participant_id, deployment_version, proving_time_ms, cost_cents, \
                    price_cents, ops \
             FROM market_submissions WHERE verdict = 'accepted' ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(MAX_SUMMARY_SUBMISSIONS))
        .fetch_all(&self.pool)
        .await?;
        for r in &accepted {
            let group = (row::text(r, "participant_id")?, row::text(r, "deployment_version")?);
            // Written between the two reads: counted next time.
            let Some((_, samples)) = summary.get_mut(&group) else { continue };
            let proving: u64 = row::small(r, "proving_time_ms")?;
            let cost: u64 = row::small(r, "cost_cents")?;
            let price: u64 = row::small(r, "price_cents")?;
            let ops = row::float(r, "ops")?;
            samples.proving_ms.push(proving as f64);
            if ops.is_finite() && ops > 0.0 {
                let tops = ops / 1e12;
                samples.cost_per_tops.push(cost as f64 / tops);
                samples.price_per_tops.push(price as f64 / tops);
            }
        }
        Ok(summary
            .into_values()
            .map(|(mut s, samples)| {
                s.median_proving_time_ms = median(samples.proving_ms);
                s.median_cost_per_tops_cents = median(samples.cost_per_tops);
                s.median_price_per_tops_cents = median(samples.price_per_tops);
                s.price_over_cost =
                    match (s.median_price_per_tops_cents, s.median_cost_per_tops_cents) {
                        (Some(price), Some(cost)) if cost > 0.0 => Some(price / cost),
                        _ => None,
                    };
                s
            })
            .collect())
    }
}
