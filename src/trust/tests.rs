//! Table-driven tests of the trust store's pure core: policy rotation (tuf-conformance's
//! `test_updater_key_rotations.py` rows) and chain-of-trust signature acceptance over time.

use super::policy::*;
use super::*;
use crate::openpgp::{SigningKey, generate_key, sign_detached_armored};
use chrono::TimeZone;
use std::collections::BTreeMap;
use std::sync::LazyLock;

fn t(days: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
        .single()
        .expect("valid constant date")
        + Duration::days(days)
}

/// Ten root keys, created once (key generation is the slow part).
static ROOTS: LazyLock<Vec<SigningKey>> = LazyLock::new(|| {
    (0..10)
        .map(|i| generate_key(&format!("root{i}"), t(-400), None).expect("generate root key"))
        .collect()
});

fn root_entry(i: usize) -> RootKey {
    let k = &ROOTS[i];
    RootKey {
        name: format!("root{i}"),
        fingerprint: k.fingerprint(),
        cert: String::from_utf8(k.public_cert_armored().expect("export")).expect("armor is ASCII"),
    }
}

fn policy_bytes(version: u64, keys: &[usize], threshold: usize, expires: DateTime<Utc>) -> Vec<u8> {
    let file = PolicyFile {
        version,
        expires,
        root: RootRole {
            threshold,
            keys: keys.iter().map(|&i| root_entry(i)).collect(),
        },
        workers: BTreeMap::new(),
    };
    Policy::to_toml(&file).expect("serialise").into_bytes()
}

fn signed(bytes: Vec<u8>, sigs: &[usize], at: DateTime<Utc>) -> PolicyVersion {
    let signatures = sigs
        .iter()
        .map(|&i| sign_detached_armored(&ROOTS[i], &bytes, at).expect("sign"))
        .collect();
    PolicyVersion {
        source: PathBuf::from("test"),
        bytes,
        signatures,
    }
}

/// (keys, threshold, signers) of one version.
type Md = (&'static [usize], usize, &'static [usize]);

#[derive(Debug)]
enum Expect {
    Ok,
    Threshold { version: u64, by_version: u64 },
}

#[test]
fn rotation_table() {
    let rows: Vec<(&str, Vec<Md>, Expect)> = vec![
        (
            "1-of-1-key-rotation",
            vec![(&[1], 1, &[1]), (&[2], 1, &[2, 1]), (&[2], 1, &[2])],
            Expect::Ok,
        ),
        (
            "3-of-5-one-key-rotated-with-intermediate-step",
            vec![
                (&[0, 1, 2, 3, 4], 3, &[0, 2, 4]),
                (&[0, 1, 3, 4, 5], 3, &[0, 2, 4, 5]),
                (&[0, 1, 3, 4, 5], 3, &[0, 4, 5]),
            ],
            Expect::Ok,
        ),
        (
            "3-of-5-all-keys-rotated-with-intermediate-step",
            vec![
                (&[0, 1, 2, 3, 4], 3, &[0, 2, 4]),
                (&[5, 6, 7, 8, 9], 3, &[0, 2, 4, 5, 6, 7]),
                (&[5, 6, 7, 8, 9], 3, &[5, 6, 7]),
            ],
            Expect::Ok,
        ),
        (
            "1-of-3-threshold-increase-to-2-of-3",
            vec![(&[1, 2, 3], 1, &[1]), (&[1, 2, 3], 2, &[1, 2])],
            Expect::Ok,
        ),
        (
            "2-of-3-threshold-decrease-to-1-of-3",
            vec![
                (&[1, 2, 3], 2, &[1, 2]),
                (&[1, 2, 3], 1, &[1, 2]),
                (&[1, 2, 3], 1, &[1]),
            ],
            Expect::Ok,
        ),
        (
            "1-of-1-key-rotation-fail-not-signed-with-old-key",
            vec![(&[1], 1, &[1]), (&[2], 1, &[2, 3, 4])],
            Expect::Threshold {
                version: 2,
                by_version: 1,
            },
        ),
        (
            "1-of-1-key-rotation-fail-not-signed-with-new-key",
            vec![(&[1], 1, &[1]), (&[2], 1, &[1, 3, 4])],
            Expect::Threshold {
                version: 2,
                by_version: 2,
            },
        ),
        (
            "3-of-5-one-key-rotate-fails-not-signed-with-3-old-keys",
            vec![
                (&[0, 1, 2, 3, 4], 3, &[0, 2, 4]),
                (&[0, 1, 3, 4, 5], 3, &[0, 4, 5]),
            ],
            Expect::Threshold {
                version: 2,
                by_version: 1,
            },
        ),
        (
            "3-of-5-one-key-rotate-fails-not-signed-with-3-new-keys",
            vec![
                (&[0, 1, 2, 3, 4], 3, &[0, 2, 4]),
                (&[0, 1, 3, 4, 5], 3, &[0, 2, 4]),
            ],
            Expect::Threshold {
                version: 2,
                by_version: 2,
            },
        ),
        (
            "1-of-3-threshold-bump-to-2-of-3-fails-new-threshold-not-reached",
            vec![(&[1, 2, 3], 1, &[1]), (&[1, 2, 3], 2, &[2])],
            Expect::Threshold {
                version: 2,
                by_version: 2,
            },
        ),
        (
            "2-of-3-threshold-decr-to-1-of-3-fails-old-threshold-not-reached",
            vec![(&[1, 2, 3], 2, &[1, 2]), (&[1, 2, 3], 1, &[1])],
            Expect::Threshold {
                version: 2,
                by_version: 1,
            },
        ),
        (
            // Duplicate signatures by one key (twice the same file) count once.
            "2-of-3-duplicate-signatures-count-once",
            vec![(&[1, 2, 3], 2, &[1, 2]), (&[1, 2, 3], 2, &[1, 1, 1])],
            Expect::Threshold {
                version: 2,
                by_version: 1,
            },
        ),
    ];
    let limits = Limits::default();
    for (name, versions, expect) in rows {
        let files: Vec<PolicyVersion> = versions
            .iter()
            .enumerate()
            .map(|(i, (keys, threshold, sigs))| {
                let v = u64::try_from(i).expect("small") + 1;
                signed(policy_bytes(v, keys, *threshold, t(365)), sigs, t(0))
            })
            .collect();
        let pin = TrustPin {
            version: 1,
            sha256: sha256_hex(&files[0].bytes),
        };
        let got = TrustStore::from_versions(&pin, &files, t(1), &limits);
        match (expect, got) {
            (Expect::Ok, Ok(store)) => {
                assert_eq!(
                    store.version(),
                    u64::try_from(files.len()).expect("small"),
                    "{name}"
                )
            }
            (
                Expect::Threshold {
                    version,
                    by_version,
                },
                Err(TrustError::ThresholdNotMet {
                    version: v,
                    by_version: b,
                    ..
                }),
            ) => assert_eq!((v, b), (version, by_version), "{name}"),
            (expect, got) => panic!("{name}: expected {expect:?}, got {got:?}"),
        }
    }
}

#[test]
fn subkeys_of_one_primary_count_once() {
    // One certificate with two signing subkeys signs twice: still one signer.
    use sequoia_openpgp::cert::CertBuilder;
    let (cert, _) = CertBuilder::new()
        .set_creation_time(std::time::SystemTime::from(t(-10)))
        .add_userid("two-subkeys")
        .add_signing_subkey()
        .add_signing_subkey()
        .generate()
        .expect("generate");
    let policy_file = PolicyFile {
        version: 1,
        expires: t(365),
        root: RootRole {
            threshold: 2,
            keys: vec![
                RootKey {
                    name: "two".into(),
                    fingerprint: cert.fingerprint().to_hex(),
                    cert: String::from_utf8(
                        crate::openpgp::export_cert_armored(&cert).expect("export"),
                    )
                    .expect("ascii"),
                },
                root_entry(1),
            ],
        },
        workers: BTreeMap::new(),
    };
    let bytes = Policy::to_toml(&policy_file).expect("toml").into_bytes();
    let policy = Policy::parse(&bytes).expect("parse");
    let mut sigs = Vec::new();
    for ka in cert.keys().subkeys().secret() {
        let mut kp = ka.key().clone().into_keypair().expect("keypair");
        let sig = sequoia_openpgp::packet::signature::SignatureBuilder::new(
            sequoia_openpgp::types::SignatureType::Binary,
        )
        .set_signature_creation_time(std::time::SystemTime::from(t(0)))
        .expect("time")
        .sign_message(&mut kp, &bytes)
        .expect("sign");
        let mut out = Vec::new();
        {
            use sequoia_openpgp::serialize::Marshal;
            let mut w = sequoia_openpgp::armor::Writer::new(
                &mut out,
                sequoia_openpgp::armor::Kind::Signature,
            )
            .expect("armor");
            sequoia_openpgp::Packet::from(sig)
                .serialize(&mut w)
                .expect("ser");
            w.finalize().expect("finalize");
        }
        sigs.push(out);
    }
    assert_eq!(sigs.len(), 2);
    let signers = root_signers(&policy, &bytes, &sigs, t(1), Duration::zero());
    assert_eq!(signers, vec![cert.fingerprint().to_hex()]);
    let err = verify_history(
        &TrustPin {
            version: 1,
            sha256: sha256_hex(&bytes),
        },
        &[PolicyVersion {
            source: "x".into(),
            bytes: bytes.clone(),
            signatures: sigs,
        }],
        t(1),
        &Limits::default(),
    )
    .expect_err("one primary is one signer");
    assert!(
        matches!(
            err,
            TrustError::ThresholdNotMet {
                valid: 1,
                threshold: 2,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn rollback_gap_pin_and_expiry() {
    let limits = Limits::default();
    let v1 = signed(policy_bytes(1, &[1], 1, t(365)), &[1], t(0));
    let v3 = signed(policy_bytes(3, &[1], 1, t(365)), &[1], t(0));
    let pin = TrustPin {
        version: 1,
        sha256: sha256_hex(&v1.bytes),
    };
    let err = verify_history(&pin, &[v1.clone(), v3], t(1), &limits).expect_err("gap");
    assert!(
        matches!(
            err,
            TrustError::VersionGap {
                previous: 1,
                found: 3
            }
        ),
        "{err:?}"
    );
    // Rollback: a "version 1" offered after version 1 (replay of an older version).
    let v1b = signed(policy_bytes(1, &[1], 1, t(500)), &[1], t(0));
    let err = verify_history(&pin, &[v1.clone(), v1b], t(1), &limits).expect_err("rollback");
    assert!(
        matches!(
            err,
            TrustError::VersionGap {
                previous: 1,
                found: 1
            }
        ),
        "{err:?}"
    );
    let wrong = TrustPin {
        version: 1,
        sha256: "00".repeat(32),
    };
    let err = verify_history(&wrong, std::slice::from_ref(&v1), t(1), &limits).expect_err("pin");
    assert!(matches!(err, TrustError::PinMismatch { .. }), "{err:?}");
    // Expired final policy (freeze attack), while an expired intermediate is fine.
    let err =
        verify_history(&pin, std::slice::from_ref(&v1), t(366), &limits).expect_err("expired");
    assert!(
        matches!(err, TrustError::Expired { version: 1, .. }),
        "{err:?}"
    );
    let old = signed(policy_bytes(1, &[1], 1, t(10)), &[1], t(0));
    let next = signed(policy_bytes(2, &[1], 1, t(400)), &[1], t(0));
    let pin_old = TrustPin {
        version: 1,
        sha256: sha256_hex(&old.bytes),
    };
    verify_history(&pin_old, &[old, next], t(20), &limits).expect("expired intermediate ok");
    // Future-dated root signatures do not count.
    let future = signed(policy_bytes(1, &[1], 1, t(365)), &[1], t(30));
    let pin_f = TrustPin {
        version: 1,
        sha256: sha256_hex(&future.bytes),
    };
    let err = verify_history(&pin_f, &[future], t(1), &limits).expect_err("future sig");
    assert!(
        matches!(err, TrustError::ThresholdNotMet { valid: 0, .. }),
        "{err:?}"
    );
    // Too many versions.
    let small = Limits {
        max_versions: 1,
        ..Limits::default()
    };
    let a = signed(policy_bytes(1, &[1], 1, t(365)), &[1], t(0));
    let b = signed(policy_bytes(2, &[1], 1, t(365)), &[1], t(0));
    let pin_a = TrustPin {
        version: 1,
        sha256: sha256_hex(&a.bytes),
    };
    let err = verify_history(&pin_a, &[a, b], t(1), &small).expect_err("too many");
    assert!(matches!(err, TrustError::TooManyVersions { .. }), "{err:?}");
}

#[test]
fn policy_consistency_is_checked() {
    let good = String::from_utf8(policy_bytes(1, &[1, 2], 2, t(365))).expect("utf8");
    Policy::parse(good.as_bytes()).expect("good");
    let bad = good.replace("threshold = 2", "threshold = 3");
    assert!(matches!(
        Policy::parse(bad.as_bytes()),
        Err(TrustError::PolicyInvalid { .. })
    ));
    let bad = good.replace("threshold = 2", "threshold = 0");
    assert!(matches!(
        Policy::parse(bad.as_bytes()),
        Err(TrustError::PolicyInvalid { .. })
    ));
    let bad = format!("{good}\nsurprise = 1\n");
    assert!(matches!(
        Policy::parse(bad.as_bytes()),
        Err(TrustError::PolicyParse { .. })
    ));
    // The same root key listed twice would count twice.
    let dup = String::from_utf8(policy_bytes(1, &[1, 1], 2, t(365))).expect("utf8");
    let dup = dup.replacen("name = \"root1\"", "name = \"root1b\"", 1);
    assert!(matches!(
        Policy::parse(dup.as_bytes()),
        Err(TrustError::PolicyInvalid { .. })
    ));
    // Fingerprint must match the certificate.
    let bad = good.replacen(&ROOTS[1].fingerprint(), &ROOTS[3].fingerprint(), 1);
    assert!(matches!(
        Policy::parse(bad.as_bytes()),
        Err(TrustError::PolicyInvalid { .. })
    ));
}

const FOO: &[u8] = include_bytes!("../../tests/data/ed25519/foo.json");
const FOO_SIG: &[u8] = include_bytes!("../../tests/data/ed25519/foo.json.scriptworker.sig");
const SW_PUB: &str = include_str!("../../tests/data/ed25519/scriptworker_public_key");
const DW_PUB: &str = include_str!("../../tests/data/ed25519/docker-worker_public_key");
const GW_PUB: &str = include_str!("../../tests/data/ed25519/generic-worker_public_key");

struct Fixture {
    store: TrustStore,
    a: SigningKey,
    compromised: SigningKey,
    retired: SigningKey,
    short: SigningKey,
    stranger: SigningKey,
}

fn openpgp_worker_key(name: &str, k: &SigningKey, from: i64, until: i64) -> WorkerKey {
    WorkerKey {
        name: name.into(),
        key_type: KeyType::Openpgp,
        fingerprint: Some(k.fingerprint()),
        cert: Some(String::from_utf8(k.public_cert_armored().expect("export")).expect("ascii")),
        public_key: None,
        valid_from: t(from),
        valid_until: t(until),
        revocation: None,
    }
}

fn ed_key(name: &str, public: &str) -> WorkerKey {
    WorkerKey {
        name: name.into(),
        key_type: KeyType::Ed25519,
        fingerprint: None,
        cert: None,
        public_key: Some(public.trim().into()),
        valid_from: t(-100),
        valid_until: t(100),
        revocation: None,
    }
}

fn fixture() -> Fixture {
    let a = generate_key("a", t(-300), None).expect("gen");
    let compromised = generate_key("c", t(-300), None).expect("gen");
    let retired = generate_key("r", t(-300), None).expect("gen");
    let short = generate_key("s", t(-300), Some(Duration::days(310))).expect("gen");
    let stranger = generate_key("x", t(-300), None).expect("gen");
    let mut c = openpgp_worker_key("chainlock-c", &compromised, -100, 100);
    c.revocation = Some(Revocation {
        at: t(50),
        reason: RevocationReason::Compromised,
    });
    let mut r = openpgp_worker_key("chainlock-r", &retired, -100, 100);
    r.revocation = Some(Revocation {
        at: t(50),
        reason: RevocationReason::Retired,
    });
    let mut workers = BTreeMap::new();
    workers.insert(
        "chainlock".to_owned(),
        vec![
            openpgp_worker_key("chainlock-a", &a, 0, 100),
            c,
            r,
            openpgp_worker_key("chainlock-s", &short, -100, 100),
        ],
    );
    workers.insert("scriptworker".to_owned(), vec![ed_key("sw", SW_PUB)]);
    workers.insert("docker-worker".to_owned(), vec![ed_key("dw", DW_PUB)]);
    workers.insert("generic-worker".to_owned(), vec![ed_key("gw", GW_PUB)]);
    let file = PolicyFile {
        version: 1,
        expires: t(365),
        root: RootRole {
            threshold: 1,
            keys: vec![root_entry(0)],
        },
        workers,
    };
    let bytes = Policy::to_toml(&file).expect("toml").into_bytes();
    let v = signed(bytes, &[0], t(-1));
    let pin = TrustPin {
        version: 1,
        sha256: sha256_hex(&v.bytes),
    };
    let store = TrustStore::from_versions(&pin, &[v], t(0), &Limits::default()).expect("store");
    Fixture {
        store,
        a,
        compromised,
        retired,
        short,
        stranger,
    }
}

#[derive(Debug)]
enum Want {
    Ok,
    NoKeys,
    Unknown,
    WrongImpl,
    Malformed,
    Bad,
    CertInvalid,
    NotYetValid,
    Expired,
    Revoked,
    Future,
}

fn classify(r: &Result<AcceptedSignature, SignatureError>) -> String {
    match r {
        Ok(_) => "Ok".into(),
        Err(e) => format!("{e:?}")
            .split([' ', '{', '('])
            .next()
            .unwrap_or("")
            .to_owned(),
    }
}

fn want_name(w: &Want) -> &'static str {
    match w {
        Want::Ok => "Ok",
        Want::NoKeys => "NoKeysForWorkerImpl",
        Want::Unknown => "UnknownSigner",
        Want::WrongImpl => "WrongWorkerImpl",
        Want::Malformed => "Malformed",
        Want::Bad => "BadSignature",
        Want::CertInvalid => "CertInvalid",
        Want::NotYetValid => "NotYetValid",
        Want::Expired => "Expired",
        Want::Revoked => "Revoked",
        Want::Future => "Future",
    }
}

#[test]
fn signature_acceptance_table() {
    let f = fixture();
    let doc = b"{\"chainOfTrustVersion\": 1}".as_slice();
    let skew = Duration::minutes(5);
    let pgp = |k: &SigningKey, day: i64| sign_detached_armored(k, doc, t(day)).expect("sign");
    let mut flipped = FOO_SIG.to_vec();
    flipped[10] ^= 0x01;
    // (case, worker impl, document, signature, observed at, expected)
    type Row<'a> = (
        &'a str,
        &'a str,
        &'a [u8],
        CotSignature<'a>,
        DateTime<Utc>,
        Want,
    );
    let sig_a10 = pgp(&f.a, 10);
    let sig_a_before = pgp(&f.a, -5);
    let sig_a_after = pgp(&f.a, 100);
    let sig_a_future = pgp(&f.a, 20);
    let sig_c10 = pgp(&f.compromised, 10);
    let sig_r10 = pgp(&f.retired, 10);
    let sig_r60 = pgp(&f.retired, 60);
    let sig_s_expired_cert = pgp(&f.short, 20);
    let sig_x = pgp(&f.stranger, 10);
    let rows: Vec<Row<'_>> = vec![
        (
            "openpgp in window",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_a10),
            t(11),
            Want::Ok,
        ),
        (
            "before valid_from",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_a_before),
            t(11),
            Want::NotYetValid,
        ),
        (
            "at valid_until",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_a_after),
            t(101),
            Want::Expired,
        ),
        (
            "dated after observation",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_a_future),
            t(19),
            Want::Future,
        ),
        (
            "within skew",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_a_future),
            t(20) - Duration::minutes(4),
            Want::Ok,
        ),
        (
            "tampered document",
            "chainlock",
            b"{}",
            CotSignature::OpenPgpArmored(&sig_a10),
            t(11),
            Want::Bad,
        ),
        (
            "compromised: before revocation too",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_c10),
            t(11),
            Want::Revoked,
        ),
        (
            "retired: before revocation ok",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_r10),
            t(11),
            Want::Ok,
        ),
        (
            "retired: after revocation",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_r60),
            t(61),
            Want::Revoked,
        ),
        (
            "cert expired at signature time",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_s_expired_cert),
            t(21),
            Want::CertInvalid,
        ),
        (
            "unknown openpgp key",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_x),
            t(11),
            Want::Unknown,
        ),
        (
            "openpgp key of another impl",
            "scriptworker",
            doc,
            CotSignature::OpenPgpArmored(&sig_a10),
            t(11),
            Want::WrongImpl,
        ),
        (
            "no keys for impl",
            "taskcluster-worker",
            doc,
            CotSignature::OpenPgpArmored(&sig_a10),
            t(11),
            Want::NoKeys,
        ),
        (
            "garbage armor",
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(
                b"-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n",
            ),
            t(11),
            Want::Malformed,
        ),
        (
            "ed25519 known answer",
            "scriptworker",
            FOO,
            CotSignature::Ed25519Raw(FOO_SIG),
            t(1),
            Want::Ok,
        ),
        (
            "ed25519 under docker-worker",
            "docker-worker",
            FOO,
            CotSignature::Ed25519Raw(FOO_SIG),
            t(1),
            Want::WrongImpl,
        ),
        (
            "ed25519 under generic-worker",
            "generic-worker",
            FOO,
            CotSignature::Ed25519Raw(FOO_SIG),
            t(1),
            Want::WrongImpl,
        ),
        (
            "ed25519 flipped bit",
            "scriptworker",
            FOO,
            CotSignature::Ed25519Raw(&flipped),
            t(1),
            Want::Unknown,
        ),
        (
            "ed25519 truncated",
            "scriptworker",
            FOO,
            CotSignature::Ed25519Raw(&FOO_SIG[..63]),
            t(1),
            Want::Malformed,
        ),
        (
            "ed25519 without trailing newline",
            "scriptworker",
            &FOO[..FOO.len() - 1],
            CotSignature::Ed25519Raw(FOO_SIG),
            t(1),
            Want::Unknown,
        ),
        (
            "ed25519 observed after window",
            "scriptworker",
            FOO,
            CotSignature::Ed25519Raw(FOO_SIG),
            t(100),
            Want::Expired,
        ),
        (
            "ed25519 sig as openpgp",
            "scriptworker",
            FOO,
            CotSignature::OpenPgpArmored(FOO_SIG),
            t(1),
            Want::Malformed,
        ),
    ];
    for (case, imp, document, sig, observed, want) in rows {
        let got = f
            .store
            .verify_cot_signature(imp, document, sig, observed, skew);
        assert_eq!(classify(&got), want_name(&want), "{case}: {got:?}");
    }
    let ok = f
        .store
        .verify_cot_signature(
            "chainlock",
            doc,
            CotSignature::OpenPgpArmored(&sig_a10),
            t(11),
            skew,
        )
        .expect("accepted");
    assert_eq!(ok.key_name, "chainlock-a");
    assert_eq!(ok.key_id, f.a.fingerprint());
    assert_eq!(
        ok.signing_subkey.as_deref(),
        Some(f.a.signing_fingerprint().as_str())
    );
    assert_eq!(ok.signed_at, t(10));
    assert_eq!(ok.policy_version, 1);
}

#[test]
fn ed25519_key_decoding_is_strict() {
    decode_ed25519_public_key(SW_PUB).expect("known answer key");
    decode_ed25519_public_key(&format!("{}\n", SW_PUB.trim())).expect("trailing newline trimmed");
    let no_pad = SW_PUB.trim().trim_end_matches('=');
    assert!(decode_ed25519_public_key(no_pad).is_err());
    let inner = format!("{}*{}", &SW_PUB[..10], &SW_PUB[10..]);
    assert!(decode_ed25519_public_key(&inner).is_err());
    assert!(decode_ed25519_public_key("AAAA").is_err());
}

/// A key of a certificate: the primary key or its (only) subkey.
#[derive(Debug, Clone, Copy)]
enum Component {
    Primary,
    Subkey,
}

/// Which key makes the signature and which one carries the self-revocation (sqv's revocation
/// tests: primary signs / primary revoked, subkey signs / primary revoked, subkey signs /
/// subkey revoked).
#[derive(Debug, Clone, Copy)]
struct RevocationCase {
    signs: Component,
    revoked: Component,
}

/// A certificate whose primary key can sign and which has one signing subkey, with secrets.
fn signing_primary_cert(name: &str) -> sequoia_openpgp::Cert {
    use sequoia_openpgp::cert::{CertBuilder, CipherSuite};
    use sequoia_openpgp::types::KeyFlags;
    let (cert, _) = CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_creation_time(std::time::SystemTime::from(t(-300)))
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .add_userid(name)
        .add_signing_subkey()
        .generate()
        .expect("generate");
    cert
}

/// Adds a revocation signature made by the primary key at `at` for `reason`.
fn self_revoke(
    cert: sequoia_openpgp::Cert,
    case: RevocationCase,
    reason: sequoia_openpgp::types::ReasonForRevocation,
    at: DateTime<Utc>,
) -> sequoia_openpgp::Cert {
    use sequoia_openpgp::cert::{CertRevocationBuilder, SubkeyRevocationBuilder};
    let mut primary = cert
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .expect("generated with secrets")
        .into_keypair()
        .expect("keypair");
    let at = std::time::SystemTime::from(at);
    let sig = match case.revoked {
        Component::Primary => CertRevocationBuilder::new()
            .set_reason_for_revocation(reason, b"test")
            .expect("reason")
            .set_signature_creation_time(at)
            .expect("time")
            .build(&mut primary, &cert, None)
            .expect("revoke cert"),
        Component::Subkey => {
            let sub = cert.keys().subkeys().next().expect("one subkey");
            SubkeyRevocationBuilder::new()
                .set_reason_for_revocation(reason, b"test")
                .expect("reason")
                .set_signature_creation_time(at)
                .expect("time")
                .build(&mut primary, &cert, sub.key(), None)
                .expect("revoke subkey")
        }
    };
    cert.insert_packets([sig]).expect("merge revocation").0
}

/// An armored detached signature over `doc` at `at` by the primary key or the subkey.
fn sign_with_component(
    cert: &sequoia_openpgp::Cert,
    case: RevocationCase,
    doc: &[u8],
    at: DateTime<Utc>,
) -> Vec<u8> {
    use sequoia_openpgp::serialize::Marshal;
    let key = match case.signs {
        Component::Primary => cert.primary_key().key().clone().role_into_unspecified(),
        Component::Subkey => {
            let sub = cert.keys().subkeys().next().expect("one subkey");
            sub.key().clone().role_into_unspecified()
        }
    };
    let mut kp = key
        .parts_into_secret()
        .expect("generated with secrets")
        .into_keypair()
        .expect("keypair");
    let sig = sequoia_openpgp::packet::signature::SignatureBuilder::new(
        sequoia_openpgp::types::SignatureType::Binary,
    )
    .set_signature_creation_time(std::time::SystemTime::from(at))
    .expect("time")
    .sign_message(&mut kp, doc)
    .expect("sign");
    let mut out = Vec::new();
    let mut w =
        sequoia_openpgp::armor::Writer::new(&mut out, sequoia_openpgp::armor::Kind::Signature)
            .expect("armor");
    sequoia_openpgp::Packet::from(sig)
        .serialize(&mut w)
        .expect("serialise");
    w.finalize().expect("finalize");
    out
}

fn cert_worker_key(name: &str, cert: &sequoia_openpgp::Cert) -> WorkerKey {
    let public = cert.clone().strip_secret_key_material();
    WorkerKey {
        name: name.into(),
        key_type: KeyType::Openpgp,
        fingerprint: Some(public.fingerprint().to_hex()),
        cert: Some(
            String::from_utf8(crate::openpgp::export_cert_armored(&public).expect("export"))
                .expect("ascii"),
        ),
        public_key: None,
        valid_from: t(-100),
        valid_until: t(100),
        revocation: None,
    }
}

/// Issue 3: "the OpenPGP cert itself is valid (not expired, not revoked by its own revocation
/// signature) at the signature time per StandardPolicy". The policy itself records no
/// revocation here: only the certificate's own revocation signature, which reaches the trust
/// store when an operator updates the key's `cert` in a new policy version (v2 below).
#[test]
fn openpgp_self_revocation_table() {
    use sequoia_openpgp::types::ReasonForRevocation as R;
    let revoked_at = t(50);
    let doc = b"{\"chainOfTrustVersion\": 1}".as_slice();
    let skew = Duration::minutes(5);
    let cases = [
        (Component::Primary, Component::Primary),
        (Component::Subkey, Component::Primary),
        (Component::Subkey, Component::Subkey),
    ]
    .map(|(signs, revoked)| RevocationCase { signs, revoked });
    // (reason, hard: refuses signatures made before the revocation too)
    let reasons = [
        (R::KeyCompromised, true),
        (R::Unspecified, true),
        (R::KeyRetired, false),
        (R::KeySuperseded, false),
    ];
    struct Row {
        name: String,
        case: RevocationCase,
        hard: bool,
        original: sequoia_openpgp::Cert,
    }
    let mut rows = Vec::new();
    let mut v1_keys = Vec::new();
    let mut v2_keys = Vec::new();
    for case in cases {
        for (reason, hard) in reasons {
            let name = format!(
                "{:?}-signs-{:?}-revoked-{reason:?}",
                case.signs, case.revoked
            )
            .to_ascii_lowercase();
            let original = signing_primary_cert(&name);
            let revoked = self_revoke(original.clone(), case, reason, revoked_at);
            v1_keys.push(cert_worker_key(&name, &original));
            v2_keys.push(cert_worker_key(&name, &revoked));
            rows.push(Row {
                name,
                case,
                hard,
                original,
            });
        }
    }
    let version = |v: u64, keys: Vec<WorkerKey>| {
        let file = PolicyFile {
            version: v,
            expires: t(365),
            root: RootRole {
                threshold: 1,
                keys: vec![root_entry(0)],
            },
            workers: BTreeMap::from([("chainlock".to_owned(), keys)]),
        };
        signed(
            Policy::to_toml(&file).expect("toml").into_bytes(),
            &[0],
            t(-1),
        )
    };
    let v1 = version(1, v1_keys);
    let v2 = version(2, v2_keys);
    let pin = TrustPin {
        version: 1,
        sha256: sha256_hex(&v1.bytes),
    };
    let limits = Limits::default();
    let before_update =
        TrustStore::from_versions(&pin, std::slice::from_ref(&v1), t(0), &limits).expect("v1");
    // The operator's update carrying the revoked certificates is an ordinary, accepted version.
    let updated = TrustStore::from_versions(&pin, &[v1, v2], t(0), &limits).expect("v1 -> v2");
    assert_eq!(updated.version(), 2);
    for row in &rows {
        for (day, after_revocation) in [(10, false), (60, true)] {
            let sig = sign_with_component(&row.original, row.case, doc, t(day));
            let observed = t(day) + Duration::hours(1);
            let check = |store: &TrustStore| {
                store.verify_cot_signature(
                    "chainlock",
                    doc,
                    CotSignature::OpenPgpArmored(&sig),
                    observed,
                    skew,
                )
            };
            // Control: without the revocation signature, every one of these is accepted.
            let got = check(&before_update);
            assert!(got.is_ok(), "{} day {day} before update: {got:?}", row.name);
            let got = check(&updated);
            let refused = row.hard || after_revocation;
            if refused {
                match got {
                    Err(SignatureError::Revoked {
                        at, revoked_at: r, ..
                    }) => {
                        assert_eq!(at, t(day), "{} day {day}", row.name);
                        assert_eq!(r, revoked_at, "{} day {day}", row.name);
                    }
                    other => panic!("{} day {day}: expected Revoked, got {other:?}", row.name),
                }
            } else {
                assert!(got.is_ok(), "{} day {day}: {got:?}", row.name);
            }
        }
    }
}

/// TUF/tough `SystemTimeSteppedBackward`: the clock may lag the newest recorded evaluation
/// time by at most `max_clock_step_back` (1 hour by default).
#[test]
fn clock_step_back_table() {
    let limits = Limits::default();
    let path = Path::new("trust-state.json");
    let state = |evaluated_at: Option<DateTime<Utc>>| TrustState {
        version: 1,
        sha256: "00".repeat(32),
        evaluated_at,
    };
    let base = t(10);
    // (case, recorded evaluation time, clock now, refused)
    let rows = [
        ("old state file without the field", None, base, false),
        ("same instant", Some(base), base, false),
        (
            "clock moved forward",
            Some(base),
            base + Duration::days(3),
            false,
        ),
        (
            "30 minutes behind: NTP-sized",
            Some(base),
            base - Duration::minutes(30),
            false,
        ),
        (
            "exactly the tolerance behind",
            Some(base),
            base - Duration::hours(1),
            false,
        ),
        (
            "one second beyond the tolerance",
            Some(base),
            base - Duration::hours(1) - Duration::seconds(1),
            true,
        ),
        (
            "a month behind",
            Some(base),
            base - Duration::days(30),
            true,
        ),
    ];
    for (case, recorded, now, refused) in rows {
        let got = check_clock(&state(recorded), path, now, &limits);
        match (refused, got) {
            (false, Ok(())) => {}
            (
                true,
                Err(TrustError::ClockSteppedBack {
                    last_evaluated,
                    now: n,
                    tolerance,
                    ..
                }),
            ) => {
                assert_eq!(Some(last_evaluated), recorded, "{case}");
                assert_eq!(n, now, "{case}");
                assert_eq!(tolerance, Duration::hours(1), "{case}");
            }
            (refused, got) => panic!("{case}: refused={refused}, got {got:?}"),
        }
    }
    let wider = Limits {
        max_clock_step_back: Duration::days(31),
        ..Limits::default()
    };
    check_clock(&state(Some(base)), path, base - Duration::days(30), &wider)
        .expect("within a wider tolerance");
}

/// The state file records the newest evaluation time on every load, never moves it back,
/// refuses a load (also read-only) when the clock is behind it, and still reads files
/// written before the field existed.
#[test]
fn state_file_records_evaluation_time_and_stays_compatible() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys");
    std::fs::create_dir_all(keys.join("sigs")).expect("mkdir");
    let v1 = signed(policy_bytes(1, &[0], 1, t(365)), &[0], t(-1));
    std::fs::write(keys.join("trust.toml"), &v1.bytes).expect("write");
    std::fs::write(keys.join("sigs/root0.asc"), &v1.signatures[0]).expect("write");
    let pin = TrustPin {
        version: 1,
        sha256: sha256_hex(&v1.bytes),
    };
    let state = dir.path().join("trust-state.json");
    let limits = Limits::default();
    let recorded = || {
        TrustState::read(&state)
            .expect("read")
            .expect("present")
            .evaluated_at
    };
    // A state file from before `evaluated_at` existed.
    std::fs::write(
        &state,
        format!("{{\"version\": 1, \"sha256\": \"{}\"}}", pin.sha256),
    )
    .expect("write");
    TrustStore::load_with_state(&keys, &pin, &state, t(0), &limits).expect("old format loads");
    assert_eq!(recorded(), Some(t(0)));
    // Slightly behind: loads, the recorded time does not move back.
    let behind = t(0) - Duration::minutes(30);
    TrustStore::load_with_state(&keys, &pin, &state, behind, &limits).expect("within tolerance");
    assert_eq!(recorded(), Some(t(0)));
    // Stepped back: refused, by the worker's loader and by `config check`'s read-only one.
    let stepped = t(0) - Duration::hours(2);
    for read_only in [false, true] {
        let got = if read_only {
            TrustStore::load_with_state_read_only(&keys, &pin, &state, stepped, &limits)
        } else {
            TrustStore::load_with_state(&keys, &pin, &state, stepped, &limits)
        };
        match got {
            Err(TrustError::ClockSteppedBack {
                path,
                last_evaluated,
                now,
                ..
            }) => {
                assert_eq!(path, state);
                assert_eq!((last_evaluated, now), (t(0), stepped));
            }
            other => panic!("read_only={read_only}: {other:?}"),
        }
    }
    assert_eq!(recorded(), Some(t(0)));
    // The read-only loader never writes, even when the time would move forward.
    TrustStore::load_with_state_read_only(&keys, &pin, &state, t(1), &limits).expect("load");
    assert_eq!(recorded(), Some(t(0)));
    // Between tasks the running worker records its evaluations too.
    let store = TrustStore::load_with_state(&keys, &pin, &state, t(1), &limits).expect("load");
    assert_eq!(recorded(), Some(t(1)));
    store
        .record_evaluation(&state, t(2), &limits)
        .expect("record");
    assert_eq!(recorded(), Some(t(2)));
    let err = store
        .record_evaluation(&state, t(1), &limits)
        .expect_err("stepped back");
    assert!(
        matches!(err, TrustError::ClockSteppedBack { .. }),
        "{err:?}"
    );
    assert_eq!(recorded(), Some(t(2)));
    // The message names both times.
    let text = err.to_string();
    assert!(
        text.contains(&t(1).to_string()) && text.contains(&t(2).to_string()),
        "{text}"
    );
}
