//! Access logs: one JSON line per HTTP request and per TCP connection,
//! written by a thread of its own through a bounded queue, so the request
//! path never blocks on the log's I/O. If the queue is full (the disk or
//! the reader cannot keep up), lines are dropped and counted, not buffered
//! without bound. Each entry is also offered to a [`Sink`] (the flows
//! `trellis observe` reads) on the caller's thread, before the queue: a
//! sink that keeps few entries costs a check, not a thread's wake-up.

use serde::Serialize;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

const QUEUE: usize = 16_384;

#[derive(Debug, Default, Serialize)]
pub struct Entry {
    /// RFC 3339, UTC.
    pub time: String,
    /// "http" or "tcp".
    pub kind: &'static str,
    pub request_id: String,
    pub source_network: Arc<str>,
    pub client: String,
    /// The caller's cgroup (its systemd unit, container or pod), where the
    /// eBPF datapath records it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Arc<str>>,
    pub service: Arc<str>,
    pub listener: Arc<str>,
    pub rule: Arc<str>,
    pub target_group: Arc<str>,
    pub target: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    /// Response body bytes (HTTP), or bytes client to target (TCP).
    pub bytes_sent: u64,
    /// Request body bytes (HTTP) or bytes target to client (TCP).
    pub bytes_received: u64,
    /// Until the response headers (HTTP) or the connect (TCP).
    pub upstream_ms: f64,
    /// Until the end of the response body or of the connection.
    pub duration_ms: f64,
    pub identity: Option<String>,
    /// How the caller was known, for services with auth: `sigv4`, `sigv4a`,
    /// `workload` or `anonymous`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub authn: Option<&'static str>,
    /// The auth decision, for services with SIGV4 auth: `allow LEVEL:STATEMENT`
    /// or `deny REASON`.
    pub auth: Option<String>,
    /// Why Trellis answered itself (the `x-trellis-error` value), if it did.
    pub error: Option<&'static str>,
}

/// Offered every entry, on the request's thread: it must be quick.
pub type Sink = Arc<dyn Fn(&Entry) + Send + Sync>;

#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<Entry>>,
    sink: Option<Sink>,
    dropped: Arc<AtomicU64>,
}

impl AccessLog {
    pub fn off() -> AccessLog {
        AccessLog {
            tx: None,
            sink: None,
            dropped: Arc::default(),
        }
    }

    /// Lines go to `out` (stdout, a file) if given, entries to `sink` if
    /// given.
    pub fn to(out: Option<Box<dyn Write + Send>>, sink: Option<Sink>) -> AccessLog {
        let Some(out) = out else {
            return AccessLog {
                sink,
                ..AccessLog::off()
            };
        };
        let (tx, rx) = sync_channel(QUEUE);
        let started = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write(rx, out));
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the access log thread; access logs are off");
            return AccessLog {
                sink,
                ..AccessLog::off()
            };
        }
        AccessLog {
            tx: Some(tx),
            sink,
            dropped: Arc::default(),
        }
    }

    /// `stdout`, `off`, or a file path (appended to); and `sink`.
    pub fn open(spec: &str, sink: Option<Sink>) -> std::io::Result<AccessLog> {
        let out: Option<Box<dyn Write + Send>> = match spec {
            "off" => None,
            "stdout" => Some(Box::new(std::io::stdout())),
            path => Some(Box::new(
                // Owner and group (a log shipper's): it names clients and
                // paths, never a credential (docs/security.md).
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .mode(0o640)
                    .open(path)?,
            )),
        };
        Ok(AccessLog::to(out, sink))
    }

    pub fn enabled(&self) -> bool {
        self.tx.is_some() || self.sink.is_some()
    }

    /// Offers `entry` to the sink and writes it, stamped with the time, to
    /// the log: the time only when there is a log (the flows keep theirs,
    /// and take one request in many).
    pub fn log(&self, mut entry: Entry) {
        if let Some(sink) = &self.sink {
            sink(&entry);
        }
        if let Some(tx) = &self.tx {
            entry.time = now_rfc3339();
            if let Err(TrySendError::Full(_)) = tx.try_send(entry) {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

fn write(rx: Receiver<Entry>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(first) = rx.recv() {
        // Write what is queued, then flush once.
        for entry in std::iter::once(first).chain(rx.try_iter()) {
            if serde_json::to_writer(&mut out, &entry).is_ok() {
                let _ = out.write_all(b"\n");
            }
        }
        let _ = out.flush();
    }
}

/// Now as RFC 3339 UTC with milliseconds.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_are_rfc3339() {
        let t = super::now_rfc3339();
        assert_eq!(t.len(), 24, "{t}");
        assert!(
            t.starts_with("20") && t.ends_with('Z') && &t[10..11] == "T",
            "{t}"
        );
    }
}
