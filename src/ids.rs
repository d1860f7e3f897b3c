//! Identifiers that come from outside and are checked once, at the edge.
//!
//! A [`TaskId`] can only be built by [`TaskId::parse`], so code that holds one knows it is a
//! well-formed Taskcluster slugid: it is safe to put in a URL path or a directory name.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use std::str::FromStr;

/// A Taskcluster task id (a "slugid": 22 characters of URL-safe base64 of a v4 UUID).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TaskId(String);

/// Why a string is not a [`TaskId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a valid Taskcluster taskId (slugid)")]
pub struct InvalidTaskId {
    /// The rejected input, truncated to 64 characters.
    pub value: String,
}

impl TaskId {
    /// Checks `s` against the queue's slugid pattern
    /// `^[A-Za-z0-9_-]{8}[Q-T][A-Za-z0-9_-][CGKOSWaeimquy26-][A-Za-z0-9_-]{10}[AQgw]$`.
    pub fn parse(s: &str) -> Result<TaskId, InvalidTaskId> {
        let b = s.as_bytes();
        let url_safe = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b'-';
        let ok = b.len() == 22
            && b.iter().all(|&c| url_safe(c))
            && (b'Q'..=b'T').contains(&b[8])
            && b"CGKOSWaeimquy26-".contains(&b[10])
            && b"AQgw".contains(&b[21]);
        if ok {
            Ok(TaskId(s.to_owned()))
        } else {
            Err(InvalidTaskId {
                value: s.chars().take(64).collect(),
            })
        }
    }

    /// A fresh random v4 "nice" slugid (never starts with `-`), as Taskcluster clients make.
    pub fn generate() -> TaskId {
        use base64::Engine as _;
        let mut bytes: [u8; 16] = rand::random();
        bytes[0] &= 0x7f; // "nice": the first character is never '-'
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
        let s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        TaskId(s)
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TaskId {
    type Err = InvalidTaskId;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TaskId::parse(s)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TaskId({})", self.0)
    }
}

impl<'de> Deserialize<'de> for TaskId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        TaskId::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_slugids() {
        for s in [
            "GVi2vTw8RYqdga6pE08Aiw",
            "EHZBfHRZRoiRf3yVeh_Q8g",
            "Qt3GKapxQmWDJId8m5o8Yg",
        ] {
            assert!(TaskId::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rejects_malformed_ids() {
        for s in [
            "",
            "asdf",
            "decision_task_id",
            "GVi2vTw8RYqdga6pE08Aiw/",
            "../../../../etc/passwd.",
            "GVi2vTw8AYqdga6pE08Aiw", // version nibble not 4
            "GVi2vTw8RYqdga6pE08Aix", // last char not in [AQgw]
        ] {
            assert!(TaskId::parse(s).is_err(), "{s:?} accepted");
        }
    }

    #[test]
    fn generated_ids_parse() {
        for _ in 0..1000 {
            let id = TaskId::generate();
            assert!(TaskId::parse(id.as_str()).is_ok(), "{id}");
            assert!(!id.as_str().starts_with('-'));
        }
    }
}
