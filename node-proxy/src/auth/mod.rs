//! Request authentication (SigV4) and authorization (IAM-style policies).

pub mod policy;
pub mod sigv4;
