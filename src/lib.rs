//! chainlock: a locked-down Taskcluster release worker.
//!
//! One instance does one job: it claims a task from the Taskcluster queue, validates the task's
//! restricted input, verifies the chain of trust of everything upstream, runs exactly one
//! operator-chosen script, uploads that script's artifacts, signs its own chain-of-trust document
//! and reports the result. See `ARCHITECTURE.md` for the map of modules and their invariants.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod artifact_path;
pub mod artifacts;
pub mod chain_policy;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cot;
pub mod demo;
pub mod devqueue;
pub mod ed25519_key;
pub mod evidence;
pub mod exit;
pub mod git_checkout;
pub mod ids;
pub mod jsone;
pub mod keys_cli;
pub mod launch;
pub mod manifest;
pub mod metrics;
pub mod openpgp;
pub mod queue;
pub mod sandbox;
pub mod scripts;
pub mod secret;
pub mod strict_json;
pub mod toml_text;
pub mod trust;
pub mod untrusted_text;
pub mod validate;
pub mod verify;
pub mod verify_cli;
pub mod worker;
