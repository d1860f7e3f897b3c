//! OpenPGP: key generation, private-key loading, detached signing and verification.
//!
//! Why this module exists: chainlock signs its own `chain-of-trust.json` with OpenPGP and
//! verifies OpenPGP signatures made by upstream workers and by the operators' root keys. All of
//! that goes through these few functions so that there is exactly one place that decides what a
//! valid OpenPGP signature is: sequoia's [`StandardPolicy`], evaluated at the signature's
//! creation time, with the signer's certificate valid, alive, not revoked and signing-capable at
//! that time.
//!
//! What it must not do: decide *whose* signatures are trusted (that is [`crate::trust`]), read
//! the clock (times are arguments), or let private key material reach a log, an error message
//! or `Debug` output. Only [`load_signing_key`] and [`write_new_key`] touch private key files.

use chrono::{DateTime, Utc};
use sequoia_openpgp as pgp;
use std::fmt;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use pgp::cert::amalgamation::ValidAmalgamation;
use pgp::cert::{CertBuilder, CipherSuite};
use pgp::crypto::KeyPair;
use pgp::packet::Signature;
use pgp::packet::signature::SignatureBuilder;
use pgp::parse::{PacketParser, PacketParserResult, Parse};
use pgp::policy::{HashAlgoSecurity, Policy, StandardPolicy};
use pgp::serialize::{Marshal, SerializeInto};
use pgp::types::{RevocationStatus, SignatureType};
use pgp::{Cert, Fingerprint, KeyHandle, Packet};

pub use pgp::Cert as OpenPgpCert;

/// Largest private-key or certificate file we read, in bytes. Certificates with many
/// third-party signatures can be large; anything beyond this is not a key file we wrote.
pub const MAX_KEY_FILE_BYTES: u64 = 1024 * 1024;

/// Largest armored detached signature we parse, in bytes (one signature is a few hundred bytes).
pub const MAX_SIGNATURE_BYTES: usize = 64 * 1024;

/// Why an OpenPGP operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenPgpError {
    /// A key or certificate file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A private key file is accessible by group or others; we refuse to use it.
    #[error(
        "{path}: private key file has mode {mode:04o}; it must not be accessible by group or \
         others (chmod 600)"
    )]
    KeyFilePermissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A private key file is not a regular file.
    #[error("{path}: not a regular file")]
    NotARegularFile {
        /// The path.
        path: PathBuf,
    },
    /// A file is larger than we accept.
    #[error("{path}: {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A key or certificate could not be parsed.
    #[error("cannot parse OpenPGP {what}: {reason}")]
    Parse {
        /// What we tried to parse ("certificate", "private key", "signature").
        what: &'static str,
        /// The parser's explanation (never contains key material).
        reason: String,
    },
    /// A file that should hold a private key holds only a public certificate.
    #[error("{path}: contains no secret key material")]
    NoSecretKey {
        /// The file.
        path: PathBuf,
    },
    /// A public certificate unexpectedly contains secret key material.
    #[error("certificate {fingerprint} contains secret key material; export the public part only")]
    UnexpectedSecretKey {
        /// The certificate's fingerprint.
        fingerprint: String,
    },
    /// The key has no unencrypted, valid, signing-capable (sub)key at the requested time.
    #[error("key {fingerprint}: no valid, unencrypted signing-capable key at {at}")]
    NoSigningKey {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// The time of the check.
        at: DateTime<Utc>,
    },
    /// Key generation or signing failed inside the OpenPGP library.
    #[error("OpenPGP {operation} failed: {reason}")]
    Crypto {
        /// What we were doing.
        operation: &'static str,
        /// The library's explanation.
        reason: String,
    },
    /// A signature file is not exactly one ASCII-armored signature block (with nothing but
    /// whitespace around it).
    #[error("a signature file must hold exactly one armored signature block: {0}")]
    NotOneArmoredBlock(ArmorFraming),
    /// The signature input holds no signature.
    #[error("no OpenPGP signature found")]
    NoSignature,
    /// The signature input holds more than one signature (we require exactly one per file).
    #[error("{count} OpenPGP signatures found where exactly one is expected")]
    MultipleSignatures {
        /// How many.
        count: usize,
    },
    /// The signature input holds packets other than signatures.
    #[error("unexpected OpenPGP packet {tag} in a detached signature")]
    UnexpectedPacket {
        /// The packet's tag.
        tag: String,
    },
    /// The signature is not a binary-document signature.
    #[error("signature type {typ} is not accepted (only binary document signatures)")]
    UnsupportedSignatureType {
        /// The type found.
        typ: String,
    },
    /// The signature has no creation time.
    #[error("signature has no creation time")]
    NoCreationTime,
    /// No certificate we were given holds the key that made the signature.
    #[error("signature made by {issuers} is not from any of the {tried} given certificate(s)")]
    UnknownSigner {
        /// Issuer key ids/fingerprints from the signature.
        issuers: String,
        /// How many certificates were tried.
        tried: usize,
    },
    /// The signer's certificate was not valid under the standard policy at the signature time.
    #[error("certificate {fingerprint} is not valid at {at}: {reason}")]
    CertInvalid {
        /// The certificate's fingerprint.
        fingerprint: String,
        /// The signature creation time.
        at: DateTime<Utc>,
        /// Why.
        reason: String,
    },
    /// The signer's certificate or signing subkey carries its own revocation signature that
    /// applies at `at`: a hard one (compromised, unspecified or no reason) whenever it was made,
    /// a soft one (retired, superseded) only from its own creation time on.
    #[error("key {fingerprint} is revoked ({reason}); signature made at {at}")]
    KeyRevoked {
        /// The revoked key's fingerprint.
        fingerprint: String,
        /// The signature creation time.
        at: DateTime<Utc>,
        /// The earliest applicable revocation signature's creation time, if it has one.
        revoked_at: Option<DateTime<Utc>>,
        /// The revocation's reason code and message, as the revoker wrote them.
        reason: String,
    },
    /// The signing key is not marked signing-capable.
    #[error("key {fingerprint} is not signing-capable")]
    NotSigningCapable {
        /// The key's fingerprint.
        fingerprint: String,
    },
    /// The signature's algorithms are rejected by the standard policy.
    #[error("signature rejected by the OpenPGP standard policy: {reason}")]
    PolicyRejected {
        /// Why.
        reason: String,
    },
    /// The signature does not verify over the given bytes.
    #[error("signature by {fingerprint} does not verify over the document")]
    BadSignature {
        /// The key the signature claims to come from.
        fingerprint: String,
    },
}

/// What is wrong with the framing of an armored signature file (see
/// [`armored_signature_block`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArmorFraming {
    /// Something other than whitespace before the `BEGIN` line.
    #[error("{bytes} byte(s) of data before the {BEGIN_SIGNATURE} line")]
    LeadingData {
        /// How many bytes precede the `BEGIN` line (leading whitespace included).
        bytes: usize,
    },
    /// No `BEGIN PGP SIGNATURE` line at all (binary or other data).
    #[error("no {BEGIN_SIGNATURE} line")]
    NoBegin,
    /// The block is not closed.
    #[error("no {END_SIGNATURE} line")]
    NoEnd,
    /// Another armor line inside the block.
    #[error("another armor line inside the block at byte {offset}")]
    NestedBlock {
        /// Where it starts.
        offset: usize,
    },
    /// A second armored block after the first.
    #[error("a second armored block after the first, at byte {offset}")]
    SecondBlock {
        /// Where it starts.
        offset: usize,
    },
    /// Data other than whitespace after the block.
    #[error("{bytes} byte(s) of data other than whitespace after the block, from byte {offset}")]
    TrailingData {
        /// Where the first non-whitespace byte after the block is.
        offset: usize,
        /// How many bytes follow the block, from there.
        bytes: usize,
    },
}

const BEGIN_SIGNATURE: &str = "-----BEGIN PGP SIGNATURE-----";
const END_SIGNATURE: &str = "-----END PGP SIGNATURE-----";

/// The one armored signature block of a signature file: the input must be optional whitespace,
/// a `-----BEGIN PGP SIGNATURE-----` line, the armored body, an `-----END PGP SIGNATURE-----`
/// line and nothing but whitespace after it. A second block, appended garbage, leading data or
/// an unarmored (binary) signature are refused here, so every caller of
/// [`parse_detached_signature`] applies the same rule. Returns the block, `BEGIN` to `END`.
pub fn armored_signature_block(file: &[u8]) -> Result<&[u8], ArmorFraming> {
    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }
    let begin = find(file, BEGIN_SIGNATURE.as_bytes()).ok_or(ArmorFraming::NoBegin)?;
    let before = file.get(..begin).unwrap_or_default();
    if !before.iter().all(u8::is_ascii_whitespace) {
        return Err(ArmorFraming::LeadingData { bytes: begin });
    }
    let body_start = begin + BEGIN_SIGNATURE.len();
    let rest = file.get(body_start..).unwrap_or_default();
    let end = find(rest, END_SIGNATURE.as_bytes()).ok_or(ArmorFraming::NoEnd)?;
    let body = rest.get(..end).unwrap_or_default();
    if let Some(nested) = find(body, b"-----") {
        return Err(ArmorFraming::NestedBlock {
            offset: body_start + nested,
        });
    }
    let block_end = body_start + end + END_SIGNATURE.len();
    let after = file.get(block_end..).unwrap_or_default();
    if let Some(first) = after.iter().position(|b| !b.is_ascii_whitespace()) {
        let offset = block_end + first;
        let tail = after.get(first..).unwrap_or_default();
        return Err(if tail.starts_with(b"-----BEGIN ") {
            ArmorFraming::SecondBlock { offset }
        } else {
            ArmorFraming::TrailingData {
                offset,
                bytes: tail.len(),
            }
        });
    }
    Ok(file.get(begin..block_end).unwrap_or_default())
}

/// A loaded private signing key. `Debug` shows the fingerprints only.
pub struct SigningKey {
    /// The certificate, including secret key material (never serialised except by
    /// [`write_new_key`]).
    tsk: Cert,
    /// The key pair of the signing-capable (sub)key selected at load time.
    keypair: KeyPair,
    signing_fingerprint: Fingerprint,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("cert", &self.tsk.fingerprint().to_hex())
            .field("signing_key", &self.signing_fingerprint.to_hex())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// The primary key's fingerprint (uppercase hex), which is how policies name the key.
    pub fn fingerprint(&self) -> String {
        self.tsk.fingerprint().to_hex()
    }

    /// The fingerprint of the (sub)key that makes the signatures.
    pub fn signing_fingerprint(&self) -> String {
        self.signing_fingerprint.to_hex()
    }

    /// When signatures by this key stop verifying by its own certificate: the earlier of the
    /// primary key's and the signing (sub)key's expiry under the standard policy at `at`
    /// (`at` itself when the certificate is no longer valid then); `None` when neither expires.
    pub fn expires(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let policy = StandardPolicy::new();
        let Ok(vc) = self.tsk.with_policy(&policy, to_system(at)) else {
            return Some(at);
        };
        let Some(signing) = vc
            .keys()
            .key_handle(self.signing_fingerprint.clone())
            .next()
        else {
            return Some(at);
        };
        let ends = [
            vc.primary_key().key_expiration_time(),
            signing.key_expiration_time(),
        ];
        ends.into_iter().flatten().map(to_utc).min()
    }

    /// The public certificate (no secret material).
    pub fn public_cert(&self) -> Cert {
        self.tsk.clone().strip_secret_key_material()
    }

    /// The public certificate, ASCII-armored.
    pub fn public_cert_armored(&self) -> Result<Vec<u8>, OpenPgpError> {
        export_cert_armored(&self.public_cert())
    }
}

fn to_system(t: DateTime<Utc>) -> SystemTime {
    SystemTime::from(t)
}

fn to_utc(t: SystemTime) -> DateTime<Utc> {
    DateTime::<Utc>::from(t)
}

fn crypto(operation: &'static str) -> impl FnOnce(anyhow::Error) -> OpenPgpError {
    move |e| OpenPgpError::Crypto {
        operation,
        reason: format!("{e}"),
    }
}

/// Generates a new key: a certification-only Cv25519 primary key with a signing subkey, one
/// User ID, created at `created` and expiring after `validity` (if given). RFC 4880 (v4) keys,
/// so GnuPG 2.2 reads them. The private key is not password-protected: it is meant for an
/// unattended worker and protected by file permissions.
pub fn generate_key(
    user_id: &str,
    created: DateTime<Utc>,
    validity: Option<chrono::Duration>,
) -> Result<SigningKey, OpenPgpError> {
    let validity = match validity {
        Some(d) => Some(d.to_std().map_err(|_| OpenPgpError::Crypto {
            operation: "key generation",
            reason: "negative validity period".into(),
        })?),
        None => None,
    };
    let (cert, _rev) = CertBuilder::new()
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_creation_time(to_system(created))
        .set_validity_period(validity)
        .add_userid(user_id)
        .add_signing_subkey()
        .generate()
        .map_err(crypto("key generation"))?;
    signing_key_from_tsk(cert, created)
}

fn signing_key_from_tsk(tsk: Cert, at: DateTime<Utc>) -> Result<SigningKey, OpenPgpError> {
    let policy = StandardPolicy::new();
    let no_key = || OpenPgpError::NoSigningKey {
        fingerprint: tsk.fingerprint().to_hex(),
        at,
    };
    let ka = tsk
        .keys()
        .with_policy(&policy, to_system(at))
        .alive()
        .revoked(false)
        .for_signing()
        .secret()
        .unencrypted_secret()
        .next()
        .ok_or_else(no_key)?;
    let signing_fingerprint = ka.key().fingerprint();
    let keypair = ka.key().clone().into_keypair().map_err(|_| no_key())?;
    Ok(SigningKey {
        tsk,
        keypair,
        signing_fingerprint,
    })
}

/// Writes a newly generated key: the private key (armored TSK) to `private_path`, created with
/// mode 0600 and refusing to overwrite an existing file, and the armored public certificate to
/// `public_path`.
pub fn write_new_key(
    key: &SigningKey,
    private_path: &Path,
    public_path: &Path,
) -> Result<(), OpenPgpError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| OpenPgpError::Io { path, source }
    };
    let secret = key
        .tsk
        .as_tsk()
        .armored()
        .to_vec()
        .map_err(crypto("private key export"))?;
    // Created with 0600 from the start (never chmod after): there is no window in which another
    // user could open the file.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(private_path)
        .map_err(io(private_path))?;
    f.write_all(&secret).map_err(io(private_path))?;
    f.sync_all().map_err(io(private_path))?;
    let public = key.public_cert_armored()?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(public_path)
        .map_err(io(public_path))?;
    f.write_all(&public).map_err(io(public_path))?;
    f.sync_all().map_err(io(public_path))?;
    Ok(())
}

/// Loads the private signing key at `path`, choosing the signing-capable (sub)key that is valid
/// at `at` under the standard policy.
///
/// Refuses ([`OpenPgpError::KeyFilePermissions`]) a file that group or others can access in any
/// way: a key others can read is a key others may have copied.
pub fn load_signing_key(path: &Path, at: DateTime<Utc>) -> Result<SigningKey, OpenPgpError> {
    signing_key_from_tsk(read_private_key_file(path)?, at)
}

/// The public certificate of the private key file at `path`, whether or not it can still sign
/// (`chainlock keys status` judges its expiry). The same file checks as [`load_signing_key`];
/// the secret key material is dropped before this returns.
pub fn load_signing_key_cert(path: &Path) -> Result<Cert, OpenPgpError> {
    Ok(read_private_key_file(path)?.strip_secret_key_material())
}

fn read_private_key_file(path: &Path) -> Result<Cert, OpenPgpError> {
    use crate::secret::{PrivateFileError, check_private_file};
    let io = |source| OpenPgpError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // Check the opened file itself (fstat), not the path, so a swap between check and read
    // cannot slip another file in.
    let meta = file.metadata().map_err(io)?;
    match check_private_file(&meta) {
        Ok(()) => {}
        Err(PrivateFileError::GroupOrOtherAccess { mode }) => {
            return Err(OpenPgpError::KeyFilePermissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        Err(_) => {
            return Err(OpenPgpError::NotARegularFile {
                path: path.to_path_buf(),
            });
        }
    }
    let bytes = read_capped(file, path, MAX_KEY_FILE_BYTES)?;
    let tsk = Cert::from_bytes(&bytes).map_err(|e| OpenPgpError::Parse {
        what: "private key",
        reason: format!("{e}"),
    })?;
    if !tsk.is_tsk() {
        return Err(OpenPgpError::NoSecretKey {
            path: path.to_path_buf(),
        });
    }
    Ok(tsk)
}

fn read_capped(file: std::fs::File, path: &Path, limit: u64) -> Result<Vec<u8>, OpenPgpError> {
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| OpenPgpError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    let size = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size > limit {
        return Err(OpenPgpError::TooLarge {
            path: path.to_path_buf(),
            size,
            limit,
        });
    }
    Ok(bytes)
}

/// Reads a public certificate file (armored or binary), refusing one with secret key material.
pub fn read_cert_file(path: &Path) -> Result<Cert, OpenPgpError> {
    let file = std::fs::File::open(path).map_err(|source| OpenPgpError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bytes = read_capped(file, path, MAX_KEY_FILE_BYTES)?;
    parse_public_cert(&bytes)
}

/// Parses one public certificate (armored or binary), refusing secret key material.
pub fn parse_public_cert(bytes: &[u8]) -> Result<Cert, OpenPgpError> {
    let cert = Cert::from_bytes(bytes).map_err(|e| OpenPgpError::Parse {
        what: "certificate",
        reason: format!("{e}"),
    })?;
    if cert.is_tsk() {
        return Err(OpenPgpError::UnexpectedSecretKey {
            fingerprint: cert.fingerprint().to_hex(),
        });
    }
    Ok(cert)
}

/// The ASCII-armored serialisation of a certificate's public parts.
pub fn export_cert_armored(cert: &Cert) -> Result<Vec<u8>, OpenPgpError> {
    cert.armored()
        .to_vec()
        .map_err(crypto("certificate export"))
}

/// Makes an ASCII-armored detached signature over `bytes`, with creation time `at` (OpenPGP
/// stores whole seconds).
pub fn sign_detached_armored(
    key: &SigningKey,
    bytes: &[u8],
    at: DateTime<Utc>,
) -> Result<Vec<u8>, OpenPgpError> {
    let mut signer = key.keypair.clone();
    let sig = SignatureBuilder::new(SignatureType::Binary)
        .set_signature_creation_time(to_system(at))
        .map_err(crypto("signing"))?
        .sign_message(&mut signer, bytes)
        .map_err(crypto("signing"))?;
    armor_signature(sig)
}

/// What one read of a file gives the sign script: its detached signature and the digests it
/// publishes (`SHA256SUMS`, `SHA512SUMS`) and checks against the verified manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedFile {
    /// ASCII-armored detached signature.
    pub armored: Vec<u8>,
    /// sha256 of the bytes signed.
    pub sha256: [u8; 32],
    /// sha512 of the bytes signed.
    pub sha512: [u8; 64],
    /// Number of bytes signed.
    pub size: u64,
}

/// Read size of [`sign_detached_with_digests`].
const SIGN_READ: usize = 256 * 1024;

/// Signs what `data` yields (detached, binary, created at `at`) and takes its sha256 and sha512
/// in the same single read. The signature's own hash context is fed directly and signed with
/// [`SignatureBuilder::sign_hash`]; when it is SHA-512 (sequoia's default, as for the streaming
/// signer) its state is cloned at the end of the data to give the file's sha512, so each byte
/// goes through two hash functions, not three. A v6 key's salt is hashed first, as RFC 9580
/// wants, and put into the signature.
pub fn sign_detached_with_digests(
    key: &SigningKey,
    mut data: impl Read,
    at: DateTime<Utc>,
) -> Result<SignedFile, OpenPgpError> {
    use pgp::types::HashAlgorithm;
    let algo = HashAlgorithm::default();
    let version = key.keypair.public().version();
    let mut sig_ctx = algo
        .context()
        .map_err(crypto("signing"))?
        .for_signature(version);
    let mut builder = SignatureBuilder::new(SignatureType::Binary)
        .set_hash_algo(algo)
        .set_signature_creation_time(to_system(at))
        .map_err(crypto("signing"))?;
    if version == 6 {
        let mut salt = vec![0; algo.salt_size().map_err(crypto("signing"))?];
        pgp::crypto::random(&mut salt).map_err(crypto("signing"))?;
        sig_ctx.update(&salt);
        builder = builder.set_prefix_salt(salt).0;
    }
    let mut sha256 = HashAlgorithm::SHA256
        .context()
        .map_err(crypto("hashing"))?
        .for_digest();
    // Only when the signature does not hash with SHA-512 already.
    let mut sha512 = if algo == HashAlgorithm::SHA512 && version == 4 {
        None
    } else {
        Some(
            HashAlgorithm::SHA512
                .context()
                .map_err(crypto("hashing"))?
                .for_digest(),
        )
    };
    let mut buf = vec![0u8; SIGN_READ];
    let mut size: u64 = 0;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(OpenPgpError::Crypto {
                    operation: "reading the data to sign",
                    reason: e.to_string(),
                });
            }
        };
        let chunk = buf.get(..n).unwrap_or_default();
        sig_ctx.update(chunk);
        sha256.update(chunk);
        if let Some(h) = sha512.as_mut() {
            h.update(chunk);
        }
        size = size.saturating_add(n as u64);
    }
    let mut digest256 = [0u8; 32];
    sha256.digest(&mut digest256).map_err(crypto("hashing"))?;
    let mut digest512 = [0u8; 64];
    match sha512 {
        Some(mut h) => h.digest(&mut digest512),
        // The signature context holds exactly the file's bytes so far (v4: no salt).
        None => sig_ctx.clone().digest(&mut digest512),
    }
    .map_err(crypto("hashing"))?;
    let mut signer = key.keypair.clone();
    let sig = builder
        .sign_hash(&mut signer, sig_ctx)
        .map_err(crypto("signing"))?;
    Ok(SignedFile {
        armored: armor_signature(sig)?,
        sha256: digest256,
        sha512: digest512,
        size,
    })
}

/// The ASCII armor of one signature packet.
fn armor_signature(sig: Signature) -> Result<Vec<u8>, OpenPgpError> {
    let mut out = Vec::new();
    let mut w = pgp::armor::Writer::new(&mut out, pgp::armor::Kind::Signature).map_err(|e| {
        OpenPgpError::Crypto {
            operation: "armoring",
            reason: e.to_string(),
        }
    })?;
    Packet::from(sig)
        .serialize(&mut w)
        .map_err(crypto("armoring"))?;
    w.finalize().map_err(|e| OpenPgpError::Crypto {
        operation: "armoring",
        reason: e.to_string(),
    })?;
    Ok(out)
}

/// Like [`sign_detached_armored`] but reads the signed bytes from `data` in fixed-size chunks,
/// so signing a multi-gigabyte file takes constant memory. Returns the armored signature and
/// the number of bytes signed.
pub fn sign_detached_armored_reader(
    key: &SigningKey,
    mut data: impl Read,
    at: DateTime<Utc>,
) -> Result<(Vec<u8>, u64), OpenPgpError> {
    use pgp::serialize::stream::{Armorer, Message, Signer};
    let mut out = Vec::new();
    let message = Armorer::new(Message::new(&mut out))
        .kind(pgp::armor::Kind::Signature)
        .build()
        .map_err(crypto("armoring"))?;
    let mut signer = Signer::new(message, key.keypair.clone())
        .map_err(crypto("signing"))?
        .detached()
        .creation_time(to_system(at))
        .build()
        .map_err(crypto("signing"))?;
    let copied = std::io::copy(&mut data, &mut signer).map_err(|e| OpenPgpError::Crypto {
        operation: "reading the data to sign",
        reason: e.to_string(),
    })?;
    signer.finalize().map_err(crypto("signing"))?;
    Ok((out, copied))
}

/// Parses an ASCII-armored detached signature file that must hold exactly one armored block
/// ([`armored_signature_block`]) containing exactly one signature packet.
pub fn parse_detached_signature(armored: &[u8]) -> Result<Signature, OpenPgpError> {
    if armored.len() > MAX_SIGNATURE_BYTES {
        return Err(OpenPgpError::Parse {
            what: "signature",
            reason: format!(
                "{} bytes is larger than the limit of {MAX_SIGNATURE_BYTES}",
                armored.len()
            ),
        });
    }
    let parse_err = |e: anyhow::Error| OpenPgpError::Parse {
        what: "signature",
        reason: format!("{e}"),
    };
    let block = armored_signature_block(armored).map_err(OpenPgpError::NotOneArmoredBlock)?;
    let reader = pgp::armor::Reader::from_bytes(
        block,
        pgp::armor::ReaderMode::Tolerant(Some(pgp::armor::Kind::Signature)),
    );
    let mut ppr = PacketParser::from_reader(reader).map_err(parse_err)?;
    let mut sigs = Vec::new();
    while let PacketParserResult::Some(pp) = ppr {
        let (packet, next) = pp.next().map_err(parse_err)?;
        match packet {
            Packet::Signature(sig) => sigs.push(sig),
            other => {
                return Err(OpenPgpError::UnexpectedPacket {
                    tag: other.tag().to_string(),
                });
            }
        }
        ppr = next;
    }
    match sigs.len() {
        0 => Err(OpenPgpError::NoSignature),
        1 => sigs.pop().ok_or(OpenPgpError::NoSignature),
        count => Err(OpenPgpError::MultipleSignatures { count }),
    }
}

/// The key handles (issuer key ids and fingerprints) a signature names.
pub fn signature_issuers(sig: &Signature) -> Vec<KeyHandle> {
    sig.get_issuers()
}

/// Whether `cert` holds a (sub)key matching any of `issuers`.
pub fn cert_has_issuer(cert: &Cert, issuers: &[KeyHandle]) -> bool {
    cert.keys()
        .any(|ka| issuers.iter().any(|h| h.aliases(ka.key().key_handle())))
}

/// A signature that verified cryptographically and under the standard policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedSignature {
    /// The signer certificate's primary fingerprint (uppercase hex). Several subkeys of one
    /// certificate all report the same value here: count signers by this.
    pub primary_fingerprint: String,
    /// The fingerprint of the (sub)key that made the signature.
    pub signing_fingerprint: String,
    /// The signature's creation time (signer-supplied: bound it by an observed time).
    pub created: DateTime<Utc>,
    /// The signature's own expiration time, if it has one.
    pub expires: Option<DateTime<Utc>>,
}

/// Verifies a parsed detached signature over `message` against `cert`.
///
/// Everything is judged at the signature's creation time `t` with [`StandardPolicy`]: the
/// certificate must have a live, policy-accepted self-signature at `t`, neither it nor the
/// signing subkey may be revoked at `t` (a hard revocation counts whenever it was made, a soft
/// one only from its own time on), the signing key must be signing-capable and alive at `t`,
/// and the signature's hash and key algorithms must be accepted as of `t`.
pub fn verify_with_cert(
    cert: &Cert,
    sig: &Signature,
    message: &[u8],
) -> Result<VerifiedSignature, OpenPgpError> {
    let policy = StandardPolicy::new();
    if sig.typ() != SignatureType::Binary {
        return Err(OpenPgpError::UnsupportedSignatureType {
            typ: sig.typ().to_string(),
        });
    }
    let t = sig
        .signature_creation_time()
        .ok_or(OpenPgpError::NoCreationTime)?;
    let at = to_utc(t);
    let fingerprint = cert.fingerprint().to_hex();
    let issuers = sig.get_issuers();
    if !cert_has_issuer(cert, &issuers) {
        return Err(OpenPgpError::UnknownSigner {
            issuers: issuers
                .iter()
                .map(|h| h.to_hex())
                .collect::<Vec<_>>()
                .join(","),
            tried: 1,
        });
    }
    let vc = cert
        .with_policy(&policy, t)
        .map_err(|e| OpenPgpError::CertInvalid {
            fingerprint: fingerprint.clone(),
            at,
            reason: format!("{e}"),
        })?;
    vc.alive().map_err(|e| OpenPgpError::CertInvalid {
        fingerprint: fingerprint.clone(),
        at,
        reason: format!("{e}"),
    })?;
    if let RevocationStatus::Revoked(revs) = vc.revocation_status() {
        let (revoked_at, reason) = revocation_details(&revs);
        return Err(OpenPgpError::KeyRevoked {
            fingerprint,
            at,
            revoked_at,
            reason,
        });
    }
    // The issuer's (sub)key, valid at `t` (a subkey binding live at `t`).
    let ka = vc
        .keys()
        .find(|ka| issuers.iter().any(|h| h.aliases(ka.key().key_handle())))
        .ok_or_else(|| OpenPgpError::CertInvalid {
            fingerprint: fingerprint.clone(),
            at,
            reason: "the signing key has no valid binding at that time".into(),
        })?;
    let signing_fingerprint = ka.key().fingerprint().to_hex();
    if let RevocationStatus::Revoked(revs) = ka.revocation_status() {
        let (revoked_at, reason) = revocation_details(&revs);
        return Err(OpenPgpError::KeyRevoked {
            fingerprint: signing_fingerprint,
            at,
            revoked_at,
            reason,
        });
    }
    if !ka.for_signing() {
        return Err(OpenPgpError::NotSigningCapable {
            fingerprint: signing_fingerprint,
        });
    }
    ka.alive().map_err(|e| OpenPgpError::CertInvalid {
        fingerprint: signing_fingerprint.clone(),
        at,
        reason: format!("{e}"),
    })?;
    policy
        .signature(sig, HashAlgoSecurity::CollisionResistance)
        .map_err(|e| OpenPgpError::PolicyRejected {
            reason: format!("{e}"),
        })?;
    policy.key(&ka).map_err(|e| OpenPgpError::PolicyRejected {
        reason: format!("{e}"),
    })?;
    sig.verify_message(ka.key(), message)
        .map_err(|_| OpenPgpError::BadSignature {
            fingerprint: signing_fingerprint.clone(),
        })?;
    Ok(VerifiedSignature {
        primary_fingerprint: fingerprint,
        signing_fingerprint,
        created: at,
        expires: sig.signature_expiration_time().map(to_utc),
    })
}

/// How long a certificate can still make signatures that [`verify_with_cert`] accepts, as seen
/// at `at`: the certificate's own expiry, not any trust policy window.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CertLifetime {
    /// It can sign at `at`, until `until`: the earlier of the primary key's expiry and the
    /// latest expiry of its live signing-capable keys (`None`: it does not expire).
    Alive {
        /// When its last signature that can verify can be made.
        until: Option<DateTime<Utc>>,
    },
    /// It cannot sign any more: `what` expired at `since`.
    Expired {
        /// When.
        since: DateTime<Utc>,
        /// `"primary key"` or `"signing subkeys"` (every signing-capable key expired).
        what: &'static str,
    },
    /// It cannot sign at `at` for another reason: revoked, no policy-accepted self-signature,
    /// or no signing-capable key.
    Unusable {
        /// Why.
        reason: String,
    },
}

/// Judges `cert`'s own expiry at `at` with the same [`StandardPolicy`] rules as
/// [`verify_with_cert`]: a valid self-signature, not revoked, the primary key alive, and at
/// least one signing-capable, unrevoked, policy-accepted key alive.
pub fn signing_lifetime(cert: &Cert, at: DateTime<Utc>) -> CertLifetime {
    let policy = StandardPolicy::new();
    let vc = match cert.with_policy(&policy, to_system(at)) {
        Ok(vc) => vc,
        Err(e) => {
            return CertLifetime::Unusable {
                reason: format!("no valid self-signature: {e}"),
            };
        }
    };
    if let RevocationStatus::Revoked(revs) = vc.revocation_status() {
        let (_, reason) = revocation_details(&revs);
        return CertLifetime::Unusable {
            reason: format!("revoked ({reason})"),
        };
    }
    let primary_expiry = vc.primary_key().key_expiration_time().map(to_utc);
    if let Some(since) = primary_expiry.filter(|t| *t <= at) {
        return CertLifetime::Expired {
            since,
            what: "primary key",
        };
    }
    // `Some(None)`: a live signing key that never expires; `Some(Some(t))`: the latest expiry.
    let mut live: Option<Option<DateTime<Utc>>> = None;
    let mut expired: Option<DateTime<Utc>> = None;
    for ka in vc.keys().for_signing().revoked(false) {
        if policy.key(&ka).is_err() {
            continue;
        }
        match ka.key_expiration_time().map(to_utc) {
            Some(t) if t <= at => expired = Some(expired.map_or(t, |e| e.max(t))),
            end => {
                live = Some(match (live, end) {
                    (Some(None), _) | (_, None) => None,
                    (Some(Some(a)), Some(b)) => Some(a.max(b)),
                    (None, Some(b)) => Some(b),
                })
            }
        }
    }
    match (live, expired) {
        (Some(until), _) => CertLifetime::Alive {
            until: match (until, primary_expiry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            },
        },
        (None, Some(since)) => CertLifetime::Expired {
            since,
            what: "signing subkeys",
        },
        (None, None) => CertLifetime::Unusable {
            reason: "no signing-capable key".into(),
        },
    }
}

/// When the earliest of the applicable revocation signatures was made, and its reason, for
/// error reports (sequoia already decided that they apply at the signature time).
fn revocation_details(revs: &[&Signature]) -> (Option<DateTime<Utc>>, String) {
    let Some(first) = revs.iter().min_by_key(|r| r.signature_creation_time()) else {
        return (None, "no revocation signature".into());
    };
    let reason = match first.reason_for_revocation() {
        Some((code, message)) => {
            let message = String::from_utf8_lossy(message);
            if message.is_empty() {
                format!("{code}")
            } else {
                format!("{code}: {message:?}")
            }
        }
        // RFC 9580 5.2.3.31: without a reason the revocation is treated as hard.
        None => "no reason given".into(),
    };
    (first.signature_creation_time().map(to_utc), reason)
}

/// Parses `armored` (one detached signature) and verifies it over `message` with whichever of
/// `certs` holds the issuing key.
pub fn verify_detached(
    certs: &[&Cert],
    message: &[u8],
    armored: &[u8],
) -> Result<VerifiedSignature, OpenPgpError> {
    let sig = parse_detached_signature(armored)?;
    let issuers = sig.get_issuers();
    let cert = certs
        .iter()
        .find(|c| cert_has_issuer(c, &issuers))
        .ok_or_else(|| OpenPgpError::UnknownSigner {
            issuers: issuers
                .iter()
                .map(|h| h.to_hex())
                .collect::<Vec<_>>()
                .join(","),
            tried: certs.len(),
        })?;
    verify_with_cert(cert, &sig, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(s: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_700_000_000 + s, 0)
            .single()
            .expect("valid constant time")
    }

    #[test]
    fn sign_then_verify_roundtrip_and_tamper() {
        let key = generate_key("test <t@example.org>", t(0), None).expect("generate");
        let sig = sign_detached_armored(&key, b"hello", t(10)).expect("sign");
        let cert = key.public_cert();
        let v = verify_detached(&[&cert], b"hello", &sig).expect("verify");
        assert_eq!(v.primary_fingerprint, key.fingerprint());
        assert_eq!(v.signing_fingerprint, key.signing_fingerprint());
        assert_ne!(v.primary_fingerprint, v.signing_fingerprint);
        assert_eq!(v.created, t(10));
        let err = verify_detached(&[&cert], b"hellO", &sig).expect_err("tampered");
        assert!(matches!(err, OpenPgpError::BadSignature { .. }), "{err:?}");
    }

    /// The one-pass signer: the signature verifies over the bytes read, and the digests are
    /// those of the same bytes (for a v4 key the sha512 is a copy of the signature's state,
    /// taken before the signature trailer is hashed). A v6 key's signature is salted.
    #[test]
    fn one_pass_signature_and_digests() {
        use sha2::Digest as _;
        let v4 = generate_key("v4 <t@example.org>", t(0), None).expect("generate");
        let (v6_cert, _) = CertBuilder::new()
            .set_cipher_suite(CipherSuite::Cv25519)
            .set_profile(pgp::Profile::RFC9580)
            .expect("profile")
            .set_creation_time(to_system(t(0)))
            .add_userid("v6")
            .add_signing_subkey()
            .generate()
            .expect("generate v6");
        let v6 = signing_key_from_tsk(v6_cert, t(0)).expect("v6 key");
        assert_eq!(v6.keypair.public().version(), 6);
        // Longer than one read, and empty.
        let long: Vec<u8> = (0..SIGN_READ * 2 + 17).map(|i| (i % 251) as u8).collect();
        for key in [&v4, &v6] {
            for data in [&long[..], b""] {
                let signed = sign_detached_with_digests(key, data, t(10)).expect("sign");
                assert_eq!(signed.size, data.len() as u64);
                assert_eq!(signed.sha256[..], sha2::Sha256::digest(data)[..]);
                assert_eq!(signed.sha512[..], sha2::Sha512::digest(data)[..]);
                let cert = key.public_cert();
                let v = verify_detached(&[&cert], data, &signed.armored).expect("verify");
                assert_eq!(v.signing_fingerprint, key.signing_fingerprint());
                assert_eq!(v.created, t(10));
                let mut other = data.to_vec();
                other.push(0);
                let err = verify_detached(&[&cert], &other, &signed.armored).expect_err("tamper");
                assert!(matches!(err, OpenPgpError::BadSignature { .. }), "{err:?}");
            }
        }
    }

    #[test]
    fn unknown_signer_and_garbage() {
        let a = generate_key("a", t(0), None).expect("generate");
        let b = generate_key("b", t(0), None).expect("generate");
        let sig = sign_detached_armored(&a, b"x", t(1)).expect("sign");
        let err = verify_detached(&[&b.public_cert()], b"x", &sig).expect_err("unknown");
        assert!(
            matches!(err, OpenPgpError::UnknownSigner { tried: 1, .. }),
            "{err:?}"
        );
        let err = verify_detached(&[&a.public_cert()], b"x", b"garbage").expect_err("garbage");
        assert!(
            matches!(err, OpenPgpError::NotOneArmoredBlock(ArmorFraming::NoBegin)),
            "{err:?}"
        );
    }

    #[test]
    fn signature_file_is_exactly_one_armored_block() {
        let key = generate_key("f", t(0), None).expect("generate");
        let cert = key.public_cert();
        let sig = sign_detached_armored(&key, b"x", t(1)).expect("sign");
        let other = sign_detached_armored(&key, b"y", t(2)).expect("sign");
        let with = |prefix: &[u8], suffix: &[u8]| [prefix, &sig[..], suffix].concat();
        let framing = |bytes: &[u8]| match verify_detached(&[&cert], b"x", bytes) {
            Err(OpenPgpError::NotOneArmoredBlock(f)) => Some(f),
            Ok(_) => None,
            Err(e) => panic!("unexpected error {e:?}"),
        };
        // Whitespace around the block is fine.
        assert_eq!(framing(&with(b"", b"\n\r\n  \t\n")), None);
        assert_eq!(framing(&with(b"\n ", b"")), None);
        // A second block (even a genuine signature over the same bytes) appended.
        let offset = sig.len() + 1;
        assert_eq!(
            framing(&with(b"", &[b"\n".as_slice(), &other].concat())),
            Some(ArmorFraming::SecondBlock { offset })
        );
        assert_eq!(
            framing(&with(b"", &[b"\n".as_slice(), &sig].concat())),
            Some(ArmorFraming::SecondBlock { offset })
        );
        // Garbage appended.
        assert_eq!(
            framing(&with(b"", b"\ngarbage\n")),
            Some(ArmorFraming::TrailingData { offset, bytes: 8 })
        );
        assert_eq!(
            framing(&with(b"", b"\0")),
            Some(ArmorFraming::TrailingData {
                offset: sig.len(),
                bytes: 1
            })
        );
        // Leading garbage, an unclosed block, a block inside the block, binary input.
        assert_eq!(
            framing(&with(b"junk\n", b"")),
            Some(ArmorFraming::LeadingData { bytes: 5 })
        );
        let unclosed = sig.get(..sig.len() - 30).expect("long enough");
        assert_eq!(framing(unclosed), Some(ArmorFraming::NoEnd));
        let text = String::from_utf8(sig.clone()).expect("armor is ASCII");
        let nested = text.replacen("\n\n", "\n\n-----BEGIN PGP SIGNATURE-----\n", 1);
        assert!(matches!(
            framing(nested.as_bytes()),
            Some(ArmorFraming::NestedBlock { .. })
        ));
        let binary = Packet::from(parse_detached_signature(&sig).expect("genuine"))
            .to_vec()
            .expect("serialise");
        assert_eq!(framing(&binary), Some(ArmorFraming::NoBegin));
        // The error says what was found.
        let err = parse_detached_signature(&with(b"", b"\ngarbage\n")).expect_err("trailing");
        assert!(err.to_string().contains("after the block"), "{err}");
    }

    #[test]
    fn expired_cert_refused_at_signature_time() {
        let key = generate_key("e", t(0), Some(chrono::Duration::days(1))).expect("generate");
        let cert = key.public_cert();
        let ok = sign_detached_armored(&key, b"x", t(3600)).expect("sign");
        verify_detached(&[&cert], b"x", &ok).expect("inside validity");
        let late = sign_detached_armored(&key, b"x", t(2 * 86400)).expect("sign");
        let err = verify_detached(&[&cert], b"x", &late).expect_err("expired");
        assert!(matches!(err, OpenPgpError::CertInvalid { .. }), "{err:?}");
    }

    #[test]
    fn debug_never_shows_secret() {
        let key = generate_key("d", t(0), None).expect("generate");
        let dbg = format!("{key:?}");
        assert!(dbg.contains(&key.fingerprint()));
        assert!(!dbg.contains("PRIVATE"));
    }

    #[test]
    fn key_file_permissions_are_enforced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let key = generate_key("p", t(0), None).expect("generate");
        let private = dir.path().join("key.asc");
        let public = dir.path().join("key.pub.asc");
        write_new_key(&key, &private, &public).expect("write");
        let mode = std::fs::metadata(&private)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let loaded = load_signing_key(&private, t(5)).expect("load");
        assert_eq!(loaded.fingerprint(), key.fingerprint());
        // Refuses to overwrite.
        assert!(write_new_key(&key, &private, &public).is_err());
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let err = load_signing_key(&private, t(5)).expect_err("group readable");
        assert!(
            matches!(err, OpenPgpError::KeyFilePermissions { mode: 0o640, .. }),
            "{err:?}"
        );
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o604)).expect("chmod");
        let err = load_signing_key(&private, t(5)).expect_err("world readable");
        assert!(
            matches!(err, OpenPgpError::KeyFilePermissions { .. }),
            "{err:?}"
        );
        // A public cert is not a private key.
        std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let err = load_signing_key(&public, t(5)).expect_err("public only");
        assert!(matches!(err, OpenPgpError::NoSecretKey { .. }), "{err:?}");
        let cert = read_cert_file(&public).expect("public cert");
        assert_eq!(cert.fingerprint().to_hex(), key.fingerprint());
        let err = parse_public_cert(&std::fs::read(&private).expect("read")).expect_err("tsk");
        assert!(
            matches!(err, OpenPgpError::UnexpectedSecretKey { .. }),
            "{err:?}"
        );
    }
}
