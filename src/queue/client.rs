//! The queue client: typed async calls over reqwest, Hawk-signed, with bounded retries.

use crate::ids::TaskId;
use crate::queue::auth::{self, HawkRequest};
use crate::queue::credentials::Credentials;
use crate::queue::error::QueueError;
use crate::queue::types::{
    ArtifactInfo, ClaimTaskRequest, ClaimWorkRequest, ClaimWorkResponse, CreateArtifactRequest,
    CreateArtifactResponse, CreateUploadRequest, CreateUploadResponse, ExceptionReason,
    ExceptionRequest, FinishArtifactRequest, FinishUploadRequest, ListArtifactsResponse,
    ObjectArtifact, ObjectHashes, PollTaskUrlsResponse, ProposedUploadMethods, PutUrlProposal,
    ReclaimResponse, TaskClaim, TaskStatus, TaskStatusResponse,
};
use crate::secret::Secret;
use backon::BackoffBuilder as _;
use bytes::Bytes;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, LOCATION};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use url::{Position, Url};

/// Characters left unescaped in a path segment: those of JavaScript's `encodeURIComponent`,
/// which is what the official clients use (`/` becomes `%2F`).
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

/// Percent-encodes one path component as the official clients do.
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, COMPONENT).to_string()
}

/// How failed requests are retried, and how long one attempt may take.
///
/// Retries happen on connection errors, timeouts, 5xx and 429 (and 400 for presigned uploads,
/// which S3 uses for idle-connection timeouts); never on other 4xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Total attempts including the first. Default 6 (5 retries, as the official clients).
    pub max_attempts: u32,
    /// First backoff delay (before jitter). Default 1 s.
    pub min_delay: Duration,
    /// Cap on one backoff delay. Default 30 s.
    pub max_delay: Duration,
    /// Time limit of one API call, including the body. Must exceed claimWork's 20 s long
    /// poll. Default 60 s.
    pub request_timeout: Duration,
    /// TCP/TLS connect timeout. Default 30 s.
    pub connect_timeout: Duration,
    /// Longest silence while reading or writing a body. Uploads have no total time limit;
    /// downloads are bounded by [`ClientLimits::download_deadline`] and
    /// [`ClientLimits::min_download_rate`]. Default 120 s.
    pub read_timeout: Duration,
}

impl RetryPolicy {
    /// The production defaults documented on each field.
    pub fn standard() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(30),
            request_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(120),
        }
    }

    /// Quick retries for tests: 4 attempts, 10-50 ms apart, 30 s request timeout.
    pub fn fast_for_tests() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            min_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(30),
        }
    }

    /// The longest one call can take with every retry: each attempt's time limit plus each
    /// pause at its largest (the jitter can double a delay).
    pub fn worst_case(&self) -> Duration {
        let attempts = self.max_attempts.max(1);
        self.request_timeout
            .saturating_mul(attempts)
            .saturating_add(
                self.max_delay
                    .saturating_mul(2)
                    .saturating_mul(attempts - 1),
            )
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> + use<> {
        backon::ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build()
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::standard()
    }
}

/// Read size of a streamed upload body.
const UPLOAD_READ_BYTES: usize = 256 * 1024;

/// Caps on what the queue may send us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientLimits {
    /// Largest JSON response accepted (task definitions, listings). Default 16 MiB.
    pub max_response_bytes: u64,
    /// Most artifacts accepted from one listing, over all pages. Default 100 000.
    pub max_listed_artifacts: usize,
    /// Most redirects followed for one download. Default 5.
    pub max_redirects: u32,
    /// `limit` sent with listing requests; `None` lets the queue choose (1000).
    pub list_page_size: Option<u32>,
    /// Longest one artifact download may take, over every redirect hop, the body and the
    /// retries ([`QueueError::DownloadDeadline`], not retried). Default 1 hour (16 GiB, the
    /// largest consumed artifact by default, at about 4.7 MB/s).
    pub download_deadline: Duration,
    /// Slowest accepted body, in bytes per second, measured over each
    /// [`download_rate_window`](Self::download_rate_window): a body that delivers less in a
    /// window (a trickle that never trips `read_timeout`) fails the attempt with
    /// [`QueueError::TooSlow`], which is retried within the deadline. `0` disables the check.
    /// Default 4 KiB/s.
    pub min_download_rate: u64,
    /// Window of the minimum-rate check. Default 30 s.
    pub download_rate_window: Duration,
    /// Longest one artifact upload may take, over every attempt and retry delay
    /// ([`QueueError::UploadDeadline`], not retried): an object store that accepts the body
    /// a byte at a time cannot hold the task past its claim for ever. Default 1 hour.
    pub upload_deadline: Duration,
    /// Slowest accepted upload, in bytes per second of body taken by the store on average
    /// since the attempt started, checked every
    /// [`upload_rate_window`](Self::upload_rate_window) until the whole body is sent: a store
    /// that falls behind fails the attempt with [`QueueError::UploadTooSlow`], which is retried
    /// within the deadline. So an attempt at an upload of `S` bytes is cut by about
    /// `S / min_upload_rate` plus one window (the deadline a file's size and the rate give),
    /// and the answer's wait after the body is bounded by the read timeout. `0` disables the
    /// check. Default 4 KiB/s.
    pub min_upload_rate: u64,
    /// How often the upload minimum-rate check runs. Default 30 s.
    pub upload_rate_window: Duration,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            max_response_bytes: 16 * 1024 * 1024,
            max_listed_artifacts: 100_000,
            max_redirects: 5,
            list_page_size: None,
            download_deadline: Duration::from_secs(3600),
            min_download_rate: 4 * 1024,
            download_rate_window: Duration::from_secs(30),
            upload_deadline: Duration::from_secs(3600),
            min_upload_rate: 4 * 1024,
            upload_rate_window: Duration::from_secs(30),
        }
    }
}

/// What a download produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadInfo {
    /// Bytes written to the destination (after gzip decoding).
    pub bytes: u64,
    /// `Content-Type` of the stored object.
    pub content_type: Option<String>,
    /// `Content-Encoding` the object was stored with (`gzip` was decoded).
    pub content_encoding: Option<String>,
    /// `x-taskcluster-artifact-storage-type` of the queue's answer.
    pub storage_type: Option<String>,
}

/// What an upload sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadInfo {
    /// Bytes of the source file.
    pub source_bytes: u64,
    /// Bytes sent on the wire (the gzip length when compressed).
    pub sent_bytes: u64,
}

#[derive(Clone)]
struct Inner {
    http: reqwest::Client,
    /// `<rootUrl>/api/queue/v1` (or `/api/object/v1`), no trailing slash.
    base: String,
    /// The path `base` adds to the root URL, as errors show it.
    service_path: &'static str,
    root_url: String,
    host: String,
    port: u16,
    retry: RetryPolicy,
    limits: ClientLimits,
    /// Where retries and transferred bytes are counted (the worker's; none elsewhere).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// A Taskcluster queue client. Cheap to clone; clones share the connection pool.
///
/// Without credentials it sends anonymous requests (fine for reading public data).
#[derive(Clone)]
pub struct QueueClient {
    inner: Arc<Inner>,
    credentials: Option<Arc<Signing>>,
}

/// A credential set and its prepared Hawk signer (one HMAC key per credential set, not per
/// request). A certificate that cannot be used fails each request with the same error.
struct Signing {
    credentials: Credentials,
    signer: Result<auth::HawkSigner, auth::AuthError>,
}

impl Signing {
    fn new(credentials: Credentials) -> Arc<Signing> {
        let signer = auth::HawkSigner::new(
            &credentials.client_id,
            &credentials.access_token,
            credentials.certificate.as_ref(),
        );
        Arc::new(Signing {
            credentials,
            signer,
        })
    }
}

impl std::fmt::Debug for QueueClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueClient")
            .field("root_url", &self.inner.root_url)
            .field(
                "client_id",
                &self
                    .credentials
                    .as_ref()
                    .map(|c| c.credentials.client_id.as_str()),
            )
            .finish()
    }
}

enum Payload<'a> {
    None,
    Empty,
    Json(&'a [u8]),
}

impl QueueClient {
    /// A client for the deployment at `root_url` (e.g. `https://tc.example.com`).
    pub fn new(
        root_url: &str,
        credentials: Option<Credentials>,
        retry: RetryPolicy,
    ) -> Result<QueueClient, QueueError> {
        let bad = |reason| QueueError::InvalidRootUrl {
            root_url: root_url.to_owned(),
            reason,
        };
        let trimmed = root_url.trim_end_matches('/');
        let url = Url::parse(trimmed).map_err(|_| bad("not a URL"))?;
        if url.scheme() != "https" && url.scheme() != "http" {
            return Err(bad("scheme must be http or https"));
        }
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(bad("must not contain a query, fragment or user"));
        }
        let host = url
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .to_ascii_lowercase();
        let port = url.port_or_known_default().ok_or_else(|| bad("no port"))?;
        let http = reqwest::Client::builder()
            // Redirects are followed by hand so Hawk headers never go to another host.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(retry.connect_timeout)
            .read_timeout(retry.read_timeout)
            .build()
            .map_err(QueueError::Client)?;
        Ok(QueueClient {
            inner: Arc::new(Inner {
                http,
                base: format!("{trimmed}/api/queue/v1"),
                service_path: "/api/queue/v1",
                root_url: trimmed.to_owned(),
                host,
                port,
                retry,
                limits: ClientLimits::default(),
                metrics: None,
            }),
            credentials: credentials.map(Signing::new),
        })
    }

    /// The same client with different response limits.
    pub fn with_limits(self, limits: ClientLimits) -> QueueClient {
        let mut inner = (*self.inner).clone();
        inner.limits = limits;
        QueueClient {
            inner: Arc::new(inner),
            credentials: self.credentials,
        }
    }

    /// The same client counting its retries and transferred bytes in `metrics` (clients made
    /// from it with [`QueueClient::with_credentials`] count there too).
    pub fn with_metrics(self, metrics: Arc<crate::metrics::Metrics>) -> QueueClient {
        let mut inner = (*self.inner).clone();
        inner.metrics = Some(metrics);
        QueueClient {
            inner: Arc::new(inner),
            credentials: self.credentials,
        }
    }

    /// A client sharing this one's connection pool but signing with `credentials`
    /// (e.g. a run's temporary task credentials).
    pub fn with_credentials(&self, credentials: Credentials) -> QueueClient {
        QueueClient {
            inner: self.inner.clone(),
            credentials: Some(Signing::new(credentials)),
        }
    }

    /// An anonymous client sharing this one's connection pool.
    pub fn anonymous(&self) -> QueueClient {
        QueueClient {
            inner: self.inner.clone(),
            credentials: None,
        }
    }

    /// The root URL, without trailing slash.
    pub fn root_url(&self) -> &str {
        &self.inner.root_url
    }

    /// The clientId requests are signed with, if any.
    pub fn client_id(&self) -> Option<&str> {
        self.credentials
            .as_ref()
            .map(|c| c.credentials.client_id.as_str())
    }

    // ---- worker calls ----

    /// `claimWork`: long-polls (up to ~20 s) for tasks on `task_queue_id`.
    pub async fn claim_work(
        &self,
        task_queue_id: &str,
        request: &ClaimWorkRequest,
    ) -> Result<ClaimWorkResponse, QueueError> {
        let body = to_json(request);
        let path = format!("/claim-work/{}", encode_component(task_queue_id));
        self.api(Method::POST, &path, Payload::Json(&body)).await
    }

    /// Legacy `pollTaskUrls` (queues before Taskcluster v24): signed Azure queue URLs for
    /// `provisioner_id/worker_type`, highest priority first.
    pub async fn poll_task_urls(
        &self,
        provisioner_id: &str,
        worker_type: &str,
    ) -> Result<PollTaskUrlsResponse, QueueError> {
        let path = format!(
            "/poll-task-url/{}/{}",
            encode_component(provisioner_id),
            encode_component(worker_type)
        );
        let bytes = self
            .api_raw(&path, self.inner.limits.max_response_bytes)
            .await?;
        // serde's messages can quote a value, and values here are signed URLs: say only
        // what field is wrong.
        serde_json::from_slice(&bytes).map_err(|e| QueueError::InvalidResponse {
            method: "GET".into(),
            path: format!("/api/queue/v1{path}"),
            source: <serde_json::Error as serde::de::Error>::custom(format!(
                "pollTaskUrls answer has the wrong shape (line {}, column {})",
                e.line(),
                e.column()
            )),
        })
    }

    /// Legacy `claimTask`: claims run `run_id` of `task_id`. The answer has the shape of one
    /// claimWork claim; 409 means the run is already claimed, resolved or cancelled.
    pub async fn claim_task(
        &self,
        task_id: &TaskId,
        run_id: u32,
        request: &ClaimTaskRequest,
    ) -> Result<TaskClaim, QueueError> {
        let body = to_json(request);
        let path = format!("/task/{task_id}/runs/{run_id}/claim");
        self.api(Method::POST, &path, Payload::Json(&body)).await
    }

    /// `GET` a signed Azure poll URL (no Hawk: the SAS is the credential), asking for one
    /// message; the body is read up to `max_bytes`. Not retried: the poll loop backs off.
    /// Errors show the URL without its query and never the Azure error body.
    pub async fn azure_get(&self, url: &Url, max_bytes: u64) -> Result<Vec<u8>, QueueError> {
        let mut url = url.clone();
        url.query_pairs_mut().append_pair("numofmessages", "1");
        let shown = display_url(&url);
        let resp = self
            .inner
            .http
            .get(url)
            .timeout(self.inner.retry.request_timeout)
            .send()
            .await
            .map_err(|e| transport("GET", &shown, e))?;
        if !resp.status().is_success() {
            return Err(azure_error(&resp, "GET", &shown));
        }
        self.read_limited(resp, "GET", &shown, Some(max_bytes))
            .await
    }

    /// `DELETE` a signed Azure message URL. 2xx and 404 (already gone) are success.
    pub async fn azure_delete(&self, url: &Secret) -> Result<(), QueueError> {
        let url = Url::parse(url.expose()).map_err(|_| QueueError::BadRedirect {
            method: "DELETE".into(),
            path: "<signedDeleteUrl>".into(),
            reason: "the signed delete URL is not a URL",
        })?;
        let shown = display_url(&url);
        let resp = self
            .inner
            .http
            .delete(url)
            .timeout(self.inner.retry.request_timeout)
            .send()
            .await
            .map_err(|e| transport("DELETE", &shown, e))?;
        if resp.status().is_success() || resp.status() == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(azure_error(&resp, "DELETE", &shown))
        }
    }

    /// `reclaimTask`: extends the claim; answer carries new credentials. 409 means the run is
    /// no longer ours.
    pub async fn reclaim_task(
        &self,
        task_id: &TaskId,
        run_id: u32,
    ) -> Result<ReclaimResponse, QueueError> {
        let path = format!("/task/{task_id}/runs/{run_id}/reclaim");
        self.api(Method::POST, &path, Payload::Empty).await
    }

    /// `reclaimTask`, one attempt and no retries: the reclaim loop schedules its own attempts
    /// against the claim's expiry (the general backoff could sleep past `takenUntil`).
    pub async fn reclaim_task_once(
        &self,
        task_id: &TaskId,
        run_id: u32,
    ) -> Result<ReclaimResponse, QueueError> {
        let path = format!("/task/{task_id}/runs/{run_id}/reclaim");
        let shown = format!("/api/queue/v1{path}");
        let bytes = self
            .api_once(&Method::POST, &path, &Payload::Empty, &shown, None)
            .await?;
        serde_json::from_slice(&bytes).map_err(|source| QueueError::InvalidResponse {
            method: "POST".into(),
            path: shown,
            source,
        })
    }

    /// `reportCompleted`.
    pub async fn report_completed(
        &self,
        task_id: &TaskId,
        run_id: u32,
    ) -> Result<TaskStatusResponse, QueueError> {
        let path = format!("/task/{task_id}/runs/{run_id}/completed");
        self.api(Method::POST, &path, Payload::Empty).await
    }

    /// `reportFailed`.
    pub async fn report_failed(
        &self,
        task_id: &TaskId,
        run_id: u32,
    ) -> Result<TaskStatusResponse, QueueError> {
        let path = format!("/task/{task_id}/runs/{run_id}/failed");
        self.api(Method::POST, &path, Payload::Empty).await
    }

    /// `cancelTask`: resolves the task's current run `exception`/`canceled` (tools and
    /// tests; a worker never calls it).
    pub async fn cancel_task(&self, task_id: &TaskId) -> Result<TaskStatusResponse, QueueError> {
        let path = format!("/task/{task_id}/cancel");
        self.api(Method::POST, &path, Payload::Empty).await
    }

    /// `rerunTask`: a new pending run for a resolved task (tools and tests).
    pub async fn rerun_task(&self, task_id: &TaskId) -> Result<TaskStatusResponse, QueueError> {
        let path = format!("/task/{task_id}/rerun");
        self.api(Method::POST, &path, Payload::Empty).await
    }

    /// `reportException` with `reason`.
    pub async fn report_exception(
        &self,
        task_id: &TaskId,
        run_id: u32,
        reason: ExceptionReason,
    ) -> Result<TaskStatusResponse, QueueError> {
        let body = to_json(&ExceptionRequest { reason });
        let path = format!("/task/{task_id}/runs/{run_id}/exception");
        self.api(Method::POST, &path, Payload::Json(&body)).await
    }

    /// `createArtifact`. Re-sending an identical request is safe (the queue accepts it).
    pub async fn create_artifact(
        &self,
        task_id: &TaskId,
        run_id: u32,
        name: &str,
        request: &CreateArtifactRequest,
    ) -> Result<CreateArtifactResponse, QueueError> {
        let body = to_json(request);
        let path = format!(
            "/task/{task_id}/runs/{run_id}/artifacts/{}",
            encode_component(name)
        );
        self.api(Method::POST, &path, Payload::Json(&body)).await
    }

    /// Uploads `path` to a presigned `put_url`, streaming from disk.
    ///
    /// With `gzip`, the file is first compressed (streaming) into a temporary file so the PUT
    /// carries an exact `Content-Length` and `Content-Encoding: gzip`. Each retry reopens the
    /// file. The URL's query (a credential) never appears in errors or logs.
    pub async fn upload_file(
        &self,
        put_url: &Secret,
        path: &Path,
        content_type: &str,
        gzip: bool,
    ) -> Result<UploadInfo, QueueError> {
        let url = Url::parse(put_url.expose()).map_err(|_| QueueError::BadRedirect {
            method: "PUT".into(),
            path: "<putUrl>".into(),
            reason: "the putUrl is not a URL",
        })?;
        let shown = display_url(&url);
        let source_bytes = file_len(path).await?;
        // The compressed copy lives as long as this call; it is deleted on drop.
        let compressed = if gzip {
            let src = path.to_owned();
            let t = tokio::task::spawn_blocking(move || gzip_to_temp(&src))
                .await
                .map_err(|e| io_err("gzip", path, std::io::Error::other(e)))??;
            Some(t)
        } else {
            None
        };
        let body_path: PathBuf = match &compressed {
            Some(t) => t.path().to_owned(),
            None => path.to_owned(),
        };
        let mut headers = vec![(CONTENT_TYPE, content_type.to_owned())];
        if gzip {
            headers.push((CONTENT_ENCODING, "gzip".to_owned()));
        }
        let sent_bytes = self
            .put_file(&url, &shown, &body_path, &headers, None)
            .await?;
        Ok(UploadInfo {
            source_bytes,
            sent_bytes,
        })
    }

    /// One PUT of `body_path`, whose length must be `len` (checked on the open file: a file
    /// that changed since is not sent), with `headers` (`Content-Type` among them).
    /// PUTs `body_path` to `url`, retried as a whole within the upload deadline, and counts
    /// the bytes sent. `len`: the length to declare (`None`: the file's, read per attempt).
    async fn put_file(
        &self,
        url: &Url,
        shown: &str,
        body_path: &Path,
        headers: &[(reqwest::header::HeaderName, String)],
        len: Option<u64>,
    ) -> Result<u64, QueueError> {
        let limit = self.inner.limits.upload_deadline;
        let attempts = self.retrying("PUT", shown, true, || async {
            let len = match len {
                Some(l) => l,
                None => file_len(body_path).await?,
            };
            self.put_once(url, shown, body_path, headers, len).await
        });
        let sent_bytes = tokio::time::timeout(limit, attempts).await.map_err(|_| {
            QueueError::UploadDeadline {
                url: shown.to_owned(),
                limit,
            }
        })??;
        if let Some(m) = &self.inner.metrics {
            m.uploaded(sent_bytes);
        }
        Ok(sent_bytes)
    }

    async fn put_once(
        &self,
        url: &Url,
        shown: &str,
        body_path: &Path,
        headers: &[(reqwest::header::HeaderName, String)],
        len: u64,
    ) -> Result<u64, QueueError> {
        let file = tokio::fs::File::open(body_path)
            .await
            .map_err(|e| io_err("open", body_path, e))?;
        let actual = file
            .metadata()
            .await
            .map_err(|e| io_err("stat", body_path, e))?
            .len();
        if actual != len {
            return Err(io_err(
                "upload",
                body_path,
                std::io::Error::other(format!("file is {actual} bytes, expected {len}")),
            ));
        }
        // Large reads: the default 4 KiB buffer made ~256k read calls per GiB and capped the
        // upload well below the link's speed. Memory stays flat (one buffer per upload).
        let taken = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = taken.clone();
        let stream = futures_util::TryStreamExt::inspect_ok(
            tokio_util::io::ReaderStream::with_capacity(
                tokio::io::AsyncReadExt::take(file, len),
                UPLOAD_READ_BYTES,
            ),
            move |chunk| {
                let n = u64::try_from(chunk.len()).unwrap_or(u64::MAX);
                counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
            },
        );
        let mut req = self
            .inner
            .http
            .put(url.clone())
            // An explicit length makes hyper send a length-delimited body, never chunked
            // (S3 refuses chunked uploads).
            .header(CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        for (name, value) in headers {
            req = req.header(name, value);
        }
        let resp = tokio::select! {
            r = req.send() => r.map_err(|e| transport("PUT", shown, e))?,
            slow = self.upload_pace(&taken, len, shown) => return Err(slow),
        };
        if resp.status().is_success() {
            Ok(len)
        } else {
            Err(self.http_error(resp, "PUT", shown).await)
        }
    }

    /// Completes (with the error) when, at one of the checks made every
    /// `upload_rate_window`, the store has taken less of the body than the minimum rate allows
    /// for the time since the attempt started, while some of the `len` bytes are still unsent;
    /// never when the check is off or once the whole body has been taken. The average since
    /// the start, not each window's bytes: socket buffers take a burst at first and then let
    /// the body through in bursts, so a store reading steadily at the minimum rate always keeps
    /// pace (the client has sent at least what the store read), and one that stops reading
    /// falls behind once the buffers' credit is used up.
    async fn upload_pace(
        &self,
        taken: &std::sync::atomic::AtomicU64,
        len: u64,
        shown: &str,
    ) -> QueueError {
        let limits = &self.inner.limits;
        let (rate, window) = (limits.min_upload_rate, limits.upload_rate_window);
        if rate == 0 || window.is_zero() {
            return std::future::pending().await;
        }
        let start = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(window).await;
            let now = taken.load(std::sync::atomic::Ordering::Relaxed);
            if now >= len {
                return std::future::pending().await;
            }
            let elapsed = start.elapsed();
            let ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
            if now < rate.saturating_mul(ms) / 1000 {
                return QueueError::UploadTooSlow {
                    url: shown.to_owned(),
                    bytes: now,
                    elapsed,
                    min_rate: rate,
                };
            }
        }
    }

    /// The object service of the same deployment, signing with `credentials` (the temporary
    /// ones createArtifact hands out for one object). Shares the connection pool.
    fn object_service(&self, credentials: Credentials) -> QueueClient {
        let mut inner = (*self.inner).clone();
        inner.base = format!("{}/api/object/v1", inner.root_url);
        inner.service_path = "/api/object/v1";
        QueueClient {
            inner: Arc::new(inner),
            credentials: Some(Signing::new(credentials)),
        }
    }

    /// A call whose answer carries nothing we need (`finishUpload` answers `{}`,
    /// `finishArtifact` 204 with no body): the body is read within the response cap and dropped.
    async fn api_ignoring_body(
        &self,
        method: Method,
        path: &str,
        payload: Payload<'_>,
    ) -> Result<(), QueueError> {
        let shown = format!("{}{path}", self.inner.service_path);
        let m = method.as_str().to_owned();
        self.retrying(&m, &shown, false, || async {
            self.api_once(&method, path, &payload, &shown, None)
                .await
                .map(|_| ())
        })
        .await
    }

    /// Uploads `path` as an object artifact, after createArtifact answered `object` with
    /// `object`: the object service's `createUpload` (proposing `putUrl`), the PUT, and
    /// `finishUpload` with the content's sha256 and sha512, all signed with the temporary
    /// credentials from createArtifact; then the queue's `finishArtifact`, signed with this
    /// client's credentials. Streams from disk (hashing is one more streamed read); the bytes
    /// are stored as they are (no `Content-Encoding`), so the hashes are over what a
    /// downloader gets. Each step is idempotent for the same `uploadId`, so each is retried on
    /// its own.
    pub async fn upload_object_artifact(
        &self,
        task_id: &TaskId,
        run_id: u32,
        artifact: &str,
        object: &ObjectArtifact,
        path: &Path,
        content_type: &str,
    ) -> Result<UploadInfo, QueueError> {
        let src = path.to_owned();
        let (len, hashes) = tokio::task::spawn_blocking(move || hash_file(&src))
            .await
            .map_err(|e| io_err("hash", path, std::io::Error::other(e)))??;
        let service = self.object_service(Credentials {
            client_id: object.credentials.client_id.clone(),
            access_token: object.credentials.access_token.clone(),
            certificate: Some(object.credentials.certificate.clone()),
        });
        let name = encode_component(&object.name);
        let create = to_json(&CreateUploadRequest {
            project_id: object.project_id.clone(),
            upload_id: object.upload_id.clone(),
            expires: object.expires,
            hashes: Some(hashes.clone()),
            proposed_upload_methods: ProposedUploadMethods {
                put_url: Some(PutUrlProposal {
                    content_type: content_type.to_owned(),
                    content_length: len,
                }),
                data_inline: None,
            },
        });
        let answer: CreateUploadResponse = service
            .api(
                Method::PUT,
                &format!("/upload/{name}"),
                Payload::Json(&create),
            )
            .await?;
        let method = answer
            .upload_method
            .put_url
            .ok_or_else(|| QueueError::NoUploadMethod {
                name: object.name.clone(),
            })?;
        let url = Url::parse(method.url.expose()).map_err(|_| QueueError::BadRedirect {
            method: "PUT".into(),
            path: "<putUrl>".into(),
            reason: "the putUrl is not a URL",
        })?;
        let shown = display_url(&url);
        let headers = put_headers(&method.headers, content_type, len, &shown)?;
        let sent_bytes = self
            .put_file(&url, &shown, path, &headers, Some(len))
            .await?;
        let finish = to_json(&FinishUploadRequest {
            project_id: object.project_id.clone(),
            upload_id: object.upload_id.clone(),
            hashes: Some(hashes),
        });
        service
            .api_ignoring_body(
                Method::POST,
                &format!("/finish-upload/{name}"),
                Payload::Json(&finish),
            )
            .await?;
        let done = to_json(&FinishArtifactRequest {
            upload_id: object.upload_id.clone(),
        });
        self.api_ignoring_body(
            Method::PUT,
            &format!(
                "/task/{task_id}/runs/{run_id}/artifacts/{}",
                encode_component(artifact)
            ),
            Payload::Json(&done),
        )
        .await?;
        Ok(UploadInfo {
            source_bytes: len,
            sent_bytes,
        })
    }

    // ---- read side ----

    /// `task`: the task definition as stored by the queue, as raw JSON.
    pub async fn task(&self, task_id: &TaskId) -> Result<serde_json::Value, QueueError> {
        self.api(Method::GET, &format!("/task/{task_id}"), Payload::None)
            .await
    }

    /// `task`, as the exact bytes the queue sent (at most `max_bytes`).
    pub async fn task_bytes(
        &self,
        task_id: &TaskId,
        max_bytes: u64,
    ) -> Result<Vec<u8>, QueueError> {
        self.api_raw(&format!("/task/{task_id}"), max_bytes).await
    }

    /// `status`, as the exact bytes the queue sent (`{"status": {...}}`, at most `max_bytes`).
    pub async fn status_bytes(
        &self,
        task_id: &TaskId,
        max_bytes: u64,
    ) -> Result<Vec<u8>, QueueError> {
        self.api_raw(&format!("/task/{task_id}/status"), max_bytes)
            .await
    }

    /// `createTask`: `PUT /task/<taskId>` with a definition; returns the status answer as raw
    /// JSON. (Added by the worker branch for the demo and tests.)
    pub async fn create_task(
        &self,
        task_id: &TaskId,
        definition: &serde_json::Value,
    ) -> Result<serde_json::Value, QueueError> {
        let body = to_json(definition);
        self.api(
            Method::PUT,
            &format!("/task/{task_id}"),
            Payload::Json(&body),
        )
        .await
    }

    /// `status`.
    pub async fn status(&self, task_id: &TaskId) -> Result<TaskStatus, QueueError> {
        let r: TaskStatusResponse = self
            .api(
                Method::GET,
                &format!("/task/{task_id}/status"),
                Payload::None,
            )
            .await?;
        Ok(r.status)
    }

    /// `getLatestArtifact` into `dest` (via `dest.part`, renamed when complete).
    pub async fn get_latest_artifact_to_file(
        &self,
        task_id: &TaskId,
        name: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<DownloadInfo, QueueError> {
        let path = format!("/task/{task_id}/artifacts/{}", encode_component(name));
        self.download(task_id, name, &path, dest, max_bytes).await
    }

    /// `getArtifact` of a specific run into `dest`.
    pub async fn get_artifact_to_file(
        &self,
        task_id: &TaskId,
        run_id: u32,
        name: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<DownloadInfo, QueueError> {
        let path = format!(
            "/task/{task_id}/runs/{run_id}/artifacts/{}",
            encode_component(name)
        );
        self.download(task_id, name, &path, dest, max_bytes).await
    }

    /// `listLatestArtifacts`, all pages.
    pub async fn list_latest_artifacts(
        &self,
        task_id: &TaskId,
    ) -> Result<Vec<ArtifactInfo>, QueueError> {
        self.list_all(task_id, format!("/task/{task_id}/artifacts"))
            .await
    }

    /// `listArtifacts` of one run, all pages.
    pub async fn list_artifacts(
        &self,
        task_id: &TaskId,
        run_id: u32,
    ) -> Result<Vec<ArtifactInfo>, QueueError> {
        self.list_all(task_id, format!("/task/{task_id}/runs/{run_id}/artifacts"))
            .await
    }

    async fn list_all(
        &self,
        task_id: &TaskId,
        base: String,
    ) -> Result<Vec<ArtifactInfo>, QueueError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut query = Vec::new();
            if let Some(t) = &token {
                query.push(format!("continuationToken={}", encode_component(t)));
            }
            if let Some(n) = self.inner.limits.list_page_size {
                query.push(format!("limit={n}"));
            }
            let path = if query.is_empty() {
                base.clone()
            } else {
                format!("{base}?{}", query.join("&"))
            };
            let page: ListArtifactsResponse = self.api(Method::GET, &path, Payload::None).await?;
            out.extend(page.artifacts);
            if out.len() > self.inner.limits.max_listed_artifacts {
                return Err(QueueError::TooManyArtifacts {
                    task_id: task_id.clone(),
                    limit: self.inner.limits.max_listed_artifacts,
                });
            }
            match page.continuation_token {
                Some(t) if !t.is_empty() => token = Some(t),
                _ => return Ok(out),
            }
        }
    }

    // ---- plumbing ----

    async fn api<T: DeserializeOwned>(
        &self,
        method: Method,
        path_and_query: &str,
        payload: Payload<'_>,
    ) -> Result<T, QueueError> {
        let shown = format!(
            "{}{}",
            self.inner.service_path,
            path_and_query.split('?').next().unwrap_or_default()
        );
        let m = method.as_str().to_owned();
        self.retrying(&m, &shown, false, || async {
            let bytes = self
                .api_once(&method, path_and_query, &payload, &shown, None)
                .await?;
            serde_json::from_slice(&bytes).map_err(|source| QueueError::InvalidResponse {
                method: m.clone(),
                path: shown.clone(),
                source,
            })
        })
        .await
    }

    /// A GET answered with its exact body, refused beyond `max_bytes`
    /// ([`QueueError::ResponseTooLarge`]): evidence the verifier parses itself.
    async fn api_raw(&self, path_and_query: &str, max_bytes: u64) -> Result<Vec<u8>, QueueError> {
        let shown = format!(
            "/api/queue/v1{}",
            path_and_query.split('?').next().unwrap_or_default()
        );
        self.retrying("GET", &shown, false, || {
            self.api_once(
                &Method::GET,
                path_and_query,
                &Payload::None,
                &shown,
                Some(max_bytes),
            )
        })
        .await
    }

    /// `GET` a public source a chain policy names (a `.taskcluster.yml`, a pushlog, a GitHub
    /// API answer): never signed (our credentials are for the queue only), retried like every
    /// read, at most `max_bytes`. Plain `http` only to loopback hosts.
    pub async fn get_source(&self, url: &str, max_bytes: u64) -> Result<Vec<u8>, QueueError> {
        let parsed = Url::parse(url).map_err(|_| QueueError::InvalidRootUrl {
            root_url: crate::verify::rebuild::shown_url(url),
            reason: "not a valid source URL",
        })?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d == "localhost",
            None => false,
        };
        if !(parsed.scheme() == "https" || parsed.scheme() == "http" && loopback) {
            return Err(QueueError::InvalidRootUrl {
                root_url: crate::verify::rebuild::shown_url(url),
                reason: "source URLs must be https (http only on loopback)",
            });
        }
        let shown = display_url(&parsed);
        self.retrying("GET", &shown, false, || async {
            let resp = self
                .inner
                .http
                .get(parsed.clone())
                .timeout(self.inner.retry.request_timeout)
                .send()
                .await
                .map_err(|e| transport("GET", &shown, e))?;
            if !resp.status().is_success() {
                return Err(self.http_error(resp, "GET", &shown).await);
            }
            self.read_limited(resp, "GET", &shown, Some(max_bytes))
                .await
        })
        .await
    }

    async fn api_once(
        &self,
        method: &Method,
        path_and_query: &str,
        payload: &Payload<'_>,
        shown: &str,
        max_bytes: Option<u64>,
    ) -> Result<Vec<u8>, QueueError> {
        let resp = self
            .send_signed(method, path_and_query, payload, shown)
            .await?;
        if !resp.status().is_success() {
            return Err(self.http_error(resp, method.as_str(), shown).await);
        }
        self.read_limited(resp, method.as_str(), shown, max_bytes)
            .await
    }

    async fn send_signed(
        &self,
        method: &Method,
        path_and_query: &str,
        payload: &Payload<'_>,
        shown: &str,
    ) -> Result<reqwest::Response, QueueError> {
        let url_text = format!("{}{}", self.inner.base, path_and_query);
        let url = Url::parse(&url_text).map_err(|_| QueueError::InvalidRootUrl {
            root_url: self.inner.root_url.clone(),
            reason: "cannot form a request URL",
        })?;
        let mut req = self
            .inner
            .http
            .request(method.clone(), url.clone())
            .timeout(self.inner.retry.request_timeout);
        let mut hash = None;
        match payload {
            Payload::None => {}
            // POSTs without an input schema go with an empty body and Content-Length: 0.
            Payload::Empty => req = req.header(CONTENT_LENGTH, 0).body(Vec::new()),
            Payload::Json(body) => {
                let h = auth::payload_hash("application/json", body).map_err(|source| {
                    QueueError::Signing {
                        method: method.to_string(),
                        path: shown.to_owned(),
                        source,
                    }
                })?;
                hash = Some(h);
                req = req
                    .header(CONTENT_TYPE, "application/json")
                    .body(body.to_vec());
            }
        }
        if let Some(creds) = &self.credentials {
            let header = self
                .sign(creds, method, &url[Position::BeforePath..], hash.as_deref())
                .map_err(|source| QueueError::Signing {
                    method: method.to_string(),
                    path: shown.to_owned(),
                    source,
                })?;
            req = req.header(AUTHORIZATION, header);
        }
        req.send()
            .await
            .map_err(|e| transport(method.as_str(), shown, e))
    }

    fn sign(
        &self,
        creds: &Signing,
        method: &Method,
        resource: &str,
        hash: Option<&[u8]>,
    ) -> Result<String, auth::AuthError> {
        let signer = creds.signer.as_ref().map_err(Clone::clone)?;
        let req = HawkRequest {
            method: method.as_str(),
            host: &self.inner.host,
            port: self.inner.port,
            resource,
        };
        signer.header(&req, hash, crate::clock::now(), &auth::random_nonce())
    }

    async fn read_limited(
        &self,
        mut resp: reqwest::Response,
        method: &str,
        shown: &str,
        max_bytes: Option<u64>,
    ) -> Result<Vec<u8>, QueueError> {
        let limit = max_bytes.unwrap_or(self.inner.limits.max_response_bytes);
        let mut buf = Vec::new();
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| transport(method, shown, e))?
        {
            if (buf.len() + chunk.len()) as u64 > limit {
                return Err(QueueError::ResponseTooLarge {
                    method: method.to_owned(),
                    path: shown.to_owned(),
                    limit,
                });
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    }

    /// Turns a non-success answer into [`QueueError::Http`], reading at most 64 KiB of body.
    async fn http_error(
        &self,
        mut resp: reqwest::Response,
        method: &str,
        shown: &str,
    ) -> QueueError {
        let status = resp.status().as_u16();
        let mut buf = Vec::new();
        while let Ok(Some(chunk)) = resp.chunk().await {
            buf.extend_from_slice(&chunk);
            if buf.len() > 64 * 1024 {
                break;
            }
        }
        let (code, message) = match serde_json::from_slice::<crate::queue::types::ErrorBody>(&buf) {
            Ok(b) => (b.code, b.message),
            Err(_) => (
                format!("HTTP{status}"),
                String::from_utf8_lossy(&buf[..buf.len().min(512)]).into_owned(),
            ),
        };
        QueueError::Http {
            method: method.to_owned(),
            path: shown.to_owned(),
            status,
            code,
            message: truncate(message, 1024),
        }
    }

    async fn retrying<T, F, Fut>(
        &self,
        method: &str,
        shown: &str,
        retry_400: bool,
        mut op: F,
    ) -> Result<T, QueueError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, QueueError>>,
    {
        let mut delays = self.inner.retry.backoff();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            let transient = err.is_transient() || (retry_400 && err.status() == Some(400));
            let delay = if transient { delays.next() } else { None };
            match delay {
                Some(d) => {
                    if let Some(m) = &self.inner.metrics {
                        m.retry(endpoint_name(method, shown));
                    }
                    tracing::warn!(
                        method,
                        path = shown,
                        attempt,
                        delay_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
                        reason = %err,
                        "queue request failed; retrying"
                    );
                    tokio::time::sleep(d).await;
                }
                None => return Err(err.set_attempts(attempt)),
            }
        }
    }

    async fn download(
        &self,
        task_id: &TaskId,
        name: &str,
        path: &str,
        dest: &Path,
        max_bytes: u64,
    ) -> Result<DownloadInfo, QueueError> {
        let shown = format!("/api/queue/v1{path}");
        let limits = &self.inner.limits;
        let pace = Pace {
            // A deadline beyond tokio's clock range means no deadline (about 30 years).
            deadline: Instant::now()
                .checked_add(limits.download_deadline)
                .unwrap_or_else(far_future),
            min_rate: limits.min_download_rate,
            window: limits.download_rate_window,
        };
        let late = || QueueError::DownloadDeadline {
            task_id: task_id.clone(),
            name: name.to_owned(),
            limit: limits.download_deadline,
        };
        // Every network wait below stops at the deadline by itself (so `dest.part` is cleaned
        // up); this outer bound also covers error bodies and retry delays.
        let attempts = self.retrying("GET", &shown, false, || {
            self.download_once(task_id, name, path, &shown, dest, max_bytes, pace)
        });
        match tokio::time::timeout_at(pace.deadline, attempts).await {
            Ok(r) => {
                if let (Ok(info), Some(m)) = (&r, &self.inner.metrics) {
                    m.downloaded(info.bytes);
                }
                r
            }
            Err(_) => {
                let _ = tokio::fs::remove_file(part_path(dest)).await;
                Err(late())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn download_once(
        &self,
        task_id: &TaskId,
        name: &str,
        path: &str,
        shown: &str,
        dest: &Path,
        max_bytes: u64,
        pace: Pace,
    ) -> Result<DownloadInfo, QueueError> {
        let late = || QueueError::DownloadDeadline {
            task_id: task_id.clone(),
            name: name.to_owned(),
            limit: self.inner.limits.download_deadline,
        };
        let resp = tokio::time::timeout_at(
            pace.deadline,
            self.send_signed(&Method::GET, path, &Payload::None, shown),
        )
        .await
        .map_err(|_| late())??;
        let storage_type = header_str(&resp, "x-taskcluster-artifact-storage-type");
        let mut resp = resp;
        let mut shown_now = shown.to_owned();
        let mut redirects = 0;
        while resp.status().is_redirection() {
            redirects += 1;
            let bad = |reason| QueueError::BadRedirect {
                method: "GET".into(),
                path: shown.to_owned(),
                reason,
            };
            if redirects > self.inner.limits.max_redirects {
                return Err(bad("too many redirects"));
            }
            let location = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| bad("no Location header"))?;
            let target = resp
                .url()
                .join(location)
                .map_err(|_| bad("Location is not a URL"))?;
            if target.scheme() != "https" && target.scheme() != "http" {
                return Err(bad("Location scheme is not http(s)"));
            }
            shown_now = display_url(&target);
            // No Hawk header here: the target may be another host (S3, a CDN); a signed URL
            // carries its own authorization.
            resp = tokio::time::timeout_at(pace.deadline, self.inner.http.get(target).send())
                .await
                .map_err(|_| late())?
                .map_err(|e| transport("GET", &shown_now, e))?;
        }
        let status = resp.status();
        if status == StatusCode::FAILED_DEPENDENCY {
            let body = self.read_limited(resp, "GET", &shown_now, None).await?;
            #[derive(serde::Deserialize)]
            struct ErrorArtifact {
                reason: String,
                message: String,
            }
            let e: ErrorArtifact =
                serde_json::from_slice(&body).map_err(|source| QueueError::InvalidResponse {
                    method: "GET".into(),
                    path: shown_now.clone(),
                    source,
                })?;
            return Err(QueueError::ErrorArtifact {
                task_id: task_id.clone(),
                name: name.to_owned(),
                reason: truncate(e.reason, 256),
                message: truncate(e.message, 4096),
            });
        }
        if !status.is_success() {
            return Err(self.http_error(resp, "GET", &shown_now).await);
        }
        if let Some(len) = resp.content_length() {
            let encoding = header_str(&resp, "content-encoding");
            if encoding.is_none() && len > max_bytes {
                return Err(QueueError::TooLarge {
                    task_id: task_id.clone(),
                    name: name.to_owned(),
                    max_bytes,
                });
            }
        }
        let content_type = header_str(&resp, "content-type");
        let content_encoding = header_str(&resp, "content-encoding");
        let gzip = match content_encoding.as_deref() {
            None | Some("identity") => false,
            Some(e) if e.eq_ignore_ascii_case("gzip") => true,
            Some(_) => {
                return Err(QueueError::BadRedirect {
                    method: "GET".into(),
                    path: shown_now,
                    reason: "unsupported Content-Encoding",
                });
            }
        };
        let bytes = stream_to_file(resp, dest, gzip, max_bytes, &shown_now, pace)
            .await
            .map_err(|f| match f {
                StreamFail::Deadline => late(),
                StreamFail::TooSlow { bytes } => QueueError::TooSlow {
                    task_id: task_id.clone(),
                    name: name.to_owned(),
                    bytes,
                    window: pace.window,
                    min_rate: pace.min_rate,
                },
                StreamFail::TooLarge => QueueError::TooLarge {
                    task_id: task_id.clone(),
                    name: name.to_owned(),
                    max_bytes,
                },
                StreamFail::Gzip(source) => QueueError::BadGzip {
                    task_id: task_id.clone(),
                    name: name.to_owned(),
                    source,
                },
                StreamFail::Queue(e) => e,
            })?;
        Ok(DownloadInfo {
            bytes,
            content_type,
            content_encoding,
            storage_type,
        })
    }
}

/// The Taskcluster API method a request went to, from its method and the path shown in errors
/// (`/api/queue/v1/...`, or the store's URL for an upload's PUT). A bounded set of names
/// written here, never a path: the `endpoint` label of the retry counter.
fn endpoint_name(method: &str, shown: &str) -> &'static str {
    if let Some(path) = shown.strip_prefix("/api/object/v1/") {
        return match (method, path.split('/').next()) {
            ("PUT", Some("upload")) => "createUpload",
            ("POST", Some("finish-upload")) => "finishUpload",
            _ => "other",
        };
    }
    let Some(path) = shown.strip_prefix("/api/queue/v1/") else {
        return if method == "PUT" {
            "artifactUpload"
        } else {
            "artifactDownload"
        };
    };
    let segs: Vec<&str> = path.split('/').collect();
    match (method, segs.as_slice()) {
        ("POST", ["claim-work", ..]) => "claimWork",
        ("GET", ["task", _]) => "task",
        ("PUT", ["task", _]) => "createTask",
        ("GET", ["task", _, "status"]) => "status",
        ("GET", ["task", _, "artifacts"]) => "listLatestArtifacts",
        ("GET", ["task", _, "artifacts", ..]) => "getLatestArtifact",
        ("POST", ["task", _, "runs", _, "reclaim"]) => "reclaimTask",
        ("POST", ["task", _, "runs", _, "completed"]) => "reportCompleted",
        ("POST", ["task", _, "runs", _, "failed"]) => "reportFailed",
        ("POST", ["task", _, "runs", _, "exception"]) => "reportException",
        ("GET", ["task", _, "runs", _, "artifacts"]) => "listArtifacts",
        ("GET", ["task", _, "runs", _, "artifacts", ..]) => "getArtifact",
        ("POST", ["task", _, "runs", _, "artifacts", ..]) => "createArtifact",
        ("PUT", ["task", _, "runs", _, "artifacts", ..]) => "finishArtifact",
        _ => "other",
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    // Request bodies are plain structs of strings and numbers; serializing them cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn header_str(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// `scheme://host[:port]/path` without query or fragment (presigned queries are credentials).
fn display_url(url: &Url) -> String {
    url[..Position::AfterPath].to_owned()
}

/// An Azure Storage refusal: status and `x-ms-error-code` only. The body is not read: an
/// authentication error describes the signed request.
fn azure_error(resp: &reqwest::Response, method: &str, shown: &str) -> QueueError {
    let status = resp.status().as_u16();
    QueueError::Http {
        method: method.to_owned(),
        path: shown.to_owned(),
        status,
        code: header_str(resp, "x-ms-error-code")
            .map(|c| c.chars().take(64).collect())
            .unwrap_or_else(|| format!("HTTP{status}")),
        message: String::new(),
    }
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

fn transport(method: &str, shown: &str, e: reqwest::Error) -> QueueError {
    QueueError::Transport {
        method: method.to_owned(),
        path: shown.to_owned(),
        attempts: 1,
        source: e.without_url(),
    }
}

fn io_err(op: &'static str, path: &Path, source: std::io::Error) -> QueueError {
    QueueError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

async fn file_len(path: &Path) -> Result<u64, QueueError> {
    Ok(tokio::fs::metadata(path)
        .await
        .map_err(|e| io_err("stat", path, e))?
        .len())
}

/// The length, sha256 and sha512 (lowercase hex) of a file, in one streamed read.
fn hash_file(path: &Path) -> Result<(u64, ObjectHashes), QueueError> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut file = std::fs::File::open(path).map_err(|e| io_err("open", path, e))?;
    let (mut s256, mut s512) = (sha2::Sha256::new(), sha2::Sha512::new());
    let mut buf = vec![0u8; UPLOAD_READ_BYTES];
    let mut len: u64 = 0;
    loop {
        let n = file.read(&mut buf).map_err(|e| io_err("read", path, e))?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        s256.update(chunk);
        s512.update(chunk);
        len = len.saturating_add(u64::try_from(n).unwrap_or(u64::MAX));
    }
    let mut hashes = ObjectHashes::new();
    hashes.insert("sha256".into(), hex::encode(s256.finalize()));
    hashes.insert("sha512".into(), hex::encode(s512.finalize()));
    Ok((len, hashes))
}

/// The headers of a `putUrl` upload: the server's, verbatim, except `Content-Length`, which we
/// send ourselves and which must then agree with the file (a server that asks for another
/// length is refused, not obeyed). Without a server `Content-Type`, ours.
fn put_headers(
    given: &std::collections::BTreeMap<String, String>,
    content_type: &str,
    len: u64,
    shown: &str,
) -> Result<Vec<(reqwest::header::HeaderName, String)>, QueueError> {
    let bad = |reason| QueueError::BadRedirect {
        method: "PUT".into(),
        path: shown.to_owned(),
        reason,
    };
    let mut out = Vec::new();
    for (name, value) in given {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad("the putUrl method names an invalid header"))?;
        if reqwest::header::HeaderValue::from_str(value).is_err() {
            return Err(bad("the putUrl method gives an invalid header value"));
        }
        // Framing, routing and encoding are ours to decide: we send the file's exact bytes,
        // length-delimited, to the URL's own host.
        if [
            reqwest::header::HOST,
            reqwest::header::TRANSFER_ENCODING,
            reqwest::header::CONNECTION,
            CONTENT_ENCODING,
        ]
        .contains(&name)
        {
            return Err(bad(
                "the putUrl method asks for a framing or encoding header",
            ));
        }
        if name == CONTENT_LENGTH {
            if value.trim() != len.to_string() {
                return Err(bad("the putUrl method asks for another Content-Length"));
            }
            continue;
        }
        out.push((name, value.clone()));
    }
    if !out.iter().any(|(n, _)| *n == CONTENT_TYPE) {
        out.push((CONTENT_TYPE, content_type.to_owned()));
    }
    Ok(out)
}

fn gzip_to_temp(src: &Path) -> Result<tempfile::NamedTempFile, QueueError> {
    let mut input = std::fs::File::open(src).map_err(|e| io_err("open", src, e))?;
    let tmp = tempfile::NamedTempFile::new().map_err(|e| io_err("create temp for", src, e))?;
    let out = tmp.reopen().map_err(|e| io_err("open temp for", src, e))?;
    // Level 1: measured (scripts/bench upload) at ~250 MB/s against ~44 MB/s for the default
    // level, for 5.4x instead of 5.7x on log-like text. Compression, not the network, was the
    // bottleneck of uploading large logs.
    let mut enc =
        flate2::write::GzEncoder::new(std::io::BufWriter::new(out), flate2::Compression::fast());
    std::io::copy(&mut input, &mut enc).map_err(|e| io_err("gzip", src, e))?;
    let mut w = enc.finish().map_err(|e| io_err("gzip", src, e))?;
    w.flush().map_err(|e| io_err("gzip", src, e))?;
    Ok(tmp)
}

/// When a download must be done by, and how slow its body may be.
#[derive(Debug, Clone, Copy)]
struct Pace {
    deadline: Instant,
    /// Bytes per second; 0: no minimum.
    min_rate: u64,
    window: Duration,
}

impl Pace {
    /// Bytes a window must deliver.
    fn window_minimum(&self) -> u64 {
        let ms = u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX);
        self.min_rate.saturating_mul(ms) / 1000
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(30 * 365 * 86_400)
}

enum StreamFail {
    TooLarge,
    Deadline,
    TooSlow { bytes: u64 },
    Gzip(std::io::Error),
    Queue(QueueError),
}

/// A writer that refuses to grow past `max` bytes and remembers why it failed.
struct CappedFile {
    file: std::io::BufWriter<std::fs::File>,
    written: u64,
    max: u64,
    too_large: bool,
    io_failed: bool,
}

impl std::io::Write for CappedFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.written + buf.len() as u64 > self.max {
            self.too_large = true;
            return Err(std::io::Error::other("size limit exceeded"));
        }
        let n = self
            .file
            .write(buf)
            .inspect_err(|_| self.io_failed = true)?;
        self.written += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush().inspect_err(|_| self.io_failed = true)
    }
}

fn part_path(dest: &Path) -> PathBuf {
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".part");
    dest.with_file_name(name)
}

/// Streams the body into `dest.part` on a blocking thread (decoding gzip on the way), then
/// renames it to `dest`. Memory stays bounded by the channel depth.
async fn stream_to_file(
    mut resp: reqwest::Response,
    dest: &Path,
    gzip: bool,
    max_bytes: u64,
    shown: &str,
    pace: Pace,
) -> Result<u64, StreamFail> {
    let part = part_path(dest);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(8);
    let part_w = part.clone();
    let writer = tokio::task::spawn_blocking(move || -> Result<u64, StreamFail> {
        let file = std::fs::File::create(&part_w)
            .map_err(|e| StreamFail::Queue(io_err("create", &part_w, e)))?;
        let capped = CappedFile {
            file: std::io::BufWriter::new(file),
            written: 0,
            max: max_bytes,
            too_large: false,
            io_failed: false,
        };
        let classify = |c: &CappedFile, e: std::io::Error, decoding: bool| {
            if c.too_large {
                StreamFail::TooLarge
            } else if c.io_failed || !decoding {
                StreamFail::Queue(io_err("write", &part_w, e))
            } else {
                StreamFail::Gzip(e)
            }
        };
        let mut capped = if gzip {
            let mut dec = flate2::write::MultiGzDecoder::new(capped);
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = dec.write_all(&chunk) {
                    return Err(classify(dec.get_ref(), e, true));
                }
            }
            if let Err(e) = dec.try_finish() {
                return Err(classify(dec.get_ref(), e, true));
            }
            match dec.finish() {
                Ok(c) => c,
                Err(e) => return Err(StreamFail::Gzip(e)),
            }
        } else {
            let mut c = capped;
            while let Some(chunk) = rx.blocking_recv() {
                if let Err(e) = c.write_all(&chunk) {
                    return Err(classify(&c, e, false));
                }
            }
            c
        };
        capped
            .flush()
            .map_err(|e| StreamFail::Queue(io_err("write", &part_w, e)))?;
        let written = capped.written;
        let file = capped
            .file
            .into_inner()
            .map_err(|e| StreamFail::Queue(io_err("write", &part_w, e.into_error())))?;
        // No fsync: downloads are evidence the verifier re-hashes and the worker deletes with
        // the run; a crash discards them all.
        drop(file);
        Ok(written)
    });
    let mut transport_err = None;
    let mut pace_err = None;
    let window_min = pace.window_minimum();
    let mut window_end = Instant::now()
        .checked_add(pace.window)
        .unwrap_or_else(far_future);
    let mut window_bytes = 0u64;
    loop {
        // Wake at the end of the rate window even if nothing arrives (a stalled trickle).
        let wake = if window_min > 0 {
            window_end.min(pace.deadline)
        } else {
            pace.deadline
        };
        match tokio::time::timeout_at(wake, resp.chunk()).await {
            Ok(Ok(Some(chunk))) => {
                window_bytes = window_bytes.saturating_add(chunk.len() as u64);
                if tx.send(chunk).await.is_err() {
                    break; // the writer stopped; its error is reported below
                }
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                transport_err = Some(e);
                break;
            }
            Err(_) => {} // a timer: judged below
        }
        let now = Instant::now();
        if now >= pace.deadline {
            pace_err = Some(StreamFail::Deadline);
            break;
        }
        if window_min > 0 && now >= window_end {
            if window_bytes < window_min {
                pace_err = Some(StreamFail::TooSlow {
                    bytes: window_bytes,
                });
                break;
            }
            window_bytes = 0;
            window_end = now.checked_add(pace.window).unwrap_or_else(far_future);
        }
    }
    drop(tx);
    let written = writer
        .await
        .map_err(|e| StreamFail::Queue(io_err("write", &part, std::io::Error::other(e))));
    let result = match (pace_err, transport_err, written) {
        (Some(f), _, _) => Err(f),
        (None, Some(e), _) => Err(StreamFail::Queue(transport("GET", shown, e))),
        (None, None, Err(f)) | (None, None, Ok(Err(f))) => Err(f),
        (None, None, Ok(Ok(n))) => match tokio::fs::rename(&part, dest).await {
            Ok(()) => return Ok(n),
            Err(e) => Err(StreamFail::Queue(io_err("rename", &part, e))),
        },
    };
    // Never leave a partial file behind under the final name or the .part name.
    let _ = tokio::fs::remove_file(&part).await;
    result
}

#[cfg(test)]
mod tests {
    #[test]
    fn endpoints_are_api_method_names_never_paths() {
        use super::endpoint_name;
        let t = "/api/queue/v1/task/fN1SbArXTPSVFNUvaOlinQ";
        for (method, shown, want) in [
            (
                "POST",
                "/api/queue/v1/claim-work/prov%2Fwt".to_owned(),
                "claimWork",
            ),
            ("GET", t.to_owned(), "task"),
            ("PUT", t.to_owned(), "createTask"),
            ("GET", format!("{t}/status"), "status"),
            ("GET", format!("{t}/artifacts"), "listLatestArtifacts"),
            (
                "GET",
                format!("{t}/artifacts/public%2Fx"),
                "getLatestArtifact",
            ),
            ("POST", format!("{t}/runs/0/reclaim"), "reclaimTask"),
            ("POST", format!("{t}/runs/0/completed"), "reportCompleted"),
            ("POST", format!("{t}/runs/0/failed"), "reportFailed"),
            ("POST", format!("{t}/runs/0/exception"), "reportException"),
            ("GET", format!("{t}/runs/0/artifacts"), "listArtifacts"),
            (
                "GET",
                format!("{t}/runs/0/artifacts/public/a/b"),
                "getArtifact",
            ),
            (
                "POST",
                format!("{t}/runs/0/artifacts/public%2Fa"),
                "createArtifact",
            ),
            ("DELETE", format!("{t}/runs/0"), "other"),
            (
                "PUT",
                "https://s3.example/bucket/key".to_owned(),
                "artifactUpload",
            ),
            (
                "GET",
                "https://s3.example/bucket/key".to_owned(),
                "artifactDownload",
            ),
        ] {
            assert_eq!(endpoint_name(method, &shown), want, "{method} {shown}");
        }
    }

    use super::*;

    #[test]
    fn encodes_like_encode_uri_component() {
        assert_eq!(
            encode_component("public/logs/live.log"),
            "public%2Flogs%2Flive.log"
        );
        assert_eq!(encode_component("proj-releng/w_t"), "proj-releng%2Fw_t");
        assert_eq!(encode_component("a b?c#d"), "a%20b%3Fc%23d");
    }

    #[test]
    fn root_url_validation() {
        for bad in ["ftp://x", "not a url", "https://x/?q=1", "https://u:p@x"] {
            assert!(matches!(
                QueueClient::new(bad, None, RetryPolicy::fast_for_tests()),
                Err(QueueError::InvalidRootUrl { .. })
            ));
        }
        let c = QueueClient::new("https://TC.example.com/", None, RetryPolicy::standard()).unwrap();
        assert_eq!(c.root_url(), "https://TC.example.com");
        assert_eq!(c.inner.host, "tc.example.com");
        assert_eq!(c.inner.port, 443);
    }

    #[test]
    fn put_headers_are_the_servers_except_framing_and_a_wrong_length() {
        let h = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        let ok = put_headers(
            &h(&[
                ("Content-Type", "text/plain"),
                ("Content-Length", "5"),
                ("x-amz-acl", "private"),
            ]),
            "application/octet-stream",
            5,
            "u",
        )
        .unwrap();
        let names: Vec<&str> = ok.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-amz-acl"]);
        assert_eq!(ok[0].1, "text/plain");
        let default = put_headers(&h(&[]), "application/octet-stream", 5, "u").unwrap();
        assert_eq!(
            default,
            [(CONTENT_TYPE, "application/octet-stream".to_owned())]
        );
        for bad in [
            ("Content-Length", "6"),
            ("Transfer-Encoding", "chunked"),
            ("Host", "elsewhere.example"),
            ("Content-Encoding", "gzip"),
            ("bad header", "x"),
            ("x-ok", "line\nbreak"),
        ] {
            assert!(put_headers(&h(&[bad]), "t", 5, "u").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn display_url_drops_the_query() {
        let u = Url::parse("https://s3.example.com/bucket/key?X-Amz-Signature=secret").unwrap();
        assert_eq!(display_url(&u), "https://s3.example.com/bucket/key");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = QueueClient::new(
            "https://tc.example.com",
            Some(Credentials::permanent("c", Secret::new("tok-secret"))),
            RetryPolicy::standard(),
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("tok-secret"));
    }
}
