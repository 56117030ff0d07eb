//! One client handshake ([`super::session`]: reads stop at record boundaries while the kernel
//! may take over), then the per-connection decision to hand the record layer to the kernel or
//! keep it in rustls; and the hand-over itself, for client and member connections.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use rustls::server::UnbufferedServerConnection;
use rustls::{ExtractedSecrets, ProtocolVersion, ServerConfig, SupportedCipherSuite};
use tokio::net::TcpStream;

use super::budget::RecordBudget;
use super::config::suite_name;
use super::offload::{self, Capabilities, KernelCipher, KernelVersion, RxPadding};
use super::peer::ClientCert;
use super::rekey::{KeyUpdateCounts, KeyUpdates};
use super::session::{self, Session, Side, tls_error};
use super::stream::{KtlsStream, PeerStream};

/// Whether lbd tries kTLS at all, and what the kernel can do.
#[derive(Clone, Debug)]
pub struct OffloadPolicy {
    /// `false` when the operator disabled kTLS (`lbd serve --ktls off`).
    pub enabled: bool,
    pub capabilities: Capabilities,
    /// Ciphers that must stay in userspace even where the kernel could take them (policy).
    pub userspace_ciphers: Vec<KernelCipher>,
    /// Tell the kernel that clients' TLS 1.3 records carry no padding, so that it decrypts them
    /// straight into lbd's buffers (`lbd serve --ktls-rx-expect-no-pad`). Member connections
    /// always do: members are the operator's own servers. See [`offload::RxPadding`].
    pub client_rx_no_pad: bool,
    /// At most this many records under one transmit key once offloaded, where it is below the
    /// cipher suite's confidentiality limit (`lbd serve --ktls-record-limit`). See
    /// [`super::budget`].
    pub record_limit: Option<u64>,
    /// Key updates on offloaded connections so far (where the kernel takes new keys).
    pub key_update_counts: KeyUpdateCounts,
}

impl OffloadPolicy {
    /// Userspace TLS only.
    pub fn disabled() -> Self {
        OffloadPolicy { enabled: false, ..Self::probe_with(Capabilities::none("disabled by configuration")) }
    }

    /// Probe the kernel and offload whatever it supports.
    pub fn probe() -> Self {
        Self::probe_with(offload::probe())
    }

    /// Offload whatever `capabilities` say the kernel supports.
    pub fn probe_with(capabilities: Capabilities) -> Self {
        OffloadPolicy { enabled: true, capabilities, userspace_ciphers: vec![], client_rx_no_pad: false, record_limit: None, key_update_counts: KeyUpdateCounts::default() }
    }

    /// Secret extraction is only switched on where it may be used.
    pub fn may_offload(&self) -> bool {
        self.enabled && self.capabilities.ulp.is_ok()
    }
}

/// Where a connection's records are processed, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    Kernel,
    Userspace(Fallback),
}

/// Why a connection stayed in userspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    DisabledByConfig,
    KernelWithoutKtls,
    CipherNotInKernel,
    CipherPolicy,
    VersionNotSupported,
}

impl Offload {
    /// `(offload, reason)` metric labels.
    pub fn labels(&self) -> (&'static str, &'static str) {
        match self {
            Offload::Kernel => ("ktls", "installed"),
            Offload::Userspace(f) => (
                "userspace",
                match f {
                    Fallback::DisabledByConfig => "disabled_by_config",
                    Fallback::KernelWithoutKtls => "kernel_without_ktls",
                    Fallback::CipherNotInKernel => "cipher_not_in_kernel",
                    Fallback::CipherPolicy => "cipher_policy",
                    Fallback::VersionNotSupported => "version_not_supported",
                },
            ),
        }
    }
}

/// A completed handshake.
pub struct Accepted {
    pub stream: PeerStream,
    pub alpn: Option<Vec<u8>>,
    pub version: &'static str,
    pub cipher: &'static str,
    pub sni: Option<String>,
    pub offload: Offload,
    /// The verified certificate the client presented (listeners with client authentication).
    pub client_cert: Option<Arc<ClientCert>>,
}

/// Why a handshake or the kernel hand-over failed.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error("TLS handshake failed: {0}")]
    Handshake(io::Error),
    #[error("kTLS hand-over failed after the secrets left rustls: {0}")]
    Offload(String),
}

/// Where the records of a completed handshake should go.
pub fn decide(policy: &OffloadPolicy, version: Option<ProtocolVersion>, suite: SupportedCipherSuite, at_record_boundary: bool) -> Offload {
    let kernel_version = version.and_then(KernelVersion::of);
    match (kernel_version, kernel_cipher(suite)) {
        _ if !policy.enabled => Offload::Userspace(Fallback::DisabledByConfig),
        _ if policy.capabilities.ulp.is_err() => Offload::Userspace(Fallback::KernelWithoutKtls),
        (None, _) => Offload::Userspace(Fallback::VersionNotSupported),
        (_, Some(c)) if policy.userspace_ciphers.contains(&c) => Offload::Userspace(Fallback::CipherPolicy),
        (Some(v), Some(c)) if policy.capabilities.supports(v, c) && at_record_boundary => Offload::Kernel,
        _ => Offload::Userspace(Fallback::CipherNotInKernel),
    }
}

/// Hands a completed connection's record layer (a client's or a member's) to the kernel, at a
/// record boundary: plaintext rustls already decrypted is kept to be served first, then the
/// secrets leave rustls and TX+RX are installed. Where the kernel takes new keys (TLS 1.3),
/// rustls' key schedule stays with the stream, so that keys are renewed instead of the
/// connection ending ([`super::rekey`]).
pub fn hand_over<C: Side>(tls: Session<C>, version: ProtocolVersion, padding: RxPadding, policy: &OffloadPolicy) -> Result<KtlsStream, String> {
    let (tcp, conn, prefix) = tls.into_parts();
    let limit = record_limit(conn.negotiated_cipher_suite(), policy)?;
    let (secrets, schedule) = conn.into_kernel().map_err(|e| e.to_string())?;
    let renewable = policy.capabilities.key_updates && version == ProtocolVersion::TLSv1_3;
    let keys = renewable.then(|| KeyUpdates::new(schedule, policy.key_update_counts.clone()));
    install(tcp, prefix, version, secrets, keys, padding, limit)
}

/// The most records an offloaded transmit key may encrypt: the suite's confidentiality limit,
/// or the operator's lower `record_limit`.
fn record_limit(suite: Option<SupportedCipherSuite>, policy: &OffloadPolicy) -> Result<u64, String> {
    let suite_limit = match suite.ok_or("no cipher suite negotiated")? {
        SupportedCipherSuite::Tls12(s) => s.common.confidentiality_limit,
        SupportedCipherSuite::Tls13(s) => s.common.confidentiality_limit,
    };
    Ok(policy.record_limit.map_or(suite_limit, |l| l.min(suite_limit)))
}

/// Installs TX+RX on `tcp`. The stream may send records up to `limit`, counted from the records
/// the key already encrypted in rustls (or renew the key with `keys`).
fn install(tcp: TcpStream, prefix: Vec<u8>, version: ProtocolVersion, secrets: ExtractedSecrets, keys: Option<KeyUpdates>, padding: RxPadding, limit: u64) -> Result<KtlsStream, String> {
    let budget = Arc::new(RecordBudget::new(limit, secrets.tx.0, keys));
    offload::install(tcp.as_raw_fd(), version, secrets, padding).map_err(|e| e.to_string())?;
    Ok(KtlsStream::new(tcp, prefix, budget))
}

/// Runs the handshake on `tcp` and decides where the records go.
pub async fn accept(tcp: TcpStream, config: Arc<ServerConfig>, policy: &OffloadPolicy) -> Result<Accepted, AcceptError> {
    // Every record the handshake produced (TLS 1.3 NewSessionTickets included) is written
    // before it returns, so the kernel can take the write side over at the next sequence number.
    let conn = UnbufferedServerConnection::new(config).map_err(|e| AcceptError::Handshake(tls_error(e)))?;
    let (mut tls, sni) = session::handshake(tcp, conn, policy.may_offload()).await.map_err(AcceptError::Handshake)?;
    let conn = tls.connection();
    let version = conn.protocol_version();
    let suite = conn.negotiated_cipher_suite().expect("handshake complete");
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let client_cert = conn.peer_certificates().and_then(|c| c.first()).and_then(|c| ClientCert::parse(c)).map(Arc::new);
    let version_name = version.and_then(KernelVersion::of).map(KernelVersion::name).unwrap_or("other");
    let decision = decide(policy, version, suite, tls.at_record_boundary());

    let stream = match decision {
        Offload::Kernel => {
            let padding = if policy.client_rx_no_pad { RxPadding::NotExpected } else { RxPadding::Tolerated };
            PeerStream::Ktls(hand_over(tls, version.expect("known version"), padding, policy).map_err(AcceptError::Offload)?)
        }
        Offload::Userspace(_) => {
            tls.uncork();
            PeerStream::Rustls(Box::new(tls))
        }
    };
    Ok(Accepted { stream, alpn, version: version_name, cipher: suite_name(suite), sni, offload: decision, client_cert })
}

fn kernel_cipher(suite: rustls::SupportedCipherSuite) -> Option<KernelCipher> {
    let name = suite_name(suite);
    if name.contains("AES128-GCM") || name == "TLS_AES_128_GCM_SHA256" {
        Some(KernelCipher::Aes128Gcm)
    } else if name.contains("AES256-GCM") || name == "TLS_AES_256_GCM_SHA384" {
        Some(KernelCipher::Aes256Gcm)
    } else if name.contains("CHACHA20") {
        Some(KernelCipher::Chacha20Poly1305)
    } else {
        None
    }
}
