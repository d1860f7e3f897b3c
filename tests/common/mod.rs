//! Helpers shared by the integration-test binaries: an in-process dev queue on loopback, a
//! queue client for one of its clients, and the real binary. Each test binary uses a subset.
#![allow(dead_code)]

pub mod worker_env;

use chainlock::devqueue::{self, Client, DevQueueConfig, DevQueueHandle};
use chainlock::queue::{Credentials, QueueClient, RetryPolicy};
use chainlock::secret::Secret;
use std::path::Path;
use std::time::Duration;

/// A client with every scope.
pub fn admin_client(token: &str) -> Client {
    Client {
        client_id: "admin".into(),
        access_token: Secret::new(token),
        scopes: vec!["*".into()],
    }
}

/// Starts a dev queue on a free loopback port, state in `dir`; `claimWork` long polls last
/// `claim_work_timeout` so idle workers in tests come back quickly.
pub async fn start_dev_queue(
    dir: &Path,
    clients: Vec<Client>,
    claim_timeout: Option<Duration>,
    claim_work_timeout: Duration,
) -> DevQueueHandle {
    let mut cfg = DevQueueConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_owned(), clients);
    if let Some(t) = claim_timeout {
        cfg.claim_timeout = t;
    }
    cfg.claim_work_timeout = claim_work_timeout;
    devqueue::start(cfg).await.unwrap()
}

/// A client of `h` with the permanent credentials `client_id` / `token` and fast test retries.
pub fn client_for(h: &DevQueueHandle, client_id: &str, token: &str) -> QueueClient {
    QueueClient::new(
        h.root_url(),
        Some(Credentials::permanent(client_id, Secret::new(token))),
        RetryPolicy::fast_for_tests(),
    )
    .unwrap()
}

/// Runs the real `chainlock` binary with `args`, without Taskcluster credentials or root URL
/// from the environment; (exit code, stdout, stderr).
#[allow(clippy::disallowed_methods)] // tests run the real binary
pub fn run_cli<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_chainlock"))
        .args(args)
        .env_remove("TASKCLUSTER_CLIENT_ID")
        .env_remove("TASKCLUSTER_ACCESS_TOKEN")
        .env_remove("TASKCLUSTER_ROOT_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback TCP proxy in front of a server that can be taken down and brought back: while
/// down it closes every open connection and every new one at once (the client sees a transport
/// error), as a network outage or a restarting load balancer would.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    cut: tokio::sync::watch::Sender<u64>,
}

impl FaultProxy {
    /// Starts forwarding to `target` (an `http://host:port` root URL).
    pub async fn start(target: &str) -> FaultProxy {
        use std::sync::atomic::Ordering;
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (accept_down, accept_cut) = (down.clone(), cut.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if accept_down.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let target = target.clone();
                let mut cut = accept_cut.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        FaultProxy { url, down, cut }
    }

    /// Takes the server down (closing every connection) or brings it back.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            self.cut.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}
