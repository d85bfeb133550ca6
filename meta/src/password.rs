//! Password hashes in RabbitMQ's default format (`rabbit_password_hashing_sha256`):
//! base64 of a 4-byte salt followed by SHA-256(salt ++ password). Users imported
//! from a RabbitMQ definitions file keep working with their old passwords.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};

pub fn hash_password(password: &str) -> String {
    let salt: [u8; 4] = rand::random();
    hash_with_salt(&salt, password)
}

fn hash_with_salt(salt: &[u8], password: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(password.as_bytes());
    let mut out = salt.to_vec();
    out.extend_from_slice(&hasher.finalize());
    STANDARD.encode(out)
}

/// A hash this module can check: base64 of a 4-byte salt and a SHA-256
/// digest, or empty (a user without a password, who cannot log in with one,
/// as RabbitMQ stores it).
pub fn is_valid_hash(stored: &str) -> bool {
    stored.is_empty() || STANDARD.decode(stored).is_ok_and(|raw| raw.len() == 4 + 32)
}

/// Checks `password` against a stored hash; a malformed hash never matches.
pub fn verify_password(stored: &str, password: &str) -> bool {
    let Ok(raw) = STANDARD.decode(stored) else {
        return false;
    };
    if raw.len() != 4 + 32 {
        return false;
    }
    let expected = hash_with_salt(&raw[..4], password);
    constant_time_eq(expected.as_bytes(), stored.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_its_own_hashes_and_rejects_others() {
        let hash = hash_password("s3cret");
        assert!(verify_password(&hash, "s3cret"));
        assert!(!verify_password(&hash, "s3cret "));
        assert!(!verify_password("not base64!", "s3cret"));
        assert!(is_valid_hash(&hash) && is_valid_hash(""));
        assert!(!is_valid_hash("not base64!") && !is_valid_hash("c2hvcnQ="));
        assert!(!verify_password("", ""));
    }

    #[test]
    fn reads_a_hash_written_by_rabbitmq() {
        // salt 908d c60a, password "test12", as RabbitMQ's docs show it.
        assert!(verify_password(
            "kI3GCqW5JLMJa4iX1lo7X4D6XbYqlLgxIs30+P6tENUV2POR",
            "test12"
        ));
    }
}
