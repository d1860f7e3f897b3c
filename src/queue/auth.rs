//! Hawk request signing and Taskcluster temporary-credential certificates.
//!
//! Both the client (signing every queue call) and the dev queue (verifying them, issuing task
//! credentials) use this module, so the two sides cannot drift apart. It is pure: the time and
//! the nonce are arguments, nothing here reads the clock or the network. It must never format a
//! key, an access token or a MAC into an error or a log line.

use crate::secret::Secret;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac as _};
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why a request could not be signed or a certificate could not be built or checked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// The certificate of temporary credentials is not a JSON object.
    #[error("the temporary credentials' certificate is not a JSON object")]
    CertificateNotJson,
    /// The certificate is JSON but lacks a field or has one of the wrong type.
    #[error("the temporary credentials' certificate is malformed: {field}")]
    CertificateMalformed {
        /// The offending field.
        field: &'static str,
    },
    /// A Hawk header value contains a character that cannot be sent (`"` or `\`).
    #[error("the Hawk {field} contains a quote or backslash")]
    BadHeaderComponent {
        /// Which component (`id`, `ext`).
        field: &'static str,
    },
    /// The hawk crate failed (cryptographic backend error).
    #[error("Hawk signing failed: {0}")]
    Hawk(String),
    /// A timestamp before 1970.
    #[error("timestamp {0} is before the Unix epoch")]
    TimeBeforeEpoch(DateTime<Utc>),
}

impl From<hawk::Error> for AuthError {
    fn from(e: hawk::Error) -> Self {
        // hawk errors describe parsing/crypto failures; they never contain key material.
        AuthError::Hawk(e.to_string())
    }
}

/// The request fields Hawk covers.
#[derive(Debug, Clone, Copy)]
pub struct HawkRequest<'a> {
    /// Upper-case method.
    pub method: &'a str,
    /// Lower-case host of the root URL.
    pub host: &'a str,
    /// Port (explicit, else 443/80).
    pub port: u16,
    /// Path plus `?query`, exactly as sent (percent-encoding included).
    pub resource: &'a str,
}

/// `content-type` lower-cased and stripped of parameters, as Hawk's payload hash wants it.
pub fn hawk_content_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The Hawk payload hash of `body` sent as `content_type`.
pub fn payload_hash(content_type: &str, body: &[u8]) -> Result<Vec<u8>, AuthError> {
    Ok(hawk::PayloadHasher::hash(
        hawk_content_type(content_type),
        hawk::DigestAlgorithm::Sha256,
        body,
    )?)
}

/// The `ext` attribute for a request made with `certificate` (temporary credentials): base64 of
/// `{"certificate": <certificate as a JSON object>}`. `None` for permanent credentials.
pub fn ext_for_certificate(certificate: Option<&Secret>) -> Result<Option<String>, AuthError> {
    let Some(cert) = certificate else {
        return Ok(None);
    };
    let value: serde_json::Value =
        serde_json::from_str(cert.expose()).map_err(|_| AuthError::CertificateNotJson)?;
    if !value.is_object() {
        return Err(AuthError::CertificateNotJson);
    }
    // Embed the certificate's own bytes (not a re-serialization) so key order is the issuer's,
    // as the official clients do; the text was just checked to be one JSON object.
    let ext = format!("{{\"certificate\":{}}}", cert.expose().trim());
    Ok(Some(STANDARD.encode(ext)))
}

/// The Hawk normalized string (`hawk.1.header` form). Exposed so tests can check it against the
/// reference vectors; the MAC itself is computed by the `hawk` crate.
pub fn normalized_string(
    req: &HawkRequest<'_>,
    ts: u64,
    nonce: &str,
    hash: Option<&[u8]>,
    ext: Option<&str>,
) -> String {
    format!(
        "hawk.1.header\n{ts}\n{nonce}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        req.method,
        req.resource,
        req.host,
        req.port,
        hash.map(|h| STANDARD.encode(h)).unwrap_or_default(),
        ext.unwrap_or_default()
    )
}

/// One credential set, ready to sign: the HMAC key is built once (not per request) and the
/// `ext` carrying a temporary credential's certificate is encoded once. `Debug` shows the
/// clientId only.
pub struct HawkSigner {
    credentials: hawk::Credentials,
    ext: Option<String>,
}

impl std::fmt::Debug for HawkSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HawkSigner")
            .field("client_id", &self.credentials.id)
            .field("temporary", &self.ext.is_some())
            .finish_non_exhaustive()
    }
}

impl HawkSigner {
    /// Prepares `client_id`/`access_token` (and the certificate of temporary credentials).
    pub fn new(
        client_id: &str,
        access_token: &Secret,
        certificate: Option<&Secret>,
    ) -> Result<HawkSigner, AuthError> {
        if client_id.contains(['"', '\\']) {
            return Err(AuthError::BadHeaderComponent { field: "id" });
        }
        Ok(HawkSigner {
            credentials: hawk::Credentials {
                id: client_id.to_owned(),
                key: hawk::Key::new(
                    access_token.expose().as_bytes(),
                    hawk::DigestAlgorithm::Sha256,
                )?,
            },
            ext: ext_for_certificate(certificate)?,
        })
    }

    /// The `Authorization` header value (`Hawk id="…", …`) for `req` at `ts` with `nonce`.
    pub fn header(
        &self,
        req: &HawkRequest<'_>,
        hash: Option<&[u8]>,
        ts: DateTime<Utc>,
        nonce: &str,
    ) -> Result<String, AuthError> {
        header_with(&self.credentials, req, hash, self.ext.as_deref(), ts, nonce)
    }
}

fn header_with(
    credentials: &hawk::Credentials,
    req: &HawkRequest<'_>,
    hash: Option<&[u8]>,
    ext: Option<&str>,
    ts: DateTime<Utc>,
    nonce: &str,
) -> Result<String, AuthError> {
    let secs = u64::try_from(ts.timestamp()).map_err(|_| AuthError::TimeBeforeEpoch(ts))?;
    let header = hawk::RequestBuilder::new(req.method, req.host, req.port, req.resource)
        .hash(hash)
        .ext(ext)
        .request()
        .make_header_full(credentials, UNIX_EPOCH + Duration::from_secs(secs), nonce)?;
    Ok(format!("Hawk {header}"))
}

/// Builds the `Authorization` header value (`Hawk id="…", …`) for a one-off request (tests,
/// reference vectors); clients sign through a [`HawkSigner`] made once per credential set.
pub fn authorization_header(
    client_id: &str,
    access_token: &Secret,
    req: &HawkRequest<'_>,
    hash: Option<&[u8]>,
    ext: Option<&str>,
    ts: DateTime<Utc>,
    nonce: &str,
) -> Result<String, AuthError> {
    if client_id.contains(['"', '\\']) {
        return Err(AuthError::BadHeaderComponent { field: "id" });
    }
    let credentials = hawk::Credentials {
        id: client_id.to_owned(),
        key: hawk::Key::new(
            access_token.expose().as_bytes(),
            hawk::DigestAlgorithm::Sha256,
        )?,
    };
    header_with(&credentials, req, hash, ext, ts, nonce)
}

/// A fresh random nonce (URL-safe, 12 characters).
pub fn random_nonce() -> String {
    let bytes: [u8; 9] = rand::random();
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A fresh random secret token: 32 random bytes, URL-safe base64 (43 characters).
pub fn random_token() -> Secret {
    let bytes: [u8; 32] = rand::random();
    Secret::new(URL_SAFE_NO_PAD.encode(bytes))
}

fn hmac_b64(key: &[u8], data: &[u8], url_safe: bool) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match HmacSha256::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable_hmac(),
    };
    mac.update(data);
    let out = mac.finalize().into_bytes();
    if url_safe {
        URL_SAFE_NO_PAD.encode(out)
    } else {
        STANDARD.encode(out)
    }
}

#[cold]
fn unreachable_hmac() -> ! {
    // HMAC is defined for keys of every length (RFC 2104 hashes long keys, pads short ones).
    unreachable!("HMAC-SHA256 accepts keys of any length")
}

/// A Taskcluster temporary-credentials certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Certificate {
    /// Always 1.
    pub version: u32,
    /// Scopes granted (a subset of the issuer's).
    pub scopes: Vec<String>,
    /// Validity start, Unix milliseconds.
    pub start: i64,
    /// Validity end, Unix milliseconds.
    pub expiry: i64,
    /// Random 44-character seed the temporary access token is derived from.
    pub seed: String,
    /// `base64(HMAC-SHA256(issuer token, signature lines))`.
    pub signature: String,
    /// The issuing client, for named temporary credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Certificate {
    /// The lines the signature covers (`version:1`, `clientId:`, `issuer:`, `seed:`, `start:`,
    /// `expiry:`, `scopes:`, one line per scope), joined by `\n`. `client_id` is the temporary
    /// clientId for named credentials.
    pub fn signed_text(&self, client_id: Option<&str>) -> String {
        let mut lines = vec![format!("version:{}", self.version)];
        if let Some(issuer) = &self.issuer {
            lines.push(format!("clientId:{}", client_id.unwrap_or_default()));
            lines.push(format!("issuer:{issuer}"));
        }
        lines.push(format!("seed:{}", self.seed));
        lines.push(format!("start:{}", self.start));
        lines.push(format!("expiry:{}", self.expiry));
        lines.push("scopes:".to_owned());
        lines.extend(self.scopes.iter().cloned());
        lines.join("\n")
    }

    /// Computes the signature with the issuer's access token.
    pub fn compute_signature(&self, issuer_token: &Secret, client_id: Option<&str>) -> String {
        hmac_b64(
            issuer_token.expose().as_bytes(),
            self.signed_text(client_id).as_bytes(),
            false,
        )
    }

    /// Whether the stored signature matches (constant-time comparison).
    pub fn signature_valid(&self, issuer_token: &Secret, client_id: Option<&str>) -> bool {
        let expected = self.compute_signature(issuer_token, client_id);
        constant_time_eq(expected.as_bytes(), self.signature.as_bytes())
    }

    /// The temporary access token: `base64url_nopad(HMAC-SHA256(issuer token, seed))`.
    pub fn temporary_access_token(&self, issuer_token: &Secret) -> Secret {
        Secret::new(hmac_b64(
            issuer_token.expose().as_bytes(),
            self.seed.as_bytes(),
            true,
        ))
    }

    /// Parses a certificate from its JSON string form.
    pub fn parse(text: &str) -> Result<Certificate, AuthError> {
        serde_json::from_str(text).map_err(|_| AuthError::CertificateMalformed {
            field: "certificate",
        })
    }
}

/// Issues named temporary credentials: `(clientId, accessToken, certificate JSON string)`.
pub fn issue_temporary_credentials(
    issuer: &str,
    issuer_token: &Secret,
    client_id: &str,
    scopes: Vec<String>,
    start: DateTime<Utc>,
    expiry: DateTime<Utc>,
) -> (Secret, Secret) {
    let seed_bytes: [u8; 33] = rand::random();
    let mut cert = Certificate {
        version: 1,
        scopes,
        start: start.timestamp_millis(),
        expiry: expiry.timestamp_millis(),
        seed: URL_SAFE_NO_PAD.encode(seed_bytes),
        signature: String::new(),
        issuer: Some(issuer.to_owned()),
    };
    cert.signature = cert.compute_signature(issuer_token, Some(client_id));
    let token = cert.temporary_access_token(issuer_token);
    // Serializing a struct of strings and integers cannot fail.
    let text = serde_json::to_string(&cert).unwrap_or_default();
    (token, Secret::new(text))
}

/// Compares two byte strings in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(secs, 0).unwrap()
    }

    fn header_mac(header: &str) -> String {
        let start = header.find("mac=\"").unwrap() + 5;
        let end = start + header[start..].find('"').unwrap();
        header[start..end].to_owned()
    }

    #[test]
    fn vector_a_permanent_credentials_no_body() {
        let req = HawkRequest {
            method: "GET",
            host: "tc.example.com",
            port: 443,
            resource: "/api/queue/v1/task/GVi2vTw8RYqdga6pE08Aiw/status",
        };
        assert_eq!(
            normalized_string(&req, 1700000100, "abc123", None, None),
            "hawk.1.header\n1700000100\nabc123\nGET\n/api/queue/v1/task/GVi2vTw8RYqdga6pE08Aiw/status\ntc.example.com\n443\n\n\n"
        );
        let h = authorization_header(
            "my-client",
            &Secret::new("my-access-token"),
            &req,
            None,
            None,
            at(1700000100),
            "abc123",
        )
        .unwrap();
        assert_eq!(
            header_mac(&h),
            "0/0E1e3wbECKZeOVZ9UlWD6l+LiqiqLVGyycjtH2lO0="
        );
        assert!(h.starts_with("Hawk id=\"my-client\""));
        // The MAC is the HMAC of our normalized string: the two implementations agree.
        let norm = normalized_string(&req, 1700000100, "abc123", None, None);
        assert_eq!(
            hmac_b64(b"my-access-token", norm.as_bytes(), false),
            header_mac(&h)
        );
    }

    /// Issue 11: one HMAC key per credential set. The prepared signer gives the same header
    /// as the one-off function (permanent and temporary credentials), its `Debug` shows neither
    /// the access token nor the certificate, and a bad certificate fails when it is prepared.
    #[test]
    fn a_prepared_signer_matches_the_one_off_header_and_hides_its_secrets() {
        let req = HawkRequest {
            method: "POST",
            host: "tc.example.com",
            port: 443,
            resource: "/api/queue/v1/task/abc/runs/0/completed",
        };
        let token = Secret::new("my-access-token");
        for cert in [None, Some(Secret::new(CERT_B))] {
            let signer = HawkSigner::new("my-client", &token, cert.as_ref()).unwrap();
            let ext = ext_for_certificate(cert.as_ref()).unwrap();
            for (ts, nonce) in [(1700000100, "abc123"), (1700000200, "xyz789")] {
                let one_off = authorization_header(
                    "my-client",
                    &token,
                    &req,
                    Some(b"h"),
                    ext.as_deref(),
                    at(ts),
                    nonce,
                )
                .unwrap();
                assert_eq!(
                    signer.header(&req, Some(b"h"), at(ts), nonce).unwrap(),
                    one_off
                );
            }
            let shown = format!("{signer:?}");
            assert!(shown.contains("my-client"), "{shown}");
            assert!(!shown.contains("my-access-token"), "{shown}");
            assert!(!shown.contains("signature"), "{shown}");
        }
        assert!(matches!(
            HawkSigner::new("my-client", &token, Some(&Secret::new("not json"))),
            Err(AuthError::CertificateNotJson)
        ));
        assert!(matches!(
            HawkSigner::new("my\"client", &token, None),
            Err(AuthError::BadHeaderComponent { field: "id" })
        ));
    }

    const CERT_B: &str = r#"{"version":1,"scopes":["queue:reclaim-task:abc/0"],"start":1700000000000,"expiry":1700001200000,"seed":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa","issuer":"static/taskcluster/queue","signature":"BYJDCGeIeM8lGOEJt+QGMC8wB61UOWczy/Vsmekc+Yc="}"#;
    const EXT_B: &str = "eyJjZXJ0aWZpY2F0ZSI6eyJ2ZXJzaW9uIjoxLCJzY29wZXMiOlsicXVldWU6cmVjbGFpbS10YXNrOmFiYy8wIl0sInN0YXJ0IjoxNzAwMDAwMDAwMDAwLCJleHBpcnkiOjE3MDAwMDEyMDAwMDAsInNlZWQiOiJhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYWFhYSIsImlzc3VlciI6InN0YXRpYy90YXNrY2x1c3Rlci9xdWV1ZSIsInNpZ25hdHVyZSI6IkJZSkRDR2VJZU04bEdPRUp0K1FHTUM4d0I2MVVPV2N6eS9Wc21la2MrWWM9In19";

    #[test]
    fn vector_b_temporary_credentials_with_body() {
        let issuer_token = Secret::new("perm-access-token-example");
        let client_id = "task-client/fake/0/on/wg/wid/until/1700000000";
        let cert = Certificate::parse(CERT_B).unwrap();
        assert!(cert.signature_valid(&issuer_token, Some(client_id)));
        assert!(!cert.signature_valid(&Secret::new("other"), Some(client_id)));
        assert!(!cert.signature_valid(&issuer_token, Some("task-client/other")));
        let token = cert.temporary_access_token(&issuer_token);
        assert_eq!(
            token.expose(),
            "9c9R5aKSapDy-6ev5wYVGSeGhjrhK9-6sBIjgJMQIcA"
        );

        let ext = ext_for_certificate(Some(&Secret::new(CERT_B)))
            .unwrap()
            .unwrap();
        assert_eq!(ext, EXT_B);

        let body = br#"{"workerGroup":"wg","workerId":"wid","tasks":1}"#;
        let hash = payload_hash("application/json; charset=utf-8", body).unwrap();
        assert_eq!(
            STANDARD.encode(&hash),
            "RNAGzxn+Y+p0jISFhFTMj+Og7rCI90+1jCpA8pxUy7k="
        );
        let req = HawkRequest {
            method: "POST",
            host: "tc.example.com",
            port: 443,
            resource: "/api/queue/v1/claim-work/proj-releng/scriptworker-test",
        };
        let h = authorization_header(
            client_id,
            &token,
            &req,
            Some(&hash),
            Some(&ext),
            at(1700000100),
            "Ygvqdz",
        )
        .unwrap();
        assert_eq!(
            header_mac(&h),
            "RtooHRewfyzDu3GAY5UA9/19ZlDqPGD1atKRmJTXs00="
        );
        let norm = normalized_string(&req, 1700000100, "Ygvqdz", Some(&hash), Some(&ext));
        assert_eq!(
            hmac_b64(token.expose().as_bytes(), norm.as_bytes(), false),
            header_mac(&h)
        );
    }

    #[test]
    fn ext_round_trip_embeds_the_certificate_as_an_object() {
        let ext = ext_for_certificate(Some(&Secret::new(CERT_B)))
            .unwrap()
            .unwrap();
        let decoded: serde_json::Value =
            serde_json::from_slice(&STANDARD.decode(ext).unwrap()).unwrap();
        let cert: serde_json::Value = serde_json::from_str(CERT_B).unwrap();
        assert_eq!(decoded, serde_json::json!({ "certificate": cert }));
        assert!(ext_for_certificate(None).unwrap().is_none());
        assert!(matches!(
            ext_for_certificate(Some(&Secret::new("not json"))),
            Err(AuthError::CertificateNotJson)
        ));
        assert!(matches!(
            ext_for_certificate(Some(&Secret::new("\"a string\""))),
            Err(AuthError::CertificateNotJson)
        ));
    }

    #[test]
    fn issued_credentials_verify() {
        let issuer = Secret::new("issuer-token");
        let (token, cert_text) = issue_temporary_credentials(
            "dev-queue/issuer",
            &issuer,
            "task-client/x/0/on/wg/w/until/1",
            vec!["a".into(), "b".into()],
            at(1700000000),
            at(1700001200),
        );
        let cert = Certificate::parse(cert_text.expose()).unwrap();
        assert!(cert.signature_valid(&issuer, Some("task-client/x/0/on/wg/w/until/1")));
        assert_eq!(cert.temporary_access_token(&issuer), token);
        assert_eq!(cert.seed.len(), 44);
        assert_eq!(cert.expiry - cert.start, 1_200_000);
    }
}
