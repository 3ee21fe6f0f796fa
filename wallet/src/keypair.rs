//! sr25519 keypairs derived exactly as substrate, subkey and btcli derive them, and signatures
//! any substrate tool verifies.

use std::fmt;

use bip39::{Language, Mnemonic};
use schnorrkel::{ExpansionMode, MiniSecretKey};
use veribench_protocol::{PublicKey, Signature};
use zeroize::Zeroizing;

use crate::error::{Result, WalletError};
use crate::ss58::{BITTENSOR_SS58_PREFIX, ss58_encode_one_byte};

/// The schnorrkel signing context of substrate's sr25519 (`sp_core::sr25519`), so that signatures
/// made here verify with subkey, polkadot.js or bittensor's `Keypair.verify`, and back.
pub const SIGNING_CONTEXT: &[u8] = b"substrate";

/// Entropy of a generated mnemonic: 128 bits, 12 words, as btcli's default.
const MNEMONIC_ENTROPY_BYTES: usize = 16;

/// An sr25519 keypair: a hotkey or a worker key.
///
/// It keeps the 32-byte substrate "mini secret" (btcli's `secretSeed`) it was expanded from, so
/// that it can be written back to a keyfile, and the mnemonic when it was made from one. Secrets
/// are wiped from memory on drop and never printed by `Debug`.
#[derive(Clone)]
pub struct Keypair {
    pair: schnorrkel::Keypair,
    seed: Zeroizing<[u8; 32]>,
    phrase: Option<Zeroizing<String>>,
}

impl Keypair {
    /// The keypair of a 32-byte substrate mini secret (a `secretSeed`, or subkey's "Secret
    /// seed"), expanded in Ed25519 mode as substrate does.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        let mini = MiniSecretKey::from_bytes(seed)
            .expect("schnorrkel accepts any 32 bytes as a mini secret key");
        Self {
            pair: mini.expand_to_keypair(ExpansionMode::Ed25519),
            seed: Zeroizing::new(*seed),
            phrase: None,
        }
    }

    /// A fresh keypair and its 12-word English BIP-39 mnemonic, which restores it with
    /// [`Keypair::from_phrase`] (or `btcli wallet regen_hotkey`).
    pub fn generate() -> (Self, String) {
        let entropy = Zeroizing::new(rand::random::<[u8; MNEMONIC_ENTROPY_BYTES]>());
        let mnemonic = Mnemonic::from_entropy_in(Language::English, entropy.as_slice())
            .expect("16 bytes is a valid BIP-39 entropy length");
        let phrase = mnemonic.to_string();
        let keypair = Self::from_phrase(&phrase).expect("a phrase just generated is valid");
        (keypair, phrase)
    }

    /// The keypair of an English BIP-39 mnemonic, derived the substrate way: the mini secret is
    /// the first 32 bytes of PBKDF2-HMAC-SHA512(entropy, "mnemonic", 2048 rounds), with an empty
    /// password. (Substrate hashes the entropy, not the phrase as BIP-39 wallets do.)
    pub fn from_phrase(phrase: &str) -> Result<Self> {
        let mnemonic = Mnemonic::parse_in(Language::English, phrase)
            .map_err(|e| WalletError::InvalidPhrase(e.to_string()))?;
        let entropy = Zeroizing::new(mnemonic.to_entropy());
        let mini = substrate_bip39::mini_secret_from_entropy(&entropy, "")
            .map_err(|e| WalletError::InvalidPhrase(format!("{e:?}")))?;
        let mut keypair = Self::from_seed(&mini.to_bytes());
        keypair.phrase = Some(Zeroizing::new(mnemonic.to_string()));
        Ok(keypair)
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.pair.public.to_bytes())
    }

    /// The public key as a Bittensor SS58 address (prefix 42).
    pub fn ss58_address(&self) -> String {
        ss58_encode_one_byte(&self.public(), BITTENSOR_SS58_PREFIX)
    }

    /// The normalised mnemonic, when the keypair was made from one (not when loaded from a
    /// keyfile's seed).
    pub fn phrase(&self) -> Option<&str> {
        self.phrase.as_deref().map(String::as_str)
    }

    /// Signs `msg` in the [`SIGNING_CONTEXT`]. sr25519 signatures are randomised: signing the
    /// same message twice gives two different, equally valid signatures.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        self.sign_in(SIGNING_CONTEXT, msg)
    }

    /// Signs `msg` in a caller's own schnorrkel signing context: a signature made for one
    /// purpose (a consensus vote, say) can then never verify as another (a wallet signature).
    pub fn sign_in(&self, context: &[u8], msg: &[u8]) -> Signature {
        Signature(self.pair.sign_simple(context, msg).to_bytes())
    }

    /// The 32-byte mini secret (btcli's `secretSeed`).
    pub(crate) fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The 64-byte schnorrkel secret key, scalar ‖ nonce (btcli's `privateKey`).
    pub(crate) fn secret_key_bytes(&self) -> Zeroizing<[u8; 64]> {
        Zeroizing::new(self.pair.secret.to_bytes())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("public", &self.ss58_address()).finish_non_exhaustive()
    }
}

/// Whether `signature` is `public`'s signature of `msg` in the [`SIGNING_CONTEXT`].
///
/// Never panics: a public key that is not a valid Ristretto point, or a signature that is not a
/// valid schnorrkel encoding, is simply not verified. The identity point (all-zero key) is
/// refused too: anyone can make signatures that schnorrkel accepts for it, and no real key is it.
pub fn verify(public: &PublicKey, msg: &[u8], signature: &Signature) -> bool {
    verify_in(SIGNING_CONTEXT, public, msg, signature)
}

/// Whether `signature` is `public`'s signature of `msg` in the signing `context`, with the
/// refusals of [`verify`].
pub fn verify_in(context: &[u8], public: &PublicKey, msg: &[u8], signature: &Signature) -> bool {
    if public.0 == [0; 32] {
        return false;
    }
    let (Ok(public), Ok(signature)) = (
        schnorrkel::PublicKey::from_bytes(&public.0),
        schnorrkel::Signature::from_bytes(&signature.0),
    ) else {
        return false;
    };
    public.verify_simple(context, msg, &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Substrate's documented development phrase and what subkey prints for it.
    const PHRASE: &str = "bottom drive obey lake curtain smoke basket hold race lonely fit walk";
    const SEED: &str = "fac7959dbfe72f052e5a0c3c8d6530f202b02fd8f9f5ca3580ec8deb7797479e";
    const PUBLIC: &str = "46ebddef8cd9bb167dc30878d7113b7e168e6f0646beffd77d69d39bad76b47a";
    const SS58: &str = "5DfhGyQdFobKM8NsWvEeAKk5EQQgYe9AydgJ7rMB6E1EqRzV";

    fn seed() -> [u8; 32] {
        hex::decode(SEED).expect("hex").try_into().expect("32 bytes")
    }

    #[test]
    fn substrate_dev_phrase_vector() {
        let keypair = Keypair::from_phrase(PHRASE).expect("valid phrase");
        assert_eq!(hex::encode(keypair.seed()), SEED);
        assert_eq!(keypair.public().to_string(), PUBLIC);
        assert_eq!(keypair.ss58_address(), SS58);
        assert_eq!(keypair.phrase(), Some(PHRASE));

        let from_seed = Keypair::from_seed(&seed());
        assert_eq!(from_seed.public(), keypair.public());
        assert_eq!(from_seed.phrase(), None);
    }

    #[test]
    fn signing_contexts_separate_domains() {
        let keypair = Keypair::from_seed(&seed());
        let public = keypair.public();
        let own = keypair.sign_in(b"veribench-consensus", b"vote");
        assert!(verify_in(b"veribench-consensus", &public, b"vote", &own));
        assert!(!verify(&public, b"vote", &own), "a consensus signature is not a wallet one");
        assert!(!verify_in(b"veribench-consensus", &public, b"vote", &keypair.sign(b"vote")));
        assert!(!verify_in(b"veribench-consensus", &public, b"other", &own));
    }

    #[test]
    fn phrase_is_normalised() {
        let messy = format!("  {}  ", PHRASE.to_uppercase().replace(' ', "   "));
        // BIP-39 word lists are lower case: upper case is not accepted, extra spaces are.
        assert!(Keypair::from_phrase(&messy).is_err());
        let spaced = format!("  {}  ", PHRASE.replace(' ', "   "));
        let keypair = Keypair::from_phrase(&spaced).expect("extra whitespace is fine");
        assert_eq!(keypair.public().to_string(), PUBLIC);
    }

    #[test]
    fn bad_phrases_are_rejected() {
        // Last word changed: checksum fails.
        let bad_checksum = PHRASE.replace("walk", "wall");
        for phrase in [
            "",
            "bottom drive obey",
            "notaword drive obey lake curtain smoke basket hold race lonely fit walk",
            &bad_checksum,
        ] {
            let err = Keypair::from_phrase(phrase).expect_err(phrase);
            assert!(err.to_string().starts_with("invalid mnemonic phrase"), "{err}");
        }
    }

    #[test]
    fn generated_keys_restore_from_their_phrase() {
        let (keypair, phrase) = Keypair::generate();
        assert_eq!(phrase.split(' ').count(), 12);
        assert_eq!(keypair.phrase(), Some(phrase.as_str()));
        let restored = Keypair::from_phrase(&phrase).expect("own phrase");
        assert_eq!(restored.public(), keypair.public());
        assert_eq!(restored.seed(), keypair.seed());
        assert_ne!(Keypair::generate().0.public(), keypair.public());
    }

    #[test]
    fn sign_verify_round_trip_and_tampering() {
        let keypair = Keypair::from_seed(&seed());
        let other = Keypair::from_seed(&[7; 32]);
        let msg = b"veribench";
        let sig = keypair.sign(msg);
        assert!(verify(&keypair.public(), msg, &sig));

        assert!(!verify(&keypair.public(), b"veribencH", &sig), "tampered message");
        assert!(!verify(&other.public(), msg, &sig), "other key");
        for i in [0, 31, 32, 62] {
            let mut tampered = sig;
            tampered.0[i] ^= 1;
            assert!(!verify(&keypair.public(), msg, &tampered), "signature byte {i} flipped");
        }
        let mut key = keypair.public();
        key.0[0] ^= 1;
        assert!(!verify(&key, msg, &sig), "tampered key");
    }

    #[test]
    fn signatures_are_randomised_and_substrate_compatible() {
        let keypair = Keypair::from_seed(&seed());
        let (a, b) = (keypair.sign(b"m"), keypair.sign(b"m"));
        assert_ne!(a, b);
        // What `sp_core::sr25519::Pair::verify` does, spelled out with schnorrkel.
        let public =
            schnorrkel::PublicKey::from_bytes(&keypair.public().0).expect("valid public key");
        let sig = schnorrkel::Signature::from_bytes(&a.0).expect("valid signature");
        assert!(public.verify_simple(b"substrate", b"m", &sig).is_ok());
    }

    #[test]
    fn garbage_keys_and_signatures_never_panic() {
        let sig = Keypair::from_seed(&seed()).sign(b"m");
        for key in [[0u8; 32], [0xff; 32], [1; 32]] {
            assert!(!verify(&PublicKey(key), b"m", &sig));
            assert!(!verify(&PublicKey(key), b"m", &Signature([0; 64])));
            assert!(!verify(&PublicKey(key), b"m", &Signature([0xff; 64])));
        }
        let public = Keypair::from_seed(&seed()).public();
        assert!(!verify(&public, b"m", &Signature([0; 64])));
        assert!(!verify(&public, b"m", &Signature([0xff; 64])));
    }

    #[test]
    fn identity_key_forgeries_are_refused() {
        // For the identity point A, s·B = R + k·A holds for R = s·B whatever the message: a
        // signature anyone can make. schnorrkel alone accepts it.
        let mut secret = [0u8; 64];
        secret[0] = 1; // scalar s = 1, any nonce
        let r = schnorrkel::SecretKey::from_bytes(&secret).expect("canonical scalar").to_public();
        let mut forged = [0u8; 64];
        forged[..32].copy_from_slice(&r.to_bytes());
        forged[32] = 1;
        forged[63] |= 0x80; // schnorrkel's marker bit
        let identity = schnorrkel::PublicKey::from_bytes(&[0; 32]).expect("identity is a point");
        let sig = schnorrkel::Signature::from_bytes(&forged).expect("well-formed");
        assert!(identity.verify_simple(SIGNING_CONTEXT, b"anything", &sig).is_ok());

        assert!(!verify(&PublicKey([0; 32]), b"anything", &Signature(forged)));
    }

    #[test]
    fn debug_prints_no_secret() {
        let keypair = Keypair::from_phrase(PHRASE).expect("valid phrase");
        let debug = format!("{keypair:?}");
        assert_eq!(debug, format!("Keypair {{ public: {SS58:?}, .. }}"));
        assert!(!debug.contains(SEED) && !debug.contains("bottom"));
    }
}
