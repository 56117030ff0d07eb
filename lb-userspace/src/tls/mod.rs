//! TLS termination: rustls server configuration per listener, SNI certificate selection, and
//! handing the record layer to the kernel (kTLS) after the handshake.
//!
//! - [`config`]: a listener's `ServerConfig` (versions, cipher suites, ALPN, tickets).
//! - [`resolver`]: certificate choice by SNI.
//! - [`session`]: a connection's handshake and userspace records (a client's, lbd the server;
//!   or a member's, lbd the client), on rustls' unbuffered API (lbd's buffers; reads stop at
//!   record boundaries while the kernel may take over).
//! - [`spare`]: large records buffers kept per thread between write bursts.
//! - [`offload`]: kTLS probe and installation (the only `unsafe` code of the TLS path).
//! - [`budget`]: an offloaded transmit key's record count, and its renewal.
//! - [`rekey`]: TLS 1.3 key updates on offloaded connections (kernels that take new keys).
//! - [`stream`]: a TLS connection end (client- or member-facing), kTLS or rustls, behind one type.
//! - [`client`]: TLS to pool members: `ClientConfig` per pool, handshake, kTLS hand-over.
//! - [`verify`]: client and member certificate verification (CA, CRL), failure reasons.
//! - [`peer`]: the verified client certificate as Octavia's `X-SSL-*` header values.

pub mod accept;
pub mod budget;
pub mod config;
pub mod offload;
pub mod rekey;
pub mod resolver;
pub mod session;
pub mod spare;
pub mod stream;
pub mod client;
pub mod peer;
pub mod verify;
