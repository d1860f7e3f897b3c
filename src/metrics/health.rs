//! Liveness and readiness: what `/healthz`, `/readyz` and the systemd watchdog answer.
//!
//! Liveness is a deadline. Every step of the claim loop, and every stage of a running task,
//! moves it to "now + that step's budget" ([`Budgets`]: twice the longest a healthy step can
//! legitimately take). The worker is alive while the deadline has not passed; a claim loop or
//! a stage that stops moving (a hung call, a deadlock, a stuck runtime) runs out of budget, and
//! `/healthz` answers 503 and the watchdog pings stop. Readiness is start-up done, a usable
//! trust policy, and not draining.
//!
//! Only monotonic time is used ([`std::time::Instant`]): a wall-clock step cannot make the
//! worker look wedged.

use super::Stage;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long each step may take before the worker counts as wedged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    /// From process start to the end of the start-up checks (before the first claim).
    pub startup: Duration,
    /// One round of the claim loop: a claimWork call with all its retries, then the longest
    /// pause (poll interval or backoff).
    pub claim: Duration,
    /// Validation, artifact collection and signing: local work.
    pub local: Duration,
    /// Fetching and verifying the chain (each download has its own deadline).
    pub verify: Duration,
    /// The script: its timeout plus the kill grace.
    pub script: Duration,
    /// Uploading (each upload has its own deadline).
    pub upload: Duration,
    /// Reporting: one API call with all its retries.
    pub report: Duration,
}

/// Local work (validation, hashing every artifact, signing) allowed before the worker counts as
/// wedged: generous, as hashing the largest allowed artifacts takes minutes.
const LOCAL_WORK: Duration = Duration::from_secs(600);

/// Start-up (schema compilation, trust store, sandbox probes) allowed before `/healthz` fails.
const STARTUP: Duration = Duration::from_secs(300);

impl Budgets {
    /// Twice the longest expected wait of each step, from the configuration and the client's
    /// limits.
    pub fn from_config(
        config: &crate::config::Config,
        retry: &crate::queue::RetryPolicy,
        limits: &crate::queue::ClientLimits,
    ) -> Budgets {
        let twice = |d: Duration| d.saturating_mul(2);
        let api = retry.worst_case();
        let timing = &config.timing;
        let pause = Duration::from_secs(
            timing
                .poll_interval_secs
                .max(timing.backoff_max_secs)
                .max(1),
        );
        Budgets {
            startup: STARTUP,
            claim: twice(api.saturating_add(pause)),
            local: twice(LOCAL_WORK),
            verify: twice(limits.download_deadline.saturating_add(api)),
            script: twice(
                config
                    .script
                    .timeout()
                    .saturating_add(config.script.kill_grace()),
            ),
            upload: twice(limits.upload_deadline.saturating_add(api)),
            report: twice(api),
        }
    }

    /// The budget of one stage.
    pub fn of(&self, stage: Stage) -> Duration {
        match stage {
            Stage::Claim => self.claim,
            Stage::Validate | Stage::Collect | Stage::Sign => self.local,
            Stage::Verify => self.verify,
            Stage::Script => self.script,
            Stage::Upload => self.upload,
            Stage::Report => self.report,
        }
    }
}

/// The shared health state (lock-free; read by the HTTP server and the watchdog).
#[derive(Debug)]
pub struct Health {
    origin: Instant,
    /// Milliseconds after `origin` until which the worker counts as alive.
    deadline_ms: AtomicU64,
    /// The budget that set the deadline, for the answer's text.
    budget_ms: AtomicU64,
    started: AtomicBool,
    trust_ok: AtomicBool,
    draining: AtomicBool,
}

/// What `/readyz` says when the worker is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady(pub Vec<&'static str>);

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Health {
    /// Starting: alive for `startup`, not ready.
    pub fn new(startup: Duration) -> Health {
        Health {
            origin: Instant::now(),
            deadline_ms: AtomicU64::new(millis(startup)),
            budget_ms: AtomicU64::new(millis(startup)),
            started: AtomicBool::new(false),
            trust_ok: AtomicBool::new(false),
            draining: AtomicBool::new(false),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        millis(self.origin.elapsed())
    }

    /// Progress: alive for another `budget` from now.
    pub fn progress(&self, budget: Duration) {
        let deadline = self.elapsed_ms().saturating_add(millis(budget));
        self.deadline_ms.store(deadline, Ordering::Relaxed);
        self.budget_ms.store(millis(budget), Ordering::Relaxed);
    }

    /// `Ok` while the last progress is within its budget; otherwise how long ago the budget ran
    /// out and what it was.
    pub fn alive(&self) -> Result<(), (Duration, Duration)> {
        let now = self.elapsed_ms();
        let deadline = self.deadline_ms.load(Ordering::Relaxed);
        if now <= deadline {
            Ok(())
        } else {
            Err((
                Duration::from_millis(now.saturating_sub(deadline)),
                Duration::from_millis(self.budget_ms.load(Ordering::Relaxed)),
            ))
        }
    }

    /// Start-up checks passed.
    pub fn set_started(&self) {
        self.started.store(true, Ordering::Relaxed);
    }

    /// Whether a usable trust policy is in force.
    pub fn set_trust_ok(&self, ok: bool) {
        self.trust_ok.store(ok, Ordering::Relaxed);
    }

    /// Stop claiming was requested.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Whether a drain or stop was requested.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Ready to take work: started, a usable trust policy, not draining; otherwise every
    /// reason that is not met.
    pub fn ready(&self) -> Result<(), NotReady> {
        let mut why = Vec::new();
        if !self.started.load(Ordering::Relaxed) {
            why.push("start-up checks have not passed yet");
        }
        if !self.trust_ok.load(Ordering::Relaxed) {
            why.push("no usable trust policy in force");
        }
        if self.is_draining() {
            why.push("draining: no new tasks are claimed");
        }
        if why.is_empty() {
            Ok(())
        } else {
            Err(NotReady(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alive_until_the_budget_runs_out() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(h.alive(), Ok(()));
        h.progress(Duration::ZERO);
        std::thread::sleep(Duration::from_millis(5));
        let (late, budget) = h.alive().unwrap_err();
        assert!(late > Duration::ZERO);
        assert_eq!(budget, Duration::ZERO);
        h.progress(Duration::from_secs(60));
        assert_eq!(h.alive(), Ok(()));
    }

    #[test]
    fn ready_needs_start_up_trust_and_no_drain() {
        let h = Health::new(Duration::from_secs(60));
        assert_eq!(h.ready().unwrap_err().0.len(), 2);
        h.set_started();
        h.set_trust_ok(true);
        assert_eq!(h.ready(), Ok(()));
        h.set_draining();
        assert_eq!(
            h.ready(),
            Err(NotReady(vec!["draining: no new tasks are claimed"]))
        );
    }
}
