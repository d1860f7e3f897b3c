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
