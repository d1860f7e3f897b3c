//! Check 8: where each link comes from, and whether that may use restricted scopes.
//!
//! A task's repository is read from `metadata.source` and its `*_HEAD_REPOSITORY` variables,
//! which must agree (same host, path prefix on component boundaries). Every link must come from
//! the same repository as its decision task. A restricted scope (policy) is allowed only when
//! every link of the chain comes from a repository (and branch) the rule names, and no link is
//! a pull request or try-like. "Try-like" and "pull request" are policy data, not hard-coded
//! names; the reference's substring test for `try` is deliberately not reproduced.

use super::error::{VerifyError, clip};
use crate::chain_policy::{ChainPolicy, RestrictedScope, pattern_matches};
use crate::ids::TaskId;
use serde_json::Value;

/// What a task says about its origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SourceInfo {
    /// `metadata.source`, normalised.
    pub source: Option<String>,
    /// Repository URL, normalised (from `*_HEAD_REPOSITORY`, else the policy repository that
    /// contains `metadata.source`); `None` when unknown.
    pub repository: Option<String>,
    /// Branch from `*_HEAD_BRANCH`, else a non-revision `*_HEAD_REF`.
    pub branch: Option<String>,
    /// Why the task is untrusted (pull request, try-like), if it is.
    pub untrusted: Option<String>,
}

/// Hosts whose repository paths are case-insensitive (`github.com/Org/Repo` is
/// `github.com/org/repo`): their paths are lower-cased too.
const CASE_INSENSITIVE_PATH_HOSTS: [&str; 2] = ["github.com", "www.github.com"];

/// Normalises a repository or source URL for comparison: `git@host:path` and `ssh://` become
/// `https://`, the scheme and host are lower-cased (they are case-insensitive everywhere), the
/// path too on [`CASE_INSENSITIVE_PATH_HOSTS`], `.git` and trailing `/` are dropped. Paths on
/// other hosts keep their case (`hg.mozilla.org` paths are case-sensitive).
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let strip = |prefix: &str| {
        url.get(..prefix.len())
            .filter(|head| head.eq_ignore_ascii_case(prefix))
            .and_then(|_| url.get(prefix.len()..))
    };
    let rest = if let Some(r) = strip("git@") {
        r.replacen(':', "/", 1)
    } else if let Some(r) = strip("ssh://") {
        r.strip_prefix("git@").unwrap_or(r).to_owned()
    } else if let Some(r) = strip("https://") {
        r.to_owned()
    } else if let Some(r) = strip("http://") {
        r.to_owned()
    } else {
        return url.to_owned();
    };
    let (host, path) = rest.split_once('/').unwrap_or((&rest, ""));
    let host = host.to_ascii_lowercase();
    let path = path.trim_end_matches('/');
    let path = path
        .get(path.len().saturating_sub(4)..)
        .filter(|ext| ext.eq_ignore_ascii_case(".git"))
        .and_then(|_| path.len().checked_sub(4))
        .and_then(|n| path.get(..n))
        .unwrap_or(path);
    let path = if CASE_INSENSITIVE_PATH_HOSTS.contains(&host.as_str()) {
        path.to_ascii_lowercase()
    } else {
        path.to_owned()
    };
    if path.is_empty() {
        format!("https://{host}")
    } else {
        format!("https://{host}/{path}")
    }
}

/// Whether `url` is `base` or below it, on path-component boundaries (both normalised).
///
/// Fails closed on dot segments, literal or percent-encoded: `…/product/../product-try` must
/// never count as inside `…/product`, whatever a server would make of it.
pub fn url_within(base: &str, url: &str) -> bool {
    if has_dot_segment(base) || has_dot_segment(url) {
        return false;
    }
    url == base
        || url
            .strip_prefix(base)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn has_dot_segment(url: &str) -> bool {
    let path = url.split_once("://").map_or(url, |(_, rest)| rest);
    path.split('/').any(|seg| {
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

fn env(raw: &Value) -> impl Iterator<Item = (&String, &str)> {
    raw.pointer("/payload/env")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v)))
}

fn is_revision(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Reads a task's origin; reports `*_HEAD_REPOSITORY` values that disagree with the source.
pub fn source_info(
    task_id: &TaskId,
    raw: &Value,
    policy: &ChainPolicy,
) -> (SourceInfo, Vec<VerifyError>) {
    let mut errors = Vec::new();
    let source = raw
        .pointer("/metadata/source")
        .and_then(Value::as_str)
        .map(normalize_url);
    let mut repository: Option<String> = None;
    let mut branch = None;
    let mut pull_request = false;
    for (key, value) in env(raw) {
        if key.ends_with("_HEAD_REPOSITORY") {
            let repo = normalize_url(value);
            let agrees = source.as_deref().is_some_and(|s| url_within(&repo, s));
            if !agrees {
                errors.push(VerifyError::RepositoryEnvMismatch {
                    task_id: task_id.clone(),
                    variable: clip(key),
                    value: clip(value),
                    source_url: clip(source.as_deref().unwrap_or("absent")),
                });
            }
            // Several variables (a product and its sub-repository) all agree with the source;
            // the longest is the most specific.
            if repository.as_ref().is_none_or(|r| repo.len() > r.len()) {
                repository = Some(repo);
            }
        } else if key.ends_with("_HEAD_BRANCH")
            || (key.ends_with("_HEAD_REF") && branch.is_none() && !is_revision(value))
        {
            // *_HEAD_BRANCH wins over a *_HEAD_REF that names a branch rather than a revision.
            branch = Some(value.trim_start_matches("refs/heads/").to_owned());
        } else if key.ends_with("_PULL_REQUEST_NUMBER") && !value.is_empty() {
            pull_request = true;
        }
    }
    if repository.is_none()
        && let Some(src) = &source
    {
        repository = policy
            .repositories
            .iter()
            .map(|r| normalize_url(&r.url))
            .chain(
                policy
                    .untrusted
                    .repositories
                    .iter()
                    .map(|u| normalize_url(u)),
            )
            .filter(|base| url_within(base, src))
            .max_by_key(String::len);
    }

    let tasks_for = raw.pointer("/extra/tasks_for").and_then(Value::as_str);
    let scheduler = raw.get("schedulerId").and_then(Value::as_str);
    let untrusted = if let Some(tf) = tasks_for.filter(|tf| {
        policy
            .untrusted
            .pull_request_tasks_for
            .iter()
            .any(|p| p == tf)
    }) {
        Some(format!("pull request (tasks_for {})", clip(tf)))
    } else if pull_request {
        Some("pull request (*_PULL_REQUEST_NUMBER is set)".to_owned())
    } else if let Some(s) =
        scheduler.filter(|s| policy.untrusted.scheduler_ids.iter().any(|u| u == s))
    {
        Some(format!("untrusted scheduler id {}", clip(s)))
    } else {
        policy
            .untrusted
            .repositories
            .iter()
            .map(|u| normalize_url(u))
            .find(|u| {
                repository.as_deref().is_some_and(|r| url_within(u, r))
                    || source.as_deref().is_some_and(|s| url_within(u, s))
            })
            .map(|u| format!("try-like repository {}", clip(&u)))
    };
    (
        SourceInfo {
            source,
            repository,
            branch,
            untrusted,
        },
        errors,
    )
}

/// Checks a restricted scope's rule against one link. `is_root` is true for decision and action
/// links, whose branch must be known when the rule restricts branches.
pub fn check_restricted(
    scope: &str,
    rule: &RestrictedScope,
    task_id: &TaskId,
    info: &SourceInfo,
    is_root: bool,
    policy: &ChainPolicy,
) -> Vec<VerifyError> {
    let mut errors = Vec::new();
    if let Some(why) = &info.untrusted {
        errors.push(VerifyError::RestrictedScopeUntrusted {
            scope: scope.to_owned(),
            task_id: task_id.clone(),
            why: why.clone(),
        });
    }
    let allowed = rule
        .repositories
        .iter()
        .filter_map(|alias| policy.repository(alias))
        .find(|r| info.repository.as_deref() == Some(normalize_url(&r.url).as_str()));
    let Some(repo) = allowed else {
        errors.push(VerifyError::RestrictedScopeRepository {
            scope: scope.to_owned(),
            task_id: task_id.clone(),
            repository: info.repository.clone().unwrap_or_else(|| "unknown".into()),
        });
        return errors;
    };
    if let Some(branches) = rule.branches.as_ref().or(repo.branches.as_ref()) {
        let ok = match &info.branch {
            Some(b) => branches.iter().any(|p| pattern_matches(p, b)),
            None => !is_root,
        };
        if !ok {
            errors.push(VerifyError::RestrictedScopeBranch {
                scope: scope.to_owned(),
                task_id: task_id.clone(),
                branch: info.branch.clone().unwrap_or_else(|| "unknown".into()),
            });
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            normalize_url("git@github.com:Org/Repo.git"),
            "https://github.com/org/repo"
        );
        // Scheme and host case never matter; GitHub paths are case-insensitive, others not.
        for url in [
            "HTTPS://GITHUB.COM/EXAMPLE/PRODUCT-TRY",
            "https://github.com/Example/Product-Try.GIT",
            "Git@GitHub.com:example/product-try",
        ] {
            assert_eq!(
                normalize_url(url),
                "https://github.com/example/product-try",
                "{url}"
            );
        }
        assert_eq!(
            normalize_url("HTTPS://HG.MOZILLA.ORG/Try/"),
            "https://hg.mozilla.org/Try"
        );
        assert_eq!(
            normalize_url("https://GitHub.com/org/repo/"),
            "https://github.com/org/repo"
        );
        assert!(url_within(
            "https://github.com/org/repo",
            "https://github.com/org/repo/raw/abc/.taskcluster.yml"
        ));
        assert!(!url_within(
            "https://github.com/org/repo",
            "https://github.com/org/repo-try/raw/abc/.taskcluster.yml"
        ));
        // Dot segments never stay "inside" a repository, literal or percent-encoded.
        for evil in [
            "https://github.com/org/repo/../repo-try",
            "https://github.com/org/repo/./x",
            "https://github.com/org/repo/%2e%2e/repo-try",
            "https://github.com/org/repo/%2E./repo-try",
        ] {
            assert!(!url_within("https://github.com/org/repo", evil), "{evil}");
        }
    }
}
