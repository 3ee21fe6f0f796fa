//! Lease reports: which workers are rented out, and for how much of their value.
//!
//! Leases reach the coordinator through `POST /api/v1/leases`, never from a central hub: the
//! operator decides who may report them, with a bearer token (`leases.tokens`) or an sr25519
//! signature by a trusted hotkey (`leases.trusted_signers`) over [`signed_message`] of the exact
//! request body. The body carries `issued_at`, checked against our clock, and the BLAKE3 of the
//! body is the lease's request id, so a captured request cannot be replayed into a second lease.
//!
//! Body (JSON):
//!
//! | field       | type | meaning |
//! |-------------|------|---------|
//! | `worker`    | string | the worker key, SS58 or hex |
//! | `score`     | number | lease score in `[0, 1]` |
//! | `starts_at` | integer, optional | Unix ms, default `issued_at` |
//! | `ends_at`   | integer | Unix ms, after `starts_at` |
//! | `issued_at` | integer | Unix ms, within `leases.max_skew_secs` of the coordinator's clock |

use serde::{Deserialize, Serialize};
use veribench_protocol::{PublicKey, Signature, UnixMillis};

use crate::config::{LeaseConfig, parse_public_key, secs};
use crate::store::NewLease;

/// Header naming the signing hotkey (SS58 or hex).
pub const SIGNER_HEADER: &str = "x-veribench-signer";
/// Header carrying the signature (128 hex digits).
pub const SIGNATURE_HEADER: &str = "x-veribench-signature";

/// Domain separation of lease signatures.
const LEASE_CONTEXT: &[u8] = b"veribench-lease-v1:";

/// The body of `POST /api/v1/leases`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    /// The leased worker's key (SS58 or hex).
    pub worker: String,
    /// Lease score in `[0, 1]`.
    pub score: f64,
    /// Start, Unix ms (default: `issued_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<u64>,
    /// End, Unix ms.
    pub ends_at: u64,
    /// When the request was made, Unix ms.
    pub issued_at: u64,
}

/// Why a lease report was refused; each maps to one HTTP status.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LeaseError {
    /// No accepted token or signature (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The body is malformed or its values are out of range (400).
    #[error("invalid lease: {0}")]
    Invalid(String),
    /// The same request was already recorded (409).
    #[error("this lease request was already recorded")]
    Duplicate,
}

/// The bytes a signer signs: a context prefix and the exact request body.
pub fn signed_message(body: &[u8]) -> Vec<u8> {
    [LEASE_CONTEXT, body].concat()
}

/// Equal-length comparison whose time does not depend on where the inputs differ.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Who is reporting, from the request headers: `Ok("token")` or `Ok(<signer hotkey>)`.
pub fn authorize(
    config: &LeaseConfig,
    bearer: Option<&str>,
    signer: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<String, LeaseError> {
    if let Some(token) = bearer {
        return if config.tokens.iter().any(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) {
            Ok("token".into())
        } else {
            Err(LeaseError::Unauthorized("unknown bearer token".into()))
        };
    }
    let (Some(signer), Some(signature)) = (signer, signature) else {
        return Err(LeaseError::Unauthorized(format!(
            "send `Authorization: Bearer <token>` or the {SIGNER_HEADER} and {SIGNATURE_HEADER} headers"
        )));
    };
    let key = parse_public_key(signer)
        .map_err(|e| LeaseError::Unauthorized(format!("bad signer: {e}")))?;
    let trusted =
        config.trusted_signers.iter().filter_map(|s| parse_public_key(s).ok()).any(|k| k == key);
    if !trusted {
        return Err(LeaseError::Unauthorized(format!(
            "signer {key} is not a trusted lease signer"
        )));
    }
    let bytes = hex::decode(signature.trim())
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .ok_or_else(|| LeaseError::Unauthorized("signature must be 128 hex digits".into()))?;
    if !veribench_wallet::verify(&key, &signed_message(body), &Signature(bytes)) {
        return Err(LeaseError::Unauthorized("signature does not match the body".into()));
    }
    Ok(key.to_string())
}

/// Parses and checks a body at `now`; the result is ready to store.
pub fn parse_request(
    config: &LeaseConfig,
    body: &[u8],
    submitted_by: String,
    now: UnixMillis,
) -> Result<NewLease, LeaseError> {
    let req: LeaseRequest =
        serde_json::from_slice(body).map_err(|e| LeaseError::Invalid(e.to_string()))?;
    let worker_key: PublicKey =
        parse_public_key(&req.worker).map_err(|e| LeaseError::Invalid(format!("worker: {e}")))?;
    if !(0.0..=1.0).contains(&req.score) {
        return Err(LeaseError::Invalid(format!("score {} is outside [0, 1]", req.score)));
    }
    let skew = secs(config.max_skew_secs).as_millis() as u64;
    if req.issued_at.abs_diff(now.0) > skew {
        return Err(LeaseError::Invalid(format!(
            "issued_at {} is more than {skew} ms from the coordinator's clock {}",
            req.issued_at, now.0
        )));
    }
    let starts_at = req.starts_at.unwrap_or(req.issued_at);
    if req.ends_at <= starts_at {
        return Err(LeaseError::Invalid("ends_at must be after starts_at".into()));
    }
    if i64::try_from(req.ends_at).is_err() {
        return Err(LeaseError::Invalid("ends_at is out of range".into()));
    }
    Ok(NewLease {
        request_id: blake3::hash(body).to_hex().to_string(),
        worker_key,
        score: req.score,
        starts_at: UnixMillis(starts_at),
        ends_at: UnixMillis(req.ends_at),
        submitted_by,
    })
}

#[cfg(test)]
mod tests {
    use veribench_wallet::Keypair;

    use super::*;

    fn config(signer: &Keypair) -> LeaseConfig {
        LeaseConfig {
            tokens: vec!["tok-123".into()],
            trusted_signers: vec![signer.ss58_address()],
            max_skew_secs: 60.0,
        }
    }

    fn body(now: u64) -> Vec<u8> {
        let req = LeaseRequest {
            worker: PublicKey([5; 32]).to_string(),
            score: 0.8,
            starts_at: None,
            ends_at: now + 3_600_000,
            issued_at: now,
        };
        serde_json::to_vec(&req).expect("serialises")
    }

    #[test]
    fn tokens_and_trusted_signatures_are_accepted_and_nothing_else() {
        let signer = Keypair::from_seed(&[1; 32]);
        let c = config(&signer);
        let b = body(1_000_000);
        assert_eq!(authorize(&c, Some("tok-123"), None, None, &b), Ok("token".into()));
        assert!(matches!(
            authorize(&c, Some("tok-124"), None, None, &b),
            Err(LeaseError::Unauthorized(_))
        ));
        assert!(matches!(authorize(&c, None, None, None, &b), Err(LeaseError::Unauthorized(_))));

        let sig = hex::encode(signer.sign(&signed_message(&b)).0);
        let who = signer.public().to_string();
        assert_eq!(authorize(&c, None, Some(&signer.ss58_address()), Some(&sig), &b), Ok(who));

        let mut tampered = b.clone();
        tampered[10] ^= 1;
        let err = authorize(&c, None, Some(&signer.ss58_address()), Some(&sig), &tampered);
        assert!(
            matches!(err, Err(LeaseError::Unauthorized(ref m)) if m.contains("does not match"))
        );

        let stranger = Keypair::from_seed(&[2; 32]);
        let sig = hex::encode(stranger.sign(&signed_message(&b)).0);
        let err = authorize(&c, None, Some(&stranger.ss58_address()), Some(&sig), &b);
        assert!(matches!(err, Err(LeaseError::Unauthorized(ref m)) if m.contains("not a trusted")));
    }

    #[test]
    fn bodies_are_checked() {
        let c = config(&Keypair::from_seed(&[1; 32]));
        let now = 10_000_000;
        let lease = parse_request(&c, &body(now), "token".into(), UnixMillis(now)).expect("valid");
        assert_eq!(lease.worker_key, PublicKey([5; 32]));
        assert_eq!((lease.starts_at.0, lease.ends_at.0), (now, now + 3_600_000));
        assert_eq!(lease.request_id, blake3::hash(&body(now)).to_hex().to_string());

        let stale = parse_request(&c, &body(now), "token".into(), UnixMillis(now + 61_000));
        assert!(matches!(stale, Err(LeaseError::Invalid(ref m)) if m.contains("issued_at")));
        let bad = |json: &str| parse_request(&c, json.as_bytes(), "t".into(), UnixMillis(now));
        let worker = PublicKey([5; 32]).to_string();
        for json in [
            "not json".to_owned(),
            format!(
                r#"{{"worker":"{worker}","score":1.5,"ends_at":{},"issued_at":{now}}}"#,
                now + 1
            ),
            format!(r#"{{"worker":"{worker}","score":0.5,"ends_at":{now},"issued_at":{now}}}"#),
            format!(r#"{{"worker":"zz","score":0.5,"ends_at":{},"issued_at":{now}}}"#, now + 1),
            format!(
                r#"{{"worker":"{worker}","score":0.5,"ends_at":{},"issued_at":{now},"x":1}}"#,
                now + 1
            ),
        ] {
            assert!(matches!(bad(&json), Err(LeaseError::Invalid(_))), "{json}");
        }
    }
}
