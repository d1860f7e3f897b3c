//! Hawk verification and scope checks for the dev queue, following Taskcluster's auth service:
//! permanent clients, and temporary credentials whose certificate is checked against the
//! issuer's token.

use crate::devqueue::state::ApiError;
use crate::queue::auth::{Certificate, constant_time_eq, payload_hash};
use crate::secret::Secret;
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use std::str::FromStr as _;
use std::time::UNIX_EPOCH;

/// Allowed clock skew of a Hawk timestamp (the auth service's `timestampSkewSec: 900`).
const TS_SKEW_SECS: i64 = 900;
/// Allowed skew on certificate start/expiry.
const CERT_SKEW: Duration = Duration::minutes(5);

/// A permanent client the dev queue accepts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Client {
    /// clientId.
    pub client_id: String,
    /// Access token (the Hawk key).
    pub access_token: Secret,
    /// Scopes (`*` suffix patterns allowed).
    pub scopes: Vec<String>,
}

/// Who made a request, after authentication.
#[derive(Debug, Clone)]
pub struct Caller {
    /// clientId (`anonymous` for unsigned requests).
    pub client_id: String,
    /// Effective scopes.
    pub scopes: Vec<String>,
}

/// Whether `have` grants `need` (exact match, or a `prefix*` pattern).
pub fn satisfies(have: &[String], need: &str) -> bool {
    have.iter().any(|s| match s.strip_suffix('*') {
        Some(prefix) => need.starts_with(prefix),
        None => s == need,
    })
}

impl Caller {
    fn anonymous() -> Caller {
        Caller {
            client_id: "anonymous".into(),
            scopes: vec![
                "queue:get-artifact:public/*".into(),
                "queue:get-task:*".into(),
                "queue:status:*".into(),
                "queue:list-artifacts:*".into(),
            ],
        }
    }

    /// 403 unless the caller holds every scope in `needed`.
    pub fn require(&self, needed: &[String]) -> Result<(), ApiError> {
        match needed.iter().find(|n| !satisfies(&self.scopes, n)) {
            None => Ok(()),
            Some(missing) => Err(ApiError::forbidden(format!(
                "client {} lacks scope {missing}",
                self.client_id
            ))),
        }
    }
}

/// What the verifier needs to know about the request.
pub struct RequestFacts<'a> {
    /// Method, upper case.
    pub method: &'a str,
    /// Path and query exactly as received.
    pub resource: &'a str,
    /// `Host` header.
    pub host_header: Option<&'a str>,
    /// `Authorization` header.
    pub authorization: Option<&'a str>,
    /// `Content-Type` header.
    pub content_type: Option<&'a str>,
    /// Body bytes.
    pub body: &'a [u8],
}

/// The keys the verifier knows.
pub struct Keyring<'a> {
    /// Permanent clients.
    pub clients: &'a [Client],
    /// The internal issuer of task credentials: clientId and token.
    pub issuer_id: &'a str,
    /// The issuer's token.
    pub issuer_token: &'a Secret,
}

/// Authenticates a request. No `Authorization` header means anonymous.
pub fn authenticate(
    keys: &Keyring<'_>,
    req: &RequestFacts<'_>,
    now: DateTime<Utc>,
) -> Result<Caller, ApiError> {
    let Some(authz) = req.authorization else {
        return Ok(Caller::anonymous());
    };
    let unauthorized = |m: &str| ApiError::unauthorized(m);
    let raw = authz
        .strip_prefix("Hawk ")
        .ok_or_else(|| unauthorized("only Hawk authorization is supported"))?;
    let header = hawk::Header::from_str(raw).map_err(|_| unauthorized("malformed Hawk header"))?;
    let (Some(id), Some(ts), Some(_nonce), Some(_mac)) =
        (&header.id, header.ts, &header.nonce, &header.mac)
    else {
        return Err(unauthorized("Hawk header lacks id, ts, nonce or mac"));
    };
    let ts_secs = ts
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    if (now.timestamp() - ts_secs).abs() > TS_SKEW_SECS {
        return Err(unauthorized(
            "stale timestamp: Hawk ts is more than 15 minutes off",
        ));
    }

    let (key, scopes) = match ext_certificate(header.ext.as_deref())? {
        None => {
            let client = keys
                .clients
                .iter()
                .find(|c| c.client_id == *id)
                .ok_or_else(|| unauthorized(&format!("unknown clientId {id}")))?;
            (client.access_token.clone(), client.scopes.clone())
        }
        Some(cert) => verify_certificate(keys, id, &cert, now)?,
    };

    let (host, port) = split_host(req.host_header)?;
    let computed_hash = match &header.hash {
        Some(sent) => {
            let ct = req.content_type.unwrap_or_default();
            let ours = payload_hash(ct, req.body).map_err(|_| unauthorized("cannot hash body"))?;
            if !constant_time_eq(&ours, sent) {
                return Err(unauthorized("Invalid payload hash"));
            }
            Some(ours)
        }
        None => None,
    };
    let hkey = hawk::Key::new(key.expose().as_bytes(), hawk::DigestAlgorithm::Sha256)
        .map_err(|_| unauthorized("cannot use key"))?;
    let request = hawk::RequestBuilder::new(req.method, &host, port, req.resource)
        .hash(computed_hash.as_deref())
        .ext(header.ext.as_deref())
        .request();
    // The timestamp was checked above against crate::clock; disable the crate's own check.
    if !request.validate_header(&header, &hkey, std::time::Duration::MAX) {
        return Err(unauthorized("Bad mac"));
    }
    Ok(Caller {
        client_id: id.clone(),
        scopes,
    })
}

fn split_host(host_header: Option<&str>) -> Result<(String, u16), ApiError> {
    let h = host_header.ok_or_else(|| ApiError::unauthorized("no Host header"))?;
    let (host, port) = match h.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || h.starts_with('[') => (
            host,
            port.parse::<u16>()
                .map_err(|_| ApiError::unauthorized("bad Host header port"))?,
        ),
        _ => (h, 80),
    };
    Ok((host.to_ascii_lowercase(), port))
}

fn ext_certificate(ext: Option<&str>) -> Result<Option<Certificate>, ApiError> {
    let Some(ext) = ext else { return Ok(None) };
    let bad = || ApiError::unauthorized("ext is not base64 JSON");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(ext)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(ext))
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(ext))
        .map_err(|_| bad())?;
    let v: serde_json::Value = serde_json::from_slice(&decoded).map_err(|_| bad())?;
    if v.get("authorizedScopes").is_some() {
        return Err(ApiError::unauthorized(
            "authorizedScopes is not supported by the dev queue",
        ));
    }
    let cert = match v.get("certificate") {
        None => return Ok(None),
        Some(serde_json::Value::String(s)) => serde_json::from_str(s),
        Some(obj) => serde_json::from_value(obj.clone()),
    }
    .map_err(|_| ApiError::unauthorized("malformed certificate"))?;
    Ok(Some(cert))
}

fn verify_certificate(
    keys: &Keyring<'_>,
    client_id: &str,
    cert: &Certificate,
    now: DateTime<Utc>,
) -> Result<(Secret, Vec<String>), ApiError> {
    let unauthorized = |m: &str| ApiError::unauthorized(m);
    if cert.version != 1 {
        return Err(unauthorized("certificate version must be 1"));
    }
    let issuer = cert.issuer.as_deref().unwrap_or(client_id);
    let (issuer_token, issuer_scopes) = if issuer == keys.issuer_id {
        (keys.issuer_token.clone(), vec!["*".to_owned()])
    } else {
        let c = keys
            .clients
            .iter()
            .find(|c| c.client_id == issuer)
            .ok_or_else(|| unauthorized(&format!("unknown certificate issuer {issuer}")))?;
        (c.access_token.clone(), c.scopes.clone())
    };
    let named = cert.issuer.as_ref().map(|_| client_id);
    if !cert.signature_valid(&issuer_token, named) {
        return Err(unauthorized("certificate signature is invalid"));
    }
    let (start, expiry) = (
        DateTime::from_timestamp_millis(cert.start),
        DateTime::from_timestamp_millis(cert.expiry),
    );
    let (Some(start), Some(expiry)) = (start, expiry) else {
        return Err(unauthorized("certificate times out of range"));
    };
    if expiry - start > Duration::days(31) {
        return Err(unauthorized("certificate valid for more than 31 days"));
    }
    if start > now + CERT_SKEW {
        return Err(unauthorized("certificate not yet valid"));
    }
    if expiry < now - CERT_SKEW {
        return Err(unauthorized("certificate expired"));
    }
    if let Some(s) = cert.scopes.iter().find(|s| !satisfies(&issuer_scopes, s)) {
        return Err(unauthorized(&format!(
            "certificate scope {s} exceeds its issuer's scopes"
        )));
    }
    Ok((
        cert.temporary_access_token(&issuer_token),
        cert.scopes.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_patterns() {
        let have = vec!["queue:claim-work:prov/*".to_owned(), "a".to_owned()];
        assert!(satisfies(&have, "queue:claim-work:prov/wt"));
        assert!(satisfies(&have, "a"));
        assert!(!satisfies(&have, "ab"));
        assert!(!satisfies(&have, "queue:claim-work:other/wt"));
        assert!(satisfies(&["*".to_owned()], "anything"));
    }

    #[test]
    fn host_header_parsing() {
        assert_eq!(
            split_host(Some("127.0.0.1:8080")).unwrap(),
            ("127.0.0.1".into(), 8080)
        );
        assert_eq!(
            split_host(Some("TC.example")).unwrap(),
            ("tc.example".into(), 80)
        );
        assert_eq!(split_host(Some("[::1]:81")).unwrap(), ("[::1]".into(), 81));
        assert!(split_host(None).is_err());
    }
}
