//! Key material inside types that also carry it to where it is used: a
//! snapshot takes SigV4 signing keys and listener private keys to the nodes
//! that need them, and the same snapshot is what a node shows on its admin
//! endpoint. [`Secret`] serializes in full on the wire and on disk, and as
//! its fingerprint in every view meant for people ([`shown`]) and in `Debug`,
//! so a secret field cannot reach a page or a log line by being forgotten:
//! its type decides, not the code that prints it.

use serde::{Deserialize, Serialize, Serializer};
use std::cell::Cell;
use std::fmt;

#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

thread_local! {
    /// Set while [`shown`] serializes: serialization is synchronous, so a
    /// flag on the serializing thread reaches every `Secret` in the value.
    static SHOWING: Cell<bool> = const { Cell::new(false) };
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the code that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `sha256:` and the hex SHA-256 of the value: enough to tell two
    /// secrets apart or to match one against its source, nothing to use.
    pub fn fingerprint(&self) -> String {
        format!("sha256:{}", sha256_hex(self.0.as_bytes()))
    }
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

/// `value` as JSON with every [`Secret`] replaced by its fingerprint, as
/// [`shown`] makes it, without the detour through a `Value`.
pub fn to_vec_shown<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    let _restore = Showing(SHOWING.replace(true));
    serde_json::to_vec(value)
}

/// SHA-256 of `value`'s JSON, hashed as it is written (a large value is
/// never held twice, once as JSON). With `shown`, each [`Secret`] is written
/// as its fingerprint, as [`shown`] does.
pub fn sha256_json<T: Serialize + ?Sized>(
    value: &T,
    shown: bool,
) -> Result<[u8; 32], serde_json::Error> {
    struct Hashing(ring::digest::Context);
    impl std::io::Write for Hashing {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.update(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let _restore = Showing(SHOWING.replace(shown));
    // serde_json writes in small pieces; hash them in blocks.
    let mut out = std::io::BufWriter::with_capacity(
        4096,
        Hashing(ring::digest::Context::new(&ring::digest::SHA256)),
    );
    serde_json::to_writer(&mut out, value)?;
    let hashing = out
        .into_inner()
        .map_err(|e| serde_json::Error::io(e.into_error()))?;
    let mut digest = [0u8; 32];
    digest.copy_from_slice(hashing.0.finish().as_ref());
    Ok(digest)
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if SHOWING.get() {
            s.serialize_str(&self.fingerprint())
        } else {
            s.serialize_str(&self.0)
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({})", self.fingerprint())
    }
}

/// Resets the flag however serialization ends (an error, a panic).
struct Showing(bool);

impl Drop for Showing {
    fn drop(&mut self) {
        SHOWING.set(self.0);
    }
}

/// `value` as JSON for people to read: every [`Secret`] in it is replaced by
/// its fingerprint.
pub fn shown<T: Serialize>(value: &T) -> serde_json::Value {
    let _restore = Showing(SHOWING.replace(true));
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Serialize)]
    struct Holder {
        name: &'static str,
        keys: BTreeMap<&'static str, Secret>,
        key: Option<Secret>,
    }

    #[test]
    fn in_full_on_the_wire_fingerprinted_when_shown_and_in_debug() {
        let h = Holder {
            name: "n",
            keys: [("20261207", Secret::new("abc"))].into(),
            key: Some(Secret::new("PEM")),
        };
        let wire = serde_json::to_value(&h).unwrap();
        assert_eq!(wire["keys"]["20261207"], "abc");
        assert_eq!(wire["key"], "PEM");
        let people = shown(&h);
        assert_eq!(
            people["keys"]["20261207"],
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(!people.to_string().contains("PEM"));
        assert_eq!(people["name"], "n");
        // The flag does not outlive `shown`.
        assert_eq!(serde_json::to_value(&h).unwrap(), wire);
        assert!(!format!("{:?}", Secret::new("abc")).contains("\"abc\""));
        let back: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(back.expose(), "abc");
    }
}
