//! HTTP layer of the dev queue: routes with the real paths, authentication, persistence after
//! each transition, long-polled claimWork and the tokenised artifact blob store.

use crate::devqueue::DevQueueConfig;
use crate::devqueue::auth::{self, Caller, Keyring, RequestFacts};
use crate::devqueue::state::{
    ApiError, ArtifactRecord, Outcome, QueueState, TaskRecord, check_identifier, fill_defaults,
};
use crate::devqueue::store::Store;
use crate::ids::TaskId;
use crate::queue::auth::{constant_time_eq, issue_temporary_credentials, random_token};
use crate::queue::encode_component;
use crate::queue::types::{
    ClaimTaskRequest, ClaimWorkRequest, CreateArtifactRequest, ExceptionRequest, TaskState,
    format_time,
};
use crate::secret::Secret;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, OriginalUri, Path, Query,
    RawPathParams, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt as _;
use serde_json::{Map, Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

/// clientId of the internal issuer of task credentials.
pub(crate) const ISSUER_ID: &str = "static/chainlock-dev-queue";
/// S3 refuses single PUTs above 5 GiB; so do we.
const MAX_UPLOAD: u64 = 5 * 1024 * 1024 * 1024;
/// Presigned PUT URLs are valid 45 minutes.
const PUT_URL_VALIDITY: Duration = Duration::minutes(45);
/// The real API's request body limit.
const API_BODY_LIMIT: usize = 10 * 1024 * 1024;
/// Artifacts may still be created this long after an exception.
const EXCEPTION_GRACE: Duration = Duration::minutes(25);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = json!({
            "code": self.code,
            "message": self.message,
            "requestInfo": {"time": format_time(crate::clock::now())},
        });
        let mut resp = (status, axum::Json(body)).into_response();
        // `request_info` (on the API routes) rebuilds the body with the request's details.
        resp.extensions_mut().insert(self);
        resp
    }
}

/// The real API method name of an API route, for `requestInfo.method` and the message trailer.
fn api_method(method: &Method, route: &str) -> &'static str {
    if let Some(tail) = route.strip_prefix("/api/object/v1/") {
        return match tail.split('/').next() {
            Some("upload") => "createUpload",
            Some("finish-upload") => "finishUpload",
            Some("start-download") => "startDownload",
            _ => "unknown",
        };
    }
    let tail = route.strip_prefix("/api/queue/v1").unwrap_or(route);
    let get = *method == Method::GET;
    if tail.contains("/artifact-content/") {
        return if tail.contains("/runs/") {
            "artifact"
        } else {
            "latestArtifact"
        };
    }
    match tail.rsplit('/').next().unwrap_or_default() {
        "ping" => "ping",
        "status" => "status",
        "cancel" => "cancelTask",
        "rerun" => "rerunTask",
        "reclaim" => "reclaimTask",
        "claim" => "claimTask",
        "completed" => "reportCompleted",
        "failed" => "reportFailed",
        "exception" => "reportException",
        "{*task_queue_id}" => "claimWork",
        "{worker_type}" => "pollTaskUrls",
        "{task_id}" if get => "task",
        "{task_id}" => "createTask",
        "artifacts" if tail.contains("/runs/") => "listArtifacts",
        "artifacts" => "listLatestArtifacts",
        "{*name}" if *method == Method::PUT => "finishArtifact",
        "{*name}" if !get => "createArtifact",
        "{*name}" if tail.contains("/runs/") => "getArtifact",
        "{*name}" => "getLatestArtifact",
        _ => "unknown",
    }
}

/// The real queue's name of a path parameter.
fn param_name(route_name: &str) -> String {
    let mut out = String::with_capacity(route_name.len());
    let mut upper = false;
    for c in route_name.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Error bodies of the API routes as the real queue writes them: `requestInfo` with the API
/// method name, the path parameters, the request payload and the time, and the message
/// followed by the `---` trailer naming method, error code, status code and time.
async fn request_info(
    method: Method,
    route: MatchedPath,
    params: RawPathParams,
    req: Request,
    next: Next,
) -> Response {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, API_BODY_LIMIT).await else {
        return ApiError::new(413, "InputTooLarge", "the request body is too large")
            .into_response();
    };
    let resp = next
        .run(Request::from_parts(parts, Body::from(bytes.clone())))
        .await;
    let Some(err) = resp.extensions().get::<ApiError>().cloned() else {
        return resp;
    };
    let name = api_method(&method, route.as_str());
    let params: Map<String, Value> = params
        .iter()
        .map(|(k, v)| (param_name(k), Value::String(v.to_owned())))
        .collect();
    let payload = serde_json::from_slice::<Value>(&bytes).unwrap_or_else(|_| json!({}));
    let time = format_time(crate::clock::now());
    let message = format!(
        "{}\n\n---\n\n* method:     {name}\n* errorCode:  {}\n* statusCode: {}\n* time:       {time}",
        err.message, err.code, err.status
    );
    let body = json!({
        "code": err.code,
        "message": message,
        "requestInfo": {"method": name, "params": params, "payload": payload, "time": time},
    });
    (resp.status(), axum::Json(body)).into_response()
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(500, "InternalServerError", e.to_string())
}

struct Shared {
    cfg: DevQueueConfig,
    root_url: String,
    store: Store,
    issuer_token: Secret,
    state: Mutex<QueueState>,
    notify: Notify,
    cancel: CancellationToken,
    azure: Option<crate::devqueue::azure::AzureEndpoint>,
    azure_http: reqwest::Client,
}

/// Shared server state.
#[derive(Clone)]
pub(crate) struct App(Arc<Shared>);

type ApiResult = Result<Response, ApiError>;

impl App {
    pub(crate) fn new(
        cfg: DevQueueConfig,
        root_url: String,
        store: Store,
        issuer_token: Secret,
        tasks: HashMap<TaskId, TaskRecord>,
        cancel: CancellationToken,
        azure: Option<crate::devqueue::azure::AzureEndpoint>,
    ) -> App {
        App(Arc::new(Shared {
            cfg,
            root_url,
            store,
            issuer_token,
            state: Mutex::new(QueueState { tasks }),
            notify: Notify::new(),
            cancel,
            azure,
            azure_http: crate::devqueue::azure::http_client(),
        }))
    }

    /// Puts an Azure message for every newly pending run, five times a second.
    pub(crate) fn spawn_azure_feeder(
        &self,
        mut feeder: crate::devqueue::azure::Feeder,
    ) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
            loop {
                tokio::select! {
                    _ = app.0.cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let pending = match app.lock_swept().await {
                    Ok(q) => q.pending_runs(),
                    Err(e) => {
                        tracing::error!(error = %e.message, "dev-queue sweep failed");
                        continue;
                    }
                };
                feeder.feed(pending).await;
            }
        })
    }

    /// Expires claims and deadlines twice a second, so retries become claimable promptly.
    pub(crate) fn spawn_ticker(&self) -> tokio::task::JoinHandle<()> {
        let app = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tokio::select! {
                    _ = app.0.cancel.cancelled() => return,
                    _ = tick.tick() => {
                        if let Err(e) = app.lock_swept().await {
                            tracing::error!(error = %e.message, "dev-queue sweep failed");
                        }
                    }
                }
            }
        })
    }

    fn authenticate(&self, req: &SignedRequest) -> Result<Caller, ApiError> {
        let h = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
        let resource = req
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| req.uri.path());
        let facts = RequestFacts {
            method: req.method.as_str(),
            resource,
            host_header: h(header::HOST),
            authorization: h(header::AUTHORIZATION),
            content_type: h(header::CONTENT_TYPE),
            body: &req.body,
        };
        let keys = Keyring {
            clients: &self.0.cfg.clients,
            issuer_id: ISSUER_ID,
            issuer_token: &self.0.issuer_token,
        };
        let r = auth::authenticate(&keys, &facts, crate::clock::now());
        if let Err(e) = &r {
            tracing::info!(method = %req.method, path = req.uri.path(), status = e.status, reason = %e.message, "dev-queue rejected request");
        }
        r
    }

    async fn persist(&self, q: &QueueState, ids: &[TaskId]) -> Result<(), ApiError> {
        let unique: HashSet<&TaskId> = ids.iter().collect();
        for id in unique {
            if let Some(rec) = q.tasks.get(id) {
                self.0.store.save_task(rec).await.map_err(internal)?;
            }
        }
        Ok(())
    }

    /// Locks the state after applying expiries (claim-expired, deadline-exceeded).
    async fn lock_swept(&self) -> Result<tokio::sync::MutexGuard<'_, QueueState>, ApiError> {
        let mut q = self.0.state.lock().await;
        let changed = q.sweep(crate::clock::now());
        if !changed.is_empty() {
            self.persist(&q, &changed).await?;
            self.0.notify.notify_waiters();
        }
        Ok(q)
    }

    fn task_credentials(
        &self,
        rec: &TaskRecord,
        run_id: u32,
        worker_group: &str,
        worker_id: &str,
        taken_until: DateTime<Utc>,
    ) -> Value {
        let ms = taken_until.timestamp_millis();
        // JS float seconds: `1788265200` or `1788265200.123`.
        let secs = if ms % 1000 == 0 {
            (ms / 1000).to_string()
        } else {
            format!("{}.{:03}", ms / 1000, ms % 1000)
                .trim_end_matches('0')
                .to_owned()
        };
        let t = &rec.task_id;
        let client_id =
            format!("task-client/{t}/{run_id}/on/{worker_group}/{worker_id}/until/{secs}");
        let mut scopes = vec![
            format!("queue:reclaim-task:{t}/{run_id}"),
            format!("queue:resolve-task:{t}/{run_id}"),
            format!("queue:create-artifact:{t}/{run_id}"),
        ];
        scopes.extend(rec.meta.scopes.iter().cloned());
        let (token, cert) = issue_temporary_credentials(
            ISSUER_ID,
            &self.0.issuer_token,
            &client_id,
            scopes,
            crate::clock::now(),
            taken_until,
        );
        json!({"clientId": client_id, "accessToken": token.expose(), "certificate": cert.expose()})
    }

    /// Temporary credentials issued by the dev queue, `{clientId, accessToken, certificate}`.
    fn temporary_credentials(
        &self,
        client_id: &str,
        scopes: Vec<String>,
        until: DateTime<Utc>,
    ) -> Value {
        let (token, cert) = issue_temporary_credentials(
            ISSUER_ID,
            &self.0.issuer_token,
            client_id,
            scopes,
            crate::clock::now(),
            until,
        );
        json!({"clientId": client_id, "accessToken": token.expose(), "certificate": cert.expose()})
    }

    fn blob_url(&self, kind: &str, t: &TaskId, run: u32, name: &str, token: &str) -> String {
        format!(
            "{}/dev-queue/{kind}/{t}/{run}/{}?token={token}",
            self.0.root_url,
            encode_component(name)
        )
    }
}

/// What Hawk authenticates: the method, the URI as the client sent it, the headers and the
/// payload. Extracting it reads the whole body within the router's [`DefaultBodyLimit`], exactly
/// as the `Bytes` extractor does (same rejection); like `Bytes`, it is a handler's last argument.
struct SignedRequest {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl SignedRequest {
    /// The request line and headers, with an empty payload.
    async fn from_head(parts: &mut Parts, app: &App) -> SignedRequest {
        let Ok(OriginalUri(uri)) = OriginalUri::from_request_parts(parts, app).await;
        SignedRequest {
            method: parts.method.clone(),
            uri,
            headers: parts.headers.clone(),
            body: Bytes::new(),
        }
    }
}

impl FromRequest<App> for SignedRequest {
    type Rejection = BytesRejection;

    async fn from_request(req: Request, app: &App) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let head = SignedRequest::from_head(&mut parts, app).await;
        let body = Bytes::from_request(Request::from_parts(parts, body), app).await?;
        Ok(SignedRequest { body, ..head })
    }
}

/// A [`SignedRequest`] on a route without a payload (the artifact GETs): the body is never read
/// and the signature is checked against an empty payload.
struct SignedGet(SignedRequest);

impl FromRequestParts<App> for SignedGet {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, Self::Rejection> {
        Ok(SignedGet(SignedRequest::from_head(parts, app).await))
    }
}

mod object;

pub(crate) fn router(app: App) -> Router {
    let api = "/api/queue/v1";
    Router::new()
        .route(
            &format!("{api}/ping"),
            get(|| async { axum::Json(json!({"alive": true})) }),
        )
        .route(
            &format!("{api}/task/{{task_id}}"),
            put(create_task).get(get_task),
        )
        .route(&format!("{api}/task/{{task_id}}/status"), get(get_status))
        .route(&format!("{api}/task/{{task_id}}/cancel"), post(cancel_task))
        .route(&format!("{api}/task/{{task_id}}/rerun"), post(rerun_task))
        .route(
            &format!("{api}/claim-work/{{*task_queue_id}}"),
            post(claim_work),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/reclaim"),
            post(reclaim),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/claim"),
            post(claim_task),
        )
        .route(
            &format!("{api}/poll-task-url/{{provisioner_id}}/{{worker_type}}"),
            get(poll_task_urls),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/completed"),
            resolve_route(Some(Outcome::Completed)),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/failed"),
            resolve_route(Some(Outcome::Failed)),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/exception"),
            resolve_route(None),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/artifacts"),
            get(list_run_artifacts),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/artifacts/{{*name}}"),
            post(create_artifact)
                .get(get_run_artifact)
                .put(object::finish_artifact),
        )
        .route(
            &format!("{api}/task/{{task_id}}/runs/{{run_id}}/artifact-content/{{*name}}"),
            get(object::run_artifact_content),
        )
        .route(
            &format!("{api}/task/{{task_id}}/artifact-content/{{*name}}"),
            get(object::latest_artifact_content),
        )
        .route("/api/object/v1/upload/{*name}", put(object::create_upload))
        .route(
            "/api/object/v1/finish-upload/{*name}",
            post(object::finish_upload),
        )
        .route(
            "/api/object/v1/start-download/{*name}",
            put(object::start_download),
        )
        .route(
            &format!("{api}/task/{{task_id}}/artifacts"),
            get(list_latest_artifacts),
        )
        .route(
            &format!("{api}/task/{{task_id}}/artifacts/{{*name}}"),
            get(get_latest_artifact),
        )
        .route_layer(middleware::from_fn(request_info))
        .route(
            "/dev-queue/upload/{task_id}/{run_id}/{*name}",
            put(upload_blob),
        )
        .route("/dev-queue/blob/{task_id}/{run_id}/{*name}", get(get_blob))
        .route("/sources/{*path}", get(get_source))
        .layer(DefaultBodyLimit::max(API_BODY_LIMIT))
        .with_state(app)
}

fn task_id(s: &str) -> Result<TaskId, ApiError> {
    TaskId::parse(s).map_err(|_| ApiError::invalid(format!("{s:?} is not a valid taskId")))
}

fn run_id(s: &str) -> Result<u32, ApiError> {
    s.parse::<u32>()
        .ok()
        .filter(|r| *r <= 1000)
        .ok_or_else(|| ApiError::invalid(format!("{s:?} is not a valid runId")))
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::new(400, "MalformedPayload", format!("body is not JSON: {e}")))?;
    serde_json::from_value(v).map_err(|e| ApiError::invalid(format!("invalid request body: {e}")))
}

/// The run to read artifacts from (the given one, or the latest) and its artifact table.
fn run_artifacts<'a>(
    rec: &'a TaskRecord,
    id: &TaskId,
    run: Option<u32>,
) -> Result<(u32, &'a std::collections::BTreeMap<String, ArtifactRecord>), ApiError> {
    let run = match run {
        Some(r) => r,
        None => rec
            .runs
            .last()
            .map(|r| r.run_id)
            .ok_or_else(|| ApiError::not_found(format!("task {id} has no runs")))?,
    };
    rec.run(run)?;
    let table = rec
        .artifacts
        .get(run as usize)
        .ok_or_else(|| internal("run without artifact table"))?;
    Ok((run, table))
}

fn json_response(v: Value) -> Response {
    axum::Json(v).into_response()
}

fn status_response(rec: &TaskRecord) -> Response {
    json_response(json!({ "status": rec.status() }))
}

async fn create_task(
    State(app): State<App>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let id = task_id(&id)?;
    let given: Value = parse_body(&req.body)?;
    let (definition, meta) = fill_defaults(&id, given)?;
    let mut needed = vec![
        format!("queue:create-task:{}:{}", meta.priority, meta.task_queue_id),
        format!("queue:scheduler-id:{}", meta.scheduler_id),
    ];
    needed.extend(meta.scopes.iter().cloned());
    caller.require(&needed)?;
    let mut q = app.lock_swept().await?;
    if q.create_task(&id, definition, meta, crate::clock::now())? {
        app.persist(&q, std::slice::from_ref(&id)).await?;
        app.0.notify.notify_waiters();
    }
    Ok(status_response(q.task(&id)?))
}

async fn get_task(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    let q = app.lock_swept().await?;
    Ok(json_response(q.task(&id)?.definition.clone()))
}

async fn get_status(State(app): State<App>, Path(id): Path<String>) -> ApiResult {
    let id = task_id(&id)?;
    let q = app.lock_swept().await?;
    Ok(status_response(q.task(&id)?))
}

/// The scopes that allow changing a task's runs (`cancel-task` or `rerun-task`): the
/// per-task scope, or the per-project one.
fn require_task_scope(caller: &Caller, verb: &str, rec: &TaskRecord) -> Result<(), ApiError> {
    let per_task = format!(
        "queue:{verb}:{}/{}/{}",
        rec.meta.scheduler_id, rec.meta.task_group_id, rec.task_id
    );
    let per_project = format!("queue:{verb}-in-project:{}", rec.meta.project_id);
    caller
        .require(std::slice::from_ref(&per_task))
        .or_else(|_| caller.require(std::slice::from_ref(&per_project)))
}

async fn cancel_task(
    State(app): State<App>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> ApiResult {
    change_task(&app, &id, &req, TaskChange::Cancel).await
}

async fn rerun_task(
    State(app): State<App>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> ApiResult {
    change_task(&app, &id, &req, TaskChange::Rerun).await
}

/// `cancelTask` or `rerunTask`.
#[derive(Clone, Copy)]
enum TaskChange {
    Cancel,
    Rerun,
}

async fn change_task(app: &App, id: &str, req: &SignedRequest, change: TaskChange) -> ApiResult {
    let caller = app.authenticate(req)?;
    let id = task_id(id)?;
    let mut q = app.lock_swept().await?;
    let verb = match change {
        TaskChange::Cancel => "cancel-task",
        TaskChange::Rerun => "rerun-task",
    };
    require_task_scope(&caller, verb, q.task(&id)?)?;
    let now = crate::clock::now();
    let changed = match change {
        TaskChange::Cancel => q.cancel(&id, now)?,
        TaskChange::Rerun => q.rerun(&id, now)?,
    };
    if !changed.is_empty() {
        app.persist(&q, &changed).await?;
        app.0.notify.notify_waiters();
    }
    Ok(status_response(q.task(&id)?))
}

async fn claim_work(
    State(app): State<App>,
    Path(task_queue_id): Path<String>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let req: ClaimWorkRequest = parse_body(&req.body)?;
    check_identifier("workerGroup", &req.worker_group)?;
    check_identifier("workerId", &req.worker_id)?;
    if !(1..=32).contains(&req.tasks) {
        return Err(ApiError::invalid("tasks must be 1-32"));
    }
    if task_queue_id.split('/').count() != 2 {
        return Err(ApiError::invalid(
            "taskQueueId must be provisionerId/workerType",
        ));
    }
    caller.require(&[
        format!("queue:claim-work:{task_queue_id}"),
        format!("queue:worker-id:{}/{}", req.worker_group, req.worker_id),
    ])?;
    let deadline = tokio::time::Instant::now() + app.0.cfg.claim_work_timeout;
    let claim_timeout =
        Duration::from_std(app.0.cfg.claim_timeout).unwrap_or(Duration::seconds(1200));
    loop {
        let notified = app.0.notify.notified();
        tokio::pin!(notified);
        // Register interest before looking, so a task created meanwhile wakes us.
        notified.as_mut().enable();
        {
            let mut q = app.lock_swept().await?;
            let now = crate::clock::now();
            let claimed = q.claim(
                &task_queue_id,
                &req.worker_group,
                &req.worker_id,
                req.tasks as usize,
                now,
                claim_timeout,
            );
            if !claimed.is_empty() {
                let ids: Vec<TaskId> = claimed.iter().map(|c| c.task_id.clone()).collect();
                app.persist(&q, &ids).await?;
                let mut tasks = Vec::new();
                for c in claimed {
                    let rec = q.task(&c.task_id)?;
                    tasks.push(json!({
                        "status": rec.status(),
                        "runId": c.run_id,
                        "workerGroup": req.worker_group,
                        "workerId": req.worker_id,
                        "takenUntil": format_time(c.taken_until),
                        "task": rec.definition,
                        "credentials": app.task_credentials(rec, c.run_id, &req.worker_group, &req.worker_id, c.taken_until),
                    }));
                }
                return Ok(json_response(json!({ "tasks": tasks })));
            }
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep_until(deadline) => break,
            _ = app.0.cancel.cancelled() => break,
        }
    }
    Ok(json_response(json!({"tasks": []})))
}

/// Legacy `pollTaskUrls`: SAS URLs of the task queue's Azure queue (one queue: the dev queue
/// has no per-priority queues).
async fn poll_task_urls(
    State(app): State<App>,
    Path((provisioner_id, worker_type)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    check_identifier("provisionerId", &provisioner_id)?;
    check_identifier("workerType", &worker_type)?;
    let task_queue_id = format!("{provisioner_id}/{worker_type}");
    caller.require(&[format!("queue:poll-task-urls:{task_queue_id}")])?;
    let Some(azure) = &app.0.azure else {
        return Err(ApiError::input(
            "pollTaskUrls needs a dev queue started with --azure-queue-endpoint",
        ));
    };
    let validity = Duration::from_std(app.0.cfg.poll_url_validity).unwrap_or(Duration::minutes(30));
    let expires = crate::clock::now() + validity;
    let name = crate::devqueue::azure::queue_name(&task_queue_id);
    // The real queue created the Azure queue here. Best effort: when the Azure endpoint is
    // down the worker's polls fail, as they would anyway.
    if let Err(e) = crate::devqueue::azure::create_queue(&app.0.azure_http, azure, &name).await {
        tracing::warn!(error = %e, "dev-queue: cannot create the Azure queue");
    }
    let (poll, delete) = azure.poll_urls(&name, expires);
    Ok(json_response(json!({
        "expires": format_time(expires),
        "queues": [{"signedPollUrl": poll.expose(), "signedDeleteUrl": delete.expose()}],
    })))
}

/// Legacy `claimTask`: the answer has the shape of one claimWork claim.
async fn claim_task(
    State(app): State<App>,
    Path((id, run)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let (id, run) = (task_id(&id)?, run_id(&run)?);
    let body: ClaimTaskRequest = parse_body(&req.body)?;
    check_identifier("workerGroup", &body.worker_group)?;
    check_identifier("workerId", &body.worker_id)?;
    let mut q = app.lock_swept().await?;
    let task_queue_id = q.task(&id)?.meta.task_queue_id.clone();
    caller.require(&[
        format!("queue:claim-task:{task_queue_id}"),
        format!("queue:worker-id:{}/{}", body.worker_group, body.worker_id),
    ])?;
    let claim_timeout =
        Duration::from_std(app.0.cfg.claim_timeout).unwrap_or(Duration::seconds(1200));
    let c = q.claim_task(
        &id,
        run,
        &body.worker_group,
        &body.worker_id,
        crate::clock::now(),
        claim_timeout,
    )?;
    app.persist(&q, std::slice::from_ref(&id)).await?;
    let rec = q.task(&id)?;
    Ok(json_response(json!({
        "status": rec.status(),
        "runId": run,
        "workerGroup": body.worker_group,
        "workerId": body.worker_id,
        "takenUntil": format_time(c.taken_until),
        "task": rec.definition,
        "credentials": app.task_credentials(rec, run, &body.worker_group, &body.worker_id, c.taken_until),
    })))
}

async fn reclaim(
    State(app): State<App>,
    Path((id, run)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let (id, run) = (task_id(&id)?, run_id(&run)?);
    caller.require(&[format!("queue:reclaim-task:{id}/{run}")])?;
    let mut q = app.lock_swept().await?;
    let claim_timeout =
        Duration::from_std(app.0.cfg.claim_timeout).unwrap_or(Duration::seconds(1200));
    let c = q.reclaim(&id, run, crate::clock::now(), claim_timeout)?;
    app.persist(&q, std::slice::from_ref(&id)).await?;
    let rec = q.task(&id)?;
    let r = rec.run(run)?;
    let (wg, wid) = (
        r.worker_group.clone().unwrap_or_default(),
        r.worker_id.clone().unwrap_or_default(),
    );
    Ok(json_response(json!({
        "status": rec.status(),
        "runId": run,
        "workerGroup": wg,
        "workerId": wid,
        "takenUntil": format_time(c.taken_until),
        "credentials": app.task_credentials(rec, run, &wg, &wid, c.taken_until),
    })))
}

/// The POST route of reportCompleted (`Some(Completed)`), reportFailed (`Some(Failed)`) or
/// reportException (`None`: the reason is read from the body).
fn resolve_route(outcome: Option<Outcome>) -> MethodRouter<App> {
    post(
        move |State(app): State<App>,
              Path((id, run)): Path<(String, String)>,
              req: SignedRequest| resolve(app, id, run, req, outcome),
    )
}

async fn resolve(
    app: App,
    id: String,
    run: String,
    req: SignedRequest,
    outcome: Option<Outcome>,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let (id, run) = (task_id(&id)?, run_id(&run)?);
    let outcome = match outcome {
        Some(o) => o,
        None => {
            let body: ExceptionRequest = parse_body(&req.body)?;
            Outcome::Exception(body.reason.as_str())
        }
    };
    caller.require(&[format!("queue:resolve-task:{id}/{run}")])?;
    let mut q = app.lock_swept().await?;
    let changed = q.report(&id, run, outcome, crate::clock::now())?;
    if !changed.is_empty() {
        app.persist(&q, &changed).await?;
        app.0.notify.notify_waiters();
    }
    Ok(status_response(q.task(&id)?))
}

const ERROR_REASONS: &[&str] = &[
    "file-missing-on-worker",
    "invalid-resource-on-worker",
    "too-large-file-on-worker",
    "file-not-readable-on-worker",
];

async fn create_artifact(
    State(app): State<App>,
    Path((id, run, name)): Path<(String, String, String)>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let (id, run) = (task_id(&id)?, run_id(&run)?);
    caller.require(&[format!("queue:create-artifact:{id}/{run}")])?;
    let req: CreateArtifactRequest = parse_body(&req.body)?;
    if name.is_empty() || name.len() > 1024 {
        return Err(ApiError::invalid("artifact name must be 1-1024 characters"));
    }
    let now = crate::clock::now();
    let mut q = app.lock_swept().await?;
    let rec = q
        .tasks
        .get_mut(&id)
        .ok_or_else(|| ApiError::not_found(format!("task {id} not found")))?;
    let r = rec.run(run)?;
    let accepting = r.state == TaskState::Running
        || (r.state == TaskState::Exception
            && r.resolved.is_some_and(|t| now - t < EXCEPTION_GRACE));
    if !accepting {
        return Err(ApiError::conflict(format!(
            "run {run} of task {id} does not accept artifacts (state {:?})",
            r.state
        )));
    }
    let task_expires = rec.meta.expires;
    let mut new = ArtifactRecord {
        storage_type: String::new(),
        name: name.clone(),
        expires: now,
        content_type: String::new(),
        content_length: None,
        content_encoding: None,
        uploaded: false,
        put_token: None,
        put_expires: None,
        read_token: None,
        url: None,
        artifact: None,
        reason: None,
        message: None,
        project_id: None,
        upload_id: None,
        hashes: Default::default(),
        object_finished: false,
        present: false,
    };
    match &req {
        CreateArtifactRequest::Object {
            expires,
            content_type,
            ..
        } => {
            new.storage_type = "object".into();
            new.expires = *expires;
            new.content_type = content_type.clone();
            new.project_id = Some(rec.meta.project_id.clone());
        }
        CreateArtifactRequest::S3 {
            expires,
            content_type,
            ..
        } => {
            new.storage_type = "s3".into();
            new.expires = *expires;
            new.content_type = content_type.clone();
        }
        CreateArtifactRequest::Reference {
            expires,
            url,
            content_type,
        } => {
            new.storage_type = "reference".into();
            new.expires = *expires;
            new.content_type = content_type.clone();
            new.url = Some(url.clone());
        }
        CreateArtifactRequest::Link {
            expires,
            artifact,
            content_type,
        } => {
            new.storage_type = "link".into();
            new.expires = *expires;
            new.content_type = content_type
                .clone()
                .unwrap_or_else(|| "application/binary".into());
            new.artifact = Some(artifact.clone());
        }
        CreateArtifactRequest::Error {
            expires,
            reason,
            message,
        } => {
            if !ERROR_REASONS.contains(&reason.as_str()) {
                return Err(ApiError::invalid(format!(
                    "unknown error reason {reason:?}"
                )));
            }
            if message.len() > 4096 {
                return Err(ApiError::invalid("error message longer than 4096"));
            }
            new.storage_type = "error".into();
            new.expires = *expires;
            new.content_type = "application/json".into();
            new.reason = Some(reason.clone());
            new.message = Some(message.clone());
        }
    }
    if new.content_type.len() > 255 {
        return Err(ApiError::invalid("contentType longer than 255"));
    }
    if new.expires > task_expires {
        return Err(ApiError::input("artifact expires after the task"));
    }
    if new.expires < now - Duration::minutes(15) {
        return Err(ApiError::input("artifact expiry is in the past"));
    }
    let slot = rec
        .artifacts
        .get_mut(run as usize)
        .ok_or_else(|| internal("run without artifact table"))?;
    if let Some(old) = slot.get(&name) {
        let type_ok = old.storage_type == new.storage_type
            || (old.storage_type == "reference" && new.storage_type == "link");
        let ct_ok = new.storage_type == "link" || old.content_type == new.content_type;
        let same_details = match new.storage_type.as_str() {
            "error" => old.reason == new.reason && old.message == new.message,
            "link" => old.storage_type == "reference" || old.artifact == new.artifact,
            _ => true, // s3 re-creates get a new putUrl; references may change URL
        };
        if !(type_ok && ct_ok && same_details && new.expires >= old.expires) {
            return Err(ApiError::conflict(format!(
                "artifact {name} already exists with incompatible details"
            )));
        }
        if new.storage_type == "object" {
            // The same upload, as long as the artifact is the same: a retried createArtifact
            // must not strand an upload in flight.
            new = ArtifactRecord {
                expires: new.expires,
                ..old.clone()
            };
        }
        if new.storage_type == "s3" {
            new.uploaded = old.uploaded;
            new.content_length = old.content_length;
            new.content_encoding = old.content_encoding.clone();
            new.read_token = old.read_token.clone();
        }
    }
    let response = if new.storage_type == "s3" {
        let token = random_token().expose().to_owned();
        let put_expires = now + PUT_URL_VALIDITY;
        new.put_token = Some(token.clone());
        new.put_expires = Some(put_expires);
        if new.read_token.is_none() {
            new.read_token = Some(random_token().expose().to_owned());
        }
        json!({
            "storageType": "s3",
            "putUrl": app.blob_url("upload", &id, run, &name, &token),
            "expires": format_time(put_expires),
            "contentType": new.content_type,
        })
    } else if new.storage_type == "object" {
        if new.upload_id.is_none() {
            new.upload_id = Some(TaskId::generate().to_string());
            new.read_token = Some(random_token().expose().to_owned());
        }
        let object_name = object::object_name(&id, run, &name);
        let project = new.project_id.clone().unwrap_or_default();
        // Like the real queue: valid until the artifact expires or for 24 hours, whichever
        // is first, for this one object only.
        let until = new.expires.min(now + Duration::hours(24));
        let credentials = app.temporary_credentials(
            &format!("artifact-upload/{id}/{run}/on/dev-queue"),
            vec![format!("object:upload:{project}:{object_name}")],
            until,
        );
        json!({
            "storageType": "object",
            "name": object_name,
            "projectId": project,
            "uploadId": new.upload_id,
            "expires": format_time(new.expires),
            "credentials": credentials,
        })
    } else {
        json!({ "storageType": new.storage_type })
    };
    let journal = app
        .0
        .store
        .append_artifact(&id, run as usize, &new)
        .await
        .map_err(internal)?;
    slot.insert(name, new);
    drop(q);
    journal.flush().await.map_err(internal)?;
    Ok(json_response(response))
}

#[derive(serde::Deserialize)]
struct TokenQuery {
    token: String,
}

fn s3_error(status: u16, code: &'static str, message: &str) -> ApiError {
    ApiError::new(status, code, message)
}

async fn upload_blob(
    State(app): State<App>,
    Path((id, run, name)): Path<(String, String, String)>,
    Query(tq): Query<TokenQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let (id, run) = (task_id(&id)?, run_id(&run)?);
    if app.0.cfg.refuse_uploads_of.as_deref() == Some(name.as_str()) {
        return Err(s3_error(403, "AccessDenied", "refused by fault injection"));
    }
    let now = crate::clock::now();
    let record = {
        let q = app.0.state.lock().await;
        q.tasks
            .get(&id)
            .and_then(|r| r.artifacts.get(run as usize))
            .and_then(|a| a.get(&name))
            .cloned()
            .ok_or_else(|| s3_error(404, "NoSuchUpload", "no such artifact"))?
    };
    let token_ok = record
        .put_token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), tq.token.as_bytes()));
    if !token_ok || record.put_expires.is_none_or(|e| now > e) {
        return Err(s3_error(
            403,
            "AccessDenied",
            "invalid or expired upload URL",
        ));
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if ct != Some(record.content_type.as_str()) {
        return Err(s3_error(
            403,
            "SignatureDoesNotMatch",
            "Content-Type differs from the one given to createArtifact",
        ));
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(s3_error(
            501,
            "NotImplemented",
            "chunked uploads are not accepted",
        ));
    }
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or_else(|| s3_error(411, "MissingContentLength", "Content-Length is required"))?;
    if declared > MAX_UPLOAD {
        return Err(s3_error(400, "EntityTooLarge", "larger than 5 GiB"));
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = app.0.store.blob_path(&id, run, &name);
    let parent = path
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    tokio::fs::create_dir_all(&parent).await.map_err(internal)?;
    let tmp = path.with_extension(format!("tmp-{}", hex::encode(rand::random::<[u8; 8]>())));
    let written = async {
        let mut f = tokio::fs::File::create(&tmp).await.map_err(internal)?;
        let mut stream = body.into_data_stream();
        let mut n: u64 = 0;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| s3_error(400, "IncompleteBody", &e.to_string()))?;
            n += chunk.len() as u64;
            if n > declared {
                return Err(s3_error(
                    400,
                    "IncompleteBody",
                    "body longer than Content-Length",
                ));
            }
            f.write_all(&chunk).await.map_err(internal)?;
        }
        if n != declared {
            return Err(s3_error(
                400,
                "IncompleteBody",
                "body shorter than Content-Length",
            ));
        }
        f.sync_all().await.map_err(internal)?;
        Ok(n)
    }
    .await;
    let n = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
    };
    tokio::fs::rename(&tmp, &path).await.map_err(internal)?;
    let mut q = app.0.state.lock().await;
    if let Some(a) = q
        .tasks
        .get_mut(&id)
        .and_then(|r| r.artifacts.get_mut(run as usize))
        .and_then(|a| a.get_mut(&name))
    {
        a.uploaded = true;
        a.content_length = Some(n);
        a.content_encoding = encoding;
        let a = a.clone();
        let journal = app
            .0
            .store
            .append_artifact(&id, run as usize, &a)
            .await
            .map_err(internal)?;
        drop(q);
        journal.flush().await.map_err(internal)?;
    }
    Ok(StatusCode::OK.into_response())
}

/// `GET /sources/<path>`: a file of [`DevQueueConfig::sources_dir`](super::DevQueueConfig),
/// for rebuild sources (the demo's `.taskcluster.yml`). Plain relative paths only.
async fn get_source(State(app): State<App>, Path(path): Path<String>) -> ApiResult {
    let not_found = || ApiError::new(404, "ResourceNotFound", "no such source".to_owned());
    let Some(dir) = &app.0.cfg.sources_dir else {
        return Err(not_found());
    };
    let rel = std::path::Path::new(&path);
    if !rel
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)))
    {
        return Err(not_found());
    }
    match tokio::fs::read(dir.join(rel)).await {
        Ok(bytes) => Ok((axum::http::StatusCode::OK, bytes).into_response()),
        Err(_) => Err(not_found()),
    }
}

async fn get_blob(
    State(app): State<App>,
    Path((id, run, name)): Path<(String, String, String)>,
    Query(tq): Query<TokenQuery>,
) -> ApiResult {
    let (id, run) = (task_id(&id)?, run_id(&run)?);
    let record = {
        let q = app.0.state.lock().await;
        q.tasks
            .get(&id)
            .and_then(|r| r.artifacts.get(run as usize))
            .and_then(|a| a.get(&name))
            .cloned()
            .ok_or_else(|| s3_error(404, "NoSuchKey", "no such object"))?
    };
    let token_ok = record
        .read_token
        .as_deref()
        .is_some_and(|t| constant_time_eq(t.as_bytes(), tq.token.as_bytes()));
    if !token_ok {
        return Err(s3_error(403, "AccessDenied", "invalid download URL"));
    }
    if !record.uploaded {
        return Err(s3_error(
            404,
            "NoSuchKey",
            "the artifact was never uploaded",
        ));
    }
    let path = app.0.store.blob_path(&id, run, &name);
    let file = tokio::fs::File::open(&path).await.map_err(internal)?;
    let len = file.metadata().await.map_err(internal)?.len();
    let mut resp = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, record.content_type)
        .header(header::CONTENT_LENGTH, len);
    if let Some(enc) = record.content_encoding {
        resp = resp.header(header::CONTENT_ENCODING, enc);
    }
    resp.body(Body::from_stream(tokio_util::io::ReaderStream::new(file)))
        .map_err(internal)
}

async fn get_run_artifact(
    State(app): State<App>,
    Path((id, run, name)): Path<(String, String, String)>,
    SignedGet(req): SignedGet,
) -> ApiResult {
    let run = run_id(&run)?;
    serve_artifact(app, id, Some(run), name, &req).await
}

async fn get_latest_artifact(
    State(app): State<App>,
    Path((id, name)): Path<(String, String)>,
    SignedGet(req): SignedGet,
) -> ApiResult {
    serve_artifact(app, id, None, name, &req).await
}

async fn serve_artifact(
    app: App,
    id: String,
    run: Option<u32>,
    name: String,
    req: &SignedRequest,
) -> ApiResult {
    let (id, run, art) = readable_artifact(&app, &id, run, &name, req, crate::clock::now()).await?;
    let storage = art.storage_type.as_str();
    let builder = Response::builder().header("x-taskcluster-artifact-storage-type", storage);
    let redirect = |url: String| {
        builder
            .status(StatusCode::SEE_OTHER)
            .header(header::LOCATION, &url)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"storageType": storage, "url": url}).to_string(),
            ))
            .map_err(internal)
    };
    match storage {
        // The real queue redirects to the object service's `simple` download URL.
        "s3" | "object" => {
            let token = art.read_token.clone().unwrap_or_default();
            redirect(app.blob_url("blob", &id, run, &art.name, &token))
        }
        "reference" => redirect(art.url.clone().unwrap_or_default()),
        "error" => Response::builder()
            .status(StatusCode::FAILED_DEPENDENCY)
            .header("x-taskcluster-artifact-storage-type", "error")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"reason": art.reason, "message": art.message}).to_string(),
            ))
            .map_err(internal),
        other => Err(internal(format!("unknown storage type {other}"))),
    }
}

/// The artifact `name` names, links resolved server-side as the real queue does: 404 for a
/// missing one (or an object artifact not finished yet), 410 for an expired one.
/// The artifact `name` of a run (the latest when `run` is `None`) as the caller of `req` may
/// read it, links followed at `now`: `public/` artifacts need no scope, authenticated or not
/// (the real queue's anonymous role applies to every client), so a worker fetching upstream
/// evidence with task credentials is never refused.
async fn readable_artifact(
    app: &App,
    id: &str,
    run: Option<u32>,
    name: &str,
    req: &SignedRequest,
    now: DateTime<Utc>,
) -> Result<(TaskId, u32, ArtifactRecord), ApiError> {
    let caller = app.authenticate(req)?;
    let id = task_id(id)?;
    if !name.starts_with("public/") {
        caller.require(&[format!("queue:get-artifact:{name}")])?;
    }
    let q = app.lock_swept().await?;
    let rec = q.task(&id)?;
    let (run, table) = run_artifacts(rec, &id, run)?;
    let art = follow_links(table, &id, run, name, now)?.clone();
    Ok((id, run, art))
}

fn follow_links<'a>(
    table: &'a std::collections::BTreeMap<String, ArtifactRecord>,
    id: &TaskId,
    run: u32,
    name: &str,
    now: DateTime<Utc>,
) -> Result<&'a ArtifactRecord, ApiError> {
    let mut current = name.to_owned();
    let mut seen = HashSet::new();
    loop {
        let a = table
            .get(&current)
            .filter(|a| a.storage_type != "object" || a.present)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "artifact {current} of task {id} run {run} not found"
                ))
            })?;
        if a.expires < now {
            return Err(ApiError::new(410, "ResourceExpired", "Artifact expired"));
        }
        if a.storage_type != "link" {
            return Ok(a);
        }
        if !seen.insert(current.clone()) || seen.len() > 10 {
            return Err(ApiError::input(format!("link cycle at artifact {current}")));
        }
        current = a.artifact.clone().unwrap_or_default();
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListQuery {
    continuation_token: Option<String>,
    limit: Option<usize>,
}

async fn list_run_artifacts(
    State(app): State<App>,
    Path((id, run)): Path<(String, String)>,
    Query(lq): Query<ListQuery>,
    SignedGet(req): SignedGet,
) -> ApiResult {
    let run = run_id(&run)?;
    list(app, id, Some(run), lq, &req).await
}

async fn list_latest_artifacts(
    State(app): State<App>,
    Path(id): Path<String>,
    Query(lq): Query<ListQuery>,
    SignedGet(req): SignedGet,
) -> ApiResult {
    list(app, id, None, lq, &req).await
}

async fn list(
    app: App,
    id: String,
    run: Option<u32>,
    lq: ListQuery,
    req: &SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(req)?;
    let id = task_id(&id)?;
    caller.require(&[format!("queue:list-artifacts:{id}")])?;
    let limit = lq.limit.unwrap_or(1000).clamp(1, 1000);
    let after = match lq.continuation_token.as_deref() {
        None | Some("") => None,
        Some(t) => Some(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(t)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .ok_or_else(|| ApiError::input("invalid continuationToken"))?,
        ),
    };
    let q = app.lock_swept().await?;
    let rec = q.task(&id)?;
    let (_, table) = run_artifacts(rec, &id, run)?;
    // Object artifacts are listed once finished (finishArtifact), as by the real queue.
    let mut items = table
        .values()
        .filter(|a| a.storage_type != "object" || a.present)
        .filter(|a| after.as_ref().is_none_or(|after| a.name > *after));
    let page: Vec<&ArtifactRecord> = items.by_ref().take(limit).collect();
    let more = items.next().is_some();
    let artifacts: Vec<Value> = page
        .iter()
        .map(|a| {
            let mut v = json!({
                "storageType": a.storage_type,
                "name": a.name,
                "expires": format_time(a.expires),
                "contentType": a.content_type,
            });
            if let Some(len) = a.content_length {
                v["contentLength"] = json!(len);
            }
            v
        })
        .collect();
    let mut body = json!({ "artifacts": artifacts });
    if more && let Some(last) = page.last() {
        body["continuationToken"] =
            json!(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&last.name));
    }
    Ok(json_response(body))
}
