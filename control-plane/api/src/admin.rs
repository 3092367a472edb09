//! The admin endpoint (`/ready`, `/config`, `/metrics`, ...): a small HTTP/1
//! server on loopback, kept apart from the data path. Each role hands it a
//! function from path to page, and says which pages anyone who can connect
//! may read (probes and scrapers: `/ready`, `/metrics`); every other page
//! needs the role's admin token, which only the owner of its data dir (and
//! root) can read. Any local process can connect to loopback, and the
//! clients Trellis serves are exactly such processes.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::path::{Path, PathBuf};
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

/// Who may read which page.
pub struct Access {
    /// Pages for anyone who can connect.
    open: &'static [&'static str],
    /// The token every other page needs, and the file it is in (named in
    /// the refusal, so an operator knows where to find it). `None`: the role
    /// has open pages only.
    token: Option<(String, PathBuf)>,
}

impl Access {
    pub fn open_only(open: &'static [&'static str]) -> Access {
        Access { open, token: None }
    }

    /// The other pages need the token kept in `file` (created, mode 0600).
    pub fn with_token_file(open: &'static [&'static str], file: &Path) -> std::io::Result<Access> {
        let token = crate::token::load_or_create(file)?;
        Ok(Access {
            open,
            token: Some((token, file.to_path_buf())),
        })
    }

    /// `None` when `req` may read its page, else the refusal.
    fn refuse<B>(&self, req: &Request<B>) -> Option<Page> {
        if self.open.contains(&req.uri().path()) {
            return None;
        }
        let Some((token, file)) = &self.token else {
            return None; // Only open pages exist; the rest are 404s.
        };
        let given = req.headers().get(header::AUTHORIZATION);
        if crate::token::is_bearer(given.and_then(|v| v.to_str().ok()), token) {
            return None;
        }
        Some(Page::text(
            StatusCode::UNAUTHORIZED,
            format!(
                "this page needs the admin token: -H \"authorization: Bearer $(cat {})\"\n",
                file.display()
            ),
        ))
    }
}

/// Serves `pages` (`None` is a 404) to those `access` lets in, until the
/// task is dropped.
pub async fn serve<F>(listener: TcpListener, access: Access, pages: F)
where
    F: Fn(&str) -> Option<Page> + Send + Sync + 'static,
{
    let pages = Arc::new(pages);
    let access = Arc::new(access);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (pages, access) = (pages.clone(), access.clone());
        let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
            let page = if req.method() != Method::GET {
                Page::text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n")
            } else if let Some(refusal) = access.refuse(&req) {
                refusal
            } else {
                pages(req.uri().path())
                    .unwrap_or_else(|| Page::text(StatusCode::NOT_FOUND, "no such page\n"))
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
