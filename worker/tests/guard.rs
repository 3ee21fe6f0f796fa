//! Unit tests of the [`ChallengeGuard`]: every way a challenge is refused, and what is admitted.

mod common;

use common::{challenge_by, key};
use veribench_protocol::{DeviceKey, ErrorCode, Signature, UnixMillis};
use veribench_worker::daemon::{ChallengeGuard, GuardPolicy, Refusal};

const NOW: UnixMillis = UnixMillis(1_800_000_000_000);

fn device(name: &str) -> DeviceKey {
    DeviceKey::new(name).expect("valid key")
}

fn guard() -> ChallengeGuard {
    ChallengeGuard::new([device("GPU-a"), device("GPU-b")], GuardPolicy::default())
}

#[test]
fn a_signed_fresh_challenge_for_an_idle_device_is_admitted() {
    let coordinator = key(9);
    let mut guard = guard();
    let c = challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, NOW);
    assert_eq!(guard.admit(&coordinator.public(), &c, NOW), Ok(()));
    assert_eq!(guard.computing(&device("GPU-a")).map(|id| id.0), Some(1));
    // Another device computes concurrently.
    let other = challenge_by(2, &device("GPU-b"), &coordinator, &coordinator, NOW);
    assert_eq!(guard.admit(&coordinator.public(), &other, NOW), Ok(()));
}

#[test]
fn forged_signatures_are_refused() {
    let (coordinator, forger) = (key(9), key(7));
    let mut guard = guard();
    let forged = challenge_by(1, &device("GPU-a"), &coordinator, &forger, NOW);
    let refusal = guard.admit(&coordinator.public(), &forged, NOW).expect_err("forged");
    assert!(matches!(refusal, Refusal::BadSignature { .. }), "{refusal}");
    assert_eq!(refusal.code(), ErrorCode::BadSignature);

    // A signature over the same challenge for another device does not carry over.
    let mut moved = challenge_by(2, &device("GPU-a"), &coordinator, &coordinator, NOW);
    moved.device = device("GPU-b");
    let refusal = guard.admit(&coordinator.public(), &moved, NOW).expect_err("altered");
    assert!(matches!(refusal, Refusal::BadSignature { .. }), "{refusal}");
    // Nor for a longer deadline.
    let mut longer = challenge_by(3, &device("GPU-a"), &coordinator, &coordinator, NOW);
    longer.challenge.deadline.0 += 1;
    assert!(matches!(
        guard.admit(&coordinator.public(), &longer, NOW),
        Err(Refusal::BadSignature { .. })
    ));
    assert_eq!(guard.computing(&device("GPU-a")), None, "nothing was admitted");
}

#[test]
fn unsigned_challenges_are_refused() {
    let coordinator = key(9);
    let mut guard = guard();
    let mut unsigned = challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, NOW);
    unsigned.signature = Signature([0; 64]);
    let refusal = guard.admit(&coordinator.public(), &unsigned, NOW).expect_err("unsigned");
    assert!(matches!(refusal, Refusal::BadSignature { .. }), "{refusal}");
    // A forged signature does not burn the id: the authentic challenge is still accepted.
    let real = challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, NOW);
    assert_eq!(guard.admit(&coordinator.public(), &real, NOW), Ok(()));
}

#[test]
fn replays_are_refused_even_after_the_device_is_free() {
    let coordinator = key(9);
    let mut guard = guard();
    let c = challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, NOW);
    guard.admit(&coordinator.public(), &c, NOW).expect("first time");
    guard.release(&device("GPU-a"));
    let refusal = guard.admit(&coordinator.public(), &c, NOW).expect_err("replay");
    assert!(matches!(refusal, Refusal::Replayed { .. }), "{refusal}");
    assert_eq!(refusal.code(), ErrorCode::Replayed);
    // The same id from another coordinator is another challenge.
    let other = key(8);
    let theirs = challenge_by(1, &device("GPU-a"), &other, &other, NOW);
    assert_eq!(guard.admit(&other.public(), &theirs, NOW), Ok(()));
}

#[test]
fn replay_memory_is_bounded() {
    let coordinator = key(9);
    let policy = GuardPolicy { recent_capacity: 2, ..GuardPolicy::default() };
    let mut guard = ChallengeGuard::new([device("GPU-a")], policy);
    for id in 1..=3 {
        let c = challenge_by(id, &device("GPU-a"), &coordinator, &coordinator, NOW);
        guard.admit(&coordinator.public(), &c, NOW).expect("fresh");
        guard.release(&device("GPU-a"));
    }
    let recent = challenge_by(3, &device("GPU-a"), &coordinator, &coordinator, NOW);
    assert!(matches!(
        guard.admit(&coordinator.public(), &recent, NOW),
        Err(Refusal::Replayed { .. })
    ));
    // Id 1 fell out of the window: only its deadline protects it now.
    let old = challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, NOW);
    assert_eq!(guard.admit(&coordinator.public(), &old, NOW), Ok(()));
}

#[test]
fn expired_challenges_are_refused() {
    let coordinator = key(9);
    let mut guard = guard();
    let c = challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, NOW);
    let at_deadline = c.challenge.deadline;
    let refusal = guard.admit(&coordinator.public(), &c, at_deadline).expect_err("expired");
    assert!(matches!(refusal, Refusal::Expired { .. }), "{refusal}");
    assert_eq!(refusal.code(), ErrorCode::Expired);
    let c = challenge_by(2, &device("GPU-a"), &coordinator, &coordinator, NOW);
    let just_before = UnixMillis(c.challenge.deadline.0 - 1);
    assert_eq!(guard.admit(&coordinator.public(), &c, just_before), Ok(()));
}

#[test]
fn challenges_from_the_future_are_refused() {
    let coordinator = key(9);
    let mut guard = guard();
    let skew = GuardPolicy::default().max_future_skew_ms;
    let far =
        challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, UnixMillis(NOW.0 + skew + 1));
    let refusal = guard.admit(&coordinator.public(), &far, NOW).expect_err("future");
    assert!(matches!(refusal, Refusal::FromTheFuture { .. }), "{refusal}");
    assert_eq!(refusal.code(), ErrorCode::FromTheFuture);
    let near =
        challenge_by(2, &device("GPU-a"), &coordinator, &coordinator, UnixMillis(NOW.0 + skew));
    assert_eq!(guard.admit(&coordinator.public(), &near, NOW), Ok(()));
}

#[test]
fn foreign_coordinators_are_refused() {
    let (coordinator, foreign) = (key(9), key(5));
    let mut guard = guard();
    // Validly signed, by a key that is not the trusted one.
    let c = challenge_by(1, &device("GPU-a"), &foreign, &foreign, NOW);
    let refusal = guard.admit(&coordinator.public(), &c, NOW).expect_err("foreign");
    assert!(matches!(refusal, Refusal::Foreign { .. }), "{refusal}");
    assert_eq!(refusal.code(), ErrorCode::Foreign);
}

#[test]
fn unknown_devices_are_refused() {
    let coordinator = key(9);
    let mut guard = guard();
    let c = challenge_by(1, &device("GPU-zzz"), &coordinator, &coordinator, NOW);
    let refusal = guard.admit(&coordinator.public(), &c, NOW).expect_err("unknown device");
    assert!(matches!(refusal, Refusal::UnknownDevice { .. }), "{refusal}");
    assert_eq!(refusal.code(), ErrorCode::UnknownDevice);
}

#[test]
fn busy_devices_are_refused_until_released() {
    let coordinator = key(9);
    let mut guard = guard();
    let first = challenge_by(1, &device("GPU-a"), &coordinator, &coordinator, NOW);
    guard.admit(&coordinator.public(), &first, NOW).expect("idle");
    let second = challenge_by(2, &device("GPU-a"), &coordinator, &coordinator, NOW);
    let refusal = guard.admit(&coordinator.public(), &second, NOW).expect_err("busy");
    assert!(matches!(refusal, Refusal::Busy { .. }), "{refusal}");
    assert_eq!(refusal.code(), ErrorCode::Busy);
    guard.release(&device("GPU-a"));
    let third = challenge_by(3, &device("GPU-a"), &coordinator, &coordinator, NOW);
    assert_eq!(guard.admit(&coordinator.public(), &third, NOW), Ok(()));
}
