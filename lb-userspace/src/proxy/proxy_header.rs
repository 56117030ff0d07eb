//! The PROXY protocol header (HAProxy's; v1 text, v2 binary) that `PROXY` and `PROXYV2` pools
//! send a member first on each connection, before anything else (a TLS handshake included), as
//! Octavia's amphora does with `send-proxy` / `send-proxy-v2`: the member learns the client's
//! address and port and the address the client connected to. Encoded by the `ppp` crate.

use std::net::SocketAddr;

use lb_common::model::ProxyHeader;

/// The header for a connection from `client` to `listener` (IPv4-mapped addresses taken as
/// IPv4; a client and listener of different families give v1's `UNKNOWN`, v2's `UNSPEC`).
pub fn encode(version: ProxyHeader, client: SocketAddr, listener: SocketAddr) -> Vec<u8> {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let addrs = (canonical(client), canonical(listener));
    match version {
        ProxyHeader::V1 => ppp::v1::Addresses::from(addrs).to_string().into_bytes(),
        ProxyHeader::V2 => ppp::v2::Builder::with_addresses(ppp::v2::Version::Two | ppp::v2::Command::Proxy, ppp::v2::Protocol::Stream, addrs)
            .build()
            .expect("a header without TLVs always builds"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_headers_carry_client_and_listener() {
        let (c, l): (SocketAddr, SocketAddr) = ("[::ffff:192.0.2.7]:40000".parse().unwrap(), "198.51.100.1:443".parse().unwrap());
        assert_eq!(encode(ProxyHeader::V1, c, l), b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 443\r\n");
        let v2 = encode(ProxyHeader::V2, c, l);
        assert_eq!(&v2[..12], b"\r\n\r\n\0\r\nQUIT\n", "the v2 signature");
        assert_eq!(v2[12..16], [0x21, 0x11, 0, 12], "v2 PROXY command, TCP over IPv4, 12 address bytes");
        assert_eq!(v2[16..], [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0x01, 0xbb]);
        let mixed = encode(ProxyHeader::V1, c, "[2001:db8::1]:443".parse().unwrap());
        assert_eq!(mixed, b"PROXY UNKNOWN\r\n");
    }
}
