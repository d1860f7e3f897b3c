//! Errors of the queue client.

use crate::ids::TaskId;
use crate::queue::auth::AuthError;
use std::path::PathBuf;

/// Why a queue call failed.
///
/// HTTP answers from the queue ([`QueueError::Http`]) are kept apart from transport failures
/// ([`QueueError::Transport`]) so the worker can tell "the queue said no" from "the queue could
/// not be reached". No variant ever holds credentials or a presigned URL's query string: paths
/// are recorded without their query, and reqwest errors are stripped of their URL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The root URL is unusable.
    #[error("invalid Taskcluster root URL {root_url:?}: {reason}")]
    InvalidRootUrl {
        /// The URL given.
        root_url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The HTTP client could not be built (TLS backend initialisation).
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
    /// The request could not be signed (bad certificate in the credentials).
    #[error("cannot sign {method} {path}: {source}")]
    Signing {
        /// HTTP method.
        method: String,
        /// Path (no query).
        path: String,
        /// Cause.
        #[source]
        source: AuthError,
    },
    /// The queue (or the artifact store) answered with an HTTP error.
    #[error("{method} {path}: HTTP {status} {code}: {message}")]
    Http {
        /// HTTP method.
        method: String,
        /// Path (no query).
        path: String,
        /// Status code.
        status: u16,
        /// The queue's error `code` (`RequestConflict`, `ResourceNotFound`, ...), or
        /// `HTTP<status>` when the body was not a queue error.
        code: String,
        /// The queue's message (truncated).
        message: String,
    },
    /// The artifact is an `error` artifact (HTTP 424).
    #[error("artifact {name:?} of task {task_id} is an error artifact ({reason}): {message}")]
    ErrorArtifact {
        /// Task.
        task_id: TaskId,
        /// Artifact name.
        name: String,
        /// `file-missing-on-worker`, ...
        reason: String,
        /// Message given by the worker that created it.
        message: String,
    },
    /// Network failure, timeout or connection reset (after all retries).
    #[error("{method} {path}: transport failure after {attempts} attempt(s): {source}")]
    Transport {
        /// HTTP method.
        method: String,
        /// Path (no query).
        path: String,
        /// Attempts made.
        attempts: u32,
        /// Cause, with the URL removed.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the expected JSON.
    #[error("{method} {path}: unexpected response body: {source}")]
    InvalidResponse {
        /// HTTP method.
        method: String,
        /// Path (no query).
        path: String,
        /// Parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON response exceeded the response size limit.
    #[error("{method} {path}: response larger than {limit} bytes")]
    ResponseTooLarge {
        /// HTTP method.
        method: String,
        /// Path (no query).
        path: String,
        /// The limit.
        limit: u64,
    },
    /// A redirect without a usable `Location`, or too many redirects.
    #[error("{method} {path}: bad redirect ({reason})")]
    BadRedirect {
        /// HTTP method.
        method: String,
        /// Path (no query).
        path: String,
        /// What was wrong.
        reason: &'static str,
    },
    /// A downloaded artifact exceeded the caller's limit.
    #[error("artifact {name:?} of task {task_id} is larger than {max_bytes} bytes")]
    TooLarge {
        /// Task.
        task_id: TaskId,
        /// Artifact name.
        name: String,
        /// The limit.
        max_bytes: u64,
    },
    /// The artifact claimed `Content-Encoding: gzip` but is not valid gzip.
    #[error("artifact {name:?} of task {task_id}: invalid gzip content: {source}")]
    BadGzip {
        /// Task.
        task_id: TaskId,
        /// Artifact name.
        name: String,
        /// Decoder error.
        #[source]
        source: std::io::Error,
    },
    /// The object service's createUpload chose none of the methods we proposed (`putUrl`).
    #[error("object {name:?}: createUpload accepted none of the proposed upload methods")]
    NoUploadMethod {
        /// The object's name.
        name: String,
    },
    /// A listing returned more artifacts than the client accepts.
    #[error("task {task_id} lists more than {limit} artifacts")]
    TooManyArtifacts {
        /// Task.
        task_id: TaskId,
        /// The limit.
        limit: usize,
    },
    /// A local file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done (`open`, `write`, `rename`, ...).
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A download did not finish within its total deadline (every redirect hop, the body and
    /// the retries).
    #[error("artifact {name:?} of task {task_id}: download did not finish within {limit:?}")]
    DownloadDeadline {
        /// Task.
        task_id: TaskId,
        /// Artifact name.
        name: String,
        /// The deadline (`ClientLimits::download_deadline`).
        limit: std::time::Duration,
    },
    /// An upload did not finish within its total deadline (every attempt and retry delay).
    #[error("upload to {url} did not finish within {limit:?}")]
    UploadDeadline {
        /// Where it was going (scheme, host and path; never the signed query).
        url: String,
        /// The deadline (`ClientLimits::upload_deadline`).
        limit: std::time::Duration,
    },
    /// An upload's body was taken slower than the minimum rate (a store that stopped reading).
    #[error(
        "upload to {url}: {bytes} bytes taken in {elapsed:?}, below the minimum of {min_rate} \
         bytes/s"
    )]
    UploadTooSlow {
        /// Where it was going (scheme, host and path; never the signed query).
        url: String,
        /// Bytes taken by the store since the attempt started.
        bytes: u64,
        /// Since the attempt started.
        elapsed: std::time::Duration,
        /// The minimum rate (`ClientLimits::min_upload_rate`).
        min_rate: u64,
    },
    /// A download's body arrived slower than the minimum rate.
    #[error(
        "artifact {name:?} of task {task_id}: {bytes} bytes in {window:?}, below the minimum of \
         {min_rate} bytes/s"
    )]
    TooSlow {
        /// Task.
        task_id: TaskId,
        /// Artifact name.
        name: String,
        /// Bytes received in the last window.
        bytes: u64,
        /// The window.
        window: std::time::Duration,
        /// The minimum rate (`ClientLimits::min_download_rate`).
        min_rate: u64,
    },
}

impl QueueError {
    /// HTTP status of an HTTP error answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            QueueError::Http { status, .. } => Some(*status),
            QueueError::ErrorArtifact { .. } => Some(424),
            _ => None,
        }
    }

    /// 409 `RequestConflict`: the run is no longer ours (or the artifact clashes).
    pub fn is_conflict(&self) -> bool {
        self.status() == Some(409)
    }

    /// 404 `ResourceNotFound`.
    pub fn is_not_found(&self) -> bool {
        self.status() == Some(404)
    }

    /// Worth retrying later: transport failures, too-slow downloads, 5xx and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            QueueError::Transport { .. }
            | QueueError::TooSlow { .. }
            | QueueError::UploadTooSlow { .. } => true,
            QueueError::Http { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    pub(crate) fn set_attempts(mut self, n: u32) -> Self {
        if let QueueError::Transport { attempts, .. } = &mut self {
            *attempts = n;
        }
        self
    }
}
