//! What a rule's action does besides choosing a target group (the Gateway
//! API's filters): header changes on the request to the target and on the
//! response to the client, and redirects. Compiled once per snapshot from
//! what the control plane validated (names, values, the proxy's own
//! headers refused there).

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use trellis_api::resource::{
    HeaderModifier, ListenerProtocol, PathReplace, Redirect as RedirectSpec, Rewrite as RewriteSpec,
};

/// Header changes: `remove`, then `set` (every value replaced), then `add`.
#[derive(Debug, Default)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

fn pairs(list: &[trellis_api::resource::HeaderPair]) -> Vec<(HeaderName, HeaderValue)> {
    list.iter()
        .filter_map(|h| {
            Some((
                HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                HeaderValue::from_str(&h.value).ok()?,
            ))
        })
        .collect()
}

impl HeaderEdits {
    pub fn compile(m: &HeaderModifier) -> HeaderEdits {
        HeaderEdits {
            remove: m
                .remove
                .iter()
                .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
                .collect(),
            set: pairs(&m.set),
            add: pairs(&m.add),
        }
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

/// A new path: the whole of it, or in place of the `matched` bytes the
/// rule's prefix condition matched (a string prefix, as the condition is).
#[derive(Debug)]
pub enum PathRewrite {
    Full(String),
    Prefix { matched: usize, with: String },
}

impl PathRewrite {
    /// `p` for a rule whose path condition is a prefix of `matched` bytes.
    pub fn compile(p: &PathReplace, matched: Option<usize>) -> Option<PathRewrite> {
        match (&p.full, &p.prefix, matched) {
            (Some(full), _, _) => Some(PathRewrite::Full(full.clone())),
            (None, Some(with), Some(matched)) => Some(PathRewrite::Prefix {
                matched,
                with: with.clone(),
            }),
            _ => None,
        }
    }

    /// The new path for `path` (which the rule matched).
    pub fn apply(&self, path: &str) -> String {
        match self {
            PathRewrite::Full(p) => p.clone(),
            PathRewrite::Prefix { matched, with } => {
                let rest = path.get(*matched..).unwrap_or_default();
                // "/v2/" + "/items" reads as "/v2/items", "/" + "" as "/".
                let mut out = with.trim_end_matches('/').to_string();
                if !rest.is_empty() && !rest.starts_with('/') && with.ends_with('/') {
                    out.push('/');
                }
                out.push_str(rest);
                if out.is_empty() {
                    out.push('/');
                }
                out
            }
        }
    }
}

/// The host and path a target is sent.
#[derive(Debug)]
pub struct Rewrite {
    pub host: Option<HeaderValue>,
    pub path: Option<PathRewrite>,
}

/// What a forwarding action changes besides the target.
#[derive(Debug, Default)]
pub struct Edits {
    pub request: Option<HeaderEdits>,
    pub response: Option<HeaderEdits>,
    pub rewrite: Option<Rewrite>,
}

impl Edits {
    /// An action's changes; `matched` is the length of the rule's path
    /// prefix condition, if it has one.
    pub fn compile(
        request: Option<&HeaderModifier>,
        response: Option<&HeaderModifier>,
        rewrite: Option<&RewriteSpec>,
        matched: Option<usize>,
    ) -> Edits {
        Edits {
            request: request.map(HeaderEdits::compile),
            response: response.map(HeaderEdits::compile),
            rewrite: rewrite.map(|r| Rewrite {
                host: r
                    .hostname
                    .as_deref()
                    .and_then(|h| HeaderValue::from_str(h).ok()),
                path: r
                    .path
                    .as_ref()
                    .and_then(|p| PathRewrite::compile(p, matched)),
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.request.is_none() && self.response.is_none() && self.rewrite.is_none()
    }
}

/// A redirect, with the listener's scheme and port for what it keeps.
#[derive(Debug)]
pub struct Redirect {
    scheme: &'static str,
    /// The scheme was given: the port is then the scheme's own, unless
    /// given too.
    scheme_given: bool,
    host: Option<String>,
    port: Option<u16>,
    listener_port: u16,
    path: Option<PathRewrite>,
    pub status: StatusCode,
}

fn default_port(scheme: &str) -> u16 {
    if scheme == "https" { 443 } else { 80 }
}

impl Redirect {
    pub fn compile(
        r: &RedirectSpec,
        protocol: ListenerProtocol,
        listener_port: u16,
        matched: Option<usize>,
    ) -> Redirect {
        let (scheme, scheme_given) = match r.scheme.as_deref() {
            Some("https") => ("https", true),
            Some(_) => ("http", true),
            None if protocol == ListenerProtocol::Https => ("https", false),
            None => ("http", false),
        };
        Redirect {
            scheme,
            scheme_given,
            host: r.hostname.clone(),
            port: r.port,
            listener_port,
            path: r
                .path
                .as_ref()
                .and_then(|p| PathRewrite::compile(p, matched)),
            status: StatusCode::from_u16(r.status_code).unwrap_or(StatusCode::FOUND),
        }
    }

    /// Where the client goes: each part the redirect gives replaces the
    /// request's (`host` without port, `path` without query); the query is
    /// kept; the port is left out when it is the scheme's own. `None` when
    /// neither the redirect nor the request names a host.
    pub fn location(&self, host: Option<&str>, path: &str, query: Option<&str>) -> Option<String> {
        let host = self.host.as_deref().or(host)?;
        let port = match (self.port, self.scheme_given) {
            (Some(p), _) => p,
            (None, true) => default_port(self.scheme),
            (None, false) => self.listener_port,
        };
        let mut out = format!("{}://", self.scheme);
        if host.contains(':') {
            out.push_str(&format!("[{host}]"));
        } else {
            out.push_str(host);
        }
        if port != default_port(self.scheme) {
            out.push_str(&format!(":{port}"));
        }
        match &self.path {
            Some(p) => out.push_str(&p.apply(path)),
            None => out.push_str(path),
        }
        if let Some(q) = query {
            out.push('?');
            out.push_str(q);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn redirect(spec: serde_json::Value, protocol: ListenerProtocol, port: u16) -> Redirect {
        Redirect::compile(
            &serde_json::from_value(spec).unwrap(),
            protocol,
            port,
            Some(4),
        )
    }

    #[test]
    fn locations_keep_what_the_redirect_does_not_replace() {
        use ListenerProtocol::{Http, Https};
        let cases = [
            // (redirect, listener, request host, path, query, location)
            (
                json!({}),
                Http,
                80,
                "a.example",
                "/x",
                Some("q=1"),
                "http://a.example/x?q=1",
            ),
            (
                json!({"scheme": "https"}),
                Http,
                80,
                "a.example",
                "/x",
                None,
                "https://a.example/x",
            ),
            // A scheme given: that scheme's port, not the listener's.
            (
                json!({"scheme": "https"}),
                Http,
                8080,
                "a.example",
                "/",
                None,
                "https://a.example/",
            ),
            (
                json!({}),
                Http,
                8080,
                "a.example",
                "/",
                None,
                "http://a.example:8080/",
            ),
            (
                json!({"hostname": "b.example", "port": 8443, "scheme": "https"}),
                Http,
                80,
                "a.example",
                "/x",
                None,
                "https://b.example:8443/x",
            ),
            (
                json!({"path": {"full": "/new"}, "statusCode": 301}),
                Https,
                443,
                "a.example",
                "/old",
                Some("v=2"),
                "https://a.example/new?v=2",
            ),
            // In place of the rule's 4-byte prefix (`/old`).
            (
                json!({"path": {"prefix": "/new"}}),
                Http,
                80,
                "a.example",
                "/old/x",
                None,
                "http://a.example/new/x",
            ),
            (
                json!({"port": 80}),
                Https,
                443,
                "a.example",
                "/",
                None,
                "https://a.example:80/",
            ),
            (
                json!({}),
                Http,
                80,
                "fd00::1",
                "/",
                None,
                "http://[fd00::1]/",
            ),
        ];
        for (spec, protocol, port, host, path, query, want) in cases {
            let r = redirect(spec.clone(), protocol, port);
            assert_eq!(
                r.location(Some(host), path, query).as_deref(),
                Some(want),
                "{spec}"
            );
        }
        assert_eq!(
            redirect(json!({}), Http, 80).location(None, "/", None),
            None
        );
        assert_eq!(
            redirect(json!({"hostname": "b.example"}), Http, 80)
                .location(None, "/", None)
                .as_deref(),
            Some("http://b.example/")
        );
        assert_eq!(redirect(json!({"statusCode": 308}), Http, 80).status, 308);
    }

    #[test]
    fn prefixes_are_replaced_as_the_gateway_api_does() {
        let prefix = |matched: &str, with: &str, path: &str| {
            PathRewrite::Prefix {
                matched: matched.len(),
                with: with.into(),
            }
            .apply(path)
        };
        assert_eq!(prefix("/foo", "/xyz", "/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo", "/xyz", "/foo"), "/xyz");
        assert_eq!(prefix("/foo", "/", "/foo/bar"), "/bar");
        assert_eq!(prefix("/foo", "/", "/foo"), "/");
        assert_eq!(prefix("/foo/", "/xyz/", "/foo/bar"), "/xyz/bar");
        assert_eq!(prefix("/foo/", "/xyz", "/foo/bar"), "/xyzbar");
        assert_eq!(prefix("/foo", "/xyz/", "/foobar"), "/xyz/bar");
        assert_eq!(PathRewrite::Full("/a".into()).apply("/b/c"), "/a");
    }

    #[test]
    fn header_edits_remove_then_set_then_add() {
        let edits = HeaderEdits::compile(
            &serde_json::from_value(json!({
                "remove": ["x-drop"],
                "set": [{"name": "x-env", "value": "canary"}],
                "add": [{"name": "x-tag", "value": "b"}],
            }))
            .unwrap(),
        );
        let mut h = HeaderMap::new();
        h.insert("x-drop", HeaderValue::from_static("1"));
        h.append("x-env", HeaderValue::from_static("prod"));
        h.append("x-env", HeaderValue::from_static("dev"));
        h.insert("x-tag", HeaderValue::from_static("a"));
        edits.apply(&mut h);
        assert!(h.get("x-drop").is_none());
        assert_eq!(h.get_all("x-env").iter().collect::<Vec<_>>(), ["canary"]);
        assert_eq!(h.get_all("x-tag").iter().collect::<Vec<_>>(), ["a", "b"]);
    }
}
