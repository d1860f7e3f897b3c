//! `/proc` as the kernel reports it: which processes exist, whose they are, and who reaps them.
//!
//! Why it exists: "nothing of the script outlives its run" is checked, not assumed. After every
//! run the worker looks at every process on the host for one that belongs to the script's uid
//! (or, with `isolation = "none"`, for an orphan the worker inherited as child subreaper).
//! Reading `/proc/<pid>/status` races with processes exiting; a vanished process is simply not
//! listed.
//!
//! The worker is a child subreaper (`PR_SET_CHILD_SUBREAPER`), so orphans of a script that ran
//! without a PID namespace become its children. Tokio reaps only the children it spawned; the
//! rest are reaped here, by pid, never with `waitpid(-1)`, which would steal an exit status
//! tokio is waiting for. [`Registry`] lists the pids tokio owns.

use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// One process, as `/proc/<pid>/status` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    /// Process id (in the worker's PID namespace).
    pub pid: i32,
    /// Parent process id.
    pub ppid: i32,
    /// Real, effective, saved and filesystem uid.
    pub uids: [u32; 4],
    /// Exited, waiting to be reaped: it runs no code and holds no files.
    pub zombie: bool,
}

impl ProcInfo {
    /// Whether any of its uids is `uid`.
    pub fn has_uid(&self, uid: u32) -> bool {
        self.uids.contains(&uid)
    }
}

/// Parses the fields we need from the text of `/proc/<pid>/status`.
pub fn parse_status(pid: i32, text: &str) -> Option<ProcInfo> {
    let mut ppid = None;
    let mut uids = None;
    let mut zombie = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("Uid:") {
            let ids: Vec<u32> = v
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            uids = <[u32; 4]>::try_from(ids).ok();
        } else if let Some(v) = line.strip_prefix("State:") {
            zombie = matches!(v.trim_start().chars().next(), Some('Z' | 'X'));
        }
    }
    Some(ProcInfo {
        pid,
        ppid: ppid?,
        uids: uids?,
        zombie,
    })
}

/// Every process visible in `/proc` right now.
pub fn scan() -> Vec<ProcInfo> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            parse_status(pid, &text)
        })
        .collect()
}

/// Live (non-zombie) processes that carry `uid` as any of their uids.
pub fn alive_with_uid(uid: u32) -> Vec<i32> {
    scan()
        .into_iter()
        .filter(|p| !p.zombie && p.has_uid(uid))
        .map(|p| p.pid)
        .collect()
}

/// The pids of children tokio spawned and has not reaped yet: never reaped here.
#[derive(Debug, Default)]
pub struct Registry {
    pids: Mutex<BTreeSet<i32>>,
}

static REGISTRY: Registry = Registry {
    pids: Mutex::new(BTreeSet::new()),
};

/// The process-wide registry.
pub fn registry() -> &'static Registry {
    &REGISTRY
}

/// Removes its pid from the registry when the child has been waited for (or dropped).
#[derive(Debug)]
pub struct Registered {
    pid: i32,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut pids) = REGISTRY.pids.lock() {
            pids.remove(&self.pid);
        }
    }
}

impl Registry {
    /// Runs `spawn` with the registry locked and records the child's pid, so [`reap_orphans`]
    /// can never reap a child between its creation and its registration.
    pub fn spawn<T>(
        &self,
        spawn: impl FnOnce() -> std::io::Result<T>,
        pid_of: impl Fn(&T) -> Option<u32>,
    ) -> std::io::Result<(T, Option<Registered>)> {
        let mut pids = self
            .pids
            .lock()
            .map_err(|_| std::io::Error::other("process registry poisoned"))?;
        let child = spawn()?;
        let reg = pid_of(&child)
            .and_then(|p| i32::try_from(p).ok())
            .map(|pid| {
                pids.insert(pid);
                Registered { pid }
            });
        Ok((child, reg))
    }
}

/// Reaps zombies whose parent is this process and that tokio does not own (orphans inherited as
/// child subreaper). Returns how many were reaped.
pub fn reap_orphans() -> usize {
    let me = std::process::id();
    let Ok(me) = i32::try_from(me) else { return 0 };
    let Ok(owned) = REGISTRY.pids.lock() else {
        return 0;
    };
    let mut reaped = 0;
    for p in scan() {
        if p.ppid == me
            && p.zombie
            && !owned.contains(&p.pid)
            && waitpid(Pid::from_raw(p.pid), Some(WaitPidFlag::WNOHANG)).is_ok()
        {
            reaped += 1;
        }
    }
    reaped
}

/// Live children of this process that tokio does not own: orphans inherited as child
/// subreaper (`isolation = "none"`).
pub fn foreign_children() -> Vec<i32> {
    let Ok(me) = i32::try_from(std::process::id()) else {
        return Vec::new();
    };
    let Ok(owned) = REGISTRY.pids.lock() else {
        return Vec::new();
    };
    scan()
        .into_iter()
        .filter(|p| p.ppid == me && !p.zombie && !owned.contains(&p.pid))
        .map(|p| p.pid)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status() {
        let text = "Name:\tsleep\nState:\tS (sleeping)\nTgid:\t42\nPid:\t42\nPPid:\t7\n\
                    Uid:\t999\t999\t999\t999\nGid:\t995\t995\t995\t995\n";
        let p = parse_status(42, text).unwrap();
        assert_eq!(p.ppid, 7);
        assert_eq!(p.uids, [999; 4]);
        assert!(!p.zombie && p.has_uid(999) && !p.has_uid(0));
        let z = parse_status(1, &text.replace("S (sleeping)", "Z (zombie)")).unwrap();
        assert!(z.zombie);
        assert!(parse_status(1, "State:\tR\n").is_none());
    }

    #[test]
    fn scan_sees_this_process() {
        let me = i32::try_from(std::process::id()).unwrap();
        assert!(scan().iter().any(|p| p.pid == me && !p.zombie));
    }
}
