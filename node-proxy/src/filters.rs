//! What a rule's action does besides choosing a target group (the Gateway
//! API's filters): header changes on the request to the target and on the
//! response to the client, and redirects. Compiled once per snapshot from
//! what the control plane validated (names, values, the proxy's own
//! headers refused there).

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use trellis_api::resource::{
    Cors as CorsSpec, HeaderModifier, ListenerProtocol, PathReplace, Redirect as RedirectSpec,
    Rewrite as RewriteSpec,
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

/// An allowed origin: exact, or `scheme://*.suffix[:port]`.
#[derive(Debug)]
enum Origin {
    Any,
    Exact(String),
    Below {
        head: String,
        suffix: String,
        port: String,
    },
}

impl Origin {
    fn parse(s: &str) -> Origin {
        let s = s.to_ascii_lowercase();
        if s == "*" {
            return Origin::Any;
        }
        match s.split_once("://*.") {
            Some((scheme, rest)) => {
                let (host, port) = match rest.rsplit_once(':') {
                    Some((h, p)) if p.parse::<u16>().is_ok() => (h, format!(":{p}")),
                    _ => (rest, String::new()),
                };
                Origin::Below {
                    head: format!("{scheme}://"),
                    suffix: format!(".{host}"),
                    port,
                }
            }
            None => Origin::Exact(s),
        }
    }

    /// `origin` is lowercased.
    fn allows(&self, origin: &str) -> bool {
        match self {
            Origin::Any => true,
            Origin::Exact(o) => o == origin,
            Origin::Below { head, suffix, port } => origin
                .strip_prefix(head.as_str())
                .and_then(|rest| rest.strip_suffix(port.as_str()))
                .is_some_and(|host| {
                    host.len() > suffix.len()
                        && host.ends_with(suffix.as_str())
                        && !host.contains(':')
                }),
        }
    }
}

/// Cross-origin requests: preflights answered by the proxy, allowed
/// origins' responses marked.
#[derive(Debug)]
pub struct Cors {
    origins: Vec<Origin>,
    /// `*` in the methods or headers: the preflight's request echoed.
    methods: Option<HeaderValue>,
    headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    max_age: Option<HeaderValue>,
    credentials: bool,
}

fn joined(list: &[String]) -> Option<HeaderValue> {
    if list.is_empty() || list.iter().any(|v| v == "*") {
        return None;
    }
    HeaderValue::from_str(&list.join(", ")).ok()
}

pub(crate) const ALLOW_ORIGIN: &str = "access-control-allow-origin";

impl Cors {
    pub fn compile(c: &CorsSpec) -> Cors {
        Cors {
            origins: c.allow_origins.iter().map(|o| Origin::parse(o)).collect(),
            methods: joined(&c.allow_methods).or_else(|| {
                c.allow_methods
                    .is_empty()
                    .then(|| HeaderValue::from_static("GET, HEAD, POST"))
            }),
            headers: joined(&c.allow_headers),
            expose: joined(&c.expose_headers),
            max_age: c.max_age_seconds.map(HeaderValue::from),
            credentials: c.allow_credentials,
        }
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        origin.to_str().is_ok_and(|o| {
            self.origins
                .iter()
                .any(|p| p.allows(&o.to_ascii_lowercase()))
        })
    }

    /// What `Access-Control-Allow-Origin` says to `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        let any = self.origins.iter().any(|o| matches!(o, Origin::Any));
        if any && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// Whether `req` is a preflight (OPTIONS with an `Origin` and an
    /// `Access-Control-Request-Method`): the proxy answers those.
    pub fn is_preflight(method: &http::Method, req: &HeaderMap) -> bool {
        method == http::Method::OPTIONS
            && req.contains_key(http::header::ORIGIN)
            && req.contains_key("access-control-request-method")
    }

    /// The headers of the proxy's answer (204) to a preflight `req`: the
    /// grants when its origin is allowed, none when not (the browser then
    /// refuses the call).
    pub fn preflight(&self, req: &HeaderMap) -> HeaderMap {
        let mut out = HeaderMap::new();
        out.insert(http::header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = req.get(http::header::ORIGIN).filter(|o| self.allowed(o)) else {
            return out;
        };
        out.insert(ALLOW_ORIGIN, self.allow_origin(origin));
        let echo = |name: &str| req.get(name).cloned();
        if let Some(m) = self
            .methods
            .clone()
            .or_else(|| echo("access-control-request-method"))
        {
            out.insert("access-control-allow-methods", m);
        }
        if let Some(h) = self
            .headers
            .clone()
            .or_else(|| echo("access-control-request-headers"))
        {
            out.insert("access-control-allow-headers", h);
        }
        if let Some(age) = &self.max_age {
            out.insert("access-control-max-age", age.clone());
        }
        if self.credentials {
            out.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
        out
    }

    /// Marks the response to an actual request from `origin`, if allowed.
    pub fn mark(&self, origin: Option<&HeaderValue>, resp: &mut HeaderMap) {
        resp.append(http::header::VARY, HeaderValue::from_static("Origin"));
        let Some(origin) = origin.filter(|o| self.allowed(o)) else {
            return;
        };
        resp.insert(ALLOW_ORIGIN, self.allow_origin(origin));
        if let Some(e) = &self.expose {
            resp.insert("access-control-expose-headers", e.clone());
        }
        if self.credentials {
            resp.insert(
                "access-control-allow-credentials",
                HeaderValue::from_static("true"),
            );
        }
    }
}

/// What a forwarding action changes besides the target.
#[derive(Debug, Default)]
pub struct Edits {
    pub request: Option<HeaderEdits>,
    pub response: Option<HeaderEdits>,
    pub rewrite: Option<Rewrite>,
    pub cors: Option<Cors>,
}

impl Edits {
    /// An action's changes; `matched` is the length of the rule's path
    /// prefix condition, if it has one.
    pub fn compile(
        request: Option<&HeaderModifier>,
        response: Option<&HeaderModifier>,
        rewrite: Option<&RewriteSpec>,
        cors: Option<&CorsSpec>,
        matched: Option<usize>,
    ) -> Edits {
        Edits {
            request: request.map(HeaderEdits::compile),
            response: response.map(HeaderEdits::compile),
            cors: cors.map(Cors::compile),
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
        self.request.is_none()
            && self.response.is_none()
            && self.rewrite.is_none()
            && self.cors.is_none()
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
