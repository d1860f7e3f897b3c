//! Streaming IO: artifact hashing, gzip upload and download through the dev queue.
//!
//! Files are written just before they are measured, so they sit in the page cache: the numbers
//! are CPU-bound (sha256, gzip, HTTP over loopback), not disk-bound, which is what the code
//! controls. Peak RSS growth is the figure that proves streaming: it must stay roughly the same
//! for the small and the large file.

use super::{Row, Settings, mb_per_s, with_peak_rss};
use chainlock::artifacts;
use chainlock::devqueue::{self, Client, DevQueueConfig};
use chainlock::ids::TaskId;
use chainlock::queue::types::{
    ClaimWorkRequest, CreateArtifactRequest, CreateArtifactResponse, format_time,
};
use chainlock::queue::{Credentials, QueueClient, RetryPolicy};
use chainlock::secret::Secret;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1024 * 1024;

/// Writes `size` bytes of incompressible data (xorshift), 1 MiB at a time.
fn write_binary(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create bench file"));
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut buf = vec![0u8; MIB as usize];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let n = left.min(MIB) as usize;
        f.write_all(&buf[..n]).expect("write bench file");
        left -= n as u64;
    }
    f.flush().expect("flush bench file");
}

/// Writes `size` bytes of log-like text (compresses about as well as a real task log).
fn write_log(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create bench log"));
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut written = 0u64;
    let mut i = 0u64;
    while written < size {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let line = format!(
            "[task 2026-01-01T00:{:02}:{:02}.{:03}Z] {:>8} INFO - signing public/build/target-{}.tar.gz sha256={:016x}\n",
            (i / 60_000) % 60,
            (i / 1000) % 60,
            i % 1000,
            i,
            i % 97,
            state
        );
        let take = (size - written).min(line.len() as u64) as usize;
        f.write_all(&line.as_bytes()[..take])
            .expect("write bench log");
        written += take as u64;
        i += 1;
    }
    f.flush().expect("flush bench log");
}

/// `artifacts::collect` over a directory holding one file of each size: hash plus the copy into
/// worker-owned staging that makes the uploaded bytes the hashed bytes.
pub fn hash(s: &Settings) -> Vec<Row> {
    let limits = artifacts::Limits::default();
    let mut rows = Vec::new();
    for mib in [s.small_mib, s.large_mib] {
        let dir = tempfile::tempdir().expect("tempdir");
        let public = dir.path().join("public");
        std::fs::create_dir(&public).expect("mkdir");
        write_binary(&public.join("target.tar.zst"), mib * MIB);
        let staging = tempfile::tempdir().expect("tempdir");
        let start = Instant::now();
        let (collection, rss) =
            with_peak_rss(|| artifacts::collect(dir.path(), staging.path(), &limits));
        let took = start.elapsed();
        let collection = collection.expect("collect");
        assert_eq!(collection.artifacts.len(), 1, "{:?}", collection.refused);
        rows.push(Row {
            name: format!("collect (hash + stage) {mib} MiB"),
            time: took,
            rate: mb_per_s(mib * MIB, took),
            rss,
            note: "streaming sha256 while copying into worker-owned staging".into(),
        });
    }
    rows
}

const TOKEN: &str = "bench-access-token";
const QUEUE: &str = "bench/upload";

/// Upload (gzip) and download of log files of both sizes through an in-process dev queue.
pub fn transfer(s: &Settings, upload: bool, download: bool) -> Vec<Row> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(transfer_async(s, upload, download))
}

async fn transfer_async(s: &Settings, upload: bool, download: bool) -> Vec<Row> {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("queue");
    let mut cfg = DevQueueConfig::new(
        "127.0.0.1:0".parse().expect("loopback address"),
        data,
        vec![Client {
            client_id: "admin".into(),
            access_token: Secret::new(TOKEN),
            scopes: vec!["*".into()],
        }],
    );
    cfg.claim_work_timeout = Duration::from_secs(2);
    let handle = devqueue::start(cfg).await.expect("dev queue");
    let q = QueueClient::new(
        handle.root_url(),
        Some(Credentials::permanent("admin", Secret::new(TOKEN))),
        RetryPolicy::standard(),
    )
    .expect("client");

    let now = chainlock::clock::now();
    let id = TaskId::generate();
    let def = serde_json::json!({
        "taskQueueId": QUEUE,
        "created": format_time(now),
        "deadline": format_time(now + chrono::Duration::hours(2)),
        "expires": format_time(now + chrono::Duration::days(2)),
        "scopes": [],
        "payload": {},
        "metadata": {"name": "bench", "description": "bench", "owner": "bench@example.invalid",
                     "source": "https://example.invalid/bench"}
    });
    q.create_task(&id, &def).await.expect("createTask");
    let claim = q
        .claim_work(
            QUEUE,
            &ClaimWorkRequest {
                worker_group: "bench".into(),
                worker_id: "bench-1".into(),
                tasks: 1,
            },
        )
        .await
        .expect("claimWork");
    let task = claim.tasks.first().expect("the bench task is claimed");
    let tq = q.with_credentials(Credentials::from_task_credentials(&task.credentials));
    let expires = now + chrono::Duration::days(1);

    let mut rows = Vec::new();
    for mib in [s.small_mib, s.large_mib] {
        let src = dir.path().join(format!("live-{mib}.log"));
        write_log(&src, mib * MIB);
        let name = format!("public/logs/bench-{mib}.log");
        let ct = "text/plain; charset=utf-8";
        let r = tq
            .create_artifact(
                &id,
                0,
                &name,
                &CreateArtifactRequest::S3 {
                    expires,
                    content_type: ct.into(),
                    content_length: None,
                },
            )
            .await
            .expect("createArtifact");
        let CreateArtifactResponse::S3 { put_url, .. } = r else {
            panic!("the dev queue answers s3 for s3 requests")
        };
        let start = Instant::now();
        let (up, rss) = with_peak_rss_async(tq.upload_file(&put_url, &src, ct, true)).await;
        let took = start.elapsed();
        let up = up.expect("upload");
        if upload {
            rows.push(Row {
                name: format!("upload gzip {mib} MiB"),
                time: took,
                rate: mb_per_s(up.source_bytes, took),
                rss,
                note: format!(
                    "{:.1}x compression; RSS includes the dev queue",
                    up.source_bytes as f64 / up.sent_bytes.max(1) as f64
                ),
            });
        }
        if download {
            let dest = dir.path().join(format!("down-{mib}.log"));
            let start = Instant::now();
            let (down, rss) =
                with_peak_rss_async(q.get_latest_artifact_to_file(&id, &name, &dest, u64::MAX))
                    .await;
            let took = start.elapsed();
            let down = down.expect("download");
            assert_eq!(down.bytes, mib * MIB, "download length");
            rows.push(Row {
                name: format!("download gzip {mib} MiB"),
                time: took,
                rate: mb_per_s(down.bytes, took),
                rss,
                note: format!(
                    "Content-Encoding {}; RSS includes the dev queue",
                    down.content_encoding.as_deref().unwrap_or("none")
                ),
            });
            std::fs::remove_file(&dest).ok();
        }
        std::fs::remove_file(&src).ok();
    }
    if upload {
        rows.extend(upload_against_curl(&tq, &id, s.large_mib, dir.path(), expires).await);
    }
    handle.shutdown().await;
    rows
}

/// Issue 11: an uncompressed upload of the large (incompressible) file by
/// `QueueClient::upload_file`, and `curl -T` of the same file to another presigned URL of the
/// same dev queue, alternating, best of 2 each. Both hit the same in-process server, so the
/// ratio is the client's share.
async fn upload_against_curl(
    tq: &QueueClient,
    id: &TaskId,
    mib: u64,
    dir: &Path,
    expires: chrono::DateTime<chrono::Utc>,
) -> Vec<Row> {
    let src = dir.join(format!("target-{mib}.bin"));
    write_binary(&src, mib * MIB);
    // On disk before either side runs: otherwise the first upload shares the disk with the
    // write-back of its own source (the dev queue fsyncs each blob it stores).
    std::fs::File::open(&src)
        .and_then(|f| f.sync_all())
        .expect("sync bench file");
    let ct = "application/octet-stream";
    let put_url = |name: String| async move {
        let r = tq
            .create_artifact(
                id,
                0,
                &name,
                &CreateArtifactRequest::S3 {
                    expires,
                    content_type: ct.into(),
                    content_length: Some(mib * MIB),
                },
            )
            .await
            .expect("createArtifact");
        let CreateArtifactResponse::S3 { put_url, .. } = r else {
            panic!("the dev queue answers s3 for s3 requests")
        };
        put_url
    };
    // Alternating, best of 2 each: neither side always runs on a warmer (or busier) machine.
    let (mut took, mut curl_took, mut rss) = (Duration::MAX, Duration::MAX, None);
    let mut curl = Ok(std::process::ExitStatus::default());
    for round in 0..2 {
        let ours = put_url(format!("public/build/ours-{mib}-{round}.bin")).await;
        let start = Instant::now();
        let (up, grew) = with_peak_rss_async(tq.upload_file(&ours, &src, ct, false)).await;
        took = took.min(start.elapsed());
        rss = rss.max(grew);
        let up = up.expect("upload");
        assert_eq!(up.sent_bytes, mib * MIB, "uploaded length");
        let theirs = put_url(format!("public/build/curl-{mib}-{round}.bin")).await;
        let start = Instant::now();
        #[allow(clippy::disallowed_methods)] // the reference client, not a script
        let status = tokio::process::Command::new("curl")
            .args(["-sS", "-f", "-o", "/dev/null", "-X", "PUT", "-H"])
            .arg(format!("Content-Type: {ct}"))
            // No `Expect: 100-continue` round trip: chainlock does not make one either.
            .args(["-H", "Expect:", "-T"])
            .arg(&src)
            .arg(theirs.expose())
            .status()
            .await;
        curl_took = curl_took.min(start.elapsed());
        match status {
            Ok(s) if s.success() => {}
            other => {
                curl = other;
                break;
            }
        }
    }
    let mut rows = vec![Row {
        name: format!("upload raw {mib} MiB"),
        time: took,
        rate: mb_per_s(mib * MIB, took),
        rss,
        note: "QueueClient::upload_file, no gzip; RSS includes the dev queue".into(),
    }];
    match curl {
        Ok(status) if status.success() => {
            rows.push(Row {
                name: format!("curl PUT {mib} MiB"),
                time: curl_took,
                rate: mb_per_s(mib * MIB, curl_took),
                rss: None,
                note: format!(
                    "the same dev queue; chainlock at {:.0}% of curl's throughput (goal >= 90%)",
                    100.0 * curl_took.as_secs_f64() / took.as_secs_f64().max(1e-9)
                ),
            });
        }
        other => eprintln!("curl PUT skipped: {other:?}"),
    }
    std::fs::remove_file(&src).ok();
    rows
}

async fn with_peak_rss_async<T>(f: impl std::future::Future<Output = T>) -> (T, Option<u64>) {
    // The same measurement as `with_peak_rss`, around an await.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = super::proc_status_bytes(if reset { "VmRSS:" } else { "VmHWM:" });
    let out = f.await;
    let after = super::proc_status_bytes("VmHWM:");
    let growth = match (before, after) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    (out, growth)
}
