//! Integration tests for the trust layer with real components: GnuPG and sqv interop for
//! OpenPGP signatures, and the real `chainlock keys` binary driving a full rotation scenario.
// Tests start gpg, sqv and the chainlock binary; the ban on Command::new is for library code.
#![allow(clippy::disallowed_methods)]

use chainlock::openpgp;
use chainlock::trust::policy::{KeyType, Policy, PolicyFile, RootKey, RootRole, WorkerKey};
use chainlock::trust::{
    CotSignature, Limits, PolicyVersion, SignatureError, TrustError, TrustPin, TrustStore,
    sha256_hex,
};
use chrono::{DateTime, Duration, Utc};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Output};

fn gpg(home: &Path, args: &[&str]) -> Output {
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args([
            "--batch",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ])
        .args(args)
        .output()
        .expect("gpg runs");
    assert!(
        out.status.success(),
        "gpg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn gpg_home() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("chmod");
    dir
}

/// The fingerprint of the newest key in the keyring.
fn gpg_last_fpr(home: &Path) -> String {
    let out = gpg(home, &["--with-colons", "--list-keys"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut fpr = None;
    let mut after_pub = false;
    for line in text.lines() {
        if line.starts_with("pub:") {
            after_pub = true;
        } else if after_pub && line.starts_with("fpr:") {
            fpr = line.split(':').nth(9).map(str::to_owned);
            after_pub = false;
        }
    }
    fpr.expect("a primary key fingerprint")
}

/// A one-version store whose `worker_impl` trusts `cert` (armored), valid around now.
fn store_trusting(worker_impl: &str, cert: &str, now: DateTime<Utc>) -> TrustStore {
    let root = openpgp::generate_key("root", now - Duration::days(2), None).expect("gen");
    let c = openpgp::parse_public_cert(cert.as_bytes()).expect("cert");
    let mut workers = BTreeMap::new();
    workers.insert(
        worker_impl.to_owned(),
        vec![WorkerKey {
            name: "k".into(),
            key_type: KeyType::Openpgp,
            fingerprint: Some(c.fingerprint().to_hex()),
            cert: Some(cert.to_owned()),
            public_key: None,
            valid_from: now - Duration::days(1),
            valid_until: now + Duration::days(1),
            revocation: None,
        }],
    );
    let file = PolicyFile {
        version: 1,
        expires: now + Duration::days(30),
        root: RootRole {
            threshold: 1,
            keys: vec![RootKey {
                name: "root".into(),
                fingerprint: root.fingerprint(),
                cert: String::from_utf8(root.public_cert_armored().expect("export")).expect("a"),
            }],
        },
        workers,
    };
    let bytes = Policy::to_toml(&file).expect("toml").into_bytes();
    let sig = openpgp::sign_detached_armored(&root, &bytes, now - Duration::hours(1)).expect("s");
    let pin = TrustPin {
        version: 1,
        sha256: sha256_hex(&bytes),
    };
    let v = PolicyVersion {
        source: "mem".into(),
        bytes,
        signatures: vec![sig],
    };
    TrustStore::from_versions(&pin, &[v], now, &Limits::default()).expect("store")
}

#[test]
fn our_signatures_verify_with_gpg_and_sqv() {
    let home = gpg_home();
    let dir = tempfile::tempdir().expect("tempdir");
    let now = chainlock::clock::now();
    let key = openpgp::generate_key("chainlock test", now - Duration::hours(1), None).expect("gen");
    let cert = dir.path().join("cert.asc");
    std::fs::write(&cert, key.public_cert_armored().expect("export")).expect("write");
    let doc = dir.path().join("chain-of-trust.json");
    std::fs::write(&doc, b"{\"a\": \"b\"}").expect("write");
    let sig = dir.path().join("chain-of-trust.json.asc");
    let armored = openpgp::sign_detached_armored(&key, b"{\"a\": \"b\"}", now).expect("sign");
    std::fs::write(&sig, &armored).expect("write");
    gpg(home.path(), &["--import", cert.to_str().expect("utf8")]);
    let out = gpg(
        home.path(),
        &[
            "--status-fd",
            "1",
            "--verify",
            sig.to_str().expect("u"),
            doc.to_str().expect("u"),
        ],
    );
    let status = String::from_utf8_lossy(&out.stdout);
    assert!(status.contains("[GNUPG:] GOODSIG"), "{status}");
    assert!(status.contains(&key.signing_fingerprint()), "{status}");
    // sqv, the Sequoia verifier Debian uses for apt.
    let out = Command::new("sqv")
        .arg("--keyring")
        .arg(&cert)
        .arg(&sig)
        .arg(&doc)
        .output()
        .expect("sqv runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A tampered document fails in gpg too.
    std::fs::write(&doc, b"{\"a\": \"c\"}").expect("write");
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home.path())
        .args(["--batch", "--verify"])
        .arg(&sig)
        .arg(&doc)
        .output()
        .expect("gpg runs");
    assert!(!out.status.success());
}

#[test]
fn gpg_made_signatures_are_accepted_through_the_trust_store() {
    // (primary algorithm, primary usage, optional signing subkey algorithm)
    let cases: [(&str, &str, Option<&str>); 4] = [
        ("ed25519", "sign", None),
        ("ed25519", "cert", Some("ed25519")),
        ("rsa3072", "sign", None),
        ("rsa3072", "cert", Some("rsa3072")),
    ];
    for (algo, usage, subkey) in cases {
        let home = gpg_home();
        let dir = tempfile::tempdir().expect("tempdir");
        let uid = format!("gpg {algo} {usage} <t@example.org>");
        gpg(
            home.path(),
            &["--quick-gen-key", &uid, algo, usage, "never"],
        );
        let fpr = gpg_last_fpr(home.path());
        if let Some(sub) = subkey {
            gpg(
                home.path(),
                &["--quick-add-key", &fpr, sub, "sign", "never"],
            );
        }
        let doc = dir.path().join("doc.json");
        std::fs::write(&doc, b"{\"chainOfTrustVersion\": 1}\n").expect("write");
        let sig = dir.path().join("doc.json.asc");
        gpg(
            home.path(),
            &[
                "--armor",
                "--local-user",
                &fpr,
                "--output",
                sig.to_str().expect("u"),
                "--detach-sign",
                doc.to_str().expect("u"),
            ],
        );
        let cert = gpg(home.path(), &["--armor", "--export", &fpr]).stdout;
        let cert = String::from_utf8(cert).expect("armor");
        // gpg stamps the current time; observe a little later.
        let now = chainlock::clock::now() + Duration::seconds(5);
        let store = store_trusting("gpg-worker", &cert, now);
        let sig_bytes = std::fs::read(&sig).expect("read");
        let doc_bytes = std::fs::read(&doc).expect("read");
        let ok = store
            .verify_cot_signature(
                "gpg-worker",
                &doc_bytes,
                CotSignature::OpenPgpArmored(&sig_bytes),
                now,
                Duration::minutes(5),
            )
            .unwrap_or_else(|e| panic!("{algo}/{usage}/{subkey:?}: {e}"));
        assert_eq!(ok.key_id, fpr, "{algo}/{usage}/{subkey:?}");
        if subkey.is_some() {
            assert_ne!(
                ok.signing_subkey.as_deref(),
                Some(fpr.as_str()),
                "subkey signed"
            );
        }
        // Not trusted for another implementation, and not over other bytes.
        let err = store
            .verify_cot_signature(
                "gpg-worker",
                b"other",
                CotSignature::OpenPgpArmored(&sig_bytes),
                now,
                Duration::minutes(5),
            )
            .expect_err("tampered");
        assert!(
            matches!(err, SignatureError::BadSignature { .. }),
            "{err:?}"
        );
        let err = store
            .verify_cot_signature(
                "chainlock",
                &doc_bytes,
                CotSignature::OpenPgpArmored(&sig_bytes),
                now,
                Duration::minutes(5),
            )
            .expect_err("other impl");
        assert!(
            matches!(err, SignatureError::NoKeysForWorkerImpl { .. }),
            "{err:?}"
        );
    }
}

fn chainlock(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_chainlock"))
        .current_dir(cwd)
        .arg("keys")
        .args(["--keys", "keys"])
        .args(args)
        .output()
        .expect("chainlock runs")
}

fn ok(cwd: &Path, args: &[&str]) -> String {
    let out = chainlock(cwd, args);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "chainlock keys {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn keys_cli_full_scenario_and_refusals() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    ok(
        d,
        &[
            "init",
            "--root-key-dir",
            "roots",
            "--root",
            "alice",
            "--root",
            "bob",
            "--threshold",
            "2",
        ],
    );
    let mode = |p: &str| {
        std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(d.join(p)).expect("stat").permissions(),
        ) & 0o777
    };
    assert_eq!(mode("roots/alice.key.asc"), 0o600);
    let v1 = std::fs::read(d.join("keys/trust.toml")).expect("v1");
    let pin = TrustPin {
        version: 1,
        sha256: sha256_hex(&v1),
    };
    // Refusal: private keys never inside keys/.
    let out = chainlock(d, &["init", "--root-key-dir", "keys/roots", "--root", "x"]);
    assert!(!out.status.success());

    ok(d, &["generate", "--name", "cl1", "--out-dir", "worker"]);
    assert_eq!(mode("worker/cl1.key.asc"), 0o600);
    let out = ok(
        d,
        &[
            "add",
            "--worker-impl",
            "chainlock",
            "--name",
            "cl1",
            "--cert",
            "worker/cl1.pub.asc",
        ],
    );
    assert!(out.contains("pending version 2"), "{out}");
    // One signature of a 2-of-2 root: still pending.
    let out = ok(d, &["sign", "--root-key", "roots/alice.key.asc"]);
    assert!(out.contains("still pending"), "{out}");
    assert_eq!(std::fs::read(d.join("keys/trust.toml")).expect("read"), v1);
    let out = ok(d, &["sign", "--root-key", "roots/bob.key.asc"]);
    assert!(out.contains("version 2 is now current"), "{out}");
    assert!(d.join("keys/history/v1/trust.toml").exists());

    // Trust-reducing changes print a dry run without --yes and write nothing.
    let out = ok(
        d,
        &[
            "rotate",
            "--worker-impl",
            "chainlock",
            "--old",
            "cl1",
            "--new-name",
            "cl2",
            "--out-dir",
            "worker",
        ],
    );
    assert!(out.contains("dry run"), "{out}");
    assert!(!d.join("keys/pending").exists());
    assert!(!d.join("worker/cl2.key.asc").exists());
    let out = ok(d, &["revoke", "--name", "cl1", "--reason", "compromised"]);
    assert!(out.contains("dry run"), "{out}");
    assert!(!d.join("keys/pending").exists());
    let out = ok(d, &["set-threshold", "1"]);
    assert!(out.contains("dry run"), "{out}");

    let out = ok(
        d,
        &[
            "rotate",
            "--worker-impl",
            "chainlock",
            "--old",
            "cl1",
            "--new-name",
            "cl2",
            "--out-dir",
            "worker",
            "--yes",
        ],
    );
    assert!(out.contains("remaining steps"), "{out}");
    // A key that is not a root key signs: counted for nobody.
    let out = chainlock(d, &["sign", "--root-key", "worker/cl1.key.asc"]);
    assert!(out.status.success());
    ok(d, &["sign", "--root-key", "roots/alice.key.asc"]);
    let out = ok(d, &["sign", "--root-key", "roots/bob.key.asc"]);
    assert!(out.contains("version 3 is now current"), "{out}");
    let out = ok(d, &["verify", "--pin-sha256", &pin.sha256]);
    assert!(out.contains("OK: version 3"), "{out}");
    let out = ok(d, &["list"]);
    assert!(out.contains("cl2") && out.contains("active"), "{out}");
    assert!(out.contains("retiring"), "{out}");

    // The worker's view: load from the v1 pin, accept a cl2 signature.
    let now = chainlock::clock::now();
    let keys = d.join("keys");
    let state = d.join("trust-state.json");
    let store =
        TrustStore::load_with_state(&keys, &pin, &state, now, &Limits::default()).expect("load");
    assert_eq!(store.version(), 3);
    assert!(!store.changed_on_disk().expect("stat"));
    let cl2 = openpgp::load_signing_key(&d.join("worker/cl2.key.asc"), now).expect("key");
    let sig = openpgp::sign_detached_armored(&cl2, b"doc", now).expect("sign");
    let accepted = store
        .verify_cot_signature(
            "chainlock",
            b"doc",
            CotSignature::OpenPgpArmored(&sig),
            now,
            Duration::minutes(5),
        )
        .expect("cl2 accepted");
    assert_eq!(accepted.key_name, "cl2");
    assert_eq!(accepted.policy_version, 3);

    // Refusal: a private key readable by others is not loaded.
    std::fs::set_permissions(
        d.join("worker/cl2.key.asc"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .expect("chmod");
    let err = openpgp::load_signing_key(&d.join("worker/cl2.key.asc"), now).expect_err("0644");
    assert!(
        matches!(err, openpgp::OpenPgpError::KeyFilePermissions { .. }),
        "{err:?}"
    );

    // Rollback: put version 2 back as current. The state file remembers version 3.
    let v3 = std::fs::read(keys.join("trust.toml")).expect("v3");
    std::fs::copy(keys.join("history/v2/trust.toml"), keys.join("trust.toml")).expect("copy");
    assert!(store.changed_on_disk().expect("stat"));
    let err = TrustStore::load_with_state(&keys, &pin, &state, now, &Limits::default())
        .expect_err("rollback");
    assert!(
        matches!(
            err,
            TrustError::Rollback {
                pinned: 3,
                found: 2
            }
        ),
        "{err:?}"
    );

    // Tampering with the current version: verification fails, exit 1.
    let tampered = String::from_utf8(v3)
        .expect("utf8")
        .replace("threshold = 2", "threshold = 1");
    std::fs::write(keys.join("trust.toml"), tampered).expect("write");
    let out = chainlock(d, &["verify", "--pin-sha256", &pin.sha256]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let err = TrustStore::load(&keys, &pin, now, &Limits::default()).expect_err("tampered");
    assert!(matches!(err, TrustError::ThresholdNotMet { .. }), "{err:?}");
}

/// `keys generate --ed25519` writes a private seed file (0600) and its public half, which
/// `keys add --ed25519` lists for the chainlock worker implementation (adding trusts more: no
/// dry run), and which a worker loads as `[chain_of_trust] ed25519_key`.
#[test]
fn keys_cli_generates_and_adds_an_ed25519_worker_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    ok(d, &["init", "--root-key-dir", "roots", "--root", "alice"]);
    let out = ok(
        d,
        &[
            "generate",
            "--ed25519",
            "--name",
            "cl-ed",
            "--out-dir",
            "worker",
        ],
    );
    assert!(out.contains("--ed25519 worker/cl-ed.ed25519.pub"), "{out}");
    let private = d.join("worker/cl-ed.ed25519.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&private).expect("stat").permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    let key = chainlock::ed25519_key::Ed25519Key::load(&private).expect("loads");
    let public = std::fs::read_to_string(d.join("worker/cl-ed.ed25519.pub")).expect("pub");
    assert_eq!(public.trim(), key.public_key_base64());
    assert!(out.contains(&key.public_key_base64()), "{out}");
    // Never over an existing key.
    let again = chainlock(
        d,
        &[
            "generate",
            "--ed25519",
            "--name",
            "cl-ed",
            "--out-dir",
            "worker",
        ],
    );
    assert!(!again.status.success());

    let out = ok(
        d,
        &[
            "add",
            "--worker-impl",
            "chainlock",
            "--name",
            "cl-ed",
            "--ed25519",
            "worker/cl-ed.ed25519.pub",
        ],
    );
    assert!(out.contains("pending version 2"), "{out}");
    let out = ok(d, &["sign", "--root-key", "roots/alice.key.asc"]);
    assert!(out.contains("version 2 is now current"), "{out}");
    let policy = std::fs::read_to_string(d.join("keys/trust.toml")).expect("policy");
    assert!(policy.contains(&key.public_key_base64()), "{policy}");
}

/// Every file under `dir`, by relative path, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).expect("under base");
                out.insert(
                    rel.display().to_string(),
                    std::fs::read(&path).expect("read"),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes an OpenPGP key pair created at `now + created_days` that expires `validity_days`
/// after its creation, as `<dir>/<name>.key.asc` and `.pub.asc`.
fn key_with_expiry(dir: &Path, name: &str, created_days: i64, validity_days: i64) {
    let now = chainlock::clock::now();
    std::fs::create_dir_all(dir).expect("mkdir");
    let key = openpgp::generate_key(
        name,
        now + Duration::days(created_days),
        Some(Duration::days(validity_days)),
    )
    .expect("generate");
    openpgp::write_new_key(
        &key,
        &dir.join(format!("{name}.key.asc")),
        &dir.join(format!("{name}.pub.asc")),
    )
    .expect("write");
}

fn line_with<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{out}"))
}

/// `keys list` warns about an OpenPGP certificate's own expiry with the window horizon (a
/// policy window that outlives the certificate does not keep the key usable), and `keys status`
/// says per key what breaks when; it exits 1 only when the policy or the worker's own key is
/// broken.
#[test]
fn keys_list_and_status_report_certificate_expiry() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    ok(d, &["init", "--root-key-dir", "roots", "--root", "alice"]);
    // Expires in 3 days; expired 5 days ago. Each gets a 200-day policy window (the policy
    // itself expires in 365 days).
    key_with_expiry(&d.join("worker"), "short", -1, 4);
    key_with_expiry(&d.join("worker"), "gone", -10, 5);
    ok(
        d,
        &[
            "generate",
            "--ed25519",
            "--name",
            "ed",
            "--out-dir",
            "worker",
        ],
    );
    for (name, flag, file) in [
        ("short", "--cert", "worker/short.pub.asc"),
        ("gone", "--cert", "worker/gone.pub.asc"),
        ("ed", "--ed25519", "worker/ed.ed25519.pub"),
    ] {
        ok(
            d,
            &[
                "add",
                "--worker-impl",
                "chainlock",
                "--name",
                name,
                flag,
                file,
                "--valid-days",
                "200",
            ],
        );
    }
    let out = ok(d, &["sign", "--root-key", "roots/alice.key.asc"]);
    assert!(out.contains("version 2 is now current"), "{out}");

    let out = ok(d, &["list"]);
    assert!(
        out.contains("WARNING: the certificate of short expires within 30 days"),
        "{out}"
    );
    assert!(
        out.contains("WARNING: the certificate of gone expired at"),
        "{out}"
    );
    // The policy windows themselves are far off: no window warning.
    assert!(!out.contains("WARNING: short expires"), "{out}");
    // Same horizon as the window warnings: with one day, only the expired one is left.
    let out = ok(d, &["list", "--horizon-days", "1"]);
    assert!(!out.contains("certificate of short"), "{out}");
    assert!(out.contains("certificate of gone expired"), "{out}");

    let status = |args: &[&str]| {
        let mut all = vec!["status"];
        all.extend_from_slice(args);
        let out = chainlock(d, &all);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).to_string(),
        )
    };
    let (code, out) = status(&["--signing-key", "worker/short.key.asc"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        line_with(&out, "policy version 2").starts_with("ok "),
        "{out}"
    );
    assert!(line_with(&out, "root alice").starts_with("ok "), "{out}");
    let own = line_with(&out, "own signing key");
    assert!(own.starts_with("WARN "), "{own}");
    assert!(own.contains("= chainlock/short"), "{own}");
    assert!(own.contains("certificate expiry (key)"), "{own}");
    assert!(own.contains("the worker stops claiming"), "{own}");
    let gone = line_with(&out, "chainlock/gone");
    assert!(gone.starts_with("BROKEN "), "{gone}");
    assert!(gone.contains("certificate expiry"), "{gone}");
    assert!(gone.contains("(passed)"), "{gone}");
    let ed = line_with(&out, "chainlock/ed ");
    assert!(ed.starts_with("ok "), "{ed}");
    assert!(ed.contains("policy window end"), "{ed}");

    // Our own key expired: exit 1.
    let (code, out) = status(&["--signing-key", "worker/gone.key.asc"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        line_with(&out, "own signing key").starts_with("BROKEN "),
        "{out}"
    );
    // A key the policy does not list: the worker would refuse to start.
    ok(
        d,
        &["generate", "--name", "stranger", "--out-dir", "worker"],
    );
    let (code, out) = status(&["--signing-key", "worker/stranger.key.asc"]);
    assert_eq!(code, Some(1), "{out}");
    let own = line_with(&out, "own signing key");
    assert!(
        own.starts_with("BROKEN ") && own.contains("not trusted for chainlock"),
        "{own}"
    );
    // The ed25519 key is trusted and has no expiry of its own.
    let (code, out) = status(&["--ed25519-key", "worker/ed.ed25519.key"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        line_with(&out, "own ed25519 key").starts_with("ok "),
        "{out}"
    );
    let (code, out) = status(&[
        "--ed25519-key",
        "worker/ed.ed25519.key",
        "--worker-impl",
        "scriptworker",
    ]);
    assert_eq!(code, Some(1), "{out}");
}

/// `keys remove` is trust-reducing: without `--yes` it prints what would change and writes
/// nothing; a removal that would leave the policy invalid is refused with or without `--yes`.
#[test]
fn keys_remove_is_a_dry_run_without_yes_and_refuses_an_invalid_policy() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path();
    ok(
        d,
        &[
            "init",
            "--root-key-dir",
            "roots",
            "--root",
            "alice",
            "--root",
            "bob",
            "--threshold",
            "2",
        ],
    );
    ok(d, &["generate", "--name", "cl1", "--out-dir", "worker"]);
    ok(
        d,
        &[
            "add",
            "--worker-impl",
            "chainlock",
            "--name",
            "cl1",
            "--cert",
            "worker/cl1.pub.asc",
        ],
    );
    ok(d, &["sign", "--root-key", "roots/alice.key.asc"]);
    ok(d, &["sign", "--root-key", "roots/bob.key.asc"]);
    let keys = d.join("keys");
    let before = snapshot(&keys);

    let out = ok(d, &["remove", "--name", "cl1"]);
    assert!(
        out.contains("dry run: would remove worker key cl1"),
        "{out}"
    );
    assert!(out.contains("still in service"), "{out}");
    assert_eq!(snapshot(&keys), before, "a dry run wrote something");

    // 2 of 2 roots: removing one leaves a threshold the policy cannot meet.
    for args in [
        &["remove", "--name", "bob"][..],
        &["remove", "--name", "bob", "--yes"][..],
        &["remove", "--name", "nobody", "--yes"][..],
    ] {
        let out = chainlock(d, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("would leave the policy invalid") || stderr.contains("no key named"),
            "{args:?}: {stderr}"
        );
        assert_eq!(snapshot(&keys), before, "{args:?} wrote something");
    }

    let out = ok(d, &["remove", "--name", "cl1", "--yes"]);
    assert!(out.contains("changed: remove worker key cl1"), "{out}");
    let pending = std::fs::read_to_string(keys.join("pending/trust.toml")).expect("pending");
    assert!(!pending.contains("cl1"), "{pending}");
    ok(d, &["sign", "--root-key", "roots/alice.key.asc"]);
    let out = ok(d, &["sign", "--root-key", "roots/bob.key.asc"]);
    assert!(out.contains("version 3 is now current"), "{out}");
    let out = ok(d, &["list"]);
    assert!(!out.contains("cl1"), "{out}");
}
