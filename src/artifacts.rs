//! Artifact collection: turns what the script left in its artifact directory into a checked,
//! hashed list of files to upload.
//!
//! Why it exists: the artifact directory is written by the script, so its contents are input
//! to be checked, not trusted. Every regular file becomes an artifact whose name is its
//! relative path. Symlinks, hard links, special files, names that are not clean UTF-8 and names
//! the worker reserves for itself (logs, chain-of-trust document) are refused and reported, and
//! nothing is uploaded for them; what a symlink points to is never read. The sha256 is taken
//! over the bytes on disk, before any upload compression, streaming (memory does not grow with
//! file size); the chain-of-trust stage lists exactly these hashes.
//!
//! What it must not do: upload, or follow anything out of the directory. It is synchronous
//! filesystem code; async callers run it with `spawn_blocking`.

use sha2::{Digest, Sha256};
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
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
    /// Most artifacts per task (default 1000); beyond it the task fails.
    pub max_artifacts: usize,
    /// Longest artifact name in bytes (default 1024).
    pub max_name_bytes: usize,
    /// Deepest directory nesting (default 32).
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_artifacts: 1000,
            max_name_bytes: 1024,
            max_depth: 32,
        }
    }
}

/// One file to upload, hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedArtifact {
    /// Artifact name (`public/build/target.tar.gz`): the path relative to the artifact dir.
    pub name: String,
    /// The file on disk.
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
    /// The file resolved outside the artifact dir, or changed identity while being read.
    #[error("artifact {name:?} resolves outside the artifact directory or changed: refused")]
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
/// `refused` fails the task; the accepted files are still uploaded to help debugging.
#[derive(Debug, Default)]
pub struct Collection {
    /// Accepted, hashed artifacts, sorted by name.
    pub artifacts: Vec<CollectedArtifact>,
    /// Refused entries, in walk order.
    pub refused: Vec<ArtifactError>,
}

/// Walks `dir` and hashes every regular file. Only a failure to read `dir` itself is an `Err`;
/// problems with entries end up in [`Collection::refused`].
pub fn collect(dir: &Path, limits: &Limits) -> Result<Collection, ArtifactError> {
    let root = fs::canonicalize(dir).map_err(|source| ArtifactError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Collection::default();
    let mut stack: Vec<(PathBuf, String, usize)> = vec![(root.clone(), String::new(), 0)];
    while let Some((path, prefix, depth)) = stack.pop() {
        let entries = match fs::read_dir(&path) {
            Ok(e) => e,
            Err(source) if prefix.is_empty() => return Err(ArtifactError::Io { path, source }),
            Err(source) => {
                out.refused.push(ArtifactError::Io { path, source });
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(source) => {
                    out.refused.push(ArtifactError::Io {
                        path: path.clone(),
                        source,
                    });
                    continue;
                }
            };
            let file_name = entry.file_name();
            let Some(component) = file_name.to_str() else {
                out.refused.push(ArtifactError::BadName {
                    name: format!("{prefix}{}", file_name.to_string_lossy()),
                    reason: "not valid UTF-8",
                });
                continue;
            };
            let name = format!("{prefix}{component}");
            let entry_path = entry.path();
            let meta = match fs::symlink_metadata(&entry_path) {
                Ok(m) => m,
                Err(source) => {
                    out.refused.push(ArtifactError::Io {
                        path: entry_path,
                        source,
                    });
                    continue;
                }
            };
            let ft = meta.file_type();
            if ft.is_symlink() {
                out.refused.push(ArtifactError::Symlink { name });
            } else if ft.is_dir() {
                if depth + 1 > limits.max_depth {
                    out.refused.push(ArtifactError::TooDeep {
                        name,
                        limit: limits.max_depth,
                    });
                } else {
                    stack.push((entry_path, format!("{name}/"), depth + 1));
                }
            } else if !ft.is_file() {
                out.refused.push(ArtifactError::NotRegular { name });
            } else if let Err(e) = check_name(&name, limits) {
                out.refused.push(e);
            } else if meta.nlink() > 1 {
                out.refused.push(ArtifactError::HardLink {
                    name,
                    links: meta.nlink(),
                });
            } else if out.artifacts.len() >= limits.max_artifacts {
                out.refused.push(ArtifactError::TooMany {
                    limit: limits.max_artifacts,
                });
                return Ok(out);
            } else {
                match hash_file(&root, &entry_path, &name, &meta) {
                    Ok((sha256, size)) => {
                        let (content_type, gzip) = content_type_for(&name);
                        out.artifacts.push(CollectedArtifact {
                            name,
                            path: entry_path,
                            sha256,
                            size,
                            content_type: content_type.to_owned(),
                            gzip,
                        });
                    }
                    Err(e) => out.refused.push(e),
                }
            }
        }
    }
    out.artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
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

/// Hashes the file, making sure the file opened is the one that was inspected (no swap for a
/// symlink in between) and lies under `root`.
fn hash_file(
    root: &Path,
    path: &Path,
    name: &str,
    inspected: &fs::Metadata,
) -> Result<(String, u64), ArtifactError> {
    let io = |source| ArtifactError::Io {
        path: path.to_owned(),
        source,
    };
    let escapes = || ArtifactError::Escapes {
        name: name.to_owned(),
    };
    let real = fs::canonicalize(path).map_err(io)?;
    if !real.starts_with(root) {
        return Err(escapes());
    }
    let mut file = fs::File::open(&real).map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() || opened.dev() != inspected.dev() || opened.ino() != inspected.ino() {
        return Err(escapes());
    }
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size: u64 = 0;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        let chunk = buf.get(..n).ok_or_else(escapes)?;
        hasher.update(chunk);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
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
        let c = collect(dir.path(), &Limits::default()).unwrap();
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
        let _socket =
            std::os::unix::net::UnixListener::bind(dir.path().join("public/sock")).unwrap();
        let c = collect(dir.path(), &Limits::default()).unwrap();
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
                "hardlink public/hard",
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
        let c = collect(dir.path(), &limits).unwrap();
        assert!(matches!(
            c.refused.as_slice(),
            [ArtifactError::TooMany { limit: 2 }]
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
