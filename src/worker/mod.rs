//! The worker: claim one task at a time, run it through the staged pipeline, resolve it.

pub mod outcome;
pub mod workdir;
