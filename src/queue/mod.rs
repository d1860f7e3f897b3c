//! Taskcluster queue client: typed calls, Hawk authentication and retries.
//!
//! This is the only module that holds the worker's permanent credentials. It knows the queue's
//! wire protocol and nothing about chain of trust or scripts: callers get typed answers and a
//! [`QueueError`] that separates "the queue said no" (HTTP status + queue error code) from
//! "the queue could not be reached". It must never log or return credentials or the query of a
//! presigned URL.

pub mod auth;
pub mod azure;
mod client;
pub mod credentials;
mod error;
pub mod types;

pub use client::{
    ClientLimits, DownloadInfo, QueueClient, RetryPolicy, UploadInfo, encode_component,
};
pub use credentials::{Credentials, CredentialsError, EnvSource, ProcessEnv};
pub use error::QueueError;
