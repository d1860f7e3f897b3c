//! The object service, as much of it as object artifacts use: `createUpload` (the `putUrl`
//! method), `finishUpload` and `startDownload` (`getUrl` and `simple`), plus the queue's
//! `finishArtifact` and `artifact` / `latestArtifact` (artifact-content).
//!
//! Why it lives here: an object artifact's bytes are the queue's artifact blob, so the dev
//! queue keeps one store and one record per artifact. The object's name is the real queue's
//! `t/<taskId>/<runId>/<artifact>`; the PUT and GET URLs are the same token-guarded blob
//! routes that stand in for S3, streamed with bounded memory. `finishUpload` re-reads the
//! stored bytes and refuses hashes that do not match them, which the real service leaves to
//! downloaders: a worker bug shows up here rather than at the next task.

use super::*;
use crate::queue::types::{CreateUploadRequest, FinishArtifactRequest, FinishUploadRequest};

/// How long a `getUrl` download URL is announced as valid.
const DOWNLOAD_URL_VALIDITY: Duration = Duration::hours(1);

/// The object service's name for an artifact (the real queue's rule; never stored).
pub(super) fn object_name(id: &TaskId, run: u32, artifact: &str) -> String {
    format!("t/{id}/{run}/{artifact}")
}

/// The artifact an object name stands for; 404 for names the queue never made.
fn parse_object_name(name: &str) -> Result<(TaskId, u32, String), ApiError> {
    let not_found = || ApiError::not_found(format!("Object \"{name}\" not found"));
    let rest = name.strip_prefix("t/").ok_or_else(not_found)?;
    let mut parts = rest.splitn(3, '/');
    let (Some(id), Some(run), Some(artifact)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(not_found());
    };
    let id = TaskId::parse(id).map_err(|_| not_found())?;
    let run = run.parse::<u32>().map_err(|_| not_found())?;
    if artifact.is_empty() {
        return Err(not_found());
    }
    Ok((id, run, artifact.to_owned()))
}

fn object_record<'a>(
    q: &'a mut QueueState,
    name: &str,
) -> Result<(TaskId, u32, &'a mut ArtifactRecord), ApiError> {
    let (id, run, artifact) = parse_object_name(name)?;
    let a = q
        .tasks
        .get_mut(&id)
        .and_then(|r| r.artifacts.get_mut(run as usize))
        .and_then(|t| t.get_mut(&artifact))
        .filter(|a| a.storage_type == "object")
        .ok_or_else(|| ApiError::not_found(format!("Object \"{name}\" not found")))?;
    Ok((id, run, a))
}

/// Adds `given` to the record's hashes: known algorithms must be lowercase hex of the right
/// length, and a hash once given never changes (409, as the real service).
fn merge_hashes(
    record: &mut ArtifactRecord,
    given: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<(), ApiError> {
    for (algorithm, value) in given.into_iter().flatten() {
        let len = match algorithm.as_str() {
            "sha256" => 64,
            "sha512" => 128,
            _ => continue, // unknown algorithms are ignored, as the schema says
        };
        if value.len() != len
            || !value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(ApiError::invalid(format!(
                "hashes.{algorithm} is not {len} lowercase hex digits"
            )));
        }
        match record.hashes.get(algorithm) {
            Some(old) if old != value => {
                return Err(ApiError::conflict(
                    "Content hash already exists with a different value",
                ));
            }
            _ => {
                record.hashes.insert(algorithm.clone(), value.clone());
            }
        }
    }
    Ok(())
}

fn same_upload(
    record: &ArtifactRecord,
    name: &str,
    project_id: &str,
    upload_id: &str,
) -> Result<(), ApiError> {
    if record.project_id.as_deref() != Some(project_id) {
        return Err(ApiError::input(format!(
            "Object \"{name}\" does not have projectId {project_id}"
        )));
    }
    if record.upload_id.as_deref() != Some(upload_id) {
        return Err(ApiError::conflict(format!(
            "Object \"{name}\" does not have uploadId {upload_id}"
        )));
    }
    Ok(())
}

/// `createUpload`: agrees to a `putUrl` proposal with a token-guarded blob URL.
pub(super) async fn create_upload(
    State(app): State<App>,
    Path(name): Path<String>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let body: CreateUploadRequest = parse_body(&req.body)?;
    caller.require(&[format!("object:upload:{}:{name}", body.project_id)])?;
    let now = crate::clock::now();
    let mut q = app.lock_swept().await?;
    let (id, run, a) = object_record(&mut q, &name)?;
    same_upload(a, &name, &body.project_id, &body.upload_id)?;
    if a.expires.timestamp_millis() != body.expires.timestamp_millis() {
        return Err(ApiError::conflict(
            "Object already exists with a different expires",
        ));
    }
    if a.object_finished {
        return Err(ApiError::conflict(format!(
            "Object \"{name}\" is already finished"
        )));
    }
    merge_hashes(a, body.hashes.as_ref())?;
    let method = match &body.proposed_upload_methods.put_url {
        Some(p) => {
            if p.content_length > MAX_UPLOAD {
                return Err(ApiError::input("contentLength larger than 5 GiB"));
            }
            if p.content_type.len() > 255 {
                return Err(ApiError::invalid("contentType longer than 255"));
            }
            let token = random_token().expose().to_owned();
            let expires = now + PUT_URL_VALIDITY;
            a.put_token = Some(token.clone());
            a.put_expires = Some(expires);
            a.content_type = p.content_type.clone();
            let url = app.blob_url("upload", &id, run, &a.name, &token);
            json!({"putUrl": {
                "url": url,
                "expires": format_time(expires),
                "headers": {
                    "Content-Type": p.content_type,
                    "Content-Length": p.content_length.to_string(),
                },
            }})
        }
        // `dataInline` is not offered: a client proposing only that is told no method fits.
        None => json!({}),
    };
    let response = json!({
        "projectId": body.project_id,
        "uploadId": body.upload_id,
        "expires": format_time(a.expires),
        "uploadMethod": method,
    });
    app.persist(&q, std::slice::from_ref(&id)).await?;
    Ok(json_response(response))
}

/// sha256 and sha512 of a stored blob, streamed.
fn hash_blob(path: &std::path::Path) -> std::io::Result<[(String, String); 2]> {
    use sha2::Digest as _;
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let (mut a, mut b) = (sha2::Sha256::new(), sha2::Sha512::new());
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        let Some(chunk) = buf.get(..n).filter(|c| !c.is_empty()) else {
            break;
        };
        a.update(chunk);
        b.update(chunk);
    }
    Ok([
        ("sha256".into(), hex::encode(a.finalize())),
        ("sha512".into(), hex::encode(b.finalize())),
    ])
}

/// `finishUpload`: the object becomes immutable once its bytes match its hashes.
pub(super) async fn finish_upload(
    State(app): State<App>,
    Path(name): Path<String>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let body: FinishUploadRequest = parse_body(&req.body)?;
    caller.require(&[format!("object:upload:{}:{name}", body.project_id)])?;
    let (id, run, artifact, hashes) = {
        let mut q = app.lock_swept().await?;
        let (id, run, a) = object_record(&mut q, &name)?;
        same_upload(a, &name, &body.project_id, &body.upload_id)?;
        if a.object_finished {
            return Ok(json_response(json!({})));
        }
        if !a.uploaded {
            return Err(ApiError::input(format!(
                "no data was uploaded for object \"{name}\""
            )));
        }
        let mut merged = a.clone();
        merge_hashes(&mut merged, body.hashes.as_ref())?;
        if !merged.hashes.contains_key("sha256") && !merged.hashes.contains_key("sha512") {
            return Err(ApiError::input("hashes must include sha256 or sha512"));
        }
        (id, run, a.name.clone(), merged.hashes)
    };
    let path = app.0.store.blob_path(&id, run, &artifact);
    let actual = tokio::task::spawn_blocking(move || hash_blob(&path))
        .await
        .map_err(internal)?
        .map_err(internal)?;
    for (algorithm, value) in &actual {
        if hashes.get(algorithm).is_some_and(|given| given != value) {
            return Err(ApiError::input(format!(
                "hashes.{algorithm} does not match the uploaded data"
            )));
        }
    }
    let mut q = app.lock_swept().await?;
    let (_, _, a) = object_record(&mut q, &name)?;
    a.hashes = hashes;
    a.object_finished = true;
    a.put_token = None;
    app.persist(&q, std::slice::from_ref(&id)).await?;
    Ok(json_response(json!({})))
}

/// `startDownload`: `getUrl` (with the hashes a downloader must check) or `simple`.
pub(super) async fn start_download(
    State(app): State<App>,
    Path(name): Path<String>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    caller.require(&[format!("object:download:{name}")])?;
    let body: Value = parse_body(&req.body)?;
    let accepts = |m: &str| body["acceptDownloadMethods"][m] == json!(true);
    let mut q = app.lock_swept().await?;
    let (id, run, a) = object_record(&mut q, &name)?;
    if !a.object_finished {
        return Err(ApiError::not_found(format!("Object \"{name}\" not found")));
    }
    let token = a.read_token.clone().unwrap_or_default();
    let url = app.blob_url("blob", &id, run, &a.name, &token);
    if accepts("getUrl") {
        let expires = crate::clock::now() + DOWNLOAD_URL_VALIDITY;
        Ok(json_response(json!({
            "method": "getUrl",
            "url": url,
            "expires": format_time(expires),
            "hashes": a.hashes,
        })))
    } else if accepts("simple") {
        Ok(json_response(json!({"method": "simple", "url": url})))
    } else {
        Err(ApiError::new(
            406,
            "NoMatchingMethod",
            "Object supports methods getUrl, simple",
        ))
    }
}

/// The queue's `finishArtifact`: an object artifact becomes present once its object is
/// finished.
pub(super) async fn finish_artifact(
    State(app): State<App>,
    Path((id, run, name)): Path<(String, String, String)>,
    req: SignedRequest,
) -> ApiResult {
    let caller = app.authenticate(&req)?;
    let (id, run) = (task_id(&id)?, run_id(&run)?);
    caller.require(&[format!("queue:create-artifact:{id}/{run}")])?;
    let body: FinishArtifactRequest = parse_body(&req.body)?;
    let mut q = app.lock_swept().await?;
    let a = q
        .tasks
        .get_mut(&id)
        .and_then(|r| r.artifacts.get_mut(run as usize))
        .and_then(|t| t.get_mut(&name))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "Artifact with taskId `{id}`, runId {run}, name `{name}` not found"
            ))
        })?;
    if a.storage_type != "object" {
        return Err(ApiError::input("Only object artifacts can be finished"));
    }
    if a.present {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    if a.upload_id.as_deref() != Some(body.upload_id.as_str()) {
        return Err(ApiError::input(
            "given uploadId does not match that for the artifact",
        ));
    }
    if !a.object_finished {
        return Err(ApiError::input(
            "Object storing artifact data does not exist",
        ));
    }
    a.present = true;
    app.persist(&q, std::slice::from_ref(&id)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn run_artifact_content(
    State(app): State<App>,
    Path((id, run, name)): Path<(String, String, String)>,
    SignedGet(req): SignedGet,
) -> ApiResult {
    let run = run_id(&run)?;
    artifact_content(app, id, Some(run), name, &req).await
}

pub(super) async fn latest_artifact_content(
    State(app): State<App>,
    Path((id, name)): Path<(String, String)>,
    SignedGet(req): SignedGet,
) -> ApiResult {
    artifact_content(app, id, None, name, &req).await
}

/// `artifact` / `latestArtifact`: how to get an artifact's content, without a redirect. For an
/// object artifact, download credentials for that one object (one hour), as the real queue.
async fn artifact_content(
    app: App,
    id: String,
    run: Option<u32>,
    name: String,
    req: &SignedRequest,
) -> ApiResult {
    let now = crate::clock::now();
    let (id, run, a) = readable_artifact(&app, &id, run, &name, req, now).await?;
    let body = match a.storage_type.as_str() {
        "object" => {
            let object = object_name(&id, run, &a.name);
            let credentials = app.temporary_credentials(
                &format!("artifact-download/{id}/{run}/{}", a.name),
                vec![format!("object:download:{object}")],
                now + Duration::hours(1),
            );
            json!({"storageType": "object", "name": object, "credentials": credentials})
        }
        "s3" => {
            let token = a.read_token.clone().unwrap_or_default();
            json!({"storageType": "s3", "url": app.blob_url("blob", &id, run, &a.name, &token)})
        }
        "reference" => json!({"storageType": "reference", "url": a.url}),
        "error" => json!({"storageType": "error", "reason": a.reason, "message": a.message}),
        other => return Err(internal(format!("unknown storage type {other}"))),
    };
    Ok(json_response(body))
}
