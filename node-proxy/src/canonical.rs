//! The one reading of a request that routing, auth policies, the access log
//! and the target all share (docs/routing.md, "Canonical requests"). A
//! request is read here once; every later stage sees the canonical target
//! and the single `Host`, so a rule, a policy and the target cannot
//! disagree on what was asked (`/public/../admin` is `/admin` to all of
//! them). Only the SigV4 check reads what the client sent, since that is
//! what it signed.
//!
//! Paths follow RFC 3986: percent-encoded unreserved characters are
//! decoded, other encodings written with upper-case hex, dot-segments
//! removed (after decoding, so `%2e%2e` is `..`), doubled slashes merged
//! unless the listener keeps them, and `%2F`/`%5C` refused unless the
//! listener keeps them opaque. Anything that is not a path, an absolute
//! URI, or `*` for OPTIONS is refused, as are bytes no URI may hold.

use http::header::{HOST, HeaderMap, HeaderValue};
use http::uri::Authority;
use http::{Method, Uri, Version};
use std::borrow::Cow;
use trellis_api::resource::{EscapedSlashes, PathNormalization};

/// Why a request cannot be read one way only: each is a 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadRequest {
    #[error("the request target is not a path, an absolute http(s) URI, or * with OPTIONS")]
    Form,
    #[error("byte {0:#04x} is not allowed in a request target")]
    Byte(u8),
    #[error("a % not followed by two hex digits in the request target")]
    Encoding,
    #[error("an encoded slash or backslash (%2F, %5C) in the path; this listener refuses them")]
    EscapedSlash,
    #[error("a dot-segment with parameters (`..;`) in the path: some servers read it as `..`")]
    DotParams,
    #[error("more than one Host header")]
    DuplicateHost,
    #[error("no Host header (HTTP/1.1 requires one)")]
    MissingHost,
    #[error("the Host header and the request's authority disagree")]
    HostMismatch,
    #[error("the host is not a valid name[:port] (user info is not allowed)")]
    BadHost,
}

/// How a listener reads paths, compiled from its `pathNormalization`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathRules {
    pub merge_slashes: bool,
    pub keep_escaped_slashes: bool,
}

impl From<&PathNormalization> for PathRules {
    fn from(p: &PathNormalization) -> PathRules {
        PathRules {
            merge_slashes: p.merge_slashes,
            keep_escaped_slashes: p.escaped_slashes == EscapedSlashes::Keep,
        }
    }
}

impl Default for PathRules {
    fn default() -> PathRules {
        (&PathNormalization::default()).into()
    }
}

/// RFC 3986 2.3.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// What may stand unencoded in a path segment or a query (RFC 3986 3.3,
/// 3.4: pchar, `/` and `?`), `%` aside.
fn plain(b: u8) -> bool {
    unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
        || matches!(b, b'/' | b'?')
}

/// Printable bytes URIs may not hold that clients still send unencoded
/// (`{`, `|`, `"`, ...): written percent-encoded, which every server reads
/// as the same character. `#`, `\`, space, controls and non-ASCII are
/// refused instead: each means something else to some reader.
fn encodable(b: u8) -> bool {
    matches!(
        b,
        b'"' | b'<' | b'>' | b'^' | b'`' | b'{' | b'|' | b'}' | b'[' | b']'
    )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// `.;x` or `..;x`: Tomcat and Spring read `/..;x/` as `/../`, others as a
/// name, so no reading of it is safe.
fn dot_params(segment: &[u8]) -> bool {
    segment.starts_with(b".;") || segment.starts_with(b"..;")
}

/// Writes `input` to `out` with each `%XX` as `escaped` says (`Some`: the
/// byte itself, `None`: the escape, its hex upper-cased), each printable
/// character URIs may not hold percent-encoded, and any other byte refused.
fn escapes(
    input: &[u8],
    out: &mut Vec<u8>,
    mut escaped: impl FnMut(u8) -> Result<Option<u8>, BadRequest>,
) -> Result<(), BadRequest> {
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        if b == b'%' {
            let (Some(h), Some(l)) = (
                input.get(i + 1).copied().and_then(hex),
                input.get(i + 2).copied().and_then(hex),
            ) else {
                return Err(BadRequest::Encoding);
            };
            match escaped(h << 4 | l)? {
                Some(c) => out.push(c),
                None => out.extend_from_slice(&[b'%', HEX[usize::from(h)], HEX[usize::from(l)]]),
            }
            i += 3;
            continue;
        }
        if plain(b) {
            out.push(b);
        } else if encodable(b) {
            out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        } else {
            return Err(BadRequest::Byte(b));
        }
        i += 1;
    }
    Ok(())
}

/// Whether an origin-form `target` is its own canonical form under any
/// listener's rules: the HTTP/1.1 fast path forwards such targets as they
/// are and hands every other one to the full path.
pub fn is_canonical(target: &str) -> bool {
    let bytes = target.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let path_end = bytes.iter().position(|&b| b == b'?').unwrap_or(bytes.len());
    let (path, query) = bytes.split_at(path_end);
    if !path.iter().all(|&b| plain(b)) || !query.iter().all(|&b| plain(b)) {
        return false;
    }
    // No "." or ".." segment, no empty one but a trailing slash's.
    let mut segments = path.split(|&b| b == b'/').skip(1).peekable();
    while let Some(seg) = segments.next() {
        let last = segments.peek().is_none();
        if seg == b"." || seg == b".." || dot_params(seg) || (seg.is_empty() && !last) {
            return false;
        }
    }
    true
}

/// The canonical origin-form target (path and query) of `raw`, which is
/// origin form already (it starts with `/`).
pub fn origin(raw: &str, rules: PathRules) -> Result<Cow<'_, str>, BadRequest> {
    if is_canonical(raw) {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(BadRequest::Form);
    }
    let path_end = bytes.iter().position(|&b| b == b'?').unwrap_or(bytes.len());
    let (path, query) = bytes.split_at(path_end);

    // Decode what needs no encoding; refuse what no reader agrees on.
    let mut decoded: Vec<u8> = Vec::with_capacity(path.len());
    escapes(path, &mut decoded, |c| {
        if unreserved(c) {
            Ok(Some(c))
        } else if matches!(c, b'/' | b'\\') && !rules.keep_escaped_slashes {
            Err(BadRequest::EscapedSlash)
        } else {
            Ok(None)
        }
    })?;

    // RFC 3986 5.2.4 on segments: "." goes, ".." takes the one before it
    // (never above the root); with merging, empty segments go too, except
    // a trailing one (`/a/` is not `/a`).
    let segments: Vec<&[u8]> = decoded.split(|&b| b == b'/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut out: Vec<&[u8]> = Vec::with_capacity(segments.len());
    let mut trailing = false;
    for (n, seg) in segments.iter().enumerate() {
        if dot_params(seg) {
            return Err(BadRequest::DotParams);
        }
        match *seg {
            b"." => trailing = n == last,
            b".." => {
                out.pop();
                trailing = n == last;
            }
            b"" if rules.merge_slashes && n != last => {}
            _ => {
                out.push(seg);
                trailing = false;
            }
        }
    }
    let mut canonical = Vec::with_capacity(raw.len());
    for seg in &out {
        canonical.push(b'/');
        canonical.extend_from_slice(seg);
    }
    if trailing || canonical.is_empty() {
        canonical.push(b'/');
    }

    // The query is kept as sent, its encodings upper-cased.
    escapes(query, &mut canonical, |_| Ok(None))?;
    // Every byte written is ASCII.
    String::from_utf8(canonical)
        .map(Cow::Owned)
        .map_err(|_| BadRequest::Form)
}

/// What the rest of the request path reads instead of the request line.
#[derive(Debug, PartialEq, Eq)]
pub enum Target {
    /// A path and query, canonical.
    Origin(String),
    /// `OPTIONS *`: about the server, which here is the proxy.
    Asterisk,
}

/// The canonical target and the one host of a request as hyper parsed it.
/// The host is what `Host` carries from here on: an absolute URI's (or
/// HTTP/2's `:authority`) when there is one, else the single `Host`.
pub fn request(
    method: &Method,
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
    rules: PathRules,
) -> Result<(Target, Option<HeaderValue>), BadRequest> {
    let target = if uri.path() == "*" && uri.authority().is_none() {
        if method != Method::OPTIONS {
            return Err(BadRequest::Form);
        }
        Target::Asterisk
    } else {
        let pq = match (uri.scheme_str(), uri.authority(), uri.path_and_query()) {
            (None, None, Some(pq)) => pq.as_str(),
            (Some(s), Some(_), pq)
                if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") =>
            {
                pq.map_or("/", |pq| pq.as_str())
            }
            // Authority form (`GET admin` reads as one) is CONNECT's alone.
            _ => return Err(BadRequest::Form),
        };
        Target::Origin(origin(pq, rules)?.into_owned())
    };
    if method == Method::CONNECT {
        return Err(BadRequest::Form);
    }
    Ok((target, host(uri, version, headers)?))
}

/// Whether a `Host` value is a name or address with an optional port, and
/// no user info: what both HTTP paths forward.
pub fn valid_host(value: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(value) else {
        return false;
    };
    match s.parse::<Authority>() {
        Ok(a) => !s.contains('@') && !a.host().is_empty(),
        Err(_) => false,
    }
}

fn host(
    uri: &Uri,
    version: Version,
    headers: &HeaderMap,
) -> Result<Option<HeaderValue>, BadRequest> {
    let mut hosts = headers.get_all(HOST).iter();
    let (header, more) = (hosts.next(), hosts.next());
    if more.is_some() {
        return Err(BadRequest::DuplicateHost);
    }
    if header.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Err(BadRequest::BadHost);
    }
    let Some(authority) = uri.authority() else {
        if header.is_none() && version == Version::HTTP_11 {
            return Err(BadRequest::MissingHost);
        }
        return Ok(header.cloned());
    };
    if authority.as_str().contains('@') {
        return Err(BadRequest::BadHost);
    }
    let from_uri = HeaderValue::from_str(authority.as_str()).map_err(|_| BadRequest::BadHost)?;
    // HTTP/2 sends both only when they agree (RFC 9113 8.3.1); HTTP/1.1's
    // absolute form overrides Host (RFC 9112 3.2.2).
    if version == Version::HTTP_2
        && header.is_some_and(|h| !h.as_bytes().eq_ignore_ascii_case(from_uri.as_bytes()))
    {
        return Err(BadRequest::HostMismatch);
    }
    Ok(Some(from_uri))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: PathRules = PathRules {
        merge_slashes: true,
        keep_escaped_slashes: false,
    };

    /// Request targets (the findings and the published
    /// path-normalization bypasses of Envoy and Istio) and what every
    /// stage reads them as.
    #[test]
    fn targets_read_one_way() {
        use BadRequest::*;
        let cases: &[(&str, Result<&str, BadRequest>)] = &[
            ("/", Ok("/")),
            ("/api/orders?x=1&y=%2f", Ok("/api/orders?x=1&y=%2F")),
            ("/public/../admin", Ok("/admin")),
            ("/public/%2e%2e/admin", Ok("/admin")),
            ("/public/%2E%2E/admin", Ok("/admin")),
            ("/public/.%2e/admin", Ok("/admin")),
            ("/public/./admin", Ok("/public/admin")),
            ("//admin", Ok("/admin")),
            ("/public//..//admin", Ok("/admin")),
            ("/%61dmin", Ok("/admin")),
            ("/admin%7e", Ok("/admin~")),
            ("/a%3bb", Ok("/a%3Bb")),
            ("/a%c3%a9", Ok("/a%C3%A9")),
            ("/../../admin", Ok("/admin")),
            ("/a/b/..", Ok("/a/")),
            ("/a/.", Ok("/a/")),
            ("/a/", Ok("/a/")),
            ("/a//", Ok("/a/")),
            ("/..", Ok("/")),
            ("/a{b}|c", Ok("/a%7Bb%7D%7Cc")),
            ("/a?q=..%2f", Ok("/a?q=..%2F")),
            ("/a?q=/../", Ok("/a?q=/../")),
            // Envoy CVE-2021-29492, Istio 2021-001: escaped slashes.
            ("/public%2f..%2fadmin", Err(EscapedSlash)),
            ("/public/..%2Fadmin", Err(EscapedSlash)),
            ("/public/..%5cadmin", Err(EscapedSlash)),
            // Istio 2021-008: a fragment is not part of a request target.
            ("/admin#public", Err(Byte(b'#'))),
            ("/public/..\\admin", Err(Byte(b'\\'))),
            ("/a b", Err(Byte(b' '))),
            ("/a\tb", Err(Byte(b'\t'))),
            ("/a\u{7f}", Err(Byte(0x7f))),
            ("/caf\u{e9}", Err(Byte(0xc3))),
            ("/a%2", Err(Encoding)),
            ("/a%zz", Err(Encoding)),
            ("/a?b=%g1", Err(Encoding)),
            ("/public/..;/admin", Err(DotParams)),
            ("/public/.;x/admin", Err(DotParams)),
            ("admin", Err(Form)),
        ];
        for (raw, want) in cases {
            let got = origin(raw, DEFAULT).map(|c| c.into_owned());
            assert_eq!(got.as_deref().map_err(|e| *e), *want, "{raw}");
            if let Ok(c) = &got {
                // Canonical is a fixed point, and the fast path agrees.
                assert_eq!(origin(c, DEFAULT).unwrap(), c.as_str(), "{raw}");
                assert_eq!(is_canonical(raw), raw == c, "{raw}");
            }
        }
    }

    #[test]
    fn listeners_may_keep_doubled_and_escaped_slashes() {
        let keep = PathRules {
            merge_slashes: false,
            keep_escaped_slashes: true,
        };
        assert_eq!(origin("//a//b/../c", keep).unwrap(), "//a//c");
        assert_eq!(origin("/a%2fb/../c", keep).unwrap(), "/c");
        assert_eq!(origin("/a%2fb", keep).unwrap(), "/a%2Fb");
    }

    fn read(
        method: &str,
        uri: &str,
        version: Version,
        hosts: &[&str],
    ) -> Result<(Target, Option<String>), BadRequest> {
        let mut headers = HeaderMap::new();
        for h in hosts {
            headers.append(HOST, HeaderValue::from_str(h).unwrap());
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let uri: Uri = uri.parse().unwrap();
        request(&method, &uri, version, &headers, DEFAULT)
            .map(|(t, h)| (t, h.map(|h| h.to_str().unwrap().to_string())))
    }

    #[test]
    fn one_host_per_request() {
        use BadRequest::*;
        let h11 = Version::HTTP_11;
        let origin = |s: &str| Target::Origin(s.into());
        assert_eq!(
            read("GET", "/x", h11, &["b.example"]),
            Ok((origin("/x"), Some("b.example".into())))
        );
        // RFC 9112 3.2.2: the absolute form's authority wins.
        assert_eq!(
            read("GET", "http://a.example/x/../y", h11, &["b.example"]),
            Ok((origin("/y"), Some("a.example".into())))
        );
        assert_eq!(
            read("GET", "http://a.example", h11, &[]),
            Ok((origin("/"), Some("a.example".into())))
        );
        assert_eq!(read("GET", "/x", h11, &["a", "a"]), Err(DuplicateHost));
        assert_eq!(read("GET", "/x", h11, &["a", "b"]), Err(DuplicateHost));
        assert_eq!(read("GET", "/x", h11, &[]), Err(MissingHost));
        assert_eq!(
            read("GET", "/x", Version::HTTP_10, &[]),
            Ok((origin("/x"), None))
        );
        assert_eq!(read("GET", "/x", h11, &["u@a.example"]), Err(BadHost));
        assert_eq!(read("GET", "http://u@a.example/", h11, &[]), Err(BadHost));
        assert_eq!(read("GET", "ftp://a.example/", h11, &[]), Err(Form));
        assert_eq!(read("GET", "admin", h11, &["a"]), Err(Form));
        assert_eq!(read("GET", "*", h11, &["a"]), Err(Form));
        assert_eq!(
            read("OPTIONS", "*", h11, &["a"]),
            Ok((Target::Asterisk, Some("a".into())))
        );
        // HTTP/2: :authority and Host must agree.
        let h2 = Version::HTTP_2;
        assert_eq!(
            read("GET", "https://a.example/x", h2, &["A.example"]),
            Ok((origin("/x"), Some("a.example".into())))
        );
        assert_eq!(
            read("GET", "https://a.example/x", h2, &["b.example"]),
            Err(HostMismatch)
        );
    }
}
