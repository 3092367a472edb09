//! Apply latency and watch propagation, for the store benchmark (issue 24):
//! one operator applying a one-service weight change after another through
//! `--apply`, and one node-style watcher of the network on `--watch` (the
//! same control plane, or another replica of the same etcd). For each
//! change: how long the apply took to be acknowledged, and how long from
//! sending it until the watcher held the new revision. Prints one JSON
//! object with p50/p99/max of both, in milliseconds.
//!
//! `scripts/bench-etcd.sh` builds the scene and runs it.

use anyhow::{Context, bail};
use serde_json::json;
use std::time::{Duration, Instant};
use trellis_api::client::{Client, Credential, Trust};

struct Args {
    apply: String,
    watch: String,
    ca: String,
    token: String,
    changes: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        apply: String::new(),
        watch: String::new(),
        ca: String::new(),
        token: String::new(),
        changes: 200,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--apply" => a.apply = value()?,
            "--watch" => a.watch = value()?,
            "--ca-file" => a.ca = value()?,
            "--token-file" => a.token = value()?,
            "--changes" => a.changes = value()?.parse()?,
            f => bail!("unknown flag {f}"),
        }
    }
    if a.apply.is_empty() || a.watch.is_empty() || a.ca.is_empty() || a.token.is_empty() {
        bail!(
            "usage: apply_latency --apply URL --watch URL --ca-file F --token-file F [--changes N]"
        );
    }
    Ok(a)
}

fn doc(kind: &str, name: &str, spec: serde_json::Value) -> serde_json::Value {
    json!({"apiVersion": "trellis.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name}, "spec": spec})
}

/// The service `web`, forwarding `blue`% to blue and the rest to green.
fn web(blue: u32) -> serde_json::Value {
    doc(
        "Service",
        "web",
        json!({"serviceNetworks": ["shop"], "listeners": [{"name": "web", "protocol": "HTTP",
            "defaultAction": {"forward": [
                {"targetGroup": "blue", "weight": blue},
                {"targetGroup": "green", "weight": 100 - blue}]}}]}),
    )
}

/// p50, p99 and max of `v`, in milliseconds.
fn summary(mut v: Vec<Duration>) -> serde_json::Value {
    v.sort();
    let at = |q: f64| {
        let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
        (v[i].as_secs_f64() * 1e5).round() / 100.0
    };
    json!({"p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let ca = Trust::from_pem(&std::fs::read_to_string(&a.ca)?).map_err(anyhow::Error::msg)?;
    let token = std::fs::read_to_string(&a.token)?.trim().to_string();
    let client = |url: &str| {
        Client::new(
            url,
            ca.clone(),
            Credential::Token(token.clone()),
            Duration::from_secs(30),
        )
    };
    let (operator, watcher) = (client(&a.apply)?, client(&a.watch)?);
    let mut base = vec![
        doc("Network", "east", json!({})),
        doc("ServiceNetwork", "shop", json!({"networks": ["east"]})),
    ];
    for g in ["blue", "green"] {
        base.push(doc(
            "TargetGroup",
            g,
            json!({"network": "east", "port": 8080, "targets": [{"address": "10.0.0.1"}]}),
        ));
    }
    base.push(web(90));
    operator.apply(&base, false).await?;

    let (mut applied, mut propagated) = (Vec::new(), Vec::new());
    for i in 0..a.changes {
        // The watcher holds what the watched replica has now, and waits.
        let held = watcher
            .snapshot("east", None, Duration::ZERO)
            .await?
            .context("a snapshot")?
            .revision;
        let watch = {
            let w = watcher.clone();
            tokio::spawn(async move {
                loop {
                    match w
                        .snapshot("east", Some(held), Duration::from_secs(10))
                        .await
                    {
                        Ok(Some(s)) => return Ok::<_, anyhow::Error>((Instant::now(), s.revision)),
                        Ok(None) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
            })
        };
        // Let the watch reach the control plane before the change.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let blue = if i % 2 == 0 { 50 } else { 90 };
        let sent = Instant::now();
        let answer = operator.apply(&[web(blue)], false).await?;
        applied.push(sent.elapsed());
        let (seen_at, revision) = watch.await??;
        if revision < answer.revision {
            bail!(
                "the watcher got revision {revision}, older than the apply's {}",
                answer.revision
            );
        }
        propagated.push(seen_at.saturating_duration_since(sent));
    }
    println!(
        "{}",
        json!({"changes": a.changes, "apply": summary(applied), "watch_propagation": summary(propagated)})
    );
    Ok(())
}
