//! The dev queue's legacy Azure-queue side (`chainlock dev-queue --azure-queue-endpoint URL`):
//! what Taskcluster's queue did before v24, against a real Azure Storage queue service (in
//! development and tests: Azurite).
//!
//! For each task queue it creates one Azure queue and, for every run that becomes pending,
//! puts a message on it: base64 of `{"taskId", "runId", "hintId"}`, as the real queue did
//! (`hintId` is what broke scriptworker 0.8.0). `pollTaskUrls` hands out SAS URLs for that
//! queue: a poll URL and a delete URL with `{{messageId}}` / `{{popReceipt}}` placeholders.
//!
//! **Development only.** The account is Azurite's well-known development account, whose key
//! Microsoft publishes; nothing here is a secret, and nothing here is for production.
//!
//! SAS tokens follow the Azure Storage service-SAS and account-SAS rules (signed version
//! [`SAS_VERSION`]): HMAC-SHA256, keyed with the base64-decoded account key, over the
//! newline-joined signed fields; the signature goes base64 into `sig`.

use crate::ids::TaskId;
use crate::queue::encode_component;
use crate::secret::Secret;
use base64::Engine as _;
use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{KeyInit, Mac as _};
use std::collections::HashSet;
use std::time::Duration;

/// Azurite's development account name (public).
pub const DEV_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's development account key, as Microsoft publishes it (public, not a secret).
pub const DEV_ACCOUNT_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";
/// The signed version of every SAS we make (before 2020-12-06, so an account SAS has no
/// encryption-scope field).
pub const SAS_VERSION: &str = "2019-12-12";
/// Messages handed out by a poll stay invisible this long, as the reference describes.
pub const VISIBILITY_TIMEOUT_SECS: u32 = 300;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Why the Azure endpoint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AzureEndpointError {
    /// Not `http(s)://host[:port]/devstoreaccount1`.
    #[error(
        "azure queue endpoint {0:?} must be http(s)://host[:port]/devstoreaccount1 (the public \
         development account)"
    )]
    Shape(String),
}

/// An Azure Storage queue service endpoint, path-style: `http://127.0.0.1:10001/devstoreaccount1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureEndpoint {
    /// `scheme://host:port/<account>`, no trailing slash.
    base: String,
    account: String,
    key: Vec<u8>,
}

impl AzureEndpoint {
    /// Parses a path-style endpoint; the account is the first path segment and must be
    /// [`DEV_ACCOUNT`] (this is the development account's key).
    pub fn parse(endpoint: &str) -> Result<AzureEndpoint, AzureEndpointError> {
        let bad = || AzureEndpointError::Shape(endpoint.to_owned());
        let url = url::Url::parse(endpoint.trim_end_matches('/')).map_err(|_| bad())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.query().is_some()
            || url.host_str().is_none()
        {
            return Err(bad());
        }
        let mut segments = url.path_segments().ok_or_else(bad)?;
        let account = segments
            .next()
            .filter(|a| *a == DEV_ACCOUNT)
            .ok_or_else(bad)?;
        if segments.next().is_some() {
            return Err(bad());
        }
        let key = base64::engine::general_purpose::STANDARD
            .decode(DEV_ACCOUNT_KEY)
            .map_err(|_| bad())?;
        Ok(AzureEndpoint {
            base: url.as_str().trim_end_matches('/').to_owned(),
            account: account.to_owned(),
            key,
        })
    }

    /// `<base>/<queue>`.
    pub fn queue_url(&self, queue: &str) -> String {
        format!("{}/{queue}", self.base)
    }

    /// The query of a service SAS for `queue` with `permissions` (`r`, `a`, `u`, `p`) until
    /// `expiry`.
    pub fn queue_sas(&self, queue: &str, permissions: &str, expiry: DateTime<Utc>) -> Secret {
        let se = sas_time(expiry);
        let resource = format!("/queue/{}/{queue}", self.account);
        // permissions, start, expiry, canonicalized resource, identifier, IP, protocol, version
        let to_sign = [permissions, "", &se, &resource, "", "", "", SAS_VERSION].join("\n");
        let sig = self.sign(&to_sign);
        Secret::new(format!(
            "sv={SAS_VERSION}&se={}&sp={permissions}&sig={}",
            encode_component(&se),
            encode_component(&sig)
        ))
    }

    /// The query of an account SAS for the queue service (`ss=q`), service and container
    /// resource types (`srt=sc`), with `permissions` until `expiry`.
    pub fn account_sas(&self, permissions: &str, expiry: DateTime<Utc>) -> Secret {
        let se = sas_time(expiry);
        // account, permissions, services, resource types, start, expiry, IP, protocol,
        // version, and a final newline
        let to_sign = [
            self.account.as_str(),
            permissions,
            "q",
            "sc",
            "",
            &se,
            "",
            "",
            SAS_VERSION,
            "",
        ]
        .join("\n");
        let sig = self.sign(&to_sign);
        Secret::new(format!(
            "sv={SAS_VERSION}&ss=q&srt=sc&sp={permissions}&se={}&sig={}",
            encode_component(&se),
            encode_component(&sig)
        ))
    }

    fn sign(&self, to_sign: &str) -> String {
        let mut mac = match HmacSha256::new_from_slice(&self.key) {
            Ok(m) => m,
            // HMAC accepts keys of any length.
            Err(_) => return String::new(),
        };
        mac.update(to_sign.as_bytes());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }

    /// `(signedPollUrl, signedDeleteUrl)` of `queue`, valid until `expiry`: `p` (process)
    /// permits getting and deleting messages, nothing else.
    pub fn poll_urls(&self, queue: &str, expiry: DateTime<Utc>) -> (Secret, Secret) {
        let sas = self.queue_sas(queue, "p", expiry);
        let base = self.queue_url(queue);
        (
            Secret::new(format!(
                "{base}/messages?visibilitytimeout={VISIBILITY_TIMEOUT_SECS}&{}",
                sas.expose()
            )),
            Secret::new(format!(
                "{base}/messages/{{{{messageId}}}}?popreceipt={{{{popReceipt}}}}&{}",
                sas.expose()
            )),
        )
    }
}

/// `2026-01-01T00:00:00Z`: the SAS time format (no fractional seconds).
fn sas_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The Azure queue of a task queue: `tq-` and 32 hex digits of its SHA-256 (Azure queue names
/// are 3-63 lowercase letters, digits and single hyphens; task queue ids are not).
pub fn queue_name(task_queue_id: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(task_queue_id.as_bytes());
    format!("tq-{}", &hex::encode(digest)[..32])
}

/// The base64 message text for one pending run: `{"taskId", "runId", "hintId"}` plus `extra`
/// (which cannot replace those three).
pub fn message_text(
    task_id: &TaskId,
    run_id: u32,
    hint_id: &TaskId,
    extra: &serde_json::Map<String, serde_json::Value>,
) -> String {
    let mut json = extra.clone();
    json.insert("taskId".into(), task_id.as_str().into());
    json.insert("runId".into(), run_id.into());
    json.insert("hintId".into(), hint_id.as_str().into());
    base64::engine::general_purpose::STANDARD.encode(serde_json::Value::Object(json).to_string())
}

/// Creates Azure queue `name` (an account SAS with create permission). Idempotent: Azure
/// answers 201 when it created the queue, 204 when it was there.
pub(crate) async fn create_queue(
    http: &reqwest::Client,
    endpoint: &AzureEndpoint,
    name: &str,
) -> Result<(), String> {
    let expiry = crate::clock::now() + chrono::Duration::minutes(10);
    let url = format!(
        "{}?{}",
        endpoint.queue_url(name),
        endpoint.account_sas("c", expiry).expose()
    );
    let resp = http
        .put(url)
        .header("x-ms-version", SAS_VERSION)
        .header(reqwest::header::CONTENT_LENGTH, 0)
        .send()
        .await
        .map_err(|e| format!("create queue {name}: {}", e.without_url()))?;
    if !resp.status().is_success() {
        return Err(format!("create queue {name}: HTTP {}", resp.status()));
    }
    Ok(())
}

/// A client for the Azure endpoint (bounded request time).
pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default()
}

/// Puts messages on Azure queues for pending runs, remembering what it already enqueued.
pub(crate) struct Feeder {
    endpoint: AzureEndpoint,
    http: reqwest::Client,
    created: HashSet<String>,
    enqueued: HashSet<(TaskId, u32)>,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl Feeder {
    pub(crate) fn new(
        endpoint: AzureEndpoint,
        extra: serde_json::Map<String, serde_json::Value>,
    ) -> Feeder {
        Feeder {
            endpoint,
            http: http_client(),
            created: HashSet::new(),
            enqueued: HashSet::new(),
            extra,
        }
    }

    /// Creates the Azure queue of `task_queue_id` if this feeder has not yet.
    pub(crate) async fn ensure_queue(&mut self, task_queue_id: &str) -> Result<String, String> {
        let name = queue_name(task_queue_id);
        if self.created.contains(&name) {
            return Ok(name);
        }
        create_queue(&self.http, &self.endpoint, &name).await?;
        self.created.insert(name.clone());
        Ok(name)
    }

    /// Enqueues one message per run in `pending` not enqueued yet. Failures are retried on
    /// the next call.
    pub(crate) async fn feed(&mut self, pending: Vec<(TaskId, u32, String)>) {
        let live: HashSet<(TaskId, u32)> = pending
            .iter()
            .map(|(id, run, _)| (id.clone(), *run))
            .collect();
        for (task_id, run_id, task_queue_id) in pending {
            if self.enqueued.contains(&(task_id.clone(), run_id)) {
                continue;
            }
            match self.put_message(&task_id, run_id, &task_queue_id).await {
                Ok(()) => {
                    tracing::info!(%task_id, run_id, "dev-queue: Azure message put");
                    self.enqueued.insert((task_id, run_id));
                }
                Err(e) => {
                    tracing::warn!(%task_id, run_id, error = %e,
                        "dev-queue: cannot put the Azure message; retrying");
                    break;
                }
            }
        }
        // Runs no longer pending will never be pending again under the same id.
        self.enqueued.retain(|k| live.contains(k));
    }

    async fn put_message(
        &mut self,
        task_id: &TaskId,
        run_id: u32,
        task_queue_id: &str,
    ) -> Result<(), String> {
        let name = self.ensure_queue(task_queue_id).await?;
        let expiry = crate::clock::now() + chrono::Duration::minutes(10);
        let url = format!(
            "{}/messages?{}",
            self.endpoint.queue_url(&name),
            self.endpoint.queue_sas(&name, "a", expiry).expose()
        );
        let body = format!(
            "<QueueMessage><MessageText>{}</MessageText></QueueMessage>",
            message_text(task_id, run_id, &TaskId::generate(), &self.extra)
        );
        let resp = self
            .http
            .post(url)
            .header("x-ms-version", SAS_VERSION)
            .header(reqwest::header::CONTENT_TYPE, "application/xml")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("put message: {}", e.without_url()))?;
        if !resp.status().is_success() {
            // A queue deleted behind our back: create it again next time.
            self.created.remove(&name);
            return Err(format!("put message: HTTP {}", resp.status()));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_shape_and_sas_fields() {
        assert!(AzureEndpoint::parse("http://127.0.0.1:10001/devstoreaccount1").is_ok());
        assert!(AzureEndpoint::parse("http://127.0.0.1:10001/devstoreaccount1/").is_ok());
        for bad in [
            "http://127.0.0.1:10001",
            "http://127.0.0.1:10001/other",
            "http://127.0.0.1:10001/devstoreaccount1/q",
            "ftp://h/devstoreaccount1",
            "http://h/devstoreaccount1?x=1",
        ] {
            assert!(AzureEndpoint::parse(bad).is_err(), "{bad}");
        }
        let e = AzureEndpoint::parse("http://127.0.0.1:1/devstoreaccount1").unwrap();
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let q = e.queue_sas("tq-x", "p", t);
        assert!(
            q.expose()
                .starts_with("sv=2019-12-12&se=2026-01-01T00%3A30%3A00Z&sp=p&sig="),
            "{}",
            q.expose()
        );
        // Deterministic: same inputs, same signature; another permission, another one.
        assert_eq!(q, e.queue_sas("tq-x", "p", t));
        assert_ne!(q, e.queue_sas("tq-x", "a", t));
        let (poll, delete) = e.poll_urls("tq-x", t);
        assert!(poll.expose().starts_with(
            "http://127.0.0.1:1/devstoreaccount1/tq-x/messages?visibilitytimeout=300&sv="
        ));
        assert!(delete.expose().starts_with(
            "http://127.0.0.1:1/devstoreaccount1/tq-x/messages/{{messageId}}?popreceipt={{popReceipt}}&sv="
        ));
        assert!(
            e.account_sas("c", t)
                .expose()
                .starts_with("sv=2019-12-12&ss=q&srt=sc&sp=c&se=")
        );
        let name = queue_name("scriptworker-k8s/gecko-3-signing");
        assert_eq!(name.len(), 35);
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        );
    }

    #[test]
    fn messages_carry_task_run_and_hint() {
        let id = TaskId::generate();
        let extra = serde_json::json!({"runId": 9, "future": [1]});
        let text = message_text(&id, 3, &TaskId::generate(), extra.as_object().unwrap());
        let r = crate::queue::azure::decode_message_text(&text).unwrap();
        assert_eq!((r.task_id, r.run_id), (id, 3));
        let json = base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap();
        let json = String::from_utf8(json).unwrap();
        assert!(
            json.contains("\"hintId\"") && json.contains("\"future\""),
            "{json}"
        );
    }
}
