//! Stream wrappers used on every forwarded connection: byte counting and inactivity timeouts.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Fails a stream with `TimedOut` once neither direction has moved a byte for `limit`.
/// Activity in either direction counts, so a long download with a silent client is not idle.
pub struct Idle<S> {
    inner: S,
    limit: Duration,
    last: Instant,
    timer: Pin<Box<Sleep>>,
    rx: Option<Counter>,
    tx: Option<Counter>,
}

impl<S> Idle<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        let now = Instant::now();
        Idle { inner, limit, last: now, timer: Box::pin(tokio::time::sleep_until(now + limit)), rx: None, tx: None }
    }

    /// Counts bytes read into `rx` and written into `tx`.
    pub fn counted(mut self, rx: Counter, tx: Counter) -> Self {
        self.rx = Some(rx);
        self.tx = Some(tx);
        self
    }

    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn track_write(&mut self, cx: &mut Context<'_>, res: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match res {
            Poll::Ready(Ok(n)) => {
                self.last = Instant::now();
                if let Some(c) = &self.tx {
                    c.inc_by(n as u64);
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }

    fn check(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Ok(());
            }
            let deadline = self.last + self.limit;
            if Instant::now() >= deadline {
                return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no data for {:?}", self.limit)));
            }
            self.timer.as_mut().reset(deadline);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Idle<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = (buf.filled().len() - before) as u64;
                this.last = Instant::now();
                if let Some(c) = &this.rx {
                    c.inc_by(n);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.check(cx) {
                Ok(()) => Poll::Pending,
                Err(e) => Poll::Ready(Err(e)),
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Idle<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.track_write(cx, res)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.track_write(cx, res)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out_and_activity_resets_the_clock() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut idle = Idle::new(a, Duration::from_secs(5));
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(3)).await;
            tokio::io::AsyncWriteExt::write_all(&mut b, b"x").await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(b);
        });
        let mut buf = [0u8; 1];
        assert_eq!(idle.read(&mut buf).await.unwrap(), 1);
        let start = Instant::now();
        let err = idle.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(start.elapsed().as_secs(), 5);
    }
}
