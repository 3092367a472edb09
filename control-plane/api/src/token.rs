//! Bearer tokens kept in files: the control plane's API token and a node's
//! admin token. Generated on first start, 256 random bits in hex, kept with
//! mode 0600 so only the owner (and root) can present them.

use std::io;
use std::path::Path;

/// Reads the token in `file`, creating it if missing. Creation goes through
/// [`crate::persist::write_atomic`], so a crash never leaves a partial token.
pub fn load_or_create(file: &Path) -> io::Result<String> {
    match std::fs::read_to_string(file) {
        Ok(t) if !t.trim().is_empty() => return Ok(t.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut raw = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut raw)
        .map_err(|_| io::Error::other("no randomness for a token"))?;
    let token = data_encoding::HEXLOWER.encode(&raw);
    crate::persist::write_atomic(file, format!("{token}\n").as_bytes(), 0o600)?;
    Ok(token)
}

/// Whether an `Authorization` header value is `Bearer <token>`, compared in
/// time that depends on the token's length only.
pub fn is_bearer(header: Option<&str>, token: &str) -> bool {
    let Some(given) = header.and_then(|v| v.strip_prefix("Bearer ")) else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t");
        let a = load_or_create(&file).unwrap();
        assert_eq!(a.len(), 64);
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_or_create(&file).unwrap(), a);
    }

    #[test]
    fn only_the_exact_bearer_token_passes() {
        for (header, ok) in [
            (Some("Bearer abc"), true),
            (Some("Bearer abd"), false),
            (Some("Bearer ab"), false),
            (Some("bearer abc"), false),
            (Some("abc"), false),
            (None, false),
        ] {
            assert_eq!(is_bearer(header, "abc"), ok, "{header:?}");
        }
    }
}
