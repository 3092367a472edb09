//! The shared vocabulary of Trellis: the declarative resource types operators
//! write in YAML, the per-network config snapshot the control plane compiles
//! for node agents and DNS servers, the IAM-style policy grammar, and the HTTP
//! client for the control plane's API, and the admin endpoint every member
//! role serves.
//!
//! Node-side crates depend on this crate only; they never link the control
//! plane's store.
// Unsafe only where descriptors are adopted (`handover`).
#![deny(unsafe_code)]

pub mod admin;
pub mod client;
pub mod delta;
pub mod error;
pub mod flow;
pub mod follow;
pub mod handover;
pub mod identity;
pub mod keys;
pub mod limits;
/// Operators' YAML files as documents with positions (the CLI's, and
/// tests'); the control plane itself takes JSON.
#[cfg(feature = "manifest")]
pub mod manifest;
pub mod persist;
pub mod pki;
pub mod policy;
pub mod resilience;
pub mod resource;
pub mod secret;
pub mod snapshot;
pub mod tls;
pub mod token;
pub mod trust;
pub mod workload;

pub use error::{ApiError, FieldError};
pub use resource::{API_VERSION, Kind, Object, Resource, Spec};
