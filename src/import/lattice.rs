//! A VPC Lattice service as the AWS CLI prints it (`aws vpc-lattice ...
//! --output json`), one command's output per file, recognised by its
//! shape: `get-service`, `list-listeners`, `get-listener`, `list-rules`,
//! `get-rule`, `get-auth-policy`, `get-target-group` and `list-targets`
//! (given as `TARGET_GROUP_ID=FILE`: its output does not name the group).

use super::{Notes, Out, list, name, str_at};
use anyhow::{Context, Result, bail};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use trellis_api::manifest::{self, Document};

/// What one file holds.
enum Shape {
    Service,
    Listeners,
    Listener,
    Rules,
    Rule,
    AuthPolicy,
    TargetGroup,
    Targets(String),
}

fn shape(v: &Value, group: Option<String>) -> Option<Shape> {
    let items = v.get("items").and_then(Value::as_array);
    let first = items.and_then(|i| i.first());
    Some(match (group, items) {
        (Some(g), Some(_)) => Shape::Targets(g),
        (None, Some(_)) if first.is_some_and(|f| f.get("priority").is_some()) => Shape::Rules,
        (None, Some(_)) if first.is_none_or(|f| f.get("protocol").is_some()) => Shape::Listeners,
        (None, Some(_)) => return None,
        (None, None) if v.get("policy").is_some() => Shape::AuthPolicy,
        (None, None) if v.get("match").is_some() && v.get("action").is_some() => Shape::Rule,
        (None, None) if v.get("defaultAction").is_some() => Shape::Listener,
        (None, None) if v.get("config").is_some() => Shape::TargetGroup,
        (None, None) if v.get("dnsEntry").is_some() || v.get("authType").is_some() => {
            Shape::Service
        }
        _ => return None,
    })
}

/// The id in an ARN after `kind/` (`listener-...` in a rule's ARN).
fn arn_id<'a>(arn: &'a str, kind: &str) -> Option<&'a str> {
    let at = arn.find(&format!("/{kind}/"))? + kind.len() + 2;
    arn[at..].split('/').next()
}

pub fn import(
    files: &[String],
    network: &str,
    service_networks: &[String],
) -> Result<(Vec<Value>, Notes)> {
    let mut docs: Vec<(Document, Shape)> = Vec::new();
    for arg in files {
        let (group, file) = match arg.split_once('=') {
            Some((g, f)) => (Some(g.to_string()), f),
            None => (None, arg.as_str()),
        };
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        let parsed = manifest::parse(file, &text).map_err(|errors| {
            anyhow::anyhow!(
                errors
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?;
        for doc in parsed {
            let Some(s) = shape(&doc.value, group.clone()) else {
                bail!(
                    "{file}: not an output of get-service, list-listeners, get-listener, list-rules, get-rule, get-auth-policy, get-target-group or list-targets"
                );
            };
            docs.push((doc, s));
        }
    }
    let mut notes = Notes::default();
    let mut out = Out::default();
    // Target group ids to names, from get-target-group outputs.
    let mut groups: BTreeMap<String, String> = BTreeMap::new();
    for (doc, s) in &docs {
        if let Shape::TargetGroup = s {
            let id = str_at(&doc.value, "id").unwrap_or_default();
            let n = name(str_at(&doc.value, "name").unwrap_or(id), None);
            groups.insert(id.to_string(), n);
        }
    }
    let group_name = |id: &str| groups.get(id).cloned().unwrap_or_else(|| name(id, None));
    let service = docs
        .iter()
        .find(|(_, s)| matches!(s, Shape::Service))
        .map(|(d, _)| d);
    let Some(service) = service else {
        bail!("no get-service output among the files: which service is this?");
    };
    let svc = name(str_at(&service.value, "name").unwrap_or("service"), None);
    let svc_spec = out.spec("Service", &svc);
    svc_spec.insert("serviceNetworks".into(), json!(service_networks));
    if let Some(d) = str_at(&service.value, "customDomainName") {
        svc_spec.insert("customDomainName".into(), json!(d));
    }
    if str_at(&service.value, "authType") == Some("AWS_IAM") {
        svc_spec.insert("authType".into(), json!("SIGV4"));
    }
    if service_networks.is_empty() {
        notes.at(service, "name", "a service's service networks are not in these outputs: give --service-network (aws vpc-lattice list-service-network-service-associations lists them)");
    }
    if service.value.get("certificateArn").is_some() {
        notes.at(
            service,
            "certificateArn",
            "ACM certificates are not imported: give HTTPS listeners certificateFile and keyFile",
        );
    }

    // Listeners by id: (name, protocol, port, default action, rules).
    let mut listeners: BTreeMap<String, (Value, Vec<Value>)> = BTreeMap::new();
    let listener_of = |l: &Value, doc: &Document, path: &str, notes: &mut Notes| -> Option<Value> {
        let protocol = str_at(l, "protocol").unwrap_or("HTTP");
        if protocol == "HTTPS" {
            notes.at(doc, path, "an HTTPS listener's certificate is in ACM: not imported; add the listener with certificateFile and keyFile");
            return None;
        }
        Some(
            json!({"name": name(str_at(l, "name").unwrap_or("listener"), None), "protocol": protocol, "port": l.get("port")}),
        )
    };
    for (doc, s) in &docs {
        match s {
            Shape::Listeners => {
                for (i, l) in list(&doc.value, "items").iter().enumerate() {
                    let id = str_at(l, "id").unwrap_or_default().to_string();
                    if let Some(def) = listener_of(l, doc, &format!("items[{i}]"), &mut notes) {
                        listeners.entry(id).or_insert((def, Vec::new()));
                    }
                }
            }
            Shape::Listener => {
                let l = &doc.value;
                let id = str_at(l, "id").unwrap_or_default().to_string();
                if let Some(mut def) = listener_of(l, doc, "protocol", &mut notes) {
                    def["defaultAction"] = action(l.get("defaultAction"), &group_name);
                    let entry = listeners.entry(id).or_insert((def.clone(), Vec::new()));
                    entry.0 = def;
                }
            }
            _ => {}
        }
    }
    let mut described = std::collections::BTreeSet::new();
    for (doc, s) in &docs {
        if let Shape::Rule = s {
            let r = &doc.value;
            described.insert(str_at(r, "id").unwrap_or_default().to_string());
            let listener = str_at(r, "arn").and_then(|a| arn_id(a, "listener"));
            let Some((_, rules)) = listener.and_then(|l| listeners.get_mut(l)) else {
                notes.at(
                    doc,
                    "arn",
                    "the rule's listener is not among the listeners given: left out",
                );
                continue;
            };
            if r.get("isDefault").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            rules.push(json!({
                "name": name(str_at(r, "name").unwrap_or("rule"), None),
                "priority": r.get("priority"),
                "match": rule_match(doc, r.get("match").unwrap_or(&Value::Null), &mut notes),
                "action": action(r.get("action"), &group_name),
            }));
        }
    }
    for (doc, s) in &docs {
        if let Shape::Rules = s {
            for (i, r) in list(&doc.value, "items").iter().enumerate() {
                let id = str_at(r, "id").unwrap_or_default();
                let default = r.get("isDefault").and_then(Value::as_bool) == Some(true);
                if !default && !described.contains(id) {
                    notes.at(doc, &format!("items[{i}]"), format!("rule {id}: list-rules does not print a rule's match and action; add `aws vpc-lattice get-rule` output"));
                }
            }
        }
    }
    let mut ls = Vec::new();
    for (id, (mut def, rules)) in listeners {
        if def.get("defaultAction").is_none() {
            notes.at(service, "name", format!("listener {id}: its default action is in `aws vpc-lattice get-listener` output, not given; 404 is written"));
            def["defaultAction"] = json!({"fixedResponse": {"statusCode": 404}});
        }
        if !rules.is_empty() {
            def["rules"] = json!(rules);
        }
        ls.push(def);
    }
    out.spec("Service", &svc)
        .insert("listeners".into(), json!(ls));

    for (doc, s) in &docs {
        match s {
            Shape::AuthPolicy => {
                match str_at(&doc.value, "policy").map(serde_json::from_str::<Value>) {
                    Some(Ok(p)) => {
                        out.spec("Service", &svc).insert("authPolicy".into(), p);
                    }
                    _ => notes.at(doc, "policy", "the policy is not a JSON document; left out"),
                }
            }
            Shape::TargetGroup => target_group(doc, network, &mut out, &mut notes),
            Shape::Targets(id) => {
                let g = group_name(id);
                let targets: Vec<Value> = list(&doc.value, "items")
                    .iter()
                    .map(|t| json!({"address": str_at(t, "id"), "port": t.get("port")}))
                    .collect();
                let spec = out.spec("TargetGroup", &g);
                spec.entry("network").or_insert_with(|| json!(network));
                spec.insert("targets".into(), json!(targets));
            }
            _ => {}
        }
    }
    Ok((out.into_values(), notes))
}

/// A Lattice rule action (or listener default action) in Trellis's words.
fn action(a: Option<&Value>, group_name: &dyn Fn(&str) -> String) -> Value {
    let a = a.unwrap_or(&Value::Null);
    if let Some(f) = a.get("fixedResponse") {
        return json!({"fixedResponse": {"statusCode": f.get("statusCode")}});
    }
    let forward: Vec<Value> = a
        .get("forward")
        .map(|f| list(f, "targetGroups"))
        .unwrap_or_default()
        .iter()
        .map(|t| {
            json!({
                "targetGroup": group_name(str_at(t, "targetGroupIdentifier").unwrap_or_default()),
                "weight": t.get("weight").and_then(Value::as_u64).unwrap_or(1),
            })
        })
        .collect();
    json!({"forward": forward})
}

/// A Lattice `match.httpMatch` as a Trellis match.
fn rule_match(doc: &Document, m: &Value, notes: &mut Notes) -> Value {
    let http = m.get("httpMatch").unwrap_or(&Value::Null);
    let mut out = Map::new();
    if let Some(p) = http.get("pathMatch") {
        let mut path = p
            .get("match")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        if let Some(cs) = p.get("caseSensitive") {
            path.insert("caseSensitive".into(), cs.clone());
        }
        out.insert("path".into(), Value::Object(path));
    }
    if let Some(method) = http.get("method") {
        out.insert("method".into(), method.clone());
    }
    let headers: Vec<Value> = list(http, "headerMatches")
        .iter()
        .map(|h| {
            let mut c = h
                .get("match")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            c.insert("name".into(), h.get("name").cloned().unwrap_or(Value::Null));
            if let Some(cs) = h.get("caseSensitive") {
                c.insert("caseSensitive".into(), cs.clone());
            }
            Value::Object(c)
        })
        .collect();
    if !headers.is_empty() {
        out.insert("headers".into(), json!(headers));
    }
    if out.is_empty() {
        notes.at(
            doc,
            "match",
            "a rule without an httpMatch is not expressed; it matches every path here",
        );
        out.insert("path".into(), json!({"prefix": "/"}));
    }
    Value::Object(out)
}

fn target_group(doc: &Document, network: &str, out: &mut Out, notes: &mut Notes) {
    let v = &doc.value;
    let id = str_at(v, "id").unwrap_or_default();
    let g = name(str_at(v, "name").unwrap_or(id), None);
    match str_at(v, "type").unwrap_or("IP") {
        "IP" => {}
        other => notes.at(
            doc,
            "type",
            format!("a {other} target group's targets are not addresses: add IP targets"),
        ),
    }
    let config = v.get("config").unwrap_or(&Value::Null);
    let spec = out.spec("TargetGroup", &g);
    spec.insert("network".into(), json!(network));
    for k in ["protocol", "protocolVersion", "port"] {
        if let Some(x) = config.get(k) {
            spec.insert(k.into(), x.clone());
        }
    }
    spec.entry("targets").or_insert_with(|| json!([]));
    if let Some(h) = config.get("healthCheck") {
        let mut hc = Map::new();
        for (from, to) in [
            ("enabled", "enabled"),
            ("healthCheckIntervalSeconds", "intervalSeconds"),
            ("healthCheckTimeoutSeconds", "timeoutSeconds"),
            ("healthyThresholdCount", "healthyThreshold"),
            ("unhealthyThresholdCount", "unhealthyThreshold"),
            ("path", "path"),
            ("port", "port"),
            ("protocol", "protocol"),
            ("matcher", "matcher"),
        ] {
            if let Some(x) = h.get(from) {
                hc.insert(to.into(), x.clone());
            }
        }
        spec.insert("healthCheck".into(), Value::Object(hc));
    }
}
