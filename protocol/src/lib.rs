//! The veribench protocol: what a challenge is, which matrices it names, how a product is
//! committed and opened, and how a coordinator decides whether an opening is right.
//!
//! Every party (workers, coordinators, third-party verifiers) agrees on these definitions bit for
//! bit; `SPEC.md` beside this crate states them precisely enough to reimplement.
//!
//! The data path, top to bottom: [`challenge`] → [`generator`] → (a backend multiplies) →
//! [`commitment`] → [`sampling`] → [`verify`], with [`wire`] carrying it between processes.
//! [`market`] checks whole products for the prover market's batches.

pub mod bounded;
pub mod canonical;
pub mod challenge;
pub mod commitment;
pub mod error;
pub mod error_code;
pub mod freivalds;
pub mod generator;
pub mod ids;
pub mod market;
pub mod sampling;
pub mod verify;
pub mod wire;

pub use challenge::{
    Challenge, DEFAULT_CPU_SHAPE, DEFAULT_GPU_SHAPE, MAX_DIM, Mode, Shape, UnixMillis,
};
pub use commitment::{Commitment, MultiProof, leaf_hash, verify_multiproof};
pub use error::{Bounded, ProtocolError};
pub use error_code::{ErrorClass, ErrorCode};
pub use generator::{Generator, Matrix};
pub use ids::{ChallengeId, DeviceKey, DeviceSeed, Leaf, PublicKey, Root, Seed, Signature};
pub use market::{
    BATCH_FORMAT, BatchError, MAX_BATCH_JSON_BYTES, MAX_PROOF_BYTES, MatmulBatch, ProofRefusal,
    check_product,
};
pub use sampling::{
    DEFAULT_FP32_SAMPLED_ROWS, DEFAULT_SAMPLED_ROWS, default_sampled_rows, sample_rows,
};
pub use verify::{
    Openings, RejectReason, RowOpening, Verdict, fp32_tolerance, row_entries, verify_openings,
    verify_openings_with,
};
pub use wire::{
    CommitmentMsg, Delegation, ErrorMsg, GpuInfo, HardwareInfo, Heartbeat, Limits, MAX_FRAME_BYTES,
    Message, OpenRequest, OpeningsMsg, PROTOCOL_VERSION, Register, SignedChallenge, VerdictMsg,
    Welcome, max_open_rows,
};
