//! json-e with a budget: the renderer behind check 9 (`decision-rebuild`).
//!
//! Why a child process: a `.taskcluster.yml` is code the verifier runs. Taskcluster's `json-e`
//! crate has no step, time or memory budget, so a hostile template (`$map` over
//! `range(0, 1e9)`, nested expansions, deep recursion) could hang or exhaust the worker if it
//! ran in-process. [`Sandboxed`] runs the render in a fresh `chainlock` process
//! (`chainlock __render-json-e`) that first caps its own address space and CPU time
//! (`setrlimit`), with an empty environment, its input on stdin and its answer on stdout; the
//! parent kills it at the wall-clock deadline and reads at most `max_output_bytes`. Whatever
//! goes wrong (budget, crash, stack overflow) is a [`RenderError`], so the check fails closed.
//!
//! The child reads nothing but its stdin: no file, no network, no secret (the environment is
//! cleared, and the descriptors std and tokio open are close-on-exec, so it inherits only its
//! three standard streams). It runs with the worker's user: a resource bound, not a privilege
//! boundary.

use crate::verify::rebuild::{Render, RenderError};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Renders through `inner` and remembers the answers: rendering is a pure function of the
/// template and the context (`now` is fixed by the caller's `$let`), and in a release every
/// task of a graph rebuilds the same decision task, so a long-running worker starts the json-e
/// child once per decision task instead of once per task. Keyed by the sha256 of the exact
/// input (template and context as JSON), so a hit is the answer a fresh render would give;
/// only successful renders are kept, at most [`Memo::MAX_ENTRIES`] of them and
/// [`Memo::MAX_BYTES`] of rendered JSON in all, the oldest dropped first.
pub struct Memo<R> {
    inner: R,
    kept: std::sync::Mutex<MemoEntries>,
}

#[derive(Default)]
struct MemoEntries {
    /// Oldest first: (input hash, rendered value, its size as JSON).
    entries: std::collections::VecDeque<([u8; 32], Value, usize)>,
    bytes: usize,
}

impl<R> Memo<R> {
    /// Most renders remembered.
    pub const MAX_ENTRIES: usize = 32;
    /// Most rendered JSON remembered, in bytes.
    pub const MAX_BYTES: usize = 16 * 1024 * 1024;

    /// Remembers what `inner` renders.
    pub fn new(inner: R) -> Memo<R> {
        Memo {
            inner,
            kept: std::sync::Mutex::new(MemoEntries::default()),
        }
    }
}

impl<R> std::fmt::Debug for Memo<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.kept.lock().map(|k| k.entries.len()).unwrap_or(0);
        f.debug_struct("Memo").field("entries", &n).finish()
    }
}

impl<R: Render> Render for Memo<R> {
    fn render(&self, template: &Value, context: &Value) -> Result<Value, RenderError> {
        use sha2::Digest as _;
        let input = serde_json::to_vec(&json!({"template": template, "context": context}))
            .map_err(|e| RenderError::Failed(e.to_string()))?;
        let key: [u8; 32] = sha2::Sha256::digest(&input).into();
        if let Ok(kept) = self.kept.lock()
            && let Some((_, value, _)) = kept.entries.iter().find(|(k, ..)| *k == key)
        {
            return Ok(value.clone());
        }
        let value = self.inner.render(template, context)?;
        let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
        if size <= Self::MAX_BYTES
            && let Ok(mut kept) = self.kept.lock()
        {
            while kept.entries.len() >= Self::MAX_ENTRIES
                || kept.bytes.saturating_add(size) > Self::MAX_BYTES
            {
                let Some((_, _, old)) = kept.entries.pop_front() else {
                    break;
                };
                kept.bytes = kept.bytes.saturating_sub(old);
            }
            kept.bytes = kept.bytes.saturating_add(size);
            kept.entries.push_back((key, value.clone(), size));
        }
        Ok(value)
    }
}

/// The hidden argument that makes `chainlock` a json-e child (handled first thing in `main`).
pub const CHILD_ARG: &str = "__render-json-e";

/// The bounds of one render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Largest template plus context, as JSON (default 32 MiB).
    pub max_input_bytes: usize,
    /// Largest rendered value, as JSON (default 32 MiB).
    pub max_output_bytes: usize,
    /// Wall-clock deadline (default 10 s).
    pub timeout: Duration,
    /// Address-space cap of the child (default 1 GiB).
    pub max_memory_bytes: u64,
    /// CPU-time cap of the child, seconds (default 10).
    pub max_cpu_seconds: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            max_input_bytes: 32 * 1024 * 1024,
            max_output_bytes: 32 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            max_memory_bytes: 1024 * 1024 * 1024,
            max_cpu_seconds: 10,
        }
    }
}

/// Renders in a budgeted child process of `exe` (the `chainlock` binary).
#[derive(Debug, Clone)]
pub struct Sandboxed {
    exe: PathBuf,
    budget: Budget,
}

impl Sandboxed {
    /// A renderer running `exe` (a `chainlock` binary) within `budget`.
    pub fn new(exe: PathBuf, budget: Budget) -> Sandboxed {
        Sandboxed { exe, budget }
    }

    /// A renderer running this very binary (the worker, `chainlock verify`).
    pub fn current() -> std::io::Result<Sandboxed> {
        Ok(Sandboxed::new(std::env::current_exe()?, Budget::default()))
    }
}

impl Render for Sandboxed {
    fn render(&self, template: &Value, context: &Value) -> Result<Value, RenderError> {
        let input = serde_json::to_vec(&json!({"template": template, "context": context}))
            .map_err(|e| RenderError::Failed(e.to_string()))?;
        if input.len() > self.budget.max_input_bytes {
            return Err(RenderError::Budget(format!(
                "template and context are {} bytes (limit {})",
                input.len(),
                self.budget.max_input_bytes
            )));
        }
        // The second process chainlock starts (after the script launcher): its own binary,
        // with an empty environment, to bound json-e. Reviewed: see the module docs.
        #[allow(clippy::disallowed_methods)]
        let mut child = Command::new(&self.exe)
            .arg(CHILD_ARG)
            .arg(self.budget.max_memory_bytes.to_string())
            .arg(self.budget.max_cpu_seconds.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                RenderError::Failed(format!("cannot start {}: {e}", self.exe.display()))
            })?;
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(RenderError::Failed("no pipes to the renderer".into()));
        };
        let writer = std::thread::spawn(move || {
            // A child that dies early closes the pipe: the error shows in its exit status.
            let _ = stdin.write_all(&input);
        });
        let max_out = self.budget.max_output_bytes;
        let reader = std::thread::spawn(move || {
            let mut out = Vec::new();
            let limit = u64::try_from(max_out).unwrap_or(u64::MAX).saturating_add(1);
            let r = stdout.take(limit).read_to_end(&mut out);
            (r, out)
        });
        let deadline = Instant::now() + self.budget.timeout;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(RenderError::Budget(format!(
                        "no answer within {} s",
                        self.budget.timeout.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(2)),
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(RenderError::Failed(e.to_string()));
                }
            }
        };
        let _ = writer.join();
        let (read, out) = reader
            .join()
            .map_err(|_| RenderError::Failed("the reader thread panicked".into()))?;
        if out.len() > max_out {
            return Err(RenderError::Budget(format!(
                "the rendered value is larger than {max_out} bytes"
            )));
        }
        let status = status?;
        if !status.success() {
            use std::os::unix::process::ExitStatusExt;
            return Err(RenderError::Budget(match status.signal() {
                Some(sig) => {
                    format!("the renderer was killed by signal {sig} (CPU, memory or stack budget)")
                }
                None => format!(
                    "the renderer exited with {} (memory budget or crash)",
                    status.code().unwrap_or(-1)
                ),
            }));
        }
        read.map_err(|e| RenderError::Failed(e.to_string()))?;
        let answer: Value = serde_json::from_slice(&out)
            .map_err(|e| RenderError::Failed(format!("unreadable answer: {e}")))?;
        match (
            answer.get("ok"),
            answer.get("error").and_then(Value::as_str),
        ) {
            (Some(v), None) => Ok(v.clone()),
            (_, Some(e)) => Err(RenderError::Template(crate::untrusted_text::escape_line(e))),
            _ => Err(RenderError::Failed("malformed answer".into())),
        }
    }
}

/// The child: cap memory and CPU, read `{"template", "context"}` from stdin, write
/// `{"ok": value}` or `{"error": message}` to stdout. Returns the exit code.
pub fn child_main(args: &[std::ffi::OsString]) -> i32 {
    use nix::sys::resource::{Resource, setrlimit};
    let num = |i: usize| -> Option<u64> { args.get(i)?.to_str()?.parse().ok() };
    let (Some(mem), Some(cpu)) = (num(2), num(3)) else {
        return 2;
    };
    if setrlimit(Resource::RLIMIT_AS, mem, mem).is_err()
        || setrlimit(Resource::RLIMIT_CPU, cpu, cpu).is_err()
    {
        return 3;
    }
    let mut input = Vec::new();
    if std::io::stdin().lock().read_to_end(&mut input).is_err() {
        return 4;
    }
    let answer = match serde_json::from_slice::<Value>(&input) {
        Ok(v) => {
            let template = v.get("template").cloned().unwrap_or(Value::Null);
            let context = v.get("context").cloned().unwrap_or_else(|| json!({}));
            match json_e::render(&template, &context) {
                Ok(out) => json!({"ok": out}),
                Err(e) => json!({"error": e.to_string()}),
            }
        }
        Err(e) => json!({"error": format!("bad input: {e}")}),
    };
    let mut stdout = std::io::stdout().lock();
    if serde_json::to_writer(&mut stdout, &answer).is_err() || stdout.flush().is_err() {
        return 5;
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Renders `{"n": <context.n>}` and counts its calls; fails for `n` = 0.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Render for Counting {
        fn render(&self, _: &Value, context: &Value) -> Result<Value, RenderError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            match context["n"].as_u64() {
                Some(0) | None => Err(RenderError::Failed("no".into())),
                Some(n) => Ok(json!({ "n": n, "pad": "x".repeat(1000) })),
            }
        }
    }

    #[test]
    fn the_same_input_renders_once_and_failures_are_not_kept() {
        let memo = Memo::new(Counting::default());
        let t = json!({"$eval": "n"});
        let one = memo.render(&t, &json!({"n": 1})).unwrap();
        assert_eq!(memo.render(&t, &json!({"n": 1})).unwrap(), one);
        assert_eq!(memo.inner.0.load(Ordering::SeqCst), 1);
        // Another context, or another template, is another render.
        assert_eq!(memo.render(&t, &json!({"n": 2})).unwrap()["n"], 2);
        memo.render(&json!({"$eval": "n + 0"}), &json!({"n": 1}))
            .unwrap();
        assert_eq!(memo.inner.0.load(Ordering::SeqCst), 3);
        // A failure is rendered again each time.
        assert!(memo.render(&t, &json!({"n": 0})).is_err());
        assert!(memo.render(&t, &json!({"n": 0})).is_err());
        assert_eq!(memo.inner.0.load(Ordering::SeqCst), 5);
    }

    #[test]
    fn the_oldest_answers_go_first_past_the_bound() {
        let memo = Memo::new(Counting::default());
        let t = json!({});
        let total = Memo::<Counting>::MAX_ENTRIES + 5;
        for n in 1..=total {
            memo.render(&t, &json!({ "n": n })).unwrap();
        }
        let kept = memo.kept.lock().unwrap();
        assert_eq!(kept.entries.len(), Memo::<Counting>::MAX_ENTRIES);
        assert!(kept.bytes <= Memo::<Counting>::MAX_BYTES);
        drop(kept);
        // The newest is still kept; the first was dropped and renders again.
        let calls = memo.inner.0.load(Ordering::SeqCst);
        memo.render(&t, &json!({ "n": total })).unwrap();
        assert_eq!(memo.inner.0.load(Ordering::SeqCst), calls);
        memo.render(&t, &json!({"n": 1})).unwrap();
        assert_eq!(memo.inner.0.load(Ordering::SeqCst), calls + 1);
    }
}
