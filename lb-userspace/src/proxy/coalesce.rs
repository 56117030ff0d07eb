//! Write coalescing for an h2 client connection.
//!
//! hyper's h2 connection writes each stream's frames as they become ready and flushes after
//! every round, and each write below it is a TLS record and a system call. Many streams whose
//! responses are ready around the same time would each cost one. [`Coalesce`] keeps the writes
//! of a round in one buffer and, on the first flush of a round, lets the worker's other ready
//! tasks (the streams' member reads) run once before the buffer goes out, so that responses
//! ready together leave in one record and one write.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most plaintext held back: one full TLS record.
const LIMIT: usize = 16 * 1024;

pub struct Coalesce<S> {
    inner: S,
    /// Plaintext not yet handed to `inner`; freed once it is, so an idle connection holds none.
    buf: Vec<u8>,
    /// How much of `buf` `inner` has taken.
    sent: usize,
    /// Whether this round's flush has already let the other ready tasks run.
    yielded: bool,
}

impl<S> Coalesce<S> {
    pub fn new(inner: S) -> Self {
        Coalesce { inner, buf: Vec::new(), sent: 0, yielded: false }
    }
}

impl<S: AsyncWrite + Unpin> Coalesce<S> {
    /// Hands everything held to `inner`.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.buf = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `len` bytes (copied by `fill`) into the buffer, making room first; a write as
    /// large as the buffer goes straight to `inner`.
    fn poll_hold(&mut self, cx: &mut Context<'_>, len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Poll<io::Result<()>> {
        if self.buf.len() + len > LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        if self.buf.is_empty() {
            self.buf.reserve(LIMIT.min(len.max(4096)));
        }
        fill(&mut self.buf);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesce<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesce<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if data.len() >= LIMIT {
            ready!(this.poll_drain(cx))?;
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        ready!(this.poll_hold(cx, data.len(), |b| b.extend_from_slice(data)))?;
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len: usize = bufs.iter().map(|b| b.len()).sum();
        if len >= LIMIT {
            ready!(this.poll_drain(cx))?;
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        ready!(this.poll_hold(cx, len, |b| bufs.iter().for_each(|s| b.extend_from_slice(s))))?;
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.sent < this.buf.len() && !this.yielded {
            // Woken while running, the task goes to the back of the worker's queue: whatever
            // else is ready runs first, and may add its responses to this buffer.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach it.
    struct Counting {
        out: Vec<u8>,
        writes: usize,
    }

    impl AsyncWrite for Counting {
        fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            this.writes += 1;
            this.out.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn small_writes_leave_together_on_flush_and_large_ones_pass_through_in_order() {
        let mut c = Coalesce::new(Counting { out: Vec::new(), writes: 0 });
        for i in 0..10u8 {
            c.write_all(&[i; 100]).await.unwrap();
        }
        assert_eq!(c.inner.writes, 0, "nothing written before the flush");
        c.flush().await.unwrap();
        assert_eq!(c.inner.writes, 1, "ten writes, one write below");
        assert!(c.buf.capacity() == 0, "the buffer is freed once written");

        c.write_all(&[20; 10]).await.unwrap();
        let big = vec![21u8; LIMIT];
        c.write_all(&big).await.unwrap();
        c.write_all(&vec![22u8; LIMIT - 5]).await.unwrap();
        c.write_all(&[23u8; 10]).await.unwrap();
        c.shutdown().await.unwrap();
        let mut want: Vec<u8> = (0..10u8).flat_map(|i| [i; 100]).collect();
        want.extend_from_slice(&[20; 10]);
        want.extend_from_slice(&big);
        want.extend(vec![22u8; LIMIT - 5]);
        want.extend_from_slice(&[23; 10]);
        assert_eq!(c.inner.out, want, "bytes arrive complete and in order");
    }

    #[tokio::test]
    async fn reads_pass_through() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut c = Coalesce::new(a);
        b.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        c.write_all(b"pong").await.unwrap();
        c.flush().await.unwrap();
        b.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
    }
}
