//! The process's rustls crypto provider.
//!
//! reqwest is built with `rustls-no-provider` and tonic's TLS and tokio-rustls ask for the
//! process default, so something must install one before the first client or server is built;
//! without it reqwest panics. Every binary and client calls [`install_crypto_provider`] first.

/// Makes ring the process-wide rustls provider. Idempotent: a provider already installed (by an
/// earlier call, or by the embedding program) is kept.
pub fn install_crypto_provider() {
    // Err only means one is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    #[test]
    fn after_installing_there_is_a_default_provider_and_installing_again_is_harmless() {
        super::install_crypto_provider();
        super::install_crypto_provider();
        assert!(rustls::crypto::CryptoProvider::get_default().is_some());
    }
}
