//! Rule matching (docs/routing.md). A rule's conditions are compiled once
//! per snapshot; a request matches when every condition it has holds:
//!
//! - path: `exact` is the whole path (no query string), `prefix` a string
//!   prefix of it, `regex` a regular expression the whole path matches;
//!   case-sensitive unless `caseSensitive: false`.
//! - method: exact, case-sensitive (RFC 9110 methods are).
//! - headers: the name is case-insensitive; the value matches `exact`,
//!   `prefix`, `contains` or `regex` (whole value), case-insensitively unless
//!   `caseSensitive: true`. Any one of several values of the header may
//!   match; a missing header matches nothing. `present: true` holds when
//!   the header is sent at all, `present: false` when it is not.
//! - query: the parameter's name (case-sensitive) and its percent-decoded
//!   value, `exact` or whole-value `regex` (case-sensitive), or `present`.
//!   A parameter sent more than once must satisfy the condition with every
//!   value (so a second value cannot route a request one way while the
//!   target reads another); a value that does not decode to UTF-8 satisfies
//!   no value condition.
//! - host: the request's host (Host or :authority, port removed) equal to
//!   the rule's, ignoring case; `*.example.com` matches any name below
//!   example.com, not example.com itself.

use http::{HeaderMap, HeaderName, Method, Uri};
use regex::Regex;
use trellis_api::resource::{HeaderMatch, PathMatch, QueryMatch, RuleMatch};

/// What a rule looks at in a request: hyper's parsed request (HTTP/2, and
/// the HTTP/1 requests `h1` hands over), or the HTTP/1 path's own head.
pub trait RequestView {
    fn method(&self) -> &str;
    /// The path, without the query string.
    fn path(&self) -> &str;
    /// The host as sent (absolute URI or `:authority`, else Host), maybe
    /// with a port.
    fn raw_host(&self) -> Option<&str>;
    /// The query string as sent (without the `?`), if any.
    fn query(&self) -> Option<&str>;
    /// Whether any value of header `name` that is text (visible ASCII, as
    /// `HeaderValue::to_str` takes it) satisfies `f`.
    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&str) -> bool) -> bool;
    /// Whether header `name` is sent, whatever its value.
    fn has_header(&self, name: &HeaderName) -> bool;

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

    fn query(&self) -> Option<&str> {
        self.uri.query()
    }

    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.headers
            .get_all(name)
            .iter()
            .any(|v| v.to_str().is_ok_and(&mut *f))
    }

    fn has_header(&self, name: &HeaderName) -> bool {
        self.headers.contains_key(name)
    }
}

#[derive(Debug)]
enum Text {
    Exact(String),
    Prefix(String),
    Contains(String),
    Regex(Regex, Prefilter),
}

impl Text {
    /// `value` is already lowercased when the match ignores case.
    fn matches(&self, value: &str) -> bool {
        match self {
            Text::Exact(s) => value == s,
            Text::Prefix(s) => value.starts_with(s.as_str()),
            Text::Contains(s) => value.contains(s.as_str()),
            Text::Regex(r, pre) => pre.admits(value) && r.is_match(value),
        }
    }

    /// A compiled regex; `case_sensitive` as it was compiled (values are
    /// lowercased before an insensitive one sees them).
    fn regex(r: Result<Regex, String>, case_sensitive: bool) -> Result<Text, MatchError> {
        let r = r.map_err(MatchError)?;
        let pre = Prefilter::of(r.as_str(), case_sensitive);
        Ok(Text::Regex(r, pre))
    }
}

/// The literals every match of an (anchored) regex begins with, when it has
/// few: a value starting with none of them is refused without running the
/// regex. A route table of many path regexes mostly fails this way, for
/// the price of a `starts_with` each (docs/benchmarks.md, "Route tables").
#[derive(Debug)]
struct Prefilter(Option<Box<[Box<[u8]>]>>);

impl Prefilter {
    /// Literals beyond this many are not worth checking one by one.
    const MAX: usize = 8;

    fn of(pattern: &str, case_sensitive: bool) -> Prefilter {
        use regex_syntax::hir::literal::{ExtractKind, Extractor};
        // Parsed as it was compiled: an insensitive regex's literals come
        // in every case, the lowercased value's among them.
        let mut parser = regex_syntax::ParserBuilder::new()
            .case_insensitive(!case_sensitive)
            .build();
        let Ok(hir) = parser.parse(pattern) else {
            return Prefilter(None);
        };
        let seq = Extractor::new().kind(ExtractKind::Prefix).extract(&hir);
        let Some(literals) = seq.literals() else {
            return Prefilter(None);
        };
        if literals.is_empty() || literals.iter().any(|l| l.is_empty()) {
            return Prefilter(None);
        }
        if literals.len() <= Prefilter::MAX {
            return Prefilter(Some(literals.iter().map(|l| l.as_bytes().into()).collect()));
        }
        // Many (`/v[0-9]`): what they all begin with.
        match seq.longest_common_prefix() {
            Some(common) if !common.is_empty() => Prefilter(Some(Box::new([common.into()]))),
            _ => Prefilter(None),
        }
    }

    fn admits(&self, value: &str) -> bool {
        match &self.0 {
            None => true,
            Some(literals) => literals.iter().any(|l| value.as_bytes().starts_with(l)),
        }
    }
}

#[derive(Debug)]
struct PathCond {
    text: Text,
    case_sensitive: bool,
}

#[derive(Debug)]
enum Test {
    Value(Text),
    Present,
    Absent,
}

#[derive(Debug)]
struct HeaderCond {
    name: HeaderName,
    test: Test,
    case_sensitive: bool,
}

#[derive(Debug)]
struct QueryCond {
    name: String,
    test: Test,
}

impl QueryCond {
    fn holds(&self, query: Option<&str>) -> bool {
        let mut values = query
            .unwrap_or_default()
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .filter(|(name, _)| decode(name).as_deref() == Some(self.name.as_str()))
            .map(|(_, value)| decode(value))
            .peekable();
        match &self.test {
            Test::Present => values.peek().is_some(),
            Test::Absent => values.peek().is_none(),
            Test::Value(text) => {
                values.peek().is_some() && values.all(|v| v.is_some_and(|v| text.matches(&v)))
            }
        }
    }
}

/// Percent-decoded text, or None if it is not UTF-8 then.
fn decode(s: &str) -> Option<std::borrow::Cow<'_, str>> {
    percent_encoding::percent_decode_str(s).decode_utf8().ok()
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
    /// gRPC names by regular expressions: (service, method), each matched
    /// against its own segment of `/Service/Method`.
    grpc: Option<(Option<Regex>, Option<Regex>)>,
    method: Option<Method>,
    headers: Vec<HeaderCond>,
    query: Vec<QueryCond>,
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
            path: m.path_condition().as_deref().map(path).transpose()?,
            grpc: m
                .grpc
                .as_ref()
                .and_then(|g| g.compiled())
                .transpose()
                .map_err(MatchError)?,
            method: m
                .method
                .as_deref()
                .map(|s| Method::from_bytes(s.as_bytes()).map_err(|e| MatchError(e.to_string())))
                .transpose()?,
            headers: m.headers.iter().map(header).collect::<Result<_, _>>()?,
            query: m.query.iter().map(query).collect::<Result<_, _>>()?,
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
        if let Some((service, method)) = &self.grpc {
            let named = req.path().strip_prefix('/').and_then(|p| p.split_once('/'));
            let Some((s, m)) =
                named.filter(|(s, m)| !s.is_empty() && !m.is_empty() && !m.contains('/'))
            else {
                return false;
            };
            if !service.as_ref().is_none_or(|r| r.is_match(s))
                || !method.as_ref().is_none_or(|r| r.is_match(m))
            {
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
        let headers = self.headers.iter().all(|h| match &h.test {
            Test::Present => req.has_header(&h.name),
            Test::Absent => !req.has_header(&h.name),
            Test::Value(text) => req.any_value(&h.name, &mut |v| {
                if h.case_sensitive {
                    text.matches(v)
                } else {
                    text.matches(&v.to_ascii_lowercase())
                }
            }),
        });
        headers && self.query.iter().all(|q| q.holds(req.query()))
    }
}

fn path(p: &PathMatch) -> Result<PathCond, MatchError> {
    let text = match (&p.exact, &p.prefix, p.compiled_regex()) {
        (Some(e), _, _) => Text::Exact(fold(e, p.case_sensitive)),
        (None, Some(pre), _) => Text::Prefix(fold(pre, p.case_sensitive)),
        (None, None, Some(r)) => Text::regex(r, p.case_sensitive)?,
        (None, None, None) => {
            return Err(MatchError(
                "path match without exact, prefix or regex".into(),
            ));
        }
    };
    Ok(PathCond {
        text,
        case_sensitive: p.case_sensitive,
    })
}

fn header(h: &HeaderMatch) -> Result<HeaderCond, MatchError> {
    let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| MatchError(e.to_string()))?;
    let cs = h.case_sensitive;
    let test = if let Some(v) = &h.exact {
        Test::Value(Text::Exact(fold(v, cs)))
    } else if let Some(v) = &h.prefix {
        Test::Value(Text::Prefix(fold(v, cs)))
    } else if let Some(v) = &h.contains {
        Test::Value(Text::Contains(fold(v, cs)))
    } else if let Some(compiled) = h.compiled_regex() {
        Test::Value(Text::regex(compiled, cs)?)
    } else if let Some(present) = h.present {
        if present { Test::Present } else { Test::Absent }
    } else {
        return Err(MatchError(format!(
            "header match {} has no condition",
            h.name
        )));
    };
    Ok(HeaderCond {
        name,
        test,
        case_sensitive: cs,
    })
}

fn query(q: &QueryMatch) -> Result<QueryCond, MatchError> {
    let test = if let Some(v) = &q.exact {
        Test::Value(Text::Exact(v.clone()))
    } else if let Some(compiled) = q.compiled_regex() {
        Test::Value(Text::regex(compiled, true)?)
    } else if let Some(present) = q.present {
        if present { Test::Present } else { Test::Absent }
    } else {
        return Err(MatchError(format!(
            "query match {} has no condition",
            q.name
        )));
    };
    Ok(QueryCond {
        name: q.name.clone(),
        test,
    })
}

#[cfg(test)]
mod prefilter_tests {
    use super::Prefilter;

    #[test]
    fn literals_every_match_begins_with() {
        let p = Prefilter::of("^(?:/api/v[0-9]+/item-3/.*)$", true);
        assert!(p.admits("/api/v2/item-3/x") && !p.admits("/") && !p.admits("/API/v2"));
        let p = Prefilter::of("^(?:/(a|b)/x)$", true);
        assert!(p.admits("/a/x") && p.admits("/b/x") && !p.admits("/b/") && !p.admits("/c/x"));
        // Insensitive: the lowercased value passes.
        let p = Prefilter::of("^(?:/API/.*)$", false);
        assert!(p.admits("/api/x"));
        // Nothing every match begins with: no filter.
        for open in ["^(?:.*x)$", "^(?:[a-z]+/x)$", "^(?:[a-z]*)$"] {
            let p = Prefilter::of(open, true);
            assert!(p.admits("/zzz"), "{open}");
        }
    }
}
