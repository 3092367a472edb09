//! AWS's SigV4 and SigV4A test suites (tests/data/sigv4, tests/data/sigv4a,
//! header signing) through Trellis's canonicalisation and verifier: for
//! every case the canonical request and the string to sign must be AWS's,
//! byte for byte, and the signature must verify with the key the control
//! plane derives for nodes (the day's signing key; the SigV4A public key).

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ring::{hmac, signature};
use std::path::Path;
use trellis_node::auth::sigv4::{self, Algorithm, Authorization, PathForm, Request, Verifier};

/// Cases written for a signer that encodes the path once (aws-sigv4 skips
/// them for the same reason): the verifier accepts that form too.
const SINGLE_ENCODED: [&str; 3] = ["get-space-normalized", "get-space-unnormalized", "get-utf8"];

struct Case {
    method: Method,
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn parse_signed_request(text: &str) -> Case {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let request_line = lines.next().unwrap();
    // The target may hold a raw space ("GET /example space/ HTTP/1.1").
    let (method, rest) = request_line.split_once(' ').unwrap();
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let target = rest.strip_suffix(" HTTP/1.1").unwrap_or(rest);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (target.to_string(), None),
    };
    // Folded continuation lines join their header with one space.
    let mut raw: Vec<(String, String)> = Vec::new();
    for line in lines {
        if line.starts_with(' ') || line.starts_with('\t') {
            let last = raw.last_mut().unwrap();
            last.1.push(' ');
            last.1.push_str(line.trim());
        } else {
            let (k, v) = line.split_once(':').unwrap();
            raw.push((k.to_string(), v.trim().to_string()));
        }
    }
    let mut headers = HeaderMap::new();
    for (k, v) in raw {
        headers.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v.as_bytes()).unwrap(),
        );
    }
    Case {
        method,
        path,
        query,
        headers,
        body: body.trim_end_matches('\n').as_bytes().to_vec(),
    }
}

/// What a suite checks beyond the canonical request and string to sign.
enum Suite {
    /// The signature is deterministic: AWS's must be ours.
    V4,
    /// ECDSA signatures are randomised: AWS's must verify with the public
    /// key derived from the credentials, which must be AWS's too.
    V4a,
}

fn case_names(dir: &Path) -> Vec<String> {
    let mut cases: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    cases.sort();
    cases
}

/// Runs every case of a suite; returns (verified, checked for the canonical
/// path only).
fn run_suite(suite: Suite, dir: &str) -> (usize, usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let cases = case_names(&dir);
    assert!(cases.len() >= 38, "the suite is missing: {}", cases.len());
    let (mut verified, mut canonical_only) = (0, 0);
    for name in &cases {
        let case_dir = dir.join(name);
        let read = |f: &str| std::fs::read_to_string(case_dir.join(f)).ok();
        let context: serde_json::Value = read("context.json")
            .map(|c| serde_json::from_str(&c).unwrap())
            .unwrap_or_else(|| serde_json::json!({}));
        let normalize = context["normalize"].as_bool().unwrap_or(true);
        let case = parse_signed_request(&read("header-signed-request.txt").unwrap());
        if context.get("timestamp").is_none() {
            // The two cases aws-sigv4 migrated from the old suite disagree
            // with themselves on the date; what they test is the path's
            // double encoding.
            let expected = read("header-canonical-request.txt").unwrap();
            let form = PathForm {
                normalize: true,
                double_encode: true,
            };
            assert_eq!(
                sigv4::canonical_path(&case.path, form),
                expected.lines().nth(1).unwrap(),
                "{name}: canonical path"
            );
            canonical_only += 1;
            continue;
        }
        let authorization = case.headers["authorization"].to_str().unwrap().to_string();
        let auth = Authorization::parse(&authorization).unwrap();
        let timestamp = case.headers["x-amz-date"].to_str().unwrap();
        let payload_hash = match case.headers.get("x-amz-content-sha256") {
            Some(h) => h.to_str().unwrap().to_string(),
            None => sigv4::sha256_hex(&case.body),
        };
        let request = Request {
            method: &case.method,
            path: &case.path,
            query: case.query.as_deref(),
            headers: &case.headers,
            authority: None,
        };
        let form = PathForm {
            normalize,
            double_encode: !SINGLE_ENCODED.contains(&name.as_str()),
        };
        let canonical = sigv4::canonical_request(
            &request,
            &auth.signed_headers,
            auth.signed_headers_raw,
            &payload_hash,
            form,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&canonical),
            read("header-canonical-request.txt")
                .unwrap()
                .trim_end_matches('\n'),
            "{name}: canonical request"
        );
        let sts = sigv4::string_to_sign(auth.algorithm, timestamp, &auth.scope(), &canonical);
        assert_eq!(
            sts,
            read("header-string-to-sign.txt")
                .unwrap()
                .trim_end_matches('\n'),
            "{name}: string to sign"
        );
        let id = context["credentials"]["access_key_id"].as_str().unwrap();
        let secret = context["credentials"]["secret_access_key"]
            .as_str()
            .unwrap();
        let expected_sig = read("header-signature.txt").unwrap();
        let hmac_key;
        let public_key;
        let verifier = match suite {
            Suite::V4 => {
                assert_eq!(auth.algorithm, Algorithm::HmacSha256);
                assert_eq!(
                    data_encoding::HEXLOWER.encode(auth.signature()),
                    expected_sig.trim(),
                    "{name}: signature in the signed request"
                );
                let region = auth.region.unwrap();
                let key = trellis_api::keys::signing_key(secret, auth.date, region, auth.service);
                hmac_key = hmac::Key::new(hmac::HMAC_SHA256, &key);
                Verifier::Hmac(&hmac_key)
            }
            Suite::V4a => {
                assert_eq!(auth.algorithm, Algorithm::EcdsaP256Sha256);
                let point = trellis_api::keys::sigv4a_public_key(id, secret).unwrap();
                let aws: serde_json::Value =
                    serde_json::from_str(&read("public-key.json").unwrap()).unwrap();
                let aws_point = format!(
                    "04{}{}",
                    aws["X"].as_str().unwrap(),
                    aws["Y"].as_str().unwrap()
                );
                assert_eq!(data_encoding::HEXLOWER.encode(&point), aws_point, "{name}");
                public_key =
                    signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point);
                // The suite's own signature of the string to sign verifies
                // too (the signed request carries another, equally valid).
                let other = data_encoding::HEXLOWER
                    .decode(expected_sig.trim().as_bytes())
                    .unwrap();
                public_key
                    .verify(sts.as_bytes(), &other)
                    .unwrap_or_else(|_| panic!("{name}: header-signature.txt"));
                Verifier::Ecdsa(&public_key)
            }
        };
        if normalize {
            // The verifier proper, as the proxy runs it.
            sigv4::verify(&request, &auth, timestamp, &payload_hash, verifier)
                .unwrap_or_else(|f| panic!("{name}: {f:?}"));
            // And one changed byte of the path fails it.
            let tampered = format!("{}x", case.path);
            let bad = Request {
                path: &tampered,
                ..request
            };
            assert!(sigv4::verify(&bad, &auth, timestamp, &payload_hash, verifier).is_err());
        } else {
            let ok = match verifier {
                Verifier::Hmac(k) => hmac::verify(k, sts.as_bytes(), auth.signature()).is_ok(),
                Verifier::Ecdsa(k) => k.verify(sts.as_bytes(), auth.signature()).is_ok(),
            };
            assert!(ok, "{name}: signature");
        }
        verified += 1;
    }
    (verified, canonical_only)
}

#[test]
fn every_v4_case_canonicalises_and_verifies() {
    let (verified, canonical_only) = run_suite(Suite::V4, "tests/data/sigv4");
    assert!(verified >= 38, "verified {verified}");
    assert_eq!(canonical_only, 2);
}

#[test]
fn every_v4a_case_canonicalises_and_verifies() {
    let (verified, canonical_only) = run_suite(Suite::V4a, "tests/data/sigv4a");
    assert_eq!(verified, 38);
    assert_eq!(canonical_only, 0);
}
