//! Errors as they travel on the wire between the control plane and its clients.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One problem with one field of one object.
///
/// `document` is the index of the document in the submitted batch, when the
/// object was submitted (the CLI maps it and `path` back to a file, line and
/// column); a stored object that the batch would break has none and is named
/// by `object` (`Service/checkout`). `path` is the field path inside the
/// document (`spec.listeners[0].rules[1].priority`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<usize>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    pub path: String,
    pub message: String,
}

impl FieldError {
    pub fn new(document: usize, path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            document: Some(document),
            object: String::new(),
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.document {
            Some(d) => write!(f, "document {d}")?,
            None => write!(f, "{}", self.object)?,
        }
        if !self.path.is_empty() {
            write!(f, ": {}", self.path)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The JSON body of every non-2xx answer of the API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable reason, e.g. `invalid`, `not_found`, `conflict`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}
