//! Calls a Trellis service over HTTPS as a Rust program would: hyper's
//! pooled client over rustls (hyper-rustls), trusting the CA that signed
//! the service's certificate. The name is resolved by the system resolver
//! (the node's DNS) and the connection redirected by the node's datapath;
//! nothing here knows about Trellis.
//!
//! ```text
//! cargo run --example https_client -- URL CA_PEM [http1|any] [REQUESTS]
//! ```
//!
//! `http1` offers only HTTP/1.1 in ALPN; `any` (the default) offers HTTP/2
//! and HTTP/1.1. Prints one JSON line per request: status, negotiated
//! version, body.

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::sync::Arc;
use std::time::Duration;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, ca, rest @ ..] = args.as_slice() else {
        bail!("usage: https_client URL CA_PEM [http1|any] [REQUESTS]");
    };
    let offer = rest.first().map_or("any", String::as_str);
    let requests: usize = rest.get(1).map_or(Ok(1), |n| n.parse())?;

    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).with_context(|| format!("reading {ca}"))? {
        roots.add(cert?)?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(5)));
    let connector = match offer {
        "http1" => builder.enable_http1().wrap_connector(http),
        "any" => builder.enable_all_versions().wrap_connector(http),
        other => bail!("unknown offer {other:?}: http1 or any"),
    };
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);

    for _ in 0..requests {
        let request = client.get(url.parse()?);
        let response = tokio::time::timeout(Duration::from_secs(10), request)
            .await
            .context("no response within 10 s")??;
        let (status, version) = (response.status().as_u16(), response.version());
        let body = response.into_body().collect().await?.to_bytes();
        let line = serde_json::json!({
            "status": status,
            "version": format!("{version:?}"),
            "body": String::from_utf8_lossy(&body),
        });
        println!("{line}");
    }
    Ok(())
}
