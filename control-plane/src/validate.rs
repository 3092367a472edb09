//! Validation of a whole candidate state, before anything is stored.
//!
//! Every object is checked on its own (names, ranges, formats, policies) and
//! against the others (references exist, custom domain names are unique).
//! Each problem names the object and the field path; the apply maps them to
//! the submitted documents. All problems are returned, not just the first.

use crate::state::Objects;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use trellis_api::Kind;
use trellis_api::policy::PolicyDocument;
use trellis_api::resource::*;

pub const MAX_PRIORITY: u32 = 100;
pub const MAX_WEIGHT: u32 = 999;
pub const MAX_FORWARD_TARGET_GROUPS: usize = 10;
pub const MAX_HEADER_MATCHES: usize = 5;
/// Header changes in one `requestHeaders` or `responseHeaders`.
pub const MAX_HEADER_CHANGES: usize = 16;
pub const MAX_TARGETS: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: Kind,
    pub name: String,
    pub path: String,
    pub message: String,
}

/// Checks everything. `zone` is the service DNS zone (custom domain names
/// must not fall inside it, or they would shadow generated names).
pub fn validate(objects: &Objects, zone: &str) -> Vec<Problem> {
    let mut v = Validator {
        objects,
        zone,
        problems: Vec::new(),
        kind: Kind::Network,
        name: "",
    };
    // Custom domain name -> (created revision, service): the oldest keeps it.
    let mut domains: BTreeMap<String, Vec<(u64, &str)>> = BTreeMap::new();
    for ((kind, name), obj) in objects {
        v.kind = *kind;
        v.name = name;
        v.check_name("metadata.name", name);
        v.limits(&obj.resource.metadata, &obj.resource.spec);
        match &obj.resource.spec {
            Spec::Network(s) => v.network(s),
            Spec::ServiceNetwork(s) => v.service_network(s),
            Spec::Service(s) => {
                v.service(s);
                if let Some(d) = &s.custom_domain_name {
                    let d = d.trim_end_matches('.').to_ascii_lowercase();
                    domains
                        .entry(d)
                        .or_default()
                        .push((obj.status.created_revision, name));
                }
            }
            Spec::TargetGroup(s) => v.target_group(s),
            Spec::Identity(s) => v.identity(s),
        }
    }
    v.workload_conflicts();
    v.kind = Kind::Service;
    for (domain, mut owners) in domains {
        owners.sort();
        let (_, first) = owners[0];
        for (_, name) in &owners[1..] {
            v.name = name;
            v.problem(
                "spec.customDomainName",
                format!("\"{domain}\" is already the custom domain name of service \"{first}\""),
            );
        }
    }
    v.problems
}

struct Validator<'a> {
    objects: &'a Objects,
    zone: &'a str,
    problems: Vec<Problem>,
    kind: Kind,
    name: &'a str,
}

impl Validator<'_> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem {
            kind: self.kind,
            name: self.name.to_string(),
            path: path.into(),
            message: message.into(),
        });
    }

    fn exists(&self, kind: Kind, name: &str) -> bool {
        self.objects.contains_key(&(kind, name.to_string()))
    }

    fn reference(&mut self, path: String, kind: Kind, name: &str) {
        if !self.exists(kind, name) {
            self.problem(path, format!("{kind} \"{name}\" does not exist"));
        }
    }

    /// Names are DNS labels: they become part of DNS names and API paths.
    fn check_name(&mut self, path: &str, name: &str) {
        if let Err(why) = dns_label(name) {
            self.problem(path, format!("\"{name}\" is not a valid name: {why}"));
        }
    }

    fn unique<'s>(&mut self, path: &str, items: impl Iterator<Item = &'s str>, what: &str) {
        let mut seen = BTreeSet::new();
        for (i, item) in items.enumerate() {
            if !seen.insert(item) {
                self.problem(
                    format!("{path}[{i}]"),
                    format!("{what} \"{item}\" is listed twice"),
                );
            }
        }
    }

    fn network(&mut self, s: &NetworkSpec) {
        let mut seen = BTreeSet::new();
        for (i, g) in s.gateways.iter().enumerate() {
            let path = format!("spec.gateways[{i}].address");
            if let Err(why) = host_port(&g.address) {
                self.problem(path, format!("\"{}\" is not HOST:PORT: {why}", g.address));
            } else if !seen.insert(g.address.as_str()) {
                self.problem(path, format!("gateway \"{}\" is listed twice", g.address));
            }
        }
    }

    fn service_network(&mut self, s: &ServiceNetworkSpec) {
        for (i, n) in s.networks.iter().enumerate() {
            self.reference(format!("spec.networks[{i}]"), Kind::Network, n);
        }
        self.unique(
            "spec.networks",
            s.networks.iter().map(String::as_str),
            "network",
        );
        self.auth(s.auth_type, s.auth_policy.as_ref());
    }

    fn auth(&mut self, auth_type: AuthType, policy: Option<&serde_json::Value>) {
        let Some(policy) = policy else { return };
        if auth_type == AuthType::None {
            self.problem(
                "spec.authPolicy",
                "an auth policy is only enforced with authType SIGV4; set authType: SIGV4 or remove the policy",
            );
        }
        if let Err(e) = PolicyDocument::parse(policy) {
            let path = if e.path.is_empty() {
                "spec.authPolicy".to_string()
            } else {
                format!("spec.authPolicy.{}", e.path)
            };
            self.problem(path, e.message);
        }
    }

    fn service(&mut self, s: &ServiceSpec) {
        for (i, n) in s.service_networks.iter().enumerate() {
            self.reference(
                format!("spec.serviceNetworks[{i}]"),
                Kind::ServiceNetwork,
                n,
            );
        }
        self.unique(
            "spec.serviceNetworks",
            s.service_networks.iter().map(String::as_str),
            "service network",
        );
        if let Some(d) = &s.custom_domain_name {
            if let Err(why) = domain_name(d) {
                self.problem(
                    "spec.customDomainName",
                    format!("\"{d}\" is not a valid domain name: {why}"),
                );
            } else if in_zone(d, self.zone) {
                self.problem(
                    "spec.customDomainName",
                    format!(
                        "\"{d}\" is inside the service zone {}; pick a name outside it",
                        self.zone
                    ),
                );
            }
        }
        self.auth(s.auth_type, s.auth_policy.as_ref());
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        let mut ports: BTreeMap<u16, &str> = BTreeMap::new();
        for (i, l) in s.listeners.iter().enumerate() {
            let path = format!("spec.listeners[{i}]");
            self.check_name(&format!("{path}.name"), &l.name);
            if names.insert(&l.name, i).is_some() {
                self.problem(
                    format!("{path}.name"),
                    format!("listener \"{}\" is declared twice", l.name),
                );
            }
            match l.port {
                Some(0) => self.problem(format!("{path}.port"), "port must be 1..=65535"),
                None if l.protocol == ListenerProtocol::Tcp => {
                    self.problem(format!("{path}.port"), "a TCP listener needs a port")
                }
                _ => {}
            }
            let port = l.effective_port();
            if port != 0 {
                if let Some(other) = ports.insert(port, &l.name) {
                    self.problem(
                        format!("{path}.port"),
                        format!("port {port} is already used by listener \"{other}\""),
                    );
                }
            }
            self.listener(l, &path);
            self.listener_tls(l, s.custom_domain_name.as_deref(), &path);
        }
    }

    /// HTTPS listeners need certificates whose keys match, unexpired, one
    /// of them for the custom domain name; other listeners take none.
    fn listener_tls(&mut self, l: &Listener, custom_domain: Option<&str>, path: &str) {
        let path = format!("{path}.tls");
        let certs = l.certificates();
        if l.protocol != ListenerProtocol::Https {
            if l.tls.is_some() {
                self.problem(path, "only HTTPS listeners take certificates");
            }
            return;
        }
        if certs.is_empty() {
            self.problem(
                format!("{path}.certificates"),
                "an HTTPS listener needs at least one certificate (certificateFile and keyFile)",
            );
            return;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let mut names = Vec::new();
        for (i, c) in certs.iter().enumerate() {
            let cp = format!("{path}.certificates[{i}]");
            match crate::tls::check(c, now) {
                Ok(leaf_names) => names.extend(leaf_names),
                Err((field, message)) => self.problem(format!("{cp}.{field}"), message),
            }
        }
        if let Some(domain) = custom_domain {
            if !names.is_empty() && !trellis_api::tls::covers(&names, domain) {
                self.problem(
                    format!("{path}.certificates"),
                    format!("no certificate covers the custom domain name {domain}"),
                );
            }
        }
    }

    fn listener(&mut self, l: &Listener, path: &str) {
        let t = &l.timeouts;
        for (field, value, hi) in [
            ("headerReadSeconds", t.header_read_seconds, 300),
            ("connectMs", t.connect_ms, 60_000),
            ("requestSeconds", t.request_seconds, 3600),
            ("idleSeconds", t.idle_seconds, 86_400),
        ] {
            if !(1..=hi).contains(&value) {
                self.problem(
                    format!("{path}.timeouts.{field}"),
                    format!("{value} is out of range 1..={hi}"),
                );
            }
        }
        self.action(
            l.protocol,
            &l.default_action,
            &format!("{path}.defaultAction"),
            None,
        );
        if !l.protocol.is_http() && l.path_normalization != PathNormalization::default() {
            self.problem(
                format!("{path}.pathNormalization"),
                "only HTTP and HTTPS listeners read request paths",
            );
        }
        if l.protocol == ListenerProtocol::Tcp && !l.rules.is_empty() {
            self.problem(
                format!("{path}.rules"),
                "TCP listeners route by their default action only; rules need HTTP, HTTPS or TLS_PASSTHROUGH",
            );
            return;
        }
        if l.protocol == ListenerProtocol::TlsPassthrough {
            // Only the ClientHello's server name is seen without terminating.
            for (i, r) in l.rules.iter().enumerate() {
                let m = &r.matches;
                if m.path.is_some()
                    || m.grpc.is_some()
                    || m.method.is_some()
                    || !m.headers.is_empty()
                    || !m.query.is_empty()
                    || m.host.is_none()
                {
                    self.problem(
                        format!("{path}.rules[{i}].match"),
                        "TLS_PASSTHROUGH rules match the server name (SNI) only: give host, and nothing else",
                    );
                }
            }
        }
        let mut priorities: BTreeMap<u32, &str> = BTreeMap::new();
        let mut names = BTreeSet::new();
        for (i, r) in l.rules.iter().enumerate() {
            let rp = format!("{path}.rules[{i}]");
            self.check_name(&format!("{rp}.name"), &r.name);
            if !names.insert(r.name.as_str()) {
                self.problem(
                    format!("{rp}.name"),
                    format!("rule \"{}\" is declared twice", r.name),
                );
            }
            if !(1..=MAX_PRIORITY).contains(&r.priority) {
                self.problem(
                    format!("{rp}.priority"),
                    format!("{} is out of range 1..={MAX_PRIORITY}", r.priority),
                );
            } else if let Some(other) = priorities.insert(r.priority, &r.name) {
                self.problem(
                    format!("{rp}.priority"),
                    format!("{} is already used by rule \"{other}\"", r.priority),
                );
            }
            self.rule_match(&r.matches, &format!("{rp}.match"));
            let prefix = r.matches.path.as_ref().and_then(|p| p.prefix.as_deref());
            self.action(l.protocol, &r.action, &format!("{rp}.action"), prefix);
        }
    }

    fn rule_match(&mut self, m: &RuleMatch, path: &str) {
        if m.is_empty() {
            self.problem(
                path,
                "a match needs at least one of path, grpc, method, headers, query, host",
            );
        }
        if let Some(g) = &m.grpc {
            self.grpc_match(g, m.path.is_some(), &format!("{path}.grpc"));
        }
        if let Some(p) = &m.path {
            let pp = format!("{path}.path");
            match (&p.exact, &p.prefix, &p.regex) {
                (Some(v), None, None) | (None, Some(v), None) => {
                    if !v.starts_with('/') || v.len() > 2048 {
                        self.problem(
                            pp,
                            format!("\"{v}\" must start with / and be at most 2048 bytes"),
                        );
                    }
                }
                (None, None, Some(_)) => {
                    if let Some(Err(why)) = p.compiled_regex() {
                        self.problem(format!("{pp}.regex"), format!("invalid regex: {why}"));
                    }
                }
                _ => self.problem(pp, "set exactly one of exact, prefix, regex"),
            }
        }
        if let Some(method) = &m.method {
            if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
                self.problem(
                    format!("{path}.method"),
                    format!("\"{method}\" is not an HTTP method such as GET"),
                );
            }
        }
        if m.headers.len() > MAX_HEADER_MATCHES {
            self.problem(
                format!("{path}.headers"),
                format!(
                    "{} header matches, at most {MAX_HEADER_MATCHES} allowed",
                    m.headers.len()
                ),
            );
        }
        for (i, h) in m.headers.iter().enumerate() {
            let hp = format!("{path}.headers[{i}]");
            if http::HeaderName::from_bytes(h.name.as_bytes()).is_err() {
                self.problem(
                    format!("{hp}.name"),
                    format!("\"{}\" is not a valid header name", h.name),
                );
            }
            let set = [&h.exact, &h.prefix, &h.contains, &h.regex]
                .iter()
                .filter(|v| v.is_some())
                .count()
                + usize::from(h.present.is_some());
            if set != 1 {
                self.problem(
                    hp.clone(),
                    "set exactly one of exact, prefix, contains, regex, present",
                );
            }
            if let Some(Err(why)) = h.compiled_regex() {
                self.problem(format!("{hp}.regex"), format!("invalid regex: {why}"));
            }
        }
        if m.query.len() > MAX_HEADER_MATCHES {
            self.problem(
                format!("{path}.query"),
                format!(
                    "{} query matches, at most {MAX_HEADER_MATCHES} allowed",
                    m.query.len()
                ),
            );
        }
        let mut names = BTreeSet::new();
        for (i, q) in m.query.iter().enumerate() {
            let qp = format!("{path}.query[{i}]");
            if q.name.is_empty() || q.name.len() > 256 {
                self.problem(
                    format!("{qp}.name"),
                    "a query parameter name is 1 to 256 bytes",
                );
            } else if !names.insert(q.name.as_str()) {
                // Two conditions on one parameter read as "and" by some and
                // "or" by others: refused rather than guessed.
                self.problem(
                    format!("{qp}.name"),
                    format!("parameter \"{}\" has a condition already", q.name),
                );
            }
            let set = usize::from(q.exact.is_some())
                + usize::from(q.regex.is_some())
                + usize::from(q.present.is_some());
            if set != 1 {
                self.problem(qp.clone(), "set exactly one of exact, regex, present");
            }
            if let Some(Err(why)) = q.compiled_regex() {
                self.problem(format!("{qp}.regex"), format!("invalid regex: {why}"));
            }
        }
        if let Some(host) = &m.host {
            let name = host.strip_prefix("*.").unwrap_or(host);
            if let Err(why) = domain_name(name) {
                self.problem(
                    format!("{path}.host"),
                    format!("\"{host}\" is not a host name: {why}"),
                );
            }
        }
    }

    /// `matched` is the path prefix the rule matches, if it does.
    fn action(
        &mut self,
        protocol: ListenerProtocol,
        a: &Action,
        path: &str,
        matched: Option<&str>,
    ) {
        self.route_policy(protocol, a, path);
        if let Some(c) = &a.cors {
            let cp = format!("{path}.cors");
            if a.forward.is_none() || !protocol.is_http() {
                self.problem(&cp, "cors goes with forward, on HTTP and HTTPS listeners");
            } else {
                self.cors(c, &cp);
            }
        }
        if let Some(rw) = &a.rewrite {
            let rp = format!("{path}.rewrite");
            if a.forward.is_none() || !protocol.is_http() {
                self.problem(
                    &rp,
                    "a rewrite goes with forward, on HTTP and HTTPS listeners",
                );
            } else {
                if let Some(host) = &rw.hostname {
                    if host.parse::<IpAddr>().is_err() && domain_name(host).is_err() {
                        self.problem(
                            format!("{rp}.hostname"),
                            format!("\"{host}\" is not a host name or address"),
                        );
                    }
                }
                if let Some(p) = &rw.path {
                    self.path_replace(p, &format!("{rp}.path"), matched);
                }
                if rw.hostname.is_none() && rw.path.is_none() {
                    self.problem(rp, "a rewrite needs hostname or path");
                }
            }
        }
        for (field, m) in [
            ("requestHeaders", &a.request_headers),
            ("responseHeaders", &a.response_headers),
        ] {
            let Some(m) = m else { continue };
            let mp = format!("{path}.{field}");
            if a.forward.is_none() || !protocol.is_http() {
                self.problem(
                    &mp,
                    "header changes go with forward, on HTTP and HTTPS listeners",
                );
                continue;
            }
            self.header_modifier(m, &mp, field == "requestHeaders");
        }
        match (&a.forward, &a.fixed_response, &a.redirect) {
            (None, None, Some(r)) => {
                self.redirect(protocol, r, &format!("{path}.redirect"), matched)
            }
            (Some(fwd), None, None) => self.forward(protocol, fwd, &format!("{path}.forward")),
            (None, Some(fixed), None) => {
                if !protocol.is_http() {
                    self.problem(
                        format!("{path}.fixedResponse"),
                        "fixed responses need an HTTP or HTTPS listener",
                    );
                } else if !(200..=599).contains(&fixed.status_code) {
                    self.problem(
                        format!("{path}.fixedResponse.statusCode"),
                        format!("{} is out of range 200..=599", fixed.status_code),
                    );
                }
            }
            _ => self.problem(path, "set exactly one of forward, fixedResponse, redirect"),
        }
    }

    fn cors(&mut self, c: &Cors, path: &str) {
        if c.allow_origins.is_empty() || c.allow_origins.len() > MAX_HEADER_CHANGES {
            self.problem(
                format!("{path}.allowOrigins"),
                format!("1..={MAX_HEADER_CHANGES} origins"),
            );
        }
        for (i, o) in c.allow_origins.iter().enumerate() {
            if o == "*" {
                if c.allow_credentials {
                    // Browsers refuse credentials with `*`: say so now.
                    self.problem(
                        format!("{path}.allowOrigins[{i}]"),
                        "\"*\" cannot go with allowCredentials: name the origins",
                    );
                }
                continue;
            }
            let host = o
                .strip_prefix("https://")
                .or_else(|| o.strip_prefix("http://"))
                .map(|rest| {
                    rest.rsplit_once(':').map_or(rest, |(h, port)| {
                        if port.parse::<u16>().is_ok() { h } else { rest }
                    })
                });
            let ok = host.is_some_and(|h| {
                let name = h.strip_prefix("*.").unwrap_or(h);
                name.parse::<IpAddr>().is_ok() || domain_name(name).is_ok() || name == "localhost"
            });
            if !ok {
                self.problem(
                    format!("{path}.allowOrigins[{i}]"),
                    format!("\"{o}\" is not *, nor scheme://host[:port] with an optional *. before the host"),
                );
            }
        }
        for (i, m) in c.allow_methods.iter().enumerate() {
            if m != "*" && (m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())) {
                self.problem(
                    format!("{path}.allowMethods[{i}]"),
                    format!("\"{m}\" is not an HTTP method such as GET"),
                );
            }
        }
        for (field, list) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (i, h) in list.iter().enumerate() {
                if h != "*" && http::HeaderName::from_bytes(h.as_bytes()).is_err() {
                    self.problem(
                        format!("{path}.{field}[{i}]"),
                        format!("\"{h}\" is not a valid header name"),
                    );
                }
            }
        }
        if c.max_age_seconds.is_some_and(|s| s > 86_400) {
            self.problem(format!("{path}.maxAgeSeconds"), "at most 86400 (a day)");
        }
    }

    fn path_replace(&mut self, p: &PathReplace, path: &str, matched: Option<&str>) {
        let value = match (&p.full, &p.prefix) {
            (Some(v), None) => v,
            (None, Some(v)) => {
                if matched.is_none() {
                    self.problem(
                        format!("{path}.prefix"),
                        "replacing the matched prefix needs a rule matching a path prefix",
                    );
                }
                v
            }
            _ => {
                self.problem(path, "set exactly one of full, prefix");
                return;
            }
        };
        if !value.starts_with('/')
            || value.len() > 2048
            || value.contains(['?', '#'])
            || !is_visible(value)
        {
            self.problem(
                path,
                format!("\"{value}\" must start with /, be visible ASCII without ? or #, at most 2048 bytes"),
            );
        }
    }

    fn redirect(
        &mut self,
        protocol: ListenerProtocol,
        r: &Redirect,
        path: &str,
        matched: Option<&str>,
    ) {
        if !protocol.is_http() {
            self.problem(path, "redirects need an HTTP or HTTPS listener");
            return;
        }
        if !matches!(r.status_code, 301 | 302 | 303 | 307 | 308) {
            self.problem(
                format!("{path}.statusCode"),
                format!("{} is not 301, 302, 303, 307 or 308", r.status_code),
            );
        }
        if let Some(scheme) = &r.scheme {
            if scheme != "http" && scheme != "https" {
                self.problem(
                    format!("{path}.scheme"),
                    format!("\"{scheme}\" is not http or https"),
                );
            }
        }
        if let Some(host) = &r.hostname {
            if host.parse::<IpAddr>().is_err() {
                if let Err(why) = domain_name(host) {
                    self.problem(
                        format!("{path}.hostname"),
                        format!("\"{host}\" is not a host name: {why}"),
                    );
                }
            }
        }
        if r.port == Some(0) {
            self.problem(format!("{path}.port"), "port must be 1..=65535");
        }
        if let Some(p) = &r.path {
            self.path_replace(p, &format!("{path}.path"), matched);
        }
    }

    fn header_modifier(&mut self, m: &HeaderModifier, path: &str, request: bool) {
        let n = m.remove.len() + m.set.len() + m.add.len();
        if n == 0 || n > MAX_HEADER_CHANGES {
            self.problem(path, format!("1..={MAX_HEADER_CHANGES} header changes"));
        }
        let mut names = BTreeSet::new();
        let named = m
            .remove
            .iter()
            .enumerate()
            .map(|(i, name)| (format!("{path}.remove[{i}]"), name, None))
            .chain(
                m.set
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (format!("{path}.set[{i}].name"), &h.name, Some(&h.value))),
            )
            .chain(
                m.add
                    .iter()
                    .enumerate()
                    .map(|(i, h)| (format!("{path}.add[{i}].name"), &h.name, Some(&h.value))),
            );
        for (at, name, value) in named {
            let lower = name.to_ascii_lowercase();
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                self.problem(at, format!("\"{name}\" is not a valid header name"));
                continue;
            }
            // Trellis's own headers and the message's framing are the
            // proxy's: a rule changing them would forge what targets trust
            // or desynchronise the connection.
            let reserved = ["x-trellis-", "x-amzn-lattice-"]
                .iter()
                .any(|p| lower.starts_with(p));
            let framing = [
                "host",
                "content-length",
                "transfer-encoding",
                "connection",
                "upgrade",
                "keep-alive",
                "te",
                "trailer",
                "proxy-connection",
            ]
            .contains(&lower.as_str());
            if reserved || framing {
                self.problem(
                    at,
                    format!(
                        "{} header {name} is the proxy's to set",
                        if request { "request" } else { "response" }
                    ),
                );
                continue;
            }
            if !names.insert(lower) {
                // remove-then-set of one name reads two ways.
                self.problem(at, format!("header {name} is changed twice"));
                continue;
            }
            if let Some(v) = value {
                if v.len() > 4096 || http::HeaderValue::from_str(v).is_err() {
                    self.problem(
                        at.replace(".name", ".value"),
                        "a header value is visible ASCII, at most 4096 bytes",
                    );
                }
            }
        }
    }

    fn forward(&mut self, protocol: ListenerProtocol, fwd: &[WeightedTargetGroup], path: &str) {
        if fwd.is_empty() || fwd.len() > MAX_FORWARD_TARGET_GROUPS {
            self.problem(
                path,
                format!("forward to 1..={MAX_FORWARD_TARGET_GROUPS} target groups"),
            );
            return;
        }
        if fwd.iter().all(|w| w.weight == 0) {
            self.problem(
                path,
                "all weights are 0; at least one target group must get traffic",
            );
        }
        let mut seen = BTreeSet::new();
        for (i, w) in fwd.iter().enumerate() {
            let wp = format!("{path}[{i}]");
            if w.weight > MAX_WEIGHT {
                self.problem(
                    format!("{wp}.weight"),
                    format!("{} is out of range 0..={MAX_WEIGHT}", w.weight),
                );
            }
            if !seen.insert(w.target_group.as_str()) {
                self.problem(
                    format!("{wp}.targetGroup"),
                    format!("target group \"{}\" is listed twice", w.target_group),
                );
            }
            let key = (Kind::TargetGroup, w.target_group.clone());
            let Some(tg) = self.objects.get(&key) else {
                self.reference(
                    format!("{wp}.targetGroup"),
                    Kind::TargetGroup,
                    &w.target_group,
                );
                continue;
            };
            let Spec::TargetGroup(tg) = &tg.resource.spec else {
                continue;
            };
            let fits = match protocol {
                ListenerProtocol::Http | ListenerProtocol::Https => {
                    tg.protocol != TargetProtocol::Tcp
                }
                ListenerProtocol::Tcp | ListenerProtocol::TlsPassthrough => {
                    tg.protocol == TargetProtocol::Tcp
                }
            };
            if !fits {
                self.problem(
                    format!("{wp}.targetGroup"),
                    format!(
                        "target group \"{}\" speaks {}, which this listener cannot forward to",
                        w.target_group,
                        tg.protocol.as_str()
                    ),
                );
            }
        }
    }

    fn target_group(&mut self, s: &TargetGroupSpec) {
        self.reference("spec.network".into(), Kind::Network, &s.network);
        match s.port {
            Some(0) => self.problem("spec.port", "port must be 1..=65535"),
            None if s.protocol == TargetProtocol::Tcp => {
                self.problem("spec.port", "a TCP target group needs a port")
            }
            _ => {}
        }
        if s.drain_seconds > 3600 {
            self.problem(
                "spec.drainSeconds",
                format!("{} is out of range 0..=3600", s.drain_seconds),
            );
        }
        if let Some(o) = &s.outlier_detection {
            self.outlier_detection(o);
        }
        let hc = &s.health_check;
        let ranges = [
            ("intervalSeconds", hc.interval_seconds, 1, 300),
            ("timeoutSeconds", hc.timeout_seconds, 1, 120),
            ("healthyThreshold", hc.healthy_threshold, 2, 10),
            ("unhealthyThreshold", hc.unhealthy_threshold, 2, 10),
        ];
        for (field, value, lo, hi) in ranges {
            if !(lo..=hi).contains(&value) {
                self.problem(
                    format!("spec.healthCheck.{field}"),
                    format!("{value} is out of range {lo}..={hi}"),
                );
            }
        }
        if hc.timeout_seconds > hc.interval_seconds {
            self.problem(
                "spec.healthCheck.timeoutSeconds",
                format!(
                    "{} must not exceed intervalSeconds ({})",
                    hc.timeout_seconds, hc.interval_seconds
                ),
            );
        }
        if !hc.path.starts_with('/') || hc.path.len() > 2048 {
            self.problem(
                "spec.healthCheck.path",
                format!(
                    "\"{}\" must start with / and be at most 2048 bytes",
                    hc.path
                ),
            );
        }
        if hc.port == Some(0) {
            self.problem("spec.healthCheck.port", "port must be 1..=65535");
        }
        if let Err(why) = status_matcher(&hc.matcher.http_code) {
            self.problem("spec.healthCheck.matcher.httpCode", why);
        }
        if s.targets.len() > MAX_TARGETS {
            self.problem(
                "spec.targets",
                format!("{} targets, at most {MAX_TARGETS} allowed", s.targets.len()),
            );
        }
        self.target_tls(s);
        let mut seen = BTreeSet::new();
        for (i, t) in s.targets.iter().enumerate() {
            let tp = format!("spec.targets[{i}]");
            match t.address.parse::<IpAddr>() {
                Err(_) => self.problem(
                    format!("{tp}.address"),
                    format!("\"{}\" is not an IP address", t.address),
                ),
                Ok(ip) if ip.is_unspecified() || ip.is_multicast() => self.problem(
                    format!("{tp}.address"),
                    format!("{ip} cannot be a target (unspecified or multicast)"),
                ),
                Ok(ip) => {
                    let port = t.port.unwrap_or_else(|| s.effective_port());
                    if t.port == Some(0) {
                        self.problem(format!("{tp}.port"), "port must be 1..=65535");
                    } else if !seen.insert((ip, port)) {
                        self.problem(
                            tp,
                            format!("target {} is listed twice", SocketAddr::new(ip, port)),
                        );
                    }
                }
            }
        }
    }

    /// HTTPS groups may name their targets' CA and server name; no other
    /// group speaks TLS to its targets.
    fn target_tls(&mut self, s: &TargetGroupSpec) {
        if s.protocol != TargetProtocol::Https {
            if s.tls.is_some() {
                self.problem("spec.tls", "only HTTPS target groups speak TLS to targets");
            }
            if s.health_check.protocol == Some(HealthCheckProtocol::Https) {
                self.problem(
                    "spec.healthCheck.protocol",
                    "HTTPS health checks need an HTTPS target group (its tls settings verify the target)",
                );
            }
            return;
        }
        let Some(tls) = &s.tls else { return };
        if let Some(name) = &tls.server_name {
            if rustls_pki_types::ServerName::try_from(name.as_str()).is_err() {
                self.problem(
                    "spec.tls.serverName",
                    format!("\"{name}\" is not a DNS name or an IP address"),
                );
            }
        }
        if tls.ca_file.is_some() {
            self.problem(
                "spec.tls.caFile",
                "files are read by `trellis apply`; the API takes the PEM text as ca",
            );
        } else if let Some(ca) = &tls.ca {
            if let Err(e) = crate::tls::check_ca(ca) {
                self.problem("spec.tls.ca", e);
            }
        }
    }

    fn identity(&mut self, s: &IdentitySpec) {
        for (i, a) in s.aliases.iter().enumerate() {
            if a.is_empty() || a.len() > 2048 || a.contains(char::is_whitespace) {
                self.problem(
                    format!("spec.aliases[{i}]"),
                    "an alias is a principal name such as an IAM role ARN",
                );
            }
        }
        for (k, v) in &s.tags {
            if k.is_empty() || k.len() > 128 || v.len() > 256 {
                self.problem(
                    format!("spec.tags.{k}"),
                    "tag keys are 1..=128 bytes, values at most 256",
                );
            }
        }
        for (i, w) in s.workloads.iter().enumerate() {
            self.reference(
                format!("spec.workloads[{i}].network"),
                Kind::Network,
                &w.network,
            );
            if let Err(why) = w.compiled() {
                self.problem(format!("spec.workloads[{i}]"), why);
            }
        }
    }

    /// Two identities whose selectors could both select one workload of a
    /// network: refused, naming both, rather than one picked at run time.
    fn workload_conflicts(&mut self) {
        let mut all = Vec::new();
        for ((kind, name), obj) in self.objects {
            if let (Kind::Identity, Spec::Identity(s)) = (kind, &obj.resource.spec) {
                for (i, w) in s.workloads.iter().enumerate() {
                    if let Ok(re) = w.compiled() {
                        all.push((name.as_str(), i, w, re));
                    }
                }
            }
        }
        for (a, (name_a, i, wa, re_a)) in all.iter().enumerate() {
            for (name_b, j, wb, re_b) in &all[a + 1..] {
                if name_a == name_b || wa.network != wb.network {
                    continue;
                }
                if re_a.is_match(&wb.example()) || re_b.is_match(&wa.example()) {
                    self.kind = Kind::Identity;
                    self.name = name_b;
                    self.problem(
                        format!("spec.workloads[{j}]"),
                        format!(
                            "selects workloads of network \"{}\" that identity \"{name_a}\" (spec.workloads[{i}]) selects too: one workload, two identities",
                            wb.network
                        ),
                    );
                }
            }
        }
    }
}

/// RFC 1123 label, lowercase: `a-z`, `0-9`, `-`, 1..=63 bytes, no leading or
/// trailing hyphen.
pub fn dns_label(s: &str) -> Result<(), &'static str> {
    if s.is_empty() || s.len() > 63 {
        return Err("must be 1 to 63 characters");
    }
    if !s
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("use lowercase letters, digits and '-'");
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err("must start and end with a letter or digit");
    }
    Ok(())
}

/// A fully qualified name of at least two labels, with an optional trailing dot.
fn is_visible(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_graphic())
}

pub fn domain_name(s: &str) -> Result<(), &'static str> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.len() > 253 {
        return Err("longer than 253 characters");
    }
    let labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err("needs at least two labels, e.g. checkout.example.com");
    }
    for l in labels {
        dns_label(&l.to_ascii_lowercase())
            .map_err(|_| "each label is 1 to 63 letters, digits or '-'")?;
    }
    Ok(())
}

fn in_zone(name: &str, zone: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    name == zone || name.ends_with(&format!(".{zone}"))
}

fn host_port(s: &str) -> Result<(), &'static str> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    let (host, port) = s.rsplit_once(':').ok_or("missing :PORT")?;
    match port.parse::<u16>() {
        Ok(p) if p != 0 => {}
        _ => return Err("port must be 1..=65535"),
    }
    domain_name(host)
        .or_else(|_| dns_label(host))
        .map_err(|_| "host is neither an IP address nor a DNS name")
}

/// `"200"`, `"200,204"` or `"200-299"`, codes 200..=599.
fn status_matcher(s: &str) -> Result<(), String> {
    let code = |c: &str| match c.trim().parse::<u16>() {
        Ok(n) if (200..=599).contains(&n) => Ok(n),
        _ => Err(format!(
            "\"{s}\" is not a status code list such as \"200\", \"200,204\" or \"200-299\""
        )),
    };
    if let Some((lo, hi)) = s.split_once('-') {
        if code(lo)? > code(hi)? {
            return Err(format!("\"{s}\": the range is empty"));
        }
        return Ok(());
    }
    s.split(',').try_for_each(|c| code(c).map(|_| ()))
}

mod limits;
mod resilience;
#[cfg(test)]
pub(crate) mod tests;
