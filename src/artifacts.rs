//! Artifact collection: turns what the script left in its artifact directory into a checked,
//! hashed list of files to upload.
//!
//! Why it exists: the artifact directory is written by the script, so its contents are input
//! to be checked, not trusted. It runs only after every process of the script is dead
//! ([`crate::sandbox::Sandbox::contain`]). Every regular file becomes an artifact whose name is
//! its relative path. Symlinks, hard links, special files, names that are not clean UTF-8 or
//! carry control, line-separator or bidi characters, and names the worker reserves for itself
//! (logs, chain-of-trust document) are refused and reported, and nothing is uploaded for them;
//! what a symlink points to is never read.
//!
//! "What is signed is what is uploaded": each file is opened once, relative to its directory's
//! handle, without following links and without blocking, checked on the handle, and copied into
//! worker-owned staging while its sha256 is taken (streaming: memory does not grow with file
//! size). The chain-of-trust stage lists exactly these hashes and the upload reads exactly
//! these copies, so a swap in the artifact directory after collection changes nothing. Counts,
//! total bytes, entries looked at and refusals listed are all capped ([`Limits`]).
//!
//! What it must not do: upload, or follow anything out of the directory. It is synchronous
//! filesystem code; async callers run it with `spawn_blocking`.

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag, fstat};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Artifact names only the worker may create. A script that writes one of them fails the task.
pub const RESERVED_NAMES: [&str; 7] = [
    "public/logs/live.log",
    "public/logs/live_backing.log",
    "public/logs/chain_of_trust.log",
    "public/logs/certified.log",
    "public/chain-of-trust.json",
    "public/chain-of-trust.json.asc",
    "public/chain-of-trust.json.sig",
];

/// Caps on what one task may produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most artifacts per task (default 1000, `[script] max_artifacts`); beyond it the task
    /// fails.
    pub max_artifacts: usize,
    /// Most bytes over all artifacts (default 8 GiB, `[script] max_artifact_bytes`); beyond it
    /// the task fails and nothing more is copied.
    pub max_total_bytes: u64,
    /// Longest artifact name in bytes (default 1024).
    pub max_name_bytes: usize,
    /// Deepest directory nesting (default 32).
    pub max_depth: usize,
    /// Most directory entries looked at (files, directories, anything), so a script that
    /// leaves 300 000 symlinks costs a bounded walk (default 10 000).
    pub max_entries: usize,
    /// Most refusals listed one by one; the rest are counted (default 100).
    pub max_listed_refusals: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_artifacts: 1000,
            max_total_bytes: 8 * 1024 * 1024 * 1024,
            max_name_bytes: 1024,
            max_depth: 32,
            max_entries: 10_000,
            max_listed_refusals: 100,
        }
    }
}

/// One file to upload, hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedArtifact {
    /// Artifact name (`public/build/target.tar.gz`): the path relative to the artifact dir.
    pub name: String,
    /// The worker-owned copy that is uploaded (in the staging directory, never the script's).
    pub path: PathBuf,
    /// Lower-case hex sha256 of the file's bytes (before any gzip on the wire).
    pub sha256: String,
    /// Size in bytes (before any gzip).
    pub size: u64,
    /// Content type to declare.
    pub content_type: String,
    /// Whether to send it with `Content-Encoding: gzip`.
    pub gzip: bool,
}

/// Why an entry of the artifact directory was refused, or the directory could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// A symlink: never followed, never uploaded.
    #[error("artifact {name:?} is a symlink: refused (its target is not read)")]
    Symlink {
        /// Relative path of the link.
        name: String,
    },
    /// A regular file with other hard links: its bytes may belong to a file outside the dir.
    #[error("artifact {name:?} has {links} hard links: refused")]
    HardLink {
        /// Relative path.
        name: String,
        /// Link count.
        links: u64,
    },
    /// A FIFO, socket or device.
    #[error("artifact {name:?} is not a regular file: refused")]
    NotRegular {
        /// Relative path.
        name: String,
    },
    /// The name is not usable as an artifact name.
    #[error("artifact name {name:?} refused: {reason}")]
    BadName {
        /// Relative path (lossily decoded).
        name: String,
        /// Why.
        reason: &'static str,
    },
    /// The script wrote a name the worker reserves.
    #[error("artifact {name:?} is reserved for the worker: refused")]
    Reserved {
        /// The name.
        name: String,
    },
    /// The entry changed between being looked at and being opened or read (a swap for a
    /// symlink, a FIFO or another file).
    #[error("artifact {name:?} changed while it was collected: refused")]
    Escapes {
        /// The name.
        name: String,
    },
    /// More artifacts than [`Limits::max_artifacts`].
    #[error("more than {limit} artifacts")]
    TooMany {
        /// The limit.
        limit: usize,
    },
    /// More bytes than [`Limits::max_total_bytes`].
    #[error("artifacts exceed {limit} bytes in total (at {name:?}): nothing more collected")]
    TooLarge {
        /// The limit.
        limit: u64,
        /// The file being copied when the limit was passed.
        name: String,
    },
    /// More directory entries than [`Limits::max_entries`].
    #[error("the artifact directory has more than {limit} entries: the rest were not looked at")]
    TooManyEntries {
        /// The limit.
        limit: usize,
    },
    /// Deeper nesting than [`Limits::max_depth`].
    #[error("directory {name:?} nests deeper than {limit} levels")]
    TooDeep {
        /// Relative path of the directory.
        name: String,
        /// The limit.
        limit: usize,
    },
    /// The artifact directory itself, or a file in it, could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The result of collecting: the files to upload and the entries refused. A non-empty
/// `refused` (or `refused_unlisted > 0`) fails the task; the accepted files are still uploaded
/// to help debugging.
#[derive(Debug, Default)]
pub struct Collection {
    /// Accepted, hashed, staged artifacts, sorted by name.
    pub artifacts: Vec<CollectedArtifact>,
    /// Refused entries, in walk order, at most [`Limits::max_listed_refusals`].
    pub refused: Vec<ArtifactError>,
    /// Refusals beyond those listed.
    pub refused_unlisted: usize,
}

impl Collection {
    /// Every refusal, listed or not.
    pub fn refused_count(&self) -> usize {
        self.refused.len().saturating_add(self.refused_unlisted)
    }

    fn refuse(&mut self, e: ArtifactError, limits: &Limits) {
        if self.refused.len() < limits.max_listed_refusals {
            self.refused.push(e);
        } else {
            self.refused_unlisted = self.refused_unlisted.saturating_add(1);
        }
    }
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);
/// Every entry is opened with these, directories included (their handle is then walked).
const FILE_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_NONBLOCK)
    .union(OFlag::O_NOCTTY)
    .union(OFlag::O_CLOEXEC);

/// Walks `dir` and copies every regular file into `staging` (a worker-owned directory the
/// script never had access to), hashing the bytes as they are copied, so the hash that goes
/// into the signed document and the bytes that are uploaded are the same bytes.
///
/// Every entry is opened once, relative to its parent directory's handle, with
/// `O_NOFOLLOW|O_NONBLOCK` (a symlink is refused, a directory swapped for a symlink is never
/// walked, a FIFO, socket or device cannot block the worker), and classified on the handle:
/// a directory is walked through that same handle, a regular file with one link is staged. Only a failure to
/// open `dir` itself is an `Err`; problems with entries end up in [`Collection::refused`].
pub fn collect(dir: &Path, staging: &Path, limits: &Limits) -> Result<Collection, ArtifactError> {
    let root = nix::fcntl::open(dir, DIR_FLAGS, Mode::empty()).map_err(|e| ArtifactError::Io {
        path: dir.to_owned(),
        source: e.into(),
    })?;
    let mut walk = Walk {
        out: Collection::default(),
        staging,
        limits,
        entries: 0,
        bytes: 0,
        stop: false,
    };
    // (directory handle, name prefix, depth); handles are opened when their turn comes.
    let mut stack: Vec<(OwnedFd, String, usize)> = vec![(root, String::new(), 0)];
    while let Some((fd, prefix, depth)) = stack.pop() {
        if walk.stop {
            break;
        }
        walk.directory(fd, &prefix, depth, &mut stack);
    }
    walk.out.artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(walk.out)
}

struct Walk<'a> {
    out: Collection,
    staging: &'a Path,
    limits: &'a Limits,
    entries: usize,
    bytes: u64,
    /// A limit that ends the walk was reached.
    stop: bool,
}

impl Walk<'_> {
    fn directory(
        &mut self,
        fd: OwnedFd,
        prefix: &str,
        depth: usize,
        stack: &mut Vec<(OwnedFd, String, usize)>,
    ) {
        let listing = match fd
            .try_clone()
            .and_then(|f| nix::dir::Dir::from_fd(f).map_err(std::io::Error::from))
        {
            Ok(d) => d,
            Err(source) => {
                self.out.refuse(
                    ArtifactError::Io {
                        path: PathBuf::from(prefix),
                        source,
                    },
                    self.limits,
                );
                return;
            }
        };
        let mut names: Vec<Vec<u8>> = Vec::new();
        for entry in listing {
            let Ok(entry) = entry else { continue };
            let bytes = entry.file_name().to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(bytes.to_vec());
            }
        }
        for raw in names {
            if self.stop {
                return;
            }
            self.entries = self.entries.saturating_add(1);
            if self.entries > self.limits.max_entries {
                self.out.refuse(
                    ArtifactError::TooManyEntries {
                        limit: self.limits.max_entries,
                    },
                    self.limits,
                );
                self.stop = true;
                return;
            }
            self.entry(&fd, prefix, depth, &raw, stack);
        }
    }

    fn entry(
        &mut self,
        dir: &OwnedFd,
        prefix: &str,
        depth: usize,
        raw: &[u8],
        stack: &mut Vec<(OwnedFd, String, usize)>,
    ) {
        let limits = self.limits;
        let Ok(component) = std::str::from_utf8(raw) else {
            let name = format!("{prefix}{}", String::from_utf8_lossy(raw));
            self.out.refuse(
                ArtifactError::BadName {
                    name,
                    reason: "not valid UTF-8",
                },
                limits,
            );
            return;
        };
        let name = format!("{prefix}{component}");
        let io_refusal = |name: &str, e: Errno| ArtifactError::Io {
            path: PathBuf::from(name),
            source: e.into(),
        };
        // Open first, classify on the handle: there is no window between looking at an entry
        // and opening it for a swap to slip into. `O_NOFOLLOW` refuses a symlink (ELOOP),
        // `O_NONBLOCK` keeps a FIFO from blocking, a socket cannot be opened (ENXIO).
        let fd = match nix::fcntl::openat(dir, raw, FILE_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP) => {
                self.out.refuse(ArtifactError::Symlink { name }, limits);
                return;
            }
            Err(Errno::ENXIO | Errno::EOPNOTSUPP | Errno::ENODEV) => {
                self.out.refuse(ArtifactError::NotRegular { name }, limits);
                return;
            }
            Err(e) => {
                self.out.refuse(io_refusal(&name, e), limits);
                return;
            }
        };
        let opened = match fstat(&fd) {
            Ok(st) => st,
            Err(e) => {
                self.out.refuse(io_refusal(&name, e), limits);
                return;
            }
        };
        match SFlag::from_bits_truncate(opened.st_mode & SFlag::S_IFMT.bits()) {
            SFlag::S_IFDIR => {
                if depth + 1 > limits.max_depth {
                    self.out.refuse(
                        ArtifactError::TooDeep {
                            name,
                            limit: limits.max_depth,
                        },
                        limits,
                    );
                } else {
                    stack.push((fd, format!("{name}/"), depth + 1));
                }
            }
            SFlag::S_IFREG => {
                if let Err(e) = check_name(&name, limits) {
                    self.out.refuse(e, limits);
                } else if opened.st_nlink > 1 {
                    self.out.refuse(
                        ArtifactError::HardLink {
                            name,
                            links: opened.st_nlink,
                        },
                        limits,
                    );
                } else if self.out.artifacts.len() >= limits.max_artifacts {
                    self.out.refuse(
                        ArtifactError::TooMany {
                            limit: limits.max_artifacts,
                        },
                        limits,
                    );
                    self.stop = true;
                } else {
                    match self.stage(fd, &name, &opened) {
                        Ok(a) => self.out.artifacts.push(a),
                        Err(e) => {
                            if matches!(e, ArtifactError::TooLarge { .. }) {
                                self.stop = true;
                            }
                            self.out.refuse(e, limits);
                        }
                    }
                }
            }
            _ => self.out.refuse(ArtifactError::NotRegular { name }, limits),
        }
    }

    /// Copies the opened regular file into the staging directory while hashing. The bytes
    /// hashed are the bytes staged, and only the staged copy is uploaded.
    fn stage(
        &mut self,
        fd: OwnedFd,
        name: &str,
        opened: &FileStat,
    ) -> Result<CollectedArtifact, ArtifactError> {
        let changed = || ArtifactError::Escapes {
            name: name.to_owned(),
        };
        let mut src = fs::File::from(fd);
        let index = self.out.artifacts.len();
        let path = self.staging.join(index.to_string());
        let io = |source| ArtifactError::Io {
            path: path.clone(),
            source,
        };
        let mut dst = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut size: u64 = 0;
        loop {
            let n = match src.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(io(e)),
            };
            if n == 0 {
                break;
            }
            let chunk = buf.get(..n).ok_or_else(changed)?;
            size = size.saturating_add(n as u64);
            self.bytes = self.bytes.saturating_add(n as u64);
            if self.bytes > self.limits.max_total_bytes {
                drop(dst);
                let _ = fs::remove_file(&path);
                return Err(ArtifactError::TooLarge {
                    limit: self.limits.max_total_bytes,
                    name: name.to_owned(),
                });
            }
            hasher.update(chunk);
            dst.write_all(chunk).map_err(io)?;
        }
        // No fsync: the staged copy is uploaded and deleted within the run; after a crash
        // the task is rerun.
        // The file must not have changed under us (all script processes are dead by now; this
        // is a second line of defence).
        let after = fstat(src.as_fd()).map_err(|_| changed())?;
        if u64::try_from(after.st_size).ok() != Some(size)
            || after.st_mtime != opened.st_mtime
            || after.st_mtime_nsec != opened.st_mtime_nsec
        {
            let _ = fs::remove_file(&path);
            return Err(changed());
        }
        let (content_type, gzip) = content_type_for(name);
        Ok(CollectedArtifact {
            name: name.to_owned(),
            path,
            sha256: hex::encode(hasher.finalize()),
            size,
            content_type: content_type.to_owned(),
            gzip,
        })
    }
}

/// Checks one artifact name (relative path with `/` separators).
pub fn check_name(name: &str, limits: &Limits) -> Result<(), ArtifactError> {
    let bad = |reason| {
        Err(ArtifactError::BadName {
            name: name.to_owned(),
            reason,
        })
    };
    if name.len() > limits.max_name_bytes {
        return bad("too long");
    }
    // The one lexical rule for names joined to a directory (shared with verification and the
    // scripts): no absolute path, `..`, `.`, empty component, backslash or control character.
    if let Err(reason) = crate::artifact_path::ArtifactPath::parse(name) {
        return Err(ArtifactError::BadName {
            name: name.to_owned(),
            reason: reason.as_str(),
        });
    }
    if RESERVED_NAMES.contains(&name) {
        return Err(ArtifactError::Reserved {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Content type by extension (longest match, case-insensitive) and whether to gzip on the wire.
/// Only text types are gzipped; archives keep their own compression and no `Content-Encoding`
/// (a `.tar.gz` sent with `Content-Encoding: gzip` is silently unpacked by HTTP clients and no
/// longer matches its hash).
pub fn content_type_for(name: &str) -> (&'static str, bool) {
    const MAP: &[(&str, &str)] = &[
        (".tar.gz", "application/x-tar"),
        (".tgz", "application/x-tar"),
        (".tar.bz2", "application/x-tar"),
        (".tar.xz", "application/x-tar"),
        (".tar.zst", "application/x-tar"),
        (".tar", "application/x-tar"),
        (".txt", "text/plain"),
        (".log", "text/plain"),
        (".asc", "text/plain"),
        (".diff", "text/plain"),
        (".patch", "text/plain"),
        (".json", "application/json"),
        (".xml", "application/xml"),
        (".html", "text/html"),
        (".htm", "text/html"),
        (".css", "text/css"),
        (".csv", "text/csv"),
        (".gz", "application/gzip"),
        (".bz2", "application/x-bzip2"),
        (".xz", "application/x-xz"),
        (".zst", "application/zstd"),
        (".zip", "application/zip"),
        (".dmg", "application/x-apple-diskimage"),
        (".apk", "application/vnd.android.package-archive"),
        (".msi", "application/x-msi"),
        (".exe", "application/x-msdownload"),
        (".sig", "application/octet-stream"),
        (".mar", "application/octet-stream"),
    ];
    const GZIP: &[&str] = &[
        "text/plain",
        "text/html",
        "text/css",
        "text/csv",
        "application/json",
        "application/xml",
    ];
    let lower = name.to_ascii_lowercase();
    let content_type = MAP
        .iter()
        .filter(|(ext, _)| lower.ends_with(ext))
        .max_by_key(|(ext, _)| ext.len())
        .map(|(_, ct)| *ct)
        .unwrap_or("application/octet-stream");
    (content_type, GZIP.contains(&content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    #[test]
    fn collects_hashes_and_types() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "public/foo", b"foo\n");
        write(dir.path(), "public/logs/bar", b"bar\n");
        write(
            dir.path(),
            "public/build/target.tar.gz",
            b"not really a tarball",
        );
        write(dir.path(), "public/notes.txt", b"hello");
        let staging = tempfile::tempdir().unwrap();
        let c = collect(dir.path(), staging.path(), &Limits::default()).unwrap();
        assert!(c.refused.is_empty(), "{:?}", c.refused);
        let names: Vec<&str> = c.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "public/build/target.tar.gz",
                "public/foo",
                "public/logs/bar",
                "public/notes.txt"
            ]
        );
        // Known answers from shared/testdata/README.md.
        assert_eq!(
            c.artifacts[1].sha256,
            "b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"
        );
        assert_eq!(
            c.artifacts[2].sha256,
            "7d865e959b2466918c9863afca942d0fb89d7c9ac0c99bafc3749504ded97730"
        );
        assert_eq!(c.artifacts[1].size, 4);
        assert_eq!(
            (c.artifacts[0].content_type.as_str(), c.artifacts[0].gzip),
            ("application/x-tar", false)
        );
        assert_eq!(
            (c.artifacts[3].content_type.as_str(), c.artifacts[3].gzip),
            ("text/plain", true)
        );
    }

    #[test]
    fn refuses_what_it_must() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "secret", b"private key");
        write(dir.path(), "public/ok.txt", b"ok");
        std::os::unix::fs::symlink(
            outside.path().join("secret"),
            dir.path().join("public/link"),
        )
        .unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("public/dirlink")).unwrap();
        write(dir.path(), "public/chain-of-trust.json", b"{}");
        write(dir.path(), "public/logs/live_backing.log", b"forged");
        fs::hard_link(
            outside.path().join("secret"),
            dir.path().join("public/hard"),
        )
        .unwrap();
        write(dir.path(), "public/bad\nname", b"x");
        write(dir.path(), "public/fake\u{2028}line", b"x");
        write(dir.path(), "public/evil\u{202E}txt.exe", b"x");
        nix::unistd::mkfifo(
            &dir.path().join("public/fifo"),
            Mode::from_bits_truncate(0o600),
        )
        .unwrap();
        let _socket =
            std::os::unix::net::UnixListener::bind(dir.path().join("public/sock")).unwrap();
        let staging = tempfile::tempdir().unwrap();
        // Bounded: a FIFO must never make collection block.
        let (tx, rx) = std::sync::mpsc::channel();
        let (d, st) = (dir.path().to_owned(), staging.path().to_owned());
        std::thread::spawn(move || {
            let _ = tx.send(collect(&d, &st, &Limits::default()));
        });
        let c = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("collection blocked")
            .unwrap();
        let names: Vec<&str> = c.artifacts.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["public/ok.txt"]);
        let mut kinds: Vec<String> = c
            .refused
            .iter()
            .map(|e| match e {
                ArtifactError::Symlink { name } => format!("symlink {name}"),
                ArtifactError::Reserved { name } => format!("reserved {name}"),
                ArtifactError::HardLink { name, .. } => format!("hardlink {name}"),
                ArtifactError::BadName { .. } => "badname".into(),
                ArtifactError::NotRegular { name } => format!("notregular {name}"),
                other => format!("other {other}"),
            })
            .collect();
        kinds.sort();
        assert_eq!(
            kinds,
            [
                "badname",
                "badname",
                "badname",
                "hardlink public/hard",
                "notregular public/fifo",
                "notregular public/sock",
                "reserved public/chain-of-trust.json",
                "reserved public/logs/live_backing.log",
                "symlink public/dirlink",
                "symlink public/link",
            ]
        );
    }

    #[test]
    fn too_many_artifacts_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..3 {
            write(dir.path(), &format!("public/{i}"), b"x");
        }
        let limits = Limits {
            max_artifacts: 2,
            ..Limits::default()
        };
        let staging = tempfile::tempdir().unwrap();
        let c = collect(dir.path(), staging.path(), &limits).unwrap();
        assert!(matches!(
            c.refused.as_slice(),
            [ArtifactError::TooMany { limit: 2 }]
        ));
    }

    #[test]
    fn staged_copy_is_what_was_hashed() {
        let dir = tempfile::tempdir().unwrap();
        let staging = tempfile::tempdir().unwrap();
        write(dir.path(), "public/a.bin", b"original");
        let c = collect(dir.path(), staging.path(), &Limits::default()).unwrap();
        // A swap after collection changes nothing the worker uploads.
        fs::write(dir.path().join("public/a.bin"), b"swapped!").unwrap();
        let a = &c.artifacts[0];
        assert!(a.path.starts_with(staging.path()));
        let staged = fs::read(&a.path).unwrap();
        assert_eq!(staged, b"original");
        assert_eq!(a.sha256, hex::encode(Sha256::digest(&staged)));
    }

    #[test]
    fn total_bytes_and_refusal_lists_are_capped() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            write(dir.path(), &format!("public/{i}"), &[0u8; 100]);
        }
        let limits = Limits {
            max_total_bytes: 250,
            ..Limits::default()
        };
        let staging = tempfile::tempdir().unwrap();
        let c = collect(dir.path(), staging.path(), &limits).unwrap();
        assert_eq!(c.artifacts.len(), 2);
        assert!(matches!(
            c.refused.as_slice(),
            [ArtifactError::TooLarge { limit: 250, .. }]
        ));
        // Nothing beyond the cap was copied.
        assert_eq!(fs::read_dir(staging.path()).unwrap().count(), 2);

        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("public")).unwrap();
        for i in 0..500 {
            std::os::unix::fs::symlink("/etc/passwd", dir.path().join(format!("public/l{i}")))
                .unwrap();
        }
        let limits = Limits {
            max_listed_refusals: 10,
            max_entries: 200,
            ..Limits::default()
        };
        let staging = tempfile::tempdir().unwrap();
        let c = collect(dir.path(), staging.path(), &limits).unwrap();
        assert_eq!(c.refused.len(), 10);
        // 200 entries looked at (the directory is one), then the walk stops.
        assert_eq!(c.refused_count(), 200);
    }

    /// A racing process swaps files for symlinks to a secret, for FIFOs, and directories for
    /// symlinks, while the worker collects: the secret's bytes are never staged and the walk
    /// never blocks.
    #[test]
    fn racing_swaps_never_stage_foreign_bytes() {
        let outside = tempfile::tempdir().unwrap();
        let secret = b"-----BEGIN PGP PRIVATE KEY BLOCK----- racing secret";
        write(outside.path(), "key.asc", secret);
        write(outside.path(), "dir/inner", secret);
        for round in 0..150 {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().to_owned();
            for i in 0..20 {
                write(&root, &format!("public/f{i}"), b"harmless");
                write(&root, &format!("public/d{i}/x"), b"harmless");
            }
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            let (r, st, key, odir) = (
                root.clone(),
                stop.clone(),
                outside.path().join("key.asc"),
                outside.path().join("dir"),
            );
            let swapper = std::thread::spawn(move || {
                let mut i = 0usize;
                while !st.load(std::sync::atomic::Ordering::Relaxed) {
                    let n = i % 20;
                    let f = r.join(format!("public/f{n}"));
                    let tmp = r.join(format!("public/.t{n}"));
                    match (i + round) % 3 {
                        0 => {
                            let _ = std::os::unix::fs::symlink(&key, &tmp);
                        }
                        1 => {
                            let _ = nix::unistd::mkfifo(&tmp, Mode::from_bits_truncate(0o600));
                        }
                        _ => {
                            let d = r.join(format!("public/d{n}"));
                            let _ = fs::remove_dir_all(&d);
                            let _ = std::os::unix::fs::symlink(&odir, &d);
                        }
                    }
                    let _ = fs::rename(&tmp, &f);
                    i += 1;
                }
            });
            let staging = tempfile::tempdir().unwrap();
            let c = collect(&root, staging.path(), &Limits::default()).unwrap();
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            swapper.join().unwrap();
            for a in &c.artifacts {
                let bytes = fs::read(&a.path).unwrap();
                assert_ne!(
                    bytes.as_slice(),
                    secret.as_slice(),
                    "round {round}: {}",
                    a.name
                );
                assert_eq!(a.sha256, hex::encode(Sha256::digest(&bytes)));
            }
        }
    }

    #[test]
    fn a_symlinked_root_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        write(outside.path(), "public/secret", b"key");
        let tmp = tempfile::tempdir().unwrap();
        let link = tmp.path().join("artifacts");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let staging = tempfile::tempdir().unwrap();
        assert!(matches!(
            collect(&link, staging.path(), &Limits::default()),
            Err(ArtifactError::Io { .. })
        ));
    }

    #[test]
    fn content_types() {
        let table = [
            ("a.tar.gz", "application/x-tar", false),
            ("a.TGZ", "application/x-tar", false),
            ("a.json", "application/json", true),
            ("a.json.gz", "application/gzip", false),
            ("a.log", "text/plain", true),
            ("a.asc", "text/plain", true),
            ("a.xml", "application/xml", true),
            ("a.bin", "application/octet-stream", false),
            ("noext", "application/octet-stream", false),
        ];
        for (name, ct, gz) in table {
            assert_eq!(content_type_for(name), (ct, gz), "{name}");
        }
    }
}
