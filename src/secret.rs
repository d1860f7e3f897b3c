//! A wrapper for values that must never be printed.
//!
//! Credentials, access tokens and certificates travel in `Secret`, whose `Debug` and `Display`
//! print a fixed mask. Code that needs the value calls [`Secret::expose`], which makes every use
//! greppable in review.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A secret string (an access token, a temporary certificate, a private key path's contents).
#[derive(Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value itself. Never log or format what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{********}")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{********}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let s = Secret::new("hunter2-token");
        assert_eq!(format!("{s:?}"), "{********}");
        assert_eq!(format!("{s}"), "{********}");
        assert_eq!(s.expose(), "hunter2-token");
    }
}
