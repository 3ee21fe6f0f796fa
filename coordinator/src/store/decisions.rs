//! The replicated log of the validators' consensus (one decided weight vector per height, with
//! the certificate that proves it) and the evidence of misbehaviour seen on the way.
//!
//! A height is decided once: recording the same decision again is a no-op, recording a different
//! one is refused as [`StoreError::ConflictingDecision`] and nothing is overwritten, so a bug or
//! an attack upstream cannot rewrite what this validator already agreed to.

use sqlx::any::AnyRow;
use veribench_protocol::{PublicKey, UnixMillis};

use super::row::{self, millis};
use super::{Store, StoreError};

/// Most rows one listing returns.
pub const MAX_CONSENSUS_LISTING: u32 = 1_000;

/// The columns [`decision_row`] reads, in `SELECT` order.
const DECISION_COLUMNS: &str = "height, round, value_id, proposer, aggregate_json, vectors, \
     signers, value, certificate, decided_at, decide_ms";

/// The columns [`evidence_row`] reads, in `SELECT` order.
const EVIDENCE_COLUMNS: &str = "height, round, validator, kind, detail, recorded_at";

/// One decided height of the consensus log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// The consensus height: the weights epoch.
    pub height: u64,
    /// The round that decided (the rounds used are `round + 1`).
    pub round: u32,
    /// The id of the decided value.
    pub value_id: [u8; 32],
    /// The hotkey of the validator that proposed it.
    pub proposer: PublicKey,
    /// The agreed weight per uid, dense (index = uid).
    pub aggregate: Vec<u16>,
    /// Score vectors included in the value.
    pub vectors: u32,
    /// Precommits in the commit certificate.
    pub signers: u32,
    /// The canonical encoding of the decided value.
    pub value: Vec<u8>,
    /// The canonical encoding of the commit certificate.
    pub certificate: Vec<u8>,
    /// When this validator learnt the decision.
    pub decided_at: UnixMillis,
    /// From the height's start to the decision.
    pub decide_ms: u64,
}

/// What a validator was caught doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EvidenceKind {
    /// Two different votes of one kind in one round.
    DoubleVote,
    /// Two different proposals in one round.
    DoubleProposal,
    /// A proposal that does not follow from its inputs.
    BadProposal,
}

impl EvidenceKind {
    /// Every kind.
    pub const ALL: [Self; 3] = [Self::DoubleVote, Self::DoubleProposal, Self::BadProposal];

    /// The stored and API name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DoubleVote => "double_vote",
            Self::DoubleProposal => "double_proposal",
            Self::BadProposal => "bad_proposal",
        }
    }

    /// Parses [`Self::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// One piece of evidence against a validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvidenceRecord {
    /// The height it happened at.
    pub height: u64,
    /// The round.
    pub round: u32,
    /// The offending validator's hotkey.
    pub validator: PublicKey,
    /// What it did.
    pub kind: EvidenceKind,
    /// The proof, as JSON from the consensus engine.
    pub detail: String,
    /// When it was first recorded.
    pub recorded_at: UnixMillis,
}

/// A height as stored. Refused rather than saturated above `i64::MAX`: heights are keys, and two
/// saturated heights would collide.
fn height_param(column: &'static str, height: u64) -> Result<i64, StoreError> {
    i64::try_from(height).map_err(|_| StoreError::OutOfRange { column, value: height })
}

/// A duration as stored, saturating (it is not a key).
fn duration_param(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn corrupt(column: &'static str, value: impl ToString) -> StoreError {
    StoreError::Corrupt { column, value: value.to_string() }
}

/// A non-negative `BIGINT` column read as `u64`.
fn unsigned(r: &AnyRow, column: &'static str) -> Result<u64, StoreError> {
    row::small(r, column)
}

/// 64 hex digits.
fn parse_id(column: &'static str, s: String) -> Result<[u8; 32], StoreError> {
    match hex::decode(&s).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()) {
        Some(id) => Ok(id),
        None => Err(corrupt(column, s)),
    }
}

fn bytes(r: &AnyRow, column: &'static str) -> Result<Vec<u8>, StoreError> {
    use sqlx::Row;
    Ok(r.try_get::<Vec<u8>, _>(column)?)
}

/// Decodes one row selected with [`DECISION_COLUMNS`].
fn decision_row(r: &AnyRow) -> Result<DecisionRecord, StoreError> {
    let aggregate = row::text(r, "aggregate_json")?;
    Ok(DecisionRecord {
        height: unsigned(r, "height")?,
        round: row::small(r, "round")?,
        value_id: parse_id("value_id", row::text(r, "value_id")?)?,
        proposer: row::key(r, "proposer")?,
        aggregate: serde_json::from_str(&aggregate)
            .map_err(|_| corrupt("aggregate_json", aggregate))?,
        vectors: row::small(r, "vectors")?,
        signers: row::small(r, "signers")?,
        value: bytes(r, "value")?,
        certificate: bytes(r, "certificate")?,
        decided_at: row::time(r, "decided_at")?,
        decide_ms: unsigned(r, "decide_ms")?,
    })
}

/// Decodes one row selected with [`EVIDENCE_COLUMNS`].
fn evidence_row(r: &AnyRow) -> Result<EvidenceRecord, StoreError> {
    let kind = row::text(r, "kind")?;
    Ok(EvidenceRecord {
        height: unsigned(r, "height")?,
        round: row::small(r, "round")?,
        validator: row::key(r, "validator")?,
        kind: EvidenceKind::parse(&kind).ok_or_else(|| corrupt("kind", kind))?,
        detail: row::text(r, "detail")?,
        recorded_at: row::time(r, "recorded_at")?,
    })
}

impl Store {
    /// Appends a decision to the log. `Ok(true)`: stored; `Ok(false)`: this decision (same value
    /// id) was already stored. A different value at a stored height is a safety violation:
    /// [`StoreError::ConflictingDecision`], and the stored decision stays as it was.
    pub async fn record_decision(&self, d: &DecisionRecord) -> Result<bool, StoreError> {
        let height = height_param("height", d.height)?;
        // A JSON array of integers, written by hand: it cannot fail.
        let aggregate =
            format!("[{}]", d.aggregate.iter().map(u16::to_string).collect::<Vec<_>>().join(","));
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO decisions \
                 (height, round, value_id, proposer, aggregate_json, vectors, signers, value, \
                  certificate, decided_at, decide_ms, rounds) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (height) DO NOTHING RETURNING height",
        )
        .bind(height)
        .bind(i64::from(d.round))
        .bind(hex::encode(d.value_id))
        .bind(d.proposer.to_string())
        .bind(aggregate)
        .bind(i64::from(d.vectors))
        .bind(i64::from(d.signers))
        .bind(d.value.as_slice())
        .bind(d.certificate.as_slice())
        .bind(millis(d.decided_at))
        .bind(duration_param(d.decide_ms))
        .bind(i64::from(d.round) + 1)
        .fetch_optional(&self.pool)
        .await?;
        if inserted.is_some() {
            return Ok(true);
        }
        // Decisions are never deleted: the row that blocked the insert is still there.
        let stored: String = sqlx::query_scalar("SELECT value_id FROM decisions WHERE height = $1")
            .bind(height)
            .fetch_one(&self.pool)
            .await?;
        let stored = parse_id("value_id", stored)?;
        if stored == d.value_id {
            Ok(false)
        } else {
            Err(StoreError::ConflictingDecision { height: d.height, stored, offered: d.value_id })
        }
    }

    /// The decision at `height`.
    pub async fn decision(&self, height: u64) -> Result<Option<DecisionRecord>, StoreError> {
        // No height above i64::MAX can be stored.
        let Ok(height) = i64::try_from(height) else { return Ok(None) };
        let r = sqlx::query(&format!("SELECT {DECISION_COLUMNS} FROM decisions WHERE height = $1"))
            .bind(height)
            .fetch_optional(&self.pool)
            .await?;
        r.as_ref().map(decision_row).transpose()
    }

    /// Decisions newest first, below height `before` when given, at most `limit` (capped at
    /// [`MAX_CONSENSUS_LISTING`]).
    pub async fn decisions(
        &self,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let limit = i64::from(limit.min(MAX_CONSENSUS_LISTING));
        // A bound above i64::MAX excludes nothing that can be stored.
        let rows = match before.and_then(|b| i64::try_from(b).ok()) {
            Some(before) => {
                sqlx::query(&format!(
                    "SELECT {DECISION_COLUMNS} FROM decisions WHERE height < $1 \
                     ORDER BY height DESC LIMIT $2"
                ))
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query(&format!(
                    "SELECT {DECISION_COLUMNS} FROM decisions ORDER BY height DESC LIMIT $1"
                ))
                .bind(limit)
                .fetch_all(&self.pool)
                .await?
            }
        };
        rows.iter().map(decision_row).collect()
    }

    /// The highest decided height.
    pub async fn latest_decision_height(&self) -> Result<Option<u64>, StoreError> {
        let h: Option<i64> =
            sqlx::query_scalar("SELECT MAX(height) FROM decisions").fetch_one(&self.pool).await?;
        h.map(|h| u64::try_from(h).map_err(|_| corrupt("height", h))).transpose()
    }

    /// Records evidence; `Ok(true)` when it is new, `Ok(false)` when the same (height, round,
    /// validator, kind) was already recorded (the first record's detail and time stay).
    pub async fn record_evidence(&self, e: &EvidenceRecord) -> Result<bool, StoreError> {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO consensus_evidence \
                 (height, round, validator, kind, detail, recorded_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (height, round, validator, kind) DO NOTHING RETURNING id",
        )
        .bind(height_param("height", e.height)?)
        .bind(i64::from(e.round))
        .bind(e.validator.to_string())
        .bind(e.kind.as_str())
        .bind(&e.detail)
        .bind(millis(e.recorded_at))
        .fetch_optional(&self.pool)
        .await?;
        Ok(id.is_some())
    }

    /// Evidence newest first, at most `limit` (capped at [`MAX_CONSENSUS_LISTING`]).
    pub async fn evidence(&self, limit: u32) -> Result<Vec<EvidenceRecord>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {EVIDENCE_COLUMNS} FROM consensus_evidence ORDER BY id DESC LIMIT $1"
        ))
        .bind(i64::from(limit.min(MAX_CONSENSUS_LISTING)))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(evidence_row).collect()
    }

    /// How much evidence is recorded.
    pub async fn evidence_count(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM consensus_evidence")
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(n).map_err(|_| corrupt("count", n))
    }
}
