//! `chainlock demo`: the quickstart, end to end on one machine.
//!
//! Why it exists: to show a newcomer (and test in CI) the whole release path without a
//! Taskcluster deployment, with every security step visible. In order, it:
//! 1. generates demo keys (two root keys, threshold 2; the chainlock worker key; a
//!    generic-worker ed25519 key; a release signing key) and a root-signed trust store, plus a
//!    chain policy ([`seed::Material`]);
//! 2. starts the development queue in-process on a free loopback port;
//! 3. seeds a realistic chain on it: decision task (signed `task-graph.json`), docker-image task,
//!    build task with a real tarball, each with a signed chain-of-trust document
//!    ([`seed::seed_chain`]);
//! 4. runs a chainlock worker (in-process [`crate::worker::run`], one task) on the signing task:
//!    it validates the payload, verifies the chain, runs `chainlock script sign`, uploads the
//!    signatures and signs its own `public/chain-of-trust.json`;
//! 5. checks that signature with chainlock's trust store and, when installed, `gpg --verify`;
//! 6. runs a second worker on the push task (`chainlock script push` to `<data>/published`);
//! 7. prints task statuses, artifacts and the auditor's verification tree of the push task.
//!
//! What it must not do: touch anything outside its data directory, or talk to anything but
//! loopback. The demo credentials are random and die with the process; the keys are demo keys
//! (unprotected, short-lived) and are deleted with the temporary directory unless `--data-dir`
//! keeps them. This is the CLI edge, so errors are `anyhow`.

pub mod seed;

use crate::config::Config;
use crate::devqueue::{Client, DevQueueConfig};
use crate::exit::UsageError;
use crate::ids::TaskId;
use crate::queue::{Credentials, QueueClient, RetryPolicy};
use crate::verify::{Limits, Mode};
use crate::worker::outcome::Resolution;
use crate::worker::task::TaskReport;
use anyhow::Context as _;
use seed::{ChainOptions, Material, Script, WorkerSpec};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// How long a demo worker waits for its task to become claimable before it stops claiming.
const CLAIM_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

fn step(n: u32, msg: &str) {
    println!("\n==> [{n}/7] {msg}");
}

fn info(msg: &str) {
    println!("    {msg}");
}

/// Arguments of `chainlock demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Keep everything in this directory instead of a temporary one.
    #[arg(long)]
    pub data_dir: Option<std::path::PathBuf>,
}

/// Runs the demo; exit code 0 when every stage succeeded, 1 otherwise.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let (_tmp, data_dir) = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            let d = std::fs::canonicalize(d)?;
            // Generated keys are never overwritten: a fresh directory per run.
            if std::fs::read_dir(&d)?.next().is_some() {
                return Err(UsageError(format!(
                    "--data-dir {} is not empty; give a new or empty directory",
                    d.display()
                ))
                .into());
            }
            (None, d)
        }
        None => {
            let t = tempfile::Builder::new()
                .prefix("chainlock-demo-")
                .tempdir()?;
            let d = std::fs::canonicalize(t.path())?;
            (Some(t), d)
        }
    };
    println!("chainlock demo: the whole release path on this machine (development only)");
    match &args.data_dir {
        Some(_) => info(&format!(
            "keeping everything in {} (queue state, artifacts, keys, configs, work files, \
             published tree)",
            data_dir.display()
        )),
        None => info(&format!(
            "working in temporary directory {} (removed at the end; use --data-dir DIR to keep it)",
            data_dir.display()
        )),
    }

    let result = demo_body(&data_dir).await;
    match (&result, &args.data_dir) {
        (_, Some(_)) => println!("\neverything is kept in {}", data_dir.display()),
        (_, None) => println!("\nremoving {}", data_dir.display()),
    }
    result
}

async fn demo_body(data_dir: &Path) -> anyhow::Result<i32> {
    let mut ok = true;

    // 1. Keys, trust store, chain policy.
    step(1, "generating demo keys and a root-signed trust store");
    let now = crate::clock::now();
    let material = Material::generate(data_dir, now).context("generating demo keys")?;
    for (i, fpr) in material.root_fingerprints.iter().enumerate() {
        info(&format!("root key {}:            {fpr}", i + 1));
    }
    info(&format!(
        "chainlock worker key:  {} (signs chain-of-trust documents)",
        material.worker_fingerprint
    ));
    info(&format!(
        "release signing key:   {} (used by `chainlock script sign`)",
        material.release_fingerprint
    ));
    info(&format!(
        "generic-worker key:    ed25519 {}",
        material.generic_worker_public
    ));
    info(&format!(
        "trust store {}: policy version {}, {} root keys, threshold {}",
        material.keys_dir.display(),
        material.pin.version,
        seed::ROOT_KEYS,
        seed::ROOT_KEYS
    ));
    info(&format!(
        "pin: version = {}, sha256 = {}",
        material.pin.version, material.pin.sha256
    ));
    info(&format!(
        "chain policy: {}",
        material.chain_policy.display()
    ));

    // 2. Dev queue.
    step(2, "starting the dev queue");
    let token = crate::queue::auth::random_token();
    let client_id = "demo-admin".to_owned();
    let mut cfg = DevQueueConfig::new(
        "127.0.0.1:0".parse()?,
        data_dir.join("queue"),
        vec![Client {
            client_id: client_id.clone(),
            access_token: token.clone(),
            scopes: vec!["*".into()],
        }],
    );
    cfg.claim_work_timeout = std::time::Duration::from_secs(5);
    cfg.sources_dir = Some(material.sources_dir.clone());
    let queue = crate::devqueue::start(cfg).await?;
    let root_url = queue.root_url().to_owned();
    material.serve_sources_from(&root_url)?;
    info(&format!(
        "dev queue (NOT a production queue) at {root_url}, state in {}",
        data_dir.join("queue").display()
    ));
    info(&format!(
        "it also serves the demo repository's .taskcluster.yml at {root_url}/sources/ \
         (the chain policy's rebuild rule points there)"
    ));
    let creds = Credentials::permanent(client_id, token);
    let client = QueueClient::new(&root_url, Some(creds.clone()), RetryPolicy::standard())?;

    let result = stages(&client, &root_url, data_dir, &material, &creds, &mut ok).await;
    queue.shutdown().await;
    result?;
    println!();
    if ok {
        println!("DEMO OK: signed, verified and published.");
        Ok(0)
    } else {
        println!("DEMO FAILED: see the steps above.");
        Ok(1)
    }
}

async fn stages(
    client: &QueueClient,
    root_url: &str,
    data_dir: &Path,
    material: &Material,
    creds: &Credentials,
    ok: &mut bool,
) -> anyhow::Result<()> {
    // 3. Seed the chain.
    step(
        3,
        "seeding the upstream chain (as the decision and build workers would)",
    );
    let now = crate::clock::now();
    let chain = seed::seed_chain(
        client,
        material,
        now,
        ChainOptions::default(),
        &data_dir.join("seed-scratch"),
    )
    .await
    .context("seeding the chain")?;
    info(&format!(
        "decision task      {} on {} (signed public/task-graph.json, {} tasks)",
        chain.decision.id,
        seed::DECISION_QUEUE,
        chain.links().len() - 1
    ));
    if let Some(i) = &chain.docker_image {
        info(&format!(
            "docker-image task  {} on {} ({})",
            i.id,
            seed::IMAGES_QUEUE,
            seed::IMAGE_ARTIFACT
        ));
    }
    let tarball = chain
        .build
        .outputs
        .get(seed::BUILD_ARTIFACT)
        .map(|b| b.len())
        .unwrap_or(0);
    info(&format!(
        "build task         {} on {} ({}, {tarball} bytes)",
        chain.build.id,
        seed::BUILD_QUEUE,
        seed::BUILD_ARTIFACT
    ));
    info("each completed with public/chain-of-trust.json + ed25519 public/chain-of-trust.json.sig");
    info(&format!(
        "signing task       {} on {} (pending; scope {}{})",
        chain.signing.id,
        seed::SIGNING_QUEUE,
        seed::CERT_SCOPE_PREFIX,
        seed::CERT_NAME
    ));
    let push = chain
        .push
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("the demo chain has no push task"))?;
    info(&format!(
        "push task          {} on {} (waits for the signing task; scope {}{})",
        push.id,
        seed::PUSH_QUEUE,
        seed::BUCKET_SCOPE_PREFIX,
        seed::BUCKET_NAME
    ));

    // 4. The signing worker.
    step(
        4,
        "signing worker: validate, verify the chain, run `chainlock script sign`, sign our CoT",
    );
    let exe = std::env::current_exe().context("locating the chainlock binary")?;
    let signed = run_worker(
        material,
        WorkerSpec {
            name: "signing",
            root_url,
            task_queue_id: seed::SIGNING_QUEUE,
            credentials: creds,
            chainlock_exe: &exe,
            script: Script::Sign,
            isolation: seed::SeedIsolation::strongest(1).await,
        },
    )
    .await?;
    let signing_completed = show_run(client, &chain.signing.id, &signed).await?;
    *ok &= signing_completed;
    show_worker_verdict(client, &chain.signing.id, data_dir).await;
    *ok &= audit(client, material, &chain.signing.id, data_dir).await?;

    // 5. Our own signature, checked with the trust store and with GnuPG.
    step(
        5,
        "checking public/chain-of-trust.json.asc of the signing task",
    );
    *ok &= check_own_signature(client, material, &chain.signing.id, data_dir).await?;

    // 6. The push worker.
    step(
        6,
        "push worker: verify the chain, run `chainlock script push`",
    );
    if !signing_completed {
        // The push task depends on the signing task: it will never become pending.
        info("SKIPPED: the signing task did not complete, so the push task stays unscheduled");
        *ok = false;
        return Ok(());
    }
    let pushed = run_worker(
        material,
        WorkerSpec {
            name: "push",
            root_url,
            task_queue_id: seed::PUSH_QUEUE,
            credentials: creds,
            chainlock_exe: &exe,
            script: Script::Push,
            isolation: seed::SeedIsolation::strongest(2).await,
        },
    )
    .await?;
    *ok &= show_run(client, &push.id, &pushed).await?;
    show_worker_verdict(client, &push.id, data_dir).await;
    let published = data_dir.join("published");
    info(&format!("published tree {}:", published.display()));
    let mut files = Vec::new();
    walk(&published, &mut files)?;
    files.sort();
    if files.is_empty() {
        info("  (empty)");
        *ok = false;
    }
    for f in &files {
        let rel = f.strip_prefix(&published).unwrap_or(f);
        let size = std::fs::metadata(f).map(|m| m.len()).unwrap_or(0);
        info(&format!("  {} ({size} bytes)", rel.display()));
    }
    let manifest = data_dir.join("push-manifest.json");
    match client
        .anonymous()
        .get_latest_artifact_to_file(
            &push.id,
            crate::scripts::push::MANIFEST_ARTIFACT,
            &manifest,
            16 * 1024 * 1024,
        )
        .await
    {
        Ok(_) => {
            info(&format!("{}:", crate::scripts::push::MANIFEST_ARTIFACT));
            let text = std::fs::read_to_string(&manifest).unwrap_or_default();
            for line in text.lines() {
                info(&format!("  {line}"));
            }
        }
        Err(e) => {
            info(&format!(
                "FAILED: cannot fetch {}: {e}",
                crate::scripts::push::MANIFEST_ARTIFACT
            ));
            *ok = false;
        }
    }

    // 7. Summary.
    step(
        7,
        "result: task statuses and the auditor's view of the push task",
    );
    for link in chain.links() {
        let status = client.status(&link.id).await?;
        let state = status
            .runs
            .last()
            .map(|r| {
                format!(
                    "{:?}{}",
                    r.state,
                    r.reason_resolved
                        .as_deref()
                        .map(|x| format!(" ({x})"))
                        .unwrap_or_default()
                )
            })
            .unwrap_or_else(|| format!("{:?}", status.state));
        let name = link
            .def
            .pointer("/metadata/name")
            .and_then(|v| v.as_str())
            .unwrap_or("?");
        info(&format!("{} {:<22} {state}", link.id, name));
    }
    *ok &= audit(client, material, &push.id, data_dir).await?;
    Ok(())
}

/// Writes the worker config for `spec`, runs the worker in-process for exactly one task.
async fn run_worker(material: &Material, spec: WorkerSpec<'_>) -> anyhow::Result<Vec<TaskReport>> {
    let files = material.write_worker_config(&spec)?;
    info(&format!("worker config {}", files.config.display()));
    info(&match spec.isolation {
        seed::SeedIsolation::Namespaces(r) => format!(
            "script isolation: namespaces (bubblewrap; uid {}, own PID and mount namespaces, \
             no network; the worker's key and credentials are not visible)",
            r.uid
        ),
        seed::SeedIsolation::None => "script isolation: none (this machine allows no better: \
             run the demo as root with bubblewrap installed for namespaces); the script runs as \
             the worker's uid"
            .to_owned(),
    });
    if let Some(sc) = &files.script_config {
        info(&format!("script config {}", sc.display()));
    }
    let env = crate::queue::ProcessEnv;
    let config = Config::load(&files.config, &env).map_err(|e| UsageError(e.to_string()))?;
    let credentials = config
        .load_credentials(&files.config, &env)
        .map_err(|e| UsageError(e.to_string()))?;
    let options = crate::worker::RunOptions {
        max_tasks: Some(1),
        ..Default::default()
    };
    let shutdown = crate::worker::Shutdown::new();
    // Never wait forever for a task that will not come: stop claiming after the deadline (a
    // claimWork in flight still completes, so nothing is orphaned).
    let stop = shutdown.clone();
    let deadline = tokio::spawn(async move {
        tokio::time::sleep(CLAIM_DEADLINE).await;
        stop.drain();
    });
    let summary = crate::worker::run(
        config,
        credentials,
        &HashMap::from([("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())]),
        options,
        shutdown,
    )
    .await;
    deadline.abort();
    Ok(summary?.tasks)
}

/// Prints how the worker resolved `task_id` and what it uploaded; true when completed.
async fn show_run(
    client: &QueueClient,
    task_id: &TaskId,
    reports: &[TaskReport],
) -> anyhow::Result<bool> {
    let completed = match reports.first() {
        Some(TaskReport::Resolved {
            task_id: got,
            resolution,
            ..
        }) if got == task_id => {
            info(&format!("task {task_id} resolved: {resolution:?}"));
            matches!(resolution, Resolution::Completed)
        }
        Some(other) => {
            info(&format!(
                "FAILED: the worker handled something else: {other:?}"
            ));
            false
        }
        None => {
            info("FAILED: the worker claimed nothing");
            false
        }
    };
    let artifacts = client.list_latest_artifacts(task_id).await?;
    info(&format!("uploaded artifacts of {task_id}:"));
    for a in &artifacts {
        info(&format!(
            "  {} ({}, {})",
            a.name, a.storage_type, a.content_type
        ));
    }
    if !completed {
        info("see the task log: public/logs/live_backing.log");
    }
    Ok(completed)
}

/// Prints the verdict line of the worker's own verification report (`chain_of_trust.log`).
async fn show_worker_verdict(client: &QueueClient, task_id: &TaskId, data_dir: &Path) {
    const LOG: &str = "public/logs/chain_of_trust.log";
    let dest = data_dir.join("worker-verdicts").join(task_id.as_str());
    let fetched = match std::fs::create_dir_all(&dest) {
        Ok(()) => {
            let file = dest.join("chain_of_trust.log");
            client
                .anonymous()
                .get_latest_artifact_to_file(task_id, LOG, &file, 16 * 1024 * 1024)
                .await
                .map_err(|e| e.to_string())
                .and_then(|_| std::fs::read_to_string(&file).map_err(|e| e.to_string()))
        }
        Err(e) => Err(e.to_string()),
    };
    match fetched {
        Ok(text) => info(&format!(
            "worker's verification before launching the script ({LOG}): {}",
            text.lines()
                .find(|l| l.contains("chain of trust for task"))
                .or_else(|| text.lines().next())
                .unwrap_or("(empty)")
                .trim()
        )),
        Err(e) => info(&format!("no {LOG}: {e}")),
    }
}

/// Fetches the evidence of `task_id` (including its own document) into `<data>/audit/<task>`
/// and prints the auditor's tree, exactly as `chainlock verify TASK_ID --check-task` does.
async fn audit(
    client: &QueueClient,
    material: &Material,
    task_id: &TaskId,
    data_dir: &Path,
) -> anyhow::Result<bool> {
    let now = crate::clock::now();
    let limits = Limits::default();
    let dir = data_dir.join("audit").join(task_id.as_str());
    let anon = client.anonymous();
    let policy = material.chain_policy()?;
    if let Err(e) = crate::evidence::fetch_bundle(
        &anon,
        task_id,
        None,
        &dir,
        &limits,
        true,
        None,
        Some(&policy),
    )
    .await
    {
        info(&format!(
            "FAILED: cannot fetch the evidence of {task_id}: {e}"
        ));
        return Ok(false);
    }
    let bundle = crate::verify::bundle::Bundle::open_fetched(&dir, &limits)?;
    let renderer = crate::jsone::Sandboxed::current()?;
    let result = crate::verify::verify(
        &bundle,
        task_id,
        &policy,
        &material.trust_store(now)?,
        now,
        &limits,
        Mode {
            check_target: true,
            renderer: &renderer,
        },
    );
    info(&format!(
        "auditor's view (chainlock verify {task_id} --check-task; bundle in {}):",
        dir.display()
    ));
    let (report, verified) = match result {
        Ok(v) => (v.report().clone(), true),
        Err(r) => (*r, false),
    };
    for line in report.to_text().lines() {
        info(&format!("  {line}"));
    }
    Ok(verified)
}

/// Downloads the signing task's document and signature; verifies them with the trust store
/// and, when `gpg` is installed, with GnuPG in a throw-away home.
async fn check_own_signature(
    client: &QueueClient,
    material: &Material,
    task_id: &TaskId,
    data_dir: &Path,
) -> anyhow::Result<bool> {
    let dir = data_dir.join("signature-check");
    std::fs::create_dir_all(&dir)?;
    let doc = dir.join("chain-of-trust.json");
    let asc = dir.join("chain-of-trust.json.asc");
    let anon = client.anonymous();
    for (name, dest) in [
        (seed::COT_DOCUMENT, &doc),
        (seed::COT_OPENPGP_SIGNATURE, &asc),
    ] {
        if let Err(e) = anon
            .get_latest_artifact_to_file(task_id, name, dest, 16 * 1024 * 1024)
            .await
        {
            info(&format!("FAILED: cannot fetch {name}: {e}"));
            return Ok(false);
        }
    }
    let doc_bytes = std::fs::read(&doc)?;
    let asc_bytes = std::fs::read(&asc)?;
    let now = crate::clock::now();
    let store = material.trust_store(now)?;
    let mut ok = match store.verify_cot_signature(
        seed::CHAINLOCK_IMPL,
        &doc_bytes,
        crate::trust::CotSignature::OpenPgpArmored(&asc_bytes),
        now,
        chrono::Duration::minutes(5),
    ) {
        Ok(a) => {
            info(&format!(
                "chainlock trust store: GOOD signature by {} key {} ({}), made {}, policy v{}",
                a.worker_impl, a.key_name, a.key_id, a.signed_at, a.policy_version
            ));
            true
        }
        Err(e) => {
            info(&format!("chainlock trust store: REJECTED: {e}"));
            false
        }
    };
    match gpg_verify(&dir, &material.worker_cert, &doc, &asc) {
        GpgResult::NotInstalled => info("gpg: not installed, skipped"),
        GpgResult::Good(line) => info(&format!("gpg --verify: {line}")),
        GpgResult::Bad(text) => {
            info("gpg --verify: FAILED");
            for line in text.lines() {
                info(&format!("  {line}"));
            }
            ok = false;
        }
    }
    Ok(ok)
}

enum GpgResult {
    NotInstalled,
    Good(String),
    Bad(String),
}

/// `gpg --import` the worker's exported cert into `<dir>/gnupg`, then `gpg --verify`, with
/// `--no-autostart` so no gpg-agent outlives the demo. The demo is a development tool, not the
/// script launcher: it runs gpg with a fixed argv, no shell.
#[allow(clippy::disallowed_methods)]
fn gpg_verify(dir: &Path, cert: &Path, doc: &Path, asc: &Path) -> GpgResult {
    use std::os::unix::fs::PermissionsExt as _;
    let home = dir.join("gnupg");
    if std::fs::create_dir_all(&home).is_err()
        || std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700)).is_err()
    {
        return GpgResult::Bad(format!("cannot create {}", home.display()));
    }
    let gpg = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("gpg")
            .env("GNUPGHOME", &home)
            .arg("--batch")
            .arg("--no-tty")
            // Importing a public key and verifying need no agent: never start one, so the
            // demo leaves nothing running.
            .arg("--no-autostart")
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
    };
    let import = match gpg(&["--import".as_ref(), cert.as_os_str()]) {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return GpgResult::NotInstalled,
        Err(e) => return GpgResult::Bad(e.to_string()),
    };
    if !import.status.success() {
        return GpgResult::Bad(String::from_utf8_lossy(&import.stderr).into_owned());
    }
    match gpg(&["--verify".as_ref(), asc.as_os_str(), doc.as_os_str()]) {
        Ok(o) if o.status.success() => {
            let text = String::from_utf8_lossy(&o.stderr).into_owned();
            let good = text
                .lines()
                .find(|l| l.contains("Good signature"))
                .unwrap_or("good signature")
                .trim_start_matches("gpg: ")
                .to_owned();
            GpgResult::Good(good)
        }
        Ok(o) => GpgResult::Bad(String::from_utf8_lossy(&o.stderr).into_owned()),
        Err(e) => GpgResult::Bad(e.to_string()),
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let ty = entry.file_type()?;
        if ty.is_dir() {
            walk(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}
