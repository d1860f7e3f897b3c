//! `chainlock keys`: the operator's tool for the `keys/` trust store.
//!
//! Why this module exists: key rotation failed twice in scriptworker because it was a manual
//! config edit with no rule. Every change here produces a *pending* policy version N+1 that
//! only becomes current once a threshold of version N's root keys and a threshold of its own
//! have signed it (checked with the same [`crate::trust::check_transition`] the worker uses).
//! Every command says what it changed and what is still pending; changes that reduce trust
//! (retire, revoke, lowering the threshold, a rotation that schedules a retirement) print a dry
//! run unless `--yes` is given.
//!
//! What it must not do: write private keys inside `keys/` (root keys go to a directory the
//! operator names, worker keys to `--out-dir`), or make a change current without signatures.
//! This is the CLI edge, so errors are `anyhow` with context.

use crate::exit::UsageError;
use crate::openpgp;
use crate::trust::outlook::{self, Outlook, Urgency};
use crate::trust::policy::{
    KeyType, Policy, PolicyFile, Revocation, RevocationReason, RootKey, RootRole, WorkerKey,
};
use crate::trust::{self, Limits, PolicyVersion, TrustPin};
use anyhow::{Context, Result, bail};
use chrono::{DateTime, Duration, Utc};
use clap::{Args, Subcommand};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Arguments of `chainlock keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// The trust store directory (usually `keys/` in the deployment repository).
    #[arg(long = "keys", global = true, default_value = "keys")]
    pub keys_dir: PathBuf,
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
}

/// `chainlock keys ...` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create root keys and the version 1 policy (signed by all new root keys).
    Init {
        /// Where to write the root private keys (0600); must be outside the keys directory.
        #[arg(long)]
        root_key_dir: PathBuf,
        /// Names of the root keys to create (one per operator), e.g. `--root alice --root bob`.
        #[arg(long = "root", required = true)]
        roots: Vec<String>,
        /// How many root keys must sign each change.
        #[arg(long, default_value_t = 1)]
        threshold: usize,
        /// Days until the policy expires (a newer version must be signed before then).
        #[arg(long, default_value_t = 365)]
        expires_days: i64,
    },
    /// Generate a worker signing key pair (private 0600 + public certificate).
    Generate {
        /// Key name, used for file names and in the policy.
        #[arg(long)]
        name: String,
        /// Output directory for `<name>.key.asc` and `<name>.pub.asc`.
        #[arg(long)]
        out_dir: PathBuf,
        /// OpenPGP User ID (default: `chainlock worker key <name>`).
        #[arg(long)]
        user_id: Option<String>,
        /// Generate an ed25519 key instead (`[chain_of_trust] ed25519_key`, for
        /// `public/chain-of-trust.json.sig`): `<name>.ed25519.key` (base64 of the 32-byte seed,
        /// 0600) and `<name>.ed25519.pub` (base64 of the 32-byte public key).
        #[arg(long, conflicts_with = "user_id")]
        ed25519: bool,
    },
    /// Propose adding a worker key (OpenPGP certificate or ed25519 public key).
    Add {
        /// Worker implementation (`chainlock`, `scriptworker`, `generic-worker`, ...).
        #[arg(long)]
        worker_impl: String,
        /// Key name (unique in the policy).
        #[arg(long)]
        name: String,
        /// OpenPGP public certificate file.
        #[arg(long, conflicts_with = "ed25519")]
        cert: Option<PathBuf>,
        /// ed25519 public key file (base64 of 32 bytes).
        #[arg(long)]
        ed25519: Option<PathBuf>,
        /// Start of validity (RFC 3339); default now.
        #[arg(long)]
        valid_from: Option<DateTime<Utc>>,
        /// Length of validity in days.
        #[arg(long, default_value_t = 365)]
        valid_days: i64,
    },
    /// Propose retiring a key: its signatures from `--at` on are refused (earlier ones stay valid).
    Retire {
        /// Key name.
        #[arg(long)]
        name: String,
        /// When the retirement takes effect (RFC 3339); default now.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        /// Really do it (otherwise print a dry run).
        #[arg(long)]
        yes: bool,
    },
    /// Propose revoking a key; `compromised` refuses every signature it ever made.
    Revoke {
        /// Key name.
        #[arg(long)]
        name: String,
        /// `compromised`, `retired` or `superseded`.
        #[arg(long)]
        reason: String,
        /// When the revocation takes effect (RFC 3339); default now.
        #[arg(long)]
        at: Option<DateTime<Utc>>,
        /// Really do it (otherwise print a dry run).
        #[arg(long)]
        yes: bool,
    },
    /// Propose a new root threshold (lowering it needs `--yes`).
    SetThreshold {
        /// The new threshold.
        threshold: usize,
        /// Really do it when lowering.
        #[arg(long)]
        yes: bool,
    },
    /// Propose a new policy expiry, `days` from now.
    Extend {
        /// Days from now.
        #[arg(long, default_value_t = 365)]
        days: i64,
    },
    /// Sign the pending version with a root key; it becomes current once both thresholds are met.
    Sign {
        /// The root private key file (must be mode 0600).
        #[arg(long)]
        root_key: PathBuf,
    },
    /// Verify the whole policy history; exit 0 if valid, 1 if not.
    Verify {
        /// sha256 of version 1's `trust.toml` to pin (otherwise version 1 is trusted as found).
        #[arg(long)]
        pin_sha256: Option<String>,
    },
    /// List the keys per worker implementation, with status and warnings.
    List {
        /// Warn about keys or policies that expire within this many days.
        #[arg(long, default_value_t = 30)]
        horizon_days: i64,
    },
    /// Propose removing a key (worker or root) that is no longer needed. Unlike `retire`, the
    /// key's earlier signatures stop verifying too, so this is a dry run unless `--yes`; a
    /// removal that would leave the policy invalid is refused either way.
    Remove {
        /// Key name.
        #[arg(long)]
        name: String,
        /// Really do it (otherwise print a dry run).
        #[arg(long)]
        yes: bool,
    },
    /// One line per key saying what will break and when: the policy, every trusted key, and
    /// the worker's own keys if given. Exit 1 if the policy or one of the worker's own keys is
    /// already broken, 0 otherwise.
    Status {
        /// The worker's OpenPGP private key file (`[chain_of_trust] signing_key`).
        #[arg(long)]
        signing_key: Option<PathBuf>,
        /// The worker's ed25519 private key file (`[chain_of_trust] ed25519_key`).
        #[arg(long)]
        ed25519_key: Option<PathBuf>,
        /// The worker implementation the worker's own keys must be trusted for.
        #[arg(long, default_value = "chainlock")]
        worker_impl: String,
        /// The worker's config file: take `signing_key`, `ed25519_key`, `worker_impl` and
        /// `keys_dir` from its `[chain_of_trust]` (instead of these flags and `--keys`).
        #[arg(long, conflicts_with_all = ["signing_key", "ed25519_key", "worker_impl"])]
        config: Option<PathBuf>,
        /// Warn about what breaks within this many days.
        #[arg(long, default_value_t = 30)]
        horizon_days: i64,
    },
    /// Rotate a worker key: generate a new one, add it, schedule the old one's retirement.
    Rotate {
        /// Worker implementation.
        #[arg(long)]
        worker_impl: String,
        /// Name of the key being replaced.
        #[arg(long)]
        old: String,
        /// Name of the new key.
        #[arg(long)]
        new_name: String,
        /// Where to write the new private key (0600) and certificate.
        #[arg(long)]
        out_dir: PathBuf,
        /// Days the old key stays valid after now (in-flight chains keep verifying).
        #[arg(long, default_value_t = 30)]
        overlap_days: i64,
        /// Validity of the new key in days.
        #[arg(long, default_value_t = 365)]
        valid_days: i64,
        /// Really do it (otherwise print a dry run).
        #[arg(long)]
        yes: bool,
    },
}

/// Runs `chainlock keys ...`; returns the exit code.
pub fn run(args: KeysArgs) -> Result<i32> {
    use chrono::SubsecRound as _;
    let now = crate::clock::now().trunc_subsecs(0);
    let k = args.keys_dir.as_path();
    match args.command {
        KeysCommand::Init {
            root_key_dir,
            roots,
            threshold,
            expires_days,
        } => init(k, &root_key_dir, &roots, threshold, expires_days, now),
        KeysCommand::Generate {
            name,
            out_dir,
            user_id,
            ed25519,
        } => {
            if ed25519 {
                let (public_key, private, public) = generate_ed25519(&out_dir, &name)?;
                println!("generated ed25519 key {name} ({public_key})");
                println!(
                    "  private key: {} (mode 0600; deploy to the worker as [chain_of_trust] \
                     ed25519_key)",
                    private.display()
                );
                println!("  public key:  {}", public.display());
                println!(
                    "next: chainlock keys add --worker-impl chainlock --name {name} --ed25519 {} ...",
                    public.display()
                );
                return Ok(0);
            }
            let uid = user_id.unwrap_or_else(|| format!("chainlock worker key {name}"));
            let (fpr, private, public) = generate_pair(&out_dir, &name, &uid, now)?;
            println!("generated key {name} ({fpr})");
            println!(
                "  private key: {} (mode 0600; deploy to the worker)",
                private.display()
            );
            println!("  certificate: {}", public.display());
            println!(
                "next: chainlock keys add --name {name} --cert {} ...",
                public.display()
            );
            Ok(0)
        }
        KeysCommand::Add {
            worker_impl,
            name,
            cert,
            ed25519,
            valid_from,
            valid_days,
        } => {
            let from = valid_from.unwrap_or(now);
            let key = worker_key(&name, cert.as_deref(), ed25519.as_deref(), from, valid_days)?;
            edit_pending(k, now, |file| {
                add_key(file, &worker_impl, key)?;
                Ok(format!("add key {name} for {worker_impl}"))
            })
        }
        KeysCommand::Retire { name, at, yes } => {
            let at = at.unwrap_or(now);
            revoke_cmd(k, now, &name, RevocationReason::Retired, at, yes)
        }
        KeysCommand::Revoke {
            name,
            reason,
            at,
            yes,
        } => {
            let reason = match reason.as_str() {
                "compromised" => RevocationReason::Compromised,
                "retired" => RevocationReason::Retired,
                "superseded" => RevocationReason::Superseded,
                other => {
                    return Err(UsageError(format!(
                        "--reason {other:?}: expected compromised, retired or superseded"
                    ))
                    .into());
                }
            };
            revoke_cmd(k, now, &name, reason, at.unwrap_or(now), yes)
        }
        KeysCommand::SetThreshold { threshold, yes } => {
            let current = load_current(k)?;
            let old = current.file.root.threshold;
            if threshold < old && !yes {
                println!(
                    "dry run: would lower the root threshold from {old} to {threshold}; nothing \
                     written. Re-run with --yes."
                );
                return Ok(0);
            }
            edit_pending(k, now, |file| {
                file.root.threshold = threshold;
                Ok(format!("set root threshold {old} -> {threshold}"))
            })
        }
        KeysCommand::Extend { days } => edit_pending(k, now, |file| {
            file.expires = now + Duration::days(days);
            Ok(format!("set policy expiry to {}", file.expires))
        }),
        KeysCommand::Sign { root_key } => sign(k, &root_key, now),
        KeysCommand::Verify { pin_sha256 } => verify(k, pin_sha256, now),
        KeysCommand::List { horizon_days } => list(k, now, Duration::days(horizon_days)),
        KeysCommand::Remove { name, yes } => remove(k, now, &name, yes),
        KeysCommand::Status {
            config: Some(config),
            horizon_days,
            ..
        } => {
            let config = crate::config::Config::load(&config, &crate::queue::ProcessEnv)
                .map_err(|e| UsageError(e.to_string()))?;
            let cot = &config.chain_of_trust;
            status(
                &cot.keys_dir,
                now,
                OwnKeys {
                    signing_key: Some(&cot.signing_key),
                    ed25519_key: cot.ed25519_key.as_deref(),
                    worker_impl: &cot.worker_impl,
                },
                Duration::days(horizon_days),
            )
        }
        KeysCommand::Status {
            signing_key,
            ed25519_key,
            worker_impl,
            horizon_days,
            config: None,
        } => status(
            k,
            now,
            OwnKeys {
                signing_key: signing_key.as_deref(),
                ed25519_key: ed25519_key.as_deref(),
                worker_impl: &worker_impl,
            },
            Duration::days(horizon_days),
        ),
        KeysCommand::Rotate {
            worker_impl,
            old,
            new_name,
            out_dir,
            overlap_days,
            valid_days,
            yes,
        } => {
            let retire_at = now + Duration::days(overlap_days);
            if !yes {
                println!(
                    "dry run: would generate key {new_name} in {}, add it for {worker_impl} \
                     valid {now} .. {}, and retire {old} as superseded at {retire_at}. Nothing \
                     written. Re-run with --yes.",
                    out_dir.display(),
                    now + Duration::days(valid_days)
                );
                return Ok(0);
            }
            // Check the old key exists before generating anything.
            let current = load_current(k)?;
            if !current
                .file
                .workers
                .get(&worker_impl)
                .is_some_and(|keys| keys.iter().any(|key| key.name == old))
            {
                bail!("no key named {old:?} for {worker_impl}");
            }
            let uid = format!("chainlock worker key {new_name}");
            let (fpr, private, public) = generate_pair(&out_dir, &new_name, &uid, now)?;
            let key = worker_key(&new_name, Some(&public), None, now, valid_days)?;
            let code = edit_pending(k, now, |file| {
                add_key(file, &worker_impl, key)?;
                set_revocation(
                    file,
                    &old,
                    Revocation {
                        at: retire_at,
                        reason: RevocationReason::Superseded,
                    },
                )?;
                Ok(format!(
                    "add key {new_name} ({fpr}) for {worker_impl}; retire {old} as superseded \
                     at {retire_at}"
                ))
            })?;
            println!("remaining steps:");
            println!(
                "  1. deploy {} to the workers (mode 0600) before {retire_at}",
                private.display()
            );
            println!("  2. collect root signatures: chainlock keys sign --root-key <file>");
            Ok(code)
        }
    }
}

fn generate_pair(
    out_dir: &Path,
    name: &str,
    uid: &str,
    now: DateTime<Utc>,
) -> Result<(String, PathBuf, PathBuf)> {
    if !valid_name(name) {
        return Err(UsageError(format!("key name {name:?} must be [A-Za-z0-9._-]+")).into());
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let key = openpgp::generate_key(uid, now, None)?;
    let private = out_dir.join(format!("{name}.key.asc"));
    let public = out_dir.join(format!("{name}.pub.asc"));
    openpgp::write_new_key(&key, &private, &public)?;
    Ok((key.fingerprint(), private, public))
}

/// Writes `<name>.ed25519.key` (0600, created new) and `<name>.ed25519.pub` (0644, created new).
fn generate_ed25519(out_dir: &Path, name: &str) -> Result<(String, PathBuf, PathBuf)> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if !valid_name(name) {
        return Err(UsageError(format!("key name {name:?} must be [A-Za-z0-9._-]+")).into());
    }
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let key = crate::ed25519_key::Ed25519Key::generate();
    let private = out_dir.join(format!("{name}.ed25519.key"));
    let public = out_dir.join(format!("{name}.ed25519.pub"));
    key.write_new(&private)?;
    let public_key = key.public_key_base64();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&public)
        .with_context(|| format!("creating {}", public.display()))?;
    f.write_all(format!("{public_key}\n").as_bytes())
        .with_context(|| format!("writing {}", public.display()))?;
    Ok((public_key, private, public))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn worker_key(
    name: &str,
    cert: Option<&Path>,
    ed25519: Option<&Path>,
    from: DateTime<Utc>,
    valid_days: i64,
) -> Result<WorkerKey> {
    let mut key = WorkerKey {
        name: name.to_owned(),
        key_type: KeyType::Openpgp,
        fingerprint: None,
        cert: None,
        public_key: None,
        valid_from: from,
        valid_until: from + Duration::days(valid_days),
        revocation: None,
    };
    match (cert, ed25519) {
        (Some(path), None) => {
            let c = openpgp::read_cert_file(path)?;
            key.fingerprint = Some(c.fingerprint().to_hex());
            key.cert = Some(String::from_utf8(openpgp::export_cert_armored(&c)?)?);
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            trust::decode_ed25519_public_key(&text)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            key.key_type = KeyType::Ed25519;
            key.public_key = Some(text.trim().to_owned());
        }
        _ => return Err(UsageError("give exactly one of --cert or --ed25519".into()).into()),
    }
    Ok(key)
}

fn add_key(file: &mut PolicyFile, worker_impl: &str, key: WorkerKey) -> Result<()> {
    file.workers
        .entry(worker_impl.to_owned())
        .or_default()
        .push(key);
    Ok(())
}

fn set_revocation(file: &mut PolicyFile, name: &str, rev: Revocation) -> Result<()> {
    for keys in file.workers.values_mut() {
        if let Some(k) = keys.iter_mut().find(|k| k.name == name) {
            k.revocation = Some(rev);
            return Ok(());
        }
    }
    bail!("no worker key named {name:?}")
}

fn revoke_cmd(
    k: &Path,
    now: DateTime<Utc>,
    name: &str,
    reason: RevocationReason,
    at: DateTime<Utc>,
    yes: bool,
) -> Result<i32> {
    if !yes {
        let effect = if reason.is_hard() {
            "every signature it ever made will be refused".to_owned()
        } else {
            format!("its signatures made at or after {at} will be refused")
        };
        println!(
            "dry run: would revoke {name} ({}): {effect}. Nothing written. Re-run with --yes.",
            reason.as_str()
        );
        return Ok(0);
    }
    edit_pending(k, now, |file| {
        set_revocation(file, name, Revocation { at, reason })?;
        Ok(format!("revoke {name} ({}) at {at}", reason.as_str()))
    })
}

fn read_policy_file(path: &Path) -> Result<PolicyFile> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Policy::parse(&bytes)
        .with_context(|| path.display().to_string())?
        .file)
}

fn load_current(k: &Path) -> Result<Policy> {
    let bytes = std::fs::read(k.join("trust.toml")).with_context(|| {
        format!(
            "reading {}/trust.toml (run `chainlock keys init`?)",
            k.display()
        )
    })?;
    Ok(Policy::parse(&bytes)?)
}

/// The current policy, and the version a change applies to: the pending one, or a copy of the
/// current one numbered N+1.
fn pending_base(k: &Path) -> Result<(Policy, PolicyFile)> {
    let current = load_current(k)?;
    let pending_dir = k.join("pending");
    let pending_path = pending_dir.join("trust.toml");
    let file = if pending_path.exists() {
        read_policy_file(&pending_path)?
    } else {
        let mut f = current.file.clone();
        f.version = current.version() + 1;
        f
    };
    if file.version != current.version() + 1 {
        bail!(
            "pending version {} does not follow current version {}; remove {}",
            file.version,
            current.version(),
            pending_dir.display()
        );
    }
    Ok((current, file))
}

/// Applies `change` to the pending version (created from the current one if absent), writes
/// it, and discards its signatures (they were over the old bytes).
fn edit_pending(
    k: &Path,
    _now: DateTime<Utc>,
    change: impl FnOnce(&mut PolicyFile) -> Result<String>,
) -> Result<i32> {
    let (current, mut file) = pending_base(k)?;
    let pending_dir = k.join("pending");
    let pending_path = pending_dir.join("trust.toml");
    let what = change(&mut file)?;
    // Refuse to write a policy the worker would reject.
    Policy::check(file.clone())?;
    std::fs::create_dir_all(&pending_dir)?;
    std::fs::write(&pending_path, Policy::to_toml(&file)?)?;
    let sigs = pending_dir.join("sigs");
    let discarded = std::fs::read_dir(&sigs).map(|d| d.count()).unwrap_or(0);
    if sigs.exists() {
        std::fs::remove_dir_all(&sigs)?;
    }
    println!("changed: {what} (pending version {})", file.version);
    if discarded > 0 {
        println!("  discarded {discarded} signature(s) over the previous pending content");
    }
    println!(
        "pending: version {} needs {} signature(s) from version {}'s root keys and {} from its \
         own: chainlock keys sign --root-key <file>",
        file.version,
        current.file.root.threshold,
        current.version(),
        file.root.threshold
    );
    Ok(0)
}

fn init(
    k: &Path,
    root_key_dir: &Path,
    roots: &[String],
    threshold: usize,
    expires_days: i64,
    now: DateTime<Utc>,
) -> Result<i32> {
    if k.join("trust.toml").exists() {
        bail!("{}/trust.toml already exists", k.display());
    }
    std::fs::create_dir_all(k)?;
    std::fs::create_dir_all(root_key_dir)?;
    let kc = k.canonicalize()?;
    if root_key_dir.canonicalize()?.starts_with(&kc) {
        return Err(UsageError("--root-key-dir must be outside the keys directory".into()).into());
    }
    let mut keys = Vec::new();
    let mut signers = Vec::new();
    for name in roots {
        let (fpr, private, _public) = generate_pair(
            root_key_dir,
            name,
            &format!("chainlock root key {name}"),
            now,
        )?;
        let cert = openpgp::read_cert_file(&root_key_dir.join(format!("{name}.pub.asc")))?;
        keys.push(RootKey {
            name: name.clone(),
            fingerprint: fpr.clone(),
            cert: String::from_utf8(openpgp::export_cert_armored(&cert)?)?,
        });
        signers.push(private);
        println!("created root key {name} ({fpr})");
    }
    let file = PolicyFile {
        version: 1,
        expires: now + Duration::days(expires_days),
        root: RootRole { threshold, keys },
        workers: BTreeMap::new(),
    };
    Policy::check(file.clone())?;
    let bytes = Policy::to_toml(&file)?.into_bytes();
    std::fs::write(k.join("trust.toml"), &bytes)?;
    std::fs::create_dir_all(k.join("sigs"))?;
    for private in &signers {
        let key = openpgp::load_signing_key(private, now)?;
        let sig = openpgp::sign_detached_armored(&key, &bytes, now)?;
        std::fs::write(
            k.join("sigs").join(format!("{}.asc", key.fingerprint())),
            sig,
        )?;
    }
    println!(
        "wrote {}/trust.toml version 1 (threshold {threshold}), signed by {} root key(s)",
        k.display(),
        signers.len()
    );
    println!(
        "pin for the worker config: version = 1, sha256 = \"{}\"",
        trust::sha256_hex(&bytes)
    );
    println!(
        "root private keys are in {}: move them offline; they are needed only to sign changes",
        root_key_dir.display()
    );
    Ok(0)
}

fn sign(k: &Path, root_key: &Path, now: DateTime<Utc>) -> Result<i32> {
    let limits = Limits::default();
    let pending_dir = k.join("pending");
    if !pending_dir.join("trust.toml").exists() {
        bail!("nothing pending in {}", pending_dir.display());
    }
    let key = openpgp::load_signing_key(root_key, now)?;
    let current = load_current(k)?;
    let pending = trust::read_version_dir(&pending_dir, &limits)?;
    let sig = openpgp::sign_detached_armored(&key, &pending.bytes, now)?;
    std::fs::create_dir_all(pending_dir.join("sigs"))?;
    std::fs::write(
        pending_dir
            .join("sigs")
            .join(format!("{}.asc", key.fingerprint())),
        sig,
    )?;
    println!("signed pending version with {}", key.fingerprint());
    let pending = trust::read_version_dir(&pending_dir, &limits)?;
    match trust::check_transition(&current, &pending, now, &limits) {
        Ok((next, report)) => {
            promote(k, current.version())?;
            println!(
                "version {} is now current (signed by {} old and {} new root key(s)); version {} \
                 moved to history/",
                next.version(),
                report.previous_signers.map(|s| s.len()).unwrap_or(0),
                report.own_signers.len(),
                current.version()
            );
            println!(
                "new pin: version = {}, sha256 = \"{}\"",
                next.version(),
                report.sha256
            );
        }
        Err(e) => println!("still pending: {e}"),
    }
    Ok(0)
}

fn promote(k: &Path, current_version: u64) -> Result<()> {
    let hist = trust::history_dir(k, current_version);
    if hist.exists() {
        bail!("{} already exists", hist.display());
    }
    std::fs::create_dir_all(&hist)?;
    std::fs::rename(k.join("trust.toml"), hist.join("trust.toml"))?;
    if k.join("sigs").exists() {
        std::fs::rename(k.join("sigs"), hist.join("sigs"))?;
    }
    let pending = k.join("pending");
    if pending.join("sigs").exists() {
        std::fs::rename(pending.join("sigs"), k.join("sigs"))?;
    }
    std::fs::rename(pending.join("trust.toml"), k.join("trust.toml"))?;
    std::fs::remove_dir(&pending)?;
    Ok(())
}

fn read_all_versions(k: &Path, limits: &Limits) -> Result<Vec<PolicyVersion>> {
    let current = trust::read_version_dir(k, limits)?;
    let newest = Policy::parse(&current.bytes)?.version();
    let mut versions = Vec::new();
    for v in 1..newest {
        versions.push(trust::read_version_dir(&trust::history_dir(k, v), limits)?);
    }
    versions.push(current);
    Ok(versions)
}

fn verify(k: &Path, pin_sha256: Option<String>, now: DateTime<Utc>) -> Result<i32> {
    let limits = Limits::default();
    let versions = match read_all_versions(k, &limits) {
        Ok(v) => v,
        Err(e) => {
            println!("FAIL: {e:#}");
            return Ok(1);
        }
    };
    let first_sha = versions
        .first()
        .map(|v| trust::sha256_hex(&v.bytes))
        .unwrap_or_default();
    let pin = TrustPin {
        version: 1,
        sha256: pin_sha256.clone().unwrap_or(first_sha),
    };
    if pin_sha256.is_none() {
        println!("note: no --pin-sha256 given; version 1 is trusted as found on disk");
    }
    match trust::verify_history(&pin, &versions, now, &limits) {
        Ok((policy, reports)) => {
            for r in reports {
                let prev = r
                    .previous_signers
                    .map(|s| format!("{} previous-root signer(s), ", s.len()))
                    .unwrap_or_default();
                println!(
                    "ok: version {} sha256 {}: {prev}{} own root signer(s)",
                    r.version,
                    r.sha256,
                    r.own_signers.len()
                );
            }
            println!(
                "OK: version {} is current, expires {}",
                policy.version(),
                policy.file.expires
            );
            Ok(0)
        }
        Err(e) => {
            println!("FAIL: {e}");
            Ok(1)
        }
    }
}

fn list(k: &Path, now: DateTime<Utc>, horizon: Duration) -> Result<i32> {
    let current = load_current(k)?;
    let f = &current.file;
    println!(
        "policy version {} (root threshold {} of {}), expires {}",
        f.version,
        f.root.threshold,
        f.root.keys.len(),
        f.expires
    );
    if f.expires <= now + horizon {
        println!(
            "WARNING: the policy expires within {} days",
            horizon.num_days()
        );
    }
    for r in &f.root.keys {
        println!("  root {:<20} {}", r.name, r.fingerprint);
        if let Some(w) = cert_warning(&r.name, &r.cert, now, horizon) {
            println!("    {w}");
        }
    }
    for (imp, keys) in &f.workers {
        println!("{imp}:");
        println!(
            "  {:<24} {:<8} {:<44} {:<34} window",
            "name", "type", "key", "status"
        );
        for key in keys {
            let status = match key.revocation {
                Some(rev) if rev.reason.is_hard() => format!("REVOKED ({})", rev.reason.as_str()),
                Some(rev) if rev.at <= now => format!("revoked ({})", rev.reason.as_str()),
                Some(rev) => format!("retiring {}", rev.at.format("%Y-%m-%d")),
                None if now < key.valid_from => "not yet valid".into(),
                None if now >= key.valid_until => "expired".into(),
                None => "active".into(),
            };
            let kind = match key.key_type {
                KeyType::Openpgp => "openpgp",
                KeyType::Ed25519 => "ed25519",
            };
            println!(
                "  {:<24} {:<8} {:<44} {:<34} {} .. {}",
                key.name,
                kind,
                key.key_id(),
                status,
                key.valid_from.format("%Y-%m-%d"),
                key.valid_until.format("%Y-%m-%d")
            );
            if key.valid_until > now && key.valid_until <= now + horizon {
                println!(
                    "    WARNING: {} expires within {} days",
                    key.name,
                    horizon.num_days()
                );
            }
            // The certificate's own expiry, for keys that can still sign under the policy: a
            // window that outlives the certificate does not keep the key usable.
            let in_service = now < key.valid_until
                && key
                    .revocation
                    .is_none_or(|rev| !rev.reason.is_hard() && now < rev.at);
            if let (true, Some(cert)) = (in_service, &key.cert)
                && let Some(w) = cert_warning(&key.name, cert, now, horizon)
            {
                println!("    {w}");
            }
        }
    }
    if k.join("pending").join("trust.toml").exists() {
        println!("pending: a proposed next version is waiting for root signatures (keys sign)");
    }
    Ok(0)
}

/// The `keys list` warning about an OpenPGP certificate's own expiry, judged with sequoia's
/// standard policy at `now`; `None` when it signs beyond the horizon.
fn cert_warning(name: &str, cert: &str, now: DateTime<Utc>, horizon: Duration) -> Option<String> {
    let lifetime = match openpgp::parse_public_cert(cert.as_bytes()) {
        Ok(c) => openpgp::signing_lifetime(&c, now),
        Err(e) => openpgp::CertLifetime::Unusable {
            reason: e.to_string(),
        },
    };
    let o = outlook::certificate(&lifetime, now, horizon)?;
    match (o.urgency, lifetime) {
        (Urgency::Fine, _) => None,
        (Urgency::Soon, _) => Some(format!(
            "WARNING: the certificate of {name} expires within {} days ({})",
            horizon.num_days(),
            rfc3339(o.at)
        )),
        (Urgency::Broken, openpgp::CertLifetime::Unusable { reason }) => Some(format!(
            "WARNING: the certificate of {name} cannot sign: {reason}"
        )),
        (Urgency::Broken, _) => Some(format!(
            "WARNING: the certificate of {name} expired at {}: its signatures are refused",
            rfc3339(o.at)
        )),
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Takes the key `name` out of `file`: a worker key (and its implementation's entry when it
/// was the last key there) or a root key. Returns a description for the report.
fn remove_key(file: &mut PolicyFile, name: &str) -> Result<String> {
    let found = file.workers.iter().find_map(|(imp, keys)| {
        keys.iter()
            .position(|k| k.name == name)
            .map(|i| (imp.clone(), i))
    });
    if let Some((imp, i)) = found {
        let Some(keys) = file.workers.get_mut(&imp) else {
            bail!("no worker key named {name:?}");
        };
        let key = keys.remove(i);
        if keys.is_empty() {
            file.workers.remove(&imp);
        }
        return Ok(format!("worker key {name} ({}) for {imp}", key.key_id()));
    }
    if let Some(i) = file.root.keys.iter().position(|k| k.name == name) {
        let key = file.root.keys.remove(i);
        return Ok(format!("root key {name} ({})", key.fingerprint));
    }
    bail!("no key named {name:?} in the policy")
}

fn remove(k: &Path, now: DateTime<Utc>, name: &str, yes: bool) -> Result<i32> {
    // The same change on a copy first: an invalid result is refused with or without --yes.
    let (current, mut file) = pending_base(k)?;
    let still_active = file.workers.values().flatten().any(|key| {
        key.name == name
            && now < key.valid_until
            && key
                .revocation
                .is_none_or(|rev| !rev.reason.is_hard() && now < rev.at)
    });
    let removed = remove_key(&mut file, name)?;
    if let Err(e) = Policy::check(file.clone()) {
        bail!("refused: removing {removed} would leave the policy invalid: {e}");
    }
    if !yes {
        println!(
            "dry run: would remove {removed} in pending version {} (current version {}). Once \
             that version is current, signatures by it no longer verify, earlier ones \
             included. Nothing written. Re-run with --yes.",
            file.version,
            current.version()
        );
        if still_active {
            println!(
                "  note: {name} is still in service; `chainlock keys retire --name {name}` \
                 keeps its earlier signatures valid"
            );
        }
        return Ok(0);
    }
    edit_pending(k, now, |file| {
        Ok(format!("remove {}", remove_key(file, name)?))
    })
}

/// The worker's own keys for `keys status`.
struct OwnKeys<'a> {
    signing_key: Option<&'a Path>,
    ed25519_key: Option<&'a Path>,
    worker_impl: &'a str,
}

fn status_line(label: &str, o: &Outlook, now: DateTime<Utc>, consequence: &str) {
    let when = match o.urgency {
        Urgency::Broken => "passed".to_owned(),
        _ => format!("in {} days", (o.at - now).num_days()),
    };
    let start = o
        .not_before
        .map(|t| format!(" (not valid before {})", rfc3339(t)))
        .unwrap_or_default();
    println!(
        "{:<6} {label}: {} {} ({when}): {consequence}{start}",
        o.urgency.label(),
        o.cause,
        rfc3339(o.at)
    );
}

fn worker_key_lifetime(key: &WorkerKey, now: DateTime<Utc>) -> Option<openpgp::CertLifetime> {
    let cert = key.cert.as_ref()?;
    Some(match openpgp::parse_public_cert(cert.as_bytes()) {
        Ok(c) => openpgp::signing_lifetime(&c, now),
        Err(e) => openpgp::CertLifetime::Unusable {
            reason: e.to_string(),
        },
    })
}

fn status(k: &Path, now: DateTime<Utc>, own: OwnKeys<'_>, horizon: Duration) -> Result<i32> {
    let current = load_current(k)?;
    let f = &current.file;
    let policy = (f.version, f.expires);
    let p = outlook::policy(f.version, f.expires, now, horizon);
    status_line(
        &format!("policy version {}", f.version),
        &p,
        now,
        "workers stop claiming and chains stop verifying until a newer version is signed",
    );
    let mut own_broken = p.urgency == Urgency::Broken;
    for r in &f.root.keys {
        let lifetime = match openpgp::parse_public_cert(r.cert.as_bytes()) {
            Ok(c) => openpgp::signing_lifetime(&c, now),
            Err(e) => openpgp::CertLifetime::Unusable {
                reason: e.to_string(),
            },
        };
        let label = format!("root {} {}", r.name, r.fingerprint);
        match outlook::certificate(&lifetime, now, horizon) {
            Some(o) => status_line(&label, &o, now, "it can no longer sign policy changes"),
            None => println!("ok     {label}: certificate does not expire"),
        }
    }
    for (imp, keys) in &f.workers {
        for key in keys {
            let o = outlook::worker_key(
                key,
                worker_key_lifetime(key, now).as_ref(),
                policy,
                now,
                horizon,
            );
            let consequence = match o.cause {
                outlook::Cause::Compromised => "every signature it ever made is refused",
                _ => "its signatures from then on are refused",
            };
            status_line(
                &format!("{imp}/{} {}", key.name, key.key_id()),
                &o,
                now,
                consequence,
            );
        }
    }
    let own_consequence = "the worker stops claiming (its documents would not verify)";
    let trusted = f
        .workers
        .get(own.worker_impl)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(path) = own.signing_key {
        let cert = openpgp::load_signing_key_cert(path)?;
        let fpr = cert.fingerprint().to_hex();
        let label = format!("own signing key {fpr} ({})", path.display());
        match trusted.iter().find(|key| {
            key.fingerprint
                .as_deref()
                .is_some_and(|f| f.eq_ignore_ascii_case(&fpr))
        }) {
            None => {
                own_broken = true;
                println!(
                    "BROKEN {label}: not trusted for {} by policy version {}: the worker refuses \
                     to start",
                    own.worker_impl, f.version
                );
            }
            Some(key) => {
                // The key file's certificate is what signs; the policy's copy is what
                // verifiers judge. Whichever ends first ends the key.
                let mine = openpgp::signing_lifetime(&cert, now);
                let a = outlook::worker_key(key, Some(&mine), policy, now, horizon);
                let b = outlook::worker_key(
                    key,
                    worker_key_lifetime(key, now).as_ref(),
                    policy,
                    now,
                    horizon,
                );
                let o = if (b.urgency, std::cmp::Reverse(b.at))
                    > (a.urgency, std::cmp::Reverse(a.at))
                {
                    b
                } else {
                    a
                };
                own_broken |= o.urgency == Urgency::Broken;
                status_line(
                    &format!("{label} = {}/{}", own.worker_impl, key.name),
                    &o,
                    now,
                    own_consequence,
                );
            }
        }
    }
    if let Some(path) = own.ed25519_key {
        let public = crate::ed25519_key::Ed25519Key::load(path)?.public_key_base64();
        let label = format!("own ed25519 key {public} ({})", path.display());
        match trusted.iter().find(|key| {
            key.key_type == KeyType::Ed25519
                && key.public_key.as_deref().map(str::trim) == Some(public.as_str())
        }) {
            None => {
                own_broken = true;
                println!(
                    "BROKEN {label}: not trusted for {} by policy version {}: the worker refuses \
                     to start",
                    own.worker_impl, f.version
                );
            }
            Some(key) => {
                let o = outlook::worker_key(key, None, policy, now, horizon);
                own_broken |= o.urgency == Urgency::Broken;
                status_line(
                    &format!("{label} = {}/{}", own.worker_impl, key.name),
                    &o,
                    now,
                    own_consequence,
                );
            }
        }
    }
    Ok(if own_broken { 1 } else { 0 })
}
