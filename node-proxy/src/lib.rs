//! The Trellis node agent and proxy.
//!
//! Every connection a client on this node makes to a service VIP is
//! redirected by the datapath to the proxy, which recovers the original
//! VIP:port (`socket`), finds the service's listener in the current config
//! (`config`, compiled from the network's snapshot and swapped atomically),
//! and then either routes each HTTP request by the listener's rules
//! (`route`), picks a target group by weight (`split`) and a target by
//! health and load (`targets`, `health`), and forwards it from the node's
//! SNAT address (`upstream`, `http`, `headers`); or, for TCP listeners,
//! splices the connection to one target (`tcp`). `agent` applies snapshots;
//! `metrics` and `access_log` report. `app` builds and runs the whole node
//! (listeners, datapath, DNS, gateway, admin endpoint) from a typed config.
#![forbid(unsafe_code)]

mod accept;
pub mod access_log;
pub mod agent;
pub mod app;
pub mod auth;
pub mod canonical;
pub mod config;
pub mod filters;
#[cfg(test)]
mod filters_tests;
pub mod flows;
mod forward;
pub mod gateway;
mod guard;
mod h1;
mod headers;
pub mod health;
mod http;
#[cfg(test)]
mod http_tests;
pub mod metrics;
mod mirror;
mod pool;
pub mod proxy;
mod record;
mod refusal;
#[cfg(test)]
mod request_tests;
pub mod resilience;
pub mod route;
#[cfg(test)]
mod route_tests;
pub mod socket;
pub mod split;
mod streams;
pub mod targets;
mod tcp;
pub mod tls;
pub mod traffic;
pub mod tunnel;
pub mod upstream;
pub mod workload;

pub use agent::Agent;
pub use app::App;
pub use proxy::Proxy;

/// What the fuzz targets in `fuzz/` drive beyond the public modules: the
/// HTTP/1.1 path's reading of a request head.
#[cfg(fuzzing)]
pub mod fuzzing {
    /// A head as the HTTP/1.1 path reads it: its target if it is complete,
    /// HTTP/1.1, of usable framing and canonical (what the path forwards
    /// as it is), and the head written for the target.
    pub fn head(bytes: &[u8]) -> Option<(String, Vec<u8>)> {
        let mut headers = crate::h1::head::uninit();
        let (req, _) = crate::h1::head::Request::parse(bytes, &mut headers)?;
        req.framing().ok()?;
        if !crate::canonical::is_canonical(req.target) {
            return None;
        }
        let mut out = Vec::new();
        req.write(&mut out, |_| {});
        Some((req.target.to_string(), out))
    }
}
