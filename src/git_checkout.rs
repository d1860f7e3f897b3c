//! The auditor's own git clone as a [`TemplateCheckout`]: `chainlock verify --bundle B --source
//! DIR` reads `.taskcluster.yml` at the decision's revision from `DIR` instead of trusting the
//! copy stored in the bundle.
//!
//! What binds the content is the full commit id: the file is read from the object database at
//! that commit (commit, then its tree, then the blob), never from the work tree or the index, so
//! an uncommitted edit or a checked-out other branch changes nothing. The repository URL the
//! decision names is informational; remotes are not compared. The repository is opened
//! isolated (its own configuration only: no global, system or environment configuration) and
//! with replacement objects (`refs/replace/`) disabled, so a replace ref cannot substitute
//! another commit for the one named.
//!
//! Pure Rust (`gix`): no `git` process is started.

use crate::verify::bundle::TemplateCheckout;
use crate::verify::rebuild::MAX_SOURCE_BYTES;
use gix::ObjectId;
use gix::objs::Kind;
use std::path::{Path, PathBuf};

/// A local git repository (a working clone or a bare repository) read at full commit ids.
#[derive(Debug)]
pub struct GitCheckout {
    repo: gix::ThreadSafeRepository,
    /// The directory as shown in descriptions and messages (canonical when possible).
    shown: PathBuf,
}

impl GitCheckout {
    /// Opens the repository at `dir`: a work tree (with `.git` in it) or a git directory (a bare
    /// repository, or a `.git` directory). Parent directories are not searched.
    pub fn open(dir: &Path) -> Result<GitCheckout, String> {
        let shown = std::fs::canonicalize(dir)
            .map_err(|e| format!("cannot open git repository {}: {e}", dir.display()))?;
        if !shown.is_dir() {
            return Err(format!("{} is not a directory", shown.display()));
        }
        let options = gix::open::Options::isolated()
            // Overrides of the CLI kind win over the repository's own configuration.
            .cli_overrides(["core.useReplaceRefs=false"]);
        let repo = gix::ThreadSafeRepository::open_opts(&shown, options).map_err(|e| {
            format!(
                "{} is not a git repository (neither a work tree with .git nor a bare \
                 repository): {}",
                shown.display(),
                error_chain(&e)
            )
        })?;
        Ok(GitCheckout { repo, shown })
    }

    fn fail(&self, revision: &str, path: &str, what: impl std::fmt::Display) -> String {
        format!(
            "git clone {} at {revision}, {path}: {what}",
            self.shown.display()
        )
    }
}

impl TemplateCheckout for GitCheckout {
    /// `Ok(None)` when this clone cannot say what `path` is at `revision`: the revision is not a
    /// full 40-hex (sha1) or 64-hex (sha256) commit id (an hg revision, an abbreviation, a
    /// branch name), its hash kind is not the repository's, or the commit is not in the object
    /// database. The caller then has no trusted copy: falling back to the bundle's stored copy
    /// is the caller's choice, and that copy carries the bundle's caveat (nothing binds it to
    /// the revision). Everything else that goes wrong is an error: the commit is there but
    /// `path` is missing, is not a regular file (a symlink, a submodule, a directory), or is
    /// larger than [`MAX_SOURCE_BYTES`]; `path` is not a plain relative path; the object
    /// database is damaged.
    fn read_at(
        &self,
        _repository: &str,
        revision: &str,
        path: &str,
    ) -> Result<Option<(Vec<u8>, String)>, String> {
        let Some(id) = full_commit_id(revision) else {
            return Ok(None);
        };
        let components = plain_relative_path(path).map_err(|e| self.fail(revision, path, e))?;
        let repo = self.repo.to_thread_local();
        if id.kind() != repo.object_hash() {
            return Ok(None);
        }
        let fail = |what: String| self.fail(revision, path, what);

        let header = repo
            .try_find_header(id)
            .map_err(|e| fail(format!("cannot read commit {id}: {}", error_chain(&e))))?;
        let Some(header) = header else {
            return Ok(None);
        };
        if header.kind() != Kind::Commit {
            return Err(fail(format!("{id} is a {}, not a commit", header.kind())));
        }
        let commit = repo
            .find_commit(id)
            .map_err(|e| fail(format!("cannot read commit {id}: {}", error_chain(&e))))?;
        let mut tree_id = commit
            .tree_id()
            .map_err(|e| fail(format!("cannot decode commit {id}: {}", error_chain(&e))))?
            .detach();

        let mut walked = String::new();
        let last = components.len().saturating_sub(1);
        for (i, name) in components.iter().enumerate() {
            let tree = repo
                .find_tree(tree_id)
                .map_err(|e| fail(format!("cannot read tree {tree_id}: {}", error_chain(&e))))?;
            let decoded = tree
                .decode()
                .map_err(|e| fail(format!("cannot decode tree {tree_id}: {}", error_chain(&e))))?;
            let mut found = decoded
                .entries
                .iter()
                .filter(|e| e.filename == name.as_bytes());
            let entry = found.next().map(|e| (e.mode, e.oid.to_owned()));
            if found.next().is_some() {
                return Err(fail(format!(
                    "tree {tree_id} names {name:?} twice (a damaged repository)"
                )));
            }
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(name);
            let Some((mode, oid)) = entry else {
                return Err(fail(format!("{walked} does not exist at this commit")));
            };
            if i < last {
                if !mode.is_tree() {
                    return Err(fail(format!(
                        "{walked} is a {}, not a directory",
                        entry_kind(mode)
                    )));
                }
                tree_id = oid;
                continue;
            }
            if !mode.is_blob() {
                return Err(fail(format!(
                    "{walked} is a {}, not a regular file",
                    entry_kind(mode)
                )));
            }
            return self.read_blob(&repo, oid, &fail).map(|bytes| {
                Some((
                    bytes,
                    format!("git clone {} at {}", self.shown.display(), id),
                ))
            });
        }
        // `plain_relative_path` returns at least one component.
        Err(fail("empty path".into()))
    }
}

impl GitCheckout {
    /// The blob `oid`, refusing more than [`MAX_SOURCE_BYTES`] before inflating it.
    fn read_blob(
        &self,
        repo: &gix::Repository,
        oid: ObjectId,
        fail: &dyn Fn(String) -> String,
    ) -> Result<Vec<u8>, String> {
        let header = repo
            .find_header(oid)
            .map_err(|e| fail(format!("cannot read blob {oid}: {}", error_chain(&e))))?;
        if header.kind() != Kind::Blob {
            return Err(fail(format!(
                "the entry names {oid}, a {}, not a blob",
                header.kind()
            )));
        }
        if header.size() > MAX_SOURCE_BYTES {
            return Err(fail(format!(
                "larger than {MAX_SOURCE_BYTES} bytes ({} bytes)",
                header.size()
            )));
        }
        let object = repo
            .find_object(oid)
            .map_err(|e| fail(format!("cannot read blob {oid}: {}", error_chain(&e))))?;
        if object.kind != Kind::Blob || object.data.len() as u64 > MAX_SOURCE_BYTES {
            return Err(fail(format!(
                "blob {oid} does not match its header ({} bytes of a {})",
                object.data.len(),
                object.kind
            )));
        }
        Ok(object.detach().data)
    }
}

/// `revision` as an object id if it is a full sha1 (40) or sha256 (64) hex id, either case.
fn full_commit_id(revision: &str) -> Option<ObjectId> {
    if !matches!(revision.len(), 40 | 64) || !revision.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    ObjectId::from_hex(revision.as_bytes()).ok()
}

/// The components of a plain relative path (`a/b.yml`): no empty, `.` or `..` component, not
/// absolute, no backslash or NUL.
fn plain_relative_path(path: &str) -> Result<Vec<&str>, String> {
    if path.is_empty() {
        return Err("empty path".into());
    }
    if path.starts_with('/') {
        return Err("not a relative path".into());
    }
    if path.contains('\\') || path.contains('\0') {
        return Err("a path holds neither a backslash nor a NUL byte".into());
    }
    let components: Vec<&str> = path.split('/').collect();
    for c in &components {
        match *c {
            "" => return Err("empty path component".into()),
            "." | ".." => return Err(format!("path component {c:?} is not allowed")),
            _ => {}
        }
    }
    Ok(components)
}

fn entry_kind(mode: gix::objs::tree::EntryMode) -> &'static str {
    if mode.is_link() {
        "symlink"
    } else if mode.is_commit() {
        "submodule"
    } else if mode.is_tree() {
        "directory"
    } else {
        "regular file"
    }
}

/// `e` and its sources, joined with `: `.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.ends_with(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}
