//! Who a worker is: its own sr25519 key and the miner hotkey's [`Delegation`] to it.
//!
//! A worker box should not hold the miner hotkey. Workers run on rented or shared machines; a
//! stolen hotkey could register on the subnet, serve axons and set weights, while a stolen worker
//! key can only register workers for this miner until its delegation expires. So the miner keeps
//! its hotkey elsewhere, runs `veribench-worker wallet delegate` there, and copies the worker's
//! hotkey file and `delegations/<worker hotkey>.json` to the box.
//!
//! When no delegation file exists the worker's key is taken to be the miner hotkey itself, which
//! delegates to itself for [`WorkerConfig::self_delegation_hours`](super::WorkerConfig) and
//! renews that delegation before each registration; this is convenient on a miner's own machine
//! and logged as such.

use std::time::Duration;

use veribench_protocol::{Delegation, PublicKey, UnixMillis};
use veribench_wallet::{Keypair, Wallet, WalletError, delegate, verify_delegation};

/// Renew a self-delegation that expires within this margin.
const RENEW_MARGIN: Duration = Duration::from_secs(3600);

/// Why an identity could not be loaded or built.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading the wallet failed.
    #[error(transparent)]
    Wallet(#[from] WalletError),
    /// The delegation is for another key than the worker's.
    #[error(
        "the delegation is for worker key {delegated}, but this worker's key is {own}: copy the \
         delegation made for this hotkey"
    )]
    WrongWorkerKey {
        /// The key the delegation names.
        delegated: PublicKey,
        /// The worker's own key.
        own: PublicKey,
    },
}

/// Where a worker's delegation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DelegationSource {
    /// A miner hotkey's delegation file.
    File,
    /// None: the worker's key is the miner hotkey and delegates to itself.
    SelfDelegated,
}

/// A worker's key and the delegation it registers with.
#[derive(Clone, Debug)]
pub struct WorkerIdentity {
    /// The worker's own key; signs registrations.
    pub keypair: Keypair,
    /// The miner hotkey's permission for that key.
    pub delegation: Delegation,
    /// Lifetime of a renewed self-delegation.
    self_delegation_ttl: Duration,
}

impl WorkerIdentity {
    /// An identity from a key and a delegation to it (not checked for signature or expiry: the
    /// coordinator does that).
    pub fn new(keypair: Keypair, delegation: Delegation) -> Result<Self, IdentityError> {
        if delegation.worker_key != keypair.public() {
            return Err(IdentityError::WrongWorkerKey {
                delegated: delegation.worker_key,
                own: keypair.public(),
            });
        }
        Ok(Self { keypair, delegation, self_delegation_ttl: Duration::from_secs(24 * 3600) })
    }

    /// A key that is its own miner hotkey, delegating to itself for `ttl` from `now`; renewed
    /// before each registration once less than an hour is left.
    pub fn self_delegated(keypair: Keypair, ttl: Duration, now: UnixMillis) -> Self {
        let delegation = delegate(&keypair, keypair.public(), expiry(now, ttl));
        Self { keypair, delegation, self_delegation_ttl: ttl }
    }

    /// Loads hotkey `hotkey` of `wallet` and its delegation from
    /// `<path>/<name>/delegations/<hotkey>.json`, or self-delegates when that file does not
    /// exist. A delegation file that is forged, expired or for another key is an error.
    pub fn load(
        wallet: &Wallet,
        hotkey: &str,
        self_delegation_ttl: Duration,
        now: UnixMillis,
    ) -> Result<(Self, DelegationSource), IdentityError> {
        let keypair = wallet.load_hotkey(hotkey)?;
        match wallet.load_delegation(hotkey) {
            Ok(delegation) => {
                verify_delegation(&delegation, now)?;
                let mut identity = Self::new(keypair, delegation)?;
                identity.self_delegation_ttl = self_delegation_ttl;
                Ok((identity, DelegationSource::File))
            }
            Err(WalletError::NotFound { .. }) => Ok((
                Self::self_delegated(keypair, self_delegation_ttl, now),
                DelegationSource::SelfDelegated,
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether the key delegates to itself (it is the miner hotkey).
    pub fn is_self_delegated(&self) -> bool {
        self.delegation.miner_hotkey == self.keypair.public()
    }

    /// The delegation to register with at `now`: a self-delegation close to expiry is renewed
    /// first; a miner's delegation is returned as it is (an expired one is logged, and the
    /// coordinator will refuse it).
    pub fn delegation_at(&mut self, now: UnixMillis) -> &Delegation {
        let margin = u64::try_from(RENEW_MARGIN.as_millis()).unwrap_or(u64::MAX);
        if self.is_self_delegated() && self.delegation.expires_at.0 < now.0.saturating_add(margin) {
            self.delegation = delegate(
                &self.keypair,
                self.keypair.public(),
                expiry(now, self.self_delegation_ttl),
            );
            tracing::info!(expires_at = self.delegation.expires_at.0, "renewed self-delegation");
        } else if self.delegation.expires_at < now {
            tracing::error!(
                expires_at = self.delegation.expires_at.0,
                miner_hotkey = %self.delegation.miner_hotkey,
                "the delegation has expired; the coordinator will refuse this worker until the \
                 miner signs a new one (veribench-worker wallet delegate)"
            );
        }
        &self.delegation
    }
}

fn expiry(now: UnixMillis, ttl: Duration) -> UnixMillis {
    UnixMillis(now.0.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)))
}
