//! What an operator watches: Prometheus metrics, health answers and systemd notifications.
//!
//! Why it exists: chainlock runs unattended for years under systemd or Kubernetes. Prometheus
//! scrapes [`Metrics`] at `/metrics`, the kubelet asks `/healthz` and `/readyz` ([`Health`]),
//! systemd reads `READY=1`, `STATUS=`, `WATCHDOG=1` and `STOPPING=1` ([`notify`]). All three
//! are fed from the same calls in the worker ([`Telemetry`]), so they cannot disagree.
//!
//! The metrics use the official Prometheus client for Rust, `prometheus-client` (maintained
//! under the Prometheus organisation, OpenMetrics text output, no global registry, no unsafe
//! code); the `prometheus` crate is older and keeps a process-global default registry.
//!
//! What it must not do (the module's invariant): no label value is task-controlled or secret.
//! Every label is either a `&'static str` chosen by our code (stage, outcome, reason, check,
//! API method name, result) or a name from the operator's root-signed trust policy (worker
//! implementation and key name), whose size the trust store already bounds. Task ids appear
//! only in the systemd `STATUS=` line, never in a label; a [`crate::ids::TaskId`] is a slugid.

pub mod health;
pub mod notify;
pub mod server;

pub use health::{Budgets, Health};

use crate::ids::TaskId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// The worker's version (Cargo's).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit this binary was built from: `CHAINLOCK_GIT_COMMIT` at build time when it is
/// 7 to 40 lowercase hex digits, otherwise `unknown` (a tarball, a build without the variable).
pub fn git_commit() -> &'static str {
    match option_env!("CHAINLOCK_GIT_COMMIT") {
        Some(c) if is_commit(c) => c,
        _ => "unknown",
    }
}

fn is_commit(c: &str) -> bool {
    (7..=40).contains(&c.len())
        && c.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A stage of one task (and the claim before it): the `stage` label of the duration histogram
/// and of the `STATUS=` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// claimWork (one long poll).
    Claim,
    /// Parsing the claim and validating the restricted input (stages 1-2).
    Validate,
    /// Fetching and verifying the chain of trust (stage 3).
    Verify,
    /// The script (stage 4).
    Script,
    /// Collecting and hashing the artifacts (stage 5).
    Collect,
    /// Closing the task log, writing and signing our document (stage 6).
    Sign,
    /// Both upload waves (stage 7).
    Upload,
    /// Resolving the run (stage 8).
    Report,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 8] = [
        Stage::Claim,
        Stage::Validate,
        Stage::Verify,
        Stage::Script,
        Stage::Collect,
        Stage::Sign,
        Stage::Upload,
        Stage::Report,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Claim => "claim",
            Stage::Validate => "validate",
            Stage::Verify => "verify",
            Stage::Script => "script",
            Stage::Collect => "collect",
            Stage::Sign => "sign",
            Stage::Upload => "upload",
            Stage::Report => "report",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResolvedLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndpointLabels {
    endpoint: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabels {
    worker_impl: String,
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Upper bounds of the stage histograms, in seconds: from a fast validation to a long script.
const STAGE_BUCKETS: [f64; 14] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0,
];

fn stage_histogram() -> Histogram {
    Histogram::new(STAGE_BUCKETS)
}

/// Every metric the worker exports, registered once. Cheap to update from any thread.
pub struct Metrics {
    registry: Registry,
    tasks_claimed: Counter,
    tasks_resolved: Family<ResolvedLabels, Counter>,
    cot_verifications: Family<ResultLabels, Counter>,
    cot_failed_checks: Family<CheckLabels, Counter>,
    stage_duration: Family<StageLabels, Histogram, fn() -> Histogram>,
    uploaded_bytes: Counter,
    downloaded_bytes: Counter,
    retries: Family<EndpointLabels, Counter>,
    policy_version: Gauge,
    policy_usable: Gauge,
    policy_expiry_left: FloatGauge,
    worker_key_expiry_left: FloatGauge,
    trusted_key_expiry_left: Family<KeyLabels, FloatGauge>,
    draining: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero (build info set).
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            registry: Registry::default(),
            tasks_claimed: Counter::default(),
            tasks_resolved: Family::default(),
            cot_verifications: Family::default(),
            cot_failed_checks: Family::default(),
            stage_duration: Family::new_with_constructor(stage_histogram),
            uploaded_bytes: Counter::default(),
            downloaded_bytes: Counter::default(),
            retries: Family::default(),
            policy_version: Gauge::default(),
            policy_usable: Gauge::default(),
            policy_expiry_left: FloatGauge::default(),
            worker_key_expiry_left: FloatGauge::default(),
            trusted_key_expiry_left: Family::default(),
            draining: Gauge::default(),
        };
        let build: Family<BuildLabels, Gauge> = Family::default();
        build
            .get_or_create(&BuildLabels {
                version: VERSION,
                commit: git_commit(),
            })
            .set(1);
        registry.register(
            "chainlock_build_info",
            "Always 1; the labels say which chainlock this is",
            build,
        );
        registry.register(
            "chainlock_tasks_claimed",
            "Runs claimed from the queue",
            m.tasks_claimed.clone(),
        );
        registry.register(
            "chainlock_tasks_resolved",
            "Runs handled to the end, by outcome (completed, failed, exception, lost) and reason",
            m.tasks_resolved.clone(),
        );
        registry.register(
            "chainlock_cot_verifications",
            "Chain-of-trust verifications, by result (pass, fail, error: evidence unavailable \
             or a local failure)",
            m.cot_verifications.clone(),
        );
        registry.register(
            "chainlock_cot_failed_checks",
            "Failed verifications, counted once under every check that failed in them",
            m.cot_failed_checks.clone(),
        );
        registry.register_with_unit(
            "chainlock_stage_duration",
            "Time spent in each stage of a task (claim: one claimWork call)",
            Unit::Seconds,
            m.stage_duration.clone(),
        );
        registry.register_with_unit(
            "chainlock_uploaded",
            "Artifact bytes sent on the wire (after gzip)",
            Unit::Bytes,
            m.uploaded_bytes.clone(),
        );
        registry.register_with_unit(
            "chainlock_downloaded",
            "Artifact bytes downloaded (after gzip decoding)",
            Unit::Bytes,
            m.downloaded_bytes.clone(),
        );
        registry.register(
            "chainlock_queue_retries",
            "Queue requests retried, by API method (artifactUpload: the PUT to the store)",
            m.retries.clone(),
        );
        registry.register(
            "chainlock_trust_policy_version",
            "Version of the trust policy in force (0 while none is usable)",
            m.policy_version.clone(),
        );
        registry.register(
            "chainlock_trust_policy_usable",
            "1 while the trust policy is valid, unexpired and trusts our key; 0 stops claims",
            m.policy_usable.clone(),
        );
        // Time left in seconds, Prometheus's base unit (divide by 86400 for days; negative
        // once past).
        registry.register_with_unit(
            "chainlock_trust_policy_expiry_remaining",
            "Time until the trust policy in force expires",
            Unit::Seconds,
            m.policy_expiry_left.clone(),
        );
        registry.register_with_unit(
            "chainlock_worker_key_expiry_remaining",
            "Time until this worker's signing key stops verifying: its policy window ends or its \
             certificate expires, whichever is first",
            Unit::Seconds,
            m.worker_key_expiry_left.clone(),
        );
        registry.register_with_unit(
            "chainlock_trusted_key_expiry_remaining",
            "Time until each unrevoked key of the trust policy leaves its window or its \
             certificate expires, whichever is first, by worker implementation and key name",
            Unit::Seconds,
            m.trusted_key_expiry_left.clone(),
        );
        registry.register(
            "chainlock_draining",
            "1 once SIGUSR1 or SIGTERM said to stop claiming",
            m.draining.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The OpenMetrics text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail; a broken encoder yields what it wrote so far.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The same exposition in the Prometheus text format 0.0.4, for scrapers that do not ask
    /// for OpenMetrics (`promtool check metrics`, `curl`): there a counter's family is named
    /// with its `_total` suffix, and `# UNIT` and `# EOF` do not exist.
    pub fn encode_prometheus_text(&self) -> String {
        openmetrics_to_text(&self.encode())
    }

    /// One run claimed.
    pub fn claimed(&self) {
        self.tasks_claimed.inc();
    }

    /// One run handled to the end.
    pub fn resolved(&self, outcome: &'static str, reason: &'static str) {
        self.tasks_resolved
            .get_or_create(&ResolvedLabels { outcome, reason })
            .inc();
    }

    /// One verification ended with `result`; for a failure, `failed` lists the checks that
    /// failed (each counted once).
    pub fn verification(&self, result: &'static str, failed: &[&'static str]) {
        self.cot_verifications
            .get_or_create(&ResultLabels { result })
            .inc();
        let mut seen: Vec<&'static str> = Vec::new();
        for check in failed {
            if !seen.contains(check) {
                seen.push(check);
                self.cot_failed_checks
                    .get_or_create(&CheckLabels { check })
                    .inc();
            }
        }
    }

    /// Time spent in one stage.
    pub fn observe(&self, stage: Stage, took: Duration) {
        self.stage_duration
            .get_or_create(&StageLabels {
                stage: stage.as_str(),
            })
            .observe(took.as_secs_f64());
    }

    /// Bytes sent to the artifact store.
    pub fn uploaded(&self, bytes: u64) {
        self.uploaded_bytes.inc_by(bytes);
    }

    /// Bytes downloaded from the queue or the artifact store.
    pub fn downloaded(&self, bytes: u64) {
        self.downloaded_bytes.inc_by(bytes);
    }

    /// One retry of a request to `endpoint` (an API method name from our own code).
    pub fn retry(&self, endpoint: &'static str) {
        self.retries
            .get_or_create(&EndpointLabels { endpoint })
            .inc();
    }

    /// The trust policy in force, and the windows of its keys, at `now`.
    pub fn trust_in_force(
        &self,
        store: &crate::trust::TrustStore,
        worker_impl: &str,
        worker_fingerprint: &str,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let left = |t: chrono::DateTime<chrono::Utc>| {
            // i64 seconds to f64 is exact for any window a policy can hold (< 2^53 s).
            (t - now).num_seconds() as f64
        };
        let file = &store.policy().file;

        self.policy_expiry_left.set(left(file.expires));
        // A new policy version may drop keys: they disappear from the scrape. (Cleared only on
        // a change, so a scrape never catches the family empty between two claims.)
        let version = i64::try_from(store.version()).unwrap_or(i64::MAX);
        if self.policy_version.get() != version {
            self.trusted_key_expiry_left.clear();
        }
        let mut own = None;
        for (implementation, keys) in &store.policy().workers {
            for (key, material) in keys.iter().filter(|(k, _)| k.revocation.is_none()) {
                // The certificate's own expiry counts as well as the window (sequoia's
                // standard policy, as verification judges it).
                let lifetime = match material {
                    crate::trust::policy::KeyMaterial::OpenPgp(cert) => {
                        Some(crate::openpgp::signing_lifetime(cert, now))
                    }
                    crate::trust::policy::KeyMaterial::Ed25519(_) => None,
                };
                let end = crate::trust::outlook::key_end(key, lifetime.as_ref(), now);
                let remaining = left(end);
                self.trusted_key_expiry_left
                    .get_or_create(&KeyLabels {
                        worker_impl: implementation.clone(),
                        key: key.name.clone(),
                    })
                    .set(remaining);
                let ours = implementation == worker_impl
                    && key
                        .fingerprint
                        .as_deref()
                        .is_some_and(|f| f.eq_ignore_ascii_case(worker_fingerprint));
                if ours {
                    own = Some(own.map_or(remaining, |o: f64| o.max(remaining)));
                }
            }
        }
        self.policy_version.set(version);
        self.policy_usable.set(1);
        // The policy in force always trusts our key (TrustGuard checks it first).
        self.worker_key_expiry_left.set(own.unwrap_or(0.0));
    }

    /// No usable trust policy: nothing is claimed.
    pub fn trust_unusable(&self) {
        self.policy_version.set(0);
        self.policy_usable.set(0);
    }

    /// SIGUSR1 or SIGTERM arrived.
    pub fn set_draining(&self) {
        self.draining.set(1);
    }
}

/// OpenMetrics text as `prometheus-client` writes it, turned into Prometheus text 0.0.4: the
/// `# HELP` and `# TYPE` lines of a counter name the `_total` samples; `# UNIT` and `# EOF`
/// are dropped. Samples are the same in both formats.
fn openmetrics_to_text(open: &str) -> String {
    let mut out = String::with_capacity(open.len());
    let mut help: Option<&str> = None;
    for line in open.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if line.starts_with("# HELP ") {
            if let Some(h) = help.replace(line) {
                out.push_str(h);
                out.push('\n');
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                let h = help.take().unwrap_or("");
                let text = h
                    .strip_prefix("# HELP ")
                    .and_then(|r| r.strip_prefix(name))
                    .unwrap_or("");
                out.push_str(&format!(
                    "# HELP {name}_total{text}\n# TYPE {name}_total counter\n"
                ));
                continue;
            }
            if let Some(h) = help.take() {
                out.push_str(h);
                out.push('\n');
            }
            out.push_str(line);
            out.push('\n');
            continue;
        }
        if let Some(h) = help.take() {
            out.push_str(h);
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    if let Some(h) = help {
        out.push_str(h);
        out.push('\n');
    }
    out
}

/// The worker's side of metrics, health and systemd: one value shared by the claim loop, the
/// task stages, the queue client and the HTTP server.
#[derive(Debug)]
pub struct Telemetry {
    /// The Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Liveness and readiness.
    pub health: Health,
    budgets: Budgets,
}

impl Telemetry {
    /// Fresh metrics, a health state that is "starting", and the stage budgets.
    pub fn new(budgets: Budgets) -> Telemetry {
        Telemetry {
            metrics: Arc::new(Metrics::new()),
            health: Health::new(budgets.startup),
            budgets,
        }
    }

    /// Start-up checks passed: ready (unless the trust policy or draining say otherwise), and
    /// `READY=1` to systemd.
    pub fn started(&self) {
        self.health.set_started();
        notify::ready();
    }

    /// A stage begins: progress for `/healthz` (and so for the watchdog), `STATUS=` to
    /// systemd. The returned timer records the stage's duration when dropped.
    pub fn stage(&self, stage: Stage, task: Option<(&TaskId, u32)>) -> StageTimer<'_> {
        self.health.progress(self.budgets.of(stage));
        let status = match task {
            Some((id, run)) => format!("{} task {id} run {run}", stage.as_str()),
            None => "claim: waiting for a task".to_owned(),
        };
        notify::status(&status);
        StageTimer {
            metrics: &self.metrics,
            stage,
            started: Instant::now(),
        }
    }

    /// The claim loop is idle between calls (a pause, a refused policy): still progress.
    pub fn idle(&self, status: &str) {
        self.health.progress(self.budgets.of(Stage::Claim));
        notify::status(status);
    }

    /// SIGUSR1 or SIGTERM: not ready any more, `STOPPING=1`.
    pub fn draining(&self, status: &str) {
        self.health.set_draining();
        self.metrics.set_draining();
        notify::stopping(status);
    }

    /// The trust policy in force (ready) or none (not ready).
    pub fn trust(&self, usable: bool) {
        self.health.set_trust_ok(usable);
        if !usable {
            self.metrics.trust_unusable();
        }
    }
}

/// Records how long a stage took when dropped (on every path out of it, errors included).
#[derive(Debug)]
pub struct StageTimer<'a> {
    metrics: &'a Metrics,
    stage: Stage,
    started: Instant,
}

impl Drop for StageTimer<'_> {
    fn drop(&mut self) {
        self.metrics.observe(self.stage, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_are_hex_or_unknown() {
        for (c, ok) in [
            ("0123abc", true),
            ("0123456789abcdef0123456789abcdef01234567", true),
            ("012345", false),
            ("0123456789abcdef0123456789abcdef012345678", false),
            ("0123ABC", false),
            ("0123ab\"", false),
        ] {
            assert_eq!(is_commit(c), ok, "{c}");
        }
        assert!(git_commit() == "unknown" || is_commit(git_commit()));
    }

    #[test]
    fn exposition_names_every_family_with_bounded_labels() {
        let m = Metrics::new();
        m.claimed();
        m.resolved("exception", "malformed-payload");
        m.verification("fail", &["artifacts", "artifacts", "signature"]);
        m.observe(Stage::Verify, Duration::from_millis(20));
        m.retry("reclaimTask");
        m.uploaded(10);
        let text = m.encode();
        for needle in [
            "chainlock_build_info{version=\"",
            "chainlock_tasks_claimed_total 1",
            "chainlock_tasks_resolved_total{outcome=\"exception\",reason=\"malformed-payload\"} 1",
            "chainlock_cot_verifications_total{result=\"fail\"} 1",
            "chainlock_cot_failed_checks_total{check=\"artifacts\"} 1",
            "chainlock_cot_failed_checks_total{check=\"signature\"} 1",
            "chainlock_stage_duration_seconds_bucket{le=\"0.05\",stage=\"verify\"} 1",
            "chainlock_queue_retries_total{endpoint=\"reclaimTask\"} 1",
            "chainlock_uploaded_bytes_total 10",
            "chainlock_draining 0",
        ] {
            assert!(text.contains(needle), "{needle} not in:\n{text}");
        }
        let plain = m.encode_prometheus_text();
        for needle in [
            "# TYPE chainlock_tasks_claimed_total counter\nchainlock_tasks_claimed_total 1\n",
            "# HELP chainlock_uploaded_bytes_total Artifact bytes",
            "# TYPE chainlock_stage_duration_seconds histogram\n",
            "# TYPE chainlock_draining gauge\n",
        ] {
            assert!(plain.contains(needle), "{needle} not in:\n{plain}");
        }
        assert!(
            !plain.contains("# UNIT") && !plain.contains("# EOF"),
            "{plain}"
        );
    }
}
