//! The transport over real tonic servers and clients on loopback.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use veribench_protocol::PublicKey;
use veribench_wallet::Keypair;

use super::proto::consensus_client::ConsensusClient;
use super::proto::{DecidedRequest, SignedEnvelope};
use super::*;

const NETWORK: u32 = 7;
const WAIT: Duration = Duration::from_secs(5);
const RPC_TIMEOUT: Duration = Duration::from_secs(2);

fn key(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

/// Validators are the keys of seeds 1, 2 and 3.
fn members() -> Vec<PublicKey> {
    (1..=3).map(|i| key(i).public()).collect()
}

struct TestInbound {
    members: Vec<PublicKey>,
    tx: mpsc::Sender<Envelope>,
    decided: HashMap<u64, Vec<u8>>,
    /// GetDecided at [`HELD_HEIGHT`] waits for this.
    release: Arc<tokio::sync::Notify>,
}

/// The height whose GetDecided hangs until the test releases it.
const HELD_HEIGHT: u64 = 99;

#[async_trait::async_trait]
impl Inbound for TestInbound {
    fn network(&self) -> u32 {
        NETWORK
    }
    fn is_member(&self, key: &PublicKey) -> bool {
        self.members.contains(key)
    }
    fn deliver(&self, envelope: Envelope) -> bool {
        self.tx.try_send(envelope).is_ok()
    }
    async fn decided(&self, height: u64) -> Option<Vec<u8>> {
        if height == HELD_HEIGHT {
            self.release.notified().await;
        }
        self.decided.get(&height).cloned()
    }
}

struct TestServer {
    addr: SocketAddr,
    rx: mpsc::Receiver<Envelope>,
    stats: Arc<TransportStats>,
    stop: CancellationToken,
    release: Arc<tokio::sync::Notify>,
    task: JoinHandle<Result<(), TransportError>>,
}

impl TestServer {
    async fn start(limits: ServerLimits, tls: Option<ServerTls>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel(256);
        let inbound = Arc::new(TestInbound {
            members: members(),
            tx,
            decided: HashMap::from([(5, b"decision at 5".to_vec())]),
            release: Arc::default(),
        });
        let release = inbound.release.clone();
        let stats = Arc::new(TransportStats::default());
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, inbound, limits, tls, stats.clone(), stop.clone()));
        Self { addr, rx, stats, stop, release, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    async fn client(&self) -> ConsensusClient<tonic::transport::Channel> {
        ConsensusClient::new(Endpoint::from_shared(self.url()).unwrap().connect().await.unwrap())
    }

    async fn recv(&mut self) -> Envelope {
        tokio::time::timeout(WAIT, self.rx.recv()).await.expect("delivered in time").unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.task).await.expect("stops in time").unwrap().unwrap();
    }
}

fn open_here(env: SignedEnvelope, max: usize) -> Result<Envelope, EnvelopeError> {
    let members = members();
    open(env, NETWORK, &|k| members.contains(k), max)
}

#[test]
fn seal_open_round_trip() {
    for kind in MessageKind::all() {
        assert_eq!(MessageKind::try_from(kind.as_u32()), Ok(kind));
        let sealed = seal(&key(1), NETWORK, kind, b"payload".to_vec());
        let opened = open_here(sealed, 1024).unwrap();
        assert_eq!(
            opened,
            Envelope { sender: key(1).public(), kind, payload: b"payload".to_vec() }
        );
    }
}

#[test]
fn open_refusals() {
    let good = seal(&key(1), NETWORK, MessageKind::Vote, b"vote".to_vec());

    let mut tampered = good.clone();
    tampered.payload = b"vote!".to_vec();
    assert_eq!(open_here(tampered, 1024), Err(EnvelopeError::BadSignature));

    // The kind is signed: relabelling a vote as a proposal breaks the signature.
    let mut relabelled = good.clone();
    relabelled.kind = MessageKind::Proposal.as_u32();
    assert_eq!(open_here(relabelled, 1024), Err(EnvelopeError::BadSignature));

    let elsewhere = seal(&key(1), NETWORK + 1, MessageKind::Vote, b"vote".to_vec());
    assert_eq!(
        open_here(elsewhere, 1024),
        Err(EnvelopeError::WrongNetwork { expected: NETWORK, got: NETWORK + 1 })
    );

    let mut unknown = good.clone();
    unknown.kind = 99;
    assert_eq!(open_here(unknown, 1024), Err(EnvelopeError::UnknownKind(99)));

    let outsider = seal(&key(9), NETWORK, MessageKind::Vote, b"vote".to_vec());
    assert_eq!(open_here(outsider, 1024), Err(EnvelopeError::NotAMember(key(9).public())));

    assert_eq!(open_here(good.clone(), 3), Err(EnvelopeError::TooLarge { size: 4, max: 3 }));

    let mut short_sender = good.clone();
    short_sender.sender.pop();
    assert_eq!(open_here(short_sender, 1024), Err(EnvelopeError::BadSender(31)));

    // A member's key on an outsider's signature.
    let mut forged = seal(&key(9), NETWORK, MessageKind::Vote, b"vote".to_vec());
    forged.sender = key(2).public().0.to_vec();
    assert_eq!(open_here(forged, 1024), Err(EnvelopeError::BadSignature));

    let mut truncated_sig = good.clone();
    truncated_sig.signature.truncate(10);
    assert_eq!(open_here(truncated_sig, 1024), Err(EnvelopeError::BadSignature));

    // The substrate signature of the same bytes is not an envelope signature.
    let mut other_context = good;
    let mut msg = NETWORK.to_le_bytes().to_vec();
    msg.extend_from_slice(&MessageKind::Vote.as_u32().to_le_bytes());
    msg.extend_from_slice(b"vote");
    other_context.signature = key(1).sign(&msg).0.to_vec();
    assert_eq!(open_here(other_context, 1024), Err(EnvelopeError::BadSignature));
}

#[tokio::test]
async fn broadcast_is_delivered() {
    let mut server = TestServer::start(ServerLimits::default(), None).await;
    let peers =
        Peers::new(vec![PeerAddr { key: key(2).public(), url: server.url() }], None, RPC_TIMEOUT)
            .unwrap();
    assert_eq!(peers.connected(), 0, "nothing sent yet");
    for i in 0..3u8 {
        peers.broadcast(&seal(&key(1), NETWORK, MessageKind::Vote, vec![i]));
    }
    for i in 0..3u8 {
        let got = server.recv().await;
        assert_eq!(
            (got.sender, got.kind, got.payload),
            (key(1).public(), MessageKind::Vote, vec![i])
        );
    }
    assert_eq!(server.stats.snapshot().gossip_accepted, 3);
    peers.close();
    server.stop().await;
}

#[tokio::test]
async fn non_member_and_forged_are_refused() {
    let mut server = TestServer::start(ServerLimits::default(), None).await;
    let mut client = server.client().await;

    let outsider = seal(&key(9), NETWORK, MessageKind::Vote, b"x".to_vec());
    let status = client.gossip(outsider).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);

    let mut forged = seal(&key(9), NETWORK, MessageKind::Vote, b"x".to_vec());
    forged.sender = key(1).public().0.to_vec();
    let status = client.gossip(forged).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut bad_kind = seal(&key(1), NETWORK, MessageKind::Vote, b"x".to_vec());
    bad_kind.kind = 0;
    assert_eq!(client.gossip(bad_kind).await.unwrap_err().code(), Code::InvalidArgument);

    assert!(server.rx.try_recv().is_err(), "nothing delivered");
    let stats = server.stats.snapshot();
    assert_eq!(
        (stats.refused_not_member, stats.refused_bad_signature, stats.refused_unknown_kind),
        (1, 1, 1)
    );
    assert_eq!(stats.gossip_accepted, 0);
    server.stop().await;
}

#[tokio::test]
async fn flood_is_cut_at_the_burst() {
    let limits = ServerLimits { rate_per_sec: 0.001, burst: 5.0, ..ServerLimits::default() };
    let mut server = TestServer::start(limits, None).await;
    let mut client = server.client().await;

    let mut codes = Vec::new();
    for i in 0..8u8 {
        let env = seal(&key(1), NETWORK, MessageKind::Vote, vec![i]);
        codes.push(client.gossip(env).await.err().map(|s| s.code()));
    }
    let mut expected = vec![None; 5];
    expected.extend([Some(Code::ResourceExhausted); 3]);
    assert_eq!(codes, expected);

    // The bucket is per (sender, kind): the same sender's proposals and another member pass.
    client.gossip(seal(&key(1), NETWORK, MessageKind::Proposal, vec![])).await.unwrap();
    client.gossip(seal(&key(2), NETWORK, MessageKind::Vote, vec![])).await.unwrap();

    for _ in 0..7 {
        server.recv().await;
    }
    assert!(server.rx.try_recv().is_err());
    assert_eq!(server.stats.snapshot().refused_rate_limited, 3);
    server.stop().await;
}

#[tokio::test]
async fn oversized_frame_is_refused_and_server_keeps_serving() {
    let limits = ServerLimits { max_frame_bytes: 1024, ..ServerLimits::default() };
    let mut server = TestServer::start(limits, None).await;
    let mut client = server.client().await;

    let big = seal(&key(1), NETWORK, MessageKind::Proposal, vec![0; 4096]);
    let status = client.gossip(big).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted),
        "refused by the frame limit: {status:?}"
    );

    // The server keeps serving, on a new connection and on the one that sent the big frame.
    let mut client2 = server.client().await;
    client2.gossip(seal(&key(1), NETWORK, MessageKind::Proposal, vec![1; 100])).await.unwrap();
    assert_eq!(server.recv().await.payload, vec![1; 100]);
    client.gossip(seal(&key(1), NETWORK, MessageKind::Proposal, vec![2; 100])).await.unwrap();
    assert_eq!(server.recv().await.payload, vec![2; 100]);
    server.stop().await;
}

#[tokio::test]
async fn get_decided_returns_bytes_or_not_found() {
    let server = TestServer::start(ServerLimits::default(), None).await;
    let peers =
        Peers::new(vec![PeerAddr { key: key(2).public(), url: server.url() }], None, RPC_TIMEOUT)
            .unwrap();
    assert_eq!(peers.fetch_decided(5).await, Some((key(2).public(), b"decision at 5".to_vec())));
    assert_eq!(peers.connected(), 1);
    assert_eq!(peers.fetch_decided(6).await, None);
    assert_eq!(peers.connected(), 1, "a NOT_FOUND answer still reached the peer");

    let mut client = server.client().await;
    let status = client.get_decided(DecidedRequest { height: 6 }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    let stats = server.stats.snapshot();
    assert_eq!((stats.decided_served, stats.decided_not_found), (1, 2));
    server.stop().await;
}

#[tokio::test]
async fn get_decided_is_rate_limited_per_address() {
    let limits =
        ServerLimits { decided_rate_per_sec: 0.001, decided_burst: 2.0, ..ServerLimits::default() };
    let server = TestServer::start(limits, None).await;
    let mut client = server.client().await;
    for _ in 0..2 {
        client.get_decided(DecidedRequest { height: 5 }).await.unwrap();
    }
    let status = client.get_decided(DecidedRequest { height: 5 }).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(server.stats.snapshot().decided_rate_limited, 1);
    server.stop().await;
}

#[tokio::test]
async fn a_down_peer_does_not_block_the_others() {
    // A port that was just free: connecting to it is refused.
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let mut server = TestServer::start(ServerLimits::default(), None).await;
    let peers = Peers::new(
        vec![
            PeerAddr { key: key(3).public(), url: format!("http://{dead}") },
            PeerAddr { key: key(2).public(), url: server.url() },
        ],
        None,
        RPC_TIMEOUT,
    )
    .unwrap();
    for i in 0..20u8 {
        peers.broadcast(&seal(&key(1), NETWORK, MessageKind::Vote, vec![i]));
    }
    for i in 0..20u8 {
        assert_eq!(server.recv().await.payload, vec![i]);
    }
    assert_eq!(peers.len(), 2);
    assert_eq!(peers.fetch_decided(5).await.map(|(k, _)| k), Some(key(2).public()));
    assert_eq!(peers.connected(), 1);
    drop(peers);
    server.stop().await;
}

#[test]
fn peer_urls_are_checked() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let _guard = rt.enter();
    let peer = |url: &str| vec![PeerAddr { key: key(1).public(), url: url.to_owned() }];
    let tls = ClientTls { ca_pem: Vec::new(), domain: None, identity: None };
    assert!(matches!(
        Peers::new(peer("https://127.0.0.1:1"), None, RPC_TIMEOUT),
        Err(TransportError::TlsRequired(_))
    ));
    assert!(matches!(
        Peers::new(peer("http://127.0.0.1:1"), Some(tls), RPC_TIMEOUT),
        Err(TransportError::PlaintextWithTls(_))
    ));
    assert!(matches!(
        Peers::new(peer("not a url"), None, RPC_TIMEOUT),
        Err(TransportError::BadUrl { .. })
    ));
    assert!(matches!(
        Peers::new(peer("ftp://127.0.0.1:1"), None, RPC_TIMEOUT),
        Err(TransportError::UnsupportedScheme(_))
    ));
}

/// A CA, a server certificate for `localhost` and a client certificate, as PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
        KeyUsagePurpose,
    };
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>, usage| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf(vec!["localhost".into()], ExtendedKeyUsagePurpose::ServerAuth),
        client: leaf(vec!["validator".into()], ExtendedKeyUsagePurpose::ClientAuth),
    }
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate() {
    let pki = pki();
    let tls = ServerTls {
        cert_pem: pki.server.0.clone().into_bytes(),
        key_pem: pki.server.1.clone().into_bytes(),
        client_ca_pem: Some(pki.ca.clone().into_bytes()),
    };
    let mut server = TestServer::start(ServerLimits::default(), Some(tls)).await;
    let url = format!("https://localhost:{}", server.addr.port());

    let with_cert = ClientTls {
        ca_pem: pki.ca.clone().into_bytes(),
        domain: None,
        identity: Some((pki.client.0.clone().into_bytes(), pki.client.1.clone().into_bytes())),
    };
    let peers = Peers::new(
        vec![PeerAddr { key: key(2).public(), url: url.clone() }],
        Some(with_cert),
        RPC_TIMEOUT,
    )
    .unwrap();
    peers.broadcast(&seal(&key(1), NETWORK, MessageKind::Vote, b"over tls".to_vec()));
    assert_eq!(server.recv().await.payload, b"over tls");
    assert_eq!(peers.fetch_decided(5).await.map(|(_, d)| d), Some(b"decision at 5".to_vec()));

    // Same CA, no client certificate: the handshake fails, nothing is delivered.
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(url.clone())
        .unwrap()
        .timeout(RPC_TIMEOUT)
        .tls_config(config)
        .unwrap()
        .connect_lazy();
    let mut anonymous = ConsensusClient::new(channel);
    let env = seal(&key(1), NETWORK, MessageKind::Vote, b"anonymous".to_vec());
    let refused = anonymous.gossip(env).await.unwrap_err();
    assert!(format!("{refused:?}").contains("CertificateRequired"), "{refused:?}");

    // A certificate from another CA is refused too.
    let other = pki_identity_from_other_ca();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&pki.ca))
        .domain_name("localhost")
        .identity(Identity::from_pem(other.0, other.1));
    let channel = Endpoint::from_shared(url)
        .unwrap()
        .timeout(RPC_TIMEOUT)
        .tls_config(config)
        .unwrap()
        .connect_lazy();
    let env = seal(&key(1), NETWORK, MessageKind::Vote, b"stranger".to_vec());
    assert!(ConsensusClient::new(channel).gossip(env).await.is_err());

    assert!(server.rx.try_recv().is_err(), "only the authenticated client got through");
    drop(peers);
    server.stop().await;
}

fn pki_identity_from_other_ca() -> (String, String) {
    pki().client
}

#[tokio::test]
async fn bad_tls_configuration_is_a_typed_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let inbound = Arc::new(TestInbound {
        members: members(),
        tx,
        decided: HashMap::new(),
        release: Arc::default(),
    });
    let tls =
        ServerTls { cert_pem: b"junk".to_vec(), key_pem: b"junk".to_vec(), client_ca_pem: None };
    let result = serve(
        listener,
        inbound,
        ServerLimits::default(),
        Some(tls),
        Arc::default(),
        CancellationToken::new(),
    )
    .await;
    assert!(matches!(result, Err(TransportError::Tls(_))), "{result:?}");
}

#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    let limits = ServerLimits { max_connections: 1, ..ServerLimits::default() };
    let mut server = TestServer::start(limits, None).await;
    let mut first = server.client().await;
    first.gossip(seal(&key(1), NETWORK, MessageKind::Vote, vec![1])).await.unwrap();

    // The second connection stays in the listen backlog while the first is open.
    let channel = Endpoint::from_shared(server.url()).unwrap().connect_lazy();
    let mut second = ConsensusClient::new(channel);
    let env = seal(&key(2), NETWORK, MessageKind::Vote, vec![2]);
    let waiting =
        tokio::time::timeout(Duration::from_millis(300), second.gossip(env.clone())).await;
    assert!(waiting.is_err(), "not served while the only slot is taken");

    drop(first);
    tokio::time::timeout(WAIT, second.gossip(env))
        .await
        .expect("served once the slot frees")
        .unwrap();
    assert_eq!(server.recv().await.payload, vec![1]);
    assert_eq!(server.recv().await.payload, vec![2]);
    server.stop().await;
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused() {
    let limits = ServerLimits { max_concurrent_requests: 1, ..ServerLimits::default() };
    let mut server = TestServer::start(limits, None).await;
    let mut held = server.client().await;
    let hold =
        tokio::spawn(async move { held.get_decided(DecidedRequest { height: HELD_HEIGHT }).await });

    // Once the held request occupies the only permit, another request is refused at once.
    let mut client = server.client().await;
    let env = seal(&key(1), NETWORK, MessageKind::Vote, vec![1]);
    let refused = loop {
        match client.gossip(env.clone()).await {
            Ok(_) => {
                server.recv().await;
                tokio::task::yield_now().await;
            }
            Err(status) => break status,
        }
    };
    assert_eq!(refused.code(), Code::ResourceExhausted);
    assert_eq!(server.stats.snapshot().refused_overloaded, 1);

    server.release.notify_one();
    assert_eq!(hold.await.unwrap().unwrap_err().code(), Code::NotFound);
    client.gossip(env).await.unwrap();
    server.stop().await;
}
