//! Verifiable bulk data: a position-addressable pseudo-random byte stream, backends that serve and
//! check it (HTTP and raw TCP), so transfers of any size are verified byte for byte without
//! storing them.

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

const CHUNK: usize = 64 * 1024;

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Fills `buf` with the stream `seed` from byte `offset` on.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut i = 0;
    while i < buf.len() {
        if pos.is_multiple_of(8) && buf.len() - i >= 8 {
            let word = splitmix(seed ^ (pos >> 3)).to_le_bytes();
            buf[i..i + 8].copy_from_slice(&word);
            i += 8;
            pos += 8;
        } else {
            buf[i] = splitmix(seed ^ (pos >> 3)).to_le_bytes()[(pos % 8) as usize];
            i += 1;
            pos += 1;
        }
    }
}

/// Checks received bytes against the stream `seed`, in order.
pub struct Verifier {
    seed: u64,
    pub received: u64,
    pub first_mismatch: Option<u64>,
    expected: Vec<u8>,
}

impl Verifier {
    pub fn new(seed: u64) -> Self {
        Verifier { seed, received: 0, first_mismatch: None, expected: Vec::new() }
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.first_mismatch.is_none() {
            self.expected.resize(data.len(), 0);
            fill(self.seed, self.received, &mut self.expected);
            if self.expected != data {
                let at = data.iter().zip(&self.expected).position(|(a, b)| a != b).unwrap_or(0);
                self.first_mismatch = Some(self.received + at as u64);
            }
        }
        self.received += data.len() as u64;
    }

    /// `"ok N"` or `"mismatch at P of N"`.
    pub fn verdict(&self) -> String {
        match self.first_mismatch {
            None => format!("ok {}", self.received),
            Some(p) => format!("mismatch at {p} of {}", self.received),
        }
    }
}

/// Writes `n` bytes of stream `seed` to `w`.
pub async fn write_stream<W: AsyncWrite + Unpin>(w: &mut W, seed: u64, n: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    let mut sent = 0u64;
    while sent < n {
        let len = (n - sent).min(CHUNK as u64) as usize;
        fill(seed, sent, &mut buf[..len]);
        w.write_all(&buf[..len]).await?;
        sent += len as u64;
    }
    Ok(())
}

/// Reads `r` to EOF, verifying it as stream `seed`.
pub async fn read_stream<R: AsyncRead + Unpin>(r: &mut R, seed: u64) -> std::io::Result<Verifier> {
    let mut v = Verifier::new(seed);
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(v);
        }
        v.update(&buf[..n]);
    }
}

fn query(uri: &hyper::Uri, key: &str) -> Option<u64> {
    uri.query()?.split('&').find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

/// An HTTP backend: `GET /bytes?n=N&seed=S` streams N bytes of stream S; `PUT|POST
/// /verify?seed=S` reads the body and answers its verdict (`ok N`, or 422 `mismatch at ...`);
/// anything else answers `hello`.
pub async fn http_backend() -> SocketAddr {
    crate::serve_http(|req: hyper::Request<hyper::body::Incoming>| async move {
        let seed = query(req.uri(), "seed").unwrap_or(0);
        let resp: hyper::Response<Body> = match req.uri().path() {
            "/bytes" => {
                let n = query(req.uri(), "n").unwrap_or(0);
                let mut r = hyper::Response::new(BodyExt::boxed(PatternBody { seed, sent: 0, n }));
                r.headers_mut().insert(hyper::header::CONTENT_LENGTH, n.into());
                r
            }
            "/verify" => {
                let mut body = req.into_body();
                let mut v = Verifier::new(seed);
                while let Some(frame) = body.frame().await {
                    if let Some(d) = frame.map_err(std::io::Error::other)?.data_ref() {
                        v.update(d)
                    }
                }
                let mut r = hyper::Response::new(full(v.verdict()));
                if v.first_mismatch.is_some() {
                    *r.status_mut() = hyper::StatusCode::UNPROCESSABLE_ENTITY;
                }
                r
            }
            _ => hyper::Response::new(full("hello".into())),
        };
        Ok(resp)
    })
    .await
}

fn full(s: String) -> Body {
    BodyExt::boxed(Full::new(Bytes::from(s)).map_err(|never| match never {}))
}

/// A response body of `n` bytes of stream `seed`, generated as it is sent.
struct PatternBody {
    seed: u64,
    sent: u64,
    n: u64,
}

impl hyper::body::Body for PatternBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.sent == self.n {
            return std::task::Poll::Ready(None);
        }
        let len = (self.n - self.sent).min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; len];
        fill(self.seed, self.sent, &mut buf);
        self.sent += len as u64;
        std::task::Poll::Ready(Some(Ok(Frame::data(Bytes::from(buf)))))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.n - self.sent)
    }
}

/// What the raw backend saw on one connection.
#[derive(Debug)]
pub struct RawReport {
    pub upload: String,
    pub error: Option<String>,
}

/// A raw TCP backend. Each connection starts with a 16-byte header (download length, seed, both
/// big-endian u64); the backend then sends that many bytes of stream `seed + 1` and closes its
/// write side, while verifying everything the client sends after the header as stream `seed`
/// until EOF. One report per connection.
pub async fn raw_backend() -> (SocketAddr, mpsc::UnboundedReceiver<RawReport>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let tx = tx.clone();
            tokio::spawn(async move {
                let (mut r, mut w) = tcp.into_split();
                let mut header = [0u8; 16];
                if let Err(e) = r.read_exact(&mut header).await {
                    let _ = tx.send(RawReport { upload: "no header".into(), error: Some(e.to_string()) });
                    return;
                }
                let n = u64::from_be_bytes(header[..8].try_into().unwrap());
                let seed = u64::from_be_bytes(header[8..].try_into().unwrap());
                let writer = tokio::spawn(async move {
                    write_stream(&mut w, seed + 1, n).await?;
                    w.shutdown().await
                });
                let upload = read_stream(&mut r, seed).await;
                let written = writer.await.unwrap();
                let (upload, error) = match (upload, written) {
                    (Ok(v), Ok(())) => (v.verdict(), None),
                    (Ok(v), Err(e)) => (v.verdict(), Some(e.to_string())),
                    (Err(e), _) => ("read failed".into(), Some(e.to_string())),
                };
                let _ = tx.send(RawReport { upload, error });
            });
        }
    });
    (addr, rx)
}

/// The 16-byte raw-backend header.
pub fn raw_header(download: u64, seed: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(&download.to_be_bytes());
    h[8..].copy_from_slice(&seed.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_position_addressable() {
        let mut whole = vec![0u8; 1000];
        fill(9, 0, &mut whole);
        let mut v = Verifier::new(9);
        for chunk in whole.chunks(7) {
            v.update(chunk);
        }
        assert_eq!(v.verdict(), "ok 1000");
        let mut part = vec![0u8; 13];
        fill(9, 501, &mut part);
        assert_eq!(part, whole[501..514]);
        let mut bad = whole.clone();
        bad[600] ^= 1;
        let mut v = Verifier::new(9);
        v.update(&bad);
        assert_eq!(v.verdict(), "mismatch at 600 of 1000");
    }
}
