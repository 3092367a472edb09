//! Rule matching (docs/routing.md). A rule's conditions are compiled once
//! per snapshot; a request matches when every condition it has holds:
//!
//! - path: `exact` is the whole path (no query string), `prefix` a string
//!   prefix of it; case-sensitive unless `caseSensitive: false`.
//! - method: exact, case-sensitive (RFC 9110 methods are).
//! - headers: the name is case-insensitive; the value matches `exact`,
//!   `prefix`, `contains` or `regex` (whole value), case-insensitively unless
//!   `caseSensitive: true`. Any one of several values of the header may
//!   match; a missing header matches nothing.
//! - host: the request's host (Host or :authority, port removed) equal to
//!   the rule's, ignoring case; `*.example.com` matches any name below
//!   example.com, not example.com itself.

use http::{HeaderMap, HeaderName, Method, Uri};
use regex::Regex;
use trellis_api::resource::{HeaderMatch, PathMatch, RuleMatch};

/// What a rule looks at in a request: hyper's parsed request (HTTP/2, and
/// the HTTP/1 requests `h1` hands over), or the HTTP/1 path's own head.
pub trait RequestView {
    fn method(&self) -> &str;
    /// The path, without the query string.
    fn path(&self) -> &str;
    /// The host as sent (absolute URI or `:authority`, else Host), maybe
    /// with a port.
    fn raw_host(&self) -> Option<&str>;
    /// Whether any value of header `name` that is text (visible ASCII, as
    /// `HeaderValue::to_str` takes it) satisfies `f`.
    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&str) -> bool) -> bool;

    /// The host without port.
    fn host(&self) -> Option<&str> {
        let raw = self.raw_host()?;
        // [v6]:port, v4:port, name:port
        Some(match raw.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => raw.split(':').next().unwrap_or(raw),
        })
    }
}

/// A request as hyper parsed it.
pub struct RequestParts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

impl RequestView for RequestParts<'_> {
    fn method(&self) -> &str {
        self.method.as_str()
    }

    fn path(&self) -> &str {
        self.uri.path()
    }

    fn raw_host(&self) -> Option<&str> {
        self.uri
            .host()
            .or_else(|| self.headers.get(http::header::HOST)?.to_str().ok())
    }

    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(&mut *f))
    }
}

#[derive(Debug)]
enum Text {
    Exact(String),
    Prefix(String),
    Contains(String),
    Regex(Regex),
}

impl Text {
    /// `value` is already lowercased when the match ignores case.
    fn matches(&self, value: &str) -> bool {
        match self {
            Text::Exact(s) => value == s,
            Text::Prefix(s) => value.starts_with(s.as_str()),
            Text::Contains(s) => value.contains(s.as_str()),
            Text::Regex(r) => r.is_match(value),
        }
    }
}

#[derive(Debug)]
struct PathCond {
    text: Text,
    case_sensitive: bool,
}

#[derive(Debug)]
struct HeaderCond {
    name: HeaderName,
    text: Text,
    case_sensitive: bool,
}

#[derive(Debug)]
enum HostCond {
    Exact(String),
    /// ".example.com" for `*.example.com`.
    Below(String),
}

#[derive(Debug, Default)]
pub struct Matcher {
    path: Option<PathCond>,
    method: Option<Method>,
    headers: Vec<HeaderCond>,
    host: Option<HostCond>,
}

/// A condition the control plane let through but this node cannot use
/// (it validates the same things, so this only guards against skew).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MatchError(String);

fn fold(s: &str, case_sensitive: bool) -> String {
    if case_sensitive {
        s.to_string()
    } else {
        s.to_ascii_lowercase()
    }
}

impl Matcher {
    pub fn compile(m: &RuleMatch) -> Result<Matcher, MatchError> {
        Ok(Matcher {
            path: m.path.as_ref().map(path).transpose()?,
            method: m
                .method
                .as_deref()
                .map(|s| Method::from_bytes(s.as_bytes()).map_err(|e| MatchError(e.to_string())))
                .transpose()?,
            headers: m.headers.iter().map(header).collect::<Result<_, _>>()?,
            host: m.host.as_deref().map(|h| {
                let h = h.trim_end_matches('.').to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(below) => HostCond::Below(below.to_string()),
                    None => HostCond::Exact(h),
                }
            }),
        })
    }

    pub fn matches(&self, req: &impl RequestView) -> bool {
        if let Some(m) = &self.method {
            if req.method() != m.as_str() {
                return false;
            }
        }
        if let Some(p) = &self.path {
            let path = req.path();
            let ok = if p.case_sensitive {
                p.text.matches(path)
            } else {
                p.text.matches(&path.to_ascii_lowercase())
            };
            if !ok {
                return false;
            }
        }
        if let Some(h) = &self.host {
            let Some(host) = req.host() else { return false };
            let host = host.trim_end_matches('.').to_ascii_lowercase();
            let ok = match h {
                HostCond::Exact(e) => host == *e,
                HostCond::Below(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
            };
            if !ok {
                return false;
            }
        }
        self.headers.iter().all(|h| {
            req.any_value(&h.name, &mut |v| {
                if h.case_sensitive {
                    h.text.matches(v)
                } else {
                    h.text.matches(&v.to_ascii_lowercase())
                }
            })
        })
    }
}

fn path(p: &PathMatch) -> Result<PathCond, MatchError> {
    let text = match (&p.exact, &p.prefix) {
        (Some(e), _) => Text::Exact(fold(e, p.case_sensitive)),
        (None, Some(pre)) => Text::Prefix(fold(pre, p.case_sensitive)),
        (None, None) => return Err(MatchError("path match without exact or prefix".into())),
    };
    Ok(PathCond {
        text,
        case_sensitive: p.case_sensitive,
    })
}

fn header(h: &HeaderMatch) -> Result<HeaderCond, MatchError> {
    let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| MatchError(e.to_string()))?;
    let cs = h.case_sensitive;
    let text = if let Some(v) = &h.exact {
        Text::Exact(fold(v, cs))
    } else if let Some(v) = &h.prefix {
        Text::Prefix(fold(v, cs))
    } else if let Some(v) = &h.contains {
        Text::Contains(fold(v, cs))
    } else if let Some(compiled) = h.compiled_regex() {
        Text::Regex(compiled.map_err(MatchError)?)
    } else {
        return Err(MatchError(format!(
            "header match {} has no condition",
            h.name
        )));
    };
    Ok(HeaderCond {
        name,
        text,
        case_sensitive: cs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(yaml: serde_json::Value) -> Matcher {
        Matcher::compile(&serde_json::from_value(yaml).unwrap()).unwrap()
    }

    fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> (Method, Uri, HeaderMap) {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        (method.parse().unwrap(), uri.parse().unwrap(), h)
    }

    /// (conditions, (method, uri, headers), expected)
    type Case<'a> = (
        serde_json::Value,
        (&'a str, &'a str, Vec<(&'a str, &'a str)>),
        bool,
    );

    #[test]
    fn conditions_match_as_documented() {
        use serde_json::json;
        let cases: Vec<Case<'_>> = vec![
            // path exact: whole path, query ignored, case-sensitive by default
            (
                json!({"path": {"exact": "/api"}}),
                ("GET", "/api?x=1", vec![]),
                true,
            ),
            (
                json!({"path": {"exact": "/api"}}),
                ("GET", "/api/", vec![]),
                false,
            ),
            (
                json!({"path": {"exact": "/api"}}),
                ("GET", "/API", vec![]),
                false,
            ),
            (
                json!({"path": {"exact": "/api", "caseSensitive": false}}),
                ("GET", "/API", vec![]),
                true,
            ),
            // path prefix: a string prefix
            (
                json!({"path": {"prefix": "/api/v2"}}),
                ("GET", "/api/v2/items", vec![]),
                true,
            ),
            (
                json!({"path": {"prefix": "/api/v2"}}),
                ("GET", "/api/v2", vec![]),
                true,
            ),
            (
                json!({"path": {"prefix": "/api/v2"}}),
                ("GET", "/api/v1", vec![]),
                false,
            ),
            (
                json!({"path": {"prefix": "/Api", "caseSensitive": false}}),
                ("GET", "/aPI/x", vec![]),
                true,
            ),
            // method: exact
            (json!({"method": "DELETE"}), ("DELETE", "/", vec![]), true),
            (json!({"method": "DELETE"}), ("GET", "/", vec![]), false),
            // headers: name case-insensitive, value case-insensitive by default
            (
                json!({"headers": [{"name": "X-Beta", "exact": "true"}]}),
                ("GET", "/", vec![("x-beta", "TRUE")]),
                true,
            ),
            (
                json!({"headers": [{"name": "x-beta", "exact": "true", "caseSensitive": true}]}),
                ("GET", "/", vec![("x-beta", "TRUE")]),
                false,
            ),
            (
                json!({"headers": [{"name": "x-beta", "exact": "true"}]}),
                ("GET", "/", vec![]),
                false,
            ),
            (
                json!({"headers": [{"name": "user-agent", "prefix": "curl/"}]}),
                ("GET", "/", vec![("user-agent", "curl/8.1")]),
                true,
            ),
            (
                json!({"headers": [{"name": "cookie", "contains": "canary=1"}]}),
                ("GET", "/", vec![("cookie", "a=b; canary=1")]),
                true,
            ),
            (
                json!({"headers": [{"name": "x-v", "regex": "v[0-9]+"}]}),
                ("GET", "/", vec![("x-v", "v12")]),
                true,
            ),
            // a regex matches the whole value
            (
                json!({"headers": [{"name": "x-v", "regex": "v[0-9]+"}]}),
                ("GET", "/", vec![("x-v", "v12x")]),
                false,
            ),
            // any value of a repeated header
            (
                json!({"headers": [{"name": "x-t", "exact": "b"}]}),
                ("GET", "/", vec![("x-t", "a"), ("x-t", "b")]),
                true,
            ),
            // every header condition must hold
            (
                json!({"headers": [{"name": "a", "exact": "1"}, {"name": "b", "exact": "2"}]}),
                ("GET", "/", vec![("a", "1")]),
                false,
            ),
            // host: exact, port and case ignored; wildcard below only
            (
                json!({"host": "shop.example.com"}),
                ("GET", "/", vec![("host", "Shop.Example.com:8080")]),
                true,
            ),
            (
                json!({"host": "*.example.com"}),
                ("GET", "/", vec![("host", "a.b.example.com")]),
                true,
            ),
            (
                json!({"host": "*.example.com"}),
                ("GET", "/", vec![("host", "example.com")]),
                false,
            ),
            (
                json!({"host": "shop.example.com"}),
                ("GET", "http://shop.example.com/x", vec![]),
                true,
            ),
            (
                json!({"host": "shop.example.com"}),
                ("GET", "/", vec![]),
                false,
            ),
            // all conditions together
            (
                json!({"path": {"prefix": "/admin"}, "method": "DELETE"}),
                ("DELETE", "/admin/x", vec![]),
                true,
            ),
            (
                json!({"path": {"prefix": "/admin"}, "method": "DELETE"}),
                ("GET", "/admin/x", vec![]),
                false,
            ),
            // no conditions: matches everything
            (json!({}), ("PATCH", "/anything", vec![]), true),
        ];
        for (cond, (method, uri, headers), expected) in cases {
            let m = rule(cond.clone());
            let (method, uri, headers) = request(method, uri, &headers);
            let view = RequestParts {
                method: &method,
                uri: &uri,
                headers: &headers,
            };
            assert_eq!(
                m.matches(&view),
                expected,
                "{cond} against {method} {uri} {headers:?}"
            );
        }
    }
}
