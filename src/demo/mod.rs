//! `chainlock demo`: the quickstart, end to end on one machine.
//!
//! Why it exists: to show an operator (and test in CI) the whole worker path without a
//! Taskcluster deployment. It starts the development queue in-process on a free loopback port,
//! seeds a completed "build" task with a real artifact (created, claimed, uploaded and completed
//! through the queue client, as a real build worker would), creates a signing task whose payload
//! names that artifact in `upstreamArtifacts`, runs the worker for exactly that task with
//! `scripts/example-script`, and prints the result.
//!
//! What it must not do: touch anything outside its data directory, or talk to anything but
//! loopback. The demo credentials are random and die with the process.

pub mod seed;

use crate::cli::{DemoArgs, UsageError};
use crate::config::Config;
use crate::devqueue::{Client, DevQueueConfig};
use crate::ids::TaskId;
use crate::queue::types::{CreateArtifactRequest, CreateArtifactResponse};
use crate::queue::{Credentials, QueueClient, RetryPolicy};
use crate::worker::task::TaskReport;
use anyhow::Context as _;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const TASK_QUEUE_ID: &str = "chainlock-demo/signing";
const BUILD_ARTIFACT: &str = "public/build/target.tar.gz";

fn step(msg: &str) {
    println!("==> {msg}");
}

/// Runs the demo; exit code 0 when the signing task completed.
pub async fn run(args: DemoArgs) -> anyhow::Result<i32> {
    let (_tmp, data_dir) = match &args.data_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            let d = std::fs::canonicalize(d)?;
            step(&format!("keeping everything in {}", d.display()));
            (None, d)
        }
        None => {
            let t = tempfile::tempdir()?;
            let d = t.path().to_owned();
            (Some(t), d)
        }
    };

    let token = crate::queue::auth::random_token();
    let client_id = "demo-worker".to_owned();
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
    let queue = crate::devqueue::start(cfg).await?;
    let root_url = queue.root_url().to_owned();
    step(&format!(
        "dev queue (NOT a production queue) listening at {root_url}"
    ));
    let creds = Credentials::permanent(client_id.clone(), token.clone());
    let client = QueueClient::new(&root_url, Some(creds.clone()), RetryPolicy::standard())?;

    let result = demo_body(&client, &root_url, &data_dir, creds).await;
    queue.shutdown().await;
    result
}

async fn demo_body(
    client: &QueueClient,
    root_url: &str,
    data_dir: &Path,
    creds: Credentials,
) -> anyhow::Result<i32> {
    // 1. A build task, run by hand the way a build worker would.
    let build_id = TaskId::generate();
    client
        .create_task(
            &build_id,
            &definition(
                &build_id,
                "chainlock-demo/build",
                "build-linux64/opt",
                serde_json::json!({}),
            ),
        )
        .await?;
    step(&format!("created build task {build_id}"));
    let claim = client
        .claim_work(
            "chainlock-demo/build",
            &crate::queue::types::ClaimWorkRequest {
                worker_group: "demo".into(),
                worker_id: "builder".into(),
                tasks: 1,
            },
        )
        .await?
        .tasks
        .into_iter()
        .next()
        .ok_or_else(|| anyhow::anyhow!("the dev queue did not hand out the build task"))?;
    let build_client = client.with_credentials(Credentials::from(&claim.credentials));
    let tarball = data_dir.join("target.tar.gz");
    write_tarball(&tarball)?;
    let size = std::fs::metadata(&tarball)?.len();
    let resp = build_client
        .create_artifact(
            &build_id,
            claim.run_id,
            BUILD_ARTIFACT,
            &CreateArtifactRequest::S3 {
                expires: claim.status.expires,
                content_type: "application/x-tar".into(),
                content_length: Some(size),
            },
        )
        .await?;
    let CreateArtifactResponse::S3 { put_url, .. } = resp else {
        anyhow::bail!("createArtifact did not return a putUrl");
    };
    build_client
        .upload_file(&put_url, &tarball, "application/x-tar", false)
        .await?;
    build_client
        .report_completed(&build_id, claim.run_id)
        .await?;
    step(&format!(
        "build task completed with artifact {BUILD_ARTIFACT} ({size} bytes)"
    ));

    // 2. The signing task, depending on the build.
    let sign_id = TaskId::generate();
    let mut def = definition(
        &sign_id,
        TASK_QUEUE_ID,
        "signing-linux64/opt",
        serde_json::json!({
            "maxRunTime": 600,
            "upstreamArtifacts": [{
                "taskId": build_id.as_str(),
                "taskType": "build",
                "paths": [BUILD_ARTIFACT],
                "formats": ["autograph_gpg"]
            }]
        }),
    );
    def["dependencies"] = serde_json::json!([build_id.as_str()]);
    def["scopes"] = serde_json::json!(["project:releng:signing:cert:dep-signing"]);
    client.create_task(&sign_id, &def).await?;
    step(&format!(
        "created signing task {sign_id} (upstream: {build_id})"
    ));

    // 3. The worker, for exactly that task.
    let script = find_example_script()?;
    let config_path = data_dir.join("worker.toml");
    let toml = format!(
        "[queue]\nroot_url = \"{root_url}\"\ntask_queue_id = \"{TASK_QUEUE_ID}\"\n\
         worker_group = \"demo\"\nworker_id = \"demo-1\"\n\n[paths]\nwork_dir = \"{}\"\n\
         log_dir = \"{}\"\n\n[script]\nargv = [\"{}\"]\ntimeout_secs = 600\nkill_grace_secs = 5\n\
         env_allowlist = [\"PATH\", \"LANG\"]\n\n[timing]\npoll_interval_secs = 1\n",
        data_dir.join("work").display(),
        data_dir.join("logs").display(),
        script.display()
    );
    std::fs::write(&config_path, toml)?;
    let env = crate::queue::ProcessEnv;
    let config = Config::load(&config_path, &env).map_err(|e| UsageError(e.to_string()))?;
    step(&format!(
        "running the worker ({}) with {}",
        config_path.display(),
        script.display()
    ));
    let options = crate::worker::RunOptions {
        max_tasks: Some(1),
        ..Default::default()
    };
    let summary = crate::worker::run(
        config,
        creds,
        &HashMap::from([("PATH".to_owned(), "/usr/local/bin:/usr/bin:/bin".to_owned())]),
        options,
        crate::worker::Shutdown::new(),
    )
    .await?;

    // 4. The result, as the queue sees it.
    let status = client.status(&sign_id).await?;
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
        .unwrap_or_else(|| "no run".into());
    step(&format!("signing task {sign_id} resolved: {state}"));
    let artifacts = client.list_latest_artifacts(&sign_id).await?;
    for a in &artifacts {
        println!(
            "    artifact {} ({}, {})",
            a.name, a.storage_type, a.content_type
        );
    }
    let ok = matches!(
        summary.tasks.first(),
        Some(TaskReport::Resolved {
            resolution: crate::worker::outcome::Resolution::Completed,
            ..
        })
    );
    Ok(if ok { 0 } else { 1 })
}

fn definition(
    task_id: &TaskId,
    task_queue_id: &str,
    name: &str,
    payload: serde_json::Value,
) -> serde_json::Value {
    let now = crate::clock::now();
    let (prov, wt) = task_queue_id.split_once('/').unwrap_or((task_queue_id, ""));
    serde_json::json!({
        "provisionerId": prov,
        "workerType": wt,
        "taskQueueId": task_queue_id,
        "taskGroupId": task_id.as_str(),
        "created": crate::queue::types::format_time(now),
        "deadline": crate::queue::types::format_time(now + chrono::Duration::hours(1)),
        "expires": crate::queue::types::format_time(now + chrono::Duration::days(7)),
        "retries": 0,
        "payload": payload,
        "metadata": {
            "name": name,
            "description": "chainlock demo task",
            "owner": "demo@example.com",
            "source": "https://example.com/chainlock/demo"
        }
    })
}

/// A small real gzip stream standing in for a build's tarball.
fn write_tarball(path: &Path) -> anyhow::Result<()> {
    use std::io::Write;
    let file = std::fs::File::create(path)?;
    let mut gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    gz.write_all(b"pretend this is firefox-linux64.tar\n")?;
    gz.finish()?;
    Ok(())
}

/// `scripts/example-script` next to the binary's source tree, or in the current directory.
fn find_example_script() -> anyhow::Result<PathBuf> {
    let candidates = [
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/example-script"),
        PathBuf::from("scripts/example-script"),
    ];
    for c in candidates {
        if c.is_file() {
            return Ok(std::fs::canonicalize(c)?);
        }
    }
    anyhow::bail!("scripts/example-script not found (run the demo from the source tree)")
}
