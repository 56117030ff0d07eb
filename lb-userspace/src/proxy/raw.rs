//! Raw byte forwarding (pools of protocol TCP behind any listener): `splice(2)` when the client
//! socket is offloaded, a userspace copy loop otherwise.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;

use super::ListenerRuntime;
use super::io::Idle;
use super::splice::{self, Ends};
use crate::tls::stream::ClientStream;

/// Forwards `client` to a member of the listener's pool until both sides are done.
pub async fn forward(client: ClientStream, peer: SocketAddr, rt: &ListenerRuntime) -> io::Result<()> {
    let pool = rt.pool.clone().ok_or_else(|| io::Error::other("listener has no default pool"))?;
    let (member, member_tcp) = pool.connect(rt.timeouts.member_connect).await.map_err(io::Error::other)?;
    tracing::debug!(listener = %rt.id, %peer, member = %member.addr, "forwarding");
    let (rx, tx) = rt.byte_counters();
    match client {
        ClientStream::Ktls(mut ktls) => {
            let prefix = ktls.take_prefix();
            let mut member_tcp = member_tcp;
            if !prefix.is_empty() {
                rx.inc_by(prefix.len() as u64);
                member_tcp.write_all(&prefix).await?;
            }
            let client_tcp = ktls.tcp();
            let idle = rt.timeouts.client_data.max(rt.timeouts.member_data);
            let up = splice::pump(client_tcp, &member_tcp, Ends { from_ktls: true, to_ktls: false }, idle, rx);
            let down = splice::pump(&member_tcp, client_tcp, Ends { from_ktls: false, to_ktls: true }, idle, tx);
            let (a, b) = tokio::join!(up, down);
            a.and(b).map(|_| ())
        }
        client => {
            let mut client = Idle::new(client, rt.timeouts.client_data).counted(rx, tx);
            let mut member = Idle::new(member_tcp, rt.timeouts.member_data);
            tokio::io::copy_bidirectional_with_sizes(&mut client, &mut member, 64 * 1024, 64 * 1024).await.map(|_| ())
        }
    }
}
