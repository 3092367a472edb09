//! Gateway API documents as Trellis resources, as the AWS Gateway API
//! Controller maps them onto VPC Lattice: a Gateway is a service network,
//! each HTTPRoute, GRPCRoute, TLSRoute or TCPRoute a service (listeners from
//! its parent Gateway's), each backend (Kubernetes Service and port, or
//! ServiceExport/ServiceImport) a target group in the given network. A
//! route's rules keep Gateway API precedence (`ruleOrder: Specificity`).
//! Every field not carried over is noted where it was written.

use super::{Notes, Out, duration_ms, list, name, str_at};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet};
use trellis_api::manifest::Document;

/// Rules a Trellis listener takes (`priority` 1..=100).
const MAX_RULES: usize = 100;

pub struct Options {
    /// The network the target groups (the backends) live in.
    pub network: String,
}

/// Which route kind a service comes from: it decides listener protocols
/// and how backends are spoken to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteKind {
    Http,
    Grpc,
    Tls,
    Tcp,
}

pub fn import(docs: &[Document], opts: &Options) -> (Vec<Value>, Notes) {
    let mut i = Importer {
        opts,
        out: Out::default(),
        notes: Notes::default(),
        gateways: BTreeMap::new(),
        groups_of: BTreeMap::new(),
    };
    for doc in docs {
        if kind(doc) == "Gateway" {
            i.gateway(doc);
        }
    }
    for doc in docs {
        match kind(doc) {
            "Gateway" => {}
            "HTTPRoute" => i.route(doc, RouteKind::Http),
            "GRPCRoute" => i.route(doc, RouteKind::Grpc),
            "TLSRoute" => i.route(doc, RouteKind::Tls),
            "TCPRoute" => i.route(doc, RouteKind::Tcp),
            "ServiceExport" => i.export(doc),
            // Referenced by routes' backendRefs; the exporting side makes
            // the target group.
            "ServiceImport" | "TargetGroupPolicy" | "IAMAuthPolicy" => {}
            other => i.notes.at(
                doc,
                "kind",
                format!("kind {other} is not imported (Gateway, HTTPRoute, GRPCRoute, TLSRoute, TCPRoute, ServiceExport, ServiceImport, TargetGroupPolicy, IAMAuthPolicy are)"),
            ),
        }
    }
    for doc in docs {
        match kind(doc) {
            "TargetGroupPolicy" => i.target_group_policy(doc),
            "IAMAuthPolicy" => i.auth_policy(doc),
            _ => {}
        }
    }
    (i.out.into_values(), i.notes)
}

fn kind(doc: &Document) -> &str {
    str_at(&doc.value, "kind").unwrap_or_default()
}

fn meta_name(v: &Value) -> String {
    let meta = v.get("metadata").unwrap_or(&Value::Null);
    name(
        str_at(meta, "name").unwrap_or_default(),
        str_at(meta, "namespace"),
    )
}

/// A Gateway listener, as routes attach to it.
struct GatewayListener {
    name: String,
    protocol: String,
    port: u16,
}

struct Importer<'a> {
    opts: &'a Options,
    out: Out,
    notes: Notes,
    gateways: BTreeMap<String, Vec<GatewayListener>>,
    /// Kubernetes Service (name) -> the target groups made for it.
    groups_of: BTreeMap<String, BTreeSet<String>>,
}

impl Importer<'_> {
    /// Notes every key of the object at `path` not in `known`.
    fn unknown(&mut self, doc: &Document, path: &str, v: &Value, known: &[&str]) {
        let Some(obj) = v.as_object() else { return };
        for k in obj.keys().filter(|k| !known.contains(&k.as_str())) {
            let p = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            self.notes.at(
                doc,
                &p,
                format!("`{k}` is not expressed in Trellis; left out"),
            );
        }
    }

    fn gateway(&mut self, doc: &Document) {
        let v = &doc.value;
        let sn = meta_name(v);
        let spec = v.get("spec").unwrap_or(&Value::Null);
        self.unknown(doc, "spec", spec, &["gatewayClassName", "listeners"]);
        let networks = self.out.spec("ServiceNetwork", &sn);
        networks.insert("networks".into(), json!([self.opts.network]));
        let mut listeners = Vec::new();
        for (i, l) in list(spec, "listeners").iter().enumerate() {
            let path = format!("spec.listeners[{i}]");
            self.unknown(
                doc,
                &path,
                l,
                &[
                    "name",
                    "protocol",
                    "port",
                    "hostname",
                    "tls",
                    "allowedRoutes",
                ],
            );
            if l.get("hostname").is_some() {
                self.notes.at(
                    doc,
                    &format!("{path}.hostname"),
                    "a listener's hostname is not expressed: each route is a service with its own name",
                );
            }
            listeners.push(GatewayListener {
                name: name(str_at(l, "name").unwrap_or("listener"), None),
                protocol: str_at(l, "protocol").unwrap_or("HTTP").to_string(),
                port: l.get("port").and_then(Value::as_u64).unwrap_or(80) as u16,
            });
        }
        self.gateways.insert(sn, listeners);
    }

    /// The Trellis listeners (protocol, port, name) a route gets from its
    /// parents' listeners.
    fn listeners(
        &mut self,
        doc: &Document,
        spec: &Value,
        rk: RouteKind,
    ) -> Vec<(String, u16, String)> {
        let wanted: &[&str] = match rk {
            RouteKind::Http | RouteKind::Grpc => &["HTTP", "HTTPS"],
            RouteKind::Tls => &["TLS"],
            RouteKind::Tcp => &["TCP"],
        };
        let mut out: Vec<(String, u16, String)> = Vec::new();
        for (i, parent) in list(spec, "parentRefs").iter().enumerate() {
            let path = format!("spec.parentRefs[{i}]");
            self.unknown(
                doc,
                &path,
                parent,
                &["group", "kind", "namespace", "name", "sectionName", "port"],
            );
            if str_at(parent, "kind").is_some_and(|k| k != "Gateway") {
                self.notes.at(
                    doc,
                    &format!("{path}.kind"),
                    "only Gateway parents are imported (a Service parent is the GAMMA mesh model)",
                );
                continue;
            }
            let gw = name(
                str_at(parent, "name").unwrap_or_default(),
                str_at(parent, "namespace"),
            );
            let section = str_at(parent, "sectionName").map(|s| name(s, None));
            let port = parent.get("port").and_then(Value::as_u64);
            let Some(gls) = self.gateways.get(&gw) else {
                let (protocol, port) = match rk {
                    RouteKind::Tls => ("TLS_PASSTHROUGH", 443),
                    RouteKind::Tcp => ("TCP", port.unwrap_or(0) as u16),
                    _ => ("HTTP", port.unwrap_or(80) as u16),
                };
                self.notes.at(doc, &path, format!("gateway {gw} is not in the input: a {protocol} listener on port {port} is assumed"));
                if port != 0 && !out.iter().any(|l| l.1 == port) {
                    out.push((
                        protocol.to_string(),
                        port,
                        format!("{}-{port}", protocol.to_ascii_lowercase().replace('_', "-")),
                    ));
                }
                continue;
            };
            let mut skipped = Vec::new();
            for l in gls {
                if section.as_ref().is_some_and(|s| *s != l.name)
                    || port.is_some_and(|p| p != u64::from(l.port))
                {
                    continue;
                }
                if !wanted.contains(&l.protocol.as_str()) {
                    continue;
                }
                let protocol = match l.protocol.as_str() {
                    "HTTPS" => {
                        skipped.push(format!("{} (HTTPS: its certificates are Kubernetes Secrets; give the service an HTTPS listener with certificateFile and keyFile)", l.name));
                        continue;
                    }
                    "TLS" => "TLS_PASSTHROUGH",
                    p => p,
                };
                if !out.iter().any(|o| o.1 == l.port) {
                    out.push((protocol.to_string(), l.port, l.name.clone()));
                }
            }
            for s in skipped {
                self.notes
                    .at(doc, &path, format!("listener {s} is not imported"));
            }
        }
        out
    }

    fn route(&mut self, doc: &Document, rk: RouteKind) {
        let v = &doc.value;
        let svc = meta_name(v);
        let spec = v.get("spec").unwrap_or(&Value::Null);
        self.unknown(doc, "spec", spec, &["parentRefs", "hostnames", "rules"]);
        let networks: Vec<String> = list(spec, "parentRefs")
            .iter()
            .filter(|p| str_at(p, "kind").is_none_or(|k| k == "Gateway"))
            .map(|p| {
                name(
                    str_at(p, "name").unwrap_or_default(),
                    str_at(p, "namespace"),
                )
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let listeners = self.listeners(doc, spec, rk);
        let hostnames = list(spec, "hostnames");
        let mut domain = None;
        for (i, h) in hostnames.iter().enumerate() {
            let h = h.as_str().unwrap_or_default();
            let path = format!("spec.hostnames[{i}]");
            if h.starts_with('*') {
                self.notes.at(
                    doc,
                    &path,
                    "a wildcard hostname is not expressed: a service has one name",
                );
            } else if domain.is_none() {
                domain = Some(h.to_string());
            } else {
                self.notes.at(
                    doc,
                    &path,
                    "a service has one custom domain name: only the first hostname is kept",
                );
            }
        }
        let rules = list(spec, "rules");
        let (default, trellis_rules) = match rk {
            RouteKind::Http | RouteKind::Grpc => (
                json!({"fixedResponse": {"statusCode": 404}}),
                self.rules(doc, rules, rk),
            ),
            RouteKind::Tls | RouteKind::Tcp => {
                for i in 1..rules.len() {
                    self.notes.at(doc, &format!("spec.rules[{i}]"), "TLS and TCP services forward by one default action: only the first rule is kept");
                }
                let first = rules.first().cloned().unwrap_or(Value::Null);
                if let Some(r) = rules.first() {
                    self.unknown(doc, "spec.rules[0]", r, &["name", "backendRefs"]);
                }
                (
                    self.forward(doc, "spec.rules[0]", &first, rk, Map::new()),
                    Vec::new(),
                )
            }
        };
        if listeners.is_empty() {
            self.notes.at(
                doc,
                "spec.parentRefs",
                "no listener to attach to: the service is made without listeners",
            );
        }
        let out = self.out.spec("Service", &svc);
        out.insert("serviceNetworks".into(), json!(networks));
        if let Some(d) = domain {
            out.insert("customDomainName".into(), json!(d));
        }
        let ls: Vec<Value> = listeners
            .into_iter()
            .map(|(protocol, port, lname)| {
                let mut l = json!({"name": lname, "protocol": protocol, "port": port, "defaultAction": default.clone()});
                if !trellis_rules.is_empty() {
                    l["ruleOrder"] = json!("Specificity");
                    l["rules"] = json!(trellis_rules.clone());
                }
                l
            })
            .collect();
        out.insert("listeners".into(), json!(ls));
    }

    /// HTTP and gRPC rules: one Trellis rule per match (two for a path
    /// prefix: Gateway API prefixes are whole path elements).
    fn rules(&mut self, doc: &Document, rules: &[Value], rk: RouteKind) -> Vec<Value> {
        let mut out = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let rp = format!("spec.rules[{i}]");
            self.unknown(
                doc,
                &rp,
                rule,
                &[
                    "name",
                    "matches",
                    "filters",
                    "backendRefs",
                    "timeouts",
                    "retry",
                ],
            );
            let base = str_at(rule, "name").map_or_else(|| format!("rule{i}"), |n| name(n, None));
            let matches = match list(rule, "matches") {
                [] => vec![Value::Null],
                m => m.to_vec(),
            };
            for (j, m) in matches.iter().enumerate() {
                let mp = format!("{rp}.matches[{j}]");
                for (variant, cond) in self.condition(doc, &mp, m, rk) {
                    let action = self.action(doc, &rp, rule, rk, variant);
                    let suffix = match (matches.len(), variant) {
                        (1, Variant::Exact) => "-exact".to_string(),
                        (1, _) => String::new(),
                        (_, Variant::Exact) => format!("-{j}-exact"),
                        (_, _) => format!("-{j}"),
                    };
                    let rule = json!({"name": name(&format!("{base}{suffix}"), None), "match": cond, "action": action});
                    out.push((variant == Variant::Exact, rule));
                }
            }
        }
        // A prefix's own path ranks as an exact path; it must lose ties to
        // a route's real Exact matches (the Gateway API ranks Exact above
        // any prefix), so those halves come last among equals. Priority
        // only breaks ties: nothing else moves.
        out.sort_by_key(|(split_exact, _)| *split_exact);
        if out.len() > MAX_RULES {
            self.notes.at(doc, "spec.rules", format!("{} Trellis rules are needed, a listener takes {MAX_RULES}: the rest are left out", out.len()));
            out.truncate(MAX_RULES);
        }
        out.into_iter()
            .enumerate()
            .map(|(i, (_, mut rule))| {
                rule["priority"] = json!(i + 1);
                rule
            })
            .collect()
    }

    /// A match's Trellis conditions: one, or for a path prefix other than
    /// `/` two (the path itself, and the path below it).
    fn condition(
        &mut self,
        doc: &Document,
        mp: &str,
        m: &Value,
        rk: RouteKind,
    ) -> Vec<(Variant, Value)> {
        let mut cond = Map::new();
        let mut paths = vec![(Variant::Other, None)];
        if rk == RouteKind::Grpc {
            self.unknown(doc, mp, m, &["method", "headers"]);
            if let Some(method) = m.get("method") {
                self.unknown(
                    doc,
                    &format!("{mp}.method"),
                    method,
                    &["type", "service", "method"],
                );
                let mut g = Map::new();
                for k in ["service", "method"] {
                    if let Some(s) = str_at(method, k) {
                        g.insert(k.into(), json!(s));
                    }
                }
                if let Some(t) = str_at(method, "type") {
                    g.insert("type".into(), json!(t));
                }
                cond.insert("grpc".into(), Value::Object(g));
            }
        } else {
            self.unknown(doc, mp, m, &["path", "headers", "queryParams", "method"]);
            let path = m.get("path");
            let ty = path.and_then(|p| str_at(p, "type")).unwrap_or("PathPrefix");
            let value = path.and_then(|p| str_at(p, "value")).unwrap_or("/");
            paths = match ty {
                "Exact" => vec![(Variant::Other, Some(json!({"exact": value})))],
                "RegularExpression" => vec![(Variant::Other, Some(json!({"regex": value})))],
                _ => {
                    let p = value.trim_end_matches('/');
                    if p.is_empty() {
                        vec![(Variant::Root, Some(json!({"prefix": "/"})))]
                    } else {
                        vec![
                            (Variant::Exact, Some(json!({"exact": p}))),
                            (Variant::Prefix, Some(json!({"prefix": format!("{p}/")}))),
                        ]
                    }
                }
            };
            if let Some(method) = str_at(m, "method") {
                cond.insert("method".into(), json!(method));
            }
            let query: Vec<Value> = list(m, "queryParams")
                .iter()
                .map(|q| {
                    let key = if str_at(q, "type") == Some("RegularExpression") {
                        "regex"
                    } else {
                        "exact"
                    };
                    json!({"name": str_at(q, "name"), key: str_at(q, "value")})
                })
                .collect();
            if !query.is_empty() {
                cond.insert("query".into(), json!(query));
            }
        }
        let headers: Vec<Value> = list(m, "headers")
            .iter()
            .map(|h| {
                let key = if str_at(h, "type") == Some("RegularExpression") {
                    "regex"
                } else {
                    "exact"
                };
                json!({"name": str_at(h, "name"), key: str_at(h, "value"), "caseSensitive": true})
            })
            .collect();
        if !headers.is_empty() {
            cond.insert("headers".into(), json!(headers));
        }
        paths
            .into_iter()
            .map(|(variant, path)| {
                let mut c = cond.clone();
                if let Some(p) = path {
                    c.insert("path".into(), p);
                }
                if c.is_empty() {
                    c.insert("path".into(), json!({"prefix": "/"}));
                }
                (variant, Value::Object(c))
            })
            .collect()
    }

    /// A rule's action: its filters, timeouts and retry around its
    /// backends, or its redirect.
    fn action(
        &mut self,
        doc: &Document,
        rp: &str,
        rule: &Value,
        rk: RouteKind,
        variant: Variant,
    ) -> Value {
        let mut action = Map::new();
        for (k, f) in list(rule, "filters").iter().enumerate() {
            let fp = format!("{rp}.filters[{k}]");
            self.filter(doc, &fp, f, rk, variant, &mut action);
        }
        if action.contains_key("redirect") {
            return Value::Object(action);
        }
        if let Some(t) = rule.get("timeouts") {
            let tp = format!("{rp}.timeouts");
            self.unknown(doc, &tp, t, &["request", "backendRequest"]);
            let mut out = Map::new();
            for (from, to) in [("request", "requestMs"), ("backendRequest", "perTryMs")] {
                let Some(d) = str_at(t, from) else { continue };
                match duration_ms(d) {
                    Some(0) => self.notes.at(
                        doc,
                        &format!("{tp}.{from}"),
                        "0s (no limit) is not expressed: the listener's limit applies",
                    ),
                    Some(ms) => {
                        out.insert(to.into(), json!(ms));
                    }
                    None => self.notes.at(
                        doc,
                        &format!("{tp}.{from}"),
                        format!("\"{d}\" is not a Gateway API duration"),
                    ),
                }
            }
            if !out.is_empty() {
                action.insert("timeouts".into(), Value::Object(out));
            }
        }
        if let Some(r) = rule.get("retry") {
            let rtp = format!("{rp}.retry");
            self.unknown(doc, &rtp, r, &["codes", "attempts", "backoff"]);
            let attempts = r.get("attempts").and_then(Value::as_u64).unwrap_or(1);
            if attempts > 0 {
                let codes = list(r, "codes").to_vec();
                let mut retry = json!({"attempts": attempts.min(5)});
                if codes.is_empty() {
                    retry["on"] = json!(["connectFailure", "gatewayError"]);
                } else {
                    retry["on"] = json!([]);
                    retry["codes"] = json!(codes);
                }
                if let Some(ms) = str_at(r, "backoff").and_then(duration_ms) {
                    retry["backoffMs"] = json!(ms.clamp(1, 10_000));
                }
                action.insert("retry".into(), retry);
            }
        }
        self.forward(doc, rp, rule, rk, action)
    }

    fn filter(
        &mut self,
        doc: &Document,
        fp: &str,
        f: &Value,
        rk: RouteKind,
        variant: Variant,
        action: &mut Map<String, Value>,
    ) {
        let ty = str_at(f, "type").unwrap_or_default();
        // The field holding a filter's settings, by its type.
        let field = match ty {
            "RequestHeaderModifier" => "requestHeaderModifier",
            "ResponseHeaderModifier" => "responseHeaderModifier",
            "RequestRedirect" => "requestRedirect",
            "URLRewrite" => "urlRewrite",
            "RequestMirror" => "requestMirror",
            "CORS" => "cors",
            _ => "extensionRef",
        };
        self.unknown(doc, fp, f, &["type", field]);
        let body = f.get(field).cloned().unwrap_or(Value::Null);
        let bp = format!("{fp}.{field}");
        match ty {
            "RequestHeaderModifier" | "ResponseHeaderModifier" => {
                self.unknown(doc, &bp, &body, &["set", "add", "remove"]);
                let key = if ty == "RequestHeaderModifier" {
                    "requestHeaders"
                } else {
                    "responseHeaders"
                };
                action.insert(key.into(), body);
            }
            "RequestRedirect" if rk == RouteKind::Http => {
                self.unknown(
                    doc,
                    &bp,
                    &body,
                    &["scheme", "hostname", "path", "port", "statusCode"],
                );
                let mut r = Map::new();
                for k in ["scheme", "hostname", "port", "statusCode"] {
                    if let Some(x) = body.get(k) {
                        r.insert(k.into(), x.clone());
                    }
                }
                if let Some(p) = body.get("path") {
                    r.insert("path".into(), replace_path(p, variant));
                }
                action.insert("redirect".into(), Value::Object(r));
            }
            "URLRewrite" if rk == RouteKind::Http => {
                self.unknown(doc, &bp, &body, &["hostname", "path"]);
                let mut r = Map::new();
                if let Some(h) = body.get("hostname") {
                    r.insert("hostname".into(), h.clone());
                }
                if let Some(p) = body.get("path") {
                    r.insert("path".into(), replace_path(p, variant));
                }
                action.insert("rewrite".into(), Value::Object(r));
            }
            "RequestMirror" => {
                self.unknown(doc, &bp, &body, &["backendRef", "percent", "fraction"]);
                let backend = body.get("backendRef").cloned().unwrap_or(Value::Null);
                let group = self.backend_group(doc, &format!("{bp}.backendRef"), &backend, rk);
                let percent = match (body.get("percent"), body.get("fraction")) {
                    (Some(p), _) => p.as_u64().unwrap_or(100),
                    (None, Some(fr)) => {
                        let n = fr.get("numerator").and_then(Value::as_u64).unwrap_or(0);
                        let d = fr
                            .get("denominator")
                            .and_then(Value::as_u64)
                            .unwrap_or(100)
                            .max(1);
                        if (n * 100) % d != 0 {
                            self.notes.at(
                                doc,
                                &format!("{bp}.fraction"),
                                "Trellis mirrors whole percents: rounded down",
                            );
                        }
                        n * 100 / d
                    }
                    (None, None) => 100,
                };
                let mirrors = action.entry("mirrors").or_insert_with(|| json!([]));
                if let Value::Array(m) = mirrors {
                    m.push(json!({"targetGroup": group, "percent": percent}));
                }
            }
            "CORS" if rk == RouteKind::Http => {
                self.unknown(
                    doc,
                    &bp,
                    &body,
                    &[
                        "allowOrigins",
                        "allowMethods",
                        "allowHeaders",
                        "exposeHeaders",
                        "maxAge",
                        "allowCredentials",
                    ],
                );
                let mut c = body.as_object().cloned().unwrap_or_default();
                if let Some(age) = c.remove("maxAge") {
                    c.insert("maxAgeSeconds".into(), age);
                }
                action.insert("cors".into(), Value::Object(c));
            }
            other => self.notes.at(
                doc,
                fp,
                format!("filter {other} is not expressed here; left out"),
            ),
        }
    }

    /// `forward` to the rule's backends (into `action`), or a 500 when it
    /// has none (as the Gateway API answers).
    fn forward(
        &mut self,
        doc: &Document,
        rp: &str,
        rule: &Value,
        rk: RouteKind,
        mut action: Map<String, Value>,
    ) -> Value {
        let mut forward = Vec::new();
        for (k, b) in list(rule, "backendRefs").iter().enumerate() {
            let bp = format!("{rp}.backendRefs[{k}]");
            let group = self.backend_group(doc, &bp, b, rk);
            let weight = b.get("weight").and_then(Value::as_u64).unwrap_or(1);
            forward.push(json!({"targetGroup": group, "weight": weight}));
        }
        if forward.is_empty() || forward.iter().all(|f| f["weight"] == 0) {
            if matches!(rk, RouteKind::Tls | RouteKind::Tcp) {
                self.notes.at(
                    doc,
                    rp,
                    "no backend with weight: the service cannot forward",
                );
            }
            return json!({"fixedResponse": {"statusCode": 500}});
        }
        action.insert("forward".into(), json!(forward));
        Value::Object(action)
    }

    /// The target group a backendRef stands for, made when new.
    fn backend_group(&mut self, doc: &Document, bp: &str, b: &Value, rk: RouteKind) -> String {
        self.unknown(
            doc,
            bp,
            b,
            &["group", "kind", "name", "namespace", "port", "weight"],
        );
        let svc = name(
            str_at(b, "name").unwrap_or_default(),
            str_at(b, "namespace"),
        );
        let port = b.get("port").and_then(Value::as_u64);
        match str_at(b, "kind").unwrap_or("Service") {
            "ServiceImport" => return svc,
            "Service" => {}
            other => self.notes.at(
                doc,
                &format!("{bp}.kind"),
                format!("backend kind {other} is not imported: read as a Service"),
            ),
        }
        let group = match port {
            Some(p) => format!("{svc}-{p}"),
            None => svc.clone(),
        };
        if !self.out.has("TargetGroup", &group) {
            self.notes.at(
                doc,
                bp,
                format!(
                    "target group {group}: Kubernetes endpoints are not known here; add its targets"
                ),
            );
        }
        let spec = self.out.spec("TargetGroup", &group);
        spec.insert("network".into(), json!(self.opts.network));
        match rk {
            RouteKind::Grpc => {
                spec.insert("protocolVersion".into(), json!("GRPC"));
            }
            RouteKind::Tls | RouteKind::Tcp => {
                spec.insert("protocol".into(), json!("TCP"));
            }
            RouteKind::Http => {}
        }
        if let Some(p) = port {
            spec.insert("port".into(), json!(p));
        }
        spec.entry("targets").or_insert_with(|| json!([]));
        self.groups_of.entry(svc).or_default().insert(group.clone());
        group
    }

    fn export(&mut self, doc: &Document) {
        let group = meta_name(&doc.value);
        self.unknown(
            doc,
            "",
            &doc.value,
            &["apiVersion", "kind", "metadata", "spec", "status"],
        );
        let spec = self.out.spec("TargetGroup", &group);
        spec.insert("network".into(), json!(self.opts.network));
        spec.entry("targets").or_insert_with(|| json!([]));
        self.groups_of
            .entry(group.clone())
            .or_default()
            .insert(group.clone());
        self.notes.at(
            doc,
            "metadata.name",
            format!(
                "target group {group}: Kubernetes endpoints are not known here; add its targets"
            ),
        );
    }

    fn target_group_policy(&mut self, doc: &Document) {
        let spec = doc.value.get("spec").cloned().unwrap_or(Value::Null);
        self.unknown(
            doc,
            "spec",
            &spec,
            &["targetRef", "protocol", "protocolVersion", "healthCheck"],
        );
        let target = spec.get("targetRef").cloned().unwrap_or(Value::Null);
        let svc = name(
            str_at(&target, "name").unwrap_or_default(),
            str_at(&target, "namespace"),
        );
        let Some(groups) = self.groups_of.get(&svc).cloned() else {
            self.notes.at(
                doc,
                "spec.targetRef",
                format!("no target group was made for {svc}: the policy applies to nothing"),
            );
            return;
        };
        let mut hc = Map::new();
        if let Some(h) = spec.get("healthCheck") {
            self.unknown(
                doc,
                "spec.healthCheck",
                h,
                &[
                    "enabled",
                    "intervalSeconds",
                    "timeoutSeconds",
                    "healthyThresholdCount",
                    "unhealthyThresholdCount",
                    "statusMatch",
                    "path",
                    "port",
                    "protocol",
                    "protocolVersion",
                ],
            );
            for (from, to) in [
                ("enabled", "enabled"),
                ("intervalSeconds", "intervalSeconds"),
                ("timeoutSeconds", "timeoutSeconds"),
                ("healthyThresholdCount", "healthyThreshold"),
                ("unhealthyThresholdCount", "unhealthyThreshold"),
                ("path", "path"),
                ("port", "port"),
                ("protocol", "protocol"),
            ] {
                if let Some(x) = h.get(from) {
                    hc.insert(to.into(), x.clone());
                }
            }
            if let Some(m) = h.get("statusMatch") {
                hc.insert("matcher".into(), json!({"httpCode": m}));
            }
            if h.get("protocolVersion").is_some() {
                self.notes.at(
                    doc,
                    "spec.healthCheck.protocolVersion",
                    "health checks speak HTTP/1.1; left out",
                );
            }
        }
        for g in groups {
            let tg = self.out.spec("TargetGroup", &g);
            for k in ["protocol", "protocolVersion"] {
                if let Some(x) = spec.get(k) {
                    tg.insert(k.into(), x.clone());
                }
            }
            if !hc.is_empty() {
                tg.insert("healthCheck".into(), Value::Object(hc.clone()));
            }
        }
    }

    fn auth_policy(&mut self, doc: &Document) {
        let spec = doc.value.get("spec").cloned().unwrap_or(Value::Null);
        self.unknown(doc, "spec", &spec, &["targetRef", "policy"]);
        let target = spec.get("targetRef").cloned().unwrap_or(Value::Null);
        let obj = name(
            str_at(&target, "name").unwrap_or_default(),
            str_at(&target, "namespace"),
        );
        let kind = match str_at(&target, "kind") {
            Some("Gateway") => "ServiceNetwork",
            Some("HTTPRoute" | "GRPCRoute") => "Service",
            other => {
                self.notes.at(
                    doc,
                    "spec.targetRef.kind",
                    format!(
                        "an auth policy on {} is not expressed (Gateway, HTTPRoute, GRPCRoute are)",
                        other.unwrap_or("nothing")
                    ),
                );
                return;
            }
        };
        let policy = match spec.get("policy") {
            Some(Value::String(s)) => serde_json::from_str::<Value>(s),
            Some(v) => Ok(v.clone()),
            None => Ok(Value::Null),
        };
        let policy = match policy {
            Ok(Value::Null) | Err(_) => {
                self.notes.at(
                    doc,
                    "spec.policy",
                    "the policy is not a JSON document; left out",
                );
                return;
            }
            Ok(p) => p,
        };
        if !self.out.has(kind, &obj) {
            self.notes.at(
                doc,
                "spec.targetRef",
                format!("{kind} {obj} is not in the input: the policy is written for it anyway"),
            );
        }
        let s = self.out.spec(kind, &obj);
        s.insert("authType".into(), json!("SIGV4"));
        s.insert("authPolicy".into(), policy);
    }
}

/// Which Trellis rule of a split path prefix an action is for: a prefix
/// replacement becomes a full one on the exact path.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// The prefix's own path (`/foo`).
    Exact,
    /// Below it (`/foo/`).
    Prefix,
    /// The prefix `/`.
    Root,
    Other,
}

/// A Gateway API path modifier as a Trellis `{full}` or `{prefix}`.
fn replace_path(p: &Value, variant: Variant) -> Value {
    if let Some(full) = str_at(p, "replaceFullPath") {
        return json!({"full": full});
    }
    let to = str_at(p, "replacePrefixMatch").unwrap_or("/");
    match variant {
        Variant::Exact => json!({"full": to}),
        Variant::Prefix if !to.ends_with('/') => json!({"prefix": format!("{to}/")}),
        _ => json!({"prefix": to}),
    }
}
