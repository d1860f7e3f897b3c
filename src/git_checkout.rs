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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const REPO: &str = "https://github.com/example/project";

    /// Runs `git` in `dir`, isolated from the machine's configuration, and returns its stdout.
    // Tests build their fixtures with the git CLI; product code never starts git.
    #[allow(clippy::disallowed_methods)]
    fn git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_SYSTEM", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env_remove("GIT_DIR")
            .env_remove("GIT_WORK_TREE")
            .env_remove("GIT_INDEX_FILE")
            .env_remove("GIT_OBJECT_DIRECTORY")
            .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
            .args([
                "-c",
                "user.name=Chainlock Test",
                "-c",
                "user.email=test@example.invalid",
                "-c",
                "init.defaultBranch=main",
                "-c",
                "commit.gpgsign=false",
                "-c",
                "core.symlinks=true",
            ])
            .args(args)
            .output()
            .expect("git runs");
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .expect("utf-8")
            .trim()
            .to_string()
    }

    /// A work tree in `dir` with `files` committed; returns the commit id.
    fn commit(dir: &Path, files: &[(&str, &[u8])]) -> String {
        for (name, bytes) in files {
            let p = dir.join(name);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            std::fs::write(&p, bytes).expect("write");
            git(dir, &["add", "--", name]);
        }
        git(dir, &["commit", "-q", "--allow-empty", "-m", "fixture"]);
        git(dir, &["rev-parse", "HEAD"])
    }

    fn init(dir: &Path) {
        git(dir, &["init", "-q"]);
    }

    fn read(c: &GitCheckout, rev: &str, path: &str) -> Result<Option<Vec<u8>>, String> {
        c.read_at(REPO, rev, path).map(|o| o.map(|(b, _)| b))
    }

    #[test]
    fn reads_the_committed_bytes_not_the_work_tree() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let first = commit(t.path(), &[(".taskcluster.yml", b"version: 1\n")]);
        let second = commit(t.path(), &[(".taskcluster.yml", b"version: 2\n")]);
        // Uncommitted edits, staged and unstaged, change nothing.
        std::fs::write(t.path().join(".taskcluster.yml"), b"staged: evil\n").unwrap();
        git(t.path(), &["add", ".taskcluster.yml"]);
        std::fs::write(t.path().join(".taskcluster.yml"), b"work tree: evil\n").unwrap();

        let c = GitCheckout::open(t.path()).unwrap();
        let (bytes, place) = c
            .read_at(REPO, &second, ".taskcluster.yml")
            .unwrap()
            .unwrap();
        assert_eq!(bytes, b"version: 2\n");
        let shown = std::fs::canonicalize(t.path()).unwrap();
        assert_eq!(place, format!("git clone {} at {second}", shown.display()));
        // An older commit gives that commit's file; uppercase hex names the same commit.
        assert_eq!(
            read(&c, &first, ".taskcluster.yml").unwrap().unwrap(),
            b"version: 1\n"
        );
        let upper = first.to_uppercase();
        let (bytes, place) = c
            .read_at(REPO, &upper, ".taskcluster.yml")
            .unwrap()
            .unwrap();
        assert_eq!(bytes, b"version: 1\n");
        assert!(place.ends_with(&first), "{place}");
        // The repository URL is informational.
        assert!(
            c.read_at("https://hg.example/other", &first, ".taskcluster.yml")
                .unwrap()
                .is_some()
        );
        // The `.git` directory itself opens too.
        let c = GitCheckout::open(&t.path().join(".git")).unwrap();
        assert_eq!(
            read(&c, &second, ".taskcluster.yml").unwrap().unwrap(),
            b"version: 2\n"
        );
    }

    #[test]
    fn nested_paths_and_missing_files() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let rev = commit(
            t.path(),
            &[("ci/config/a.yml", b"a\n"), ("top.yml", b"top\n")],
        );
        let c = GitCheckout::open(t.path()).unwrap();
        assert_eq!(read(&c, &rev, "ci/config/a.yml").unwrap().unwrap(), b"a\n");
        // The commit is there, the file is not: an error, not "cannot say".
        let e = read(&c, &rev, ".taskcluster.yml").unwrap_err();
        assert!(
            e.contains(".taskcluster.yml does not exist at this commit"),
            "{e}"
        );
        let e = read(&c, &rev, "ci/nope/a.yml").unwrap_err();
        assert!(e.contains("ci/nope does not exist"), "{e}");
        // A file used as a directory.
        let e = read(&c, &rev, "top.yml/x").unwrap_err();
        assert!(
            e.contains("top.yml is a regular file, not a directory"),
            "{e}"
        );
    }

    #[test]
    fn revisions_the_clone_cannot_serve_are_none() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let rev = commit(t.path(), &[(".taskcluster.yml", b"v\n")]);
        let c = GitCheckout::open(t.path()).unwrap();
        // Unknown commit (sha1 and sha256 sized: this repository is sha1).
        for unknown in ["0".repeat(40), "ab".repeat(20), "cd".repeat(32)] {
            assert_eq!(
                read(&c, &unknown, ".taskcluster.yml").unwrap(),
                None,
                "{unknown}"
            );
        }
        // Abbreviated, over-long, non-hex, a branch name, an hg-style revision, empty.
        let short = rev.get(..12).unwrap().to_string();
        let long = format!("{rev}0");
        let nonhex = format!("{}g", rev.get(..39).unwrap());
        for bad in [
            short.as_str(),
            long.as_str(),
            nonhex.as_str(),
            "main",
            "HEAD",
            "tip",
            "",
        ] {
            assert_eq!(read(&c, bad, ".taskcluster.yml").unwrap(), None, "{bad:?}");
        }
    }

    #[test]
    fn a_non_commit_object_id_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let rev = commit(t.path(), &[(".taskcluster.yml", b"v\n")]);
        let c = GitCheckout::open(t.path()).unwrap();
        let tree = git(t.path(), &["rev-parse", &format!("{rev}^{{tree}}")]);
        let e = read(&c, &tree, ".taskcluster.yml").unwrap_err();
        assert!(e.contains("not a commit"), "{e}");
    }

    #[test]
    fn symlinks_directories_and_submodules_are_errors() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        commit(t.path(), &[("real.yml", b"v\n"), ("dir/inner.yml", b"i\n")]);
        std::os::unix::fs::symlink("real.yml", t.path().join(".taskcluster.yml")).unwrap();
        std::os::unix::fs::symlink("dir", t.path().join("linkdir")).unwrap();
        git(t.path(), &["add", ".taskcluster.yml", "linkdir"]);
        let sub = git(t.path(), &["rev-parse", "HEAD"]);
        git(
            t.path(),
            &[
                "update-index",
                "--add",
                "--cacheinfo",
                &format!("160000,{sub},sub"),
            ],
        );
        let rev = commit(t.path(), &[]);
        let c = GitCheckout::open(t.path()).unwrap();
        let e = read(&c, &rev, ".taskcluster.yml").unwrap_err();
        assert!(
            e.contains(".taskcluster.yml is a symlink, not a regular file"),
            "{e}"
        );
        let e = read(&c, &rev, "dir").unwrap_err();
        assert!(e.contains("dir is a directory, not a regular file"), "{e}");
        let e = read(&c, &rev, "linkdir/inner.yml").unwrap_err();
        assert!(e.contains("linkdir is a symlink, not a directory"), "{e}");
        let e = read(&c, &rev, "sub").unwrap_err();
        assert!(e.contains("sub is a submodule, not a regular file"), "{e}");
        // The symlink's target is a readable file on its own.
        assert_eq!(read(&c, &rev, "real.yml").unwrap().unwrap(), b"v\n");
    }

    #[test]
    fn only_plain_relative_paths() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let rev = commit(
            t.path(),
            &[(".taskcluster.yml", b"v\n"), ("d/x.yml", b"x\n")],
        );
        let c = GitCheckout::open(t.path()).unwrap();
        for bad in [
            "..",
            "../.taskcluster.yml",
            "d/../.taskcluster.yml",
            "./.taskcluster.yml",
            "/.taskcluster.yml",
            "/etc/passwd",
            "d//x.yml",
            "d/",
            "",
            "d\\x.yml",
            "a\0b",
        ] {
            let e = read(&c, &rev, bad).unwrap_err();
            assert!(e.starts_with("git clone "), "{bad:?}: {e}");
        }
    }

    #[test]
    fn packed_repository() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let first = commit(t.path(), &[(".taskcluster.yml", b"version: 1\n")]);
        let second = commit(t.path(), &[(".taskcluster.yml", b"version: 1\nmore: 2\n")]);
        git(t.path(), &["gc", "-q", "--aggressive", "--prune=now"]);
        let counts = git(t.path(), &["count-objects", "-v"]);
        assert!(counts.lines().any(|l| l == "count: 0"), "{counts}");
        assert!(counts.lines().any(|l| l == "packs: 1"), "{counts}");
        let c = GitCheckout::open(t.path()).unwrap();
        assert_eq!(
            read(&c, &first, ".taskcluster.yml").unwrap().unwrap(),
            b"version: 1\n"
        );
        assert_eq!(
            read(&c, &second, ".taskcluster.yml").unwrap().unwrap(),
            b"version: 1\nmore: 2\n"
        );
        assert_eq!(read(&c, &"1".repeat(40), ".taskcluster.yml").unwrap(), None);
    }

    #[test]
    fn bare_clone() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir(&src).unwrap();
        init(&src);
        let rev = commit(&src, &[(".taskcluster.yml", b"bare\n")]);
        git(
            t.path(),
            &["clone", "-q", "--bare", "--no-local", "src", "bare.git"],
        );
        let c = GitCheckout::open(&t.path().join("bare.git")).unwrap();
        let (bytes, place) = c.read_at(REPO, &rev, ".taskcluster.yml").unwrap().unwrap();
        assert_eq!(bytes, b"bare\n");
        assert!(place.contains("bare.git at "), "{place}");
    }

    #[test]
    fn the_size_cap() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let cap = usize::try_from(MAX_SOURCE_BYTES).unwrap();
        let at_cap = vec![b'a'; cap];
        let over = vec![b'b'; cap + 1];
        let rev = commit(t.path(), &[("at-cap.yml", &at_cap), ("over.yml", &over)]);
        let c = GitCheckout::open(t.path()).unwrap();
        assert_eq!(read(&c, &rev, "at-cap.yml").unwrap().unwrap().len(), cap);
        let e = read(&c, &rev, "over.yml").unwrap_err();
        assert!(
            e.contains(&format!("larger than {MAX_SOURCE_BYTES} bytes")),
            "{e}"
        );
        // Packed (possibly as a delta of the other) the header still tells the size.
        git(t.path(), &["gc", "-q", "--prune=now"]);
        let c = GitCheckout::open(t.path()).unwrap();
        assert_eq!(read(&c, &rev, "at-cap.yml").unwrap().unwrap().len(), cap);
        let e = read(&c, &rev, "over.yml").unwrap_err();
        assert!(
            e.contains(&format!("larger than {MAX_SOURCE_BYTES} bytes")),
            "{e}"
        );
    }

    #[test]
    fn replace_refs_do_not_substitute_the_commit() {
        let t = tempfile::tempdir().unwrap();
        init(t.path());
        let good = commit(t.path(), &[(".taskcluster.yml", b"good\n")]);
        let evil = commit(t.path(), &[(".taskcluster.yml", b"evil\n")]);
        git(t.path(), &["replace", &good, &evil]);
        // git itself now shows the replacement...
        let shown = git(t.path(), &["show", &format!("{good}:.taskcluster.yml")]);
        assert_eq!(shown, "evil");
        // ...the checkout reads the commit that was named.
        let c = GitCheckout::open(t.path()).unwrap();
        assert_eq!(
            read(&c, &good, ".taskcluster.yml").unwrap().unwrap(),
            b"good\n"
        );
    }

    #[test]
    fn sha256_repository() {
        let t = tempfile::tempdir().unwrap();
        git(t.path(), &["init", "-q", "--object-format=sha256"]);
        let rev = commit(t.path(), &[(".taskcluster.yml", b"sha256\n")]);
        assert_eq!(rev.len(), 64);
        let c = GitCheckout::open(t.path()).unwrap();
        assert_eq!(
            read(&c, &rev, ".taskcluster.yml").unwrap().unwrap(),
            b"sha256\n"
        );
        // A sha1-sized id cannot name a commit here.
        assert_eq!(
            read(&c, &"ab".repeat(20), ".taskcluster.yml").unwrap(),
            None
        );
        assert_eq!(
            read(&c, &"ab".repeat(32), ".taskcluster.yml").unwrap(),
            None
        );
    }

    #[test]
    fn not_a_repository() {
        let t = tempfile::tempdir().unwrap();
        let e = GitCheckout::open(t.path()).unwrap_err();
        assert!(e.contains("is not a git repository"), "{e}");
        let e = GitCheckout::open(&t.path().join("missing")).unwrap_err();
        assert!(e.contains("cannot open git repository"), "{e}");
        std::fs::write(t.path().join("file"), b"x").unwrap();
        let e = GitCheckout::open(&t.path().join("file")).unwrap_err();
        assert!(e.contains("is not a directory"), "{e}");
        // A subdirectory of a work tree is not the repository (no search upwards).
        let repo = t.path().join("repo");
        std::fs::create_dir_all(repo.join("sub")).unwrap();
        init(&repo);
        let e = GitCheckout::open(&repo.join("sub")).unwrap_err();
        assert!(e.contains("is not a git repository"), "{e}");
    }
}
