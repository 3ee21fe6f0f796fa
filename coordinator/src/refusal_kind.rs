//! Every kind of refused peer input: one enum, so a refusal cannot be misspelt, each kind has
//! one stored name and one error code a peer is told.

use veribench_protocol::ErrorCode;

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident => $name:literal, $code:ident;)*) => {
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

            /// The error code a peer is told when the refusal is answered with an `Error` frame.
            pub fn error_code(self) -> ErrorCode {
                match self {
                    $(RefusalKind::$variant => ErrorCode::$code,)*
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
    HandshakeTimeout => "handshake_timeout", Unauthorized;
    /// More than `max_register_bytes` before registering.
    RegisterTooLarge => "register_too_large", TooLarge;
    /// A frame over the frame limit.
    FrameTooLarge => "frame_too_large", TooLarge;
    /// Another protocol version.
    UnsupportedVersion => "unsupported_version", Unsupported;
    /// A frame that does not decode, or a text frame.
    MalformedFrame => "malformed_frame", Malformed;
    /// A message the peer may not send now.
    UnexpectedMessage => "unexpected_message", Malformed;
    /// A transport error.
    ConnectionError => "connection_error", Malformed;
    /// Nothing received for the offline timeout.
    IdleTimeout => "idle_timeout", Unauthorized;
    /// A frame over the rate limit, dropped.
    RateLimited => "rate_limited", RateLimited;
    /// Too many frames over the rate limit: closed.
    Flood => "flood", RateLimited;
    /// Our own failure.
    Internal => "internal", Internal;
    /// Our database cannot take the registration now; the worker retries later.
    StoreUnavailable => "store_unavailable", Busy;
    /// The coordinator is shutting down.
    ShuttingDown => "shutting_down", Busy;
    /// The worker's clock is further ahead of ours than a challenge's deadline can absorb.
    ClockSkew => "clock_skew", Unauthorized;
    /// A registration naming a device another identity holds.
    DeviceConflict => "device_conflict", Unauthorized;
    /// A registration timestamp too far from our clock.
    StaleRegistration => "stale_registration", Unauthorized;
    /// The metagraph has not been read yet.
    ChainUnavailable => "chain_unavailable", Unauthorized;
    /// A miner hotkey not registered on the subnet.
    UnknownHotkey => "unknown_hotkey", Unauthorized;
    /// An invalid or expired delegation.
    BadDelegation => "bad_delegation", Unauthorized;
    /// A registration not signed by its worker key.
    BadSignature => "bad_signature", Unauthorized;
    /// A registration without devices.
    NoDevices => "no_devices", Unauthorized;
    /// A registration nonce used before.
    ReplayedRegistration => "replayed_registration", Unauthorized;
    /// A commitment or openings for a challenge not awaiting them.
    UnknownChallenge => "unknown_challenge", UnknownChallenge;
    /// An unauthorized or invalid lease report (401, 400).
    BadLease => "bad_lease", Unauthorized;
    /// A lease report body seen before (409).
    LeaseReplayed => "lease_replayed", Unauthorized;
    /// A lease report body over the limit (413).
    LeaseTooLarge => "lease_too_large", TooLarge;
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
}
