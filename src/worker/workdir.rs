//! The work area: per-task directories the worker creates, hands to the script and wipes.
//!
//! Why it is careful: the worker deletes whole trees here at start-up and after each task, so it
//! must be impossible to point it at a directory that holds anything else. The area root must
//! pass [`crate::config::check_area_dir`] and carry a marker file the worker wrote itself; an
//! existing non-empty directory without the marker is refused, never cleaned. Removal uses
//! `remove_dir_all`, which does not follow symlinks.

use crate::config::check_area_dir;
use crate::ids::TaskId;
use std::path::{Path, PathBuf};

/// File that marks a directory as a chainlock work area.
pub const MARKER: &str = ".chainlock-work-area";

/// Why the work area or a task directory could not be prepared.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkDirError {
    /// The configured directory is dangerous (root, relative, ...).
    #[error("refusing work area {path}: {reason}")]
    Dangerous {
        /// The directory.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The directory exists, is not empty and was not created by chainlock.
    #[error(
        "refusing work area {path}: it is not empty and has no {MARKER} file, so chainlock did not \
         create it; use an empty or new directory"
    )]
    NotOurs {
        /// The directory.
        path: PathBuf,
    },
    /// A filesystem operation failed.
    #[error("work area: {op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WorkDirError {
    let path = path.to_owned();
    move |source| WorkDirError::Io { op, path, source }
}

/// The worker's work area root.
#[derive(Debug, Clone)]
pub struct WorkArea {
    root: PathBuf,
}

/// The directories of one run.
#[derive(Debug, Clone)]
pub struct TaskDirs {
    /// `<area>/<taskId>-<runId>`.
    pub root: PathBuf,
    /// `CHAINLOCK_WORK_DIR`: `task.json`, `cot/`; the script's cwd.
    pub work: PathBuf,
    /// `CHAINLOCK_ARTIFACT_DIR`: everything in it is uploaded.
    pub artifacts: PathBuf,
    /// The worker's own files for this run (`chain_of_trust.log`, our `chain-of-trust.json`
    /// and its signature): never the script's cwd or artifact dir, and with `run_as` not even
    /// readable by the script.
    pub worker: PathBuf,
}

impl WorkArea {
    /// Opens (creating it if needed) the work area and removes leftovers of a previous crash.
    pub fn open(root: &Path) -> Result<WorkArea, WorkDirError> {
        check_area_dir(root).map_err(|reason| WorkDirError::Dangerous {
            path: root.to_owned(),
            reason,
        })?;
        create_private_dir(root)?;
        let marker = root.join(MARKER);
        if !marker.exists() {
            let mut entries = std::fs::read_dir(root).map_err(io("read", root))?;
            if entries.next().is_some() {
                return Err(WorkDirError::NotOurs {
                    path: root.to_owned(),
                });
            }
            std::fs::write(&marker, b"chainlock owns this directory and wipes it\n")
                .map_err(io("write", &marker))?;
        }
        let area = WorkArea {
            root: root.to_owned(),
        };
        area.clean()?;
        Ok(area)
    }

    /// The area root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes everything in the area except the marker.
    pub fn clean(&self) -> Result<(), WorkDirError> {
        for entry in std::fs::read_dir(&self.root).map_err(io("read", &self.root))? {
            let entry = entry.map_err(io("read", &self.root))?;
            if entry.file_name() == MARKER {
                continue;
            }
            let path = entry.path();
            tracing::warn!(path = %path.display(), "removing leftover from a previous task");
            remove_any(&path)?;
        }
        Ok(())
    }

    /// Creates fresh, empty directories for one run (removing any of the same name).
    pub fn task_dirs(&self, task_id: &TaskId, run_id: u32) -> Result<TaskDirs, WorkDirError> {
        // A TaskId is a checked slugid: safe as a path component.
        let root = self.root.join(format!("{task_id}-{run_id}"));
        if std::fs::symlink_metadata(&root).is_ok() {
            remove_any(&root)?;
        }
        let dirs = TaskDirs {
            work: root.join("work"),
            artifacts: root.join("artifacts"),
            worker: root.join("worker"),
            root,
        };
        create_private_dir(&dirs.root)?;
        create_private_dir(&dirs.work)?;
        create_private_dir(&dirs.artifacts)?;
        create_private_dir(&dirs.worker)?;
        Ok(dirs)
    }

    /// With `[script] run_as`: lets other users traverse (not list) the area root, so the
    /// script's user can reach the directories handed to it.
    pub fn allow_traverse(&self) -> Result<(), WorkDirError> {
        set_mode(&self.root, 0o711)
    }
}

impl TaskDirs {
    /// With `[script] run_as`: gives the work dir and the artifact dir (not their contents: the
    /// verified `cot/` files stay the worker's, read-only to the script) to `uid:gid`, and lets
    /// the script traverse the run's root. The worker dir stays private.
    pub fn hand_to(&self, uid: u32, gid: u32) -> Result<(), WorkDirError> {
        set_mode(&self.root, 0o711)?;
        for dir in [&self.work, &self.artifacts] {
            std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(io("chown", dir))?;
        }
        Ok(())
    }

    /// With `[script] run_as`: makes the worker-written inputs (`task.json` and the verified
    /// `cot/` tree) readable, never writable, by the script's uid, whatever the worker's umask
    /// (the systemd unit runs with `UMask=0077`): files 0444, directories 0555. Symlinks are
    /// never followed (the verifier writes none).
    pub fn share_inputs(&self) -> Result<(), WorkDirError> {
        let task = self.work.join("task.json");
        if std::fs::symlink_metadata(&task).is_ok_and(|m| m.is_file()) {
            set_mode(&task, 0o444)?;
        }
        let mut stack = vec![self.work.join("cot")];
        while let Some(dir) = stack.pop() {
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.is_dir() => {}
                _ => continue,
            }
            for entry in std::fs::read_dir(&dir).map_err(io("read", &dir))? {
                let entry = entry.map_err(io("read", &dir))?;
                let path = entry.path();
                let ft = entry.file_type().map_err(io("inspect", &path))?;
                if ft.is_dir() {
                    stack.push(path);
                } else if ft.is_file() {
                    set_mode(&path, 0o444)?;
                }
            }
            set_mode(&dir, 0o555)?;
        }
        Ok(())
    }

    /// Removes the run's directories.
    pub fn remove(&self) -> Result<(), WorkDirError> {
        remove_any(&self.root)
    }
}

fn remove_any(path: &Path) -> Result<(), WorkDirError> {
    let meta = std::fs::symlink_metadata(path).map_err(io("inspect", path))?;
    if meta.is_dir() {
        std::fs::remove_dir_all(path).map_err(io("remove", path))
    } else {
        std::fs::remove_file(path).map_err(io("remove", path))
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<(), WorkDirError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", path))
}

/// Creates `path` (and parents) mode 0700, and makes an existing one 0700.
pub fn create_private_dir(path: &Path) -> Result<(), WorkDirError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(io("create", path))?;
    set_mode(path, 0o700)
}

/// Writes `value` with keys sorted at every level and 2-space indentation (as scriptworker
/// writes `task.json`), whatever the JSON map's own ordering.
pub fn sorted_json(value: &serde_json::Value) -> String {
    fn sort(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = serde_json::Map::new();
                for k in keys {
                    if let Some(x) = m.get(k) {
                        out.insert(k.clone(), sort(x));
                    }
                }
                serde_json::Value::Object(out)
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sort).collect()),
            other => other.clone(),
        }
    }
    // Serializing a Value cannot fail (all keys are strings).
    serde_json::to_string_pretty(&sort(value)).unwrap_or_default()
}

/// Keeps the newest `keep` task logs (`*.log`) in `dir`, removing older ones.
pub fn prune_logs(dir: &Path, keep: usize) -> Result<(), WorkDirError> {
    let mut logs: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io("read", dir))? {
        let entry = entry.map_err(io("read", dir))?;
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file() && path.extension().is_some_and(|e| e == "log") {
            logs.push((meta.modified().unwrap_or(std::time::UNIX_EPOCH), path));
        }
    }
    logs.sort();
    let excess = logs.len().saturating_sub(keep);
    for (_, path) in logs.into_iter().take(excess) {
        std::fs::remove_file(&path).map_err(io("remove", &path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_foreign_and_dangerous_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let foreign = tmp.path().join("home");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::write(foreign.join("precious"), b"x").unwrap();
        assert!(matches!(
            WorkArea::open(&foreign),
            Err(WorkDirError::NotOurs { .. })
        ));
        assert!(foreign.join("precious").exists());
        assert!(matches!(
            WorkArea::open(Path::new("/")),
            Err(WorkDirError::Dangerous { .. })
        ));
    }

    #[test]
    fn cleans_leftovers_and_makes_task_dirs() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("area");
        let area = WorkArea::open(&root).unwrap();
        let t = TaskId::generate();
        let dirs = area.task_dirs(&t, 0).unwrap();
        std::fs::write(dirs.artifacts.join("left"), b"x").unwrap();
        std::os::unix::fs::symlink(tmp.path(), dirs.work.join("escape")).unwrap();
        std::fs::write(tmp.path().join("outside"), b"keep").unwrap();
        let area = WorkArea::open(&root).unwrap();
        assert!(!dirs.root.exists());
        assert!(
            tmp.path().join("outside").exists(),
            "symlink target removed"
        );
        assert!(area.root().join(MARKER).exists());
    }

    #[test]
    fn sorted_json_sorts_every_level() {
        let v = serde_json::json!({"b": 1, "a": {"z": [{"y": 1, "x": 2}], "c": null}});
        assert_eq!(
            sorted_json(&v),
            "{\n  \"a\": {\n    \"c\": null,\n    \"z\": [\n      {\n        \"x\": 2,\n        \
             \"y\": 1\n      }\n    ]\n  },\n  \"b\": 1\n}"
        );
    }

    #[test]
    fn prune_keeps_newest() {
        let tmp = tempfile::tempdir().unwrap();
        for i in 0..4 {
            let p = tmp.path().join(format!("{i}.log"));
            std::fs::write(&p, b"x").unwrap();
            let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        prune_logs(tmp.path(), 2).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["2.log", "3.log"]);
    }
}
