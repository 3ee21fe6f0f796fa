//! subxt's errors as [`ChainError`]s: which failures are the network's (transient), which are
//! the chain's verdict on the call (final), and which subtensor errors veribench names.

use subxt::error::{DispatchError, RpcError, TransactionError};
use subxt::ext::subxt_rpcs::Error as RpcClientError;
use veribench_chain::ChainError;

/// A subxt failure of a read or of a connection, with no extrinsic involved.
pub(crate) fn from_subxt(e: subxt::Error) -> ChainError {
    match e {
        subxt::Error::Rpc(RpcError::ClientError(e)) => from_rpc(e),
        subxt::Error::Rpc(other) => ChainError::Unreachable(other.to_string()),
        subxt::Error::Io(e) => ChainError::Unreachable(e.to_string()),
        subxt::Error::Transaction(TransactionError::Dropped(m)) => {
            ChainError::Unreachable(format!("the node dropped the transaction: {m}"))
        }
        subxt::Error::Transaction(TransactionError::BlockNotFound) => ChainError::Unreachable(
            "the block that included the transaction is gone (retracted fork)".into(),
        ),
        subxt::Error::Transaction(TransactionError::Invalid(m) | TransactionError::Error(m)) => {
            ChainError::Rejected(format!("the node refused the transaction: {m}"))
        }
        subxt::Error::Runtime(e) => ChainError::Rejected(e.to_string()),
        subxt::Error::Metadata(e) => ChainError::Decode(format!(
            "the node's runtime does not match the vendored finney metadata: {e}"
        )),
        other => ChainError::Decode(other.to_string()),
    }
}

/// An RPC failure: the server's own error answers are not transport failures.
pub(crate) fn from_rpc(e: RpcClientError) -> ChainError {
    match e {
        RpcClientError::User(u) => {
            let data = u.data.as_ref().map(|d| format!(": {}", d.get())).unwrap_or_default();
            ChainError::Rejected(format!("RPC error {} {}{data}", u.code, u.message))
        }
        RpcClientError::Deserialization(e) => ChainError::Decode(format!("RPC response: {e}")),
        RpcClientError::Decode(e) => ChainError::Decode(format!("RPC response: {e}")),
        other => ChainError::Unreachable(other.to_string()),
    }
}

/// What a refusal of an extrinsic means for veribench.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// A weights call came too soon after the last one (wait some blocks).
    WeightsRateLimit,
    /// A reveal before its reveal epoch.
    RevealTooEarly,
    /// A commitment over the hotkey's space for the current epoch (`UsedSpaceOf` against
    /// `MaxSpace`, reset at the subnet's next epoch).
    CommitmentSpaceLimit,
    /// A commitment too soon after the last one: older runtimes' `RateLimit` (not in the
    /// vendored finney metadata, so its window cannot be read).
    CommitmentRateLimit,
    /// The signer is not registered on the subnet.
    NotRegistered,
    /// The signer has no validator permit.
    NoValidatorPermit,
    /// The subnet does not exist.
    NoSuchSubnet,
    /// Anything else, final: the description.
    Other(String),
    /// Not a refusal but another failure, already mapped.
    Failure(ChainError),
}

/// Classifies the failure of a submission: a module error from the block's events, a
/// transaction-pool refusal from the RPC, or a plain failure.
pub(crate) fn classify_submission_error(e: subxt::Error) -> Refusal {
    match e {
        subxt::Error::Runtime(DispatchError::Module(m)) => match m.details() {
            Ok(details) => {
                let docs = details.variant.docs.join(" ");
                module_error(details.pallet.name(), &details.variant.name, docs.trim())
            }
            Err(_) => Refusal::Other(m.details_string()),
        },
        subxt::Error::Rpc(RpcError::ClientError(RpcClientError::User(u))) => {
            let data = u.data.as_ref().map(|d| d.get().trim_matches('"').to_owned());
            pool_error(u.code, &u.message, data.as_deref())
        }
        other => Refusal::Failure(from_subxt(other)),
    }
}

/// A dispatch error `pallet::error` of an included extrinsic.
pub(crate) fn module_error(pallet: &str, error: &str, docs: &str) -> Refusal {
    match (pallet, error) {
        ("SubtensorModule", "SettingWeightsTooFast" | "CommittingWeightsTooFast") => {
            Refusal::WeightsRateLimit
        }
        ("SubtensorModule", "RevealTooEarly") => Refusal::RevealTooEarly,
        ("SubtensorModule", "HotKeyNotRegisteredInSubNet" | "HotKeyNotRegisteredInNetwork") => {
            Refusal::NotRegistered
        }
        ("SubtensorModule", "NeuronNoValidatorPermit") => Refusal::NoValidatorPermit,
        ("SubtensorModule", "SubnetNotExists") => Refusal::NoSuchSubnet,
        ("Commitments", "SpaceLimitExceeded") => Refusal::CommitmentSpaceLimit,
        ("Commitments", "CommitmentSetRateLimitExceeded") => Refusal::CommitmentRateLimit,
        // Subtensor's `CanCommit` lets registered hotkeys of the subnet commit.
        ("Commitments", "AccountNotAllowedCommit") => Refusal::NotRegistered,
        _ if docs.is_empty() => Refusal::Other(format!("{pallet}::{error}")),
        _ => Refusal::Other(format!("{pallet}::{error} ({docs})")),
    }
}

/// A refusal by the node's transaction pool (`author_submitAndWatchExtrinsic` answered with an
/// error). Subtensor's `SubtensorTransactionExtension` refuses some weights calls already there
/// with `InvalidTransaction::Custom(code)`, which the node reports as code 1010 with data
/// "Custom error: code".
pub(crate) fn pool_error(code: i32, message: &str, data: Option<&str>) -> Refusal {
    let custom = data
        .and_then(|d| d.strip_prefix("Custom error: "))
        .and_then(|c| c.trim().parse::<u8>().ok());
    match (code, custom) {
        // Subtensor's CustomTransactionError codes that veribench distinguishes.
        (1010, Some(3)) => Refusal::NoSuchSubnet,
        (1010, Some(6)) => Refusal::WeightsRateLimit,
        (1010, Some(10)) => Refusal::NotRegistered,
        (1010, Some(1)) => Refusal::Other(
            "invalid transaction: the hotkey has too little stake to set weights (custom error 1)"
                .into(),
        ),
        _ => match data {
            Some(d) => Refusal::Other(format!("{message} ({code}): {d}")),
            None => Refusal::Other(format!("{message} ({code})")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn other(r: Refusal) -> String {
        match r {
            Refusal::Other(what) => what,
            r => panic!("expected a plain rejection, got {r:?}"),
        }
    }

    #[test]
    fn subtensor_errors_veribench_acts_on_are_named() {
        let m = |p, e, d| module_error(p, e, d);
        assert!(matches!(
            m("SubtensorModule", "SettingWeightsTooFast", ""),
            Refusal::WeightsRateLimit
        ));
        assert!(matches!(m("SubtensorModule", "RevealTooEarly", ""), Refusal::RevealTooEarly));
        assert!(matches!(
            m("SubtensorModule", "HotKeyNotRegisteredInSubNet", "x"),
            Refusal::NotRegistered
        ));
        assert!(matches!(
            m("SubtensorModule", "NeuronNoValidatorPermit", ""),
            Refusal::NoValidatorPermit
        ));
        assert!(matches!(m("SubtensorModule", "SubnetNotExists", ""), Refusal::NoSuchSubnet));
        assert_eq!(
            other(m("SubtensorModule", "IncorrectWeightVersionKey", "Bad key.")),
            "SubtensorModule::IncorrectWeightVersionKey (Bad key.)"
        );
        assert!(matches!(
            m("Commitments", "SpaceLimitExceeded", "Space Limit Exceeded for the current interval"),
            Refusal::CommitmentSpaceLimit
        ));
        assert!(matches!(
            m("Commitments", "CommitmentSetRateLimitExceeded", ""),
            Refusal::CommitmentRateLimit
        ));
        assert!(matches!(m("Commitments", "AccountNotAllowedCommit", ""), Refusal::NotRegistered));
        // Only the pallet that defines them: a same-named error elsewhere stays a rejection.
        assert_eq!(other(m("Other", "SpaceLimitExceeded", "")), "Other::SpaceLimitExceeded");
        assert_eq!(
            other(m("Commitments", "TooManyFieldsInCommitmentInfo", "")),
            "Commitments::TooManyFieldsInCommitmentInfo"
        );
    }

    #[test]
    fn pool_refusals_with_subtensor_custom_codes() {
        let invalid = "Invalid Transaction";
        assert!(matches!(
            pool_error(1010, invalid, Some("Custom error: 6")),
            Refusal::WeightsRateLimit
        ));
        assert!(matches!(
            pool_error(1010, invalid, Some("Custom error: 10")),
            Refusal::NotRegistered
        ));
        assert!(matches!(
            pool_error(1010, invalid, Some("Custom error: 3")),
            Refusal::NoSuchSubnet
        ));
        assert_eq!(
            other(pool_error(1010, invalid, Some("Transaction has a bad signature"))),
            "Invalid Transaction (1010): Transaction has a bad signature"
        );
        assert_eq!(
            other(pool_error(1014, "Priority is too low", None)),
            "Priority is too low (1014)"
        );
    }
}
