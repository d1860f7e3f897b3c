//! `[queue] protocol = "azure-poll"`: finding work the way scriptworker ≤ 3.x did, for queues
//! of before Taskcluster v24. The parsing is [`crate::queue::azure`] (pure); this is the IO.
//!
//! One [`AzurePoller::poll`] is one pass: refresh the signed URLs from `pollTaskUrls` when less
//! than 300 s remain before they expire, then `GET` each queue's poll URL in priority order,
//! one message at a time. Each message is decoded; a malformed one is deleted and logged. A
//! good one is claimed with `claimTask`, and the message is deleted after the attempt whatever
//! its outcome (409: already claimed, resolved or cancelled, so nothing runs). A failed delete
//! is logged, never fatal: the message reappears after its visibility timeout and the next
//! claim attempt gets 409. The first claimed run ends the pass: the caller runs it through the
//! same pipeline as a claimWork claim.
//!
//! Like claimWork, a pass is never cancelled part-way, so a claimed run is never orphaned.
//! Signed URLs are [`Secret`]s: logs and errors show them without their query.

use crate::queue::azure::{self, Limits, RawMessage, TaskRef};
use crate::queue::types::{ClaimTaskRequest, PollTaskUrlsResponse, TaskClaim};
use crate::queue::{QueueClient, QueueError};
use crate::secret::Secret;

/// Most messages handled in one pass (so a backlog of bad messages cannot starve the loop).
const MAX_MESSAGES_PER_PASS: usize = 32;

/// Why a pass found nothing to run because something failed (the loop backs off).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PollError {
    /// `pollTaskUrls` failed.
    #[error("pollTaskUrls failed: {0}")]
    PollTaskUrls(QueueError),
    /// `pollTaskUrls` answered without any queue.
    #[error("pollTaskUrls returned no queues")]
    NoQueues,
    /// A signed URL is unusable (never shows the query).
    #[error("pollTaskUrls returned an unusable URL: {0}")]
    SignedUrl(azure::SignedUrlError),
    /// No queue could be polled.
    #[error("no Azure queue could be polled ({failed} failed); last error: {last}")]
    Unreachable {
        /// Queues that failed.
        failed: usize,
        /// The last failure.
        last: String,
    },
}

/// The signed URLs in force and the identity claims are made with.
pub(crate) struct AzurePoller {
    provisioner_id: String,
    worker_type: String,
    request: ClaimTaskRequest,
    urls: Option<PollTaskUrlsResponse>,
    limits: Limits,
}

impl AzurePoller {
    /// A poller for `task_queue_id` (`provisionerId/workerType`).
    pub(crate) fn new(task_queue_id: &str, worker_group: &str, worker_id: &str) -> AzurePoller {
        let (p, w) = task_queue_id.split_once('/').unwrap_or((task_queue_id, ""));
        AzurePoller {
            provisioner_id: p.to_owned(),
            worker_type: w.to_owned(),
            request: ClaimTaskRequest {
                worker_group: worker_group.to_owned(),
                worker_id: worker_id.to_owned(),
            },
            urls: None,
            limits: Limits::default(),
        }
    }

    async fn refresh(&mut self, queue: &QueueClient) -> Result<(), PollError> {
        let now = crate::clock::now();
        if let Some(u) = &self.urls
            && !azure::needs_refresh(u.expires, now)
        {
            return Ok(());
        }
        let fresh = match self.fetch(queue).await {
            Ok(f) => f,
            // Refreshing early leaves time to fail: the URLs in force still work until they
            // expire.
            Err(e) => match &self.urls {
                Some(u) if u.expires > now => {
                    tracing::warn!(error = %e,
                        expires = %crate::queue::types::format_time(u.expires),
                        "azure-poll: cannot refresh the poll URLs; using the current ones");
                    return Ok(());
                }
                _ => {
                    self.urls = None;
                    return Err(e);
                }
            },
        };
        tracing::info!(
            queues = fresh.queues.len(),
            expires = %crate::queue::types::format_time(fresh.expires),
            "azure-poll: poll URLs refreshed"
        );
        self.urls = Some(fresh);
        Ok(())
    }

    async fn fetch(&self, queue: &QueueClient) -> Result<PollTaskUrlsResponse, PollError> {
        let fresh = queue
            .poll_task_urls(&self.provisioner_id, &self.worker_type)
            .await
            .map_err(PollError::PollTaskUrls)?;
        if fresh.queues.is_empty() {
            return Err(PollError::NoQueues);
        }
        for q in &fresh.queues {
            azure::check_signed_url(&q.signed_poll_url).map_err(PollError::SignedUrl)?;
            azure::check_signed_url(&q.signed_delete_url).map_err(PollError::SignedUrl)?;
        }
        Ok(fresh)
    }

    /// One pass. `Ok(None)`: nothing to run (empty queues, or only bad or taken messages).
    pub(crate) async fn poll(
        &mut self,
        queue: &QueueClient,
    ) -> Result<Option<TaskClaim>, PollError> {
        self.refresh(queue).await?;
        let Some(urls) = self.urls.clone() else {
            return Err(PollError::NoQueues);
        };
        let mut handled = 0usize;
        let mut failed = 0usize;
        let mut last = String::new();
        let mut refused = false;
        for (priority, q) in urls.queues.iter().enumerate() {
            let poll_url =
                azure::check_signed_url(&q.signed_poll_url).map_err(PollError::SignedUrl)?;
            while handled < MAX_MESSAGES_PER_PASS {
                let body = match queue
                    .azure_get(&poll_url, self.limits.max_body_bytes as u64)
                    .await
                {
                    Ok(b) => b,
                    Err(e) => {
                        // A refused signature (expired early, or revoked): fetch new URLs on
                        // the next pass.
                        refused |= e.status() == Some(403);
                        tracing::warn!(priority, error = %e, "azure-poll: poll failed");
                        failed = failed.saturating_add(1);
                        last = e.to_string();
                        break;
                    }
                };
                let messages = match azure::parse_messages(&body, &self.limits) {
                    Ok(m) => m,
                    Err(e) => {
                        // Nothing in it can be deleted: its messages reappear after their
                        // visibility timeout.
                        tracing::error!(priority, error = %e, "azure-poll: unusable poll answer");
                        failed = failed.saturating_add(1);
                        last = e.to_string();
                        break;
                    }
                };
                if messages.is_empty() {
                    break;
                }
                for m in messages {
                    handled = handled.saturating_add(1);
                    if let Some(claim) = self.handle(queue, &q.signed_delete_url, &m).await {
                        return Ok(Some(claim));
                    }
                }
            }
        }
        if refused {
            self.urls = None;
        }
        if failed > 0 && failed == urls.queues.len() {
            return Err(PollError::Unreachable { failed, last });
        }
        Ok(None)
    }

    /// Decodes, claims and deletes one message; the claim when we got one.
    async fn handle(
        &self,
        queue: &QueueClient,
        delete_template: &Secret,
        m: &RawMessage,
    ) -> Option<TaskClaim> {
        let message_id = crate::untrusted_text::escape_line(
            &m.message_id
                .as_deref()
                .unwrap_or("<none>")
                .chars()
                .take(100)
                .collect::<String>(),
        );
        let claim = match azure::decode_message(m) {
            Err(e) => {
                tracing::warn!(%message_id, error = %e,
                    "azure-poll: malformed message, deleting it (nothing claimed)");
                None
            }
            Ok(TaskRef { task_id, run_id }) => {
                match queue.claim_task(&task_id, run_id, &self.request).await {
                    Ok(c) if c.status.task_id == task_id && c.run_id == run_id => Some(c),
                    Ok(c) => {
                        tracing::error!(%message_id, %task_id, run_id,
                            answered_task_id = %c.status.task_id, answered_run_id = c.run_id,
                            "azure-poll: claimTask answered for another run; not running it");
                        None
                    }
                    Err(e) if e.is_conflict() => {
                        tracing::info!(%message_id, %task_id, run_id,
                            "azure-poll: run already claimed, resolved or cancelled (409); \
                             deleting its message");
                        None
                    }
                    Err(e) => {
                        tracing::warn!(%message_id, %task_id, run_id, error = %e,
                            "azure-poll: claimTask failed; deleting its message");
                        None
                    }
                }
            }
        };
        self.delete(queue, delete_template, m, &message_id).await;
        claim
    }

    async fn delete(
        &self,
        queue: &QueueClient,
        delete_template: &Secret,
        m: &RawMessage,
        message_id: &str,
    ) {
        let Some((id, pop)) = m.delete_handle() else {
            tracing::warn!(%message_id,
                "azure-poll: message without MessageId or PopReceipt cannot be deleted");
            return;
        };
        let url = match azure::delete_url(delete_template, id, pop) {
            Ok(u) => u,
            Err(e) => {
                tracing::warn!(%message_id, error = %e, "azure-poll: cannot delete message");
                return;
            }
        };
        match queue.azure_delete(&url).await {
            Ok(()) => tracing::info!(%message_id, "azure-poll: message deleted"),
            Err(e) => {
                tracing::warn!(%message_id, error = %e, "azure-poll: deleting the message failed")
            }
        }
    }
}
