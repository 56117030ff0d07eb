//! IP networks in CIDR notation (`allowed_cidrs`): parsing with precise errors, membership.

use std::net::IpAddr;

/// An IPv4 or IPv6 network: address with its host bits cleared, and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Why a CIDR string was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CidrError {
    /// No `/` (Octavia requires the prefix length).
    NoPrefix(String),
    BadAddress(String),
    BadPrefix { cidr: String, max: u8 },
    /// Bits set after the prefix (`10.0.0.1/24`): Octavia refuses these, so does lbd.
    HostBits { cidr: String, network: String },
}

impl std::fmt::Display for CidrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CidrError::NoPrefix(s) => write!(f, "'{s}' is not a CIDR: the prefix length (/N) is missing"),
            CidrError::BadAddress(s) => write!(f, "'{s}' is not a CIDR: the address is not an IPv4 or IPv6 address"),
            CidrError::BadPrefix { cidr, max } => write!(f, "'{cidr}' is not a CIDR: the prefix length must be 0 to {max}"),
            CidrError::HostBits { cidr, network } => write!(f, "'{cidr}' has host bits set; the network is {network}"),
        }
    }
}

impl std::error::Error for CidrError {}

impl std::str::FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let (addr, prefix) = s.split_once('/').ok_or_else(|| CidrError::NoPrefix(s.into()))?;
        let addr: IpAddr = addr.parse().map_err(|_| CidrError::BadAddress(s.into()))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix.parse().ok().filter(|p| *p <= max).ok_or(CidrError::BadPrefix { cidr: s.into(), max })?;
        let cidr = Cidr { addr: mask(addr, prefix), prefix };
        if cidr.addr != addr {
            return Err(CidrError::HostBits { cidr: s.into(), network: cidr.to_string() });
        }
        Ok(cidr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// Whether `ip` is in this network (never across address families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.prefix) == self.addr
    }
}

fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix as u32) };
            IpAddr::V4((u32::from(a) & m).into())
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix as u32) };
            IpAddr::V6((u128::from(a) & m).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_networks_and_refuses_what_octavia_refuses() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains("192.0.2.1".parse().unwrap()));
        assert!("2001:db8::/32".parse::<Cidr>().unwrap().contains("2001:db8::9".parse().unwrap()));
        assert_eq!("10.0.0.0".parse::<Cidr>(), Err(CidrError::NoPrefix("10.0.0.0".into())));
        assert!(matches!("10.0.0.0/33".parse::<Cidr>(), Err(CidrError::BadPrefix { max: 32, .. })));
        assert!(matches!("ten/8".parse::<Cidr>(), Err(CidrError::BadAddress(_))));
        assert_eq!(
            "10.0.0.1/24".parse::<Cidr>().unwrap_err().to_string(),
            "'10.0.0.1/24' has host bits set; the network is 10.0.0.0/24"
        );
    }
}
