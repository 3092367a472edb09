//! Access keys as the API shows them, and the SigV4 signing keys nodes
//! receive instead of secrets.
//!
//! A node verifies SigV4 with `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" +
//! secret, date), region), service), "aws4_request")`, the last step of the
//! specification's key derivation. The control plane derives it per key for
//! yesterday, today and tomorrow (UTC), so a node needs no secret, and a
//! leaked node snapshot signs for three days of one region and service only.

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
    fn dates_of_days() {
        assert_eq!(date_of_day(0), "19700101");
        assert_eq!(date_of_day(11_016), "20000229");
        assert_eq!(date_of_day(20_413), "20251121");
        assert_eq!(date_of_day(-1), "19691231");
    }
}
