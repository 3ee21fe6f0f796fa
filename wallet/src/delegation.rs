//! A miner hotkey's [`Delegation`] to a worker key: making one, checking one, and keeping it
//! beside the worker's hotkey at `<wallet path>/<wallet name>/delegations/<worker hotkey>.json`.

use serde::{Deserialize, Serialize};
use veribench_protocol::{Delegation, PublicKey, Signature, UnixMillis};

use crate::error::{Result, WalletError};
use crate::keyfile::{Wallet, parse_hex, read_file, validate_name, write_atomically};
use crate::keypair::{Keypair, verify};
use crate::ss58::{BITTENSOR_SS58_PREFIX, ss58_encode_one_byte};

const DELEGATION_FILE: &str = "delegation file";

/// `hotkey`'s permission for `worker_key` to register and be credited on its behalf until
/// `expires_at`, signed over [`Delegation::signing_payload`].
pub fn delegate(hotkey: &Keypair, worker_key: PublicKey, expires_at: UnixMillis) -> Delegation {
    let mut delegation = Delegation {
        miner_hotkey: hotkey.public(),
        worker_key,
        expires_at,
        signature: Signature([0; 64]),
    };
    delegation.signature = hotkey.sign(&delegation.signing_payload());
    delegation
}

/// Checks that `delegation` is signed by its miner hotkey and is not expired at `now`. It is
/// valid up to and including `expires_at`. A bad signature is reported before expiry.
pub fn verify_delegation(delegation: &Delegation, now: UnixMillis) -> Result<()> {
    let ss58 = |key: &PublicKey| ss58_encode_one_byte(key, BITTENSOR_SS58_PREFIX);
    if !verify(&delegation.miner_hotkey, &delegation.signing_payload(), &delegation.signature) {
        return Err(WalletError::BadDelegationSignature {
            miner: ss58(&delegation.miner_hotkey),
            worker: ss58(&delegation.worker_key),
        });
    }
    if now > delegation.expires_at {
        return Err(WalletError::DelegationExpired {
            worker: ss58(&delegation.worker_key),
            expires_at: delegation.expires_at,
            now,
        });
    }
    Ok(())
}

/// A delegation as stored: keys and signature as `0x` hex, the expiry in Unix milliseconds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegationFile {
    miner_hotkey: String,
    worker_key: String,
    expires_at: u64,
    signature: String,
}

impl Wallet {
    /// Where the delegation of the worker whose hotkey is `worker_hotkey` is kept:
    /// `path/name/delegations/worker_hotkey.json`.
    pub fn delegation_path(&self, worker_hotkey: &str) -> Result<std::path::PathBuf> {
        validate_name("hotkey", worker_hotkey)?;
        Ok(self.dir()?.join("delegations").join(format!("{worker_hotkey}.json")))
    }

    /// Stores `delegation` for the worker hotkey `worker_hotkey`, replacing any earlier one
    /// (atomically, as for hotkeys). It is stored as given, not checked.
    pub fn save_delegation(&self, worker_hotkey: &str, delegation: &Delegation) -> Result<()> {
        let path = self.delegation_path(worker_hotkey)?;
        let file = DelegationFile {
            miner_hotkey: format!("0x{}", delegation.miner_hotkey),
            worker_key: format!("0x{}", delegation.worker_key),
            expires_at: delegation.expires_at.0,
            signature: format!("0x{}", delegation.signature),
        };
        let mut json = serde_json::to_vec_pretty(&file).map_err(|e| WalletError::Io {
            action: "serialise delegation file",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        json.push(b'\n');
        write_atomically(&path, &json, 0o644, "write delegation file")
    }

    /// Reads the delegation stored for `worker_hotkey`. It is parsed, not checked: call
    /// [`verify_delegation`] before relying on it.
    pub fn load_delegation(&self, worker_hotkey: &str) -> Result<Delegation> {
        let path = self.delegation_path(worker_hotkey)?;
        let data = read_file(&path, DELEGATION_FILE, "read delegation file")?;
        let file: DelegationFile = serde_json::from_slice(&data).map_err(|source| {
            WalletError::BadJson { what: DELEGATION_FILE, path: path.clone(), source }
        })?;
        let malformed = |field: &str, len: usize| WalletError::Malformed {
            what: DELEGATION_FILE,
            path: path.clone(),
            reason: format!("{field} is not {len} bytes of hex"),
        };
        Ok(Delegation {
            miner_hotkey: PublicKey(
                parse_hex(&file.miner_hotkey).ok_or_else(|| malformed("miner_hotkey", 32))?,
            ),
            worker_key: PublicKey(
                parse_hex(&file.worker_key).ok_or_else(|| malformed("worker_key", 32))?,
            ),
            expires_at: UnixMillis(file.expires_at),
            signature: Signature(
                parse_hex(&file.signature).ok_or_else(|| malformed("signature", 64))?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Keypair, Keypair) {
        (Keypair::from_seed(&[1; 32]), Keypair::from_seed(&[2; 32]))
    }

    #[test]
    fn signed_delegation_verifies_until_expiry() {
        let (miner, worker) = keys();
        let delegation = delegate(&miner, worker.public(), UnixMillis(1_000));
        assert_eq!(delegation.miner_hotkey, miner.public());
        assert_eq!(delegation.worker_key, worker.public());
        verify_delegation(&delegation, UnixMillis(0)).expect("valid before expiry");
        verify_delegation(&delegation, UnixMillis(1_000)).expect("valid at expiry");
        let err = verify_delegation(&delegation, UnixMillis(1_001)).expect_err("expired");
        assert!(matches!(err, WalletError::DelegationExpired { .. }), "{err}");
        assert!(err.to_string().contains("expired at 1000"), "{err}");
    }

    #[test]
    fn forged_and_altered_delegations_are_rejected() {
        let (miner, worker) = keys();
        let delegation = delegate(&miner, worker.public(), UnixMillis(1_000));

        // Signed by the worker itself, claiming to be the miner's.
        let forged = Delegation {
            signature: worker.sign(&delegation.signing_payload()),
            ..delegation.clone()
        };
        // Every field but the signature changed after signing.
        let longer = Delegation { expires_at: UnixMillis(u64::MAX), ..delegation.clone() };
        let other_worker = Delegation { worker_key: miner.public(), ..delegation.clone() };
        let other_miner = Delegation { miner_hotkey: worker.public(), ..delegation.clone() };
        let garbage = Delegation { miner_hotkey: PublicKey([0xff; 32]), ..delegation.clone() };
        for bad in [forged, longer, other_worker, other_miner, garbage] {
            // Even when expired too, the bad signature is what is reported.
            for now in [0, u64::MAX] {
                let err = verify_delegation(&bad, UnixMillis(now)).expect_err("bad signature");
                assert!(matches!(err, WalletError::BadDelegationSignature { .. }), "{err}");
            }
        }
    }
}
