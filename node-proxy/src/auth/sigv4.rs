//! SigV4 and SigV4A verification (`Authorization: AWS4-HMAC-SHA256 ...`,
//! `AWS4-ECDSA-P256-SHA256 ...`), per AWS's
//! specification and as clients signing for VPC Lattice
//! (`vpc-lattice-svcs`) produce it.
//!
//! The canonical request is rebuilt from what arrived: method; the path,
//! normalized (dot segments removed, repeated slashes collapsed) and URI
//! encoded; the query, each name and value decoded, strictly re-encoded and
//! sorted; the signed headers, lowercased, values trimmed with inner runs
//! of spaces collapsed, repeated headers joined with commas; the payload
//! hash. AWS SDKs encode the path twice for services other than S3 (a `%`
//! in the request becomes `%25`); some signers (and the CRT test suite's
//! space and UTF-8 cases) encode it once. Both canonical forms bind the
//! same path, so the verifier accepts either: it tries the SDK form first.
//!
//! SigV4A (`AWS4-ECDSA-P256-SHA256`) shares the canonical request; its scope
//! drops the region and its signature is ECDSA P-256, checked with the
//! access key's public key.
//!
//! Long because it is one algorithm read against one specification: the
//! canonical request, the string to sign and both signature schemes, top to
//! bottom, with the AWS test suites as its tests.

use http::{HeaderMap, Method};
use ring::{digest, hmac, signature};

/// Why a request was refused (its signature, or a policy). `code` is AWS's exception
/// name where one exists; the message names the check, never a secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub code: &'static str,
    pub message: String,
}

pub(crate) fn fail(code: &'static str, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// SHA-256 of nothing.
pub const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Longest DER encoding of a P-256 ECDSA signature.
const MAX_SIGNATURE: usize = 72;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// SigV4: HMAC-SHA256 with a key scoped to a date, region and service.
    HmacSha256,
    /// SigV4A: ECDSA P-256 over SHA-256; the scope has no region, the
    /// signed `x-amz-region-set` header names the regions instead.
    EcdsaP256Sha256,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::HmacSha256 => "AWS4-HMAC-SHA256",
            Algorithm::EcdsaP256Sha256 => "AWS4-ECDSA-P256-SHA256",
        }
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub algorithm: Algorithm,
    pub access_key_id: &'a str,
    pub date: &'a str,
    /// SigV4's scope region; `None` for SigV4A.
    pub region: Option<&'a str>,
    pub service: &'a str,
    /// Lowercase, in the order given (which must be sorted).
    pub signed_headers: Vec<&'a str>,
    pub signed_headers_raw: &'a str,
    signature: [u8; MAX_SIGNATURE],
    signature_len: usize,
}

impl<'a> Authorization<'a> {
    pub fn parse(value: &'a str) -> Result<Authorization<'a>, Failure> {
        let malformed = |what: &str| fail("IncompleteSignatureException", what.to_string());
        let (algorithm, rest) = [Algorithm::HmacSha256, Algorithm::EcdsaP256Sha256]
            .into_iter()
            .find_map(|a| {
                let rest = value.strip_prefix(a.name())?;
                rest.starts_with(' ').then_some((a, rest))
            })
            .ok_or_else(|| {
                malformed(
                    "Authorization header must start with AWS4-HMAC-SHA256 or AWS4-ECDSA-P256-SHA256",
                )
            })?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| malformed("Authorization header element without '='"))?;
            let slot = match k {
                "Credential" => &mut credential,
                "SignedHeaders" => &mut signed,
                "Signature" => &mut signature,
                _ => return Err(malformed("unknown Authorization header element")),
            };
            if slot.replace(v).is_some() {
                return Err(malformed("repeated Authorization header element"));
            }
        }
        let credential =
            credential.ok_or_else(|| malformed("Authorization header lacks Credential"))?;
        let signed_raw =
            signed.ok_or_else(|| malformed("Authorization header lacks SignedHeaders"))?;
        let signature =
            signature.ok_or_else(|| malformed("Authorization header lacks Signature"))?;
        let scope: Vec<&str> = credential.splitn(6, '/').collect();
        let (key, date, region, service) = match (algorithm, scope.as_slice()) {
            (Algorithm::HmacSha256, [k, d, r, s, "aws4_request"]) => (*k, *d, Some(*r), *s),
            (Algorithm::EcdsaP256Sha256, [k, d, s, "aws4_request"]) => (*k, *d, None, *s),
            _ => (
                Default::default(),
                Default::default(),
                None,
                Default::default(),
            ),
        };
        if key.is_empty() || date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed(match algorithm {
                Algorithm::HmacSha256 => {
                    "Credential must be KEY/YYYYMMDD/REGION/SERVICE/aws4_request"
                }
                Algorithm::EcdsaP256Sha256 => {
                    "SigV4A Credential must be KEY/YYYYMMDD/SERVICE/aws4_request"
                }
            }));
        }
        let signed_headers: Vec<&str> = signed_raw.split(';').collect();
        if signed_headers
            .iter()
            .any(|h| h.is_empty() || h.bytes().any(|b| b.is_ascii_uppercase()))
            || !signed_headers.windows(2).all(|w| w[0] < w[1])
        {
            return Err(malformed(
                "SignedHeaders must be lowercase header names, sorted, separated by ';'",
            ));
        }
        let mut sig = [0u8; MAX_SIGNATURE];
        let (lengths, what) = match algorithm {
            Algorithm::HmacSha256 => (64..=64, "Signature must be 64 lowercase hex digits"),
            Algorithm::EcdsaP256Sha256 => (
                16..=2 * MAX_SIGNATURE,
                "Signature must be a hex DER-encoded ECDSA signature",
            ),
        };
        let hex = signature.as_bytes();
        let decoded = lengths
            .contains(&hex.len())
            .then(|| data_encoding::HEXLOWER.decode_len(hex.len()).ok())
            .flatten()
            .and_then(|n| {
                data_encoding::HEXLOWER
                    .decode_mut(hex, &mut sig[..n])
                    .ok()
                    .map(|_| n)
            });
        let Some(signature_len) = decoded else {
            return Err(malformed(what));
        };
        Ok(Authorization {
            algorithm,
            access_key_id: key,
            date,
            region,
            service,
            signed_headers,
            signed_headers_raw: signed_raw,
            signature: sig,
            signature_len,
        })
    }

    pub fn signature(&self) -> &[u8] {
        &self.signature[..self.signature_len]
    }

    /// The credential scope as it is written into the string to sign.
    pub fn scope(&self) -> String {
        match self.region {
            Some(region) => format!("{}/{region}/{}/aws4_request", self.date, self.service),
            None => format!("{}/{}/aws4_request", self.date, self.service),
        }
    }
}

/// How the path is written into the canonical request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathForm {
    pub normalize: bool,
    /// Re-encode the received (already encoded) path, `%` included.
    pub double_encode: bool,
}

/// What AWS SDKs sign for services other than S3, then what single-encoding
/// signers do.
pub const PATH_FORMS: [PathForm; 2] = [
    PathForm {
        normalize: true,
        double_encode: true,
    },
    PathForm {
        normalize: true,
        double_encode: false,
    },
];

fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn encode_into(out: &mut Vec<u8>, bytes: &[u8], keep: impl Fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if keep(b) {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex_value(b[i + 1]), hex_value(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// RFC 3986 5.2.4 dot-segment removal, with empty segments dropped: what
/// AWS's normalization does ("//a/./b/../c//" is "/a/c/"): the segments
/// kept, and whether the path ends with a slash.
fn normalized_segments(path: &str) -> (Vec<&str>, bool) {
    let mut segments: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let trailing = path.ends_with('/') || path.ends_with("/.") || path.ends_with("/..");
    (segments, trailing)
}

fn push_path(out: &mut Vec<u8>, path: &str, form: PathForm) {
    let path = if path.is_empty() { "/" } else { path };
    let encode = |out: &mut Vec<u8>, s: &str| {
        if form.double_encode {
            encode_into(out, s.as_bytes(), |b| unreserved(b) || b == b'/');
        } else {
            encode_into(out, s.as_bytes(), |b| {
                unreserved(b) || b == b'/' || b == b'%'
            });
        }
    };
    if !form.normalize {
        encode(out, path);
        return;
    }
    let (segments, trailing) = normalized_segments(path);
    for s in &segments {
        out.push(b'/');
        encode(out, s);
    }
    if segments.is_empty() || trailing {
        out.push(b'/');
    }
}

pub fn canonical_path(path: &str, form: PathForm) -> String {
    let mut out = Vec::with_capacity(path.len() + 8);
    push_path(&mut out, path, form);
    String::from_utf8(out).unwrap_or_default()
}

fn push_query(out: &mut Vec<u8>, query: Option<&str>) {
    let Some(q) = query.filter(|q| !q.is_empty()) else {
        return;
    };
    let mut pairs: Vec<(&str, &str)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    // What needs no decoding and no encoding sorts and copies as it is.
    if q.bytes().all(|b| unreserved(b) || b == b'=' || b == b'&') {
        pairs.sort_unstable();
        for (i, (k, v)) in pairs.iter().enumerate() {
            if i > 0 {
                out.push(b'&');
            }
            out.extend_from_slice(k.as_bytes());
            out.push(b'=');
            out.extend_from_slice(v.as_bytes());
        }
        return;
    }
    let mut encoded: Vec<(Vec<u8>, Vec<u8>)> = pairs
        .iter()
        .map(|(k, v)| {
            let mut ek = Vec::new();
            encode_into(&mut ek, &percent_decode(k), unreserved);
            let mut ev = Vec::new();
            encode_into(&mut ev, &percent_decode(v), unreserved);
            (ek, ev)
        })
        .collect();
    encoded.sort_unstable();
    for (i, (k, v)) in encoded.iter().enumerate() {
        if i > 0 {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        out.push(b'=');
        out.extend_from_slice(v);
    }
}

pub fn canonical_query(query: Option<&str>) -> String {
    let mut out = Vec::new();
    push_query(&mut out, query);
    String::from_utf8(out).unwrap_or_default()
}

/// A header value as signed: trimmed, inner runs of spaces collapsed.
fn push_trimmed(out: &mut Vec<u8>, value: &[u8]) {
    let mut space = false;
    let start = out.len();
    for &b in value.trim_ascii() {
        if b == b' ' || b == b'\t' {
            space = true;
            continue;
        }
        if space && out.len() > start {
            out.push(b' ');
        }
        space = false;
        out.push(b);
    }
}

/// What the canonical request is built from.
pub struct Request<'a> {
    pub method: &'a Method,
    /// As received, still percent-encoded.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// The request's authority, for a signed `host` the headers lack
    /// (HTTP/2 carries it in `:authority`).
    pub authority: Option<&'a str>,
}

/// The canonical request, as bytes.
pub fn canonical_request(
    req: &Request<'_>,
    signed_headers: &[&str],
    signed_headers_raw: &str,
    payload_hash: &str,
    form: PathForm,
) -> Result<Vec<u8>, Failure> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b'\n');
    push_path(&mut out, req.path, form);
    out.push(b'\n');
    push_query(&mut out, req.query);
    out.push(b'\n');
    for name in signed_headers {
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        let mut values = req.headers.get_all(*name).iter().peekable();
        if values.peek().is_none() {
            match (*name, req.authority) {
                ("host", Some(authority)) => out.extend_from_slice(authority.as_bytes()),
                _ => {
                    return Err(fail(
                        "SignatureDoesNotMatch",
                        format!("signed header {name} is not in the request"),
                    ));
                }
            }
        }
        for (i, v) in values.enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_trimmed(&mut out, v.as_bytes());
        }
        out.push(b'\n');
    }
    out.push(b'\n');
    out.extend_from_slice(signed_headers_raw.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload_hash.as_bytes());
    Ok(out)
}

pub fn sha256_hex(data: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(digest::digest(&digest::SHA256, data).as_ref())
}

pub fn string_to_sign(
    algorithm: Algorithm,
    timestamp: &str,
    scope: &str,
    canonical: &[u8],
) -> String {
    let mut out = Vec::with_capacity(160);
    push_string_to_sign(&mut out, algorithm, timestamp, scope, canonical);
    String::from_utf8(out).unwrap_or_default()
}

fn push_string_to_sign(
    out: &mut Vec<u8>,
    algorithm: Algorithm,
    timestamp: &str,
    scope: &str,
    canonical: &[u8],
) {
    let hash = digest::digest(&digest::SHA256, canonical);
    for part in [algorithm.name(), "\n", timestamp, "\n", scope, "\n"] {
        out.extend_from_slice(part.as_bytes());
    }
    let at = out.len();
    out.resize(at + 64, 0);
    data_encoding::HEXLOWER.encode_mut(hash.as_ref(), &mut out[at..]);
}

/// What checks a signature: the day's SigV4 signing key, or the access
/// key's SigV4A public key.
#[derive(Clone, Copy)]
pub enum Verifier<'k> {
    Hmac(&'k hmac::Key),
    Ecdsa(&'k signature::UnparsedPublicKey<[u8; 65]>),
}

/// Checks `auth`'s signature over `req`, trying each path form. The HMAC
/// comparison is constant time (ring's); ECDSA verification needs no secret.
pub fn verify(
    req: &Request<'_>,
    auth: &Authorization<'_>,
    timestamp: &str,
    payload_hash: &str,
    verifier: Verifier<'_>,
) -> Result<(), Failure> {
    let scope = auth.scope();
    let mut sts = Vec::with_capacity(160);
    for form in PATH_FORMS {
        // Without a '%' in the path both forms are the same bytes.
        if !form.double_encode && !req.path.contains('%') {
            break;
        }
        let canonical = canonical_request(
            req,
            &auth.signed_headers,
            auth.signed_headers_raw,
            payload_hash,
            form,
        )?;
        sts.clear();
        push_string_to_sign(&mut sts, auth.algorithm, timestamp, &scope, &canonical);
        let ok = match verifier {
            Verifier::Hmac(key) => hmac::verify(key, &sts, auth.signature()).is_ok(),
            Verifier::Ecdsa(key) => key.verify(&sts, auth.signature()).is_ok(),
        };
        if ok {
            return Ok(());
        }
    }
    Err(fail(
        "InvalidSignatureException",
        "the request signature does not match the one computed for it (check the secret, and that nothing changed the request after signing)",
    ))
}

/// Seconds since the epoch of an `x-amz-date` (`YYYYMMDDTHHMMSSZ`).
pub fn parse_timestamp(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let mut n = 0i64;
        for &c in &b[r] {
            if !c.is_ascii_digit() {
                return None;
            }
            n = n * 10 + i64::from(c - b'0');
        }
        Some(n)
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, sec) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant).
    let y = if mo <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + mi * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_as_aws_does() {
        let f = PATH_FORMS[0];
        assert_eq!(canonical_path("", f), "/");
        assert_eq!(canonical_path("//example//", f), "/example/");
        assert_eq!(canonical_path("/example1/example2/../..", f), "/");
        assert_eq!(canonical_path("/./a/./b/../c", f), "/a/c");
        assert_eq!(canonical_path("/a%20b", f), "/a%2520b");
        assert_eq!(canonical_path("/a%20b", PATH_FORMS[1]), "/a%20b");
    }

    #[test]
    fn queries_are_decoded_encoded_and_sorted() {
        assert_eq!(canonical_query(Some("b=2&a=1&a=0")), "a=0&a=1&b=2");
        assert_eq!(canonical_query(Some("k&x=a b")), "k=&x=a%20b");
        assert_eq!(canonical_query(Some("x=%7e%2f")), "x=~%2F");
        assert_eq!(canonical_query(None), "");
    }

    #[test]
    fn timestamps() {
        assert_eq!(parse_timestamp("19700101T000000Z"), Some(0));
        assert_eq!(parse_timestamp("20150830T123600Z"), Some(1_440_938_160));
        assert_eq!(parse_timestamp("20150830T123600"), None);
        assert_eq!(parse_timestamp("20151330T123600Z"), None);
    }

    #[test]
    fn malformed_authorization_headers_are_named() {
        for (h, want) in [
            ("Bearer x", "must start with"),
            (
                "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=x",
                "Credential must be",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=K/20150830/r/s/aws4_request, SignedHeaders=host",
                "lacks Signature",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=K/20150830/r/s/aws4_request, SignedHeaders=x-amz-date;host, Signature=00",
                "sorted",
            ),
            (
                "AWS4-HMAC-SHA256 Credential=K/20150830/r/s/aws4_request, SignedHeaders=host, Signature=zz",
                "64 lowercase hex",
            ),
            (
                "AWS4-ECDSA-P256-SHA256 Credential=K/20150830/r/s/aws4_request, SignedHeaders=host, Signature=3045",
                "SigV4A Credential must be",
            ),
            (
                "AWS4-ECDSA-P256-SHA256 Credential=K/20150830/s/aws4_request, SignedHeaders=host, Signature=30",
                "DER-encoded ECDSA",
            ),
        ] {
            let e = Authorization::parse(h).unwrap_err();
            assert!(e.message.contains(want), "{h}: {}", e.message);
        }
    }
}
