//! SigV4 verification plus policy evaluation for one request, as the proxy
//! runs them (target: at least 200,000 per second on one core), and the same
//! with SigV4A (an ECDSA P-256 verification). Requests are signed by the
//! `aws-sigv4` crate; keys are derived as the control plane derives them for
//! nodes.

use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::{v4, v4a};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;
use std::time::{SystemTime, UNIX_EPOCH};
use trellis_node::auth::{self, Guard, Inbound, Keys, Place};

const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn bench(c: &mut Criterion) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let date = trellis_api::keys::date_of_day((secs / 86_400) as i64);
    let key = trellis_api::keys::signing_key(SECRET, &date, "us-east-1", "vpc-lattice-svcs");
    let public = trellis_api::keys::sigv4a_public_key("TKIABENCHBENCHBENCH0", SECRET).unwrap();
    let snapshot: trellis_api::snapshot::Snapshot = serde_json::from_value(serde_json::json!({
        "network": "east", "revision": 1, "region": "us-east-1", "dnsZone": "trellis.internal",
        "services": [], "serviceNetworks": [], "targetGroups": [], "gateways": {},
        "identities": [{"name": "alice", "principals": ["trellis:identity/alice"],
            "keys": [{"accessKeyId": "TKIABENCHBENCHBENCH0",
                      "signingKeys": {date.clone(): data_encoding::HEXLOWER.encode(&key)},
                      "sigv4aPublicKey": data_encoding::HEXLOWER.encode(&public)}]}]
    }))
    .unwrap();
    let keys = Keys::compile(&snapshot);
    let policy = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Sid": "orders", "Effect": "Allow", "Principal": {"AWS": "trellis:identity/alice"},
         "Action": "vpc-lattice-svcs:Invoke", "Resource": "trellis:service/orders/orders/*",
         "Condition": {"StringEquals": {"vpc-lattice-svcs:RequestMethod": ["GET", "POST"]},
                       "StringNotEqualsIgnoreCase": {"aws:PrincipalType": "anonymous"}}},
        {"Sid": "no-admin", "Effect": "Deny", "Principal": "*", "Action": "*",
         "Resource": "trellis:service/orders/orders/admin*"}]});
    let network = serde_json::json!({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": "*", "Action": "*", "Resource": "*"}]});
    let sigv4 = trellis_api::resource::AuthType::SigV4;
    let guard = Guard::compile((sigv4, Some(&policy)), (sigv4, Some(&network))).unwrap();

    let identity =
        aws_credential_types::Credentials::new("TKIABENCHBENCHBENCH0", SECRET, None, None, "bench")
            .into();
    let v4_params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("vpc-lattice-svcs")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let v4a_params = v4a::SigningParams::builder()
        .identity(&identity)
        .region_set("us-east-1")
        .name("vpc-lattice-svcs")
        .time(now)
        .settings(SigningSettings::default())
        .build()
        .unwrap()
        .into();
    let url = "http://169.254.171.1/orders/42?expand=items";
    let signed_request = |params| {
        let signable = SignableRequest::new(
            "GET",
            url,
            [("host", "169.254.171.1"), ("user-agent", "bench/1")].into_iter(),
            SignableBody::Bytes(b""),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder()
            .uri(url)
            .header("host", "169.254.171.1")
            .header("user-agent", "bench/1")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        instructions.apply_to_request_http1x(&mut req);
        req.into_parts().0
    };
    let place = Place {
        region: "us-east-1",
        source_network: "east",
        service: "orders",
        service_network: "shop",
        client: "127.0.0.1:40000".parse().unwrap(),
        port: 80,
        secure: false,
        now: secs,
        workload: None,
    };
    for (name, params) in [
        ("sigv4 verify + policy (GET, 2 levels)", v4_params),
        ("sigv4a verify + policy (GET, 2 levels)", v4a_params),
    ] {
        let parts = signed_request(params);
        let inbound = Inbound {
            method: &parts.method,
            path: parts.uri.path(),
            query: parts.uri.query(),
            signed_path: parts.uri.path(),
            signed_query: parts.uri.query(),
            headers: &parts.headers,
            authority: None,
            body_sha256: None,
        };
        // It must be allowed, or the benchmark measures a refusal.
        let signed = auth::authenticate(&keys, &inbound, secs as i64).unwrap();
        auth::authorize(&guard, signed.principal.as_deref(), &inbound, &place).unwrap();

        c.bench_function(name, |b| {
            b.iter(|| {
                let signed = auth::authenticate(&keys, black_box(&inbound), secs as i64).unwrap();
                black_box(
                    auth::authorize(&guard, signed.principal.as_deref(), &inbound, &place).unwrap(),
                )
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
