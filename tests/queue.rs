//! The queue client against the dev queue over loopback (real HTTP, real Hawk), plus the
//! official Python client's interop with the dev queue.

mod common;

use chainlock::devqueue::{Client, DevQueueHandle};
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
    let timeout = Duration::from_millis(500);
    common::start_dev_queue(dir, clients(), Some(claim_timeout), timeout).await
}

fn admin(h: &DevQueueHandle) -> QueueClient {
    common::client_for(h, "admin", TOKEN)
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

#[tokio::test]
async fn authentication_failures_are_401_and_missing_scopes_403() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Duration::from_secs(1200)).await;
    let mk = |id: &str, tok: &str| {
        QueueClient::new(
            h.root_url(),
            Some(Credentials::permanent(id, Secret::new(tok))),
            RetryPolicy::fast_for_tests(),
        )
        .unwrap()
    };
    let bad_mac = mk("admin", "wrong-token-value")
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap_err();
    assert_eq!(bad_mac.status(), Some(401), "{bad_mac}");
    assert!(matches!(&bad_mac, QueueError::Http { code, .. } if code == "AuthenticationFailed"));
    assert!(!bad_mac.to_string().contains("wrong-token-value"));
    let unknown = mk("nobody", TOKEN)
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap_err();
    assert_eq!(unknown.status(), Some(401), "{unknown}");
    let forbidden = mk("limited", "limited-token")
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap_err();
    assert_eq!(forbidden.status(), Some(403), "{forbidden}");
    assert!(matches!(&forbidden, QueueError::Http { code, .. } if code == "InsufficientScopes"));

    // A stale timestamp (20 minutes old) is refused even with the right key.
    use chainlock::queue::auth::{HawkRequest, authorization_header, random_nonce};
    let resource = "/api/queue/v1/claim-work/dev-prov%2Fsigning";
    let body = serde_json::to_vec(&claim_req()).unwrap();
    let hash = chainlock::queue::auth::payload_hash("application/json", &body).unwrap();
    let port = h.local_addr().port();
    let sign = |ts| {
        authorization_header(
            "admin",
            &Secret::new(TOKEN),
            &HawkRequest {
                method: "POST",
                host: "127.0.0.1",
                port,
                resource,
            },
            Some(&hash),
            None,
            ts,
            &random_nonce(),
        )
        .unwrap()
    };
    let send = |authz: String, body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("{}{resource}", h.root_url()))
            .header("authorization", authz)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let stale = send(sign(now() - CDuration::minutes(20)), body.clone())
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);
    let err: serde_json::Value = stale.json().await.unwrap();
    assert_eq!(err["code"], "AuthenticationFailed");
    assert!(err["message"].as_str().unwrap().contains("stale"), "{err}");
    assert!(err.get("requestInfo").is_some());
    // A body that does not match the signed payload hash.
    let mut tampered = body.clone();
    tampered.extend_from_slice(b" ");
    let r = send(sign(now()), tampered).await.unwrap();
    assert_eq!(r.status(), 401);
    // Control: the same request, fresh, passes authentication.
    let ok = send(sign(now()), body).await.unwrap();
    assert_eq!(ok.status(), 200);

    // Task credentials are scoped to their run: they cannot resolve another task.
    let (a, _) = create_task(&h, &[]).await;
    let (b, _) = create_task(&h, &[]).await;
    let q = admin(&h);
    let mut claimed = Vec::new();
    for _ in 0..2 {
        claimed.extend(q.claim_work(QUEUE, &claim_req()).await.unwrap().tasks);
    }
    let ca = claimed.iter().find(|c| c.status.task_id == a).unwrap();
    let tq = q.with_credentials(Credentials::from_task_credentials(&ca.credentials));
    let e = tq.report_completed(&b, 0).await.unwrap_err();
    assert_eq!(e.status(), Some(403), "{e}");
    // A tampered certificate (scopes widened) fails its signature check: 401.
    let mut cert: serde_json::Value =
        serde_json::from_str(ca.credentials.certificate.expose()).unwrap();
    cert["scopes"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!("*"));
    let forged = q.with_credentials(Credentials {
        client_id: ca.credentials.client_id.clone(),
        access_token: ca.credentials.access_token.clone(),
        certificate: Some(Secret::new(cert.to_string())),
    });
    let e = forged.report_completed(&b, 0).await.unwrap_err();
    assert_eq!(e.status(), Some(401), "{e}");
    // `superseded` is not a reason a worker may give: 400 (sent raw, the client cannot say it).
    let resource = format!("/api/queue/v1/task/{a}/runs/0/exception");
    let body = br#"{"reason":"superseded"}"#.to_vec();
    let hash = chainlock::queue::auth::payload_hash("application/json", &body).unwrap();
    let ext =
        chainlock::queue::auth::ext_for_certificate(Some(&ca.credentials.certificate)).unwrap();
    let authz = authorization_header(
        &ca.credentials.client_id,
        &ca.credentials.access_token,
        &HawkRequest {
            method: "POST",
            host: "127.0.0.1",
            port,
            resource: &resource,
        },
        Some(&hash),
        ext.as_deref(),
        now(),
        &random_nonce(),
    )
    .unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}{resource}", h.root_url()))
        .header("authorization", authz)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    tq.report_exception(&a, 0, ExceptionReason::MalformedPayload)
        .await
        .unwrap();
    assert_eq!(
        tq.status(&a).await.unwrap().runs.len(),
        1,
        "malformed-payload is not retried"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn dependencies_listing_pagination_and_exception_retries() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Duration::from_secs(1200)).await;
    let q = admin(&h);
    let (a, def) = create_task(&h, &[]).await;
    let (b, _) = create_task(&h, &[&a]).await;
    assert_eq!(q.status(&b).await.unwrap().state, TaskState::Unscheduled);
    let c = q
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap()
        .tasks
        .remove(0);
    assert_eq!(c.status.task_id, a);
    // Nothing else is claimable while b waits: the long poll answers empty.
    assert!(
        q.claim_work(QUEUE, &claim_req())
            .await
            .unwrap()
            .tasks
            .is_empty()
    );
    let tq = q.with_credentials(Credentials::from_task_credentials(&c.credentials));
    let expires: DateTime<Utc> = DateTime::parse_from_rfc3339(def["expires"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    for i in 0..5 {
        tq.create_artifact(
            &a,
            0,
            &format!("public/a{i}"),
            &CreateArtifactRequest::Error {
                expires,
                reason: "file-missing-on-worker".into(),
                message: "x".into(),
            },
        )
        .await
        .unwrap();
    }
    // Artifacts may not outlive the task.
    let e = tq
        .create_artifact(
            &a,
            0,
            "public/long",
            &CreateArtifactRequest::Error {
                expires: expires + CDuration::days(1),
                reason: "file-missing-on-worker".into(),
                message: "x".into(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(400));
    tq.report_completed(&a, 0).await.unwrap();
    assert_eq!(q.status(&b).await.unwrap().state, TaskState::Pending);

    // Pagination: pages of 2, signed requests with a query string (Hawk covers it).
    let paged = q.clone().with_limits(chainlock::queue::ClientLimits {
        list_page_size: Some(2),
        ..Default::default()
    });
    let names: Vec<String> = paged
        .list_artifacts(&a, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|x| x.name)
        .collect();
    assert_eq!(
        names,
        (0..5).map(|i| format!("public/a{i}")).collect::<Vec<_>>()
    );
    let names = paged.anonymous().list_latest_artifacts(&a).await.unwrap();
    assert_eq!(names.len(), 5);

    // worker-shutdown is retried with a new run; a resolved run cannot be resolved differently.
    let c = q
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap()
        .tasks
        .remove(0);
    assert_eq!(c.status.task_id, b);
    let tq = q.with_credentials(Credentials::from_task_credentials(&c.credentials));
    let st = tq
        .report_exception(&b, 0, ExceptionReason::WorkerShutdown)
        .await
        .unwrap();
    assert_eq!(st.status.runs.len(), 2);
    assert_eq!(st.status.runs[1].reason_created, "retry");
    assert_eq!(st.status.state, TaskState::Pending);
    assert!(tq.report_failed(&b, 0).await.unwrap_err().is_conflict());
    h.shutdown().await;
}

#[tokio::test]
async fn expired_claims_resolve_as_claim_expired_and_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Duration::from_secs(1)).await;
    let q = admin(&h);
    let (id, _) = create_task(&h, &[]).await;
    let c = q
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap()
        .tasks
        .remove(0);
    // Wait (bounded) for the queue to notice the expired claim.
    let mut st = q.status(&id).await.unwrap();
    for _ in 0..100 {
        if st.runs.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        st = q.status(&id).await.unwrap();
    }
    assert_eq!(st.runs[0].state, TaskState::Exception);
    assert_eq!(st.runs[0].reason_resolved.as_deref(), Some("claim-expired"));
    assert_eq!(st.runs[1].state, TaskState::Pending);
    assert_eq!(st.runs[1].reason_created, "retry");
    assert_eq!(st.retries_left, 4);
    let tq = q.with_credentials(Credentials::from_task_credentials(&c.credentials));
    assert!(tq.reclaim_task(&id, 0).await.unwrap_err().is_conflict());
    let again = q
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap()
        .tasks
        .remove(0);
    assert_eq!((again.status.task_id, again.run_id), (id, 1));
    h.shutdown().await;
}

#[tokio::test]
async fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let h = start(&data, Duration::from_secs(1200)).await;
    let (id, def) = create_task(&h, &[]).await;
    let c = admin(&h)
        .claim_work(QUEUE, &claim_req())
        .await
        .unwrap()
        .tasks
        .remove(0);
    let tq = admin(&h).with_credentials(Credentials::from_task_credentials(&c.credentials));
    let expires: DateTime<Utc> = DateTime::parse_from_rfc3339(def["expires"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);
    let src = dir.path().join("f");
    std::fs::write(&src, b"persisted").unwrap();
    let record = data.join("tasks").join(format!("{id}.json"));
    let before = std::fs::read(&record).unwrap();
    let CreateArtifactResponse::S3 { put_url, .. } = tq
        .create_artifact(
            &id,
            0,
            "private/f",
            &CreateArtifactRequest::S3 {
                expires,
                content_type: "text/plain".into(),
                content_length: Some(9),
            },
        )
        .await
        .unwrap()
    else {
        panic!("not s3")
    };
    tq.upload_file(&put_url, &src, "text/plain", true)
        .await
        .unwrap();
    h.shutdown().await;
    // Issue 11: artifact changes are journal lines (createArtifact, the finished upload), not
    // rewrites of the task record. A torn last line (a crash during an append that was never
    // acknowledged) is ignored when the queue starts again.
    assert_eq!(std::fs::read(&record).unwrap(), before);
    let journal = data.join("tasks").join(format!("{id}.artifacts.jsonl"));
    let text = std::fs::read_to_string(&journal).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    std::fs::write(&journal, format!("{text}{{\"run\":0,\"artif")).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(data.join("issuer-token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    let h = start(&data, Duration::from_secs(1200)).await;
    let q = admin(&h);
    let st = q.status(&id).await.unwrap();
    assert_eq!(st.state, TaskState::Running);
    assert_eq!(q.task(&id).await.unwrap()["created"], def["created"]);
    // The issuer token survived: the claim's credentials still work.
    let tq = q.with_credentials(Credentials::from_task_credentials(&c.credentials));
    tq.reclaim_task(&id, 0).await.unwrap();
    // Private artifacts need the scope: anonymous gets 403, the admin gets the bytes.
    let dest = dir.path().join("out");
    let e = q
        .anonymous()
        .get_artifact_to_file(&id, 0, "private/f", &dest, 100)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403));
    q.get_artifact_to_file(&id, 0, "private/f", &dest, 100)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"persisted");
    // A run transition saves the whole record, artifacts included, and ends the journal.
    tq.report_completed(&id, 0).await.unwrap();
    assert!(!journal.exists());
    h.shutdown().await;
    let h = start(&data, Duration::from_secs(1200)).await;
    admin(&h)
        .get_artifact_to_file(&id, 0, "private/f", &dest, 100)
        .await
        .unwrap();
    h.shutdown().await;
}

/// A tiny server that fails `fail` times with 500, then answers a status.
async fn flaky_server(
    fail: usize,
    status: u16,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = std::sync::Arc::new(AtomicUsize::new(0));
    let h2 = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let hits = h2.clone();
        async move {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            if n < fail {
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(
                        serde_json::json!({"code": "InternalServerError", "message": "boom"}),
                    ),
                )
            } else {
                (
                    axum::http::StatusCode::OK,
                    axum::Json(serde_json::json!({"status": {
                    "taskId": "GVi2vTw8RYqdga6pE08Aiw", "provisionerId": "p", "workerType": "w",
                    "taskGroupId": "GVi2vTw8RYqdga6pE08Aiw", "deadline": "2026-09-02T12:00:00.000Z",
                    "expires": "2027-09-01T12:00:00.000Z", "retriesLeft": 5, "state": "pending",
                    "runs": [], "someFutureField": true}})),
                )
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), hits)
}

#[tokio::test]
async fn retries_5xx_but_not_4xx_and_reports_transport_failures_without_secrets() {
    use std::sync::atomic::Ordering;
    let id = TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").unwrap();
    let (root, hits) = flaky_server(2, 500).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests()).unwrap();
    assert_eq!(q.status(&id).await.unwrap().state, TaskState::Pending);
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    let (root, hits) = flaky_server(100, 500).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests()).unwrap();
    let e = q.status(&id).await.unwrap_err();
    assert!(e.is_transient() && e.status() == Some(500), "{e}");
    assert_eq!(hits.load(Ordering::SeqCst), 4, "bounded by max_attempts");

    let (root, hits) = flaky_server(100, 404).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests()).unwrap();
    assert!(q.status(&id).await.unwrap_err().is_not_found());
    assert_eq!(hits.load(Ordering::SeqCst), 1, "4xx is never retried");

    // A closed port: transport failure after all attempts; the presigned query never shows.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = closed.local_addr().unwrap();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    std::fs::write(&f, b"x").unwrap();
    let put = Secret::new(format!(
        "http://{addr}/bucket/key?X-Amz-Signature=sekrit-sig"
    ));
    let e = q
        .upload_file(&put, &f, "text/plain", false)
        .await
        .unwrap_err();
    assert!(
        matches!(e, QueueError::Transport { attempts: 4, .. }),
        "{e}"
    );
    let shown = format!("{e} {e:?}");
    assert!(!shown.contains("sekrit-sig"), "{shown}");
}

#[tokio::test]
async fn official_python_client_interop() {
    python_script("tc_client.py").await;
}

/// Timestamps, priority, error bodies, cancelTask, rerunTask and artifact expiry as the
/// official Python client sees them.
#[tokio::test]
async fn official_python_client_sees_real_queue_answers() {
    python_script("tc_fidelity.py").await;
}

#[allow(clippy::disallowed_methods)] // running the official Python client is the point here
async fn python_script(name: &str) {
    let python = std::env::var("CHAINLOCK_TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    assert!(
        Path::new(&python).exists(),
        "Python with the taskcluster client not found at {python}: run scripts/test, or \
         `python3 -m venv .venv && .venv/bin/pip install taskcluster 'moto[server]'`"
    );
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Duration::from_secs(1200)).await;
    let script = format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"));
    let root = h.root_url().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args([&script, &root, "admin", TOKEN, QUEUE])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python interop failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("OK "), "{stdout}");
    h.shutdown().await;
}

/// An artifact server: `getLatestArtifact` answers 303 to `/blob`, which serves `body` (a
/// `gzip` Content-Encoding when `gzip`), `trickle` bytes every 100 ms forever, or a fast body.
async fn artifact_server(blob: Blob) -> String {
    use axum::body::Body;
    use axum::http::{Response, StatusCode, Uri, header};
    let blob = std::sync::Arc::new(blob);
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let blob = blob.clone();
        async move {
            if uri.path().starts_with("/api/queue/v1/task/") {
                return Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/blob?X-Amz-Signature=sekrit")
                    .body(Body::empty())
                    .unwrap();
            }
            match &*blob {
                Blob::Trickle => {
                    let s = futures_util::stream::unfold((), |()| async {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Some((Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"x")), ()))
                    });
                    Response::new(Body::from_stream(s))
                }
                Blob::Plain(b) => Response::new(Body::from(b.clone())),
                Blob::Gzip(b) => Response::builder()
                    .header(header::CONTENT_ENCODING, "gzip")
                    .body(Body::from(b.clone()))
                    .unwrap(),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

enum Blob {
    Trickle,
    Plain(Vec<u8>),
    Gzip(Vec<u8>),
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

/// Issue 9: a redirect target that trickles one byte at a time ran past every timeout (only
/// the first hop had a total deadline). Every hop and the body now share one deadline, and a
/// body slower than the minimum rate fails the attempt.
#[tokio::test]
async fn downloads_have_a_total_deadline_and_a_minimum_rate_over_every_hop() {
    use chainlock::queue::ClientLimits;
    let id = TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a");
    let root = artifact_server(Blob::Trickle).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests()).unwrap();

    // The deadline, with the rate check off.
    let deadline = q.clone().with_limits(ClientLimits {
        download_deadline: Duration::from_millis(700),
        min_download_rate: 0,
        ..Default::default()
    });
    let t0 = std::time::Instant::now();
    let e = deadline
        .get_latest_artifact_to_file(&id, "public/a", &dest, 1 << 20)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(matches!(e, QueueError::DownloadDeadline { .. }), "{e}");
    assert!(!e.is_transient());
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(!format!("{e} {e:?}").contains("sekrit"));
    assert!(!dest.exists() && !dir.path().join("a.part").exists());

    // The minimum rate: 1000 bytes/s over 300 ms windows (the trickle sends about 3 bytes a
    // window), far from the deadline. Each attempt fails after one window; the client
    // retries (4 attempts) and gives up.
    let slow = q.clone().with_limits(ClientLimits {
        download_deadline: Duration::from_secs(20),
        min_download_rate: 1000,
        download_rate_window: Duration::from_millis(300),
        ..Default::default()
    });
    let t0 = std::time::Instant::now();
    let e = slow
        .get_latest_artifact_to_file(&id, "public/a", &dest, 1 << 20)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(
        matches!(e, QueueError::TooSlow { bytes, min_rate: 1000, .. } if bytes < 300),
        "{e}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(!dest.exists() && !dir.path().join("a.part").exists());

    // A healthy redirect under the same limits still downloads.
    let root = artifact_server(Blob::Plain(vec![7u8; 200_000])).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests())
        .unwrap()
        .with_limits(ClientLimits {
            download_deadline: Duration::from_secs(5),
            min_download_rate: 1000,
            download_rate_window: Duration::from_millis(300),
            ..Default::default()
        });
    let info = q
        .get_latest_artifact_to_file(&id, "public/a", &dest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(info.bytes, 200_000);
    assert_eq!(std::fs::read(&dest).unwrap().len(), 200_000);
}

/// Issue 9: an object store that accepts the connection but never drains the body held an
/// upload (and the task) for ever. Every upload has a total deadline over its attempts.
#[tokio::test]
async fn uploads_have_a_total_deadline() {
    use chainlock::queue::ClientLimits;
    // Accepts connections and never reads: the body fills the socket buffers and stalls.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    std::fs::write(&file, vec![1u8; 64 << 20]).unwrap();
    let q = QueueClient::new(
        &format!("http://{addr}"),
        None,
        RetryPolicy::fast_for_tests(),
    )
    .unwrap()
    .with_limits(ClientLimits {
        upload_deadline: Duration::from_millis(800),
        ..Default::default()
    });
    let url = format!("http://{addr}/bucket/big?X-Amz-Signature=sekrit");
    let (e, took) = failed_upload(&q, &url, &file).await;
    assert!(matches!(e, QueueError::UploadDeadline { .. }), "{e}");
    assert!(!e.is_transient());
    assert!(took < Duration::from_secs(5), "{took:?}");
}

/// Uploads `file` to `url` expecting a failure; returns the error and how long it took, after
/// checking that the signed query never shows in the error.
async fn failed_upload(q: &QueueClient, url: &str, file: &Path) -> (QueueError, Duration) {
    let url = chainlock::secret::Secret::new(url);
    let t0 = std::time::Instant::now();
    let e = q
        .upload_file(&url, file, "application/octet-stream", false)
        .await
        .unwrap_err();
    let took = t0.elapsed();
    assert!(!format!("{e} {e:?}").contains("sekrit"), "{e:?}");
    (e, took)
}

/// A store that reads each PUT's body `chunk` bytes at a time, one read every `every`, then
/// answers 200: a slow (or, with a tiny chunk, stalling) object store.
async fn pacing_store(chunk: usize, every: Duration) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if sock.read_exact(&mut byte).await.is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                let mut buf = vec![0u8; chunk];
                let mut left = len;
                while left > 0 {
                    tokio::time::sleep(every).await;
                    let want = left.min(chunk);
                    match sock.read(&mut buf[..want]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left -= n,
                    }
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                    .await;
            });
        }
    });
    format!("http://{addr}")
}

/// Issue 11: a store that takes the body slower than the minimum rate fails each attempt once
/// the socket buffers' credit is used up (here well under a second), far before the total
/// deadline, and the attempt is retried; a store reading steadily faster than the minimum, in
/// the bursts socket buffers make, gets the whole file.
#[tokio::test]
async fn uploads_slower_than_the_minimum_rate_are_cut_and_retried() {
    use chainlock::queue::ClientLimits;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big");
    std::fs::write(&file, vec![1u8; 16 << 20]).unwrap();
    let limits = ClientLimits {
        upload_deadline: Duration::from_secs(60),
        min_upload_rate: 8 << 20,
        upload_rate_window: Duration::from_millis(100),
        ..Default::default()
    };
    // About 10 KB/s: the socket buffers fill, then the upload stalls.
    let root = pacing_store(1024, Duration::from_millis(100)).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests())
        .unwrap()
        .with_limits(limits.clone());
    let url = format!("{root}/bucket/big?X-Amz-Signature=sekrit");
    let (e, took) = failed_upload(&q, &url, &file).await;
    assert!(
        matches!(e, QueueError::UploadTooSlow { min_rate, .. } if min_rate == 8 << 20),
        "{e}"
    );
    assert!(took < Duration::from_secs(20), "{took:?}");

    // About 25 MB/s (less on a loaded machine), above a 2 MiB/s minimum: the whole 16 MiB goes
    // up.
    let root = pacing_store(64 << 10, Duration::from_millis(2)).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests())
        .unwrap()
        .with_limits(ClientLimits {
            min_upload_rate: 2 << 20,
            ..limits
        });
    let url = Secret::new(format!("{root}/bucket/big?X-Amz-Signature=sekrit"));
    let up = q
        .upload_file(&url, &file, "application/octet-stream", false)
        .await
        .unwrap();
    assert_eq!(up.sent_bytes, 16 << 20);
}

/// Issue 9: the size cap applies to the decoded bytes of a gzip body (a bomb is refused as
/// TooLarge after at most the cap is written, never as a transport or gzip error).
#[tokio::test]
async fn gzip_bombs_are_too_large() {
    let id = TaskId::parse("GVi2vTw8RYqdga6pE08Aiw").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("a");
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 100 << 10, "{}", bomb.len());
    let root = artifact_server(Blob::Gzip(bomb)).await;
    let q = QueueClient::new(&root, None, RetryPolicy::fast_for_tests()).unwrap();
    let e = q
        .get_latest_artifact_to_file(&id, "public/a", &dest, 1 << 20)
        .await
        .unwrap_err();
    assert!(
        matches!(e, QueueError::TooLarge { max_bytes, .. } if max_bytes == 1 << 20),
        "{e}"
    );
    assert!(!dest.exists() && !dir.path().join("a.part").exists());
}

/// Object artifacts (`storageType: "object"`): our client uploads through the dev queue's
/// object service (createArtifact, createUpload, PUT, finishUpload, finishArtifact) and the
/// official Python client reads the artifact back with its own downloader, which checks the
/// hashes; the official uploader's artifact reads back through our client
/// (`tests/interop/tc_object.py`, which also checks the refusals).
#[tokio::test]
async fn object_artifacts_round_trip_with_the_official_python_client() {
    use sha2::Digest as _;
    let dir = tempfile::tempdir().unwrap();
    let h = start(dir.path(), Duration::from_secs(1200)).await;
    let q = admin(&h);
    let (id, def) = create_task(&h, &[]).await;
    let claim = q.claim_work(QUEUE, &claim_req()).await.unwrap();
    let c = &claim.tasks[0];
    let tq = q.with_credentials(Credentials::from_task_credentials(&c.credentials));
    let expires: DateTime<Utc> = DateTime::parse_from_rfc3339(def["expires"].as_str().unwrap())
        .unwrap()
        .with_timezone(&Utc);

    // Several upload buffers' worth, not a multiple of any of them.
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 17u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let src = dir.path().join("big.bin");
    std::fs::write(&src, &data).unwrap();
    let name = "public/build/big.bin";
    let r = tq
        .create_artifact(
            &id,
            0,
            name,
            &CreateArtifactRequest::Object {
                expires,
                content_type: "application/octet-stream".into(),
                content_length: Some(data.len() as u64),
            },
        )
        .await
        .unwrap();
    let CreateArtifactResponse::Object(object) = r else {
        panic!("not object: {r:?}")
    };
    assert_eq!(object.name, format!("t/{id}/0/{name}"));
    assert!(
        !format!("{object:?}").contains(object.credentials.access_token.expose()),
        "Debug shows the object credentials"
    );
    // Not present before finishArtifact.
    let dest = dir.path().join("back.bin");
    let e = q
        .get_artifact_to_file(&id, 0, name, &dest, 1 << 30)
        .await
        .unwrap_err();
    assert!(e.is_not_found(), "{e}");

    let up = tq
        .upload_object_artifact(&id, 0, name, &object, &src, "application/octet-stream")
        .await
        .unwrap();
    assert_eq!(up.sent_bytes, data.len() as u64);
    let info = q
        .get_artifact_to_file(&id, 0, name, &dest, 1 << 30)
        .await
        .unwrap();
    assert_eq!(info.storage_type.as_deref(), Some("object"));
    assert_eq!(std::fs::read(&dest).unwrap(), data);
    let listed = q.list_artifacts(&id, 0).await.unwrap();
    assert!(
        listed
            .iter()
            .any(|a| a.name == name && a.storage_type == "object")
    );
    // Uploading the same object again is refused: it is immutable once finished.
    let e = tq
        .upload_object_artifact(&id, 0, name, &object, &src, "application/octet-stream")
        .await
        .unwrap_err();
    assert!(e.is_conflict(), "{e}");

    let sha = hex::encode(sha2::Sha256::digest(&data));
    let py_name = "public/py/object.txt";
    run_python(
        "tc_object.py",
        &[
            h.root_url(),
            "admin",
            TOKEN,
            &id.to_string(),
            name,
            &sha,
            py_name,
        ],
    )
    .await;
    let dest = dir.path().join("py.txt");
    q.get_latest_artifact_to_file(&id, py_name, &dest, 1 << 20)
        .await
        .unwrap();
    assert_eq!(std::fs::read(&dest).unwrap(), b"py-object\n".repeat(3000));
    h.shutdown().await;
}

#[allow(clippy::disallowed_methods)] // running the official Python client is the point here
async fn run_python(name: &str, args: &[&str]) {
    let python = std::env::var("CHAINLOCK_TEST_PYTHON")
        .unwrap_or_else(|_| format!("{}/.venv/bin/python", env!("CARGO_MANIFEST_DIR")));
    let script = format!("{}/tests/interop/{name}", env!("CARGO_MANIFEST_DIR"));
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .arg(&script)
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "python interop failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.starts_with("OK "), "{stdout}");
}
