//! Keeping the claim: reclaim before `takenUntil`, swap in the new task credentials, and
//! signal when the run is lost.
//!
//! A 409 means the run is no longer ours (cancelled, deadline, claim expired): the pipeline
//! then kills the script, uploads nothing and reports nothing. Other errors are retried until
//! the claim has expired, after which the run is lost as well.

use crate::ids::TaskId;
use crate::queue::{Credentials, QueueClient};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The queue client holding the run's current temporary credentials, shared between the
/// reclaimer (which swaps it) and the pipeline (uploads, report).
#[derive(Debug, Clone)]
pub struct TaskClient(Arc<Mutex<QueueClient>>);

impl TaskClient {
    /// Wraps the client made from the claim's credentials.
    pub fn new(client: QueueClient) -> TaskClient {
        TaskClient(Arc::new(Mutex::new(client)))
    }

    /// The client with the newest credentials.
    pub fn current(&self) -> QueueClient {
        match self.0.lock() {
            Ok(c) => c.clone(),
            // A panic while holding the lock cannot leave a half-written client (the swap is
            // one assignment), so the value is still good.
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn swap(&self, client: QueueClient) {
        match self.0.lock() {
            Ok(mut c) => *c = client,
            Err(poisoned) => *poisoned.into_inner() = client,
        }
    }
}

/// Parameters of the reclaim loop.
#[derive(Debug, Clone)]
pub struct Reclaimer {
    /// Task.
    pub task_id: TaskId,
    /// Run.
    pub run_id: u32,
    /// Reclaim this long before `takenUntil`.
    pub margin: Duration,
    /// Pause between failed reclaim attempts.
    pub retry_delay: Duration,
}

impl Reclaimer {
    /// Runs until `done` fires or the run is lost (then `lost` is cancelled).
    pub async fn run(
        self,
        client: TaskClient,
        mut taken_until: DateTime<Utc>,
        lost: CancellationToken,
        done: CancellationToken,
    ) {
        loop {
            let now = crate::clock::now();
            let left = (taken_until - now).to_std().unwrap_or(Duration::ZERO);
            // Reclaim `margin` before expiry, but never more often than every third of the
            // remaining time (a claim shorter than the margin would otherwise spin).
            let wait = left.saturating_sub(self.margin).max(left / 3);
            tokio::select! {
                _ = done.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            match client
                .current()
                .reclaim_task(&self.task_id, self.run_id)
                .await
            {
                Ok(r) => {
                    let fresh = client
                        .current()
                        .with_credentials(Credentials::from(&r.credentials));
                    client.swap(fresh);
                    taken_until = r.taken_until;
                    tracing::info!(task_id = %self.task_id, run_id = self.run_id,
                        taken_until = %crate::queue::types::format_time(taken_until),
                        "reclaimed; task credentials replaced");
                }
                Err(e) if e.is_conflict() => {
                    tracing::warn!(task_id = %self.task_id, run_id = self.run_id, error = %e,
                        "reclaim refused (409): the run is no longer ours");
                    lost.cancel();
                    return;
                }
                Err(e) => {
                    if crate::clock::now() >= taken_until {
                        tracing::error!(task_id = %self.task_id, run_id = self.run_id, error = %e,
                            "reclaim failed and the claim has expired: giving the run up");
                        lost.cancel();
                        return;
                    }
                    tracing::warn!(task_id = %self.task_id, run_id = self.run_id, error = %e,
                        "reclaim failed; retrying");
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tokio::time::sleep(self.retry_delay) => {}
                    }
                }
            }
        }
    }
}
