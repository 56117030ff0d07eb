//! Reading the handshake one TLS record at a time.
//!
//! Once the handshake is done the kernel must see every byte that follows it: any application
//! record rustls had already pulled from the socket could not be handed to kTLS. While "corked",
//! [`RecordReader`] never returns bytes past the end of the current record (5-byte header, then
//! exactly the length it announces), so rustls stops reading exactly at the Finished message.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const HEADER_LEN: usize = 5;

/// An I/O wrapper that, while corked, reads at most up to the next TLS record boundary.
#[derive(Debug)]
pub struct RecordReader<IO> {
    io: IO,
    corked: bool,
    header: [u8; HEADER_LEN],
    header_filled: usize,
    body_left: usize,
}

impl<IO> RecordReader<IO> {
    /// Wraps `io`, corked.
    pub fn new(io: IO) -> Self {
        RecordReader { io, corked: true, header: [0; HEADER_LEN], header_filled: 0, body_left: 0 }
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

impl<IO: AsyncRead + Unpin> AsyncRead for RecordReader<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.corked {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        let limit = if this.body_left > 0 { this.body_left } else { HEADER_LEN - this.header_filled };
        let limit = limit.min(buf.remaining());
        let mut limited = ReadBuf::new(buf.initialize_unfilled_to(limit));
        std::task::ready!(Pin::new(&mut this.io).poll_read(cx, &mut limited))?;
        let n = limited.filled().len();
        if this.body_left > 0 {
            this.body_left -= n;
        } else {
            let got = limited.filled();
            this.header[this.header_filled..this.header_filled + n].copy_from_slice(got);
            this.header_filled += n;
            if this.header_filled == HEADER_LEN {
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
}
