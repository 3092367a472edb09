//! The admin endpoint (`/ready`, `/config`, `/metrics`, ...): a small HTTP/1
//! server on loopback, kept apart from the data path. Each role hands it a
//! function from path to page.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// One answer of the admin endpoint.
pub struct Page {
    pub status: StatusCode,
    pub content_type: &'static str,
    pub body: String,
}

impl Page {
    pub fn text(status: StatusCode, body: impl Into<String>) -> Page {
        Page {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    pub fn json(body: String) -> Page {
        Page {
            status: StatusCode::OK,
            content_type: "application/json",
            body,
        }
    }

    pub fn metrics(body: String) -> Page {
        Page {
            status: StatusCode::OK,
            content_type: "text/plain; version=0.0.4; charset=utf-8",
            body,
        }
    }
}

/// Serves `pages` (`None` is a 404) until the task is dropped.
pub async fn serve<F>(listener: TcpListener, pages: F)
where
    F: Fn(&str) -> Option<Page> + Send + Sync + 'static,
{
    let pages = Arc::new(pages);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let pages = pages.clone();
        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
            let page = if req.method() == Method::GET {
                pages(req.uri().path())
                    .unwrap_or_else(|| Page::text(StatusCode::NOT_FOUND, "no such page\n"))
            } else {
                Page::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n")
            };
            let resp = Response::builder()
                .status(page.status)
                .header(header::CONTENT_TYPE, page.content_type)
                .body(Full::new(Bytes::from(page.body)))
                .unwrap_or_default();
            async move { Ok::<_, Infallible>(resp) }
        });
        tokio::spawn(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), svc),
        );
    }
}
