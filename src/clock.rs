//! The only place that reads the wall clock.
//!
//! Every check that depends on time (key validity, policy expiry, claim deadlines) takes the
//! instant as an argument, so it can be tested with a fixed time and so one task is judged at one
//! time throughout (TUF's "fixed update start time"). `clippy.toml` bans `SystemTime::now`
//! everywhere else.

use chrono::{DateTime, Utc};

/// The current UTC time. Call once per decision and pass the value down.
#[allow(clippy::disallowed_methods)]
pub fn now() -> DateTime<Utc> {
    Utc::now()
}
