//! The demo area: the shared chain seeding (`chainlock::demo::seed`) against a real dev queue on
//! loopback, verified by the real verifier; and the `chainlock demo` binary end to end.

mod common;

use chainlock::demo::seed::{self, ChainOptions, Material};
use chainlock::devqueue::DevQueueHandle;
use chainlock::evidence::{self, ChainFailure};
use chainlock::queue::types::{ExceptionReason, TaskState};
use chainlock::queue::{Credentials, QueueClient};
use chainlock::secret::Secret;
use chainlock::verify::{Check, Limits};
use std::path::Path;

const TOKEN: &str = "demo-test-admin-token";

async fn start_queue(dir: &Path) -> DevQueueHandle {
    let timeout = std::time::Duration::from_millis(500);
    common::start_dev_queue(dir, vec![common::admin_client(TOKEN)], None, timeout).await
}

fn admin(h: &DevQueueHandle) -> QueueClient {
    common::client_for(h, "admin", TOKEN)
}

/// Runs the worker-side verification of `chain`'s signing task and returns its outcome.
async fn verify_signing(
    h: &DevQueueHandle,
    material: &Material,
    chain: &seed::Chain,
    cot: &Path,
) -> Result<chainlock::verify::VerifiedChain, ChainFailure> {
    let now = chainlock::clock::now();
    evidence::fetch_and_verify(
        &admin(h).anonymous(),
        &chain.signing.id,
        &chain.signing.def,
        cot,
        &material.chain_policy().unwrap(),
        &material.trust_store(now).unwrap(),
        now,
        &Limits::default(),
        &chainlock::verify::rebuild::NoRenderer,
    )
    .await
}

fn assert_rejected(
    result: Result<chainlock::verify::VerifiedChain, ChainFailure>,
    check: Check,
    code: &str,
) {
    let failure = match result {
        Ok(_) => panic!("mutated chain verified; expected {check} {code}"),
        Err(f) => f,
    };
    assert_eq!(
        failure.exception_reason(),
        ExceptionReason::MalformedPayload
    );
    let ChainFailure::Verification(report) = &failure else {
        panic!("{failure}")
    };
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.check() == check && e.code() == code),
        "expected {check} {code}:\n{}",
        report.to_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_chain_verifies_and_each_mutation_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let now = chainlock::clock::now();
    let material = Material::generate(&dir.path().join("material"), now).unwrap();

    // Keys: private files 0600, trust store threshold 2 of 2, public material only in keys/.
    use std::os::unix::fs::PermissionsExt as _;
    for key in [&material.worker_key, &material.release_key] {
        let mode = std::fs::metadata(key).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{}", key.display());
    }
    let trust = material.trust_store(now).unwrap();
    assert_eq!(trust.version(), 1);
    assert_eq!(trust.pin(), &material.pin);
    assert_eq!(trust.policy().file.root.threshold, 2);
    assert_eq!(
        std::fs::read_dir(material.keys_dir.join("sigs"))
            .unwrap()
            .count(),
        2
    );
    for entry in walk(&material.keys_dir) {
        let text = std::fs::read_to_string(&entry).unwrap();
        assert!(!text.contains("PRIVATE KEY"), "{}", entry.display());
    }
    // One root signature is not enough: the threshold is enforced on the generated store.
    let copy = dir.path().join("one-sig");
    std::fs::create_dir_all(copy.join("sigs")).unwrap();
    std::fs::copy(
        material.keys_dir.join("trust.toml"),
        copy.join("trust.toml"),
    )
    .unwrap();
    let first = std::fs::read_dir(material.keys_dir.join("sigs"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    std::fs::copy(first.path(), copy.join("sigs").join(first.file_name())).unwrap();
    assert!(
        chainlock::trust::TrustStore::load(
            &copy,
            &material.pin,
            now,
            &chainlock::trust::Limits::default()
        )
        .is_err()
    );

    let h = start_queue(&dir.path().join("queue")).await;
    let q = admin(&h);
    let scratch = dir.path().join("scratch");

    // The good chain: verified, the build output handed over.
    let chain = seed::seed_chain(&q, &material, now, ChainOptions::default(), &scratch)
        .await
        .unwrap();
    let cot = dir.path().join("work/cot");
    std::fs::create_dir_all(dir.path().join("work")).unwrap();
    let verified = match verify_signing(&h, &material, &chain, &cot).await {
        Ok(v) => v,
        Err(f) => panic!("good seeded chain failed:\n{}", f.log_text()),
    };
    assert_eq!(verified.report().links.len(), 4);
    let staged = cot.join(chain.build.id.as_str()).join(seed::BUILD_ARTIFACT);
    let bytes = std::fs::read(&staged).unwrap();
    assert_eq!(bytes, chain.build.outputs[seed::BUILD_ARTIFACT]);
    // The build artifact is a real tar.gz (read by the system tar).
    #[allow(clippy::disallowed_methods)] // the test runs a real tool
    let out = std::process::Command::new("tar")
        .arg("-tzf")
        .arg(&staged)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "target/README.txt"
    );
    // The signing task is pending for a chainlock worker; push waits for it.
    let status = q.status(&chain.signing.id).await.unwrap();
    assert_eq!(status.state, TaskState::Pending);
    let push = chain.push.as_ref().unwrap();
    let status = q.status(&push.id).await.unwrap();
    assert_eq!(status.state, TaskState::Unscheduled);

    // Mutations, each on a fresh chain on a fresh queue (so claims are unambiguous).
    type Mutate = fn(&seed::Chain, &mut seed::Evidence);
    let rows: [(&str, Mutate, Check, &str); 4] = [
        (
            "tampered artifact byte",
            |c, e| e.tamper_byte(&c.build.id, seed::BUILD_ARTIFACT).unwrap(),
            Check::Artifacts,
            "hash-mismatch",
        ),
        (
            "build document signed by an unknown key",
            |c, e| e.sign_with_unknown_key(&c.build.id).unwrap(),
            Check::Signature,
            "signature-rejected",
        ),
        (
            "decision graph tampered after signing",
            |c, e| e.tamper_byte(&c.decision.id, seed::TASK_GRAPH).unwrap(),
            Check::Artifacts,
            "hash-mismatch",
        ),
        (
            "build document missing",
            |c, e| {
                e.remove(&c.build.id, seed::COT_DOCUMENT).unwrap();
            },
            Check::Schema,
            "document-missing",
        ),
    ];
    h.shutdown().await;
    for (i, (name, mutate, check, code)) in rows.into_iter().enumerate() {
        let h = start_queue(&dir.path().join(format!("queue-{i}"))).await;
        let q = admin(&h);
        let mut chain = seed::Chain::new(now, ChainOptions::default());
        chain.create(&q).await.unwrap();
        let mut ev = chain.evidence(&material).unwrap();
        mutate(&chain, &mut ev);
        chain.publish(&q, &ev, &scratch).await.unwrap();
        let cot = dir.path().join(format!("work/cot-{i}"));
        eprintln!("row: {name}");
        assert_rejected(
            verify_signing(&h, &material, &chain, &cot).await,
            check,
            code,
        );
        assert!(!cot.exists(), "{name}: nothing staged for the script");
        h.shutdown().await;
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The generated worker configs load with the worker's own loader (schema + finalize), the
/// credentials file is private, and the script configs parse as the scripts parse them.
#[test]
fn generated_worker_configs_load() {
    let dir = tempfile::tempdir().unwrap();
    let material = Material::generate(&dir.path().join("m"), chainlock::clock::now()).unwrap();
    let creds = Credentials::permanent("demo-worker", Secret::new("not-a-real-token-123"));
    let exe = Path::new(env!("CARGO_BIN_EXE_chainlock"));
    for (name, queue, script) in [
        ("signing", seed::SIGNING_QUEUE, seed::Script::Sign),
        ("push", seed::PUSH_QUEUE, seed::Script::Push),
        (
            "custom",
            seed::SIGNING_QUEUE,
            seed::Script::Argv(vec!["/bin/true".into()]),
        ),
    ] {
        let files = material
            .write_worker_config(&seed::WorkerSpec {
                name,
                root_url: "http://127.0.0.1:9",
                task_queue_id: queue,
                credentials: &creds,
                chainlock_exe: exe,
                script,
                isolation: seed::SeedIsolation::None,
            })
            .unwrap();
        let env = std::collections::HashMap::<String, String>::new();
        let config = chainlock::config::Config::load(&files.config, &env)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(config.queue.task_queue_id, queue);
        let loaded = config.load_credentials(&files.config, &env).unwrap();
        assert_eq!(loaded, creds);
        let text = std::fs::read_to_string(&files.config).unwrap();
        assert!(!text.contains("not-a-real-token-123"), "{text}");
        use std::os::unix::fs::PermissionsExt as _;
        let cred_file = config.credentials.file.clone().unwrap();
        let mode = std::fs::metadata(cred_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0);
        if let Some(sc) = &files.script_config {
            let text = std::fs::read_to_string(sc).unwrap();
            match name {
                "signing" => {
                    chainlock::toml_text::from_str::<chainlock::scripts::sign::SignConfig>(&text)
                        .unwrap();
                }
                _ => {
                    chainlock::toml_text::from_str::<chainlock::scripts::push::PushConfig>(&text)
                        .unwrap();
                    assert!(files.published_dir.as_ref().unwrap().is_dir());
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// `chainlock demo`, the real binary.

fn run_demo(args: &[&std::ffi::OsStr]) -> (i32, String, String) {
    let mut argv = vec![std::ffi::OsStr::new("demo")];
    argv.extend_from_slice(args);
    common::run_cli(&argv)
}

fn gpg_installed() -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("gpg").is_file()))
}

/// Live processes whose command line or working directory is below `dir` (zombies have
/// neither, and are not running).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let cwd = std::fs::read_link(entry.path().join("cwd"))
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if cmdline.contains(&needle) || cwd.starts_with(&needle) {
            found.push(format!("{pid}: {cmdline}"));
        }
    }
    found
}

#[test]
fn demo_with_data_dir_signs_verifies_publishes_and_keeps_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("kept");
    let (code, out, err) = run_demo(&["--data-dir".as_ref(), dir.as_os_str()]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    for n in 1..=7 {
        assert!(
            out.contains(&format!("==> [{n}/7]")),
            "step {n} missing:\n{out}"
        );
    }
    let dir = dir.canonicalize().unwrap();
    assert!(
        out.contains(&format!("keeping everything in {}", dir.display())),
        "{out}"
    );
    assert!(
        out.contains(&format!("everything is kept in {}", dir.display())),
        "{out}"
    );
    assert!(
        out.contains("policy version 1, 2 root keys, threshold 2"),
        "{out}"
    );
    // Both workers verified before running their script; both targets verify for an auditor.
    assert_eq!(out.matches(": VERIFIED").count(), 4, "{out}");
    assert!(!out.contains("[FAIL]"), "{out}");
    assert!(
        out.contains("chainlock trust store: GOOD signature by chainlock key"),
        "{out}"
    );
    if gpg_installed() {
        assert!(
            out.contains("gpg --verify: Good signature from \"chainlock demo worker"),
            "{out}"
        );
    } else {
        assert!(out.contains("gpg: not installed, skipped"), "{out}");
    }
    for name in [
        "public/build/target.tar.gz.asc",
        "public/SHA256SUMS.asc",
        "public/chain-of-trust.json.asc",
        "public/manifest.json",
    ] {
        assert!(
            out.contains(&format!("  {name} (s3")),
            "{name} not uploaded:\n{out}"
        );
    }
    assert_eq!(out.matches("Completed (completed)").count(), 5, "{out}");
    assert!(
        out.trim_end()
            .ends_with(&format!("everything is kept in {}", dir.display()))
    );
    assert!(out.contains("DEMO OK"), "{out}");
    // The decision task was rebuilt from the demo repository's .taskcluster.yml (served over
    // loopback), in the auditor's tree.
    assert!(out.contains("[pass] decision-rebuild"), "{out}");
    assert!(!out.contains("[caveat] decision-rebuild"), "{out}");
    // Nothing the demo started is left running (a gpg-agent for its gnupg home was).
    let left = processes_mentioning(&dir);
    assert!(left.is_empty(), "left running: {left:?}");

    // Kept: the trust store, private keys (0600), configs, queue state, published tree.
    let published = dir.join("published/pub/product/candidates/1.0/linux64");
    let tarball = std::fs::read(published.join("target.tar.gz")).unwrap();
    assert!(tarball.starts_with(&[0x1f, 0x8b]), "gzip");
    let sig = std::fs::read_to_string(published.join("target.tar.gz.asc")).unwrap();
    assert!(sig.starts_with("-----BEGIN PGP SIGNATURE-----"));
    assert!(dir.join("keys/trust.toml").is_file());
    assert!(dir.join("signing/worker.toml").is_file());
    assert!(dir.join("push/worker.toml").is_file());
    assert!(dir.join("chain-policy.toml").is_file());
    assert!(
        std::fs::read_dir(dir.join("queue"))
            .unwrap()
            .next()
            .is_some()
    );
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(dir.join("private/chainlock-worker.key.asc"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);
    // The queue's secret never reaches the output or the kept configs.
    let creds = std::fs::read_to_string(dir.join("signing/credentials.json")).unwrap();
    let token: serde_json::Value = serde_json::from_str(&creds).unwrap();
    let token = token["accessToken"].as_str().unwrap();
    assert!(!out.contains(token) && !err.contains(token));
    for cfg in ["signing/worker.toml", "push/worker.toml"] {
        assert!(
            !std::fs::read_to_string(dir.join(cfg))
                .unwrap()
                .contains(token)
        );
    }

    // A second run into the same (now non-empty) directory is a usage error: keys are never
    // overwritten.
    let (code, out, err) = run_demo(&["--data-dir".as_ref(), dir.as_os_str()]);
    assert_eq!(code, 64, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("is not empty"), "{err}");
}

#[test]
fn demo_without_data_dir_removes_its_temporary_directory() {
    let (code, out, err) = run_demo(&[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let line = out
        .lines()
        .find(|l| l.contains("working in temporary directory"))
        .unwrap_or_else(|| panic!("{out}"));
    let path = line
        .split("temporary directory ")
        .nth(1)
        .and_then(|rest| rest.split(" (removed").next())
        .unwrap();
    assert!(out.contains(&format!("removing {path}")), "{out}");
    assert!(!Path::new(path).exists(), "{path} still exists");
    assert!(out.contains("DEMO OK"), "{out}");
}
