//! Taskcluster queue client: typed calls, Hawk authentication and retries.
//!
//! This is the only module that holds the worker's permanent credentials.

pub mod types;
