//! Signatures and canonical JSON.

use super::{Row, Settings, best_of, mb_per_s};
use chainlock::cot;
use chainlock::openpgp;
use chrono::Duration;
use ed25519_dalek::{Signer as _, Verifier as _};
use serde_json::{Value, json};
use std::time::Instant;

fn per_second(n: usize, took: std::time::Duration) -> String {
    format!("{:.0} /s", n as f64 / took.as_secs_f64().max(1e-9))
}

/// OpenPGP detached sign/verify of a chain-of-trust-sized document, and raw ed25519 for scale.
pub fn signatures(s: &Settings) -> Vec<Row> {
    let n = if s.quick { 50 } else { 500 };
    let at = chainlock::clock::now();
    let key = openpgp::generate_key(
        "bench <bench@example.invalid>",
        at - Duration::days(1),
        None,
    )
    .expect("key");
    let cert = key.public_cert();
    let doc = vec![b'x'; 4096];

    let start = Instant::now();
    let mut sigs = Vec::with_capacity(n);
    for _ in 0..n {
        sigs.push(openpgp::sign_detached_armored(&key, &doc, at).expect("sign"));
    }
    let sign_took = start.elapsed();

    let start = Instant::now();
    for sig in &sigs {
        openpgp::verify_detached(&[&cert], &doc, sig).expect("verify");
    }
    let verify_took = start.elapsed();

    let ed = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let ed_sig = ed.sign(&doc);
    let vk = ed.verifying_key();
    let start = Instant::now();
    for _ in 0..n {
        vk.verify(&doc, &ed_sig).expect("ed25519 verify");
    }
    let ed_took = start.elapsed();

    vec![
        Row {
            name: "openpgp sign (4 KiB doc)".into(),
            time: sign_took / n as u32,
            rate: per_second(n, sign_took),
            rss: None,
            note: format!("{n} detached armored signatures, ed25519 key"),
        },
        Row {
            name: "openpgp verify (4 KiB doc)".into(),
            time: verify_took / n as u32,
            rate: per_second(n, verify_took),
            rss: None,
            note: "parse armor + verify under StandardPolicy".into(),
        },
        Row {
            name: "ed25519 verify (4 KiB doc)".into(),
            time: ed_took / n as u32,
            rate: per_second(n, ed_took),
            rss: None,
            note: "raw, for comparison".into(),
        },
    ]
}

/// A large task definition: `paths` upstream artifact paths and a big env.
fn large_task(paths: usize) -> Value {
    let paths: Vec<String> = (0..paths)
        .map(|i| {
            format!(
                "public/build/{}/target-{i}.tar.gz",
                ["en-US", "de", "fr", "ja"][i % 4]
            )
        })
        .collect();
    let env: serde_json::Map<String, Value> = (0..200)
        .map(|i| {
            (
                format!("VAR_{i}"),
                json!(format!("value \u{e9} {i} \"quoted\"")),
            )
        })
        .collect();
    json!({
        "provisionerId": "releng",
        "workerType": "signing",
        "taskGroupId": "VQU9QMO4Teq7zr91FhBusg",
        "dependencies": ["GVi2vTw8RYqdga6pE08Aiw"],
        "scopes": ["project:releng:signing:cert:release-signing"],
        "payload": {
            "upstreamArtifacts": [{"taskId": "GVi2vTw8RYqdga6pE08Aiw", "taskType": "build",
                                   "paths": paths, "formats": ["gpg"]}],
            "env": env,
            "maxRunTime": 3600,
            "ratio": 0.1,
        },
        "metadata": {"name": "sign", "description": "sign", "owner": "o@example.invalid",
                     "source": "https://example.invalid/x"},
    })
}

/// Canonical JSON of a large task, and strict parsing of a large chain-of-trust document.
pub fn canonical(s: &Settings) -> Vec<Row> {
    let paths = if s.quick { 5_000 } else { 50_000 };
    let task = large_task(paths);
    let (took, bytes) = best_of(5, || cot::to_canonical_json(&task).expect("canonical"));
    let mut rows = vec![Row {
        name: format!("canonical json ({paths} paths)"),
        time: took,
        rate: mb_per_s(bytes.len() as u64, took),
        rss: None,
        note: format!("{} KiB output", bytes.len() / 1024),
    }];

    let artifacts: serde_json::Map<String, Value> = (0..paths)
        .map(|i| {
            (
                format!("public/build/target-{i}.tar.gz"),
                json!({"sha256": format!("{i:064x}")}),
            )
        })
        .collect();
    let doc = json!({
        "chainOfTrustVersion": 1,
        "artifacts": artifacts,
        "task": task,
        "taskId": "GVi2vTw8RYqdga6pE08Aiw",
        "runId": 0,
        "workerGroup": "wg",
        "workerId": "w1",
        "workerType": "signing",
        "environment": {},
    });
    let doc_bytes = cot::to_canonical_json(&doc).expect("canonical doc");
    let (took, parsed) = best_of(5, || {
        cot::parse_and_validate(&doc_bytes).expect("valid document")
    });
    rows.push(Row {
        name: format!("cot parse+schema ({paths} artifacts)"),
        time: took,
        rate: mb_per_s(doc_bytes.len() as u64, took),
        rss: None,
        note: format!(
            "{} KiB document, {} artifacts, duplicate-key check",
            doc_bytes.len() / 1024,
            parsed.artifacts.len()
        ),
    });
    rows
}

/// `chainlock script sign` (the release binary, as the worker runs it) over `n` × 1 MiB
/// verified files, against a `gpg --detach-sign --armor` loop over the same files with a key
/// of the same kind (ed25519), one gpg process per file as a shell loop would. Each side is
/// the best of 3 runs.
#[allow(clippy::disallowed_methods)] // the benchmark runs the real binary and real gpg
pub fn sign_vs_gpg(settings: &Settings) -> Vec<Row> {
    use sha2::Digest as _;
    const DEP: &str = "GVi2vTw8RYqdga6pE08Aiw";
    let n: usize = if settings.quick { 40 } else { 200 };
    let tmp = tempfile::tempdir().expect("temp dir");
    let (work, out) = (tmp.path().join("work"), tmp.path().join("artifacts"));
    let cot = work.join("cot").join(DEP).join("public");
    std::fs::create_dir_all(&cot).expect("cot dir");
    std::fs::create_dir_all(&out).expect("artifact dir");
    let mut manifest = Vec::new();
    let mut paths = Vec::new();
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for i in 0..n {
        let mut bytes = vec![0u8; 1 << 20];
        for chunk in bytes.chunks_exact_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes());
        }
        let name = format!("public/f{i:03}.bin");
        std::fs::write(cot.join(format!("f{i:03}.bin")), &bytes).expect("input file");
        manifest.push(json!({"taskId": DEP, "taskKind": "build", "path": name,
            "sha256": hex::encode(sha2::Sha256::digest(&bytes)), "size": bytes.len()}));
        paths.push(name);
    }
    let m = json!({"version": 2, "artifacts": manifest});
    std::fs::write(work.join("cot/manifest.json"), m.to_string()).expect("manifest");
    let task = json!({
        "provisionerId": "releng", "workerType": "signing", "taskQueueId": "releng/signing",
        "schedulerId": "taskcluster-level-3", "taskGroupId": "Qt3GKapxQmWDJId8m5o8Yg",
        "dependencies": [DEP], "created": "2026-01-01T00:00:00.000Z",
        "deadline": "2026-01-02T00:00:00.000Z", "expires": "2027-01-01T00:00:00.000Z",
        "scopes": ["project:releng:signing:cert:release-signing"],
        "payload": {"upstreamArtifacts": [
            {"taskId": DEP, "taskType": "build", "paths": paths, "formats": ["gpg"]}]},
        "metadata": {"name": "sign", "description": "bench", "owner": "releng@example.com",
            "source": "https://example.com/ci"},
        "tags": {}, "extra": {}
    });
    std::fs::write(work.join("task.json"), task.to_string()).expect("task.json");
    let key = chainlock::openpgp::generate_key(
        "release-signing <releng@example.com>",
        chainlock::clock::now() - chrono::Duration::hours(1),
        None,
    )
    .expect("release key");
    let (private, public) = (
        tmp.path().join("release.key"),
        tmp.path().join("release.asc"),
    );
    chainlock::openpgp::write_new_key(&key, &private, &public).expect("write key");
    let schema = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/payload/sign.schema.json"
    );
    let config = tmp.path().join("sign.toml");
    std::fs::write(
        &config,
        format!(
            "payload_schema = {schema:?}\nscope_prefix = \"project:releng:signing:cert:\"\n\
             [keys]\nrelease-signing = {private:?}\n"
        ),
    )
    .expect("sign.toml");
    // Best of 3 for both sides: the machine is shared, and one slow run says little.
    let mut ours = std::time::Duration::MAX;
    for _ in 0..3 {
        std::fs::remove_dir_all(&out).expect("clear the artifact dir");
        std::fs::create_dir_all(&out).expect("artifact dir");
        let start = Instant::now();
        let status = std::process::Command::new(env!("CARGO_BIN_EXE_chainlock"))
            .args(["script", "sign", "--config"])
            .arg(&config)
            .env_clear()
            .env("TASK_ID", "Wm2tTUqhS7aCgeSeAMnPJg")
            .env("RUN_ID", "0")
            .env("TASKCLUSTER_ROOT_URL", "http://127.0.0.1:1")
            .env("CHAINLOCK_WORK_DIR", &work)
            .env("CHAINLOCK_ARTIFACT_DIR", &out)
            .current_dir(&work)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("chainlock script sign");
        ours = ours.min(start.elapsed());
        assert!(status.success(), "chainlock script sign failed");
    }
    let mb = (n as u64) << 20;
    let mut rows = vec![Row {
        name: format!("script sign {n} x 1 MiB"),
        time: ours,
        rate: mb_per_s(mb, ours),
        rss: None,
        note: format!("{} cores", super::cores()),
    }];
    // gpg: an ed25519 key in a throwaway home, then one process per file.
    let home = tmp.path().join("gnupg");
    std::fs::create_dir_all(&home).expect("gnupg home");
    let gpg = |args: &[&std::ffi::OsStr]| {
        std::process::Command::new("gpg")
            .env("GNUPGHOME", &home)
            .args([
                "--batch",
                "--no-tty",
                "--quiet",
                "--pinentry-mode",
                "loopback",
            ])
            .args(["--passphrase", ""])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
    };
    let made = gpg(&[
        "--quick-gen-key".as_ref(),
        "bench <bench@example.com>".as_ref(),
        "ed25519".as_ref(),
        "sign".as_ref(),
        "1d".as_ref(),
    ]);
    if !made.is_ok_and(|s| s.success()) {
        rows.push(Row {
            name: "gpg --detach-sign loop".into(),
            time: std::time::Duration::ZERO,
            rate: "-".into(),
            rss: None,
            note: "gpg not available: skipped".into(),
        });
        return rows;
    }
    let mut theirs = std::time::Duration::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        for i in 0..n {
            let file = cot.join(format!("f{i:03}.bin"));
            let sig = tmp.path().join(format!("g{i:03}.asc"));
            let ok = gpg(&[
                "--yes".as_ref(),
                "--detach-sign".as_ref(),
                "--armor".as_ref(),
                "-o".as_ref(),
                sig.as_os_str(),
                file.as_os_str(),
            ]);
            assert!(ok.is_ok_and(|s| s.success()), "gpg --detach-sign");
        }
        theirs = theirs.min(start.elapsed());
    }
    let _ = std::process::Command::new("gpgconf")
        .env("GNUPGHOME", &home)
        .args(["--kill", "all"])
        .status();
    rows.push(Row {
        name: format!("gpg --detach-sign loop {n} x 1 MiB"),
        time: theirs,
        rate: mb_per_s(mb, theirs),
        rss: None,
        note: format!(
            "script sign is {:.1}x faster",
            theirs.as_secs_f64() / ours.as_secs_f64().max(1e-9)
        ),
    });
    rows
}
