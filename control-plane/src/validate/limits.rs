//! How much of everything an operator may write: every free-text field and
//! every list has a maximum (docs/yaml-reference.md, "Limits"), checked at
//! apply, so no object can grow the store, the snapshots or a node's memory
//! without bound. The whole store has a cap of its own
//! (`--max-state-bytes`, checked in `state.rs`).

use super::Validator;
use trellis_api::resource::{Listener, Metadata, Spec};

pub const MAX_DESCRIPTION_BYTES: usize = 1024;
pub const MAX_LABELS: usize = 64;
pub const MAX_LABEL_KEY_BYTES: usize = 253;
pub const MAX_LABEL_VALUE_BYTES: usize = 256;
pub const MAX_GATEWAYS: usize = 16;
pub const MAX_GATEWAY_ADDRESS_BYTES: usize = 261;
pub const MAX_SERVICE_NETWORK_NETWORKS: usize = 1000;
pub const MAX_SERVICE_NETWORKS_PER_SERVICE: usize = 100;
pub const MAX_LISTENERS: usize = 32;
pub const MAX_CERTIFICATES: usize = 16;
pub const MAX_PEM_BYTES: usize = 64 << 10;
pub const MAX_CA_BYTES: usize = 256 << 10;
pub const MAX_MATCH_VALUE_BYTES: usize = 1024;
pub const MAX_METHOD_BYTES: usize = 32;
pub const MAX_ALIASES: usize = 64;
pub const MAX_TAGS: usize = 50;

impl Validator<'_> {
    pub(super) fn limits(&mut self, metadata: &Metadata, spec: &Spec) {
        if metadata.labels.len() > MAX_LABELS {
            self.too_many("metadata.labels", metadata.labels.len(), MAX_LABELS);
        }
        for (k, v) in &metadata.labels {
            if k.is_empty() || k.len() > MAX_LABEL_KEY_BYTES || v.len() > MAX_LABEL_VALUE_BYTES {
                self.problem(
                    format!("metadata.labels.{k}"),
                    format!(
                        "label keys are 1..={MAX_LABEL_KEY_BYTES} bytes, values at most {MAX_LABEL_VALUE_BYTES}"
                    ),
                );
            }
        }
        let description = match spec {
            Spec::Network(s) => &s.description,
            Spec::ServiceNetwork(s) => &s.description,
            Spec::Service(s) => &s.description,
            Spec::TargetGroup(s) => &s.description,
            Spec::Identity(s) => &s.description,
        };
        if let Some(d) = description {
            self.too_long("spec.description", d, MAX_DESCRIPTION_BYTES);
        }
        match spec {
            Spec::Network(s) => {
                if s.gateways.len() > MAX_GATEWAYS {
                    self.too_many("spec.gateways", s.gateways.len(), MAX_GATEWAYS);
                }
                for (i, g) in s.gateways.iter().enumerate() {
                    let path = format!("spec.gateways[{i}].address");
                    self.too_long(&path, &g.address, MAX_GATEWAY_ADDRESS_BYTES);
                }
            }
            Spec::ServiceNetwork(s) => {
                if s.networks.len() > MAX_SERVICE_NETWORK_NETWORKS {
                    let n = s.networks.len();
                    self.too_many("spec.networks", n, MAX_SERVICE_NETWORK_NETWORKS);
                }
            }
            Spec::Service(s) => {
                if s.service_networks.len() > MAX_SERVICE_NETWORKS_PER_SERVICE {
                    let n = s.service_networks.len();
                    self.too_many("spec.serviceNetworks", n, MAX_SERVICE_NETWORKS_PER_SERVICE);
                }
                if s.listeners.len() > MAX_LISTENERS {
                    self.too_many("spec.listeners", s.listeners.len(), MAX_LISTENERS);
                }
                for (i, l) in s.listeners.iter().enumerate() {
                    self.listener_limits(l, &format!("spec.listeners[{i}]"));
                }
            }
            Spec::TargetGroup(s) => {
                if let Some(ca) = s.tls.as_ref().and_then(|t| t.ca.as_ref()) {
                    self.too_long("spec.tls.ca", ca, MAX_CA_BYTES);
                }
            }
            Spec::Identity(s) => {
                if s.aliases.len() > MAX_ALIASES {
                    self.too_many("spec.aliases", s.aliases.len(), MAX_ALIASES);
                }
                if s.tags.len() > MAX_TAGS {
                    self.too_many("spec.tags", s.tags.len(), MAX_TAGS);
                }
            }
        }
    }

    fn listener_limits(&mut self, l: &Listener, path: &str) {
        let certificates = l.certificates();
        if certificates.len() > MAX_CERTIFICATES {
            let at = format!("{path}.tls.certificates");
            self.too_many(&at, certificates.len(), MAX_CERTIFICATES);
        }
        for (i, c) in certificates.iter().enumerate() {
            let cp = format!("{path}.tls.certificates[{i}]");
            if let Some(pem) = &c.certificate {
                self.too_long(&format!("{cp}.certificate"), pem, MAX_PEM_BYTES);
            }
            if let Some(key) = &c.private_key {
                self.too_long(&format!("{cp}.privateKey"), key.expose(), MAX_PEM_BYTES);
            }
        }
        for (i, r) in l.rules.iter().enumerate() {
            let mp = format!("{path}.rules[{i}].match");
            if let Some(m) = &r.matches.method {
                self.too_long(&format!("{mp}.method"), m, MAX_METHOD_BYTES);
            }
            for (j, h) in r.matches.headers.iter().enumerate() {
                let values = [&h.exact, &h.prefix, &h.contains, &h.regex];
                for v in values.into_iter().flatten() {
                    let at = format!("{mp}.headers[{j}]");
                    self.too_long(&at, v, MAX_MATCH_VALUE_BYTES);
                }
            }
        }
    }

    pub(super) fn too_many(&mut self, path: &str, n: usize, max: usize) {
        self.problem(path, format!("{n} entries, at most {max} allowed"));
    }

    fn too_long(&mut self, path: &str, text: &str, max: usize) {
        if text.len() > max {
            self.problem(path, format!("{} bytes, at most {max} allowed", text.len()));
        }
    }
}
