//! Reading a member connection's handshake one TLS record at a time (member connections run on
//! rustls' buffered API; client connections read into lbd's own buffers, [`super::server`]).
//!
//! Once the handshake is done the kernel must see every byte that follows it: any application
//! record rustls had already pulled from the socket could not be handed to kTLS. While "corked",
//! [`RecordReader`] never returns bytes past the end of the current record (5-byte header, then
//! exactly the length it announces), so rustls stops reading exactly at the Finished message.
//!
//! Uncorked (the connection stays in userspace TLS), it reads ahead while the peer streams:
//! rustls asks for at most one record per read (often only 4 KiB), so an upload would otherwise
//! cost a `recvfrom` (and the TCP bookkeeping and ACKs behind it) per record or less. Once a read fills
//! rustls' whole request, the next reads take up to [`READ_AHEAD`] at a time into a buffer of
//! the reader's own and hand it to rustls from memory; the buffer is freed as soon as it is
//! drained and the socket has nothing more, so a quiet connection holds none.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HEADER_LEN: usize = 5;

/// Most bytes read from the socket at once while the peer streams (uncorked).
pub const READ_AHEAD: usize = 256 * 1024;

/// An I/O wrapper that, while corked, reads at most up to the next TLS record boundary, and
/// once uncorked reads ahead while the peer streams.
#[derive(Debug)]
pub struct RecordReader<IO> {
    io: IO,
    corked: bool,
    /// The last read filled the caller's whole request: more is probably waiting.
    streaming: bool,
    header: [u8; HEADER_LEN],
    header_filled: u8,
    body_left: usize,
    /// The read-ahead buffer (uncorked, while the peer streams); `None` once the socket is
    /// drained, and whenever a read-ahead was handed on whole.
    ahead: Option<Box<Ahead>>,
}

/// Read-ahead bytes: `buf[pos..]` are still to be handed on.
#[derive(Debug)]
struct Ahead {
    buf: Vec<u8>,
    pos: usize,
}

impl<IO> RecordReader<IO> {
    /// Wraps `io`, corked.
    pub fn new(io: IO) -> Self {
        RecordReader { io, corked: true, streaming: false, header: [0; HEADER_LEN], header_filled: 0, body_left: 0, ahead: None }
    }

    /// True when bytes read ahead from the socket are waiting to be handed on (so the socket's
    /// readiness alone does not say whether there is something to read).
    pub fn has_buffered(&self) -> bool {
        self.ahead.as_ref().is_some_and(|a| a.pos < a.buf.len())
    }

    /// Stops limiting reads (the connection stays in userspace TLS).
    pub fn uncork(&mut self) {
        self.corked = false;
    }

    /// True when no partial record has been read: everything after this point is still in the
    /// socket, so the kernel can take over.
    pub fn at_record_boundary(&self) -> bool {
        self.header_filled == 0 && self.body_left == 0
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    pub fn into_inner(self) -> IO {
        self.io
    }
}

impl<IO: AsyncRead + Unpin> RecordReader<IO> {
    /// Uncorked: hands on read-ahead bytes first; reads straight into `buf` until a read fills
    /// it, then up to [`READ_AHEAD`] at a time while the peer keeps the socket that full.
    fn poll_read_ahead(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if let Some(a) = self.ahead.as_mut().filter(|a| a.pos < a.buf.len()) {
            let n = buf.remaining().min(a.buf.len() - a.pos);
            buf.put_slice(&a.buf[a.pos..a.pos + n]);
            a.pos += n;
            return Poll::Ready(Ok(()));
        }
        if !self.streaming {
            let wanted = buf.remaining();
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut self.io).poll_read(cx, buf))?;
            self.streaming = wanted > 0 && buf.filled().len() - before == wanted;
            return Poll::Ready(Ok(()));
        }
        let a = self.ahead.get_or_insert_with(|| Box::new(Ahead { buf: Vec::with_capacity(READ_AHEAD), pos: 0 }));
        a.buf.clear();
        a.pos = 0;
        let mut ahead = ReadBuf::uninit(a.buf.spare_capacity_mut());
        match Pin::new(&mut self.io).poll_read(cx, &mut ahead) {
            Poll::Ready(Ok(())) => {}
            other => {
                // Drained (or failed): a quiet connection keeps no buffer.
                self.ahead = None;
                return other;
            }
        }
        let n = ahead.filled().len();
        // SAFETY: the first `n` bytes of the spare capacity were just filled by the read.
        unsafe { a.buf.set_len(n) };
        // Less than rustls would have asked for: the peer is not streaming (or the socket is at EOF).
        self.streaming = n > buf.remaining();
        let give = buf.remaining().min(n);
        buf.put_slice(&a.buf[..give]);
        a.pos = give;
        if a.pos == a.buf.len() {
            self.ahead = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for RecordReader<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.corked {
            return this.poll_read_ahead(cx, buf);
        }
        let limit = if this.body_left > 0 { this.body_left } else { HEADER_LEN - this.header_filled as usize };
        let limit = limit.min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(limit));
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        if this.body_left > 0 {
            this.body_left -= n;
        } else {
            let got = limited.filled();
            let at = this.header_filled as usize;
            this.header[at..at + n].copy_from_slice(got);
            this.header_filled += n as u8;
            if this.header_filled as usize == HEADER_LEN {
                this.body_left = u16::from_be_bytes([this.header[3], this.header[4]]) as usize;
                this.header_filled = 0;
            }
        }
        buf.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for RecordReader<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn corked_reads_stop_at_record_boundaries() {
        // two records: 3-byte body, then 2-byte body, then trailing bytes
        let data: &[u8] = &[22, 3, 3, 0, 3, 1, 2, 3, 23, 3, 3, 0, 2, 9, 9, 0xAA];
        let mut r = RecordReader::new(data);
        let mut buf = [0u8; 64];
        let mut total = Vec::new();
        while total.len() < 8 {
            let n = r.read(&mut buf).await.unwrap();
            total.extend_from_slice(&buf[..n]);
        }
        assert_eq!(total.len(), 8, "never reads past the first record");
        assert!(r.at_record_boundary());
        r.uncork();
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], &data[8..]);
    }

    #[tokio::test]
    async fn uncorked_reads_ahead_while_the_peer_streams_and_keeps_no_buffer_when_quiet() {
        let (mut tx, rx) = tokio::io::duplex(4 * READ_AHEAD);
        let mut r = RecordReader::new(rx);
        r.uncork();
        let sent: Vec<u8> = (0..3 * READ_AHEAD + 123).map(|i| (i * 7 % 251) as u8).collect();
        tokio::io::AsyncWriteExt::write_all(&mut tx, &sent).await.unwrap();
        // rustls-sized reads: the first fills the request, then the rest comes from read-ahead.
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while got.len() < sent.len() {
            let n = r.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            assert!(r.streaming || got.len() == sent.len());
        }
        assert_eq!(got, sent, "bytes in order, none lost or repeated");
        assert!(!r.has_buffered());
        // The socket is drained: the next read waits, and the read-ahead buffer is gone.
        let waited = tokio::time::timeout(std::time::Duration::from_millis(50), r.read(&mut buf)).await;
        assert!(waited.is_err(), "nothing to read yet");
        assert!(r.ahead.is_none(), "a quiet connection keeps no read-ahead buffer");
        // A small message afterwards is read straight through and ends streaming.
        tokio::io::AsyncWriteExt::write_all(&mut tx, b"hello").await.unwrap();
        let n = r.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"hello");
        assert!(!r.streaming && r.ahead.is_none());
        drop(tx);
        assert_eq!(r.read(&mut buf).await.unwrap(), 0, "end of stream passes through");
    }
}
