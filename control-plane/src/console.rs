//! The web console: three files compiled into the binary (no build step,
//! no third-party script), served open, since they hold no data; the page
//! asks its user for an API token and reads the API with it like any
//! client, `GET /v1/traffic?follow=true` among it: the nodes' numbers as
//! server-sent events, one frame a second.

use crate::ControlPlane;
use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::channel::Channel;
use http_body_util::{BodyExt, Full};
use std::sync::Arc;
use std::time::Duration;

/// How often a following console gets a frame.
pub const FRAME_EVERY: Duration = Duration::from_secs(1);
/// A stream ends after this (the page opens a new one at once), so a
/// forgotten tab does not hold its connection for ever.
const STREAM_MOST: Duration = Duration::from_secs(600);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Asset {
    Page,
    Script,
    Style,
}

impl Asset {
    /// The file `name` under `/ui/`.
    pub fn named(name: &str) -> Option<Asset> {
        match name {
            "index.html" => Some(Asset::Page),
            "app.js" => Some(Asset::Script),
            "app.css" => Some(Asset::Style),
            _ => None,
        }
    }

    fn body_and_type(self) -> (&'static str, &'static str) {
        match self {
            Asset::Page => (
                include_str!("../console/index.html"),
                "text/html; charset=utf-8",
            ),
            Asset::Script => (
                include_str!("../console/app.js"),
                "text/javascript; charset=utf-8",
            ),
            Asset::Style => (
                include_str!("../console/app.css"),
                "text/css; charset=utf-8",
            ),
        }
    }

    pub fn response(self) -> Response<Full<Bytes>> {
        let (body, kind) = self.body_and_type();
        let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        // Only its own files, and the API of the origin that served it.
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            ),
        );
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        resp
    }
}

/// Whether a traffic query asks to follow (`follow=true`).
pub fn follows(query: Option<&str>) -> bool {
    query
        .unwrap_or_default()
        .split('&')
        .any(|p| p == "follow=true")
}

/// The traffic view now and every [`FRAME_EVERY`] after, as server-sent
/// events. A console that does not read is skipped, never queued for: a
/// frame that cannot be sent within a second is dropped.
pub fn follow(cp: Arc<ControlPlane>) -> Response<crate::server::Body> {
    let (mut tx, body) = Channel::<Bytes, std::convert::Infallible>::new(1);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FRAME_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let until = tokio::time::Instant::now() + STREAM_MOST;
        while tokio::time::Instant::now() < until && !cp.draining() {
            tick.tick().await;
            let json = serde_json::to_string(&cp.traffic()).unwrap_or_default();
            let frame = Bytes::from(format!("event: traffic\ndata: {json}\n\n"));
            match tokio::time::timeout(FRAME_EVERY, tx.send_data(frame)).await {
                Ok(Ok(())) | Err(_) => {}
                // The console went away.
                Ok(Err(_)) => return,
            }
        }
    });
    let mut resp = Response::new(body.boxed());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
