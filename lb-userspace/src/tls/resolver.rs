//! Certificate selection by SNI: exact names first, then `*.` wildcards covering one label,
//! then the listener's default certificate.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One listener's certificates, indexed by the DNS names they cover.
#[derive(Debug)]
pub struct SniResolver {
    default: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
}

impl SniResolver {
    /// `sni` lists each SNI certificate with its DNS names; earlier entries win on overlap.
    pub fn new(default: Arc<CertifiedKey>, sni: Vec<(Arc<CertifiedKey>, Vec<String>)>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (key, names) in sni {
            for name in names {
                let name = name.to_ascii_lowercase();
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert_with(|| key.clone()),
                    None => exact.entry(name).or_insert_with(|| key.clone()),
                };
            }
        }
        SniResolver { default, exact, wildcard }
    }

    /// The certificate served for `server_name` (`None`: no SNI sent).
    pub fn lookup(&self, server_name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = server_name.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, suffix)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(suffix)
        {
            return k.clone();
        }
        self.default.clone()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
    }
}
