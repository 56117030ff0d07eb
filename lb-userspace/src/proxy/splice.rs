//! Raw forwarding between an offloaded (kTLS) client socket and a member socket with
//! `splice(2)`: socket → pipe → socket, so payload bytes never enter userspace.

use std::future::Future;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::tls::budget::RecordBudget;
use crate::tls::offload;
use crate::tls::stream::{Record, read_record, send_close_notify};

const PIPE_SIZE: usize = 1 << 20;
const CHUNK: usize = 1 << 20;

/// Which ends of a pump are offloaded sockets.
#[derive(Clone, Copy)]
pub struct Ends<'a> {
    /// The source decrypts in the kernel (its keys): control records surface as splice errors.
    pub from_ktls: Option<&'a RecordBudget>,
    /// The destination encrypts in the kernel (its transmit key's record budget): sends stay
    /// within the budget, and the pump ends with close_notify.
    pub to_ktls: Option<&'a RecordBudget>,
}

/// When either direction of a spliced connection last moved a byte. The connection is idle only
/// when neither has for the limit, as on the copying path ([`super::io::Idle`]): a long upload
/// whose member answers only at its end, or a long download from a silent client, is not idle.
pub struct Activity {
    limit: Duration,
    origin: Instant,
    /// Milliseconds from `origin` to the last byte moved.
    last_ms: AtomicU64,
}

impl Activity {
    pub fn new(limit: Duration) -> Self {
        Activity { limit, origin: Instant::now(), last_ms: AtomicU64::new(0) }
    }

    fn touch(&self) {
        self.last_ms.fetch_max(self.origin.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn deadline(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + self.limit
    }

    /// Runs `op` to completion, or fails with `TimedOut` (saying `what` stalled) once neither
    /// direction has moved a byte for the limit.
    async fn bound<T>(&self, what: &str, op: impl Future<Output = io::Result<T>>) -> io::Result<T> {
        tokio::pin!(op);
        loop {
            match tokio::time::timeout_at(self.deadline(), &mut op).await {
                Ok(done) => return done,
                // The other direction moved bytes meanwhile: the connection is not idle.
                Err(_) if self.deadline() > Instant::now() => continue,
                Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, format!("{what} for {:?}", self.limit))),
            }
        }
    }
}

/// Moves bytes from `from` to `to` until EOF (TCP FIN or close_notify), then half-closes `to`.
/// Fails once the connection is idle (`activity`, shared with the other direction's pump), or
/// when the destination's transmit key reaches its record limit (after close_notify and FIN).
pub async fn pump(from: &TcpStream, to: &TcpStream, ends: Ends<'_>, activity: &Activity, counter: Counter) -> io::Result<u64> {
    let moved = copy(from, to, ends, activity, counter).await;
    if ends.to_ktls.is_some() {
        let to_fd = to.as_raw_fd();
        match moved {
            Ok(_) => drop(retry(to, Interest::WRITABLE, || send_close_notify(to_fd)).await),
            // Best effort, without waiting: the peer may have stopped reading.
            Err(_) => drop(send_close_notify(to_fd)),
        }
    }
    let sock = socket2::SockRef::from(to);
    let _ = sock.shutdown(std::net::Shutdown::Write);
    moved
}

async fn copy(from: &TcpStream, to: &TcpStream, ends: Ends<'_>, activity: &Activity, counter: Counter) -> io::Result<u64> {
    let (pipe_r, pipe_w) = offload::pipe(PIPE_SIZE)?;
    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    let mut total = 0u64;
    loop {
        let filled = activity.bound("no data", fill(from, from_fd, pipe_w.as_raw_fd(), to, ends)).await?;
        let Some(mut in_pipe) = filled else { return Ok(total) };
        activity.touch();
        total += in_pipe as u64;
        counter.inc_by(in_pipe as u64);
        while in_pipe > 0 {
            in_pipe -= activity.bound("peer stopped reading", send(to, ends.to_ktls, in_pipe, |n| offload::splice(pipe_r.as_raw_fd(), to_fd, n))).await?;
            activity.touch();
        }
    }
}

/// One send of up to `len` bytes to `to` once it is writable (`op` sends the length it is
/// given), within its record budget if it is offloaded (which may renew the key first).
async fn send(to: &TcpStream, budget: Option<&RecordBudget>, len: usize, mut op: impl FnMut(usize) -> io::Result<usize>) -> io::Result<usize> {
    let to_fd = to.as_raw_fd();
    let sent = retry(to, Interest::WRITABLE, || match budget {
        Some(b) => op(b.before_send(to_fd, len)?),
        None => op(len),
    })
    .await?;
    if let Some(b) = budget {
        b.spend(sent);
    }
    Ok(sent)
}

/// Splices what `from` has into the pipe. `None` at end of stream. Application data the kernel
/// returned through `recvmsg` (after a control record check) is written to `to` directly.
async fn fill(from: &TcpStream, from_fd: RawFd, pipe_w: RawFd, to: &TcpStream, ends: Ends<'_>) -> io::Result<Option<usize>> {
    loop {
        match (retry(from, Interest::READABLE, || offload::splice(from_fd, pipe_w, CHUNK)).await, ends.from_ktls) {
            (Ok(0), _) => return Ok(None),
            (Ok(n), _) => return Ok(Some(n)),
            // A non-data record is next: splice refuses it (EINVAL, or EIO on some kernels).
            (Err(e), Some(keys)) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIO)) => {
                let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
                match retry(from, Interest::READABLE, || read_record(from_fd, buf.spare_capacity_mut(), keys)).await? {
                    Record::Closed => return Ok(None),
                    Record::Data(n) => {
                        // SAFETY: read_record reported its first n bytes written by the kernel.
                        unsafe { buf.set_len(n) };
                        write_all(to, ends.to_ktls, &buf).await?
                    }
                    Record::Skipped => {}
                }
            }
            (Err(e), _) => return Err(e),
        }
    }
}

async fn write_all(to: &TcpStream, budget: Option<&RecordBudget>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = send(to, budget, data.len(), |n| socket2::SockRef::from(to).send(&data[..n])).await?;
        data = &data[n..];
    }
    Ok(())
}

/// Runs a non-blocking operation once the socket is ready, until it stops saying WouldBlock.
async fn retry<T>(sock: &TcpStream, interest: Interest, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    loop {
        sock.ready(interest).await?;
        match sock.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A connected loopback pair: (the far end, lbd's end).
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let far = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (far, listener.accept().await.unwrap().0)
    }

    const PLAIN: Ends = Ends { from_ktls: None, to_ktls: None };

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_upload_longer_than_the_limit_is_not_idle_while_the_member_is_silent() {
        let ((mut client, lbd_client), (lbd_member, mut member)) = (pair().await, pair().await);
        let activity = Activity::new(Duration::from_millis(400));
        let peers = async {
            // 1.2 s of upload, three limits, while the member says nothing; then it answers.
            for _ in 0..12 {
                client.write_all(&[7; 1024]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            client.shutdown().await.unwrap();
            let mut got = Vec::new();
            member.read_to_end(&mut got).await.unwrap();
            member.write_all(format!("{}", got.len()).as_bytes()).await.unwrap();
            member.shutdown().await.unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            answer
        };
        let up = pump(&lbd_client, &lbd_member, PLAIN, &activity, Counter::default());
        let down = pump(&lbd_member, &lbd_client, PLAIN, &activity, Counter::default());
        // Were the silent direction's pump to give up, the answer would never arrive.
        let (answer, up, down) = tokio::time::timeout(Duration::from_secs(20), async { tokio::join!(peers, up, down) }).await.expect("the member's answer reaches the client");
        assert_eq!((answer.as_str(), up.unwrap(), down.unwrap()), ("12288", 12288, 5));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_silent_both_ways_times_out_after_the_limit() {
        let ((_client, lbd_client), (lbd_member, _member)) = (pair().await, pair().await);
        let activity = Activity::new(Duration::from_millis(300));
        let started = Instant::now();
        let up = pump(&lbd_client, &lbd_member, PLAIN, &activity, Counter::default());
        let down = pump(&lbd_member, &lbd_client, PLAIN, &activity, Counter::default());
        let (up, down) = tokio::join!(up, down);
        for r in [up, down] {
            let e = r.unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
            assert_eq!(e.to_string(), "no data for 300ms");
        }
        assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    }
}
