//! Access keys as the API shows them, and the SigV4 signing keys nodes
//! receive instead of secrets.
//!
//! A node verifies SigV4 with `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" +
//! secret, date), region), service), "aws4_request")`, the last step of the
//! specification's key derivation. The control plane derives it per key for
//! yesterday, today and tomorrow (UTC), so a node needs no secret, and a
//! leaked node snapshot signs for three days of one region and service only.
//!
//! SigV4A signs with an ECDSA P-256 key derived from the secret; nodes get
//! its public key, which verifies and cannot sign.

use ring::hmac;
use serde::{Deserialize, Serialize};

/// The signing service of VPC Lattice's SigV4 scope; clients written for
/// Lattice sign for it, so Trellis verifies it.
pub const SIGNING_SERVICE: &str = "vpc-lattice-svcs";

/// An identity's principal is this followed by its name.
pub const IDENTITY_PREFIX: &str = "trellis:identity/";

/// `{"AccessKeyId": ..., "SecretAccessKey": ...}`: AWS's create-access-key
/// field names, printed once by `trellis identity create`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NewAccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub identity: String,
    /// Seconds since the Unix epoch.
    pub create_date: u64,
}

impl std::fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccessKey")
            .field("access_key_id", &self.access_key_id)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyStatus {
    Active,
    Inactive,
}

/// What `get` shows of a key: never its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AccessKeyInfo {
    pub access_key_id: String,
    pub identity: String,
    pub status: KeyStatus,
    pub create_date: u64,
}

/// The last step of SigV4's key derivation, for one date (`YYYYMMDD`),
/// region and service.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let step = |key: &[u8], data: &str| {
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(&k_date, region);
    let k_service = step(&k_region, service);
    step(&k_service, "aws4_request")
}

/// The order of P-256 minus two, big-endian: SigV4A's derivation takes a
/// candidate `k0` only when `k0 <= n - 2`, so `k0 + 1` is a valid scalar.
const P256_ORDER_MINUS_2: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x4f,
];

/// The SigV4A public key of an access key, as an uncompressed SEC1 point
/// (`04 || X || Y`).
///
/// The private key is what AWS's signers derive: NIST SP 800-108 counter-mode
/// HMAC-SHA256 keyed with `"AWS4A" + secret`, over
/// `AWS4-ECDSA-P256-SHA256 || 0x00 || access key id || counter || 256`,
/// retried with the next counter until the result is below the curve order
/// minus one, plus one. `None` only if 254 candidates all fail, which has
/// probability about 2^-8000.
pub fn sigv4a_public_key(access_key_id: &str, secret: &str) -> Option<[u8; 65]> {
    use p256::elliptic_curve::point::AffineCoordinates;
    let key = hmac::Key::new(hmac::HMAC_SHA256, format!("AWS4A{secret}").as_bytes());
    for counter in 1u8..=254 {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&1u32.to_be_bytes());
        ctx.update(b"AWS4-ECDSA-P256-SHA256\0");
        ctx.update(access_key_id.as_bytes());
        ctx.update(&[counter]);
        ctx.update(&256u32.to_be_bytes());
        let mut k: [u8; 32] = ctx.sign().as_ref().try_into().ok()?;
        // Equal-length big-endian arrays compare as the numbers they hold.
        if k > P256_ORDER_MINUS_2 {
            continue;
        }
        for b in k.iter_mut().rev() {
            let (sum, carry) = b.overflowing_add(1);
            *b = sum;
            if !carry {
                break;
            }
        }
        let public = p256::SecretKey::from_bytes(&k.into()).ok()?.public_key();
        let point = public.as_affine();
        let mut out = [0u8; 65];
        out[0] = 0x04;
        out[1..33].copy_from_slice(&point.x());
        out[33..].copy_from_slice(&point.y());
        return Some(out);
    }
    None
}

/// `YYYYMMDD` of a day counted from the Unix epoch (UTC).
pub fn date_of_day(day: i64) -> String {
    // Howard Hinnant's civil-from-days.
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_key_matches_the_aws_documentation_example() {
        // "Derive a signing key for SigV4", AWS General Reference.
        let k = signing_key(
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            "20120215",
            "us-east-1",
            "iam",
        );
        assert_eq!(
            data_encoding::HEXLOWER.encode(&k),
            "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"
        );
    }

    #[test]
    fn sigv4a_public_key_matches_the_aws_test_suite() {
        // aws-signing-test-suite/v4a/*/public-key.json for these credentials.
        let k =
            sigv4a_public_key("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY").unwrap();
        let hex = data_encoding::HEXLOWER.encode(&k);
        assert_eq!(
            hex,
            "04b6618f6a65740a99e650b33b6b4b5bd0d43b176d721a3edfea7e7d2d56d936b1\
             865ed22a7eadc9c5cb9d2cbaca1b3699139fedc5043dc6661864218330c8e518"
        );
    }

    #[test]
    fn dates_of_days() {
        assert_eq!(date_of_day(0), "19700101");
        assert_eq!(date_of_day(11_016), "20000229");
        assert_eq!(date_of_day(20_413), "20251121");
        assert_eq!(date_of_day(-1), "19691231");
    }
}
