//! Script isolation: how the one fixed script is contained, and the proof that it was.
//!
//! Why it exists: the script acts on release artifacts next to a worker that holds Taskcluster
//! credentials and an OpenPGP signing key. Three promises rest on this module: the script cannot
//! read or swap the worker's secrets, nothing it starts outlives its run, and nothing it left can
//! touch the next run. Each rests on something the kernel enforces, never on a best-effort walk
//! of process groups:
//!
//! - `namespaces`: `setpriv` drops to the dedicated `run_as` uid/gid (no supplementary groups,
//!   no inheritable capabilities), then bubblewrap puts the script in new user, PID, mount, IPC
//!   and UTS namespaces (network too unless `network = true`), on an empty root with read-only
//!   system directories, the run's work and artifact directories, its verified `cot/` and
//!   `task.json` read-only, the operator's `ro_paths`/`rw_paths`, and only the files of
//!   `scope_files` that the task's validated scope selects. When the script exits, bubblewrap's
//!   init exits and the kernel kills everything left in the PID namespace. `--die-with-parent`
//!   kills it all if the worker dies.
//! - `uid`: `setpriv` alone (`--no-new-privs`, `--pdeathsig KILL`): the host filesystem as that
//!   uid sees it. Containment is the uid: after every run one `kill(-1, SIGKILL)` sent *by that
//!   uid* ([`reap_uid`]) kills every process it owns, atomically with respect to `fork`.
//! - `none`: the worker's uid; a process group kill and, in `chainlock run` (a child
//!   subreaper, [`Sandbox::adopt_orphans`]), every orphan that came back to the worker. The
//!   script can read every secret of the worker. Warned for every task.
//!
//! After every run, for `uid` and `namespaces`, [`Sandbox::contain`] kills every process of the
//! uid and then checks `/proc` until none is alive; if one survives the worker stops claiming
//! (fail closed). The same sweep runs at start-up, before the first claim, so a worker killed
//! with SIGKILL cannot leave a script of its own behind for the next one.
//!
//! [`Sandbox::probe`] starts a sandboxed no-op (`chainlock sandbox-probe`) and checks what it
//! can see and who it is; start-up and `chainlock config check` refuse a level the host does not
//! actually provide.
//!
//! What it must not do: start anything but the operator's argv (wrapped), its own probe and its
//! own reaper; or decide anything from task data.

pub mod procs;

use crate::config::{Isolation, RunAs, ScriptConfig};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// System directories made visible read-only (or re-created as the host's symlinks).
const SYSTEM_DIRS: [&str; 7] = [
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Files of `/etc` a program may need to start, resolve names and check TLS; nothing else of
/// `/etc` (where the worker's own configuration usually lives) is visible.
const ETC_FILES: [&str; 15] = [
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/host.conf",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/pki",
    "/etc/alternatives",
];

/// How long the sweep waits for SIGKILLed processes to be gone.
const SWEEP_DEADLINE: Duration = Duration::from_secs(10);

/// Why the sandbox could not be set up, or did not hold.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    /// A tool the level needs is missing.
    #[error("{what} {path} is not an executable file ({reason}); install it or set [script] {key}")]
    MissingTool {
        /// `bubblewrap`, `setpriv`.
        what: &'static str,
        /// The configured key.
        key: &'static str,
        /// The path looked at.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The probe or the reaper could not be started or did not answer.
    #[error("sandbox {what}: {reason}")]
    Helper {
        /// `probe`, `reaper`.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// Processes of the script's uid are still alive after the sweep.
    #[error(
        "{} process(es) of the script's uid {uid} still alive after SIGKILL (pids {pids:?}): \
         refusing to go on",
        pids.len()
    )]
    Survivors {
        /// The uid.
        uid: u32,
        /// Their pids.
        pids: Vec<i32>,
    },
    /// Preparing a directory for the sandbox failed.
    #[error("sandbox: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SandboxError {
    let path = path.to_owned();
    move |source| SandboxError::Io { op, path, source }
}

/// What one run may see besides the system (namespaces) and who it runs as.
#[derive(Debug, Clone, Default)]
pub struct RunView {
    /// The script's cwd and `CHAINLOCK_WORK_DIR` (writable).
    pub work: PathBuf,
    /// `CHAINLOCK_ARTIFACT_DIR` (writable).
    pub artifacts: PathBuf,
    /// Paths inside `work` made read-only on top (`cot/`, `task.json`).
    pub read_only: Vec<PathBuf>,
    /// `(copy on the host, path in the sandbox)`: the scope's files.
    pub files: Vec<(PathBuf, PathBuf)>,
}

/// The configured isolation, ready to wrap argvs. Built once at start-up.
#[derive(Debug, Clone)]
pub struct Sandbox {
    level: Isolation,
    run_as: Option<RunAs>,
    ro_paths: Vec<PathBuf>,
    rw_paths: Vec<PathBuf>,
    network: bool,
    bwrap: PathBuf,
    setpriv: PathBuf,
    /// The chainlock binary (probe and reaper).
    exe: PathBuf,
    /// This process is a child subreaper and treats every child tokio does not own as an
    /// orphan of a script ([`Sandbox::adopt_orphans`]).
    adopts_orphans: bool,
}

impl Sandbox {
    /// From `[script]`; checks that the tools the level needs exist.
    pub fn from_config(script: &ScriptConfig) -> Result<Sandbox, SandboxError> {
        let exe = std::env::current_exe().map_err(|e| SandboxError::Helper {
            what: "self",
            reason: format!("cannot find the chainlock binary: {e}"),
        })?;
        let sandbox = Sandbox {
            level: script.isolation,
            run_as: script.run_as,
            ro_paths: script.ro_paths.clone(),
            rw_paths: script.rw_paths.clone(),
            network: script.network,
            bwrap: script.bwrap.clone(),
            setpriv: script.setpriv.clone(),
            exe,
            adopts_orphans: false,
        };
        if sandbox.level != Isolation::None {
            check_tool("setpriv", "setpriv", &sandbox.setpriv)?;
        }
        if sandbox.level == Isolation::Namespaces {
            check_tool("bubblewrap", "bwrap", &sandbox.bwrap)?;
        }
        Ok(sandbox)
    }

    /// `isolation = "none"`: the script runs as the worker, only the environment is clean.
    pub fn none() -> Sandbox {
        Sandbox {
            level: Isolation::None,
            run_as: None,
            ro_paths: Vec::new(),
            rw_paths: Vec::new(),
            network: true,
            bwrap: PathBuf::new(),
            setpriv: PathBuf::new(),
            exe: PathBuf::new(),
            adopts_orphans: false,
        }
    }

    /// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): orphans of a script
    /// that ran without a PID namespace come back to it, and [`Sandbox::contain`] kills and
    /// reaps every child of this process that tokio does not own. Only for a process whose
    /// every other child is a script's (`chainlock run`), never for a library embedding the
    /// worker next to children of its own (the demo, tests).
    pub fn adopt_orphans(&mut self) -> Result<(), SandboxError> {
        nix::sys::prctl::set_child_subreaper(true).map_err(|e| SandboxError::Helper {
            what: "subreaper",
            reason: e.to_string(),
        })?;
        self.adopts_orphans = true;
        Ok(())
    }

    /// Makes the chainlock binary (the probe and the reaper, run as `run_as`) reachable from
    /// `dir`, whose parents the script's uid can traverse: the binary itself may sit below a
    /// directory only the worker may enter (a 0700 checkout, `/root`). A hard link where the
    /// file system allows it (no copy of a large binary), else a copy, mode 0555. Nothing to do
    /// for `none`.
    pub fn install_helper(&mut self, dir: &Path) -> Result<(), SandboxError> {
        if self.level == Isolation::None {
            return Ok(());
        }
        let dest = dir.join(HELPER_FILE);
        place_executable(&self.exe, &dest)?;
        self.exe = dest;
        Ok(())
    }

    /// The configured level.
    pub fn level(&self) -> Isolation {
        self.level
    }

    /// The script's uid/gid, if not the worker's.
    pub fn run_as(&self) -> Option<RunAs> {
        self.run_as
    }

    /// The complete argv that starts `argv` under this isolation for `view`.
    pub fn wrap(&self, argv: &[String], view: &RunView) -> Vec<String> {
        let Some(run_as) = self.run_as.filter(|_| self.level != Isolation::None) else {
            return argv.to_vec();
        };
        let s = |p: &Path| p.to_string_lossy().into_owned();
        let mut out = vec![
            s(&self.setpriv),
            format!("--reuid={}", run_as.uid),
            format!("--regid={}", run_as.gid),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
        ];
        if self.level == Isolation::Uid {
            out.extend([
                "--no-new-privs".into(),
                "--pdeathsig=KILL".into(),
                "--".into(),
            ]);
            out.extend(argv.iter().cloned());
            return out;
        }
        out.push("--".into());
        out.push(s(&self.bwrap));
        let (uid, gid) = (run_as.uid.to_string(), run_as.gid.to_string());
        for a in [
            "--unshare-user",
            "--uid",
            &uid,
            "--gid",
            &gid,
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
            "--unshare-cgroup-try",
            "--disable-userns",
            "--die-with-parent",
            "--new-session",
            "--hostname",
            "chainlock-script",
        ] {
            out.push(a.to_owned());
        }
        if !self.network {
            out.push("--unshare-net".into());
        }
        let mut bind = |flag: &str, src: &Path, dest: &Path| {
            out.extend([flag.to_owned(), s(src), s(dest)]);
        };
        let mut system: Vec<PathBuf> = Vec::new();
        for dir in SYSTEM_DIRS {
            let p = Path::new(dir);
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => {
                    if let Ok(target) = std::fs::read_link(p) {
                        bind("--symlink", &target, p);
                    }
                }
                Ok(m) if m.is_dir() => {
                    bind("--ro-bind", p, p);
                    system.push(p.to_owned());
                }
                _ => {}
            }
        }
        for f in ETC_FILES {
            bind("--ro-bind-try", Path::new(f), Path::new(f));
        }
        out.extend(
            ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
                .iter()
                .map(|a| (*a).to_owned()),
        );
        let mut bind = |flag: &str, src: &Path, dest: &Path| {
            out.extend([flag.to_owned(), s(src), s(dest)]);
        };
        for p in &self.ro_paths {
            bind("--ro-bind", p, p);
        }
        for p in &self.rw_paths {
            bind("--bind", p, p);
        }
        bind("--bind", &view.work, &view.work);
        bind("--bind", &view.artifacts, &view.artifacts);
        for p in &view.read_only {
            bind("--ro-bind", p, p);
        }
        for (src, dest) in &view.files {
            bind("--ro-bind", src, dest);
        }
        // The program itself, when it lives outside the system directories.
        if let Some(program) = argv.first().map(PathBuf::from)
            && !system.iter().any(|d| program.starts_with(d))
            && !self.ro_paths.iter().any(|d| program.starts_with(d))
        {
            bind("--ro-bind", &program, &program);
        }
        out.extend(["--chdir".into(), s(&view.work), "--".into()]);
        out.extend(argv.iter().cloned());
        out
    }

    /// After a run (and at start-up): makes sure nothing of any script run is alive. For `uid`
    /// and `namespaces`, kills every process of the script's uid and waits until `/proc` shows
    /// none; [`SandboxError::Survivors`] if one is still alive after [`SWEEP_DEADLINE`]. For
    /// `none`, kills `pgid` and every orphan the worker inherited.
    pub async fn contain(&self, pgid: Option<Pid>) -> Result<(), SandboxError> {
        if let Some(pgid) = pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        let deadline = tokio::time::Instant::now() + SWEEP_DEADLINE;
        match self.run_as.filter(|_| self.level != Isolation::None) {
            Some(run_as) => loop {
                let alive = procs::alive_with_uid(run_as.uid);
                if self.adopts_orphans {
                    procs::reap_orphans();
                }
                if alive.is_empty() {
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(SandboxError::Survivors {
                        uid: run_as.uid,
                        pids: alive,
                    });
                }
                self.reap_as(run_as).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            },
            None if !self.adopts_orphans => Ok(()),
            None => loop {
                // Kill before reaping: an unreaped child keeps its pid, so a pid from this scan
                // cannot be another process's by the time it is signalled.
                let strays = procs::foreign_children();
                if strays.is_empty() {
                    procs::reap_orphans();
                    return Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(SandboxError::Survivors {
                        uid: nix::unistd::getuid().as_raw(),
                        pids: strays,
                    });
                }
                for pid in strays {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                procs::reap_orphans();
            },
        }
    }

    /// The polite half of stopping a run (timeout, lost claim, shutdown): SIGTERM to the
    /// script's processes, not to the sandbox's own (`child`, bubblewrap, and its init), so the
    /// script gets its grace period. [`Sandbox::contain`] does the rest.
    pub fn terminate(&self, child: Option<Pid>) {
        match (self.level, self.run_as) {
            (Isolation::None, _) | (_, None) => {
                if let Some(pgid) = child {
                    let _ = killpg(pgid, Signal::SIGTERM);
                }
            }
            (level, Some(run_as)) => {
                let all = procs::scan();
                let outer = child.map(|p| p.as_raw());
                for p in all.iter().filter(|p| !p.zombie && p.has_uid(run_as.uid)) {
                    let sandbox_own = level == Isolation::Namespaces
                        && (Some(p.pid) == outer || Some(p.ppid) == outer);
                    if !sandbox_own {
                        let _ = kill(Pid::from_raw(p.pid), Signal::SIGTERM);
                    }
                }
            }
        }
    }

    /// Whether a process of the run is still alive (used while waiting out the grace period).
    pub fn run_alive(&self, pgid: Option<Pid>) -> bool {
        match self.run_as.filter(|_| self.level != Isolation::None) {
            Some(run_as) => !procs::alive_with_uid(run_as.uid).is_empty(),
            None => pgid.is_some_and(|p| killpg(p, None).is_ok()),
        }
    }

    /// Runs `chainlock sandbox-reap` as `run_as`: one `kill(-1, SIGKILL)` from that uid.
    async fn reap_as(&self, run_as: RunAs) -> Result<(), SandboxError> {
        let argv = vec![
            self.setpriv.to_string_lossy().into_owned(),
            format!("--reuid={}", run_as.uid),
            format!("--regid={}", run_as.gid),
            "--clear-groups".into(),
            "--inh-caps=-all".into(),
            "--".into(),
            self.exe.to_string_lossy().into_owned(),
            "sandbox-reap".into(),
        ];
        crate::launch::run_helper(&argv, Path::new("/"), Duration::from_secs(10))
            .await
            .map(|_| ())
            .map_err(|reason| SandboxError::Helper {
                what: "reaper",
                reason,
            })
    }

    /// Starts a sandboxed no-op (`chainlock sandbox-probe`) in a scratch run under `scratch`
    /// and reports what it saw. `secrets` are the worker's files the script must not read.
    pub async fn probe(
        &self,
        scratch: &Path,
        secrets: &[(&'static str, PathBuf)],
    ) -> Result<ProbeReport, SandboxError> {
        let view = prepare_scratch(scratch, self.run_as)?;
        let mut argv = vec![
            self.exe.to_string_lossy().into_owned(),
            "sandbox-probe".into(),
            "--artifacts".into(),
            view.artifacts.to_string_lossy().into_owned(),
        ];
        for (_, p) in secrets {
            argv.push("--secret".into());
            argv.push(p.to_string_lossy().into_owned());
        }
        let wrapped = self.wrap(&argv, &view);
        let out = crate::launch::run_helper(&wrapped, &view.work, Duration::from_secs(60)).await;
        self.contain(None).await?;
        let stdout = out.map_err(|reason| SandboxError::Helper {
            what: "probe",
            reason,
        })?;
        let seen: ProbeOutput =
            serde_json::from_slice(&stdout).map_err(|e| SandboxError::Helper {
                what: "probe",
                reason: format!("unreadable answer: {e}"),
            })?;
        let wrote = std::fs::symlink_metadata(view.artifacts.join(PROBE_FILE))
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m));
        Ok(self.judge(&seen, secrets, wrote))
    }

    /// Compares what the probe saw with what the level promises.
    fn judge(
        &self,
        seen: &ProbeOutput,
        secrets: &[(&'static str, PathBuf)],
        wrote_uid: Option<u32>,
    ) -> ProbeReport {
        let mut checks = Vec::new();
        let mut check = |name: &'static str, ok: bool, detail: String| {
            checks.push(ProbeCheck { name, ok, detail });
        };
        let me = own_namespaces();
        let worker_uid = nix::unistd::getuid().as_raw();
        match self.run_as.filter(|_| self.level != Isolation::None) {
            Some(r) => check(
                "sandbox uid",
                seen.uid == r.uid
                    && seen.gid == r.gid
                    && seen.groups.iter().all(|g| *g == r.gid)
                    && seen.uid != worker_uid,
                format!(
                    "runs as uid {} gid {} groups {:?} (expected uid {} gid {}, no other group)",
                    seen.uid, seen.gid, seen.groups, r.uid, r.gid
                ),
            ),
            None => check(
                "sandbox uid",
                true,
                format!(
                    "runs as the worker's uid {}: it can read the worker's secrets",
                    seen.uid
                ),
            ),
        }
        if self.level != Isolation::None {
            check(
                "sandbox privileges",
                seen.no_new_privs && seen.cap_eff == 0,
                format!(
                    "no_new_privs {}, effective capabilities {:#x}",
                    seen.no_new_privs, seen.cap_eff
                ),
            );
        }
        if self.level == Isolation::Namespaces {
            check(
                "sandbox pid namespace",
                seen.pid_ns != me.pid && !seen.pid_ns.is_empty(),
                format!("own PID namespace ({} vs worker {})", seen.pid_ns, me.pid),
            );
            check(
                "sandbox mount namespace",
                seen.mnt_ns != me.mnt && !seen.mnt_ns.is_empty(),
                format!("own mount namespace ({} vs worker {})", seen.mnt_ns, me.mnt),
            );
            check(
                "sandbox network",
                self.network || seen.net_ns != me.net,
                if self.network {
                    "shares the host's network (network = true)".into()
                } else {
                    format!("own network namespace ({})", seen.net_ns)
                },
            );
        }
        let hidden_ok = |state: &str| match self.level {
            Isolation::Namespaces => state == "absent",
            Isolation::Uid => state == "absent" || state == "denied",
            Isolation::None => true,
        };
        for (name, path) in secrets {
            let state = seen
                .secrets
                .iter()
                .find(|s| s.path == *path)
                .map(|s| s.state.as_str())
                .unwrap_or("unreported");
            let ok = hidden_ok(state) && state != "unreported";
            let promise = match self.level {
                Isolation::Namespaces => "not visible",
                Isolation::Uid => "not readable",
                Isolation::None => "readable: not protected",
            };
            checks.push(ProbeCheck {
                name,
                ok,
                detail: format!("{}: {state} (must be {promise})", path.display()),
            });
        }
        checks.push(ProbeCheck {
            name: "sandbox artifact dir",
            ok: wrote_uid.is_some()
                && wrote_uid == Some(self.run_as.map(|r| r.uid).unwrap_or(worker_uid)),
            detail: match wrote_uid {
                Some(uid) => format!("writable; files are owned by uid {uid}"),
                None => "the probe could not write its artifact directory".into(),
            },
        });
        ProbeReport {
            level: self.level,
            checks,
        }
    }
}

/// A uid/gid for development workers (demo, tests) that no real user has: high, below 2^31
/// (bubblewrap's limit), distinct per process and `slot`, so two workers never share one.
pub fn dev_run_as(slot: u32) -> RunAs {
    let id = 1_900_000_000 + (std::process::id() % 1_000_000) * 64 + slot % 64;
    RunAs { uid: id, gid: id }
}

/// Whether `isolation = "namespaces"` with `run_as` works on this host right now (the probe
/// passes). For the demo, which uses the strongest level it can and says which.
pub async fn namespaces_available(run_as: RunAs) -> bool {
    let Ok(exe) = std::env::current_exe() else {
        return false;
    };
    let sandbox = Sandbox {
        level: Isolation::Namespaces,
        run_as: Some(run_as),
        ro_paths: Vec::new(),
        rw_paths: Vec::new(),
        network: false,
        bwrap: PathBuf::from("/usr/bin/bwrap"),
        setpriv: PathBuf::from("/usr/bin/setpriv"),
        exe,
        adopts_orphans: false,
    };
    if !nix::unistd::geteuid().is_root()
        || check_tool("bubblewrap", "bwrap", &sandbox.bwrap).is_err()
        || check_tool("setpriv", "setpriv", &sandbox.setpriv).is_err()
    {
        return false;
    }
    let Ok(scratch) = tempfile::tempdir() else {
        return false;
    };
    let mut sandbox = sandbox;
    if sandbox.install_helper(scratch.path()).is_err() {
        return false;
    }
    matches!(sandbox.probe(scratch.path(), &[]).await, Ok(r) if r.passed())
}

fn check_tool(what: &'static str, key: &'static str, path: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    let missing = |reason: String| SandboxError::MissingTool {
        what,
        key,
        path: path.to_owned(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| missing(e.to_string()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(missing("not executable".into()));
    }
    Ok(())
}

/// A scratch run for the probe: `work/` (with `task.json` and `cot/`), `artifacts/`, handed to
/// the script's uid as a real run would be.
fn prepare_scratch(scratch: &Path, run_as: Option<RunAs>) -> Result<RunView, SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    let work = scratch.join("work");
    let artifacts = scratch.join("artifacts");
    let cot = work.join("cot");
    for d in [&work, &artifacts, &cot] {
        std::fs::create_dir_all(d).map_err(io("create", d))?;
    }
    let task = work.join("task.json");
    std::fs::write(&task, b"{}\n").map_err(io("write", &task))?;
    std::fs::set_permissions(scratch, std::fs::Permissions::from_mode(0o711))
        .map_err(io("chmod", scratch))?;
    if let Some(r) = run_as {
        for d in [&work, &artifacts] {
            std::os::unix::fs::chown(d, Some(r.uid), Some(r.gid)).map_err(io("chown", d))?;
        }
    }
    Ok(RunView {
        work,
        artifacts,
        read_only: vec![cot, task],
        files: Vec::new(),
    })
}

/// Puts executable `src` at `dest` for another uid: a hard link when the file system allows
/// it and `src` is executable by others (no copy of a large binary), else a copy, mode 0555.
pub fn place_executable(src: &Path, dest: &Path) -> Result<(), SandboxError> {
    use std::os::unix::fs::PermissionsExt;
    if std::fs::symlink_metadata(dest).is_ok() {
        std::fs::remove_file(dest).map_err(io("remove", dest))?;
    }
    let linked = std::fs::hard_link(src, dest).is_ok()
        && std::fs::metadata(dest).is_ok_and(|m| m.permissions().mode() & 0o005 == 0o005);
    if !linked {
        let _ = std::fs::remove_file(dest);
        std::fs::copy(src, dest).map_err(io("copy", dest))?;
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(0o555))
            .map_err(io("chmod", dest))?;
    }
    Ok(())
}

/// The chainlock binary as the sandbox's helpers run it ([`Sandbox::install_helper`]).
pub const HELPER_FILE: &str = ".chainlock-sandbox-helper";

/// File the probe writes into its artifact directory.
pub const PROBE_FILE: &str = "probe";

/// What `chainlock sandbox-probe` prints (JSON on stdout).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProbeOutput {
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// `NoNewPrivs` from `/proc/self/status`.
    pub no_new_privs: bool,
    /// `CapEff` from `/proc/self/status`.
    pub cap_eff: u64,
    /// `readlink /proc/self/ns/pid`.
    pub pid_ns: String,
    /// `readlink /proc/self/ns/mnt`.
    pub mnt_ns: String,
    /// `readlink /proc/self/ns/net`.
    pub net_ns: String,
    /// For each secret path asked about: `absent`, `denied` or `readable`.
    pub secrets: Vec<SecretState>,
}

/// What the probe could do with one path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretState {
    /// The path.
    pub path: PathBuf,
    /// `absent` (does not exist in its view), `denied` (exists, cannot be read) or `readable`.
    pub state: String,
}

/// The verdict on one probed property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeCheck {
    /// What was checked.
    pub name: &'static str,
    /// Whether the level's promise holds.
    pub ok: bool,
    /// What the probe saw.
    pub detail: String,
}

/// The probe's verdict, one line per property.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The level that was probed.
    pub level: Isolation,
    /// One per property.
    pub checks: Vec<ProbeCheck>,
}

impl ProbeReport {
    /// Whether every promise holds.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

/// The worker's own namespaces, to compare with the probe's.
#[derive(Debug, Default)]
struct Namespaces {
    pid: String,
    mnt: String,
    net: String,
}

fn ns_link(name: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{name}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn own_namespaces() -> Namespaces {
    Namespaces {
        pid: ns_link("pid"),
        mnt: ns_link("mnt"),
        net: ns_link("net"),
    }
}

/// `chainlock sandbox-probe`: runs inside the sandbox, reports who it is and what it can see,
/// writes [`PROBE_FILE`] into `artifacts`. Prints JSON; exits 0.
pub fn probe_main(artifacts: &Path, secrets: &[PathBuf]) -> i32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let secrets = secrets
        .iter()
        .map(|p| {
            let state = match std::fs::File::open(p) {
                Ok(_) => "readable",
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => "absent",
                Err(_) => "denied",
            };
            SecretState {
                path: p.clone(),
                state: state.into(),
            }
        })
        .collect();
    let me = own_namespaces();
    let out = ProbeOutput {
        uid: nix::unistd::getuid().as_raw(),
        gid: nix::unistd::getgid().as_raw(),
        groups: nix::unistd::getgroups()
            .map(|g| g.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default(),
        no_new_privs: field("NoNewPrivs:") == "1",
        cap_eff: u64::from_str_radix(&field("CapEff:"), 16).unwrap_or(u64::MAX),
        pid_ns: me.pid,
        mnt_ns: me.mnt,
        net_ns: me.net,
        secrets,
    };
    let _ = std::fs::write(artifacts.join(PROBE_FILE), b"probe\n");
    match serde_json::to_string(&out) {
        Ok(text) => {
            println!("{text}");
            0
        }
        Err(_) => 1,
    }
}

/// `chainlock sandbox-reap`: run as the script's uid, sends SIGKILL to every process of that
/// uid (`kill(-1)`: every process the caller may signal, except itself; the kernel holds the
/// task list lock, so a process forking meanwhile cannot slip through). Exits 0.
pub fn reap_main() -> i32 {
    if nix::unistd::getuid().is_root() || nix::unistd::geteuid().is_root() {
        eprintln!("chainlock sandbox-reap: refusing to run as root (it would kill everything)");
        return 64;
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
    0
}
