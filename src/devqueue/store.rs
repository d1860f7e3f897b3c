//! Persistence of the dev queue: one JSON file per task (written to a temporary file and
//! renamed, so a crash never leaves a half-written record), an append-only artifact journal per
//! task, and artifact blobs on disk.
//!
//! Artifact changes (createArtifact, a finished upload) are frequent and small: each is one line
//! appended to `tasks/<id>.artifacts.jsonl` and flushed (`fdatasync`), not a rewrite and fsync
//! of the whole task record. The line is appended while the queue's state is locked (so lines
//! keep the order of the changes) but flushed after the lock is released and before the change
//! is acknowledged: concurrent uploads share the disk's flushes instead of queueing behind each
//! other's, and nothing acknowledged is lost. Loading replays the journal over the record; the next full save of
//! the record (any run transition) holds every artifact and removes the journal. A torn last
//! line (a crash during its append, so never acknowledged) is ignored.

use crate::devqueue::DevQueueError;
use crate::devqueue::state::{ArtifactRecord, TaskRecord};
use crate::ids::TaskId;
use crate::secret::Secret;
use sha2::Digest as _;
use std::collections::HashMap;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// One line of an artifact journal: the artifact's whole new state in run `run`.
#[derive(serde::Serialize, serde::Deserialize)]
struct JournalEntry {
    run: usize,
    artifact: ArtifactRecord,
}

/// A journal line written but not yet flushed: [`JournalSync::flush`] before acknowledging.
#[must_use = "a journal line is durable only once flushed"]
pub(crate) struct JournalSync {
    file: tokio::fs::File,
    path: PathBuf,
}

impl JournalSync {
    /// `fdatasync` of the journal: this line and every one before it.
    pub(crate) async fn flush(self) -> Result<(), DevQueueError> {
        self.file.sync_data().await.map_err(io("sync", &self.path))
    }
}

/// The data directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> DevQueueError {
    let path = path.to_owned();
    move |source| DevQueueError::Io { op, path, source }
}

impl Store {
    pub(crate) async fn open(dir: &Path) -> Result<Store, DevQueueError> {
        for sub in ["", "tasks", "blobs"] {
            let p = dir.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&p)
                .map_err(io("create directory", &p))?;
        }
        Ok(Store {
            dir: dir.to_owned(),
        })
    }

    /// The task-credentials issuer token: generated at first start, kept with mode 0600.
    pub(crate) async fn issuer_token(&self) -> Result<Secret, DevQueueError> {
        let path = self.dir.join("issuer-token");
        match std::fs::read_to_string(&path) {
            Ok(s) if !s.trim().is_empty() => return Ok(Secret::new(s.trim())),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io("read", &path)(e)),
        }
        let token = crate::queue::auth::random_token();
        let tmp = self.dir.join("issuer-token.tmp");
        let _ = std::fs::remove_file(&tmp);
        {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io("create", &tmp))?;
            f.write_all(token.expose().as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(io("write", &tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io("rename", &tmp))?;
        Ok(token)
    }

    fn task_path(&self, id: &TaskId) -> PathBuf {
        self.dir.join("tasks").join(format!("{id}.json"))
    }

    fn journal_path(&self, id: &TaskId) -> PathBuf {
        self.dir.join("tasks").join(format!("{id}.artifacts.jsonl"))
    }

    /// Appends one artifact's new state to its task's journal; the change is durable once the
    /// returned [`JournalSync`] is flushed (after the caller released the state lock).
    pub(crate) async fn append_artifact(
        &self,
        id: &TaskId,
        run: usize,
        artifact: &ArtifactRecord,
    ) -> Result<JournalSync, DevQueueError> {
        use tokio::io::AsyncWriteExt as _;
        let path = self.journal_path(id);
        let entry = JournalEntry {
            run,
            artifact: artifact.clone(),
        };
        // Records are plain data; serializing them cannot fail.
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .await
            .map_err(io("open", &path))?;
        f.write_all(&line).await.map_err(io("append", &path))?;
        Ok(JournalSync { file: f, path })
    }

    /// Replays `id`'s journal (if any) over `rec`.
    async fn replay_journal(&self, rec: &mut TaskRecord) -> Result<(), DevQueueError> {
        let path = self.journal_path(&rec.task_id);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io("read", &path)(e)),
        };
        let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
        let last = lines.len().saturating_sub(1);
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                continue;
            }
            let entry: JournalEntry = match serde_json::from_slice(line) {
                Ok(e) => e,
                // Only the unterminated last line can be torn; anything else is corruption.
                Err(_) if i == last => break,
                Err(source) => return Err(DevQueueError::CorruptState { path, source }),
            };
            let Some(slot) = rec.artifacts.get_mut(entry.run) else {
                return Err(DevQueueError::CorruptState {
                    path,
                    source: serde::de::Error::custom(format!(
                        "journal line {} names run {} of a task with {} runs",
                        i + 1,
                        entry.run,
                        rec.artifacts.len()
                    )),
                });
            };
            slot.insert(entry.artifact.name.clone(), entry.artifact);
        }
        Ok(())
    }

    pub(crate) async fn load_tasks(&self) -> Result<HashMap<TaskId, TaskRecord>, DevQueueError> {
        let dir = self.dir.join("tasks");
        let mut out = HashMap::new();
        let mut rd = tokio::fs::read_dir(&dir).await.map_err(io("list", &dir))?;
        while let Some(entry) = rd.next_entry().await.map_err(io("list", &dir))? {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue; // leftovers of an interrupted write
            }
            let bytes = tokio::fs::read(&path).await.map_err(io("read", &path))?;
            let mut rec: TaskRecord = serde_json::from_slice(&bytes)
                .map_err(|source| DevQueueError::CorruptState { path, source })?;
            self.replay_journal(&mut rec).await?;
            out.insert(rec.task_id.clone(), rec);
        }
        Ok(out)
    }

    pub(crate) async fn save_task(&self, rec: &TaskRecord) -> Result<(), DevQueueError> {
        let path = self.task_path(&rec.task_id);
        let tmp = path.with_extension("json.tmp");
        // Records are plain data; serializing them cannot fail.
        let bytes = serde_json::to_vec_pretty(rec).unwrap_or_default();
        write_synced(&tmp, &bytes)
            .await
            .map_err(io("write", &tmp))?;
        tokio::fs::rename(&tmp, &path)
            .await
            .map_err(io("rename", &tmp))?;
        // The record now holds every artifact the journal had.
        let journal = self.journal_path(&rec.task_id);
        match tokio::fs::remove_file(&journal).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &journal)(e)),
        }
    }

    /// Where the bytes of an `s3` artifact live. The name is hashed so any artifact name maps
    /// to one safe file name.
    pub(crate) fn blob_path(&self, id: &TaskId, run_id: u32, name: &str) -> PathBuf {
        let digest = hex::encode(sha2::Sha256::digest(name.as_bytes()));
        self.dir
            .join("blobs")
            .join(id.as_str())
            .join(run_id.to_string())
            .join(digest)
    }
}

async fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use tokio::io::AsyncWriteExt as _;
    let mut f = tokio::fs::File::create(path).await?;
    f.write_all(bytes).await?;
    f.sync_all().await
}
