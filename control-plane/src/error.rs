//! What a control-plane operation fails with, in the domain's words. The
//! API maps each to an HTTP status in one place (`server`); nothing below
//! it speaks HTTP.

use crate::state::DeleteError;
use trellis_api::FieldError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it as it stands: referenced, too many, exists.
    #[error("{0}")]
    Conflict(String),
    /// Every problem of the input; nothing was changed.
    #[error("invalid input: {} problem(s)", .0.len())]
    Invalid(Vec<FieldError>),
    /// The caller may not: outside its scope, an unknown or expired proof.
    #[error("{0}")]
    Denied(String),
    /// The request itself is wrong (a CSR that does not parse, names the CA
    /// will not sign).
    #[error("{0}")]
    BadRequest(String),
    /// Larger than the store takes in one commit; nothing was changed.
    #[error("{0}")]
    TooLarge(String),
    /// The store could not commit; the state is unchanged.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<DeleteError> for Error {
    fn from(e: DeleteError) -> Self {
        match e {
            DeleteError::NotFound(..) => Error::NotFound(e.to_string()),
            DeleteError::InUse { .. } => Error::Conflict(e.to_string()),
        }
    }
}
