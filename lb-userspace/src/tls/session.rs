//! A TLS connection on rustls' unbuffered API, either side of it: a client's connection to a
//! listener (lbd the TLS server) or lbd's connection to a pool member (lbd the TLS client). The
//! handshake, then, where the records stay in userspace, the connection as an
//! `AsyncRead + AsyncWrite` stream.
//!
//! lbd owns the buffers: TLS bytes read from the socket, records waiting to be written, and
//! decrypted application data not yet read. They are freed once drained while the peer is
//! quiet, so an idle connection holds rustls' state only (the buffered API keeps a 4 KiB read
//! buffer for each connection's life). During the handshake reads stop at record boundaries
//! while the kernel may take the records over (kTLS must see every byte after the Finished
//! message). After it rustls hands over the keys together with the key schedule
//! (`dangerous_into_kernel_connection`, which only its unbuffered API offers), so that offloaded
//! connections can follow and make TLS 1.3 key updates ([`super::rekey`]).

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::ops::DerefMut;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::BufMut;
use rustls::ExtractedSecrets;
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncodeTlsData, EncryptError, UnbufferedConnectionCommon, UnbufferedStatus, WriteTraffic};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

use super::spare;

const HEADER_LEN: usize = 5;
/// The largest TLS record payload.
const MAX_RECORD: usize = 16 * 1024;
/// The most plaintext encrypted by one write (and sent by one `sendmsg`): large writes cost
/// fewer system calls and wake-ups per byte (64 KiB made downloads 5-8 % dearer per byte).
const MAX_WRITE: usize = 16 * MAX_RECORD;
/// One read's size while the peer does not stream (a small request whole, as rustls' buffered
/// API reads); buffers up to twice this are kept between requests.
const READ_SIZE: usize = 4096;
/// One read's size while the peer streams (the last read filled what it asked for): fewer
/// `recvfrom` calls for uploads.
const READ_AHEAD: usize = 256 * 1024;

/// One side of a rustls unbuffered connection: the server side (client connections) or the
/// client side (member connections).
pub trait Side: DerefMut<Target = UnbufferedConnectionCommon<Self::Data>> + Send + Unpin + 'static {
    type Data: Send + 'static;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;

    /// The keys, and the key schedule that derives their successors.
    fn into_kernel(self) -> Result<(ExtractedSecrets, KernelConnection<Self::Data>), rustls::Error>;
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ServerConnectionData> {
        self.process_tls_records(incoming)
    }

    fn into_kernel(self) -> Result<(ExtractedSecrets, KernelConnection<ServerConnectionData>), rustls::Error> {
        self.dangerous_into_kernel_connection()
    }
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, ClientConnectionData> {
        self.process_tls_records(incoming)
    }

    fn into_kernel(self) -> Result<(ExtractedSecrets, KernelConnection<ClientConnectionData>), rustls::Error> {
        self.dangerous_into_kernel_connection()
    }
}

/// A client connection on a TLS listener.
pub type ServerTls = Session<UnbufferedServerConnection>;
/// A connection to a pool member with `tls_enabled`.
pub type MemberSession = Session<UnbufferedClientConnection>;

/// A TLS connection whose records rustls processes in userspace.
pub struct Session<C: Side> {
    io: TcpStream,
    conn: C,
    /// TLS bytes read from the socket; `incoming[start..]` are not processed yet.
    incoming: Vec<u8>,
    start: usize,
    /// Records to be sent; `outgoing[sent..filled]` are not written to the socket yet.
    outgoing: Vec<u8>,
    sent: usize,
    filled: usize,
    /// Decrypted application data; `plain[read..]` is not read yet.
    plain: Vec<u8>,
    read: usize,
    /// Small slices of a vectored write, gathered into one record.
    gather: Vec<u8>,
    /// Reads stop at record boundaries (the handshake, when the kernel may take the records).
    corked: bool,
    /// The last read filled what it asked for: the peer is streaming.
    streaming: bool,
    /// Something was encrypted since the reader last waited for the peer.
    wrote: bool,
    /// The last write gave all `MAX_WRITE` bytes it could: the writer is streaming, more follows.
    writing_full: bool,
    /// close_notify or TCP EOF from the peer.
    peer_closed: bool,
    close_queued: bool,
}

/// What a caller wants from one round of rustls processing.
enum Intent<'a, 'b> {
    /// Application data, into this buffer first (the rest is kept).
    Read(Option<&'a mut ReadBuf<'b>>),
    /// Encrypt (a prefix of) these bytes.
    Write(&'a [u8]),
    /// Queue close_notify.
    Close,
}

/// Where one round of rustls processing stopped.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// A record of application data was decrypted.
    Data,
    /// rustls needs more bytes from the peer to go on with the handshake.
    Input,
    /// The handshake is complete and every record read is processed.
    Established,
    /// This many bytes of the write were encrypted (or close_notify queued: 0).
    Written(usize),
    /// Both sides sent close_notify.
    Closed,
}

pub fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs the handshake of `conn` (either side) on `tcp`; while `corked`, nothing past the peer's
/// last handshake record is read, so the kernel can take the records that follow. Returns the
/// connection and, on the server side, the server name the client asked for (for logs).
pub async fn handshake<C: Side>(tcp: TcpStream, conn: C, corked: bool) -> io::Result<(Session<C>, Option<String>)> {
    let mut tls = Session {
        io: tcp,
        conn,
        incoming: Vec::new(),
        start: 0,
        outgoing: Vec::new(),
        sent: 0,
        filled: 0,
        plain: Vec::new(),
        read: 0,
        gather: Vec::new(),
        corked,
        streaming: false,
        wrote: false,
        writing_full: false,
        peer_closed: false,
        close_queued: false,
    };
    let mut sni = None;
    let mut hello_seen = false;
    loop {
        let next = match tls.drive(Intent::Read(None)) {
            Ok(next) => next,
            Err(e) => {
                // rustls queued an alert for the peer: encode it and send what fits now.
                let _ = tls.drive(Intent::Read(None));
                let _ = poll_fn(|cx| Poll::Ready(tls.poll_send(cx))).await;
                return Err(e);
            }
        };
        // lbd's flights (and, as a server, TLS 1.3 session tickets at the end) leave before
        // more is read.
        poll_fn(|cx| tls.poll_send(cx)).await?;
        if next == Next::Established {
            break;
        }
        if next == Next::Closed || tls.peer_closed {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the connection during the handshake"));
        }
        if next == Next::Input {
            poll_fn(|cx| tls.poll_fill(cx)).await?;
            // The peer's first record, once whole (before rustls processes it): a ClientHello's
            // server name (none in a ServerHello).
            if !hello_seen && let Some(record) = tls.first_record() {
                hello_seen = true;
                sni = client_hello_sni(record);
            }
        }
    }
    // An idle connection keeps no buffer.
    tls.release_buffers(true);
    // A read that took exactly what it asked for leaves the socket marked readable: look, so
    // that an idle connection's readiness says whether the peer sent anything since.
    let _ = tls.io.try_io(Interest::READABLE, || socket2::SockRef::from(&tls.io).peek(&mut [MaybeUninit::uninit(); 1]));
    Ok((tls, sni))
}

impl<C: Side> Session<C> {
    pub fn tcp(&self) -> &TcpStream {
        &self.io
    }

    /// The rustls connection (negotiated version, suite, ALPN, peer certificates).
    pub fn connection(&self) -> &C {
        &self.conn
    }

    /// True when no TLS byte past the processed records was read: everything that follows is
    /// still in the socket, so the kernel can take over.
    pub fn at_record_boundary(&self) -> bool {
        self.start == self.incoming.len() && self.sent == self.filled
    }

    /// True when decrypted data or unprocessed TLS bytes are waiting (so the socket's
    /// readiness alone does not say whether there is something to read).
    pub fn has_buffered(&self) -> bool {
        self.read < self.plain.len() || self.start < self.incoming.len()
    }

    /// Reads as much as the peer sends from now on (the records stay in userspace).
    pub fn uncork(&mut self) {
        self.corked = false;
    }

    /// The socket, the connection and the application data already decrypted (to be served
    /// first), for the hand-over to the kernel (at a record boundary).
    pub fn into_parts(self) -> (TcpStream, C, Vec<u8>) {
        let mut plain = self.plain;
        plain.drain(..self.read);
        (self.io, self.conn, plain)
    }

    /// Frees the buffers that hold nothing, as the connection waits for its peer: all of them
    /// (`all`, after the handshake), or those grown past a small request's size. The records
    /// buffer, which is zeroed when it grows, is kept while a response streams through it (the
    /// reader waits between its writes): it goes once nothing was written since the last wait,
    /// or, if it grew large, once the last write was not a full one (the burst ended); a large
    /// one goes to this thread's [`spare`] buffers, for the next burst.
    fn release_buffers(&mut self, all: bool) {
        let big = |v: &Vec<u8>| all || v.capacity() > 2 * READ_SIZE;
        if self.start == self.incoming.len() && big(&self.incoming) {
            (self.incoming, self.start) = (Vec::new(), 0);
        }
        let burst_over = !self.wrote || (self.outgoing.len() > 4 * MAX_RECORD && !self.writing_full);
        if self.sent == self.filled && (all || burst_over) {
            spare::give(std::mem::take(&mut self.outgoing));
            (self.sent, self.filled) = (0, 0);
        }
        self.wrote = false;
        if self.read == self.plain.len() && big(&self.plain) {
            (self.plain, self.read) = (Vec::new(), 0);
        }
        if big(&self.gather) {
            self.gather = Vec::new();
        }
    }

    /// Runs rustls over the unprocessed TLS bytes until it stops for `intent`: decrypted data
    /// goes to the caller's buffer (what does not fit, and all of it for other intents, to
    /// `plain`); handshake records, alerts and encrypted data to `outgoing`, in order.
    fn drive(&mut self, mut intent: Intent<'_, '_>) -> io::Result<Next> {
        let Session { conn, incoming, start, outgoing, filled, plain, read, peer_closed, .. } = self;
        loop {
            let UnbufferedStatus { discard, state } = conn.process(&mut incoming[*start..]);
            let next = match state {
                Err(e) => {
                    *start += discard;
                    return Err(tls_error(e));
                }
                Ok(ConnectionState::ReadTraffic(mut records)) => {
                    let mut extra = 0;
                    while let Some(record) = records.next_record() {
                        let record = record.map_err(tls_error)?;
                        extra += record.discard;
                        let mut payload = record.payload;
                        if let Intent::Read(Some(buf)) = &mut intent
                            && *read == plain.len()
                        {
                            let n = buf.remaining().min(payload.len());
                            buf.put_slice(&payload[..n]);
                            payload = &payload[n..];
                        }
                        if *read == plain.len() {
                            plain.clear();
                            *read = 0;
                        }
                        plain.extend_from_slice(payload);
                    }
                    *start += extra;
                    matches!(intent, Intent::Read(_)).then_some(Next::Data)
                }
                Ok(ConnectionState::EncodeTlsData(mut record)) => {
                    encode(&mut record, outgoing, filled)?;
                    None
                }
                // `outgoing` is written in order, before anything queued after this.
                Ok(ConnectionState::TransmitTlsData(transmit)) => {
                    transmit.done();
                    None
                }
                Ok(ConnectionState::BlockedHandshake) => Some(Next::Input),
                Ok(ConnectionState::PeerClosed) => {
                    *peer_closed = true;
                    None
                }
                Ok(ConnectionState::Closed) => Some(Next::Closed),
                Ok(ConnectionState::WriteTraffic(mut traffic)) => match &intent {
                    Intent::Read(_) => Some(Next::Established),
                    Intent::Write(data) => Some(Next::Written(encrypt(&mut traffic, data, outgoing, filled)?)),
                    Intent::Close => {
                        close_notify(&mut traffic, outgoing, filled)?;
                        Some(Next::Written(0))
                    }
                },
                // lbd's configurations neither accept nor send early data.
                Ok(_) => return Err(io::Error::new(io::ErrorKind::InvalidData, "unexpected TLS state (early data?)")),
            };
            *start += discard;
            if let Some(next) = next {
                return Ok(next);
            }
        }
    }

    /// Reads from the socket into `incoming`: up to the end of the current record while
    /// corked, otherwise a record's worth, or more while the peer streams. Sets `peer_closed`
    /// at TCP EOF.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.start > 0 {
            self.incoming.drain(..self.start);
            self.start = 0;
        }
        let want = match (self.corked, self.streaming) {
            (true, _) => self.to_record_end(),
            (false, false) => READ_SIZE,
            (false, true) => READ_AHEAD,
        };
        self.incoming.reserve(want);
        // Into the spare capacity (nothing is zeroed first), through the socket's own
        // `poll_read`, which forgets the readiness after a short read: an idle connection's
        // readiness then says whether the peer sent anything since.
        let n = ready!(tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut (&mut self.incoming).limit(want)))?;
        if n == 0 {
            self.peer_closed = true;
        }
        self.streaming = !self.corked && n == want;
        Poll::Ready(Ok(()))
    }

    /// Bytes missing to the end of the record being read (its header first): the first one not
    /// whole (records of a handshake message that spans several stay until it is whole).
    fn to_record_end(&self) -> usize {
        let mut at = self.start;
        loop {
            let have = self.incoming.len() - at;
            if have < HEADER_LEN {
                return HEADER_LEN - have;
            }
            let len = usize::from(u16::from_be_bytes([self.incoming[at + 3], self.incoming[at + 4]]));
            if have < HEADER_LEN + len {
                return HEADER_LEN + len - have;
            }
            at += HEADER_LEN + len;
        }
    }

    /// The first unprocessed record, if it is whole.
    fn first_record(&self) -> Option<&[u8]> {
        let rest = &self.incoming[self.start..];
        let len = usize::from(u16::from_be_bytes([*rest.get(3)?, *rest.get(4)?]));
        rest.get(..HEADER_LEN + len)
    }

    /// Writes `outgoing` to the socket; ready once all of it is written.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.filled {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.sent..self.filled]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        (self.sent, self.filled) = (0, 0);
        Poll::Ready(Ok(()))
    }

    /// Encrypts (a prefix of) `data` once the records before it are written, and sends it.
    fn poll_encrypt(&mut self, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_send(cx))?;
        let n = match self.drive(Intent::Write(data))? {
            Next::Written(n) => n,
            Next::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            other => return Poll::Ready(Err(io::Error::other(format!("cannot write application data ({other:?})")))),
        };
        self.wrote = true;
        self.writing_full = n == MAX_WRITE;
        // What the socket does not take now leaves with the next write or flush.
        if let Poll::Ready(Err(e)) = self.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }
}

/// Appends one handshake or alert record rustls produced to `out[..*filled]`.
fn encode<D>(record: &mut EncodeTlsData<'_, D>, out: &mut Vec<u8>, filled: &mut usize) -> io::Result<()> {
    let required = |e: &EncodeError| match e {
        EncodeError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    };
    append(out, filled, |buf| record.encode(buf), required)
}

/// Encrypts up to `MAX_WRITE` bytes of `data` into `out[..*filled]`; the count encrypted.
fn encrypt<D>(traffic: &mut WriteTraffic<'_, D>, data: &[u8], out: &mut Vec<u8>, filled: &mut usize) -> io::Result<usize> {
    let data = &data[..data.len().min(MAX_WRITE)];
    if !data.is_empty() {
        append(out, filled, |buf| traffic.encrypt(data, buf), encrypt_required)?;
    }
    Ok(data.len())
}

fn close_notify<D>(traffic: &mut WriteTraffic<'_, D>, out: &mut Vec<u8>, filled: &mut usize) -> io::Result<()> {
    append(out, filled, |buf| traffic.queue_close_notify(buf), encrypt_required)
}

fn encrypt_required(e: &EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(s) => Some(s.required_size),
        _ => None,
    }
}

/// Appends what `write` produces to `out[..*filled]`: asked with no room first, it says how much
/// it needs (`required`), then it writes into that much.
fn append<E: std::error::Error + Send + Sync + 'static>(
    out: &mut Vec<u8>,
    filled: &mut usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    required: impl Fn(&E) -> Option<usize>,
) -> io::Result<()> {
    let need = match write(&mut []) {
        Ok(_) => return Ok(()),
        Err(e) => required(&e).ok_or_else(|| io::Error::other(e))?,
    };
    grow(out, *filled, *filled + need);
    *filled += write(&mut out[*filled..*filled + need]).map_err(io::Error::other)?;
    Ok(())
}

/// Makes `buf` at least `len` long, keeping `buf[..filled]` (new bytes are zeroed once: the
/// length is kept between uses, and a large buffer comes initialised from [`spare`]).
fn grow(buf: &mut Vec<u8>, filled: usize, len: usize) {
    if buf.len() >= len {
        return;
    }
    if len < spare::MIN_KEPT {
        buf.resize(len, 0);
        return;
    }
    let mut larger = spare::take(len);
    larger[..filled].copy_from_slice(&buf[..filled]);
    spare::give(std::mem::replace(buf, larger));
}

impl<C: Side> AsyncRead for Session<C> {
    /// Fills `buf` with as much as the records already read and the socket have now, so a
    /// streaming peer's data reaches the caller in large reads (and the member in large writes).
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        loop {
            if this.read < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.read);
                buf.put_slice(&this.plain[this.read..this.read + n]);
                this.read += n;
            }
            if buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            match this.drive(Intent::Read(Some(buf)))? {
                Next::Data => continue,
                Next::Closed => return Poll::Ready(Ok(())),
                Next::Input | Next::Established | Next::Written(_) => {}
            }
            // Records rustls queued while reading (a KeyUpdate answer, an alert) go out now,
            // without waiting for room.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            if this.peer_closed {
                // Everything read is processed: end of stream.
                return Poll::Ready(Ok(()));
            }
            if this.poll_fill(cx)?.is_pending() {
                if buf.filled().len() > before {
                    return Poll::Ready(Ok(()));
                }
                // The peer is quiet.
                this.release_buffers(false);
                return Poll::Pending;
            }
        }
    }
}

impl<C: Side> AsyncWrite for Session<C> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().poll_encrypt(cx, buf)
    }

    /// Writes of a large first slice are encrypted straight from it; smaller slices are
    /// gathered into one record (a response head and the start of its body).
    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut slices = bufs.iter().filter(|b| !b.is_empty());
        let Some(first) = slices.next() else { return Poll::Ready(Ok(0)) };
        if first.len() >= MAX_RECORD || bufs.len() == 1 {
            return this.poll_encrypt(cx, first);
        }
        let mut gather = std::mem::take(&mut this.gather);
        gather.clear();
        for b in std::iter::once(first).chain(slices) {
            let n = (MAX_RECORD - gather.len()).min(b.len());
            gather.extend_from_slice(&b[..n]);
            if gather.len() == MAX_RECORD {
                break;
            }
        }
        let written = this.poll_encrypt(cx, &gather);
        this.gather = gather;
        written
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    /// Sends close_notify, then FIN.
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            ready!(this.poll_send(cx))?;
            this.close_queued = true;
            match this.drive(Intent::Close) {
                Ok(_) => {}
                // The connection failed or is closed: nothing left to notify.
                Err(_) => return Pin::new(&mut this.io).poll_shutdown(cx),
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// The server name (SNI) a ClientHello at the start of `bytes` asks for, for logs; `None` if
/// it sent none or the first record does not hold the extension.
fn client_hello_sni(bytes: &[u8]) -> Option<String> {
    let mut hello = Reader(bytes.get(HEADER_LEN..)?);
    if hello.u8()? != 1 {
        return None;
    }
    // Handshake length, legacy version, random, session id, cipher suites, compression methods.
    hello.take(3 + 2 + 32)?;
    let n = hello.u8()?;
    hello.take(n.into())?;
    let n = hello.u16()?;
    hello.take(n.into())?;
    let n = hello.u8()?;
    hello.take(n.into())?;
    let n = hello.u16()?;
    let mut extensions = Reader(hello.take(n.into())?);
    while let (Some(kind), Some(len)) = (extensions.u16(), extensions.u16()) {
        let body = extensions.take(len.into())?;
        if kind == 0 {
            let mut list = Reader(body);
            let n = list.u16()?;
            let mut names = Reader(list.take(n.into())?);
            while let Some(name_type) = names.u8() {
                let n = names.u16()?;
                let name = names.take(n.into())?;
                if name_type == 0 {
                    return std::str::from_utf8(name).ok().map(str::to_string);
                }
            }
            return None;
        }
    }
    None
}

/// Reads big-endian fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// A ClientHello record with the given extensions (type, body).
    fn client_hello(extensions: &[(u16, Vec<u8>)]) -> Vec<u8> {
        let mut ext = Vec::new();
        for (kind, body) in extensions {
            ext.extend_from_slice(&kind.to_be_bytes());
            ext.extend_from_slice(&(body.len() as u16).to_be_bytes());
            ext.extend_from_slice(body);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.extend_from_slice(&[0, 0, 2, 0x13, 0x01, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0, (body.len() >> 8) as u8, body.len() as u8];
        hs.extend_from_slice(&body);
        let mut record = vec![22, 3, 1, (hs.len() >> 8) as u8, hs.len() as u8];
        record.extend_from_slice(&hs);
        record
    }

    fn sni_extension(name: &str) -> (u16, Vec<u8>) {
        let mut entry = vec![0, 0, name.len() as u8];
        entry.extend_from_slice(name.as_bytes());
        let mut body = (entry.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(&entry);
        (0, body)
    }

    #[test]
    fn the_server_name_is_read_from_the_client_hello() {
        assert_eq!(client_hello_sni(&client_hello(&[(10, vec![0, 2, 0, 29]), sni_extension("a.example")])).as_deref(), Some("a.example"));
        assert_eq!(client_hello_sni(&client_hello(&[(10, vec![0, 2, 0, 29])])), None, "no SNI extension");
        let full = client_hello(&[sni_extension("a.example")]);
        for cut in 0..full.len() {
            assert_eq!(client_hello_sni(&full[..cut]), None, "truncated at {cut}");
        }
        assert_eq!(client_hello_sni(&[23, 3, 3, 0, 1, 0]), None, "not a handshake message");
    }

    /// A self-signed server certificate for `s.example`, and a client that trusts it.
    fn configs() -> (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>) {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["s.example".to_string()]).unwrap().self_signed(&key).unwrap();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        (Arc::new(server), Arc::new(client))
    }

    /// Waits until the socket holds the header of a record of `kind`, unread.
    async fn record_waits_in_socket(tcp: &TcpStream, kind: u8) {
        let mut header = [0u8; HEADER_LEN];
        loop {
            tcp.readable().await.unwrap();
            if tcp.peek(&mut header).await.unwrap() == HEADER_LEN {
                assert_eq!(header[0], kind, "{header:?}");
                return;
            }
        }
    }

    /// Both sides on loopback, both corked as when the kernel may take over: each handshake reads
    /// nothing past the peer's last handshake record (the client's first data record, and the
    /// server's TLS 1.3 session tickets, wait in the sockets); then 3 MiB each way, at once,
    /// arrive intact, and close_notify ends both directions.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_sides_handshake_up_to_a_record_boundary_then_move_data_intact() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const N: usize = 3 << 20;
        let pattern = |seed: u8| (0..N).map(|i| (i % 251) as u8 ^ seed).collect::<Vec<u8>>();
        let (server_config, client_config) = configs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let member = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let conn = UnbufferedClientConnection::new(client_config, "s.example".try_into().unwrap()).unwrap();
            let (mut tls, sni) = handshake(tcp, conn, true).await.unwrap();
            assert_eq!(sni, None);
            assert!(tls.at_record_boundary());
            tls.write_all(b"first").await.unwrap();
            // The server's session tickets were not read.
            record_waits_in_socket(tls.tcp(), 23).await;
            tls.uncork();
            let (mut r, mut w) = tokio::io::split(tls);
            let writer = tokio::spawn(async move {
                w.write_all(&pattern(1)).await.unwrap();
                w.shutdown().await.unwrap();
            });
            let mut got = Vec::new();
            r.read_to_end(&mut got).await.unwrap();
            writer.await.unwrap();
            got
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let (mut tls, sni) = handshake(tcp, UnbufferedServerConnection::new(server_config).unwrap(), true).await.unwrap();
        assert_eq!(sni.as_deref(), Some("s.example"));
        assert!(tls.at_record_boundary());
        // The client's first data record is still in the socket, for the kernel to take.
        record_waits_in_socket(tls.tcp(), 23).await;
        assert!(tls.at_record_boundary() && !tls.has_buffered());
        tls.uncork();
        let mut first = [0u8; 5];
        tls.read_exact(&mut first).await.unwrap();
        assert_eq!(&first, b"first");
        let (mut r, mut w) = tokio::io::split(tls);
        let writer = tokio::spawn(async move {
            w.write_all(&pattern(2)).await.unwrap();
            w.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert!(got == pattern(1), "client to server: {} bytes", got.len());
        let got = member.await.unwrap();
        assert!(got == pattern(2), "server to client: {} bytes", got.len());
    }
}
