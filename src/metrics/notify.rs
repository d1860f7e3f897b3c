//! systemd's notification protocol (`sd_notify(3)`), through the maintained `sd-notify` crate.
//!
//! Every call is a no-op without `NOTIFY_SOCKET` (not under systemd, or `Type=simple`), and a
//! failed send is logged once at debug level and otherwise ignored: systemd being away never
//! stops the worker. Messages carry a stage name and a task id (a slugid), never task data.
//! The unit sets `NotifyAccess=main`, so nothing the script starts can speak for the worker.

use sd_notify::NotifyState;
use std::time::Duration;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// `READY=1` and a first `STATUS=`: start-up checks passed.
pub fn ready() {
    send(&[NotifyState::Ready, NotifyState::Status("ready: claiming")]);
}

/// `STATUS=<text>`.
pub fn status(text: &str) {
    send(&[NotifyState::Status(text)]);
}

/// `STOPPING=1` with a `STATUS=` saying why.
pub fn stopping(text: &str) {
    send(&[NotifyState::Stopping, NotifyState::Status(text)]);
}

/// `WATCHDOG=1`.
pub fn watchdog() {
    send(&[NotifyState::Watchdog]);
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`, for this process), if any.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled().filter(|d| !d.is_zero())
}
