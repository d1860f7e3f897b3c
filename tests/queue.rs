//! The queue client against the dev queue over loopback (real HTTP, real Hawk), plus the
//! official Python client's interop with the dev queue.

use chainlock::devqueue::{self, Client, DevQueueConfig, DevQueueHandle};
use chainlock::ids::TaskId;
use chainlock::queue::types::{
    ClaimWorkRequest, CreateArtifactRequest, CreateArtifactResponse, ExceptionReason, TaskState,
    format_time,
};
use chainlock::queue::{Credentials, QueueClient, QueueError, RetryPolicy};
use chainlock::secret::Secret;
use chrono::{DateTime, Duration as CDuration, Utc};
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "worker-access-token-xyz";
const QUEUE: &str = "dev-prov/signing";

fn clients() -> Vec<Client> {
    vec![
        Client {
            client_id: "admin".into(),
            access_token: Secret::new(TOKEN),
            scopes: vec!["*".into()],
        },
        Client {
            client_id: "limited".into(),
            access_token: Secret::new("limited-token"),
            scopes: vec!["queue:claim-work:other/*".into()],
        },
    ]
}

async fn start(dir: &Path, claim_timeout: Duration) -> DevQueueHandle {
    let mut cfg = DevQueueConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_owned(), clients());
    cfg.claim_timeout = claim_timeout;
    cfg.claim_work_timeout = Duration::from_millis(500);
    devqueue::start(cfg).await.unwrap()
}

fn admin(h: &DevQueueHandle) -> QueueClient {
    QueueClient::new(
        h.root_url(),
        Some(Credentials::permanent("admin", Secret::new(TOKEN))),
        RetryPolicy::fast_for_tests(),
    )
    .unwrap()
}

fn now() -> DateTime<Utc> {
    chainlock::clock::now()
}

/// Creates a task through the dev queue's createTask (raw HTTP signed by the admin client).
async fn create_task(h: &DevQueueHandle, deps: &[&TaskId]) -> (TaskId, serde_json::Value) {
    let id = TaskId::generate();
    let def = serde_json::json!({
        "taskQueueId": QUEUE,
        "created": format_time(now()),
        "deadline": format_time(now() + CDuration::hours(1)),
        "expires": format_time(now() + CDuration::days(2)),
        "dependencies": deps.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        "scopes": ["project:releng:signing:cert:dep"],
        "payload": {"upstreamArtifacts": []},
        "metadata": {"name": "t", "description": "d", "owner": "o@example.com",
                     "source": "https://example.com/x"}
    });
    python_free_create(h, &id, &def).await;
    (id, def)
}

async fn python_free_create(h: &DevQueueHandle, id: &TaskId, def: &serde_json::Value) {
    use chainlock::queue::auth::{HawkRequest, authorization_header, payload_hash, random_nonce};
    let url = format!("{}/api/queue/v1/task/{id}", h.root_url());
    let body = serde_json::to_vec(def).unwrap();
    let port = h.local_addr().port();
    let resource = format!("/api/queue/v1/task/{id}");
    let hash = payload_hash("application/json", &body).unwrap();
    let authz = authorization_header(
        "admin",
        &Secret::new(TOKEN),
        &HawkRequest {
            method: "PUT",
            host: "127.0.0.1",
            port,
            resource: &resource,
        },
        Some(&hash),
        None,
        now(),
        &random_nonce(),
    )
    .unwrap();
    let resp = reqwest::Client::new()
        .put(url)
        .header("authorization", authz)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

fn claim_req() -> ClaimWorkRequest {
    ClaimWorkRequest {
        worker_group: "wg".into(),
        worker_id: "w1".into(),
        tasks: 1,
    }
}

#[tokio::test]
async fn full_claim_reclaim_artifact_resolve_flow() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Duration::from_secs(1200)).await;
    let q = admin(&h);
    let (id, def) = create_task(&h, &[]).await;

    let claim = q.claim_work(QUEUE, &claim_req()).await.unwrap();
    assert_eq!(claim.tasks.len(), 1);
    let c = &claim.tasks[0];
    assert_eq!(c.status.state, TaskState::Running);
    assert_eq!(c.run_id, 0);
    // The stored definition equals what was given (plus defaults), timestamps untouched.
    assert_eq!(c.task["created"], def["created"]);
    assert_eq!(c.task["schedulerId"], "-");
    assert!(
        c.credentials
            .client_id
            .starts_with(&format!("task-client/{id}/0/on/wg/w1/until/"))
    );

    let tq = q.with_credentials(Credentials::from_task_credentials(&c.credentials));
    let re = tq.reclaim_task(&id, 0).await.unwrap();
    assert!(re.taken_until >= c.taken_until);
    let tq = q.with_credentials(Credentials::from_task_credentials(&re.credentials));

    // Plain upload.
    let src = dir.path().join("target.tar.gz");
    std::fs::write(&src, b"release bytes").unwrap();
    let expires: DateTime<Utc> = DateTime::parse_from_rfc3339(def["expires"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let r = tq
        .create_artifact(
            &id,
            0,
            "public/build/target.tar.gz",
            &CreateArtifactRequest::S3 {
                expires,
                content_type: "application/octet-stream".into(),
                content_length: Some(13),
            },
        )
        .await
        .unwrap();
    let CreateArtifactResponse::S3 { put_url, .. } = r else {
        panic!("not s3")
    };
    let up = tq
        .upload_file(&put_url, &src, "application/octet-stream", false)
        .await
        .unwrap();
    assert_eq!(up.sent_bytes, 13);

    // Gzip upload: stored with Content-Encoding, decoded on download.
    let log = dir.path().join("live.log");
    let text = "line of log\n".repeat(5000);
    std::fs::write(&log, &text).unwrap();
    let r = tq
        .create_artifact(
            &id,
            0,
            "public/logs/live_backing.log",
            &CreateArtifactRequest::S3 {
                expires,
                content_type: "text/plain; charset=utf-8".into(),
                content_length: None,
            },
        )
        .await
        .unwrap();
    let CreateArtifactResponse::S3 { put_url, .. } = r else {
        panic!("not s3")
    };
    let up = tq
        .upload_file(&put_url, &log, "text/plain; charset=utf-8", true)
        .await
        .unwrap();
    assert!(up.sent_bytes < up.source_bytes);
    // A different Content-Type than the one signed is refused (S3's SignatureDoesNotMatch).
    let e = tq
        .upload_file(&put_url, &log, "text/plain", true)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    assert!(!e.to_string().contains("token="), "{e}");

    // Link, error artifact.
    tq.create_artifact(
        &id,
        0,
        "public/logs/live.log",
        &CreateArtifactRequest::Link {
            expires,
            artifact: "public/logs/live_backing.log".into(),
            content_type: Some("text/plain; charset=utf-8".into()),
        },
    )
    .await
    .unwrap();
    tq.create_artifact(
        &id,
        0,
        "public/missing.bin",
        &CreateArtifactRequest::Error {
            expires,
            reason: "file-missing-on-worker".into(),
            message: "not produced".into(),
        },
    )
    .await
    .unwrap();

    tq.report_completed(&id, 0).await.unwrap();
    // Idempotent completion; reclaim of a resolved run is a conflict.
    tq.report_completed(&id, 0).await.unwrap();
    let e = tq.reclaim_task(&id, 0).await.unwrap_err();
    assert!(e.is_conflict(), "{e}");
    assert!(!e.is_transient());
    // Artifacts after completion: 409.
    let e = tq
        .create_artifact(
            &id,
            0,
            "public/late",
            &CreateArtifactRequest::Error {
                expires,
                reason: "file-missing-on-worker".into(),
                message: "late".into(),
            },
        )
        .await
        .unwrap_err();
    assert!(e.is_conflict());

    // Read side, anonymously.
    let anon = q.anonymous();
    let st = anon.status(&id).await.unwrap();
    assert_eq!(st.state, TaskState::Completed);
    assert_eq!(anon.task(&id).await.unwrap()["payload"], def["payload"]);
    let dest = dir.path().join("dl");
    let info = anon
        .get_latest_artifact_to_file(&id, "public/build/target.tar.gz", &dest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"release bytes");
    assert_eq!(info.storage_type.as_deref(), Some("s3"));
    // Link resolved server-side, gzip decoded while streaming.
    let info = anon
        .get_artifact_to_file(&id, 0, "public/logs/live.log", &dest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), text);
    assert_eq!(info.content_encoding.as_deref(), Some("gzip"));
    assert_eq!(
        info.content_type.as_deref(),
        Some("text/plain; charset=utf-8")
    );
    // max_bytes is enforced on decoded bytes, and no partial file is left behind.
    let small = dir.path().join("small");
    let e = anon
        .get_latest_artifact_to_file(&id, "public/logs/live.log", &small, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(e, QueueError::TooLarge { max_bytes: 100, .. }),
        "{e}"
    );
    assert!(!small.exists() && !dir.path().join("small.part").exists());
    // 424 error artifact, 404 missing.
    let e = anon
        .get_latest_artifact_to_file(&id, "public/missing.bin", &dest, 1 << 20)
        .await
        .unwrap_err();
    match e {
        QueueError::ErrorArtifact {
            reason, message, ..
        } => {
            assert_eq!(reason, "file-missing-on-worker");
            assert_eq!(message, "not produced");
        }
        other => panic!("expected ErrorArtifact, got {other}"),
    }
    let e = anon
        .get_latest_artifact_to_file(&id, "public/nope", &dest, 1 << 20)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");
    let names: Vec<String> = anon
        .list_latest_artifacts(&id)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    h.shutdown().await;
}
