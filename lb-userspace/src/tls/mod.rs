//! TLS termination: rustls server configuration per listener, SNI certificate selection, and
//! handing the record layer to the kernel (kTLS) after the handshake.
//!
//! - [`config`]: a listener's `ServerConfig` (versions, cipher suites, ALPN, tickets).
//! - [`resolver`]: certificate choice by SNI.
//! - [`record`]: reads exactly one TLS record at a time during the handshake, so nothing the
//!   kernel should decrypt is consumed by userspace.
//! - [`offload`]: kTLS probe and installation (the only `unsafe` code of the TLS path).
//! - [`stream`]: a TLS connection end (client- or member-facing), kTLS or rustls, behind one type.
//! - [`client`]: TLS to pool members: `ClientConfig` per pool, handshake, kTLS hand-over.
//! - [`verify`]: client and member certificate verification (CA, CRL), failure reasons.
//! - [`peer`]: the verified client certificate as Octavia's `X-SSL-*` header values.

pub mod accept;
pub mod budget;
pub mod config;
pub mod offload;
pub mod record;
pub mod resolver;
pub mod stream;
pub mod client;
pub mod peer;
pub mod verify;
