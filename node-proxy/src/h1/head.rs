//! HTTP/1.1 heads as bytes: the client's request read as a rule sees it and
//! rewritten for the target, the target's response rewritten for the
//! client, and where each body ends. The header rules are `headers.rs`'s
//! (RFC 9110 7.6.1 hop-by-hop, reserved prefixes), applied to raw heads.
//!
//! Long because requests and responses share the header rules and the
//! writers: split apart, each would restate them.

use crate::headers::HOP_BY_HOP;
use crate::route::RequestView;
use http::HeaderName;
use httparse::Header;
use std::mem::MaybeUninit;

/// hyper's limit too: a head with more is handed to hyper, which answers 431.
pub const MAX_HEADERS: usize = 100;

pub type Headers<'b> = [MaybeUninit<Header<'b>>; MAX_HEADERS];

pub fn uninit<'b>() -> Headers<'b> {
    [const { MaybeUninit::uninit() }; MAX_HEADERS]
}

/// A parsed request head.
pub struct Request<'h, 'b> {
    pub method: &'b str,
    /// The request target as sent, with the query; the path forwards only
    /// canonical ones (`crate::canonical::is_canonical`).
    pub target: &'b str,
    /// The target's path (without the query), found once: a route table
    /// reads it once per rule.
    path: &'b str,
    pub headers: &'h [Header<'b>],
}

/// A head the HTTP/1.1 path does not forward.
#[derive(Debug, PartialEq, Eq)]
pub enum Unusual {
    /// hyper's side is to take it.
    HandOver,
    /// Nobody is: 400, for this reason.
    Refuse(&'static str),
}

/// What the client's head says about its body and its connection.
pub struct Framing {
    pub content_length: u64,
    /// `Connection: close`: the last request on the connection.
    pub close: bool,
}

impl<'h, 'b> Request<'h, 'b> {
    /// Parses a complete head. `None` for anything this path leaves to
    /// hyper: not HTTP/1.1, a head httparse refuses.
    pub fn parse(buf: &'b [u8], headers: &'h mut Headers<'b>) -> Option<(Request<'h, 'b>, usize)> {
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, headers) {
            Ok(httparse::Status::Complete(len)) => len,
            _ => return None,
        };
        let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
            return None;
        };
        let headers = std::mem::take(&mut req.headers);
        Some((
            Request {
                method,
                target,
                path: target.split_once('?').map_or(target, |(p, _)| p),
                headers,
            },
            len,
        ))
    }

    /// The body's length and whether the client closes after this request;
    /// else `HandOver` when the request needs what only hyper does: a chunked body,
    /// `Expect`, an upgrade, `Connection` naming headers, a missing or
    /// repeated Host; or `Refuse` for more than one length.
    pub fn framing(&self) -> Result<Framing, Unusual> {
        let mut framing = Framing {
            content_length: 0,
            close: false,
        };
        let (mut hosts, mut length, mut chunked) = (0, None, false);
        for h in self.headers {
            let name = h.name;
            if name.eq_ignore_ascii_case("host") {
                hosts += 1;
            } else if name.eq_ignore_ascii_case("content-length") {
                // A second one, equal or not, is refused as hyper refuses a
                // length list ("3, 3"): every form alike.
                if length.is_some() {
                    return Err(Unusual::Refuse("more than one Content-Length"));
                }
                length = Some(length_value(h.value).ok_or(Unusual::HandOver)?);
            } else if name.eq_ignore_ascii_case("connection") {
                for token in tokens(h.value) {
                    if token.eq_ignore_ascii_case(b"close") {
                        framing.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") {
                        return Err(Unusual::HandOver);
                    }
                }
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            } else if name.eq_ignore_ascii_case("expect") || name.eq_ignore_ascii_case("upgrade") {
                return Err(Unusual::HandOver);
            }
        }
        if chunked && length.is_some() {
            // RFC 9112 6.1 allows reading it as chunked; a target may not.
            return Err(Unusual::Refuse("both Content-Length and Transfer-Encoding"));
        }
        if chunked || hosts != 1 || self.method == "CONNECT" {
            return Err(Unusual::HandOver);
        }
        framing.content_length = length.unwrap_or(0);
        Ok(framing)
    }

    /// The head for the target: the client's headers without reserved,
    /// hop-by-hop and forwarding ones (the proxy sets those), then `add`'s.
    pub fn write(&self, out: &mut Vec<u8>, add: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for h in self.headers {
            let name = h.name.as_bytes();
            if reserved(name) || hop_by_hop(name) || forwarding(name) {
                continue;
            }
            put(out, name, h.value);
        }
        add(out);
        out.extend_from_slice(b"\r\n");
    }
}

impl RequestView for Request<'_, '_> {
    fn method(&self) -> &str {
        self.method
    }

    fn path(&self) -> &str {
        self.path
    }

    fn raw_host(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("host"))
            .and_then(|h| text(h.value))
    }

    fn query(&self) -> Option<&str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    fn any_value(&self, name: &HeaderName, f: &mut dyn FnMut(&str) -> bool) -> bool {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name.as_str()))
            .any(|h| text(h.value).is_some_and(&mut *f))
    }

    fn has_header(&self, name: &HeaderName) -> bool {
        self.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name.as_str()))
    }
}

/// A header value as text, as `HeaderValue::to_str` takes it.
fn text(v: &[u8]) -> Option<&str> {
    if v.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b)) {
        std::str::from_utf8(v).ok()
    } else {
        None
    }
}

/// A `Content-Length` value: digits only (`str::parse` would take "+5",
/// which a target might read otherwise).
fn length_value(v: &[u8]) -> Option<u64> {
    let v = v.trim_ascii();
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Whether `v` may go out as a header value (no CR, LF or other control).
pub fn valid_value(v: &[u8]) -> bool {
    v.iter().all(|&b| b == b'\t' || (b >= b' ' && b != 0x7f))
}

pub fn put(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

fn tokens(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn starts_with_ignore_case(name: &[u8], prefix: &[u8]) -> bool {
    name.len() >= prefix.len() && name[..prefix.len()].eq_ignore_ascii_case(prefix)
}

/// `x-trellis-*` and `x-amzn-lattice-*`: the proxy's to say.
fn reserved(name: &[u8]) -> bool {
    starts_with_ignore_case(name, b"x-trellis-")
        || starts_with_ignore_case(name, b"x-amzn-lattice-")
}

fn hop_by_hop(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"upgrade")
        || HOP_BY_HOP
            .iter()
            .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Set by the proxy, replacing what a client sent.
fn forwarding(name: &[u8]) -> bool {
    starts_with_ignore_case(name, b"x-forwarded-for")
        && matches!(name.len(), 15 | 20 | 21)
        && (name.len() == 15
            || name[15..].eq_ignore_ascii_case(b"-port")
            || name[15..].eq_ignore_ascii_case(b"-proto"))
}

/// How a response body ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    Empty,
    Length(u64),
    Chunked,
    /// No length: the body is everything until the target closes.
    UntilClose,
}

/// A parsed response head.
pub struct Response<'h, 'b> {
    pub status: u16,
    pub reason: &'b str,
    pub headers: &'h [Header<'b>],
    /// HTTP/1.1 without `Connection: close`: the target keeps the connection.
    pub keep_alive: bool,
}

impl<'h, 'b> Response<'h, 'b> {
    /// `Ok(None)`: not all of the head is here yet.
    pub fn parse(
        buf: &'b [u8],
        headers: &'h mut Headers<'b>,
    ) -> Result<Option<(Response<'h, 'b>, usize)>, httparse::Error> {
        let mut resp = httparse::Response::new(&mut []);
        let parser = httparse::ParserConfig::default();
        let len = match parser.parse_response_with_uninit_headers(&mut resp, buf, headers)? {
            httparse::Status::Complete(len) => len,
            httparse::Status::Partial => return Ok(None),
        };
        let (Some(status), Some(version)) = (resp.code, resp.version) else {
            return Err(httparse::Error::Status);
        };
        let headers = std::mem::take(&mut resp.headers);
        let close = headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("connection")
                && tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"close"))
        });
        Ok(Some((
            Response {
                status,
                reason: resp.reason.unwrap_or(""),
                headers,
                keep_alive: version == 1 && !close,
            },
            len,
        )))
    }

    /// Where the body ends (RFC 9112 6.3); `None` for a length that is not one.
    pub fn body(&self, head_request: bool) -> Option<Body> {
        if head_request || matches!(self.status, 100..=199 | 204 | 304) {
            return Some(Body::Empty);
        }
        let mut length = None;
        for h in self.headers {
            if h.name.eq_ignore_ascii_case("transfer-encoding") {
                let chunked = tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
                return Some(if chunked {
                    Body::Chunked
                } else {
                    Body::UntilClose
                });
            }
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = length_value(h.value)?;
                if length.is_some_and(|l| l != n) {
                    return None;
                }
                length = Some(n);
            }
        }
        Some(length.map_or(Body::UntilClose, Body::Length))
    }

    /// The head for the client: hop-by-hop headers and those `Connection`
    /// names go, except the framing (`Transfer-Encoding`, `Content-Length`),
    /// since the body is relayed as the target framed it.
    pub fn write(&self, out: &mut Vec<u8>, close: bool) {
        out.extend_from_slice(b"HTTP/1.1 ");
        // httparse takes exactly three digits.
        let s = self.status;
        out.extend_from_slice(&[
            b'0' + (s / 100 % 10) as u8,
            b'0' + (s / 10 % 10) as u8,
            b'0' + (s % 10) as u8,
        ]);
        out.push(b' ');
        out.extend_from_slice(self.reason.as_bytes());
        out.extend_from_slice(b"\r\n");
        let named = |name: &[u8]| {
            self.headers
                .iter()
                .filter(|h| h.name.eq_ignore_ascii_case("connection"))
                .any(|h| tokens(h.value).any(|t| t.eq_ignore_ascii_case(name)))
        };
        for h in self.headers {
            let name = h.name.as_bytes();
            let framing = name.eq_ignore_ascii_case(b"transfer-encoding")
                || name.eq_ignore_ascii_case(b"content-length");
            if !framing && (hop_by_hop(name) || named(name)) {
                continue;
            }
            put(out, name, h.value);
        }
        if close {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

/// Finds where a chunked body ends, across reads, without buffering it:
/// each call says how much of what it was given is body, all of it but a
/// partial size or trailer line, which the caller keeps for the next call.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
}

#[derive(Debug, Default, Clone, Copy)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
}

/// A chunk size line or trailer longer than this is not one.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("malformed chunked body")]
pub struct BadChunk;

impl Chunked {
    /// How many bytes of `buf` belong to the body, and whether it ended.
    pub fn scan(&mut self, buf: &[u8]) -> Result<(usize, bool), BadChunk> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                ChunkState::Size => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((n, size))) => {
                        at += n;
                        self.state = if size == 0 {
                            ChunkState::Trailers
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_LINE => {
                        return Ok((at, false));
                    }
                    _ => return Err(BadChunk),
                },
                ChunkState::Data(left) => {
                    let take = left.min(rest.len() as u64);
                    at += take as usize;
                    if take < left {
                        self.state = ChunkState::Data(left - take);
                        return Ok((at, false));
                    }
                    self.state = ChunkState::DataEnd;
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        return Ok((at, false));
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(BadChunk);
                    }
                    at += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailers => match rest.windows(2).position(|w| w == b"\r\n") {
                    Some(0) => return Ok((at + 2, true)),
                    Some(i) => at += i + 2,
                    None if rest.len() < MAX_LINE => return Ok((at, false)),
                    None => return Err(BadChunk),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> Option<(String, bool, u64)> {
        let mut headers = uninit();
        let (req, _) = Request::parse(raw.as_bytes(), &mut headers)?;
        let framing = req.framing().ok()?;
        crate::canonical::is_canonical(req.target).then_some(())?;
        let mut out = Vec::new();
        req.write(&mut out, |o| put(o, b"x-forwarded-for", b"10.0.0.1"));
        Some((
            String::from_utf8(out).unwrap(),
            framing.close,
            framing.content_length,
        ))
    }

    #[test]
    fn requests_lose_what_clients_may_not_send() {
        let (out, close, len) = request(
            "POST /a?b=1 HTTP/1.1\r\nHost: shop\r\nX-Trellis-Identity: admin\r\n\
             x-amzn-lattice-network: x\r\nX-Forwarded-For: 1.2.3.4\r\nx-forwarded-for-proto: https\r\n\
             x-forwarded-forward: kept\r\nConnection: keep-alive, close\r\nKeep-Alive: 5\r\n\
             TE: trailers\r\nContent-Length: 3\r\nAccept: */*\r\n\r\nabc",
        )
        .unwrap();
        assert_eq!(
            out,
            "POST /a?b=1 HTTP/1.1\r\nHost: shop\r\nx-forwarded-forward: kept\r\n\
             Content-Length: 3\r\nAccept: */*\r\nx-forwarded-for: 10.0.0.1\r\n\r\n"
        );
        assert!(close);
        assert_eq!(len, 3);
    }

    #[test]
    fn unusual_requests_are_left_to_hyper() {
        for raw in [
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n",
            "PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-private\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n",
            "GET /a/../b HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /%61 HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET //a HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(request(raw).is_none(), "{raw:?}");
        }
    }

    #[test]
    fn a_repeated_length_is_refused_in_every_form() {
        for raw in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        ] {
            let mut headers = uninit();
            let (req, _) = Request::parse(raw.as_bytes(), &mut headers).unwrap();
            assert!(matches!(req.framing(), Err(Unusual::Refuse(_))), "{raw:?}");
        }
    }

    #[test]
    fn rules_see_the_raw_head_as_hyper_would() {
        let raw = b"GET /Cart/x?id=1 HTTP/1.1\r\nHost: Shop.example:8080\r\nx-v: a\r\nX-V: B\r\nx-bin: \xff\r\n\r\n";
        let mut headers = uninit();
        let (req, _) = Request::parse(raw, &mut headers).unwrap();
        assert_eq!(req.path(), "/Cart/x");
        assert_eq!(req.host(), Some("Shop.example"));
        let name = HeaderName::from_static("x-v");
        let mut seen = Vec::new();
        req.any_value(&name, &mut |v| {
            seen.push(v.to_string());
            false
        });
        assert_eq!(seen, ["a", "B"]);
        assert!(!req.any_value(&HeaderName::from_static("x-bin"), &mut |_| true));
    }

    fn response(raw: &str, head: bool) -> (String, Option<Body>, bool) {
        let mut headers = uninit();
        let (resp, len) = Response::parse(raw.as_bytes(), &mut headers)
            .unwrap()
            .unwrap();
        assert_eq!(len, raw.find("\r\n\r\n").unwrap() + 4);
        let mut out = Vec::new();
        resp.write(&mut out, false);
        (
            String::from_utf8(out).unwrap(),
            resp.body(head),
            resp.keep_alive,
        )
    }

    #[test]
    fn responses_keep_their_framing_and_lose_hop_by_hop_headers() {
        let (out, body, keep) = response(
            "HTTP/1.1 200 OK\r\nConnection: x-private\r\nx-private: 1\r\nKeep-Alive: 5\r\n\
             Transfer-Encoding: chunked\r\nServer: t\r\n\r\n",
            false,
        );
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nServer: t\r\n\r\n"
        );
        assert_eq!(body, Some(Body::Chunked));
        assert!(keep);
        let length = "HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\n\r\n";
        assert_eq!(response(length, false).1, Some(Body::Length(12)));
        assert_eq!(response(length, true).1, Some(Body::Empty));
        let (_, body, keep) = response("HTTP/1.0 200 OK\r\n\r\n", false);
        assert_eq!((body, keep), (Some(Body::UntilClose), false));
        let (_, _, keep) = response("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", false);
        assert!(!keep);
        let (_, body, _) = response(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
        );
        assert_eq!(body, Some(Body::Empty));
        let bad = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(response(bad, false).1, None);
    }

    #[test]
    fn chunked_bodies_end_where_they_end_whatever_the_reads() {
        let body = b"4;ext=1\r\nRust\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: t\r\n\r\n";
        let next = b"HTTP/1.1 200 OK";
        let mut all = body.to_vec();
        all.extend_from_slice(next);
        // Every split of the bytes into two reads finds the same end.
        for cut in 0..all.len() {
            let mut c = Chunked::default();
            let mut pending = all[..cut].to_vec();
            let (used, done) = c.scan(&pending).unwrap();
            let end = if done {
                used
            } else {
                pending.drain(..used);
                pending.extend_from_slice(&all[cut..]);
                let (more, done) = c.scan(&pending).unwrap();
                assert!(done, "cut at {cut}");
                used + more
            };
            assert_eq!(end, body.len(), "cut at {cut}");
        }
        assert!(Chunked::default().scan(b"zz\r\n").is_err());
        assert!(Chunked::default().scan(b"1\r\nab\r\n").is_err());
    }
}
