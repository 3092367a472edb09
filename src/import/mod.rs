//! `trellis import`: other systems' routing documents as Trellis YAML. The
//! Kubernetes Gateway API (and the AWS Gateway API Controller's policies)
//! and VPC Lattice's own API output. Whatever a source says that Trellis
//! cannot express is listed with where it was written ([`Notes`]), never
//! dropped silently.

pub mod gateway_api;
pub mod lattice;

use serde_json::{Value, json};
use std::collections::BTreeMap;
use trellis_api::manifest::{Document, Located};

/// What an import could not carry over, each where the source said it.
#[derive(Default)]
pub struct Notes(pub Vec<Located>);

impl Notes {
    /// Notes `message` at `path` of `doc`, once (a rule split in two is
    /// read twice).
    pub fn at(&mut self, doc: &Document, path: &str, message: impl Into<String>) {
        let note = doc.error(path, message);
        let text = note.to_string();
        if !self.0.iter().any(|n| n.to_string() == text) {
            self.0.push(note);
        }
    }
}

/// Trellis documents by (kind, name), in the order first made; a later
/// document of the same name is merged field by field (`spec` keys).
#[derive(Default)]
pub struct Out {
    order: Vec<(String, String)>,
    docs: BTreeMap<(String, String), Value>,
}

impl Out {
    /// The document `kind`/`name`, made with an empty spec when new.
    pub fn doc(&mut self, kind: &str, name: &str) -> &mut Value {
        let key = (kind.to_string(), name.to_string());
        if !self.docs.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.docs.entry(key).or_insert_with(|| {
            json!({
                "apiVersion": trellis_api::API_VERSION,
                "kind": kind,
                "metadata": {"name": name},
                "spec": {},
            })
        })
    }

    pub fn spec(&mut self, kind: &str, name: &str) -> &mut serde_json::Map<String, Value> {
        match self.doc(kind, name).get_mut("spec") {
            Some(Value::Object(m)) => m,
            // `doc` always makes `spec` an object.
            _ => unreachable!("spec is an object"),
        }
    }

    pub fn has(&self, kind: &str, name: &str) -> bool {
        self.docs
            .contains_key(&(kind.to_string(), name.to_string()))
    }

    pub fn into_values(mut self) -> Vec<Value> {
        self.order
            .iter()
            .filter_map(|k| self.docs.remove(k))
            .collect()
    }
}

/// A Trellis name (a DNS label) from a Kubernetes name and namespace:
/// `name`, or `name-namespace` outside `default` (as the AWS controller
/// names Lattice services), dots made dashes, at most 63 bytes.
pub fn name(name: &str, namespace: Option<&str>) -> String {
    let full = match namespace {
        Some(ns) if ns != "default" && !ns.is_empty() => format!("{name}-{ns}"),
        _ => name.to_string(),
    };
    let mut out: String = full
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    out.truncate(63);
    out.trim_matches('-').to_string()
}

/// A Gateway API duration (GEP-2257: `1h`, `10s`, `500ms`, `1m30s`) in
/// milliseconds.
pub fn duration_ms(s: &str) -> Option<u64> {
    let mut total = 0u64;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (1, 2)
        } else if rest.starts_with('s') {
            (1_000, 1)
        } else if rest.starts_with('m') {
            (60_000, 1)
        } else if rest.starts_with('h') {
            (3_600_000, 1)
        } else {
            return None;
        };
        total += n * unit;
        rest = &rest[len..];
    }
    Some(total)
}

/// `v[key]` as a string.
pub fn str_at<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// `v[key]` as an array (empty when absent).
pub fn list<'v>(v: &'v Value, key: &str) -> &'v [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_durations() {
        assert_eq!(name("orders", None), "orders");
        assert_eq!(name("orders", Some("default")), "orders");
        assert_eq!(name("orders.v1", Some("shop")), "orders-v1-shop");
        assert_eq!(name(&"x".repeat(80), None).len(), 63);
        assert_eq!(duration_ms("10s"), Some(10_000));
        assert_eq!(duration_ms("500ms"), Some(500));
        assert_eq!(duration_ms("1m30s"), Some(90_000));
        assert_eq!(duration_ms("1h"), Some(3_600_000));
        assert_eq!(duration_ms("10"), None);
        assert_eq!(duration_ms("1.5s"), None);
        assert_eq!(duration_ms(""), None);
    }
}
