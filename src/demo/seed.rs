//! Chain seeding: development and test tooling that builds a realistic, correctly signed chain of
//! trust at run time and publishes it on a **dev queue on loopback**.
//!
//! Why it exists: the demo, the worker's integration tests and the verifier's tests all need the
//! same thing — keys generated on the spot, a root-signed trust store, a chain policy, and a
//! decision task -> docker-image task -> build task chain whose chain-of-trust documents are
//! signed the way the real workers sign them, plus the pending signing (and push) task a chainlock
//! worker then claims. Building that by hand in every test is how fixtures drift apart; this
//! module is the one place that knows how, and it exposes the pieces ([`Link`],
//! [`cot_document`], [`task_graph`], [`Evidence`]) so tests can mutate a good chain one byte or
//! one key at a time and watch the matching check refuse it.
//!
//! What it must not do: talk to anything but the queue it is handed (the demo and tests hand it
//! a dev queue on 127.0.0.1), write outside the directory it is given, or be used to provision
//! production keys. Every key it makes is unprotected by design (a demo key), lives only in that
//! directory, and is valid for [`KEY_VALIDITY_DAYS`] days. The private keys are written with mode
//! 0600 into `private/`; the trust store in `keys/` holds public material only.

use crate::chain_policy::{ChainPolicy, PolicyError};
use crate::cot::CotError;
use crate::ids::TaskId;
use crate::openpgp::{self, OpenPgpError, SigningKey};
use crate::queue::types::{
    ClaimWorkRequest, CreateArtifactRequest, CreateArtifactResponse, format_time,
};
use crate::queue::{Credentials, QueueClient, QueueError};
use crate::trust::policy::{KeyType, Policy, PolicyFile, RootKey, RootRole, WorkerKey};
use crate::trust::{self, TrustError, TrustPin, TrustStore};
use base64::Engine as _;
use chrono::{DateTime, Duration, SubsecRound as _, Utc};
use ed25519_dalek::Signer as _;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// Provisioner id of every demo queue.
pub const PROVISIONER: &str = "chainlock-demo";
/// Queue of the decision task (generic-worker, kind `decision`).
pub const DECISION_QUEUE: &str = "chainlock-demo/decision";
/// Queue of the docker-image task (generic-worker, kind `docker-image`).
pub const IMAGES_QUEUE: &str = "chainlock-demo/images";
/// Queue of the build task (generic-worker, kind `build`).
pub const BUILD_QUEUE: &str = "chainlock-demo/build";
/// Queue of the signing task (chainlock, kind `signing`).
pub const SIGNING_QUEUE: &str = "chainlock-demo/signing";
/// Queue of the push task (chainlock, kind `push`).
pub const PUSH_QUEUE: &str = "chainlock-demo/push";
/// The repository every demo task claims to come from (the chain policy trusts it).
pub const REPOSITORY: &str = "https://github.com/example/product";
/// The branch of the demo decision task (restricted scopes require `release/*`).
pub const BRANCH: &str = "release/1.0";
/// The revision of the demo decision task.
pub const REVISION: &str = "0123456789abcdef0123456789abcdef01234567";
/// Cert scope prefix of the sign script.
pub const CERT_SCOPE_PREFIX: &str = "project:releng:signing:cert:";
/// Release key name selected by the signing task's cert scope.
pub const CERT_NAME: &str = "release-signing";
/// Bucket scope prefix of the push script.
pub const BUCKET_SCOPE_PREFIX: &str = "project:releng:push:bucket:";
/// Destination name selected by the push task's bucket scope.
pub const BUCKET_NAME: &str = "demo-releases";
/// The build task's real artifact (a small ustar archive, gzip-compressed).
pub const BUILD_ARTIFACT: &str = "public/build/target.tar.gz";
/// The docker-image task's artifact.
pub const IMAGE_ARTIFACT: &str = "public/image.tar.zst";
/// The decision task's graph.
pub const TASK_GRAPH: &str = "public/task-graph.json";
/// Every worker's chain-of-trust document.
pub const COT_DOCUMENT: &str = "public/chain-of-trust.json";
/// Raw ed25519 signature of generic-worker / docker-worker documents.
pub const COT_ED25519_SIGNATURE: &str = "public/chain-of-trust.json.sig";
/// Armored OpenPGP signature of chainlock documents.
pub const COT_OPENPGP_SIGNATURE: &str = "public/chain-of-trust.json.asc";
/// Worker implementation name of chainlock in the trust store and chain policy.
pub const CHAINLOCK_IMPL: &str = "chainlock";
/// Worker implementation name of the decision/build workers.
pub const GENERIC_WORKER_IMPL: &str = "generic-worker";
/// How long the generated keys and the trust policy stay valid.
pub const KEY_VALIDITY_DAYS: i64 = 30;
/// Number of demo root keys (and the threshold: every root must sign).
pub const ROOT_KEYS: usize = 2;

const PAYLOAD_SIGN_SCHEMA: &str = include_str!("../../schemas/payload/sign.schema.json");
const PAYLOAD_PUSH_SCHEMA: &str = include_str!("../../schemas/payload/push.schema.json");

/// Why seeding failed. Each variant names the file, task or step involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SeedError {
    /// A file or directory could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Key generation, loading or signing failed.
    #[error(transparent)]
    OpenPgp(#[from] OpenPgpError),
    /// The generated trust store does not load (a defect of this module).
    #[error("generated trust store: {0}")]
    Trust(#[from] TrustError),
    /// The generated chain policy does not parse (a defect of this module).
    #[error("generated chain policy: {0}")]
    ChainPolicy(#[from] PolicyError),
    /// A chain-of-trust document could not be serialised.
    #[error(transparent)]
    Cot(#[from] CotError),
    /// A queue call failed.
    #[error("{step} for task {task_id}: {source}")]
    Queue {
        /// What was being done (`createTask`, `claimWork`, ...).
        step: &'static str,
        /// The task.
        task_id: TaskId,
        /// The queue error (boxed: it is large and this is a cold path).
        source: Box<QueueError>,
    },
    /// claimWork on a link's queue returned nothing.
    #[error("claimWork on {task_queue_id} did not hand out task {task_id}")]
    NotClaimable {
        /// The queue.
        task_queue_id: String,
        /// The task that should have been pending there.
        task_id: TaskId,
    },
    /// claimWork handed out another task (the queue is shared with other pending work).
    #[error("claimWork on {task_queue_id} handed out {claimed}, expected {expected}")]
    ClaimedOther {
        /// The queue.
        task_queue_id: String,
        /// The task we meant to run.
        expected: TaskId,
        /// The task we got.
        claimed: TaskId,
    },
    /// createArtifact answered with another storage type than the `s3` we asked for.
    #[error("createArtifact {name} of {task_id}: the queue did not return a putUrl")]
    NoPutUrl {
        /// The task.
        task_id: TaskId,
        /// The artifact.
        name: String,
    },
    /// A mutation named a file the evidence does not hold.
    #[error("evidence of {task_id} has no file {name}")]
    NoSuchFile {
        /// The task.
        task_id: TaskId,
        /// The artifact.
        name: String,
    },
    /// A link's definition lacks `provisionerId`/`workerType`.
    #[error("task {task_id}: definition has no provisionerId/workerType")]
    NoQueue {
        /// The task.
        task_id: TaskId,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SeedError + '_ {
    move |source| SeedError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Writes `bytes` to a new file readable only by its owner.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SeedError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), SeedError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(path, bytes).map_err(io(path))
}

fn create_dir(path: &Path) -> Result<(), SeedError> {
    std::fs::create_dir_all(path).map_err(io(path))
}

// ---------------------------------------------------------------------------------------------
// Keys, trust store, chain policy.

/// Keys, trust store and chain policy generated into one directory.
///
/// Layout: `keys/` (the trust store: `trust.toml` version 1 + `sigs/<FPR>.asc` from both root
/// keys), `private/` (mode 0700: root keys, the chainlock worker key, the release key, the
/// generic-worker ed25519 seed; all 0600), `public/` (the matching certificates and the ed25519
/// public key), `chain-policy.toml`.
pub struct Material {
    /// The directory everything was written to.
    pub dir: PathBuf,
    /// The trust store (`keys/`).
    pub keys_dir: PathBuf,
    /// Pin of version 1 of the trust store.
    pub pin: TrustPin,
    /// The chain policy file.
    pub chain_policy: PathBuf,
    /// The demo repository's host: `.taskcluster.yml` and the commit answer of every seeded
    /// chain, as GitHub would serve them (the dev queue's `sources_dir`, see
    /// [`Material::serve_sources_from`]).
    pub sources_dir: PathBuf,
    /// Fingerprints of the root keys.
    pub root_fingerprints: Vec<String>,
    /// The chainlock worker's chain-of-trust key (private, 0600).
    pub worker_key: PathBuf,
    /// Its public certificate.
    pub worker_cert: PathBuf,
    /// Its primary fingerprint.
    pub worker_fingerprint: String,
    /// The sign script's release key (private, 0600), selected by the cert scope [`CERT_NAME`].
    pub release_key: PathBuf,
    /// Its public certificate.
    pub release_cert: PathBuf,
    /// Its primary fingerprint.
    pub release_fingerprint: String,
    /// The generic-worker ed25519 public key, base64 (as listed in the trust store).
    pub generic_worker_public: String,
    /// Start of every key's validity window (an hour before generation, whole seconds).
    pub valid_from: DateTime<Utc>,
    /// End of every key's validity window and expiry of the trust policy.
    pub valid_until: DateTime<Utc>,
    worker: SigningKey,
    generic_worker: ed25519_dalek::SigningKey,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("dir", &self.dir)
            .field("pin", &self.pin)
            .field("worker_fingerprint", &self.worker_fingerprint)
            .field("release_fingerprint", &self.release_fingerprint)
            .field("generic_worker_public", &self.generic_worker_public)
            .finish_non_exhaustive()
    }
}

impl Material {
    /// Generates everything into `dir` (created; must not already hold generated keys) at time
    /// `now`: [`ROOT_KEYS`] root keys with threshold [`ROOT_KEYS`], the chainlock worker key, the
    /// generic-worker ed25519 key and the release key; the root-signed trust store version 1
    /// listing the worker key under [`CHAINLOCK_IMPL`] and the ed25519 key under
    /// [`GENERIC_WORKER_IMPL`]; and the chain policy.
    pub fn generate(dir: &Path, now: DateTime<Utc>) -> Result<Material, SeedError> {
        use std::os::unix::fs::PermissionsExt as _;
        // OpenPGP stores whole seconds; an hour of slack keeps every signature made "now" (by
        // this process or a worker with a slightly different clock) inside the windows.
        let valid_from = now.trunc_subsecs(0) - Duration::hours(1);
        let valid_until = valid_from + Duration::days(KEY_VALIDITY_DAYS);
        create_dir(dir)?;
        let private = dir.join("private");
        let public = dir.join("public");
        create_dir(&private)?;
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700))
            .map_err(io(&private))?;
        create_dir(&public)?;

        let new_pgp =
            |name: &str, uid: &str| -> Result<(SigningKey, PathBuf, PathBuf), SeedError> {
                let key = openpgp::generate_key(uid, valid_from, None)?;
                let sk = private.join(format!("{name}.key.asc"));
                let pk = public.join(format!("{name}.pub.asc"));
                openpgp::write_new_key(&key, &sk, &pk)?;
                Ok((key, sk, pk))
            };
        let mut roots = Vec::new();
        for i in 1..=ROOT_KEYS {
            let (key, _, _) = new_pgp(
                &format!("root-{i}"),
                &format!("chainlock demo root {i} <root-{i}@demo.invalid>"),
            )?;
            roots.push(key);
        }
        let (worker, worker_key, worker_cert) = new_pgp(
            "chainlock-worker",
            "chainlock demo worker <worker@demo.invalid>",
        )?;
        let (release, release_key, release_cert) = new_pgp(
            CERT_NAME,
            "chainlock demo release signing <release@demo.invalid>",
        )?;
        let generic_worker = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        let generic_worker_public = b64(&generic_worker.verifying_key().to_bytes());
        write_private(
            &private.join("generic-worker.ed25519.key"),
            b64(&generic_worker.to_bytes()).as_bytes(),
        )?;
        write_file(
            &public.join("generic-worker.ed25519.pub"),
            format!("{generic_worker_public}\n").as_bytes(),
        )?;

        let mut workers = BTreeMap::new();
        workers.insert(
            CHAINLOCK_IMPL.to_owned(),
            vec![WorkerKey {
                name: "chainlock-demo-worker".into(),
                key_type: KeyType::Openpgp,
                fingerprint: Some(worker.fingerprint()),
                cert: Some(armored_string(&worker)?),
                public_key: None,
                valid_from,
                valid_until,
                revocation: None,
            }],
        );
        workers.insert(
            GENERIC_WORKER_IMPL.to_owned(),
            vec![WorkerKey {
                name: "generic-worker-demo".into(),
                key_type: KeyType::Ed25519,
                fingerprint: None,
                cert: None,
                public_key: Some(generic_worker_public.clone()),
                valid_from,
                valid_until,
                revocation: None,
            }],
        );
        let file = PolicyFile {
            version: 1,
            expires: valid_until,
            root: RootRole {
                threshold: ROOT_KEYS,
                keys: roots
                    .iter()
                    .enumerate()
                    .map(|(i, k)| {
                        Ok(RootKey {
                            name: format!("root-{}", i + 1),
                            fingerprint: k.fingerprint(),
                            cert: armored_string(k)?,
                        })
                    })
                    .collect::<Result<_, SeedError>>()?,
            },
            workers,
        };
        // The same check `chainlock keys` applies before it writes a policy.
        Policy::check(file.clone())?;
        let bytes = Policy::to_toml(&file)?.into_bytes();
        let keys_dir = dir.join("keys");
        write_file(&keys_dir.join("trust.toml"), &bytes)?;
        for root in &roots {
            let sig = openpgp::sign_detached_armored(root, &bytes, valid_from)?;
            write_file(
                &keys_dir
                    .join("sigs")
                    .join(format!("{}.asc", root.fingerprint())),
                &sig,
            )?;
        }
        let pin = TrustPin {
            version: 1,
            sha256: trust::sha256_hex(&bytes),
        };
        // Load it back exactly as the worker will: proves the threshold is met.
        TrustStore::load(&keys_dir, &pin, now, &trust::Limits::default())?;

        let chain_policy = dir.join("chain-policy.toml");
        let text = chain_policy_toml(None);
        ChainPolicy::from_toml(&text)?;
        write_file(&chain_policy, text.as_bytes())?;
        let sources_dir = dir.join("sources");
        create_dir(&sources_dir)?;

        Ok(Material {
            sources_dir,
            dir: dir.to_path_buf(),
            keys_dir,
            pin,
            chain_policy,
            root_fingerprints: roots.iter().map(SigningKey::fingerprint).collect(),
            worker_key,
            worker_cert,
            worker_fingerprint: worker.fingerprint(),
            release_key,
            release_cert,
            release_fingerprint: release.fingerprint(),
            generic_worker_public,
            valid_from,
            valid_until,
            worker,
            generic_worker,
        })
    }

    /// The trust store as a worker loads it (walking from [`Material::pin`]) at `now`.
    pub fn trust_store(&self, now: DateTime<Utc>) -> Result<TrustStore, SeedError> {
        Ok(TrustStore::load(
            &self.keys_dir,
            &self.pin,
            now,
            &trust::Limits::default(),
        )?)
    }

    /// Rewrites the chain policy so that the demo repository's decision tasks must rebuild
    /// from the `.taskcluster.yml` served at `<root_url>/sources/` (a dev queue whose
    /// `sources_dir` is [`Material::sources_dir`]): check `decision-rebuild` then runs for real.
    pub fn serve_sources_from(&self, root_url: &str) -> Result<(), SeedError> {
        let text = chain_policy_toml(Some(root_url.trim_end_matches('/')));
        ChainPolicy::from_toml(&text)?;
        write_file(&self.chain_policy, text.as_bytes())
    }

    /// The chain policy.
    pub fn chain_policy(&self) -> Result<ChainPolicy, SeedError> {
        Ok(ChainPolicy::load(&self.chain_policy)?)
    }

    /// The generic-worker key that signs decision, docker-image and build documents.
    pub fn generic_worker_key(&self) -> &ed25519_dalek::SigningKey {
        &self.generic_worker
    }

    /// The chainlock worker key (what a chainlock worker signs its documents with).
    pub fn worker_signing_key(&self) -> &SigningKey {
        &self.worker
    }
}

fn armored_string(key: &SigningKey) -> Result<String, SeedError> {
    let bytes = key.public_cert_armored()?;
    // Armor is ASCII by construction.
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The demo chain policy: decision/docker-image/build queues on generic-worker, signing/push
/// queues on chainlock; cert and bucket scopes restricted to [`REPOSITORY`] (`release/*`).
pub fn chain_policy_toml(sources_root: Option<&str>) -> String {
    let rebuild = match sources_root {
        Some(root) => format!(
            r#"
# Decision tasks re-render from the repository's .taskcluster.yml at their revision, served
# over loopback by the dev queue's source host (stand-in for raw.githubusercontent.com and
# api.github.com).
[repositories.rebuild]
vcs = "git"
env_prefix = "PRODUCT"
template_url = "{root}/sources/github.com/example/product/raw/{{revision}}/.taskcluster.yml"
commit_url = "{root}/sources/api.github.com/repos/example/product/commits/{{revision}}"
level = "3"
tasks_for = ["github-push"]

[rebuild]
required = true
"#
        ),
        None => "\n# No source host yet: decision-rebuild passes with a caveat.\n[rebuild]\nrequired = false\n"
            .to_owned(),
    };
    format!(
        r#"# chainlock demo chain policy (generated by `chainlock demo`; see
# etc/chain-policy.example.toml for every key explained).
version = 1

[worker_implementations.{CHAINLOCK_IMPL}]
signature = "openpgp"

[worker_implementations.{GENERIC_WORKER_IMPL}]
signature = "ed25519"

[[queues]]
task_queue_id = "{DECISION_QUEUE}"
worker_implementation = "{GENERIC_WORKER_IMPL}"
kind = "decision"

[[queues]]
task_queue_id = "{IMAGES_QUEUE}"
worker_implementation = "{GENERIC_WORKER_IMPL}"
kind = "docker-image"

[[queues]]
task_queue_id = "{BUILD_QUEUE}"
worker_implementation = "{GENERIC_WORKER_IMPL}"
kind = "build"

[[queues]]
task_queue_id = "{SIGNING_QUEUE}"
worker_implementation = "{CHAINLOCK_IMPL}"
kind = "signing"

[[queues]]
task_queue_id = "{PUSH_QUEUE}"
worker_implementation = "{CHAINLOCK_IMPL}"
kind = "push"

[[repositories]]
alias = "product"
url = "{REPOSITORY}"
branches = ["main", "release/*"]
{rebuild}
[[restricted_scopes]]
scope = "{CERT_SCOPE_PREFIX}*"
repositories = ["product"]
branches = ["release/*"]

[[restricted_scopes]]
scope = "{BUCKET_SCOPE_PREFIX}*"
repositories = ["product"]
branches = ["release/*"]

[untrusted]
pull_request_tasks_for = ["github-pull-request", "github-pull-request-untrusted"]
repositories = ["https://github.com/example/product-try"]
scheduler_ids = ["example-level-1"]

[docker]
prebuilt_image_kinds = ["decision"]
"#
    )
}

// ---------------------------------------------------------------------------------------------
// Links, documents, graphs.

/// How a link signs its chain-of-trust document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signer {
    /// generic-worker: raw ed25519 `public/chain-of-trust.json.sig`.
    GenericWorker,
    /// chainlock: armored OpenPGP `public/chain-of-trust.json.asc`.
    Chainlock,
}

/// One task of a chain: its definition, who signs it, what it outputs.
#[derive(Debug, Clone)]
pub struct Link {
    /// The task id.
    pub id: TaskId,
    /// The definition (after [`Chain::create`], exactly as the queue stores it).
    pub def: Value,
    /// Who signs its document.
    pub signer: Signer,
    /// Artifacts it uploads, besides its document and signature (name -> bytes).
    pub outputs: BTreeMap<String, Vec<u8>>,
    /// The document's `environment` (e.g. `imageArtifactHash` of a docker task).
    pub environment: Value,
}

impl Link {
    /// `<provisionerId>/<workerType>` from the definition.
    pub fn task_queue_id(&self) -> Result<String, SeedError> {
        match (
            self.def.get("provisionerId").and_then(Value::as_str),
            self.def.get("workerType").and_then(Value::as_str),
        ) {
            (Some(p), Some(w)) => Ok(format!("{p}/{w}")),
            _ => Err(SeedError::NoQueue {
                task_id: self.id.clone(),
            }),
        }
    }
}

/// Which run of which worker produced a document.
#[derive(Debug, Clone, Copy)]
pub struct RunIdentity<'a> {
    /// The run.
    pub run_id: u32,
    /// Worker group.
    pub worker_group: &'a str,
    /// Worker id.
    pub worker_id: &'a str,
}

/// The identity the seeder's stand-in workers use.
pub const SEED_RUN: RunIdentity<'static> = RunIdentity {
    run_id: 0,
    worker_group: "demo-wg",
    worker_id: "demo-worker-1",
};

/// sha256 (lowercase hex).
pub fn sha256_hex(bytes: &[u8]) -> String {
    trust::sha256_hex(bytes)
}

/// The chain-of-trust document (version 1, canonical JSON) a worker writes for `link` after
/// uploading `artifacts`.
pub fn cot_document(
    link: &Link,
    artifacts: &BTreeMap<String, Vec<u8>>,
    run: RunIdentity<'_>,
) -> Result<Vec<u8>, SeedError> {
    let listed: serde_json::Map<String, Value> = artifacts
        .iter()
        .map(|(k, v)| (k.clone(), json!({"sha256": sha256_hex(v)})))
        .collect();
    let doc = json!({
        "chainOfTrustVersion": 1,
        "artifacts": listed,
        "task": link.def,
        "taskId": link.id.as_str(),
        "runId": run.run_id,
        "workerGroup": run.worker_group,
        "workerId": run.worker_id,
        "workerType": link.def.get("workerType").cloned().unwrap_or(Value::Null),
        "environment": link.environment,
    });
    Ok(crate::cot::to_canonical_json(&doc)?)
}

/// A key to sign a document with.
#[derive(Debug, Clone, Copy)]
pub enum DocumentKey<'a> {
    /// Raw ed25519 (generic-worker, docker-worker).
    Ed25519(&'a ed25519_dalek::SigningKey),
    /// OpenPGP (chainlock), with the signature creation time.
    OpenPgp(&'a SigningKey, DateTime<Utc>),
}

/// Signs a document; returns the signature artifact's name and bytes.
pub fn sign_document(
    doc: &[u8],
    key: DocumentKey<'_>,
) -> Result<(&'static str, Vec<u8>), SeedError> {
    Ok(match key {
        DocumentKey::Ed25519(k) => (COT_ED25519_SIGNATURE, k.sign(doc).to_bytes().to_vec()),
        DocumentKey::OpenPgp(k, at) => (
            COT_OPENPGP_SIGNATURE,
            openpgp::sign_detached_armored(k, doc, at)?,
        ),
    })
}

/// Everything `link` uploads: its outputs, `extra` (e.g. the task graph), its document and the
/// document's signature.
pub fn evidence_files(
    link: &Link,
    extra: BTreeMap<String, Vec<u8>>,
    run: RunIdentity<'_>,
    key: DocumentKey<'_>,
) -> Result<BTreeMap<String, Vec<u8>>, SeedError> {
    let mut files = link.outputs.clone();
    files.extend(extra);
    let doc = cot_document(link, &files, run)?;
    let (sig_name, sig) = sign_document(&doc, key)?;
    files.insert(sig_name.to_owned(), sig);
    files.insert(COT_DOCUMENT.to_owned(), doc);
    Ok(files)
}

/// The decision task's `task-graph.json`: every child's definition keyed by task id, written
/// as taskgraph writes it (no `taskGroupId`/`schedulerId`/`taskQueueId`, expiries as
/// `{"relative-datestamp": "<n> seconds"}` relative to the task's `created`).
pub fn task_graph(children: &[&Link]) -> Value {
    let mut graph = serde_json::Map::new();
    for link in children {
        let mut task = link.def.clone();
        let created = task
            .get("created")
            .and_then(Value::as_str)
            .and_then(|c| DateTime::parse_from_rfc3339(c).ok())
            .map(|c| c.with_timezone(&Utc));
        let relative = |v: &mut Value| {
            let (Some(created), Some(at)) = (
                created,
                v.as_str()
                    .and_then(|s| DateTime::parse_from_rfc3339(s).ok()),
            ) else {
                return;
            };
            let secs = (at.with_timezone(&Utc) - created).num_seconds();
            if secs >= 0 {
                *v = json!({"relative-datestamp": format!("{secs} seconds")});
            }
        };
        if let Some(e) = task.get_mut("expires") {
            relative(e);
        }
        if let Some(arts) = task
            .pointer_mut("/payload/artifacts")
            .and_then(Value::as_array_mut)
        {
            for a in arts {
                if let Some(e) = a.get_mut("expires") {
                    relative(e);
                }
            }
        }
        if let Some(o) = task.as_object_mut() {
            o.remove("taskGroupId");
            o.remove("schedulerId");
            o.remove("taskQueueId");
        }
        let label = link
            .def
            .pointer("/metadata/name")
            .cloned()
            .unwrap_or(Value::Null);
        graph.insert(link.id.to_string(), json!({"label": label, "task": task}));
    }
    Value::Object(graph)
}

/// A small but real gzip-compressed ustar archive holding one text file.
pub fn build_tarball(file_name: &str, content: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut header = [0u8; 512];
    let name = file_name.as_bytes();
    let n = name.len().min(99);
    header[..n].copy_from_slice(name.get(..n).unwrap_or_default());
    fn put(header: &mut [u8; 512], at: usize, text: &str) {
        let bytes = text.as_bytes();
        // Offsets and lengths below are the fixed ustar field layout, all inside 512 bytes.
        if let Some(dst) = header.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
    put(&mut header, 100, "0000644\0");
    put(&mut header, 108, "0001750\0");
    put(&mut header, 116, "0001750\0");
    put(&mut header, 124, &format!("{:011o}\0", content.len()));
    put(&mut header, 136, "00000000000\0");
    put(&mut header, 156, "0");
    put(&mut header, 257, "ustar\0");
    put(&mut header, 263, "00");
    put(&mut header, 148, "        ");
    let sum: u32 = header.iter().map(|b| u32::from(*b)).sum();
    put(&mut header, 148, &format!("{sum:06o}\0 "));
    let mut tar = header.to_vec();
    tar.extend_from_slice(content);
    tar.resize(tar.len().div_ceil(512) * 512 + 1024, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&tar);
    gz.finish().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// The demo chain.

/// Which optional links the chain has.
#[derive(Debug, Clone, Copy)]
pub struct ChainOptions {
    /// A docker-image task whose image the build runs in (default true).
    pub docker_image: bool,
    /// A push task downstream of the signing task (default true).
    pub push: bool,
}

impl Default for ChainOptions {
    fn default() -> Self {
        ChainOptions {
            docker_image: true,
            push: true,
        }
    }
}

/// decision -> [docker-image ->] build -> signing (pending, for a chainlock worker)
/// [-> push (pending until signing completes)].
#[derive(Debug, Clone)]
pub struct Chain {
    /// The decision task (generic-worker), publishes `public/task-graph.json`.
    pub decision: Link,
    /// The docker-image task (generic-worker).
    pub docker_image: Option<Link>,
    /// The build task (generic-worker), publishes [`BUILD_ARTIFACT`].
    pub build: Link,
    /// The signing task for a chainlock worker on [`SIGNING_QUEUE`].
    pub signing: Link,
    /// The push task for a chainlock worker on [`PUSH_QUEUE`].
    pub push: Option<Link>,
    /// Further signing tasks of the same graph, each the signing task under its own id (a
    /// release signs many things from one decision task; [`Chain::add_signing_tasks`]).
    pub more_signing: Vec<Link>,
}

fn repo_env() -> Value {
    json!({
        "PRODUCT_HEAD_REPOSITORY": REPOSITORY,
        "PRODUCT_HEAD_BRANCH": BRANCH,
        "PRODUCT_HEAD_REV": REVISION,
    })
}

/// A realistic task definition on `<PROVISIONER>/<worker_type>` in the group of `group`.
pub fn task_definition(
    group: &TaskId,
    worker_type: &str,
    name: &str,
    now: DateTime<Utc>,
    scopes: &[String],
    payload: Value,
) -> Value {
    json!({
        "provisionerId": PROVISIONER,
        "workerType": worker_type,
        "taskQueueId": format!("{PROVISIONER}/{worker_type}"),
        "schedulerId": "demo-level-3",
        "projectId": "none",
        "taskGroupId": group.as_str(),
        "dependencies": [],
        "requires": "all-completed",
        "routes": [],
        "priority": "lowest",
        "retries": 0,
        "created": format_time(now),
        "deadline": format_time(now + Duration::hours(2)),
        "expires": format_time(now + Duration::days(KEY_VALIDITY_DAYS)),
        "scopes": scopes,
        "payload": payload,
        "metadata": {
            "name": name,
            "description": format!("chainlock demo: {name}"),
            "owner": "release@example.invalid",
            "source": format!("{REPOSITORY}/raw/{REVISION}/.taskcluster.yml"),
        },
        "tags": {},
        "extra": {"tasks_for": "github-push"},
    })
}

fn worker_type(queue: &str) -> &str {
    queue.split_once('/').map(|(_, w)| w).unwrap_or(queue)
}

impl Chain {
    /// A fresh chain (new task ids) with definitions created at `now` (whole seconds).
    pub fn new(now: DateTime<Utc>, options: ChainOptions) -> Chain {
        let now = now.trunc_subsecs(0);
        let d_id = TaskId::generate();
        let decision = Link {
            id: d_id.clone(),
            def: task_definition(
                &d_id,
                worker_type(DECISION_QUEUE),
                "Decision Task",
                now,
                &[],
                json!({
                    "image": format!("example/decision@sha256:{}", "ab".repeat(32)),
                    "env": repo_env(),
                }),
            ),
            signer: Signer::GenericWorker,
            outputs: BTreeMap::new(),
            environment: json!({"instanceType": "demo"}),
        };
        let docker_image = options.docker_image.then(|| {
            let id = TaskId::generate();
            let image = b"demo docker image layers (zstd tarball stand-in)\n".to_vec();
            Link {
                id,
                def: task_definition(
                    &d_id,
                    worker_type(IMAGES_QUEUE),
                    "docker-image-build",
                    now,
                    &[],
                    json!({"env": repo_env()}),
                ),
                signer: Signer::GenericWorker,
                outputs: BTreeMap::from([(IMAGE_ARTIFACT.to_owned(), image)]),
                environment: json!({}),
            }
        });
        let b_id = TaskId::generate();
        let mut b_def = task_definition(
            &d_id,
            worker_type(BUILD_QUEUE),
            "build-linux64/opt",
            now,
            &[],
            json!({
                "env": repo_env(),
                "features": {"chainOfTrust": true},
                "artifacts": [{
                    "expires": format_time(now + Duration::days(KEY_VALIDITY_DAYS)),
                    "path": "public/build",
                    "type": "directory",
                }],
            }),
        );
        let mut environment = json!({});
        if let Some(i) = &docker_image {
            b_def["payload"]["image"] =
                json!({"type": "task-image", "taskId": i.id.as_str(), "path": IMAGE_ARTIFACT});
            b_def["dependencies"] = json!([i.id.as_str()]);
            b_def["extra"]["chainOfTrust"] = json!({"inputs": {"docker-image": i.id.as_str()}});
            if let Some(image) = i.outputs.get(IMAGE_ARTIFACT) {
                environment = json!({"imageArtifactHash": format!("sha256:{}", sha256_hex(image))});
            }
        }
        let tarball = build_tarball(
            "target/README.txt",
            b"chainlock demo build output: pretend this is firefox-linux64.\n",
        );
        let build = Link {
            id: b_id.clone(),
            def: b_def,
            signer: Signer::GenericWorker,
            outputs: BTreeMap::from([(BUILD_ARTIFACT.to_owned(), tarball)]),
            environment,
        };

        let s_id = TaskId::generate();
        let mut s_def = task_definition(
            &d_id,
            worker_type(SIGNING_QUEUE),
            "signing-linux64/opt",
            now,
            &[format!("{CERT_SCOPE_PREFIX}{CERT_NAME}")],
            json!({
                "maxRunTime": 600,
                "upstreamArtifacts": [{
                    "taskId": b_id.as_str(),
                    "taskType": "build",
                    "paths": [BUILD_ARTIFACT],
                    "formats": ["gpg"],
                }],
            }),
        );
        s_def["dependencies"] = json!([b_id.as_str()]);
        let signing = Link {
            id: s_id.clone(),
            def: s_def,
            signer: Signer::Chainlock,
            outputs: BTreeMap::new(),
            environment: json!({}),
        };
        let push = options.push.then(|| {
            let p_id = TaskId::generate();
            let mut p_def = task_definition(
                &d_id,
                worker_type(PUSH_QUEUE),
                "push-linux64/opt",
                now,
                &[format!("{BUCKET_SCOPE_PREFIX}{BUCKET_NAME}")],
                json!({
                    "maxRunTime": 600,
                    "product": "product",
                    "version": "1.0",
                    "platform": "linux64",
                    "upstreamArtifacts": [
                        {"taskId": b_id.as_str(), "taskType": "build", "paths": [BUILD_ARTIFACT]},
                        {
                            "taskId": s_id.as_str(),
                            "taskType": "signing",
                            "paths": [format!("{BUILD_ARTIFACT}.asc")],
                        },
                    ],
                }),
            );
            p_def["dependencies"] = json!([s_id.as_str(), b_id.as_str()]);
            Link {
                id: p_id,
                def: p_def,
                signer: Signer::Chainlock,
                outputs: BTreeMap::new(),
                environment: json!({}),
            }
        });
        Chain {
            decision,
            docker_image,
            build,
            signing,
            push,
            more_signing: Vec::new(),
        }
    }

    /// Adds `n` more signing tasks to the graph, copies of the signing task under new ids
    /// (before [`Chain::create`]).
    pub fn add_signing_tasks(&mut self, n: usize) {
        for _ in 0..n {
            let mut link = self.signing.clone();
            link.id = TaskId::generate();
            self.more_signing.push(link);
        }
    }

    /// Every link, decision first.
    pub fn links(&self) -> Vec<&Link> {
        let mut v = vec![&self.decision];
        v.extend(self.docker_image.as_ref());
        v.push(&self.build);
        v.push(&self.signing);
        v.extend(&self.more_signing);
        v.extend(self.push.as_ref());
        v
    }

    fn links_mut(&mut self) -> Vec<&mut Link> {
        let mut v = vec![&mut self.decision];
        v.extend(self.docker_image.as_mut());
        v.push(&mut self.build);
        v.push(&mut self.signing);
        v.extend(&mut self.more_signing);
        v.extend(self.push.as_mut());
        v
    }

    /// The links the seeder runs itself (decision, docker-image, build), in run order.
    pub fn upstream(&self) -> Vec<&Link> {
        let mut v = vec![&self.decision];
        v.extend(self.docker_image.as_ref());
        v.push(&self.build);
        v
    }

    /// The decision task's graph over every other link (as created).
    pub fn graph(&self) -> Value {
        let children: Vec<&Link> = self.links().into_iter().skip(1).collect();
        task_graph(&children)
    }

    /// Creates every task on the queue (children before the decision runs, as a decision task
    /// does) and takes the stored definitions back, so documents and the graph embed exactly
    /// what the queue serves.
    pub async fn create(&mut self, client: &QueueClient) -> Result<(), SeedError> {
        for link in self.links_mut() {
            let q = |step| {
                let task_id = link.id.clone();
                move |source| SeedError::Queue {
                    step,
                    task_id,
                    source: Box::new(source),
                }
            };
            client
                .create_task(&link.id, &link.def)
                .await
                .map_err(q("createTask"))?;
            link.def = client.task(&link.id).await.map_err(q("task"))?;
        }
        Ok(())
    }

    /// The decision task's revision (`PRODUCT_HEAD_REV`; [`REVISION`] unless changed with
    /// [`Chain::set_revision`]).
    pub fn revision(&self) -> String {
        self.decision
            .def
            .pointer("/payload/env/PRODUCT_HEAD_REV")
            .and_then(Value::as_str)
            .unwrap_or(REVISION)
            .to_owned()
    }

    /// Moves the decision task to another revision (before [`Chain::create`]): its
    /// `PRODUCT_HEAD_REV` and `metadata.source`.
    pub fn set_revision(&mut self, revision: &str) {
        let old = self.revision();
        let def = &mut self.decision.def;
        def["payload"]["env"]["PRODUCT_HEAD_REV"] = json!(revision);
        if let Some(s) = def.pointer("/metadata/source").and_then(Value::as_str) {
            let s = s.replace(&old, revision);
            def["metadata"]["source"] = json!(s);
        }
    }

    /// The demo repository's `.taskcluster.yml` at [`REVISION`] for this chain: a json-e
    /// template rendering exactly the decision task (times from `now`, ids from `ownTaskId`).
    pub fn taskcluster_yml(&self) -> Value {
        // The revision appears in the definition (env, metadata.source): the template names
        // it as the push's `event.after`, so it renders the same task at any revision.
        fn generic(v: &mut Value, rev: &str) {
            match v {
                Value::String(s) if !rev.is_empty() && s.contains(rev) => {
                    *s = s.replace(rev, "${event.after}");
                }
                Value::Array(a) => a.iter_mut().for_each(|x| generic(x, rev)),
                Value::Object(m) => m.values_mut().for_each(|x| generic(x, rev)),
                _ => {}
            }
        }
        let mut t = self.decision.def.clone();
        generic(&mut t, &self.revision());
        t["taskId"] = json!("${ownTaskId}");
        t["taskGroupId"] = json!("${ownTaskId}");
        t["created"] = json!({"$fromNow": ""});
        t["deadline"] = json!({"$fromNow": "2 hours"});
        t["expires"] = json!({"$fromNow": format!("{KEY_VALIDITY_DAYS} days")});
        t["extra"]["tasks_for"] = json!("${tasks_for}");
        json!({"version": 1, "tasks": [t]})
    }

    /// Writes what the repository host serves for this chain into `dir` (the template and
    /// GitHub's commit answer for [`REVISION`]).
    pub fn write_sources(&self, dir: &Path) -> Result<(), SeedError> {
        let revision = self.revision();
        let template = dir
            .join("github.com/example/product/raw")
            .join(&revision)
            .join(".taskcluster.yml");
        let yml = serde_json::to_vec_pretty(&self.taskcluster_yml()).unwrap_or_default();
        write_file(&template, &yml)?;
        let commit = dir
            .join("api.github.com/repos/example/product/commits")
            .join(&revision);
        let answer = json!({"sha": revision, "committer": {"login": "release-bot"}});
        write_file(&commit, answer.to_string().as_bytes())
    }

    /// The signed evidence of the upstream links, signed with `material`'s generic-worker key;
    /// also writes the repository's sources
    /// ([`Chain::write_sources`]) into [`Material::sources_dir`], as its host would serve them.
    pub fn evidence(&self, material: &Material) -> Result<Evidence, SeedError> {
        self.write_sources(&material.sources_dir)?;
        let graph = serde_json::to_vec_pretty(&self.graph()).unwrap_or_default();
        let mut files = BTreeMap::new();
        for link in self.upstream() {
            let extra = if link.id == self.decision.id {
                BTreeMap::from([(TASK_GRAPH.to_owned(), graph.clone())])
            } else {
                BTreeMap::new()
            };
            let key = match link.signer {
                Signer::GenericWorker => DocumentKey::Ed25519(material.generic_worker_key()),
                Signer::Chainlock => {
                    DocumentKey::OpenPgp(material.worker_signing_key(), crate::clock::now())
                }
            };
            files.insert(link.id.clone(), evidence_files(link, extra, SEED_RUN, key)?);
        }
        Ok(Evidence { files })
    }

    /// Runs each upstream link as its worker would (claim on its queue, upload `evidence`,
    /// complete), in order. `scratch` holds the files while they upload.
    pub async fn publish(
        &self,
        client: &QueueClient,
        evidence: &Evidence,
        scratch: &Path,
    ) -> Result<(), SeedError> {
        for link in self.upstream() {
            let files = evidence.files.get(&link.id).cloned().unwrap_or_default();
            run_as_worker(client, link, &files, SEED_RUN, scratch).await?;
        }
        Ok(())
    }
}

/// The files each upstream link uploads, keyed by task id. Mutate before
/// [`Chain::publish`] to build a bad chain.
#[derive(Debug, Clone)]
pub struct Evidence {
    /// task id -> artifact name -> bytes.
    pub files: BTreeMap<TaskId, BTreeMap<String, Vec<u8>>>,
}

impl Evidence {
    /// One file, for editing.
    pub fn file_mut(&mut self, task_id: &TaskId, name: &str) -> Result<&mut Vec<u8>, SeedError> {
        self.files
            .get_mut(task_id)
            .and_then(|f| f.get_mut(name))
            .ok_or_else(|| SeedError::NoSuchFile {
                task_id: task_id.clone(),
                name: name.to_owned(),
            })
    }

    /// Flips one bit of the first byte of a file (its document still lists the old hash).
    pub fn tamper_byte(&mut self, task_id: &TaskId, name: &str) -> Result<(), SeedError> {
        let file = self.file_mut(task_id, name)?;
        match file.first_mut() {
            Some(b) => *b ^= 1,
            None => file.push(0),
        }
        Ok(())
    }

    /// Re-signs a generic-worker link's document with `key` (e.g. a key nobody trusts).
    pub fn resign_ed25519(
        &mut self,
        task_id: &TaskId,
        key: &ed25519_dalek::SigningKey,
    ) -> Result<(), SeedError> {
        let doc = self.file_mut(task_id, COT_DOCUMENT)?.clone();
        *self.file_mut(task_id, COT_ED25519_SIGNATURE)? = key.sign(&doc).to_bytes().to_vec();
        Ok(())
    }

    /// Re-signs a generic-worker link's document with a freshly generated, untrusted key.
    pub fn sign_with_unknown_key(&mut self, task_id: &TaskId) -> Result<(), SeedError> {
        let key = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
        self.resign_ed25519(task_id, &key)
    }

    /// Drops a file (the link will not upload it: a 404 downstream).
    pub fn remove(&mut self, task_id: &TaskId, name: &str) -> Result<Vec<u8>, SeedError> {
        self.files
            .get_mut(task_id)
            .and_then(|f| f.remove(name))
            .ok_or_else(|| SeedError::NoSuchFile {
                task_id: task_id.clone(),
                name: name.to_owned(),
            })
    }
}

/// Claims `link` on its queue as worker `run`, uploads `files` (JSON gzip-encoded on the wire,
/// as workers do), and reports it completed. Fails with [`SeedError::ClaimedOther`] if the
/// queue hands out another task (then that task stays claimed: use a queue with no other
/// pending work on these task queues).
pub async fn run_as_worker(
    client: &QueueClient,
    link: &Link,
    files: &BTreeMap<String, Vec<u8>>,
    run: RunIdentity<'_>,
    scratch: &Path,
) -> Result<(), SeedError> {
    let task_queue_id = link.task_queue_id()?;
    let q = |step| {
        let task_id = link.id.clone();
        move |source| SeedError::Queue {
            step,
            task_id,
            source: Box::new(source),
        }
    };
    let claim = client
        .claim_work(
            &task_queue_id,
            &ClaimWorkRequest {
                worker_group: run.worker_group.into(),
                worker_id: run.worker_id.into(),
                tasks: 1,
            },
        )
        .await
        .map_err(q("claimWork"))?
        .tasks
        .pop()
        .ok_or_else(|| SeedError::NotClaimable {
            task_queue_id: task_queue_id.clone(),
            task_id: link.id.clone(),
        })?;
    if claim.status.task_id != link.id {
        return Err(SeedError::ClaimedOther {
            task_queue_id,
            expected: link.id.clone(),
            claimed: claim.status.task_id,
        });
    }
    let tq = client.with_credentials(Credentials::from_task_credentials(&claim.credentials));
    create_dir(scratch)?;
    let src = scratch.join(format!("upload-{}", link.id));
    for (name, bytes) in files {
        write_file(&src, bytes)?;
        let content_type = if name.ends_with(".json") {
            "application/json"
        } else if name.ends_with(".asc") {
            "text/plain"
        } else {
            "application/octet-stream"
        };
        let resp = tq
            .create_artifact(
                &link.id,
                claim.run_id,
                name,
                &CreateArtifactRequest::S3 {
                    expires: claim.status.expires,
                    content_type: content_type.into(),
                    content_length: u64::try_from(bytes.len()).ok(),
                },
            )
            .await
            .map_err(q("createArtifact"))?;
        let CreateArtifactResponse::S3 { put_url, .. } = resp else {
            return Err(SeedError::NoPutUrl {
                task_id: link.id.clone(),
                name: name.clone(),
            });
        };
        tq.upload_file(&put_url, &src, content_type, name.ends_with(".json"))
            .await
            .map_err(q("upload"))?;
    }
    let _ = std::fs::remove_file(&src);
    tq.report_completed(&link.id, claim.run_id)
        .await
        .map_err(q("reportCompleted"))?;
    Ok(())
}

/// Everything in one call: a fresh [`Chain`], created on the queue, its upstream links run and
/// published with good signatures. The signing (and push) task is left pending for a chainlock
/// worker.
pub async fn seed_chain(
    client: &QueueClient,
    material: &Material,
    now: DateTime<Utc>,
    options: ChainOptions,
    scratch: &Path,
) -> Result<Chain, SeedError> {
    let mut chain = Chain::new(now, options);
    chain.create(client).await?;
    let evidence = chain.evidence(material)?;
    chain.publish(client, &evidence, scratch).await?;
    Ok(chain)
}

// ---------------------------------------------------------------------------------------------
// Worker configuration.

/// The script a worker config runs.
#[derive(Debug, Clone)]
pub enum Script {
    /// `chainlock script sign` with a generated `sign.toml` (release key [`CERT_NAME`]).
    Sign,
    /// `chainlock script push` with a generated `push.toml` publishing to
    /// `file://<dir>/published` (destination [`BUCKET_NAME`]).
    Push,
    /// An arbitrary argv (validated by the worker against the sign payload schema and cert
    /// scope prefix).
    Argv(Vec<String>),
}

/// What to write a worker configuration for.
#[derive(Debug, Clone)]
pub struct WorkerSpec<'a> {
    /// Subdirectory of [`Material::dir`] for this worker's files (`signing`, `push`, ...).
    pub name: &'a str,
    /// The queue's root URL.
    pub root_url: &'a str,
    /// The worker's task queue ([`SIGNING_QUEUE`], [`PUSH_QUEUE`]).
    pub task_queue_id: &'a str,
    /// Permanent credentials (written to a 0600 `credentials.json`).
    pub credentials: &'a Credentials,
    /// The `chainlock` binary the scripts run as (`argv[0]` of `script sign|push`).
    pub chainlock_exe: &'a Path,
    /// The script.
    pub script: Script,
    /// How the script is isolated.
    pub isolation: SeedIsolation,
}

/// The isolation a seeded worker config asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeedIsolation {
    /// `isolation = "none"` (not root, or no user namespaces).
    None,
    /// `isolation = "namespaces"` with this `run_as`; the script's config, the payload schemas
    /// and (push) the published directory are made visible, the release key through
    /// `scope_files`.
    Namespaces(crate::config::RunAs),
}

impl SeedIsolation {
    /// The strongest level this host provides (`slot` picks a distinct uid per worker).
    pub async fn strongest(slot: u32) -> SeedIsolation {
        let run_as = crate::sandbox::dev_run_as(slot);
        if crate::sandbox::namespaces_available(run_as).await {
            SeedIsolation::Namespaces(run_as)
        } else {
            SeedIsolation::None
        }
    }

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SeedIsolation::None => "none",
            SeedIsolation::Namespaces(_) => "namespaces",
        }
    }
}

/// Paths of a written worker configuration.
#[derive(Debug, Clone)]
pub struct WorkerFiles {
    /// The worker config (`<dir>/<name>/worker.toml`).
    pub config: PathBuf,
    /// The script's own config (`sign.toml` / `push.toml`), if any.
    pub script_config: Option<PathBuf>,
    /// The worker's work area.
    pub work_dir: PathBuf,
    /// The worker's task logs.
    pub log_dir: PathBuf,
    /// Where the push script publishes (`<dir>/published`), for [`Script::Push`].
    pub published_dir: Option<PathBuf>,
}

fn toml_text(value: &toml::Table) -> String {
    // A table of strings, integers, arrays and tables always serialises.
    toml::to_string_pretty(value).unwrap_or_default()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl Material {
    /// Writes a complete worker configuration (and the script's configuration, payload schemas
    /// and credentials) pointing at this material's keys, trust store and policy.
    pub fn write_worker_config(&self, spec: &WorkerSpec<'_>) -> Result<WorkerFiles, SeedError> {
        let base = self.dir.join(spec.name);
        create_dir(&base)?;
        let schemas = self.dir.join("schemas").join("payload");
        let sign_schema = schemas.join("sign.schema.json");
        let push_schema = schemas.join("push.schema.json");
        write_file(&sign_schema, PAYLOAD_SIGN_SCHEMA.as_bytes())?;
        write_file(&push_schema, PAYLOAD_PUSH_SCHEMA.as_bytes())?;

        let credentials = base.join("credentials.json");
        let creds = json!({
            "clientId": spec.credentials.client_id,
            "accessToken": spec.credentials.access_token.expose(),
        });
        if credentials.exists() {
            std::fs::remove_file(&credentials).map_err(io(&credentials))?;
        }
        write_private(&credentials, creds.to_string().as_bytes())?;

        // The sandboxed scripts run as another uid: give them a binary they can reach (the
        // build's own may sit below a directory only its owner may enter).
        let exe = match spec.isolation {
            SeedIsolation::Namespaces(_) => {
                let placed = base.join("chainlock");
                crate::sandbox::place_executable(spec.chainlock_exe, &placed).map_err(|e| {
                    SeedError::Io {
                        path: placed.clone(),
                        source: std::io::Error::other(e.to_string()),
                    }
                })?;
                path_str(&placed)
            }
            SeedIsolation::None => path_str(spec.chainlock_exe),
        };
        let mut published_dir = None;
        let (argv, script_config, payload_schema, scope_prefix) = match &spec.script {
            Script::Sign => {
                let path = base.join("sign.toml");
                let mut keys = toml::Table::new();
                keys.insert(CERT_NAME.into(), path_str(&self.release_key).into());
                let mut t = toml::Table::new();
                t.insert("payload_schema".into(), path_str(&sign_schema).into());
                t.insert("scope_prefix".into(), CERT_SCOPE_PREFIX.into());
                t.insert("parallelism".into(), 2.into());
                t.insert("checksums_dir".into(), "public".into());
                t.insert("keys".into(), keys.into());
                write_file(&path, toml_text(&t).as_bytes())?;
                let argv = vec![
                    exe,
                    "script".into(),
                    "sign".into(),
                    "--config".into(),
                    path_str(&path),
                ];
                (argv, Some(path), sign_schema, CERT_SCOPE_PREFIX)
            }
            Script::Push => {
                let path = base.join("push.toml");
                let published = self.dir.join("published");
                create_dir(&published)?;
                let mut dest = toml::Table::new();
                dest.insert(
                    "url".into(),
                    format!("file://{}", path_str(&published)).into(),
                );
                dest.insert("overwrite".into(), false.into());
                let mut dests = toml::Table::new();
                dests.insert(BUCKET_NAME.into(), dest.into());
                let mut t = toml::Table::new();
                t.insert("payload_schema".into(), path_str(&push_schema).into());
                t.insert("scope_prefix".into(), BUCKET_SCOPE_PREFIX.into());
                t.insert(
                    "path_template".into(),
                    "pub/{product}/candidates/{version}/{platform}/{name}".into(),
                );
                t.insert(
                    "allowed_task_types".into(),
                    toml::Value::Array(vec!["build".into(), "signing".into()]),
                );
                t.insert("parallelism".into(), 2.into());
                t.insert("destinations".into(), dests.into());
                write_file(&path, toml_text(&t).as_bytes())?;
                published_dir = Some(published);
                let argv = vec![
                    exe,
                    "script".into(),
                    "push".into(),
                    "--config".into(),
                    path_str(&path),
                ];
                (argv, Some(path), push_schema, BUCKET_SCOPE_PREFIX)
            }
            Script::Argv(argv) => (argv.clone(), None, sign_schema, CERT_SCOPE_PREFIX),
        };
        let allowed_scope = if scope_prefix == BUCKET_SCOPE_PREFIX {
            BUCKET_NAME
        } else {
            CERT_NAME
        };

        let work_dir = base.join("work");
        let log_dir = base.join("logs");
        let mut t = toml::Table::new();
        let mut queue = toml::Table::new();
        queue.insert("root_url".into(), spec.root_url.into());
        queue.insert("task_queue_id".into(), spec.task_queue_id.into());
        queue.insert("worker_group".into(), "demo".into());
        queue.insert("worker_id".into(), format!("demo-{}", spec.name).into());
        t.insert("queue".into(), queue.into());
        let mut creds_t = toml::Table::new();
        creds_t.insert("file".into(), path_str(&credentials).into());
        t.insert("credentials".into(), creds_t.into());
        let mut paths = toml::Table::new();
        paths.insert("work_dir".into(), path_str(&work_dir).into());
        paths.insert("log_dir".into(), path_str(&log_dir).into());
        t.insert("paths".into(), paths.into());
        let mut script = toml::Table::new();
        script.insert(
            "argv".into(),
            toml::Value::Array(argv.into_iter().map(toml::Value::from).collect()),
        );
        script.insert("timeout_secs".into(), 600.into());
        script.insert("isolation".into(), spec.isolation.as_str().into());
        if let SeedIsolation::Namespaces(run_as) = spec.isolation {
            let mut r = toml::Table::new();
            r.insert("uid".into(), i64::from(run_as.uid).into());
            r.insert("gid".into(), i64::from(run_as.gid).into());
            script.insert("run_as".into(), r.into());
            let mut ro = vec![toml::Value::from(path_str(&schemas))];
            if let Some(sc) = &script_config {
                ro.push(path_str(sc).into());
            }
            script.insert("ro_paths".into(), toml::Value::Array(ro));
            if let Some(published) = &published_dir {
                std::os::unix::fs::chown(published, Some(run_as.uid), Some(run_as.gid))
                    .map_err(io(published))?;
                script.insert(
                    "rw_paths".into(),
                    toml::Value::Array(vec![path_str(published).into()]),
                );
            }
            if matches!(spec.script, Script::Sign) {
                let mut files = toml::Table::new();
                files.insert(
                    CERT_NAME.into(),
                    toml::Value::Array(vec![path_str(&self.release_key).into()]),
                );
                script.insert("scope_files".into(), files.into());
            }
        }
        script.insert("kill_grace_secs".into(), 5.into());
        script.insert(
            "env_allowlist".into(),
            toml::Value::Array(vec!["PATH".into(), "LANG".into()]),
        );
        t.insert("script".into(), script.into());
        let mut timing = toml::Table::new();
        timing.insert("poll_interval_secs".into(), 1.into());
        timing.insert("backoff_max_secs".into(), 5.into());
        t.insert("timing".into(), timing.into());
        let mut task = toml::Table::new();
        task.insert("payload_schema".into(), path_str(&payload_schema).into());
        task.insert("scope_prefix".into(), scope_prefix.into());
        task.insert(
            "allowed_scopes".into(),
            toml::Value::Array(vec![allowed_scope.into()]),
        );
        t.insert("task".into(), task.into());
        let mut cot = toml::Table::new();
        cot.insert("signing_key".into(), path_str(&self.worker_key).into());
        cot.insert("worker_impl".into(), CHAINLOCK_IMPL.into());
        cot.insert("keys_dir".into(), path_str(&self.keys_dir).into());
        cot.insert(
            "pinned_version".into(),
            i64::try_from(self.pin.version).unwrap_or(i64::MAX).into(),
        );
        cot.insert("pinned_sha256".into(), self.pin.sha256.clone().into());
        cot.insert(
            "state_file".into(),
            path_str(&base.join("trust-state.json")).into(),
        );
        cot.insert("max_clock_skew_seconds".into(), 300.into());
        t.insert("chain_of_trust".into(), cot.into());
        let mut verify = toml::Table::new();
        verify.insert("policy".into(), path_str(&self.chain_policy).into());
        t.insert("verify".into(), verify.into());

        let config = base.join("worker.toml");
        let header = format!(
            "# chainlock worker config generated by the demo seeding (dev queue only).\n\
             # Validate with: chainlock config check {}\n",
            config.display()
        );
        write_file(&config, format!("{header}{}", toml_text(&t)).as_bytes())?;
        Ok(WorkerFiles {
            config,
            script_config,
            work_dir,
            log_dir,
            published_dir,
        })
    }
}
