//! Every kind of refused peer input: one enum, so a refusal cannot be misspelt, each kind has
//! one stored name and, when a peer can be told over the wire, one error code (SPEC §8.5).

use veribench_protocol::ErrorCode;

macro_rules! kinds {
    (@code) => { None };
    (@code $code:ident) => { Some(ErrorCode::$code) };
    ($($(#[$doc:meta])* $variant:ident => $name:literal $(, $code:ident)?;)*) => {
        /// Why a peer's input was refused: the stored `kind` of a rejection and the metrics label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum RefusalKind {
            $($(#[$doc])* $variant,)*
        }

        impl RefusalKind {
            /// Every kind.
            pub const ALL: &'static [RefusalKind] = &[$(RefusalKind::$variant,)*];

            /// The stored, logged and metrics name.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(RefusalKind::$variant => $name,)*
                }
            }

            /// The error code a peer is told when the refusal is answered with an `Error` frame;
            /// `None` for the kinds only the HTTP API refuses (lease reports, answered with an
            /// HTTP status), which no WebSocket peer can cause. Listed beside each kind, so a new
            /// kind cannot be added without deciding what a peer is told.
            pub fn error_code(self) -> Option<ErrorCode> {
                match self {
                    $(RefusalKind::$variant => kinds!(@code $($code)?),)*
                }
            }
        }
    };
}

kinds! {
    /// Over the caps of unregistered connections; closed at once.
    TooManyConnections => "too_many_connections", RateLimited;
    /// The TLS handshake failed.
    TlsHandshake => "tls_handshake", Malformed;
    /// The WebSocket upgrade failed.
    WsHandshake => "ws_handshake", Malformed;
    /// No TLS, upgrade or registration within the handshake timeout.
    HandshakeTimeout => "handshake_timeout", Timeout;
    /// More than `max_register_bytes` before registering.
    RegisterTooLarge => "register_too_large", TooLarge;
    /// A frame over the frame limit.
    FrameTooLarge => "frame_too_large", TooLarge;
    /// Another protocol version.
    UnsupportedVersion => "unsupported_version", UnsupportedVersion;
    /// A frame that does not decode, or a text frame.
    MalformedFrame => "malformed_frame", Malformed;
    /// A frame that decodes but breaks a bound of SPEC §8.4 (a text, a list, row order).
    InvalidFrame => "invalid_frame", Invalid;
    /// A message the peer may not send now.
    UnexpectedMessage => "unexpected_message", Unexpected;
    /// A transport error.
    ConnectionError => "connection_error", Malformed;
    /// Nothing received for the offline timeout.
    IdleTimeout => "idle_timeout", Timeout;
    /// A frame over the rate limit, dropped.
    RateLimited => "rate_limited", RateLimited;
    /// Too many frames over the rate limit: closed.
    Flood => "flood", RateLimited;
    /// Our own failure.
    Internal => "internal", Internal;
    /// Our database cannot take the registration now; the worker retries later.
    StoreUnavailable => "store_unavailable", Unavailable;
    /// The coordinator is shutting down.
    ShuttingDown => "shutting_down", Unavailable;
    /// The worker's clock is further ahead of ours than a challenge's deadline can absorb.
    ClockSkew => "clock_skew", ClockSkew;
    /// A registration naming a device another identity holds.
    DeviceConflict => "device_conflict", DeviceConflict;
    /// A registration timestamp too far from our clock.
    StaleRegistration => "stale_registration", StaleRegistration;
    /// The metagraph has not been read yet: our state, not the worker's fault, so the worker
    /// is told to retry (`unavailable`).
    ChainUnavailable => "chain_unavailable", Unavailable;
    /// A miner hotkey not registered on the subnet.
    UnknownHotkey => "unknown_hotkey", UnknownHotkey;
    /// An invalid or expired delegation.
    BadDelegation => "bad_delegation", BadDelegation;
    /// A registration not signed by its worker key.
    BadSignature => "bad_signature", BadSignature;
    /// A registration without devices.
    NoDevices => "no_devices", NoDevices;
    /// A registration nonce used before.
    ReplayedRegistration => "replayed_registration", ReplayedRegistration;
    /// A commitment or openings for a challenge not awaiting them.
    UnknownChallenge => "unknown_challenge", UnknownChallenge;
    /// An unauthorized or invalid lease report (401, 400).
    BadLease => "bad_lease";
    /// A lease report body seen before (409).
    LeaseReplayed => "lease_replayed";
    /// A lease report body over the limit (413).
    LeaseTooLarge => "lease_too_large";
}

impl std::fmt::Display for RefusalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<&str> = RefusalKind::ALL.iter().map(|k| k.as_str()).collect();
        assert!(names.iter().all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a stored name is used twice");
    }

    /// A kind named like a wire code is told that code: the stored kind and what the worker
    /// heard never disagree.
    #[test]
    fn kinds_named_like_a_code_are_told_that_code() {
        let mut named = 0;
        for kind in RefusalKind::ALL {
            let Some(same) = ErrorCode::ALL.iter().find(|c| c.as_str() == kind.as_str()) else {
                continue;
            };
            named += 1;
            assert_eq!(kind.error_code(), Some(*same), "{kind}");
        }
        // unsupported_version, rate_limited, internal, clock_skew, device_conflict,
        // stale_registration, unknown_hotkey, bad_delegation, bad_signature, no_devices,
        // replayed_registration, unknown_challenge.
        assert_eq!(named, 12);
    }

    #[test]
    fn every_kind_has_its_code_and_only_lease_kinds_have_none() {
        use ErrorCode as C;
        use RefusalKind as K;
        let expected = [
            (K::TooManyConnections, C::RateLimited),
            (K::TlsHandshake, C::Malformed),
            (K::WsHandshake, C::Malformed),
            (K::ConnectionError, C::Malformed),
            (K::HandshakeTimeout, C::Timeout),
            (K::IdleTimeout, C::Timeout),
            (K::RegisterTooLarge, C::TooLarge),
            (K::FrameTooLarge, C::TooLarge),
            (K::MalformedFrame, C::Malformed),
            (K::InvalidFrame, C::Invalid),
            (K::UnexpectedMessage, C::Unexpected),
            (K::Flood, C::RateLimited),
            (K::StoreUnavailable, C::Unavailable),
            (K::ShuttingDown, C::Unavailable),
            (K::ChainUnavailable, C::Unavailable),
        ];
        for (kind, code) in expected {
            assert_eq!(kind.error_code(), Some(code), "{kind}");
        }
        let silent: Vec<_> = K::ALL.iter().filter(|k| k.error_code().is_none()).collect();
        assert_eq!(silent, [&K::BadLease, &K::LeaseReplayed, &K::LeaseTooLarge]);
    }

    /// What the worker does about it: a coordinator that cannot serve now (no metagraph yet, its
    /// database down, stopping) says so with a transient code, never a refusal of the worker.
    #[test]
    fn our_own_unavailability_is_transient() {
        for kind in [
            RefusalKind::ChainUnavailable,
            RefusalKind::StoreUnavailable,
            RefusalKind::ShuttingDown,
        ] {
            let code = kind.error_code().expect("told over the wire");
            assert!(code.is_transient(), "{kind} is told {code}, not transient");
        }
        for kind in [RefusalKind::BadSignature, RefusalKind::UnknownHotkey] {
            assert!(!kind.error_code().is_some_and(ErrorCode::is_transient), "{kind}");
        }
    }
}
