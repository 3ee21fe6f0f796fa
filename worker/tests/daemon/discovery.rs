//! The daemon following a subnet on the file-backed local chain, against in-test coordinators
//! over real loopback TLS: trusted validators are served, with one guard for all of them; a
//! rogue without a permit and a validator serving another certificate are refused and recorded;
//! a validator losing its permit is left, a re-announcement of the same endpoint is not.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::common::{self, Peer, challenge, key};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use veribench_chain::{CertFingerprint, Chain, Endpoint, LocalChain, LocalSubnet, NetUid, WssUrl};
use veribench_kernels::{CpuBackend, Delayed};
use veribench_protocol::wire::PROTOCOL_VERSION;
use veribench_protocol::{DeviceKey, ErrorCode, Message, PublicKey, UnixMillis};
use veribench_wallet::{Keypair, delegate};
use veribench_worker::daemon::discovery::{DiscoveryState, TrustStatus, ss58};
use veribench_worker::daemon::{
    BackoffConfig, DiscoveryConfig, WorkerConfig, WorkerIdentity, read_state, run_worker_with_token,
};

const NETUID: NetUid = NetUid(3);
const STAKE: u64 = 1_000_000_000_000;

fn device() -> DeviceKey {
    DeviceKey::new("cpu:discovery-test").expect("valid key")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn server_cert() -> CertificateDer<'static> {
    CertificateDer::from_pem_file(fixture("server.pem")).expect("server.pem")
}

fn acceptor() -> tokio_rustls::TlsAcceptor {
    let key = PrivateKeyDer::from_pem_file(fixture("server-key.pem")).expect("server key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![server_cert()], key)
        .expect("server config");
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A validator's coordinator: a loopback listener and the endpoint it announces.
struct Coordinator {
    keypair: Keypair,
    listener: TcpListener,
    endpoint: Endpoint,
}

impl Coordinator {
    async fn new(keypair: Keypair, fingerprint: CertFingerprint) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let url = WssUrl::new(format!("wss://localhost:{port}/ws")).expect("url");
        let endpoint =
            Endpoint { url, fingerprint: Some(fingerprint), protocol_version: PROTOCOL_VERSION };
        Self { keypair, listener, endpoint }
    }

    /// Accepts the worker over TLS and welcomes it with this validator's key.
    async fn accept(&self) -> Peer<TlsStream<TcpStream>> {
        let (tcp, _) = tokio::time::timeout(common::TIMEOUT, self.listener.accept())
            .await
            .expect("the worker connects in time")
            .expect("accept");
        let tls = acceptor().accept(tcp).await.expect("TLS with the pinned certificate");
        let ws = tokio_tungstenite::accept_async(tls).await.expect("WebSocket handshake");
        let mut peer = Peer { ws, heartbeats: 0 };
        peer.handshake(&self.keypair, 60_000).await;
        peer
    }
}

/// Reads the state file until `done` holds (or fails after the test timeout).
async fn state_until(path: &Path, done: impl Fn(&DiscoveryState) -> bool) -> DiscoveryState {
    let deadline = tokio::time::Instant::now() + common::TIMEOUT;
    loop {
        if let Ok(state) = read_state(path)
            && done(&state)
        {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "state never reached: {:?}",
            read_state(path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn status_of<'a>(
    state: &'a DiscoveryState,
    who: &PublicKey,
) -> Option<(TrustStatus, Option<&'a str>)> {
    let hotkey = ss58(who);
    state.coordinators.iter().find(|c| c.hotkey == hotkey).map(|c| (c.status, c.reason.as_deref()))
}

async fn announce(chain: &LocalChain, who: &Keypair, endpoint: &Endpoint) {
    let data = endpoint.encode().expect("encodes");
    chain.set_commitment(who, NETUID, &data).await.expect("committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_trusted_validators_and_records_every_refusal() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let chain_path = tmp.path().join("chain.json");
    let state_file = tmp.path().join("state/coordinators.json");
    let chain = LocalChain::open(&chain_path).expect("local chain");
    chain.ensure_subnet(NETUID, LocalSubnet::default()).expect("subnet");
    chain.configure_subnet(NETUID, |s| s.commitment_rate_limit_blocks = 0).expect("configured");
    chain.set_block_ms(3_600_000).expect("blocks advance only when told");

    let pinned = CertFingerprint::of_der(server_cert().as_ref());
    let (a, c) = (Coordinator::new(key(9), pinned).await, Coordinator::new(key(8), pinned).await);
    // B announces a certificate it does not serve; the rogue has no permit.
    let b = Coordinator::new(key(7), CertFingerprint([0x5a; 32])).await;
    let rogue = Coordinator::new(key(6), pinned).await;
    // D's coordinator welcomes with another key than D's hotkey.
    let d = Coordinator::new(key(5), pinned).await;
    let coldkey = key(100).public();
    for (who, permit) in [(&a, true), (&c, true), (&b, true), (&rogue, false), (&d, true)] {
        chain.register(NETUID, who.keypair.public(), coldkey, STAKE, permit).expect("registered");
        announce(&chain, &who.keypair, &who.endpoint).await;
    }
    // B's server: TLS handshakes that the worker abandons.
    let b_key = b.keypair.public();
    let b_server = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = b.listener.accept().await else { return };
            assert!(acceptor().accept(tcp).await.is_err(), "the worker refuses B's certificate");
        }
    });

    let d_hotkey = d.keypair.public();
    let d_server = tokio::spawn(async move {
        let impostor = Coordinator { keypair: key(4), ..d };
        loop {
            let mut peer = impostor.accept().await;
            assert!(
                peer.recv().await.is_none(),
                "the worker leaves a coordinator with another key"
            );
        }
    });

    let (miner, worker) = (key(1), key(2));
    let delegation = delegate(&miner, worker.public(), UnixMillis(UnixMillis::now().0 + 3_600_000));
    let identity = WorkerIdentity::new(worker, delegation).expect("identity");
    let config = WorkerConfig {
        name: "follower".into(),
        backoff: BackoffConfig { base_ms: 50, factor: 2.0, max_ms: 200 },
        discovery: DiscoveryConfig {
            network: Some(format!("file:{}", chain_path.display())),
            netuid: Some(NETUID.0),
            refresh_blocks: 1,
            poll_secs: 0.05,
            state_file: Some(state_file.clone()),
            // Every coordinator here listens on localhost.
            allow_private_endpoints: true,
            ..DiscoveryConfig::default()
        },
        ..WorkerConfig::default()
    };
    let backend =
        Arc::new(Delayed::new(CpuBackend::with_device_key(device()), Duration::from_millis(1500)));
    let token = CancellationToken::new();
    let daemon = tokio::spawn(run_worker_with_token(config, identity, backend, token.clone()));

    let (mut peer_a, mut peer_c) = tokio::join!(a.accept(), c.accept());

    // One guard for every validator: while A's challenge computes, C's is refused as busy.
    peer_a.send(&Message::Challenge(challenge(1, &device(), &a.keypair))).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    peer_c.send(&Message::Challenge(challenge(2, &device(), &c.keypair))).await;
    peer_c.expect_refusal(ErrorCode::Busy, 2).await;
    assert!(matches!(peer_a.expect().await, Message::Commitment(m) if m.challenge_id.0 == 1));

    let state = state_until(&state_file, |s| {
        status_of(s, &b_key) == Some((TrustStatus::Refused, Some("fingerprint_mismatch")))
            && status_of(s, &d_hotkey) == Some((TrustStatus::Refused, Some("wrong_key")))
    })
    .await;
    assert_eq!(state.netuid, NETUID.0);
    assert_eq!(status_of(&state, &a.keypair.public()), Some((TrustStatus::Trusted, None)));
    assert_eq!(status_of(&state, &c.keypair.public()), Some((TrustStatus::Trusted, None)));
    assert_eq!(
        status_of(&state, &rogue.keypair.public()),
        Some((TrustStatus::Refused, Some("no_validator_permit")))
    );
    assert_eq!(state.coordinators.len(), 5);

    // C re-announces the same endpoint later: its connection stays.
    let block = chain.advance_blocks(3).expect("advance");
    announce(&chain, &c.keypair, &c.endpoint).await;
    // A loses its permit: the worker leaves it with a Close.
    chain.register(NETUID, a.keypair.public(), coldkey, STAKE, false).expect("demoted");
    chain.advance_blocks(1).expect("advance");
    assert!(peer_a.recv().await.is_none(), "the worker closes A's connection");
    let state = state_until(&state_file, |s| s.block > block).await;
    assert_eq!(
        status_of(&state, &a.keypair.public()),
        Some((TrustStatus::Refused, Some("no_validator_permit")))
    );
    assert_eq!(status_of(&state, &c.keypair.public()), Some((TrustStatus::Trusted, None)));
    peer_c.send(&Message::Challenge(challenge(3, &device(), &c.keypair))).await;
    assert!(matches!(peer_c.expect().await, Message::Commitment(m) if m.challenge_id.0 == 3));

    token.cancel();
    assert!(peer_c.recv().await.is_none(), "shutdown closes C's connection");
    let result = tokio::time::timeout(Duration::from_secs(10), daemon).await;
    result.expect("the worker stops").expect("no panic").expect("clean exit");
    b_server.abort();
    d_server.abort();
}
