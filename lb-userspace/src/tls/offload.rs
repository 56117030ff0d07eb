//! kTLS: probing what the running kernel supports, installing the record layer on a socket, and
//! the few system calls an offloaded socket needs (control records, splice).
//!
//! This is the only place in the TLS path with `unsafe`. Every block is a single libc call on a
//! file descriptor the caller owns, with buffers whose sizes are passed alongside them.

use std::collections::BTreeMap;
use std::io;
use std::mem::{MaybeUninit, size_of, zeroed};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use rustls::{ConnectionTrafficSecrets, ExtractedSecrets, ProtocolVersion};
use zeroize::Zeroize;

/// TLS record content types (RFC 8446 §5.1).
pub mod record_type {
    pub const CHANGE_CIPHER_SPEC: u8 = 20;
    pub const ALERT: u8 = 21;
    pub const HANDSHAKE: u8 = 22;
    pub const APPLICATION_DATA: u8 = 23;
}

/// The AEADs the kernel can take, as lb names them in logs and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelCipher {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl KernelCipher {
    pub const ALL: [KernelCipher; 3] = [KernelCipher::Aes128Gcm, KernelCipher::Aes256Gcm, KernelCipher::Chacha20Poly1305];

    pub fn name(self) -> &'static str {
        match self {
            KernelCipher::Aes128Gcm => "aes-128-gcm",
            KernelCipher::Aes256Gcm => "aes-256-gcm",
            KernelCipher::Chacha20Poly1305 => "chacha20-poly1305",
        }
    }

    fn of(secrets: &ConnectionTrafficSecrets) -> Option<Self> {
        match secrets {
            ConnectionTrafficSecrets::Aes128Gcm { .. } => Some(KernelCipher::Aes128Gcm),
            ConnectionTrafficSecrets::Aes256Gcm { .. } => Some(KernelCipher::Aes256Gcm),
            ConnectionTrafficSecrets::Chacha20Poly1305 { .. } => Some(KernelCipher::Chacha20Poly1305),
            _ => None,
        }
    }
}

/// Protocol versions kTLS handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelVersion {
    Tls12,
    Tls13,
}

impl KernelVersion {
    pub const ALL: [KernelVersion; 2] = [KernelVersion::Tls12, KernelVersion::Tls13];

    pub fn name(self) -> &'static str {
        match self {
            KernelVersion::Tls12 => "TLSv1.2",
            KernelVersion::Tls13 => "TLSv1.3",
        }
    }

    pub fn of(v: ProtocolVersion) -> Option<Self> {
        match v {
            ProtocolVersion::TLSv1_2 => Some(KernelVersion::Tls12),
            ProtocolVersion::TLSv1_3 => Some(KernelVersion::Tls13),
            _ => None,
        }
    }

    fn wire(self) -> u16 {
        match self {
            KernelVersion::Tls12 => libc::TLS_1_2_VERSION,
            KernelVersion::Tls13 => libc::TLS_1_3_VERSION,
        }
    }
}

/// What the running kernel can offload, measured once at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// `Err(reason)` when the TLS ULP itself is unavailable.
    pub ulp: Result<(), String>,
    /// Whether TX and RX keys were accepted, per version and cipher.
    pub suites: BTreeMap<(KernelVersion, KernelCipher), bool>,
    /// Whether the kernel takes a TLS 1.3 socket's next key (Linux 6.14 and later), so that
    /// offloaded connections can follow and make key updates ([`super::rekey`]).
    pub key_updates: bool,
}

impl Capabilities {
    /// Capabilities of a kernel with no kTLS at all, for `reason`.
    pub fn none(reason: impl Into<String>) -> Self {
        Capabilities { ulp: Err(reason.into()), suites: BTreeMap::new(), key_updates: false }
    }

    pub fn supports(&self, version: KernelVersion, cipher: KernelCipher) -> bool {
        self.ulp.is_ok() && self.suites.get(&(version, cipher)).copied().unwrap_or(false)
    }

    /// One line for the startup log.
    pub fn summary(&self) -> String {
        match &self.ulp {
            Err(reason) => format!("kTLS unavailable: {reason}"),
            Ok(()) => {
                let ok: Vec<String> = self
                    .suites
                    .iter()
                    .filter(|(_, ok)| **ok)
                    .map(|((v, c), _)| format!("{}/{}", v.name(), c.name()))
                    .collect();
                if ok.is_empty() {
                    "kTLS unavailable: the TLS ULP loads but the kernel accepted no cipher (crypto modules missing?)".into()
                } else {
                    let updates = match self.key_updates {
                        true => "TLS 1.3 key updates followed and made",
                        false => "no TLS 1.3 key updates (the kernel cannot take new keys: such connections are ended cleanly)",
                    };
                    format!("kTLS available for {}; {updates}", ok.join(", "))
                }
            }
        }
    }
}

/// Probes the kernel on throw-away loopback connections: TCP_ULP "tls", then TX and RX keys for
/// every version and cipher, and whether a TLS 1.3 socket takes a second transmit key.
pub fn probe() -> Capabilities {
    let pair = || -> io::Result<(TcpStream, TcpStream)> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let client = TcpStream::connect(listener.local_addr()?)?;
        let (server, _) = listener.accept()?;
        Ok((client, server))
    };
    let mut caps = Capabilities { ulp: Ok(()), suites: BTreeMap::new(), key_updates: false };
    for version in KernelVersion::ALL {
        for cipher in KernelCipher::ALL {
            let (sock, _peer) = match pair() {
                Ok(p) => p,
                Err(e) => return Capabilities::none(format!("probe could not open a loopback connection: {e}")),
            };
            if let Err(e) = set_ulp(sock.as_raw_fd()) {
                let hint = if e.raw_os_error() == Some(libc::ENOENT) {
                    " (kernel built without CONFIG_TLS, or the tls module cannot be loaded)"
                } else {
                    ""
                };
                return Capabilities::none(format!("setsockopt(TCP_ULP, \"tls\") failed: {e}{hint}"));
            }
            let info = CryptoInfo::zeroed(version, cipher);
            let ok = info.set(sock.as_raw_fd(), libc::TLS_TX).is_ok() && info.set(sock.as_raw_fd(), libc::TLS_RX).is_ok();
            caps.suites.insert((version, cipher), ok);
            if ok && version == KernelVersion::Tls13 && !caps.key_updates {
                // Kernels before 6.14 refuse a second key (EBUSY).
                caps.key_updates = info.set(sock.as_raw_fd(), libc::TLS_TX).is_ok();
            }
        }
    }
    caps
}

/// Why installing kTLS on a connection failed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// Nothing was changed on the socket; the connection can continue in userspace.
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("setsockopt(TCP_ULP) failed: {0}")]
    Ulp(io::Error),
    #[error("setsockopt(TLS_TX) failed: {0}")]
    Tx(io::Error),
    /// TX keys are in the kernel but RX keys are not: the connection cannot continue.
    #[error("setsockopt(TLS_RX) failed after TLS_TX succeeded: {0}")]
    Rx(io::Error),
}

impl InstallError {
    /// True when the socket is untouched enough to keep serving with rustls.
    pub fn can_fall_back(&self) -> bool {
        !matches!(self, InstallError::Rx(_))
    }
}

/// What the kernel may assume of a peer's TLS 1.3 records (`TLS_RX_EXPECT_NO_PAD`, Linux 6.0
/// and later). A TLS 1.3 record's type and padding are inside its ciphertext, so by default the
/// kernel decrypts each record into a buffer of its own and then copies the plaintext out.
/// Expecting no padding, it decrypts straight into the reader's buffer, and decrypts again
/// (the copying way) any record that turns out padded or not application data, which the
/// kernel counts as `TlsDecryptRetry` in `/proc/net/tls_stat`. A peer that pads every record
/// can thus make lbd decrypt its bytes twice: the kernel's documentation advises it only for
/// trusted peers. rustls does not pad, nor does OpenSSL unless configured to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxPadding {
    /// The kernel's default: decrypt into its own buffer, then copy.
    Tolerated,
    /// Decrypt straight into the reader's buffer (TLS 1.3 only; ignored for TLS 1.2, whose
    /// records the kernel decrypts in place anyway, and on kernels before 6.0).
    NotExpected,
}

/// Installs TX and RX keys on `fd` (an established TCP socket whose handshake is complete and
/// whose pending TLS output is flushed), then, for TLS 1.3, what the kernel may expect of the
/// peer's padding. The secrets are wiped whatever happens.
pub fn install(fd: RawFd, version: ProtocolVersion, secrets: ExtractedSecrets, padding: RxPadding) -> Result<(), InstallError> {
    let version = KernelVersion::of(version).ok_or(InstallError::Unsupported("protocol version"))?;
    let ExtractedSecrets { tx: (tx_seq, tx), rx: (rx_seq, rx) } = secrets;
    let mut tx_info = CryptoInfo::new(version, &tx, tx_seq).ok_or(InstallError::Unsupported("cipher"))?;
    let mut rx_info = CryptoInfo::new(version, &rx, rx_seq).ok_or(InstallError::Unsupported("cipher"))?;
    let result = (|| {
        set_ulp(fd).map_err(InstallError::Ulp)?;
        tx_info.set(fd, libc::TLS_TX).map_err(InstallError::Tx)?;
        rx_info.set(fd, libc::TLS_RX).map_err(InstallError::Rx)?;
        if padding == RxPadding::NotExpected && version == KernelVersion::Tls13 {
            // Kernels before 6.0 lack the option (ENOPROTOOPT): they keep decrypting the
            // copying way, which is correct, only slower.
            let on: libc::c_int = 1;
            if let Err(e) = setsockopt(fd, libc::SOL_TLS, libc::TLS_RX_EXPECT_NO_PAD, &on) {
                tracing::debug!("TLS_RX_EXPECT_NO_PAD not set: {e}");
            }
        }
        Ok(())
    })();
    tx_info.zeroize();
    rx_info.zeroize();
    result
}

/// Installs one direction's key (`libc::TLS_TX` or `libc::TLS_RX`) on a socket that already has
/// the TLS ULP: for TLS 1.3, on kernels that take them, the next key after a key update. The
/// copy handed to the kernel is wiped.
pub fn install_key(fd: RawFd, direction: libc::c_int, version: KernelVersion, secrets: &ConnectionTrafficSecrets, seq: u64) -> io::Result<()> {
    let mut info = CryptoInfo::new(version, secrets, seq).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "a cipher the kernel does not take"))?;
    let result = info.set(fd, direction);
    info.zeroize();
    result
}

/// `setsockopt(2)` with `value`'s bytes as the option (a C integer, a kernel structure, a name).
fn setsockopt<T: ?Sized>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: value is a live reference, valid for reads of its size, which is passed.
    let rc = unsafe { libc::setsockopt(fd, level, name, (value as *const T).cast(), size_of_val(value) as libc::socklen_t) };
    if rc == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

fn set_ulp(fd: RawFd) -> io::Result<()> {
    setsockopt(fd, libc::SOL_TCP, libc::TCP_ULP, b"tls".as_slice())
}

/// The kernel's `tls12_crypto_info_*` structures (used for TLS 1.3 as well).
enum CryptoInfo {
    Aes128(libc::tls12_crypto_info_aes_gcm_128),
    Aes256(libc::tls12_crypto_info_aes_gcm_256),
    Chacha(libc::tls12_crypto_info_chacha20_poly1305),
}

impl CryptoInfo {
    fn zeroed(version: KernelVersion, cipher: KernelCipher) -> Self {
        let header = |cipher_type| libc::tls_crypto_info { version: version.wire(), cipher_type };
        // SAFETY: plain-old-data structures of byte arrays; all-zero is a valid value.
        unsafe {
            match cipher {
                KernelCipher::Aes128Gcm => {
                    let mut i: libc::tls12_crypto_info_aes_gcm_128 = zeroed();
                    i.info = header(libc::TLS_CIPHER_AES_GCM_128);
                    CryptoInfo::Aes128(i)
                }
                KernelCipher::Aes256Gcm => {
                    let mut i: libc::tls12_crypto_info_aes_gcm_256 = zeroed();
                    i.info = header(libc::TLS_CIPHER_AES_GCM_256);
                    CryptoInfo::Aes256(i)
                }
                KernelCipher::Chacha20Poly1305 => {
                    let mut i: libc::tls12_crypto_info_chacha20_poly1305 = zeroed();
                    i.info = header(libc::TLS_CIPHER_CHACHA20_POLY1305);
                    CryptoInfo::Chacha(i)
                }
            }
        }
    }

    /// AES-GCM: the 12-byte rustls IV is the kernel's 4-byte salt followed by its 8-byte IV.
    /// ChaCha20-Poly1305: the kernel takes all 12 bytes as IV. The record sequence is big-endian.
    fn new(version: KernelVersion, secrets: &ConnectionTrafficSecrets, seq: u64) -> Option<Self> {
        let mut info = Self::zeroed(version, KernelCipher::of(secrets)?);
        let seq = seq.to_be_bytes();
        match (&mut info, secrets) {
            (CryptoInfo::Aes128(i), ConnectionTrafficSecrets::Aes128Gcm { key, iv }) => {
                i.key.copy_from_slice(key.as_ref());
                i.salt.copy_from_slice(&iv.as_ref()[..4]);
                i.iv.copy_from_slice(&iv.as_ref()[4..]);
                i.rec_seq = seq;
            }
            (CryptoInfo::Aes256(i), ConnectionTrafficSecrets::Aes256Gcm { key, iv }) => {
                i.key.copy_from_slice(key.as_ref());
                i.salt.copy_from_slice(&iv.as_ref()[..4]);
                i.iv.copy_from_slice(&iv.as_ref()[4..]);
                i.rec_seq = seq;
            }
            (CryptoInfo::Chacha(i), ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv }) => {
                i.key.copy_from_slice(key.as_ref());
                i.iv.copy_from_slice(iv.as_ref());
                i.rec_seq = seq;
            }
            _ => return None,
        }
        Some(info)
    }

    fn set(&self, fd: RawFd, direction: libc::c_int) -> io::Result<()> {
        match self {
            CryptoInfo::Aes128(i) => setsockopt(fd, libc::SOL_TLS, direction, i),
            CryptoInfo::Aes256(i) => setsockopt(fd, libc::SOL_TLS, direction, i),
            CryptoInfo::Chacha(i) => setsockopt(fd, libc::SOL_TLS, direction, i),
        }
    }
}

impl Zeroize for CryptoInfo {
    fn zeroize(&mut self) {
        match self {
            CryptoInfo::Aes128(i) => (i.key.zeroize(), i.iv.zeroize(), i.salt.zeroize()),
            CryptoInfo::Aes256(i) => (i.key.zeroize(), i.iv.zeroize(), i.salt.zeroize()),
            CryptoInfo::Chacha(i) => (i.key.zeroize(), i.iv.zeroize(), i.salt.zeroize()),
        };
    }
}

/// Reads one record's worth of plaintext from an offloaded socket, reporting its content type.
/// Non-application records (alerts, handshake messages) arrive only through this call: a plain
/// `read` would fail with EIO on them. `buf` need not be initialised: the kernel writes the
/// bytes whose count it returns, and nothing else.
pub fn recv_record(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<(usize, u8)> {
    // Room for one cmsghdr carrying one byte, 8-byte aligned.
    let mut control = [0u64; 4];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain data; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = size_of::<[u64; 4]>();
    // SAFETY: msg describes buf and control, both valid for the given lengths.
    let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut kind = record_type::APPLICATION_DATA;
    // SAFETY: walking the control buffer the kernel just filled, with the libc macros.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_TLS && (*cmsg).cmsg_type == libc::TLS_GET_RECORD_TYPE {
                kind = *libc::CMSG_DATA(cmsg);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, kind))
}

/// Sends one record of content type `kind` (e.g. an alert) through the kernel's TX path.
pub fn send_record(fd: RawFd, kind: u8, payload: &[u8]) -> io::Result<usize> {
    let mut control = [0u64; 4];
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut _, iov_len: payload.len() };
    // SAFETY: as in recv_record; the cmsg is built inside control with the libc macros.
    unsafe {
        let mut msg: libc::msghdr = zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(1) as usize;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_TLS;
        (*cmsg).cmsg_type = libc::TLS_SET_RECORD_TYPE;
        (*cmsg).cmsg_len = libc::CMSG_LEN(1) as usize;
        *libc::CMSG_DATA(cmsg) = kind;
        let n = libc::sendmsg(fd, &msg, 0);
        if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
    }
}

/// Moves up to `len` bytes between two descriptors (one of them a pipe) without copying to
/// userspace. Non-blocking: `WouldBlock` when nothing can move now.
pub fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: null offsets mean "current position"; both fds are owned by the caller.
    let n = unsafe {
        libc::splice(from, std::ptr::null_mut(), to, std::ptr::null_mut(), len, libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK)
    };
    if n < 0 { Err(io::Error::last_os_error()) } else { Ok(n as usize) }
}

/// A non-blocking pipe `(read end, write end)`, enlarged to `size` bytes where the kernel allows.
pub fn pipe(size: usize) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and now owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: fcntl on a descriptor we own; failure only leaves the default size.
    unsafe { libc::fcntl(w.as_raw_fd(), libc::F_SETPIPE_SZ, size as libc::c_int) };
    Ok((r, w))
}

/// `/proc/net/tls_stat` as name → value; `None` where the kernel has no kTLS.
pub fn tls_stat() -> Option<BTreeMap<String, u64>> {
    let text = std::fs::read_to_string("/proc/net/tls_stat").ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let mut it = l.split_whitespace();
                Some((it.next()?.to_string(), it.next()?.parse().ok()?))
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_reports_a_reason_or_a_suite() {
        let caps = probe();
        match &caps.ulp {
            Err(reason) => assert!(reason.contains("TCP_ULP"), "{reason}"),
            Ok(()) => assert!(!caps.suites.is_empty()),
        }
        assert!(caps.summary().starts_with("kTLS"));
    }

    #[test]
    fn crypto_info_layout_matches_the_kernel() {
        assert_eq!(size_of::<libc::tls12_crypto_info_aes_gcm_128>(), 40);
        assert_eq!(size_of::<libc::tls12_crypto_info_aes_gcm_256>(), 56);
        assert_eq!(size_of::<libc::tls12_crypto_info_chacha20_poly1305>(), 56);
    }
}
