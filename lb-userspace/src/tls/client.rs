//! TLS from lb to a pool's members (`tls_enabled`): the pool's `ClientConfig` (versions, ciphers,
//! ALPN, trust anchors and CRLs, lb's client certificate), the handshake (on rustls' unbuffered
//! API, [`super::session`], as on the listener side), and the same kTLS hand-over, so raw
//! forwarding can splice between two offloaded sockets and offloaded keys are renewed where the
//! kernel takes new ones.

use std::io;
use std::net::IpAddr;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::UnbufferedClientConnection;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer, ServerName};
use tokio::net::TcpStream;

use super::accept::{Offload, OffloadPolicy, decide, hand_over};
use super::offload::RxPadding;
use super::config::{TlsConfigError, alpn, versions_and_provider};
use super::session::{self, tls_error};
use super::stream::PeerStream;
use super::verify;
use crate::certs::CertError;
use lb_common::model::{CertificateBundle, KeyFormat, PoolTls};

/// A pool's TLS settings, ready for connections.
#[derive(Clone, Debug)]
pub struct MemberTls {
    pub config: Arc<ClientConfig>,
    /// The name member certificates are checked against; `None`: each member's IP address.
    pub server_name: Option<ServerName<'static>>,
    /// False when member certificates are not verified (no `ca_tls_container_ref`).
    pub verified: bool,
}

/// ALPN protocols lb can speak to HTTP members (it proxies HTTP/1.1 to them).
const HTTP_MEMBER_ALPN: &[&str] = &["http/1.1", "http/1.0"];

/// Builds the settings for `tls`. `http`: the pool's protocol is HTTP, so only HTTP/1.x may be
/// offered. `extract_secrets` allows kTLS installation.
pub fn member_tls(tls: &PoolTls, http: bool, extract_secrets: bool) -> Result<MemberTls, TlsConfigError> {
    let (versions, provider) = versions_and_provider(&tls.tls_versions, &tls.tls_ciphers)?;
    let verifier = verify::member_verifier(tls.ca_certificates.as_deref(), &tls.crls, provider.clone()).map_err(TlsConfigError::Trust)?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .expect("suites were checked against the versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match &tls.client_certificate {
        Some(bundle) => builder.with_client_auth_cert(chain(bundle), key(bundle)).map_err(|e| TlsConfigError::Certificate {
            source_ref: bundle.source.clone(),
            error: CertError::UnsupportedKey(e.to_string()),
        })?,
        None => builder.with_no_client_auth(),
    };
    let offered: Vec<String> = if http {
        let wanted: Vec<String> = tls.alpn_protocols.iter().filter(|p| HTTP_MEMBER_ALPN.contains(&p.as_str())).cloned().collect();
        if wanted.is_empty() && !tls.alpn_protocols.is_empty() {
            return Err(TlsConfigError::BadAlpn(format!("{} (HTTP pools speak HTTP/1.1 to members)", tls.alpn_protocols.join(","))));
        }
        wanted
    } else {
        tls.alpn_protocols.clone()
    };
    config.alpn_protocols = if offered.is_empty() { vec![] } else { alpn(&offered)? };
    config.enable_secret_extraction = extract_secrets;
    let server_name = match &tls.server_name {
        Some(n) => Some(ServerName::try_from(n.clone()).map_err(|_| TlsConfigError::BadServerName(n.clone()))?),
        None => None,
    };
    Ok(MemberTls { config: Arc::new(config), server_name, verified: tls.ca_certificates.is_some() })
}

fn chain(b: &CertificateBundle) -> Vec<CertificateDer<'static>> {
    b.chain.iter().map(|c| CertificateDer::from(c.clone())).collect()
}

fn key(b: &CertificateBundle) -> PrivateKeyDer<'static> {
    match b.key_format {
        KeyFormat::Pkcs8 => PrivatePkcs8KeyDer::from(b.key.clone()).into(),
        KeyFormat::Pkcs1 => PrivatePkcs1KeyDer::from(b.key.clone()).into(),
        KeyFormat::Sec1 => PrivateSec1KeyDer::from(b.key.clone()).into(),
    }
}

/// A member connection after its handshake.
pub struct Connected {
    pub stream: PeerStream,
    pub offload: Offload,
}

/// Runs the client handshake with the member at `ip` over `tcp`, then hands the record layer to
/// the kernel where `policy` and the negotiated suite allow.
pub async fn connect(tcp: TcpStream, tls: &MemberTls, ip: IpAddr, policy: &OffloadPolicy) -> io::Result<Connected> {
    let name = tls.server_name.clone().unwrap_or_else(|| ServerName::from(ip));
    let conn = UnbufferedClientConnection::new(tls.config.clone(), name).map_err(tls_error)?;
    // Every record of lbd's side of the handshake is written before it returns.
    let (mut session, _) = session::handshake(tcp, conn, policy.may_offload()).await?;
    let conn = session.connection();
    let version = conn.protocol_version();
    let suite = conn.negotiated_cipher_suite().expect("handshake complete");
    let offload = decide(policy, version, suite, session.at_record_boundary());
    let stream = match offload {
        // Members are the operator's own servers: trusted not to pad their records.
        Offload::Kernel => PeerStream::Ktls(hand_over(session, version.expect("known version"), RxPadding::NotExpected, policy).map_err(io::Error::other)?),
        Offload::Userspace(_) => {
            session.uncork();
            PeerStream::RustlsMember(Box::new(session))
        }
    };
    Ok(Connected { stream, offload })
}
