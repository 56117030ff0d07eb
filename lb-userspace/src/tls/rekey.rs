//! TLS 1.3 key updates on offloaded connections (clients' and members').
//!
//! Linux 6.14 and later take new keys on a live kTLS socket (`setsockopt(TLS_TX/TLS_RX)` again,
//! TLS 1.3 only). After the hand-over rustls keeps only the connection's key schedule
//! ([`rustls::kernel::KernelConnection`], which its unbuffered API hands out: see
//! [`super::session`]), which derives each next traffic secret; lbd sends and receives the
//! KeyUpdate messages through the kernel and installs what rustls derives:
//! - The peer's KeyUpdate: the kernel hands the record to lbd and decrypts nothing more until the
//!   next receive key is installed, which is done at once. If the peer asked for an update in
//!   return, lbd's next send is preceded by its own KeyUpdate (RFC 8446 §4.6.3).
//! - lbd's transmit key reaching its record budget: a KeyUpdate, then the next key, and the
//!   connection goes on (see [`super::budget`]).
//!
//! Where the kernel cannot take new keys, or for TLS 1.2, such connections end cleanly instead
//! (a pooled member connection is retired before its transmit key runs out).

use std::io;
use std::os::fd::RawFd;
use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use rustls::ConnectionTrafficSecrets;
use rustls::kernel::KernelConnection;

use super::offload::{self, KernelVersion, record_type};

/// A KeyUpdate handshake message (type 24, length 1): `update_not_requested`.
const KEY_UPDATE_NOT_REQUESTED: [u8; 5] = [24, 0, 0, 1, 0];

/// Key updates made on offloaded connections, by direction (shared with the metrics registry).
#[derive(Clone, Debug, Default)]
pub struct KeyUpdateCounts {
    /// KeyUpdates lbd sent (its transmit key renewed).
    pub sent: Counter,
    /// KeyUpdates peers sent (the receive key renewed).
    pub received: Counter,
}

/// rustls' key schedule of an offloaded connection, of either side.
trait Schedule: Send {
    fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    fn next_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
}

impl<Data: Send> Schedule for KernelConnection<Data> {
    fn next_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_tx_secret()
    }

    fn next_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_rx_secret()
    }
}

/// One offloaded TLS 1.3 connection's key schedule, on a kernel that takes new keys.
pub struct KeyUpdates {
    schedule: Mutex<Box<dyn Schedule>>,
    counts: KeyUpdateCounts,
}

impl std::fmt::Debug for KeyUpdates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyUpdates")
    }
}

impl KeyUpdates {
    pub fn new<Data: Send + 'static>(schedule: KernelConnection<Data>, counts: KeyUpdateCounts) -> Self {
        KeyUpdates { schedule: Mutex::new(Box::new(schedule)), counts }
    }

    /// Sends a KeyUpdate under the current transmit key, then installs the next one.
    /// `WouldBlock` (nothing sent, nothing changed) when the socket's send buffer is full. Once
    /// the KeyUpdate has left, failing to install the next key ends the connection.
    pub fn renew_tx(&self, fd: RawFd) -> io::Result<()> {
        offload::send_record(fd, record_type::HANDSHAKE, &KEY_UPDATE_NOT_REQUESTED)?;
        let (seq, secrets) = self.schedule.lock().unwrap().next_tx().map_err(io::Error::other)?;
        offload::install_key(fd, libc::TLS_TX, KernelVersion::Tls13, &secrets, seq)
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, format!("the kernel refused the next transmit key: {e}")))?;
        self.counts.sent.inc();
        Ok(())
    }

    /// Installs the next receive key, after the peer's KeyUpdate was read.
    pub fn renew_rx(&self, fd: RawFd) -> io::Result<()> {
        let (seq, secrets) = self.schedule.lock().unwrap().next_rx().map_err(io::Error::other)?;
        offload::install_key(fd, libc::TLS_RX, KernelVersion::Tls13, &secrets, seq)
            .map_err(|e| io::Error::new(io::ErrorKind::ConnectionAborted, format!("the kernel refused the next receive key: {e}")))?;
        self.counts.received.inc();
        Ok(())
    }
}
