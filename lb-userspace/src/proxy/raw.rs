//! Raw byte forwarding (pools of protocol TCP behind any listener): `splice(2)` when one end is
//! offloaded (kTLS) and neither is in userspace rustls, a userspace copy loop otherwise.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use super::ListenerRuntime;
use super::choose::Affinity;
use super::io::Idle;
use super::proxy_header;
use super::splice::{self, Ends};
use crate::tls::stream::PeerStream;

/// Forwards `client` (from `peer`) to a member of the listener's pool until both sides are
/// done. `PROXY` / `PROXYV2` pools get the client's address and the one it connected to in a
/// PROXY protocol header first.
pub async fn forward(mut client: PeerStream, peer: SocketAddr, rt: &ListenerRuntime) -> io::Result<()> {
    let pool = rt.pool.clone().ok_or_else(|| io::Error::other("listener has no default pool"))?;
    let affinity = Affinity { peer, cookie: None };
    let header = match pool.protocol.proxy_header() {
        Some(v) => Some(proxy_header::encode(v, peer, client.tcp().local_addr()?)),
        None => None,
    };
    let (member, mut member_stream, _in_flight) = pool.connect(&affinity, rt.timeouts.member_connect, header.as_deref()).await.map_err(io::Error::other)?;
    tracing::debug!(listener = %rt.id, %peer, member = %member.addr, "forwarding");
    let (rx, tx) = rt.byte_counters();
    let offloaded = matches!(client, PeerStream::Ktls(_)) || matches!(member_stream, PeerStream::Ktls(_));
    if offloaded && client.in_kernel() && member_stream.in_kernel() {
        // Both ends are plain or kTLS sockets: splice, so payload never enters userspace (with
        // kTLS on both, the kernel decrypts from one and encrypts into the other).
        forward_prefix(&mut client, &mut member_stream, &rx).await?;
        forward_prefix(&mut member_stream, &mut client, &tx).await?;
        let (client_tcp, client_ktls) = client.kernel_socket().expect("checked");
        let (member_tcp, member_ktls) = member_stream.kernel_socket().expect("checked");
        let activity = splice::Activity::new(rt.timeouts.client_data.max(rt.timeouts.member_data));
        let up = splice::pump(client_tcp, member_tcp, Ends { from_ktls: client_ktls, to_ktls: member_ktls }, &activity, rx);
        let down = splice::pump(member_tcp, client_tcp, Ends { from_ktls: member_ktls, to_ktls: client_ktls }, &activity, tx);
        let (a, b) = tokio::join!(up, down);
        return a.and(b).map(|_| ());
    }
    let mut client = Idle::new(client, rt.timeouts.client_data).counted(rx, tx);
    let mut member = Idle::new(member_stream, rt.timeouts.member_data);
    tokio::io::copy_bidirectional_with_sizes(&mut client, &mut member, 64 * 1024, 64 * 1024).await.map(|_| ())
}

/// Sends on what `from` decrypted in userspace before its kTLS hand-over.
async fn forward_prefix(from: &mut PeerStream, to: &mut PeerStream, counter: &prometheus_client::metrics::counter::Counter) -> io::Result<()> {
    let prefix = from.take_prefix();
    if !prefix.is_empty() {
        counter.inc_by(prefix.len() as u64);
        to.write_all(&prefix).await?;
    }
    Ok(())
}
