//! The chain's types as subxt needs them, and the wallet's keypair as a subxt signer.

use subxt::config::{Config, DefaultExtrinsicParams, SubstrateConfig};
use subxt::tx::Signer;
use subxt::utils::{AccountId32, MultiAddress, MultiSignature};
use veribench_wallet::Keypair;

/// Subtensor's runtime types as transactions see them: 32-byte account ids addressed as
/// `MultiAddress::Id` (no account indices), `MultiSignature`, BLAKE2-256 hashes, `u32` block
/// numbers, and substrate's default transaction extensions. subxt fills in the extensions
/// subtensor adds on top (`SubtensorTransactionExtension`, `DrandPriority`, …) itself, since
/// they carry no data.
#[derive(Clone, Copy, Debug)]
pub enum SubtensorConfig {}

impl Config for SubtensorConfig {
    type AccountId = AccountId32;
    type Address = MultiAddress<AccountId32, ()>;
    type Signature = MultiSignature;
    type Hasher = <SubstrateConfig as Config>::Hasher;
    type Header = <SubstrateConfig as Config>::Header;
    type ExtrinsicParams = DefaultExtrinsicParams<Self>;
    type AssetId = u32;
}

/// A veribench hotkey as a subxt [`Signer`]: the account is the sr25519 public key and the
/// signature `MultiSignature::Sr25519` over the payload subxt hands over (substrate's signing
/// context, as [`Keypair::sign`] uses).
#[derive(Debug, Clone, Copy)]
pub struct HotkeySigner<'a>(pub &'a Keypair);

impl Signer<SubtensorConfig> for HotkeySigner<'_> {
    fn account_id(&self) -> AccountId32 {
        AccountId32(self.0.public().0)
    }

    fn sign(&self, signer_payload: &[u8]) -> MultiSignature {
        MultiSignature::Sr25519(self.0.sign(signer_payload).0)
    }
}
