//! Identity records: projects, users with per-project roles, PBKDF2-SHA256 password hashes.

use std::num::NonZeroU32;

use aws_lc_rs::pbkdf2;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::seal::random;

pub const ROLES: &[&str] = &["admin", "member", "reader"];
const PBKDF2_ITERATIONS: u32 = 200_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProjectRec {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RoleAssignment {
    pub project_id: String,
    pub role: String,
}

#[derive(Clone, Serialize, Deserialize)]
pub struct PasswordHash {
    pub salt: String,
    pub iterations: u32,
    pub hash: String,
}

impl PasswordHash {
    pub fn new(password: &str) -> Self {
        let salt = random::<16>();
        let mut out = [0u8; 32];
        pbkdf2::derive(pbkdf2::PBKDF2_HMAC_SHA256, NonZeroU32::new(PBKDF2_ITERATIONS).unwrap(), &salt, password.as_bytes(), &mut out);
        PasswordHash { salt: B64.encode(salt), iterations: PBKDF2_ITERATIONS, hash: B64.encode(out) }
    }

    pub fn verify(&self, password: &str) -> bool {
        let (Ok(salt), Ok(hash), Some(iter)) = (B64.decode(&self.salt), B64.decode(&self.hash), NonZeroU32::new(self.iterations)) else {
            return false;
        };
        pbkdf2::verify(pbkdf2::PBKDF2_HMAC_SHA256, iter, &salt, password.as_bytes(), &hash).is_ok()
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct UserRec {
    pub id: String,
    pub name: String,
    pub password: PasswordHash,
    pub roles: Vec<RoleAssignment>,
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_hashes_verify_only_the_password() {
        let h = PasswordHash::new("correct horse");
        assert!(h.verify("correct horse"));
        assert!(!h.verify("correct horse "));
    }
}
