//! Keeping the claim: reclaim before `takenUntil`, swap in the new task credentials, and
//! signal when the run is lost.
//!
//! A 409 means the run is no longer ours (cancelled, deadline, claim expired): the pipeline
//! then kills the script, uploads nothing and reports nothing. Other errors are retried until
//! the claim has expired, after which the run is lost as well. Retries follow the claim, not
//! the client's general backoff: each attempt is one request bounded by half the time left,
//! and the pause between attempts shrinks as expiry nears (at most a quarter of the time
//! left), so a queue that comes back shortly before `takenUntil` still gets several attempts.
//!
//! [`ClaimState`] is what the loop shares with the pipeline: the lost signal and the current
//! `takenUntil`. The pipeline asks it before each upload wave, so a claim that has expired is
//! known as lost at once, without a round trip and without waiting for the loop's next attempt.

use crate::ids::TaskId;
use crate::queue::{Credentials, QueueClient};
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicI64, Ordering};
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

/// Whether the run is still ours, as far as the worker knows without asking the queue: shared
/// by the reclaim loop (which extends or gives it up) and the pipeline (which checks it before
/// each upload wave and gives it up on a 409 from the queue).
#[derive(Debug, Clone)]
pub struct ClaimState {
    lost: CancellationToken,
    /// `takenUntil` of the newest claim or reclaim, in milliseconds since the epoch.
    taken_until_ms: Arc<AtomicI64>,
}

impl ClaimState {
    /// The state right after claimWork.
    pub fn new(taken_until: DateTime<Utc>) -> ClaimState {
        ClaimState {
            lost: CancellationToken::new(),
            taken_until_ms: Arc::new(AtomicI64::new(taken_until.timestamp_millis())),
        }
    }

    /// Fires once the run is known lost (the script is killed on it).
    pub fn token(&self) -> &CancellationToken {
        &self.lost
    }

    /// The run is no longer ours (the queue said so, or the claim ran out).
    pub fn give_up(&self) {
        self.lost.cancel();
    }

    /// Lost already, or `takenUntil` has passed at `now` (then it is given up here: the queue
    /// takes an expired claim away whether or not the loop has noticed yet).
    pub fn is_lost(&self, now: DateTime<Utc>) -> bool {
        if self.lost.is_cancelled() {
            return true;
        }
        if now.timestamp_millis() >= self.taken_until_ms.load(Ordering::SeqCst) {
            tracing::error!("the claim has expired (takenUntil passed): giving the run up");
            self.lost.cancel();
            return true;
        }
        false
    }

    fn extend(&self, taken_until: DateTime<Utc>) {
        self.taken_until_ms
            .store(taken_until.timestamp_millis(), Ordering::SeqCst);
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
    /// Runs until `done` fires or the run is lost (then `claim` is given up).
    pub async fn run(
        self,
        client: TaskClient,
        mut taken_until: DateTime<Utc>,
        claim: ClaimState,
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
                    claim.give_up();
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
                    claim.extend(taken_until);
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
                        claim.give_up();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).map_or_else(|e| panic!("{e}"), |t| t.to_utc())
    }

    #[test]
    fn an_expired_claim_is_lost_without_asking_the_queue() {
        let claim = ClaimState::new(t("2026-01-01T00:00:10Z"));
        assert!(!claim.is_lost(t("2026-01-01T00:00:09.999Z")));
        assert!(!claim.token().is_cancelled());
        assert!(claim.is_lost(t("2026-01-01T00:00:10Z")));
        // Given up for good: the script is killed on the token, and it stays lost.
        assert!(claim.token().is_cancelled());
        assert!(claim.is_lost(t("2026-01-01T00:00:00Z")));
    }

    #[test]
    fn a_reclaim_extends_the_claim_and_a_409_ends_it() {
        let claim = ClaimState::new(t("2026-01-01T00:00:10Z"));
        claim.extend(t("2026-01-01T00:20:10Z"));
        assert!(!claim.is_lost(t("2026-01-01T00:10:00Z")));
        claim.give_up();
        assert!(claim.is_lost(t("2026-01-01T00:10:00Z")));
    }
}
