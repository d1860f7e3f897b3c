//! Building the chain: which tasks a task depends on, recursively.
//!
//! Pure and policy-free: it only reads task definitions through a lookup function, so the
//! evidence fetcher (which must discover the chain before it can download it) and the verifier
//! (which re-derives it from the evidence, never trusting a list of links handed to it) run the
//! same code. A task's links are:
//! - its decision task: `extra.parent` when set (action tasks), else `taskGroupId`, unless that
//!   is the task itself (a decision task roots its own group);
//! - every `taskId` in `payload.upstreamArtifacts`;
//! - every `taskId` in `extra.chainOfTrust.inputs`;
//! - the `taskId` of a `task-image` in `payload.image` (the image is consumed, so its builder is
//!   part of the chain even when `extra.chainOfTrust.inputs` forgets it).
//!
//! Links are de-duplicated by taskId; a link back to a task on the current path is a cycle and
//! fails; the depth is capped by [`super::Limits::max_depth`].

use super::Limits;
use super::error::{VerifyError, clip};
use crate::artifact_path::ArtifactPath;
use crate::ids::TaskId;
use crate::queue::types::TaskDefinition;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// Why one task depends on another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkRole {
    /// The linked task is this task's decision (or action) task.
    Decision,
    /// The task consumes these artifacts of the linked task (`payload.upstreamArtifacts`).
    UpstreamArtifacts {
        /// Artifact names as written in the payload (checked later).
        paths: Vec<String>,
        /// `optional: true`: a path absent from the upstream document is skipped, not fatal.
        optional: bool,
    },
    /// Named input (`extra.chainOfTrust.inputs.<name>`).
    Input {
        /// The input name (`docker-image`, ...).
        name: String,
    },
    /// The task runs a docker image built by the linked task.
    Image {
        /// The image artifact name.
        path: String,
    },
}

impl LinkRole {
    /// Short description for reports.
    pub fn describe(&self) -> String {
        match self {
            LinkRole::Decision => "decision task".into(),
            LinkRole::UpstreamArtifacts { paths, .. } => {
                format!("upstreamArtifacts {}", clip(&paths.join(", ")))
            }
            LinkRole::Input { name } => format!("input {}", clip(name)),
            LinkRole::Image { path } => format!("docker image {}", clip(path)),
        }
    }
}

/// One edge of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    /// The task depended upon.
    pub to: TaskId,
    /// Why.
    pub role: LinkRole,
}

/// One task of the chain.
#[derive(Debug, Clone)]
pub struct Node {
    /// The task.
    pub task_id: TaskId,
    /// Distance from the target (the target is 0).
    pub depth: usize,
    /// The raw definition (kept raw: compared as JSON, never re-serialised for hashing).
    pub raw: Value,
    /// A typed view, when the definition parses.
    pub def: Option<TaskDefinition>,
    /// The decision (or action) task above it, if any.
    pub parent: Option<TaskId>,
    /// Outgoing links.
    pub edges: Vec<Edge>,
    /// Problems found while reading this task's links.
    pub errors: Vec<VerifyError>,
}

impl Node {
    /// `provisionerId/workerType` from the typed view.
    pub fn task_queue_id(&self) -> Option<String> {
        self.def.as_ref().map(TaskDefinition::task_queue_id)
    }
}

/// The chain of a target task.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The task being verified.
    pub target: TaskId,
    /// Every task reached, the target included, by taskId.
    pub nodes: BTreeMap<TaskId, Node>,
    /// Order in which tasks were first reached (depth-first from the target).
    pub order: Vec<TaskId>,
    /// Chain-level problems (cycles, depth, size).
    pub errors: Vec<VerifyError>,
    /// Tasks that are linked but whose definition the lookup did not have.
    pub unresolved: BTreeSet<TaskId>,
    /// Decision task -> the tasks whose decision task it is, computed once by [`build`] so that
    /// per-link checks stay linear in the number of links.
    pub children: BTreeMap<TaskId, Vec<TaskId>>,
}

impl Chain {
    /// Tasks whose decision task is `parent`.
    pub fn children_of<'a>(&'a self, parent: &'a TaskId) -> impl Iterator<Item = &'a Node> + 'a {
        self.children
            .get(parent)
            .into_iter()
            .flatten()
            .filter_map(|id| self.nodes.get(id))
    }

    /// Whether some task of the chain has `task_id` as its decision task.
    pub fn is_parent(&self, task_id: &TaskId) -> bool {
        self.children.contains_key(task_id)
    }
}

/// Builds the chain of `target`, reading definitions through `lookup`.
pub fn build<'a>(
    target: &TaskId,
    lookup: &dyn Fn(&TaskId) -> Option<&'a Value>,
    limits: &Limits,
) -> Chain {
    let mut chain = Chain {
        target: target.clone(),
        nodes: BTreeMap::new(),
        order: Vec::new(),
        errors: Vec::new(),
        unresolved: BTreeSet::new(),
        children: BTreeMap::new(),
    };
    let mut path = Vec::new();
    visit(target, 0, lookup, limits, &mut chain, &mut path);
    for (id, node) in &chain.nodes {
        if let Some(parent) = &node.parent {
            chain
                .children
                .entry(parent.clone())
                .or_default()
                .push(id.clone());
        }
    }
    chain
}

fn visit<'a>(
    id: &TaskId,
    depth: usize,
    lookup: &dyn Fn(&TaskId) -> Option<&'a Value>,
    limits: &Limits,
    chain: &mut Chain,
    path: &mut Vec<TaskId>,
) {
    if path.contains(id) {
        let mut cycle = path.clone();
        cycle.push(id.clone());
        let cycle_err = VerifyError::Cycle { path: cycle };
        if !chain.errors.contains(&cycle_err) {
            chain.errors.push(cycle_err);
        }
        return;
    }
    if chain.nodes.contains_key(id) || chain.unresolved.contains(id) {
        return;
    }
    if depth > limits.max_depth {
        // One finding per task, however many paths reach it.
        if !chain
            .errors
            .iter()
            .any(|e| matches!(e, VerifyError::TooDeep { task_id, .. } if task_id == id))
        {
            chain.errors.push(VerifyError::TooDeep {
                task_id: id.clone(),
                depth,
                max: limits.max_depth,
            });
        }
        return;
    }
    if chain.nodes.len() >= limits.max_links {
        if !chain
            .errors
            .iter()
            .any(|e| matches!(e, VerifyError::TooManyLinks { .. }))
        {
            chain.errors.push(VerifyError::TooManyLinks {
                max: limits.max_links,
            });
        }
        return;
    }
    let Some(raw) = lookup(id) else {
        chain.unresolved.insert(id.clone());
        return;
    };
    let mut node = read_node(id, depth, raw, limits);
    let edges = node.edges.clone();
    // Insert before recursing so diamonds are visited once; the path catches cycles.
    chain.order.push(id.clone());
    node.depth = depth;
    chain.nodes.insert(id.clone(), node);
    path.push(id.clone());
    for edge in &edges {
        visit(&edge.to, depth + 1, lookup, limits, chain, path);
    }
    path.pop();
}

/// Reads one task's links (no recursion).
pub fn read_node(id: &TaskId, depth: usize, raw: &Value, limits: &Limits) -> Node {
    let mut errors = Vec::new();
    let def = match serde_json::from_value::<TaskDefinition>(raw.clone()) {
        Ok(d) => Some(d),
        Err(e) => {
            errors.push(VerifyError::InvalidTaskDefinition {
                task_id: id.clone(),
                detail: clip(&e.to_string()),
            });
            None
        }
    };
    let mut edges = Vec::new();
    let mut parent = None;
    if let Some(def) = &def {
        // The decision task: extra.parent (action tasks) else taskGroupId.
        let parent_id = match raw.pointer("/extra/parent") {
            None | Some(Value::Null) => Some(def.task_group_id.clone()),
            Some(v) => link_id(id, "extra.parent", v, &mut errors),
        };
        if let Some(p) = parent_id
            && &p != id
        {
            parent = Some(p.clone());
            edges.push(Edge {
                to: p,
                role: LinkRole::Decision,
            });
        }
        read_upstream_artifacts(id, raw, limits, &mut edges, &mut errors);
        read_inputs(id, raw, &mut edges, &mut errors);
        read_image(raw, &mut edges);
    }
    Node {
        task_id: id.clone(),
        depth,
        raw: raw.clone(),
        def,
        parent,
        edges,
        errors,
    }
}

fn link_id(task: &TaskId, field: &str, v: &Value, errors: &mut Vec<VerifyError>) -> Option<TaskId> {
    match v.as_str().map(TaskId::parse) {
        Some(Ok(t)) => Some(t),
        _ => {
            errors.push(VerifyError::InvalidLinkId {
                task_id: task.clone(),
                field: field.to_owned(),
                value: clip(&v.to_string()),
            });
            None
        }
    }
}

fn read_upstream_artifacts(
    id: &TaskId,
    raw: &Value,
    limits: &Limits,
    edges: &mut Vec<Edge>,
    errors: &mut Vec<VerifyError>,
) {
    let Some(ua) = raw.pointer("/payload/upstreamArtifacts") else {
        return;
    };
    let Some(entries) = ua.as_array() else {
        errors.push(VerifyError::InvalidTaskDefinition {
            task_id: id.clone(),
            detail: "payload.upstreamArtifacts is not an array".into(),
        });
        return;
    };
    let total: usize = entries
        .iter()
        .map(|e| e.get("paths").and_then(Value::as_array).map_or(0, Vec::len))
        .sum();
    if total > limits.max_upstream_artifacts {
        errors.push(VerifyError::TooManyUpstreamArtifacts {
            task_id: id.clone(),
            max: limits.max_upstream_artifacts,
        });
        return;
    }
    for (i, entry) in entries.iter().enumerate() {
        let field = format!("payload.upstreamArtifacts[{i}].taskId");
        let Some(upstream) = entry
            .get("taskId")
            .and_then(|v| link_id(id, &field, v, errors))
        else {
            if entry.get("taskId").is_none() {
                errors.push(VerifyError::InvalidTaskDefinition {
                    task_id: id.clone(),
                    detail: format!("{field} is missing"),
                });
            }
            continue;
        };
        let paths = match entry.get("paths").and_then(Value::as_array) {
            Some(p) if p.iter().all(Value::is_string) => p
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => {
                errors.push(VerifyError::InvalidTaskDefinition {
                    task_id: id.clone(),
                    detail: format!(
                        "payload.upstreamArtifacts[{i}].paths is not a list of strings"
                    ),
                });
                continue;
            }
        };
        let optional = entry
            .get("optional")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        edges.push(Edge {
            to: upstream,
            role: LinkRole::UpstreamArtifacts { paths, optional },
        });
    }
}

fn read_inputs(id: &TaskId, raw: &Value, edges: &mut Vec<Edge>, errors: &mut Vec<VerifyError>) {
    let Some(inputs) = raw.pointer("/extra/chainOfTrust/inputs") else {
        return;
    };
    let Some(map) = inputs.as_object() else {
        errors.push(VerifyError::InvalidTaskDefinition {
            task_id: id.clone(),
            detail: "extra.chainOfTrust.inputs is not an object".into(),
        });
        return;
    };
    for (name, v) in map {
        let field = format!("extra.chainOfTrust.inputs.{}", clip(name));
        if let Some(t) = link_id(id, &field, v, errors) {
            edges.push(Edge {
                to: t,
                role: LinkRole::Input { name: name.clone() },
            });
        }
    }
}

/// `payload.image` of a task, as the docker checks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSpec {
    /// No image (not a docker task).
    None,
    /// Built by a task of the chain.
    TaskImage {
        /// The docker-image task.
        task_id: TaskId,
        /// The image artifact.
        path: String,
    },
    /// Found through the index (not traceable).
    Indexed(String),
    /// A registry image, with the digest when pinned (`name@sha256:<hex>`).
    Registry {
        /// The image reference.
        reference: String,
        /// Whether it is pinned by digest.
        pinned: bool,
    },
    /// Something else.
    Invalid(String),
}

/// Reads `payload.image`.
pub fn image_spec(raw: &Value) -> ImageSpec {
    let Some(image) = raw.pointer("/payload/image") else {
        return ImageSpec::None;
    };
    match image {
        Value::String(s) => {
            let pinned = s
                .rsplit_once("@sha256:")
                .is_some_and(|(_, d)| d.len() == 64 && d.bytes().all(|b| b.is_ascii_hexdigit()));
            ImageSpec::Registry {
                reference: s.clone(),
                pinned,
            }
        }
        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
            Some("task-image") => {
                let task_id = o.get("taskId").and_then(Value::as_str).map(TaskId::parse);
                let path = o.get("path").and_then(Value::as_str);
                match (task_id, path) {
                    (Some(Ok(task_id)), Some(path)) => ImageSpec::TaskImage {
                        task_id,
                        path: path.to_owned(),
                    },
                    _ => ImageSpec::Invalid("task-image without a valid taskId and path".into()),
                }
            }
            Some("indexed-image") => ImageSpec::Indexed(clip(
                o.get("namespace").and_then(Value::as_str).unwrap_or(""),
            )),
            Some("docker-image") => match o.get("name").and_then(Value::as_str) {
                Some(name) => match image_spec(&serde_json::json!({"payload": {"image": name}})) {
                    ImageSpec::Registry { reference, pinned } => {
                        ImageSpec::Registry { reference, pinned }
                    }
                    other => other,
                },
                None => ImageSpec::Invalid("docker-image without a name".into()),
            },
            Some(other) => ImageSpec::Invalid(format!("unknown image type {}", clip(other))),
            None => ImageSpec::Invalid("image object without a type".into()),
        },
        other => ImageSpec::Invalid(format!("image is {}", clip(&other.to_string()))),
    }
}

fn read_image(raw: &Value, edges: &mut Vec<Edge>) {
    // A task naming itself as its image builder is caught by the cycle check.
    if let ImageSpec::TaskImage { task_id, path } = image_spec(raw) {
        edges.push(Edge {
            to: task_id,
            role: LinkRole::Image { path },
        });
    }
}

/// The artifacts of each task that the chain consumes, with their consumers: what the evidence
/// fetcher downloads and the verifier hashes. Unsafe names are left out here (the verifier
/// reports them).
pub fn consumed_artifacts(chain: &Chain) -> BTreeMap<TaskId, BTreeSet<ArtifactPath>> {
    let mut out: BTreeMap<TaskId, BTreeSet<ArtifactPath>> = BTreeMap::new();
    if let Some(target) = chain.nodes.get(&chain.target) {
        for edge in &target.edges {
            if let LinkRole::UpstreamArtifacts { paths, .. } = &edge.role {
                for p in paths {
                    if let Ok(p) = ArtifactPath::parse(p) {
                        out.entry(edge.to.clone()).or_default().insert(p);
                    }
                }
            }
        }
    }
    for id in chain.nodes.keys() {
        if chain.is_parent(id) {
            out.entry(id.clone()).or_default().insert(task_graph_path());
        }
    }
    out
}

/// `public/task-graph.json`.
pub fn task_graph_path() -> ArtifactPath {
    ArtifactPath::parse(TASK_GRAPH).expect("a constant, valid artifact name")
}

/// The task graph artifact of decision and action tasks.
pub const TASK_GRAPH: &str = "public/task-graph.json";
/// The chain-of-trust document.
pub const COT_DOCUMENT: &str = "public/chain-of-trust.json";
