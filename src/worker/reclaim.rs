//! Keeping the claim: reclaim before `takenUntil`, swap in the new task credentials, and
//! signal when the run is lost.
//!
//! A 409 means the run is no longer ours (cancelled, deadline, claim expired): the pipeline
//! then kills the script, uploads nothing and reports nothing. Other errors are retried until
//! the claim has expired, after which the run is lost as well. Retries follow the claim, not
//! the client's general backoff: each attempt is one request bounded by half the time left,
//! and the pause between attempts shrinks as expiry nears (at most a quarter of the time
//! left), so a queue that comes back shortly before `takenUntil` still gets several attempts.

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

/// Shortest and longest wait for one reclaim answer.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);
const MAX_ATTEMPT: Duration = Duration::from_secs(30);
/// Shortest pause between failed attempts.
const MIN_PAUSE: Duration = Duration::from_millis(200);

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
        let mut retrying = false;
        loop {
            if !retrying {
                let now = crate::clock::now();
                let left = (taken_until - now).to_std().unwrap_or(Duration::ZERO);
                // Reclaim `margin` before expiry, but never more often than every third of the
                // remaining time (a claim shorter than the margin would otherwise spin).
                let wait = left.saturating_sub(self.margin).max(left / 3);
                tokio::select! {
                    _ = done.cancelled() => return,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            // One attempt at a time, each bounded by the time the claim has left, so the
            // loop (not a general backoff) decides when to try again.
            let left = (taken_until - crate::clock::now())
                .to_std()
                .unwrap_or(Duration::ZERO);
            let attempt_limit = (left / 2).clamp(MIN_ATTEMPT, MAX_ATTEMPT);
            let current = client.current();
            let attempt = tokio::time::timeout(
                attempt_limit,
                current.reclaim_task_once(&self.task_id, self.run_id),
            );
            let result = tokio::select! {
                _ = done.cancelled() => return,
                r = attempt => r,
            };
            let result = match result {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) if e.is_conflict() => {
                    tracing::warn!(task_id = %self.task_id, run_id = self.run_id, error = %e,
                        "reclaim refused (409): the run is no longer ours");
                    lost.cancel();
                    return;
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} ms", attempt_limit.as_millis())),
            };
            match result {
                Ok(r) => {
                    retrying = false;
                    let fresh = client
                        .current()
                        .with_credentials(Credentials::from(&r.credentials));
                    client.swap(fresh);
                    taken_until = r.taken_until;
                    tracing::info!(task_id = %self.task_id, run_id = self.run_id,
                        taken_until = %crate::queue::types::format_time(taken_until),
                        "reclaimed; task credentials replaced");
                }
                Err(e) => {
                    let left = (taken_until - crate::clock::now())
                        .to_std()
                        .unwrap_or(Duration::ZERO);
                    if left.is_zero() {
                        tracing::error!(task_id = %self.task_id, run_id = self.run_id, error = %e,
                            "reclaim failed and the claim has expired: giving the run up");
                        lost.cancel();
                        return;
                    }
                    // Retry sooner as expiry nears: several attempts fit in the last margin.
                    let pause = self.retry_delay.min(left / 4).max(MIN_PAUSE);
                    if left < self.margin / 2 {
                        tracing::error!(task_id = %self.task_id, run_id = self.run_id, error = %e,
                            left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX),
                            "reclaim failing and the claim is at risk; retrying");
                    } else {
                        tracing::warn!(task_id = %self.task_id, run_id = self.run_id, error = %e,
                            "reclaim failed; retrying");
                    }
                    tokio::select! {
                        _ = done.cancelled() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    retrying = true;
                }
            }
        }
    }
}
