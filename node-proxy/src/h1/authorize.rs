//! Auth decided on the HTTP/1.1 path, from the head alone: SigV4 over an
//! empty body or `UNSIGNED-PAYLOAD`, and the auth policies.

use super::{NoPlan, Session, head};
use crate::auth::{self, Guard, Inbound};
use crate::config::{Config, Listener};
use crate::guard::{self, Decided};
use http::{HeaderMap, HeaderName, HeaderValue, Method};

impl<I> Session<'_, I> {
    /// A request to a service with auth, decided on this path: a request
    /// whose signed body would have to be read first is hyper's (it buffers
    /// it), so is one with a body whose hash is signed; the rest (an empty
    /// body, or `UNSIGNED-PAYLOAD`) is decided from the head alone.
    pub(super) fn authorize<'g>(
        &self,
        config: &Config,
        listener: &Listener,
        guard: &'g Guard,
        req: &head::Request<'_, '_>,
        framing: &head::Framing,
    ) -> Result<Decided<'g>, NoPlan> {
        let mut headers = HeaderMap::with_capacity(req.headers.len());
        for h in req.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "auth")?;
            let value = HeaderValue::from_bytes(h.value).map_err(|_| "auth")?;
            headers.append(name, value);
        }
        // Read as hyper's side reads it: without what clients may not send.
        crate::headers::strip_reserved(&mut headers);
        let signed_body = auth::needs_body_first(&headers)
            || headers
                .get("x-amz-content-sha256")
                .is_some_and(|v| v.as_bytes() != b"UNSIGNED-PAYLOAD");
        if signed_body && framing.content_length > 0 {
            return Err(NoPlan::HandOver("auth-body"));
        }
        let method = Method::from_bytes(req.method.as_bytes()).map_err(|_| "auth")?;
        // The target is canonical here: what was signed is what is read.
        let (path, query) = match req.target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (req.target, None),
        };
        let inbound = Inbound {
            method: &method,
            path,
            query,
            signed_path: path,
            signed_query: query,
            headers: &headers,
            authority: None,
            // No body: its hash is known without reading anything.
            body_sha256: (framing.content_length == 0).then_some(EMPTY_SHA256),
        };
        let refused = |d| {
            let seen = self
                .proxy
                .access_log
                .enabled()
                .then(|| (req.method.to_string(), path.to_string()));
            NoPlan::Denied(d, seen)
        };
        let decided =
            guard::decide(config, listener, guard, self.conn, &inbound).map_err(refused)?;
        if let Some(want) = &decided.body_hash {
            guard::body_matches(want, b"").map_err(refused)?;
        }
        Ok(decided)
    }
}

/// The SHA-256 of no bytes, in hex: the payload hash of a request without
/// a body.
pub(super) const EMPTY_SHA256: &str =
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
