//! `chainlock dev-queue`: a small Taskcluster-queue-compatible server for development, the
//! quickstart and tests.
//!
//! **This is NOT a production queue.** It exists so chainlock (and the official Taskcluster
//! clients) can be exercised end to end without a Taskcluster deployment: it speaks the real
//! paths, JSON shapes, status codes and Hawk authentication (including temporary task
//! credentials), and keeps its state in a directory so it survives restarts. It has no
//! scalability, no high availability and no index, and its artifact store (object-service
//! objects included) is a local directory reached through tokenised URLs. It must never be exposed
//! beyond a development machine.
//!
//! Layout: [`state`] holds the pure task state machine, `auth` verifies Hawk and scopes, `api`
//! maps HTTP to both (`api::object`: the object service's upload and download routes), `store` persists records (one JSON file per task, written atomically) and
//! artifact blobs (streamed to and from disk).

mod api;
pub mod auth;
pub mod azure;
pub mod state;
mod store;

pub use auth::Client;

use crate::queue::credentials::EnvSource;
use crate::secret::Secret;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `chainlock dev-queue`.
#[derive(Debug, clap::Args)]
pub struct DevQueueArgs {
    /// Address to listen on (loopback only is recommended).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: std::net::SocketAddr,
    /// Directory that keeps the queue's state and artifacts across restarts.
    #[arg(long)]
    pub data_dir: std::path::PathBuf,
    /// TOML file listing clients (clientId, accessToken, scopes). Without it, the single client
    /// in TASKCLUSTER_CLIENT_ID / TASKCLUSTER_ACCESS_TOKEN is accepted.
    #[arg(long)]
    pub clients: Option<std::path::PathBuf>,
    /// Claim duration in seconds (takenUntil = now + this).
    #[arg(long, default_value_t = 1200)]
    pub claim_timeout: u64,
    /// Seconds claimWork waits for a task before answering with no tasks.
    #[arg(long, default_value_t = 20)]
    pub claim_work_timeout: u64,
    /// Milliseconds added before every answer, to try a worker at internet-like latency.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Legacy Azure-queue protocol (for workers with `[queue] protocol = "azure-poll"`): a
    /// path-style Azure Storage queue endpoint of the public development account, e.g.
    /// Azurite's `http://127.0.0.1:10001/devstoreaccount1`. Each pending run gets a message
    /// there, and pollTaskUrls hands out SAS URLs for it.
    #[arg(long, value_name = "URL")]
    pub azure_queue_endpoint: Option<String>,
}

/// Configuration of a dev queue.
#[derive(Debug, Clone)]
pub struct DevQueueConfig {
    /// Address to listen on; port 0 picks a free port (see [`DevQueueHandle::root_url`]).
    pub listen: SocketAddr,
    /// Directory holding tasks, artifacts and the task-credentials issuer token.
    pub data_dir: PathBuf,
    /// Permanent clients accepted.
    pub clients: Vec<Client>,
    /// Claim duration (`takenUntil - now`). Default 1200 s, as the real queue.
    pub claim_timeout: Duration,
    /// How long `claimWork` waits for a task before answering `{"tasks": []}`. Default 20 s.
    pub claim_work_timeout: Duration,
    /// Added before every answer, artifact bodies included: a loopback dev queue that behaves
    /// like a queue across the internet, for benchmarks and round-trip tests. Default none.
    pub injected_latency: Duration,
    /// Keep a log of every request (method, path without query, start and end), read with
    /// [`DevQueueHandle::requests`]. Default off (it grows with every request).
    pub record_requests: bool,
    /// Legacy Azure-queue side ([`azure`]): a path-style Azure Storage queue endpoint of the
    /// development account (`http://127.0.0.1:10001/devstoreaccount1`, Azurite). `None` (the
    /// default): no messages are put and `pollTaskUrls` is refused.
    pub azure_queue_endpoint: Option<String>,
    /// How long the SAS URLs of `pollTaskUrls` are valid. Default 30 min, as the real queue.
    pub poll_url_validity: Duration,
    /// Fields added to every Azure message besides `taskId`, `runId` and `hintId` (a newer
    /// queue's additions, for tests of workers that must tolerate them). Default none.
    pub azure_message_extra: serde_json::Map<String, serde_json::Value>,
    /// A read-only stand-in for the source hosts a chain policy's rebuild rules name (GitHub
    /// raw content, its API, hg `raw-file`): `GET /sources/<path>` answers the file
    /// `<sources_dir>/<path>`. Default none (404). Development and tests only.
    pub sources_dir: Option<PathBuf>,
    /// Fault injection, for tests only: every presigned PUT of an artifact with this name is
    /// refused (403, as S3 refuses a URL it does not accept). Default none.
    pub refuse_uploads_of: Option<String>,
}

/// One request the dev queue answered (see [`DevQueueConfig::record_requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method.
    pub method: String,
    /// Path, without the query (which may hold a signed URL's credential).
    pub path: String,
    /// When it arrived, since the queue started.
    pub started: Duration,
    /// When its answer (status and headers) was ready, since the queue started.
    pub finished: Duration,
}

/// The longest chain of requests in `log` each of which started only after the previous one
/// had been answered: the sequential round trips a client paid, whatever ran in parallel.
pub fn sequential_round_trips(log: &[RequestRecord]) -> usize {
    let mut by_end: Vec<&RequestRecord> = log.iter().collect();
    by_end.sort_by_key(|r| r.finished);
    // depth[i]: the longest such chain ending with by_end[i].
    let mut depth: Vec<usize> = Vec::with_capacity(by_end.len());
    for (i, r) in by_end.iter().enumerate() {
        let before = by_end
            .iter()
            .take(i)
            .zip(&depth)
            .filter(|(p, _)| p.finished <= r.started)
            .map(|(_, d)| *d)
            .max()
            .unwrap_or(0);
        depth.push(before.saturating_add(1));
    }
    depth.into_iter().max().unwrap_or(0)
}

#[derive(Debug)]
struct RequestLog {
    origin: std::time::Instant,
    latency: Duration,
    record: bool,
    records: std::sync::Mutex<Vec<RequestRecord>>,
}

impl RequestLog {
    async fn around(
        self: std::sync::Arc<Self>,
        req: axum::extract::Request,
        next: axum::middleware::Next,
    ) -> axum::response::Response {
        let started = self.origin.elapsed();
        let (method, path) = (req.method().to_string(), req.uri().path().to_owned());
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let resp = next.run(req).await;
        if self.record {
            let finished = self.origin.elapsed();
            if let Ok(mut records) = self.records.lock() {
                records.push(RequestRecord {
                    method,
                    path,
                    started,
                    finished,
                });
            }
        }
        resp
    }
}

impl DevQueueConfig {
    /// A config with the real queue's default timeouts.
    pub fn new(listen: SocketAddr, data_dir: PathBuf, clients: Vec<Client>) -> Self {
        DevQueueConfig {
            listen,
            data_dir,
            clients,
            claim_timeout: Duration::from_secs(1200),
            claim_work_timeout: Duration::from_secs(20),
            injected_latency: Duration::ZERO,
            record_requests: false,
            azure_queue_endpoint: None,
            poll_url_validity: Duration::from_secs(30 * 60),
            azure_message_extra: serde_json::Map::new(),
            sources_dir: None,
            refuse_uploads_of: None,
        }
    }
}

/// Why the dev queue could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevQueueError {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A file in the data directory could not be read or written.
    #[error("{op} {path}: {source}")]
    Io {
        /// Operation.
        op: &'static str,
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored task file is not valid.
    #[error("corrupt state file {path}: {source}")]
    CorruptState {
        /// File.
        path: PathBuf,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// The clients file is not valid TOML of the expected shape.
    #[error("clients file {path}: {message}")]
    ClientsFile {
        /// File.
        path: PathBuf,
        /// Parser message (never contains the tokens: it names positions, not values).
        message: String,
    },
    /// The Azure queue endpoint is unusable.
    #[error(transparent)]
    Azure(#[from] azure::AzureEndpointError),
    /// No clients configured.
    #[error(
        "no clients: give --clients FILE or set TASKCLUSTER_CLIENT_ID and TASKCLUSTER_ACCESS_TOKEN"
    )]
    NoClients,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientsFile {
    clients: Vec<Client>,
}

/// Reads `[[clients]] clientId / accessToken / scopes` from a TOML file.
pub fn load_clients_file(path: &Path) -> Result<Vec<Client>, DevQueueError> {
    let text = std::fs::read_to_string(path).map_err(|source| DevQueueError::Io {
        op: "read",
        path: path.to_owned(),
        source,
    })?;
    let file: ClientsFile =
        crate::toml_text::from_str(&text).map_err(|e| DevQueueError::ClientsFile {
            path: path.to_owned(),
            // Position and message only: the offending line could hold a token.
            message: e.to_string(),
        })?;
    if file.clients.is_empty() {
        return Err(DevQueueError::NoClients);
    }
    Ok(file.clients)
}

/// The single client from `TASKCLUSTER_CLIENT_ID` / `TASKCLUSTER_ACCESS_TOKEN`, scopes `["*"]`.
pub fn client_from_env(env: &impl EnvSource) -> Result<Client, DevQueueError> {
    let id = env.var("TASKCLUSTER_CLIENT_ID").filter(|v| !v.is_empty());
    let token = env
        .var("TASKCLUSTER_ACCESS_TOKEN")
        .filter(|v| !v.is_empty());
    match (id, token) {
        (Some(client_id), Some(token)) => Ok(Client {
            client_id,
            access_token: Secret::new(token),
            scopes: vec!["*".into()],
        }),
        _ => Err(DevQueueError::NoClients),
    }
}

/// A running dev queue.
#[derive(Debug)]
pub struct DevQueueHandle {
    root_url: String,
    addr: SocketAddr,
    log: std::sync::Arc<RequestLog>,
    cancel: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl DevQueueHandle {
    /// `http://<addr>`: the Taskcluster root URL of this queue.
    pub fn root_url(&self) -> &str {
        &self.root_url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The requests answered so far (empty unless [`DevQueueConfig::record_requests`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.log
            .records
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        if let Ok(mut r) = self.log.records.lock() {
            r.clear();
        }
    }

    /// Stops accepting requests, ends pending long polls and waits for the server to finish.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.server.await;
    }

    /// Waits until the server stops (it only stops through [`DevQueueHandle::shutdown`] or a
    /// fatal accept error).
    pub async fn wait(&mut self) {
        let _ = (&mut self.server).await;
    }
}

/// Starts a dev queue in the current tokio runtime.
pub async fn start(cfg: DevQueueConfig) -> Result<DevQueueHandle, DevQueueError> {
    if cfg.clients.is_empty() {
        return Err(DevQueueError::NoClients);
    }
    let azure = cfg
        .azure_queue_endpoint
        .as_deref()
        .map(azure::AzureEndpoint::parse)
        .transpose()?;
    let store = store::Store::open(&cfg.data_dir).await?;
    let issuer_token = store.issuer_token().await?;
    let tasks = store.load_tasks().await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| DevQueueError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let addr = listener
        .local_addr()
        .map_err(|source| DevQueueError::Bind {
            addr: cfg.listen,
            source,
        })?;
    let root_url = format!("http://{addr}");
    tracing::warn!(
        root_url,
        data_dir = %cfg.data_dir.display(),
        "chainlock dev-queue: a development server, NOT a production Taskcluster queue"
    );
    let cancel = tokio_util::sync::CancellationToken::new();
    let log = std::sync::Arc::new(RequestLog {
        origin: std::time::Instant::now(),
        latency: cfg.injected_latency,
        record: cfg.record_requests,
        records: std::sync::Mutex::new(Vec::new()),
    });
    if let Some(a) = &azure {
        tracing::warn!(
            endpoint = a.queue_url(""),
            "dev-queue: legacy Azure-queue side on, with the public development account"
        );
    }
    let extra = cfg.azure_message_extra.clone();
    let app = api::App::new(
        cfg,
        root_url.clone(),
        store,
        issuer_token,
        tasks,
        cancel.clone(),
        azure.clone(),
    );
    let layer_log = log.clone();
    let router = api::router(app.clone()).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            layer_log.clone().around(req, next)
        },
    ));
    let ticker = app.spawn_ticker();
    let feeder = azure.map(|a| app.spawn_azure_feeder(azure::Feeder::new(a, extra)));
    let shutdown = cancel.clone();
    let server = tokio::spawn(async move {
        // TCP_NODELAY on every connection: small answers written in pieces otherwise wait
        // for the client's delayed ACK (about 40 ms each).
        use axum::serve::ListenerExt as _;
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let serve = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "dev-queue server stopped");
        }
        ticker.abort();
        if let Some(f) = feeder {
            f.abort();
        }
    });
    Ok(DevQueueHandle {
        root_url,
        addr,
        log,
        cancel,
        server,
    })
}

#[cfg(test)]
mod round_trip_tests {
    use super::{RequestRecord, sequential_round_trips};
    use std::time::Duration;

    fn r(start: u64, end: u64) -> RequestRecord {
        RequestRecord {
            method: "GET".into(),
            path: "/".into(),
            started: Duration::from_millis(start),
            finished: Duration::from_millis(end),
        }
    }

    #[test]
    fn counts_the_longest_chain_of_requests_that_waited_for_each_other() {
        assert_eq!(sequential_round_trips(&[]), 0);
        // Three in parallel: one round trip.
        assert_eq!(sequential_round_trips(&[r(0, 10), r(1, 11), r(2, 12)]), 1);
        // One after another: three.
        assert_eq!(sequential_round_trips(&[r(0, 10), r(10, 20), r(20, 30)]), 3);
        // A pipeline: a long request in parallel with two short sequential ones.
        assert_eq!(sequential_round_trips(&[r(0, 30), r(0, 10), r(11, 20)]), 2);
        // Overlapping but not waiting (started before the other ended): parallel.
        assert_eq!(sequential_round_trips(&[r(0, 10), r(9, 20)]), 1);
    }
}
