//! The evidence bundle: a directory of downloaded evidence, read-only.
//!
//! Layout (**API Boundary:** auditors exchange bundles; `crate::evidence` writes them):
//! ```text
//! bundle.json                      {"bundleVersion": 1, "target": TASK_ID, "tasks": [TASK_ID...]}
//! <taskId>/task.json               the task definition, as the queue returned it
//! <taskId>/status.json             the task status (all runs)
//! <taskId>/artifacts/<name>        chain-of-trust.json, its signature, consumed artifacts
//! <taskId>/too-large/<name>        instead of artifacts/<name>: the fetcher refused it as larger
//!                                  than this many bytes (decimal); the verifier reports it
//! <taskId>/undecodable/<name>      instead of artifacts/<name>: stored with a Content-Encoding
//!                                  the fetcher could not decode (the decoder's message)
//! <taskId>/task.json.too-large     instead of task.json (or status.json.too-large): the queue's
//!                                  answer was larger than this many bytes (decimal)
//! ```
//! A record can only make verification fail, so a bundle gains nothing by forging one.
//! The bundle is untrusted evidence: `bundle.json` only names where to look; the verifier
//! re-derives the chain from the task definitions, and policy and keys always come from the
//! auditor. Files are read with size caps, and any symlink below the bundle root is refused (a
//! bundle cannot make the verifier hash `/etc/shadow` or a file that changes under it).

use super::{
    ArtifactPath, Evidence, EvidenceReadError, FileDigest, Limits, STATUS_FILE, TASK_FILE,
    Unusable, UnusableFile,
};
use crate::ids::TaskId;
use crate::queue::types::TaskStatus;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

/// Name of the bundle's index file.
pub const BUNDLE_FILE: &str = "bundle.json";
/// Current bundle format version.
pub const BUNDLE_VERSION: u32 = 1;

/// `bundle.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BundleIndex {
    /// Always [`BUNDLE_VERSION`].
    pub bundle_version: u32,
    /// The task the bundle is evidence for.
    pub target: TaskId,
    /// The tasks whose evidence the bundle holds.
    pub tasks: Vec<TaskId>,
    /// Where the evidence was fetched from (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_url: Option<String>,
    /// When it was fetched (informational).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// Sources of check 9 (`decision-rebuild`), each with its URL and sha256.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceEntry>,
}

/// Directory of the bundle holding rebuild sources (`sources/<sha256 of the URL>`).
pub const SOURCES_DIR: &str = "sources";

/// One stored rebuild source.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SourceEntry {
    /// What it is.
    pub kind: crate::verify::rebuild::SourceKind,
    /// Where it was fetched from.
    pub url: String,
    /// The repository it belongs to, as the decision task names it.
    pub repository: String,
    /// The revision it was fetched at.
    pub revision: String,
    /// sha256 of the bytes.
    pub sha256: String,
    /// Size of the bytes.
    pub size: u64,
    /// Its file, relative to the bundle root.
    pub file: String,
}

/// Reads a rebuild template at a revision from somewhere the auditor trusts (their own
/// clone): `Ok(None)` when that clone does not serve `repository`.
pub trait TemplateCheckout: std::fmt::Debug {
    /// The bytes of `path` at `revision`, and a description of where they came from.
    fn read_at(
        &self,
        repository: &str,
        revision: &str,
        path: &str,
    ) -> Result<Option<(Vec<u8>, String)>, String>;
}

/// Why a bundle cannot be opened at all (an infrastructure error for the CLI, exit 2).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// A file could not be read.
    #[error("cannot read {path}: {detail}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// `bundle.json` or a task file is malformed.
    #[error("{path} is malformed: {detail}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Why.
        detail: String,
    },
    /// The bundle format version is not supported.
    #[error("unsupported bundle version {0}")]
    Version(u32),
}

/// An opened bundle: definitions and statuses in memory, artifacts read on demand.
#[derive(Debug)]
pub struct Bundle {
    root: PathBuf,
    index: BundleIndex,
    tasks: BTreeMap<TaskId, Value>,
    statuses: BTreeMap<TaskId, TaskStatus>,
    /// Task files that cannot be used: reported as findings, never used.
    unusable: Vec<UnusableFile>,
    /// How far its sources can be trusted.
    sources_fetched: bool,
    /// The auditor's own clone, standing in for bundled templates.
    checkout: Option<Box<dyn TemplateCheckout>>,
}

impl Bundle {
    /// Opens the bundle at `root`. Tasks named in `bundle.json` but without `task.json` are
    /// simply absent (the verifier reports them as missing evidence).
    pub fn open(root: &Path, limits: &Limits) -> Result<Bundle, BundleError> {
        let index_path = root.join(BUNDLE_FILE);
        let bytes = read_capped(root, Path::new(BUNDLE_FILE), limits.max_document_bytes)
            .map_err(|e| BundleError::Read {
                path: index_path.clone(),
                detail: e.detail,
            })?
            .ok_or_else(|| BundleError::Read {
                path: index_path.clone(),
                detail: "not found".into(),
            })?;
        let index: BundleIndex =
            crate::strict_json::from_slice_to(&bytes).map_err(|e| BundleError::Malformed {
                path: index_path.clone(),
                detail: e.to_string(),
            })?;
        if index.bundle_version != BUNDLE_VERSION {
            return Err(BundleError::Version(index.bundle_version));
        }
        let mut tasks = BTreeMap::new();
        let mut statuses = BTreeMap::new();
        let mut unusable = Vec::new();
        for id in &index.tasks {
            let Some(bytes) = read_task_file(root, id, TASK_FILE, limits, &mut unusable)? else {
                continue;
            };
            match crate::strict_json::from_slice(&bytes) {
                Ok(v) => {
                    tasks.insert(id.clone(), v);
                }
                Err(e) => unusable.push(UnusableFile {
                    task_id: id.clone(),
                    file: TASK_FILE,
                    problem: Unusable::Malformed(e.to_string()),
                }),
            }
        }
        for id in &index.tasks {
            let Some(bytes) = read_task_file(root, id, STATUS_FILE, limits, &mut unusable)? else {
                continue;
            };
            match crate::strict_json::from_slice_to::<TaskStatus>(&bytes) {
                Ok(st) => {
                    statuses.insert(id.clone(), st);
                }
                Err(e) => unusable.push(UnusableFile {
                    task_id: id.clone(),
                    file: STATUS_FILE,
                    problem: Unusable::Malformed(e.to_string()),
                }),
            }
        }
        Ok(Bundle {
            root: root.to_owned(),
            index,
            tasks,
            statuses,
            unusable,
            sources_fetched: false,
            checkout: None,
        })
    }

    /// Opens a bundle this process has just fetched from the policy's own URLs: its rebuild
    /// sources count as fetched, not as "taken from a bundle".
    pub fn open_fetched(root: &Path, limits: &Limits) -> Result<Bundle, BundleError> {
        let mut b = Bundle::open(root, limits)?;
        b.sources_fetched = true;
        Ok(b)
    }

    /// Reads templates from the auditor's clone instead of the bundle.
    pub fn with_checkout(mut self, checkout: Box<dyn TemplateCheckout>) -> Bundle {
        self.checkout = Some(checkout);
        self
    }

    /// The bundle's index.
    pub fn index(&self) -> &BundleIndex {
        &self.index
    }

    /// The bundle directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the fetcher records an artifact it refused as too large (see the layout above).
    pub fn too_large_rel_path(task_id: &TaskId, name: &ArtifactPath) -> PathBuf {
        Path::new(task_id.as_str())
            .join("too-large")
            .join(name.to_relative_path())
    }

    /// Where the fetcher records an artifact it could not decode (see the layout above).
    pub fn undecodable_rel_path(task_id: &TaskId, name: &ArtifactPath) -> PathBuf {
        Path::new(task_id.as_str())
            .join("undecodable")
            .join(name.to_relative_path())
    }

    /// Where the fetcher records a task file the queue answered with more than the limit.
    pub fn too_large_task_file_rel_path(task_id: &TaskId, file: &str) -> PathBuf {
        Path::new(task_id.as_str()).join(format!("{file}.too-large"))
    }

    /// `Err` when the fetcher left a too-large or undecodable record for the artifact.
    fn refused_by_fetcher(
        &self,
        task_id: &TaskId,
        name: &ArtifactPath,
        max: u64,
    ) -> Result<(), EvidenceReadError> {
        let rel = Bundle::undecodable_rel_path(task_id, name);
        if let Some(text) = read_capped(&self.root, &rel, 1024)? {
            return Err(EvidenceReadError {
                detail: format!(
                    "{name} could not be decoded while fetching: {}",
                    String::from_utf8_lossy(&text).trim()
                ),
                too_large: None,
            });
        }
        let rel = Bundle::too_large_rel_path(task_id, name);
        let Some(text) = read_capped(&self.root, &rel, 32)? else {
            return Ok(());
        };
        let limit = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(max);
        Err(EvidenceReadError {
            detail: format!("{name} was refused while fetching: larger than {limit} bytes"),
            too_large: Some(limit),
        })
    }

    /// Relative path of an artifact inside the bundle.
    pub fn artifact_rel_path(task_id: &TaskId, name: &ArtifactPath) -> PathBuf {
        Path::new(task_id.as_str())
            .join("artifacts")
            .join(name.to_relative_path())
    }
}

impl Evidence for Bundle {
    fn task(&self, task_id: &TaskId) -> Option<&Value> {
        self.tasks.get(task_id)
    }

    fn status(&self, task_id: &TaskId) -> Option<&TaskStatus> {
        self.statuses.get(task_id)
    }

    fn unusable(&self) -> Vec<UnusableFile> {
        self.unusable.clone()
    }

    fn read(
        &self,
        task_id: &TaskId,
        name: &ArtifactPath,
        max: u64,
    ) -> Result<Option<Vec<u8>>, EvidenceReadError> {
        self.refused_by_fetcher(task_id, name, max)?;
        read_capped(&self.root, &Bundle::artifact_rel_path(task_id, name), max)
    }

    fn source(
        &self,
        request: &crate::verify::rebuild::SourceRequest,
    ) -> Result<Option<crate::verify::rebuild::SourceFile>, EvidenceReadError> {
        use crate::verify::rebuild::{
            MAX_SOURCE_BYTES, SourceFile, SourceKind, SourceOrigin, TEMPLATE_FILE,
        };
        if request.kind == SourceKind::Template
            && let Some(c) = &self.checkout
        {
            // A clone without that commit (or an hg revision) cannot vouch for the template:
            // the bundle's copy is used, with its caveat.
            match c.read_at(&request.repository, &request.revision, TEMPLATE_FILE) {
                Ok(Some((bytes, place))) => {
                    return Ok(Some(SourceFile {
                        bytes,
                        origin: SourceOrigin::Checkout(place),
                    }));
                }
                Ok(None) => {}
                Err(detail) => {
                    return Err(EvidenceReadError {
                        detail,
                        too_large: None,
                    });
                }
            }
        }
        let Some(entry) = self.index.sources.iter().find(|e| e.url == request.url) else {
            return Ok(None);
        };
        let rel = Path::new(&entry.file);
        if entry.file
            != format!(
                "{SOURCES_DIR}/{}",
                crate::trust::sha256_hex(entry.url.as_bytes())
            )
        {
            return Err(EvidenceReadError {
                detail: format!(
                    "source file {:?} is not where the bundle format puts it",
                    entry.file
                ),
                too_large: None,
            });
        }
        let Some(bytes) = read_capped(&self.root, rel, MAX_SOURCE_BYTES)? else {
            return Ok(None);
        };
        if crate::trust::sha256_hex(&bytes) != entry.sha256 {
            return Err(EvidenceReadError {
                detail: "the stored source does not match its sha256 in bundle.json".into(),
                too_large: None,
            });
        }
        Ok(Some(SourceFile {
            bytes,
            origin: if self.sources_fetched {
                SourceOrigin::Fetched
            } else {
                SourceOrigin::Bundled
            },
        }))
    }

    fn digest(
        &self,
        task_id: &TaskId,
        name: &ArtifactPath,
        max: u64,
    ) -> Result<Option<FileDigest>, EvidenceReadError> {
        self.refused_by_fetcher(task_id, name, max)?;
        let Some(file) = open_no_symlinks(&self.root, &Bundle::artifact_rel_path(task_id, name))?
        else {
            return Ok(None);
        };
        hash_reader(file, max).map(Some)
    }
}

/// Streams `reader` through sha256, refusing more than `max` bytes.
pub fn hash_reader(reader: impl Read, max: u64) -> Result<FileDigest, EvidenceReadError> {
    let mut reader = reader.take(max.saturating_add(1));
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| EvidenceReadError {
            detail: e.to_string(),
            too_large: None,
        })?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max {
            return Err(EvidenceReadError {
                detail: format!("larger than {max} bytes"),
                too_large: Some(max),
            });
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(FileDigest {
        sha256: hex::encode(hasher.finalize()),
        size,
    })
}

/// Opens `root/rel` for reading, refusing symlinks in every component below `root` and
/// anything but a regular file at the end. `Ok(None)` when it does not exist.
pub fn open_no_symlinks(
    root: &Path,
    rel: &Path,
) -> Result<Option<std::fs::File>, EvidenceReadError> {
    let mut cur = root.to_path_buf();
    // Messages name files relative to the bundle (the auditor knows where the bundle is).
    let mut shown = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(part) = c else {
            return Err(EvidenceReadError {
                detail: format!("{} is not a plain relative path", rel.display()),
                too_large: None,
            });
        };
        cur.push(part);
        shown.push(part);
        let meta = match std::fs::symlink_metadata(&cur) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(EvidenceReadError {
                    detail: format!("{}: {e}", shown.display()),
                    too_large: None,
                });
            }
        };
        if meta.file_type().is_symlink() {
            return Err(EvidenceReadError {
                detail: format!("{} is a symlink", shown.display()),
                too_large: None,
            });
        }
        let last = i + 1 == comps.len();
        if last && !meta.is_file() {
            return Err(EvidenceReadError {
                detail: format!("{} is not a regular file", shown.display()),
                too_large: None,
            });
        }
    }
    std::fs::File::open(&cur)
        .map(Some)
        .map_err(|e| EvidenceReadError {
            detail: format!("{}: {e}", shown.display()),
            too_large: None,
        })
}

/// Reads `<id>/<file>` (or its too-large record) under [`Limits::max_task_bytes`]; a file
/// that is too large is recorded in `unusable` and reads as absent.
fn read_task_file(
    root: &Path,
    id: &TaskId,
    file: &'static str,
    limits: &Limits,
    unusable: &mut Vec<UnusableFile>,
) -> Result<Option<Vec<u8>>, BundleError> {
    let too_large = |max_bytes| UnusableFile {
        task_id: id.clone(),
        file,
        problem: Unusable::TooLarge(max_bytes),
    };
    let record = Bundle::too_large_task_file_rel_path(id, file);
    if let Ok(Some(text)) = read_capped(root, &record, 32) {
        let max = std::str::from_utf8(&text)
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok())
            .unwrap_or(limits.max_task_bytes);
        unusable.push(too_large(max));
        return Ok(None);
    }
    let rel = Path::new(id.as_str()).join(file);
    match read_capped(root, &rel, limits.max_task_bytes) {
        Ok(b) => Ok(b),
        Err(e) if e.too_large.is_some() => {
            unusable.push(too_large(limits.max_task_bytes));
            Ok(None)
        }
        Err(e) => Err(BundleError::Read {
            path: root.join(&rel),
            detail: e.detail,
        }),
    }
}

fn read_capped(root: &Path, rel: &Path, max: u64) -> Result<Option<Vec<u8>>, EvidenceReadError> {
    let Some(file) = open_no_symlinks(root, rel)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(|e| EvidenceReadError {
            detail: e.to_string(),
            too_large: None,
        })?;
    if out.len() as u64 > max {
        return Err(EvidenceReadError {
            detail: format!("{} is larger than {max} bytes", rel.display()),
            too_large: Some(max),
        });
    }
    Ok(Some(out))
}
