//! Secrets at rest: payloads are sealed with AES-256-GCM under a key-encryption key (KEK) kept in
//! a 0600 file in the state directory. The secret's id is the associated data, so a sealed payload
//! cannot be moved to another secret. Plaintext lives in `Zeroizing` buffers only.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// A sealed payload as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sealed {
    pub nonce: String,
    pub ciphertext: String,
}

pub struct Kek(LessSafeKey);

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("key-encryption key file {0}: {1}")]
    KeyFile(String, std::io::Error),
    #[error("key-encryption key file {0} must hold exactly 32 bytes")]
    KeyLength(String),
    #[error("sealed payload does not decrypt under this key-encryption key")]
    Open,
}

/// Random bytes from the system CSPRNG.
pub fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    SystemRandom::new().fill(&mut b).expect("system random source");
    b
}

/// Writes `data` to a new file with mode 0600 (refusing to overwrite).
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

impl Kek {
    /// Loads the KEK from `path`, creating it (random, 0600) on first start.
    pub fn load_or_create(path: &Path) -> Result<Self, SealError> {
        let name = path.display().to_string();
        if !path.exists() {
            write_private(path, &random::<32>()).map_err(|e| SealError::KeyFile(name.clone(), e))?;
        }
        let bytes = Zeroizing::new(std::fs::read(path).map_err(|e| SealError::KeyFile(name.clone(), e))?);
        let key = UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| SealError::KeyLength(name))?;
        Ok(Kek(LessSafeKey::new(key)))
    }

    pub fn seal(&self, id: &str, plaintext: &[u8]) -> Sealed {
        let nonce = random::<NONCE_LEN>();
        let mut buf = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut buf)
            .expect("AES-GCM sealing of an in-memory buffer");
        Sealed { nonce: B64.encode(nonce), ciphertext: B64.encode(buf) }
    }

    pub fn open(&self, id: &str, sealed: &Sealed) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let nonce: [u8; NONCE_LEN] = B64.decode(&sealed.nonce).ok().and_then(|n| n.try_into().ok()).ok_or(SealError::Open)?;
        let mut buf = Zeroizing::new(B64.decode(&sealed.ciphertext).map_err(|_| SealError::Open)?);
        let len = self
            .0
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(id.as_bytes()), &mut buf)
            .map_err(|_| SealError::Open)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_payloads_open_only_for_their_id() {
        let dir = std::env::temp_dir().join(format!("lbd-kek-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kek = Kek::load_or_create(&dir.join("kek")).unwrap();
        let sealed = kek.seal("id-1", b"top secret");
        assert!(!sealed.ciphertext.contains("top secret"));
        assert_eq!(&**kek.open("id-1", &sealed).unwrap(), b"top secret");
        assert!(kek.open("id-2", &sealed).is_err());
        let again = Kek::load_or_create(&dir.join("kek")).unwrap();
        assert_eq!(&**again.open("id-1", &sealed).unwrap(), b"top secret");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
