//! Secrets that guard the daemon's doors: the admin token, session ids, CSRF tokens and
//! webhook secrets. Made from the OS's random source and compared in constant time, so a
//! token cannot be guessed byte by byte from response timings.

use subtle::ConstantTimeEq;

/// `true` when `given` equals `expected`, in time that does not depend on where they differ.
/// A length mismatch answers at once: the length of a token is not a secret.
pub fn same(given: &[u8], expected: &[u8]) -> bool {
    given.ct_eq(expected).into()
}

/// 32 bytes from the OS's random source, as 64 hex digits.
pub fn random_hex() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(std::io::Error::other)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_tokens() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abc", b"abd"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"", b"a"));
    }

    #[test]
    fn tokens_are_fresh_hex() {
        let (a, b) = (random_hex().unwrap(), random_hex().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
