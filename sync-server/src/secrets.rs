//! Device tokens and enrollment codes: random secrets the server keeps only as SHA-256.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Letters and digits that cannot be misread for one another (no 0/O, 1/I/L).
const CODE_ALPHABET: &[u8] = b"23456789ABCDEFGHJKMNPQRSTUVWXYZ";
const CODE_LEN: usize = 12;

/// A new device token: 256 random bits, in hex.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A new enrollment code, `XXXX-XXXX-XXXX` (about 59 bits), easy to type from paper.
pub fn new_code() -> String {
    let mut rng = rand::rng();
    let mut out = String::with_capacity(CODE_LEN + 2);
    for i in 0..CODE_LEN {
        if i > 0 && i % 4 == 0 {
            out.push('-');
        }
        // Rejection sampling keeps every character equally likely.
        loop {
            let b = (rng.next_u32() & 0xFF) as usize;
            if b < 248 {
                out.push(CODE_ALPHABET[b % CODE_ALPHABET.len()] as char);
                break;
            }
        }
    }
    out
}

/// The hash of a code as typed: case, spaces and dashes do not matter.
pub fn hash_code(code: &str) -> [u8; 32] {
    let normal: String =
        code.chars().filter(|c| !matches!(c, '-' | ' ')).map(|c| c.to_ascii_uppercase()).collect();
    Sha256::digest(normal.as_bytes()).into()
}

/// The setup link a phone opens (or scans as a QR code) to enroll.
pub fn enrollment_link(server: &str, code: &str) -> String {
    tejido_core::sync::wire::setup_link(server, code)
}

/// Whether two secrets are equal, compared by their hashes so the time taken does not depend
/// on where they first differ.
pub fn same_secret(given: &str, expected: &str) -> bool {
    !expected.is_empty() && hash_token(given) == hash_token(expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_typable_and_hash_the_same_however_typed() {
        let code = new_code();
        assert_eq!(code.len(), 14);
        assert!(code.chars().all(|c| c == '-' || CODE_ALPHABET.contains(&(c as u8))));
        assert_eq!(hash_code(&code), hash_code(&code.to_lowercase().replace('-', " ")));
        assert_ne!(new_code(), new_code());
        assert_eq!(new_token().len(), 64);
    }

    #[test]
    fn links_escape_the_server_url() {
        assert_eq!(
            enrollment_link("https://x.org:8443/a", "AB-CD"),
            "tejido://enroll?server=https%3A%2F%2Fx.org%3A8443%2Fa&code=AB-CD"
        );
    }
}
