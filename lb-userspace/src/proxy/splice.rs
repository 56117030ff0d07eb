//! Raw forwarding between an offloaded (kTLS) client socket and a member socket with
//! `splice(2)`: socket → pipe → socket, so payload bytes never enter userspace.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::tls::offload;
use crate::tls::stream::{Record, read_record, send_close_notify};

const PIPE_SIZE: usize = 1 << 20;
const CHUNK: usize = 1 << 20;

/// Which ends of a pump are offloaded sockets.
#[derive(Clone, Copy)]
pub struct Ends {
    /// The source decrypts in the kernel: control records surface as splice errors.
    pub from_ktls: bool,
    /// The destination encrypts in the kernel: end with close_notify.
    pub to_ktls: bool,
}

/// Moves bytes from `from` to `to` until EOF (TCP FIN or close_notify), then half-closes `to`.
pub async fn pump(from: &TcpStream, to: &TcpStream, ends: Ends, idle: Duration, counter: Counter) -> io::Result<u64> {
    let (pipe_r, pipe_w) = offload::pipe(PIPE_SIZE)?;
    let (from_fd, to_fd) = (from.as_raw_fd(), to.as_raw_fd());
    let mut total = 0u64;
    loop {
        let filled = tokio::time::timeout(idle, fill(from, from_fd, pipe_w.as_raw_fd(), to, ends))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("no data for {idle:?}")))??;
        let Some(mut in_pipe) = filled else { break };
        total += in_pipe as u64;
        counter.inc_by(in_pipe as u64);
        while in_pipe > 0 {
            let n = tokio::time::timeout(idle, retry(to, Interest::WRITABLE, || offload::splice(pipe_r.as_raw_fd(), to_fd, in_pipe)))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("peer stopped reading for {idle:?}")))??;
            in_pipe -= n;
        }
    }
    if ends.to_ktls {
        let _ = retry(to, Interest::WRITABLE, || send_close_notify(to_fd)).await;
    }
    let sock = socket2::SockRef::from(to);
    let _ = sock.shutdown(std::net::Shutdown::Write);
    Ok(total)
}

/// Splices what `from` has into the pipe. `None` at end of stream. Application data the kernel
/// returned through `recvmsg` (after a control record check) is written to `to` directly.
async fn fill(from: &TcpStream, from_fd: RawFd, pipe_w: RawFd, to: &TcpStream, ends: Ends) -> io::Result<Option<usize>> {
    loop {
        match retry(from, Interest::READABLE, || offload::splice(from_fd, pipe_w, CHUNK)).await {
            Ok(0) => return Ok(None),
            Ok(n) => return Ok(Some(n)),
            // A non-data record is next: splice refuses it (EINVAL, or EIO on some kernels).
            Err(e) if ends.from_ktls && matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::EIO)) => {
                let mut buf = vec![0u8; 16 * 1024];
                // SAFETY: u8 and MaybeUninit<u8> share their layout, and read_record lets only the
                // kernel write into it, initialised bytes.
                let dst = unsafe { &mut *(buf.as_mut_slice() as *mut [u8] as *mut [std::mem::MaybeUninit<u8>]) };
                match retry(from, Interest::READABLE, || read_record(from_fd, dst)).await? {
                    Record::Closed => return Ok(None),
                    Record::Data(n) => write_all(to, &buf[..n]).await?,
                    Record::Skipped => {}
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn write_all(to: &TcpStream, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let n = retry(to, Interest::WRITABLE, || {
            socket2::SockRef::from(to).send(data)
        })
        .await?;
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
