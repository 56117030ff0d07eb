//! A connection end after its handshake (a client's, or a member's): records handled by the
//! kernel ([`KtlsStream`]), by rustls ([`PeerStream::Rustls`], [`PeerStream::RustlsMember`]), or
//! no TLS at all.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::budget::RecordBudget;
use super::offload::{self, record_type};
use super::session::{MemberSession, ServerTls};

/// Why lbd ended an offloaded connection: a control record the kernel path cannot continue
/// after, or the transmit key's record limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KtlsClosed {
    #[error("peer sent TLS alert {0}")]
    Alert(u8),
    #[error("peer sent a TLS 1.3 KeyUpdate, which this connection cannot follow once offloaded (the kernel takes no new keys before 6.14); closing cleanly")]
    KeyUpdate,
    #[error("peer sent an unexpected post-handshake message (type {0})")]
    UnexpectedHandshake(u8),
    #[error("peer sent a record of unknown content type {0}")]
    UnknownRecord(u8),
    #[error("the transmit key reached its record limit (confidentiality limit of the cipher suite, or --ktls-record-limit) and cannot be renewed here (a kernel before 6.14, or TLS 1.2), so the connection is closed")]
    RecordLimit,
}

impl KtlsClosed {
    /// Metric label.
    pub fn reason(&self) -> &'static str {
        match self {
            KtlsClosed::Alert(_) => "alert",
            KtlsClosed::KeyUpdate => "key_update",
            KtlsClosed::UnexpectedHandshake(_) => "unexpected_handshake",
            KtlsClosed::UnknownRecord(_) => "unknown_record",
            KtlsClosed::RecordLimit => "record_limit",
        }
    }
}

/// What a record read from an offloaded socket turned out to be.
pub enum Record {
    Data(usize),
    /// close_notify, or TCP EOF.
    Closed,
    /// A record with nothing for the application: TLS 1.3 NewSessionTickets a member sends after
    /// the handshake (lb does not resume offloaded member connections, so they are dropped), or a
    /// KeyUpdate that was followed.
    Skipped,
}

/// Reads one record from an offloaded socket into `buf`, turning control records into EOF or
/// errors. Plain `read(2)` would fail with EIO on them. `buf` need not be initialised (a reader's
/// spare capacity: hyper hands over all of its read buffer's, which grows to hundreds of KiB, in
/// a fresh `ReadBuf` for every read, so zeroing it first would be work for nothing);
/// `Record::Data(n)` means its first `n` bytes are. A KeyUpdate is followed through `keys`, the
/// socket's record budget (or ends the connection where keys cannot be renewed).
pub fn read_record(fd: std::os::fd::RawFd, buf: &mut [MaybeUninit<u8>], keys: &RecordBudget) -> io::Result<Record> {
    let (n, kind) = offload::recv_record(fd, buf)?;
    // SAFETY: recvmsg wrote the first n bytes of buf.
    let buf = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
    match kind {
        record_type::APPLICATION_DATA if n == 0 => Ok(Record::Closed),
        record_type::APPLICATION_DATA => Ok(Record::Data(n)),
        record_type::ALERT if n >= 2 && buf[1] == 0 => Ok(Record::Closed),
        record_type::ALERT => Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            KtlsClosed::Alert(if n >= 2 { buf[1] } else { 0 }),
        )),
        // TLS 1.3 KeyUpdate (handshake type 24): the next records use the peer's next key; the
        // kernel decrypts nothing more until it has it.
        record_type::HANDSHAKE => match post_handshake(&buf[..n]) {
            Ok(None) => Ok(Record::Skipped),
            Ok(Some(requested)) => keys.follow_key_update(fd, requested).map(|()| Record::Skipped),
            Err(e) => Err(io::Error::new(io::ErrorKind::ConnectionAborted, e)),
        },
        other => Err(io::Error::new(io::ErrorKind::InvalidData, KtlsClosed::UnknownRecord(other))),
    }
}

/// Checks the handshake messages of one post-handshake record: NewSessionTickets (type 4) may be
/// dropped; a TLS 1.3 KeyUpdate (type 24) must be the record's last message (the key changes
/// after it) and gives whether the peer asked for an update in return (`Some(requested)`).
fn post_handshake(mut record: &[u8]) -> Result<Option<bool>, KtlsClosed> {
    if record.is_empty() {
        return Err(KtlsClosed::UnexpectedHandshake(0));
    }
    while !record.is_empty() {
        let kind = record[0];
        let len = match record {
            [_, a, b, c, ..] => usize::from(*a) << 16 | usize::from(*b) << 8 | usize::from(*c),
            _ => return Err(KtlsClosed::UnexpectedHandshake(kind)),
        };
        if record.len() < 4 + len {
            return Err(KtlsClosed::UnexpectedHandshake(kind));
        }
        let (body, rest) = record[4..].split_at(len);
        match (kind, body) {
            (4, _) => {}
            (24, [request @ (0 | 1)]) if rest.is_empty() => return Ok(Some(*request == 1)),
            _ => return Err(KtlsClosed::UnexpectedHandshake(kind)),
        }
        record = rest;
    }
    Ok(None)
}

/// A TCP socket whose TLS record layer runs in the kernel.
#[derive(Debug)]
pub struct KtlsStream {
    io: TcpStream,
    /// Plaintext rustls had already decrypted before the hand-over, served first.
    prefix: Vec<u8>,
    /// Records the transmit key may still encrypt (shared with the member pool, which retires
    /// a member connection nearly through it).
    budget: Arc<RecordBudget>,
    read_closed: bool,
    close_notify_sent: bool,
}

impl KtlsStream {
    pub fn new(io: TcpStream, prefix: Vec<u8>, budget: Arc<RecordBudget>) -> Self {
        KtlsStream { io, prefix, budget, read_closed: false, close_notify_sent: false }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    pub fn budget(&self) -> &Arc<RecordBudget> {
        &self.budget
    }

    /// Sends at most what the record budget allows of `len` bytes (`send` gets that length),
    /// after renewing the key where that is due: `Err(KtlsClosed::RecordLimit)` once the budget
    /// allows nothing and the key cannot be renewed, after a close_notify and FIN (best effort:
    /// a full send buffer leaves only the FIN).
    fn poll_send(&mut self, cx: &mut Context<'_>, len: usize, send: impl FnOnce(Pin<&mut TcpStream>, &mut Context<'_>, usize) -> Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        let fd = self.io.as_raw_fd();
        let allowed = loop {
            // The budget may first renew the key, which sends a KeyUpdate.
            match self.io.try_io(Interest::WRITABLE, || self.budget.before_send(fd, len)) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready!(self.io.poll_write_ready(cx))?,
                Err(e) => {
                    if !self.close_notify_sent {
                        self.close_notify_sent = true;
                        let _ = send_close_notify(fd);
                        let _ = socket2::SockRef::from(&self.io).shutdown(std::net::Shutdown::Write);
                    }
                    return Poll::Ready(Err(e));
                }
            }
        };
        let sent = ready!(send(Pin::new(&mut self.io), cx, allowed))?;
        self.budget.spend(sent);
        Poll::Ready(Ok(sent))
    }

    /// Plaintext received before the hand-over, to be forwarded before anything else.
    pub fn take_prefix(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.prefix)
    }
}

impl AsyncRead for KtlsStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.drain(..n);
            return Poll::Ready(Ok(()));
        }
        if this.read_closed || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let fd = this.io.as_raw_fd();
        loop {
            ready!(this.io.poll_read_ready(cx))?;
            // SAFETY: only the kernel writes into the unfilled part, and only initialised bytes.
            let dst = unsafe { buf.unfilled_mut() };
            match this.io.try_io(Interest::READABLE, || read_record(fd, dst, &this.budget)) {
                Ok(Record::Data(n)) => {
                    // SAFETY: read_record reported n bytes written at the start of the unfilled part.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Record::Closed) => {
                    this.read_closed = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(Record::Skipped) => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for KtlsStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_send(cx, buf.len(), |io, cx, n| io.poll_write(cx, &buf[..n]))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let len = bufs.iter().map(|b| b.len()).sum();
        self.get_mut().poll_send(cx, len, |io, cx, n| match n == len {
            true => io.poll_write_vectored(cx, bufs),
            // Near the limit: part of the first slice with bytes (a short write, as allowed).
            false => {
                let first = bufs.iter().find(|b| !b.is_empty()).map_or(&[][..], |b| &b[..]);
                io.poll_write(cx, &first[..n.min(first.len())])
            }
        })
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    /// Sends close_notify through the kernel, then FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.close_notify_sent {
            ready!(this.io.poll_write_ready(cx))?;
            let fd = this.io.as_raw_fd();
            match this.io.try_io(Interest::WRITABLE, || send_close_notify(fd)) {
                Ok(()) => this.close_notify_sent = true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // The peer is gone; nothing left to notify.
                Err(_) => this.close_notify_sent = true,
            }
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Sends a warning-level close_notify alert on an offloaded socket.
pub fn send_close_notify(fd: std::os::fd::RawFd) -> io::Result<()> {
    offload::send_record(fd, record_type::ALERT, &[1, 0]).map(|_| ())
}

/// One end of a proxied connection (the client's, or a member's) as the proxy sees it.
pub enum PeerStream {
    Ktls(KtlsStream),
    /// A client connection whose records stay in rustls.
    Rustls(Box<ServerTls>),
    /// A member connection whose records stay in rustls.
    RustlsMember(Box<MemberSession>),
    Plain(TcpStream),
}

impl PeerStream {
    /// Whether the kernel moves this end's bytes (plain TCP or kTLS), so `splice(2)` can be used.
    pub fn in_kernel(&self) -> bool {
        self.kernel_socket().is_some()
    }

    /// The socket, and its transmit key's record budget when it is offloaded, when the kernel
    /// moves this end's bytes.
    pub fn kernel_socket(&self) -> Option<(&TcpStream, Option<&RecordBudget>)> {
        match self {
            PeerStream::Ktls(k) => Some((k.tcp(), Some(&**k.budget()))),
            PeerStream::Plain(t) => Some((t, None)),
            _ => None,
        }
    }

    /// Ready when there is something to read: bytes in the socket, or plaintext (or TLS bytes
    /// read ahead) this end already holds. Lets a connection that has not sent anything yet
    /// wait without the buffers a protocol handler would allocate (an idle TLS connection then
    /// costs only its TLS state).
    ///
    /// A poll function rather than a future: waiting through the socket's own read-readiness
    /// slot keeps no waiter state in the waiting connection's task.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let held = match self {
            PeerStream::Ktls(k) => !k.prefix.is_empty(),
            PeerStream::Rustls(s) => s.has_buffered(),
            PeerStream::RustlsMember(s) => s.has_buffered(),
            PeerStream::Plain(_) => false,
        };
        if held {
            return Poll::Ready(Ok(()));
        }
        self.tcp().poll_read_ready(cx)
    }

    /// The TCP socket under this end.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            PeerStream::Ktls(k) => k.tcp(),
            PeerStream::Rustls(s) => s.tcp(),
            PeerStream::RustlsMember(s) => s.tcp(),
            PeerStream::Plain(t) => t,
        }
    }

    /// Plaintext received during the kTLS hand-over, to be forwarded before anything else.
    pub fn take_prefix(&mut self) -> Vec<u8> {
        match self {
            PeerStream::Ktls(k) => k.take_prefix(),
            _ => Vec::new(),
        }
    }

    /// The transmit key's record budget, when the kernel encrypts this end.
    pub fn record_budget(&self) -> Option<Arc<RecordBudget>> {
        match self {
            PeerStream::Ktls(k) => Some(k.budget().clone()),
            _ => None,
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            PeerStream::Ktls($s) => { let $s = Pin::new($s); $e }
            PeerStream::Rustls($s) => { let $s = Pin::new($s.as_mut()); $e }
            PeerStream::RustlsMember($s) => { let $s = Pin::new($s.as_mut()); $e }
            PeerStream::Plain($s) => { let $s = Pin::new($s); $e }
        }
    };
}

impl AsyncRead for PeerStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            PeerStream::Ktls(s) => s.is_write_vectored(),
            PeerStream::Rustls(s) => s.is_write_vectored(),
            PeerStream::RustlsMember(s) => s.is_write_vectored(),
            PeerStream::Plain(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body_len: usize) -> Vec<u8> {
        let mut m = vec![kind, 0, (body_len >> 8) as u8, body_len as u8];
        m.resize(4 + body_len, 0xAB);
        m
    }

    #[test]
    fn new_session_tickets_are_skipped_key_updates_read_others_end_the_connection() {
        assert_eq!(post_handshake(&message(4, 180)), Ok(None));
        assert_eq!(post_handshake(&[message(4, 100), message(4, 90)].concat()), Ok(None));
        assert_eq!(post_handshake(&[24, 0, 0, 1, 0]), Ok(Some(false)));
        assert_eq!(post_handshake(&[message(4, 10), vec![24, 0, 0, 1, 1]].concat()), Ok(Some(true)));
        assert_eq!(post_handshake(&[24, 0, 0, 1, 2]), Err(KtlsClosed::UnexpectedHandshake(24)), "not a KeyUpdateRequest value");
        assert_eq!(post_handshake(&[vec![24, 0, 0, 1, 0], message(4, 10)].concat()), Err(KtlsClosed::UnexpectedHandshake(24)), "a message after the KeyUpdate");
        assert_eq!(post_handshake(&message(13, 5)), Err(KtlsClosed::UnexpectedHandshake(13)));
        assert_eq!(post_handshake(&message(4, 10)[..8]), Err(KtlsClosed::UnexpectedHandshake(4)), "truncated");
        assert_eq!(post_handshake(&[]), Err(KtlsClosed::UnexpectedHandshake(0)));
    }
}
