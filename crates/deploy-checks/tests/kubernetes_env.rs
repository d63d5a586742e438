//! deploy/kubernetes/ against the binaries' command lines.
//!
//! Every container that runs the firstclick image (the Deployment's workers, the set-up Jobs)
//! may only pass environment variables that its binary reads, along the subcommands its
//! command names (`streaming run`): its `env` entries and every key of a ConfigMap it takes
//! with `envFrom`. A variable that exists only for Kubernetes to expand `$(NAME)` in the
//! command line is allowed. Its `--flags` must be flags of that command, each `$(NAME)` must be
//! defined in the container, each ConfigMap key it refers to must exist, and secrets come in by
//! name (`secretKeyRef`, never a whole Secret through `envFrom`), so that nothing reaches a
//! binary unchecked. `scripts/check-deploy kubernetes` runs these tests after validating the
//! manifests against the Kubernetes schemas (kubernetes-validate).
//!
//! The scale-out settings of issue 9 (`common::SCALE_OUT`) are being added to the binaries; until
//! they are, `the_scale_out_settings_are_read_by_the_binaries` fails and names them, while
//! the other tests hold every other name to the binaries.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_norway::{Mapping, Value};

use common::{
    binaries, command_line, is_scale_out_problem, read_repo_file, repo_root, scale_out_note, words,
    SCALE_OUT,
};

/// The manifests' directory, from the top of the repository.
const DIR: &str = "deploy/kubernetes";

/// The workloads the manifests must have (kind, name, command path), so that a renamed object
/// or command cannot make the checks pass by checking nothing.
const EXPECTED_WORKLOADS: &[(&str, &str, &str)] = &[
    ("Deployment", "firstclick-streaming", "streaming run"),
    ("Job", "firstclick-create-bq-table", "create-bq-table"),
    ("Job", "firstclick-create-pubsub", "create-pubsub"),
];

/// Every object of a multi-document YAML text (empty documents skipped).
fn documents(file: &str, text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{file} is not valid YAML: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The `resources:` of deploy/kubernetes/kustomization.yaml.
fn kustomization_resources() -> Vec<String> {
    let text = read_repo_file(&format!("{DIR}/kustomization.yaml"));
    let doc: Value = serde_norway::from_str(&text).expect("kustomization.yaml is valid YAML");
    doc.get("resources")
        .and_then(Value::as_sequence)
        .expect("kustomization.yaml lists `resources`")
        .iter()
        .map(|r| r.as_str().expect("resources are file names").to_string())
        .collect()
}

/// The objects of the manifests kustomization.yaml lists, each with its file name.
fn real_manifests() -> Vec<(String, Value)> {
    kustomization_resources()
        .into_iter()
        .flat_map(|file| {
            let text = read_repo_file(&format!("{DIR}/{file}"));
            documents(&file, &text)
                .into_iter()
                .map(move |v| (file.clone(), v))
        })
        .collect()
}

fn manifests_from(file: &str, text: &str) -> Vec<(String, Value)> {
    documents(file, text)
        .into_iter()
        .map(|v| (file.to_string(), v))
        .collect()
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    value_at(v, path).and_then(Value::as_str)
}

fn value_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| v.get(*key))
}

fn seq(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_sequence).map_or(&[], Vec::as_slice)
}

/// `Kind/name` of an object.
fn object_id(v: &Value) -> String {
    format!(
        "{}/{}",
        str_at(v, &["kind"]).unwrap_or("?"),
        str_at(v, &["metadata", "name"]).unwrap_or("?")
    )
}

/// The ConfigMaps by name: key -> value.
fn config_maps(objects: &[(String, Value)]) -> BTreeMap<String, BTreeMap<String, String>> {
    objects
        .iter()
        .filter(|(_, v)| str_at(v, &["kind"]) == Some("ConfigMap"))
        .map(|(file, v)| {
            let name = str_at(v, &["metadata", "name"])
                .unwrap_or_else(|| panic!("{file}: a ConfigMap without a name"))
                .to_string();
            let data = match v.get("data") {
                Some(Value::Mapping(m)) => m
                    .iter()
                    .map(|(k, v)| {
                        let k = k.as_str().expect("ConfigMap keys are strings").to_string();
                        let v = v.as_str().unwrap_or_else(|| {
                            panic!("{file}: ConfigMap {name}: {k} must be a string (quote it)")
                        });
                        (k, v.to_string())
                    })
                    .collect(),
                _ => BTreeMap::new(),
            };
            (name, data)
        })
        .collect()
}

/// The pod template's spec of a workload, if the object is one.
fn pod_spec(v: &Value) -> Option<&Mapping> {
    let path: &[&str] = match str_at(v, &["kind"])? {
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            &["spec", "template", "spec"]
        }
        "CronJob" => &["spec", "jobTemplate", "spec", "template", "spec"],
        "Pod" => &["spec"],
        _ => return None,
    };
    value_at(v, path)?.as_mapping()
}

/// Whether `image` is the firstclick image (`firstclick:TAG` or `REGISTRY/.../firstclick:TAG`).
fn is_our_image(image: &str) -> bool {
    let name = image.split(['@', ':']).next().unwrap_or(image);
    name == "firstclick" || name.ends_with("/firstclick")
}

/// `$(NAME)` references in a word (`$$(NAME)` is a literal).
fn references(word: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = word;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
        } else if let Some(after) = rest.strip_prefix('(') {
            if let Some(end) = after.find(')') {
                names.insert(after[..end].to_string());
            }
            rest = after;
        }
    }
    names
}

/// One container running a firstclick binary.
#[derive(Debug)]
struct Container {
    /// `Deployment/firstclick-streaming`.
    workload: String,
    /// `streaming run`.
    command_path: String,
    /// Every variable it gets, from `env` and `envFrom`.
    env: BTreeSet<String>,
}

/// Checks every firstclick container of `objects` against `binaries`. Returns the containers
/// found and one message per problem.
fn check_manifests(
    objects: &[(String, Value)],
    binaries: &BTreeMap<String, clap::Command>,
) -> (Vec<Container>, Vec<String>) {
    let maps = config_maps(objects);
    let mut found = Vec::new();
    let mut problems = Vec::new();
    for (file, object) in objects {
        let Some(spec) = pod_spec(object) else {
            continue;
        };
        let workload = object_id(object);
        let containers = seq(spec.get("initContainers"))
            .iter()
            .chain(seq(spec.get("containers")));
        for c in containers {
            let cname = str_at(c, &["name"]).unwrap_or("?");
            let at = format!("{file}: {workload}, container `{cname}`");
            if !str_at(c, &["image"]).is_some_and(is_our_image) {
                continue;
            }
            let argv: Vec<String> = words(c.get("command"))
                .into_iter()
                .chain(words(c.get("args")))
                .collect();
            let Some((program, args)) = argv.split_first() else {
                problems.push(format!(
                    "{at} runs the firstclick image without a command: name the binary ({}) \
                     in `command`",
                    binaries.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            let Some(cmd) = binaries.get(program.as_str()) else {
                problems.push(format!(
                    "{at} runs `{program}`, which is not one of the binaries ({})",
                    binaries.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
                continue;
            };
            let line = command_line(cmd, args);

            for word in args {
                let Some(flag) = word.strip_prefix("--") else {
                    continue;
                };
                let flag = flag.split('=').next().unwrap_or(flag);
                if !flag.is_empty() && !line.long_flags.contains(flag) {
                    problems.push(format!(
                        "{at} passes --{flag}, which `{}` does not take{}",
                        line.path,
                        scale_out_note(&format!("--{flag}"))
                    ));
                }
            }

            // The container's variables, and the ConfigMap keys they come from.
            let mut env = BTreeSet::new();
            for from in seq(c.get("envFrom")) {
                if let Some(name) = str_at(from, &["configMapRef", "name"]) {
                    let prefix = str_at(from, &["prefix"]).unwrap_or("");
                    match maps.get(name) {
                        Some(data) => env.extend(data.keys().map(|k| format!("{prefix}{k}"))),
                        None => problems.push(format!(
                            "{at} takes the ConfigMap {name}, which no manifest defines"
                        )),
                    }
                }
                if from.get("secretRef").is_some() {
                    problems.push(format!(
                        "{at} takes a whole Secret through envFrom: its keys would reach \
                         `{program}` unchecked; name each variable with secretKeyRef instead"
                    ));
                }
            }
            for var in seq(c.get("env")) {
                let name = str_at(var, &["name"])
                    .unwrap_or_else(|| panic!("{at}: an env entry without a name"))
                    .to_string();
                if let Some(map) = str_at(var, &["valueFrom", "configMapKeyRef", "name"]) {
                    let key = str_at(var, &["valueFrom", "configMapKeyRef", "key"]).unwrap_or("");
                    let optional = value_at(var, &["valueFrom", "configMapKeyRef", "optional"])
                        .and_then(Value::as_bool)
                        .unwrap_or(false);
                    let exists = maps.get(map).is_some_and(|data| data.contains_key(key));
                    if !exists && !optional {
                        problems.push(format!(
                            "{at}: {name} comes from key {key} of the ConfigMap {map}, which has \
                             no such key"
                        ));
                    }
                }
                env.insert(name);
            }

            let referenced: BTreeSet<String> = argv.iter().flat_map(|w| references(w)).collect();
            for name in &referenced {
                if !env.contains(name) {
                    problems.push(format!(
                        "{at} refers to $({name}) in its command line, but defines no {name}: \
                         Kubernetes would pass the text `$({name})`"
                    ));
                }
            }
            for name in &env {
                if !line.env.contains(name) && !referenced.contains(name) {
                    let note = scale_out_note(name);
                    let hint = if note.is_empty() {
                        let known = line.env.iter().cloned().collect::<Vec<_>>().join(" ");
                        format!("; the names it reads: {known}")
                    } else {
                        note
                    };
                    problems.push(format!(
                        "{at} passes {name}, which `{}` does not read{hint}",
                        line.path
                    ));
                }
            }
            found.push(Container {
                workload: workload.clone(),
                command_path: line.path,
                env,
            });
        }
    }
    (found, problems)
}

#[test]
fn kustomization_lists_every_manifest() {
    let listed: BTreeSet<String> = kustomization_resources().into_iter().collect();
    let dir = repo_root().join(DIR);
    let present: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| (n.ends_with(".yaml") || n.ends_with(".yml")) && n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, present,
        "{DIR}/kustomization.yaml `resources` and the manifests in {DIR}"
    );
}

#[test]
fn manifests_pass_only_variables_and_flags_the_binaries_read() {
    let (containers, problems) = check_manifests(&real_manifests(), &binaries());
    let problems: Vec<_> = problems
        .into_iter()
        .filter(|p| !is_scale_out_problem(p))
        .collect();
    assert!(problems.is_empty(), "{DIR}:\n{}", problems.join("\n"));
    let found: BTreeSet<(String, String)> = containers
        .iter()
        .map(|c| (c.workload.clone(), c.command_path.clone()))
        .collect();
    let expected: BTreeSet<(String, String)> = EXPECTED_WORKLOADS
        .iter()
        .map(|(kind, name, path)| (format!("{kind}/{name}"), path.to_string()))
        .collect();
    assert_eq!(found, expected, "workloads and the binaries they run");
    for c in &containers {
        assert!(c.env.len() >= 5, "`{}` passes only {:?}", c.workload, c.env);
    }
}

/// Red until issue 9's scale-out gives the binaries these settings (the message names them).
#[test]
fn the_scale_out_settings_are_read_by_the_binaries() {
    let (_, problems) = check_manifests(&real_manifests(), &binaries());
    let waiting: Vec<_> = problems
        .into_iter()
        .filter(|p| is_scale_out_problem(p))
        .collect();
    assert!(
        waiting.is_empty(),
        "{DIR} uses issue 9's scale-out settings ({}), which the binaries do not read yet:\n{}",
        SCALE_OUT.join(" "),
        waiting.join("\n")
    );
}

/// The proof that the checks bite.
#[test]
fn misspelled_names_unknown_flags_and_whole_secrets_are_reported() {
    let snippet = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data:
  PROJECT_ID: p
  BQ_DATSET: typo
---
apiVersion: batch/v1
kind: Job
metadata: {name: j}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
        - name: a
          image: registry.example/team/firstclick:1.0
          command: ["create-bq-table", "--bq-tabel=x", "$(UNSET)"]
          envFrom:
            - configMapRef: {name: cfg}
            - secretRef: {name: s}
          env:
            - name: BQ_TABLE
              valueFrom:
                configMapKeyRef: {name: cfg, key: BQ_TABLE}
        - name: b
          image: redis:7.4-alpine
          env:
            - {name: ANYTHING, value: goes}
        - name: c
          image: firstclick:latest
"#;
    let (containers, problems) = check_manifests(&manifests_from("x.yaml", snippet), &binaries());
    assert_eq!(containers.len(), 1, "{containers:?}");
    let expect = [
        "passes --bq-tabel, which `create-bq-table` does not take",
        "takes a whole Secret through envFrom",
        "BQ_TABLE comes from key BQ_TABLE of the ConfigMap cfg, which has no such key",
        "refers to $(UNSET)",
        "passes BQ_DATSET, which `create-bq-table` does not read",
        "container `c` runs the firstclick image without a command",
    ];
    assert_eq!(problems.len(), expect.len(), "{problems:#?}");
    for e in expect {
        assert!(
            problems.iter().any(|p| p.contains(e)),
            "no problem says {e:?}: {problems:#?}"
        );
    }
    assert!(problems.iter().all(|p| !is_scale_out_problem(p)));
}

/// Subcommands count, `$(NAME)` variables are allowed, and the scale-out names are told apart.
#[test]
fn subcommands_references_and_scale_out_names() {
    let snippet = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: d}
spec:
  template:
    spec:
      containers:
        - name: s
          image: firstclick:latest
          command: ["streaming", "run", "--lookback-secs", "$(LOOK)"]
          env:
            - {name: LOOK, value: "60"}
            - {name: DEMO_CLICKS, value: "10"}
            - {name: LEASE_TTL_SECS_TYPO, value: "1"}
            - {name: OUT_OF_ORDERNESS_SECS, value: "5"}
"#;
    let (containers, problems) = check_manifests(&manifests_from("d.yaml", snippet), &binaries());
    assert_eq!(containers[0].command_path, "streaming run");
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems.iter().any(|p| p.contains("DEMO_CLICKS")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("LEASE_TTL_SECS_TYPO")),
        "{problems:#?}"
    );
    assert!(
        problems.iter().all(|p| !is_scale_out_problem(p)),
        "{problems:#?}"
    );
    assert!(is_scale_out_problem(&scale_out_note("WORKER_ID")));
    assert!(scale_out_note("WORKER").is_empty());
    assert_eq!(
        references("a$(X)b$$(Y)$(Z)"),
        BTreeSet::from(["X".to_string(), "Z".to_string()])
    );
}

fn secs(map: &BTreeMap<String, String>, key: &str) -> i64 {
    map.get(key)
        .unwrap_or_else(|| panic!("configmap.yaml sets no {key}"))
        .parse()
        .unwrap_or_else(|e| panic!("configmap.yaml: {key}: {e}"))
}

fn int(v: &Value, path: &[&str]) -> i64 {
    value_at(v, path)
        .and_then(Value::as_i64)
        .unwrap_or_else(|| panic!("no integer at {}", path.join(".")))
}

/// The numbers that must agree between the ConfigMap and the Deployment and Jobs: the port,
/// the grace periods, the start-up time, the Jobs' failure policy.
#[test]
fn ports_probes_and_grace_periods_agree_with_the_settings() {
    let objects = real_manifests();
    let maps = config_maps(&objects);
    let cfg = &maps["firstclick-config"];
    let find = |id: &str| {
        objects
            .iter()
            .map(|(_, v)| v)
            .find(|v| object_id(v) == id)
            .unwrap_or_else(|| panic!("no {id}"))
    };
    let deployment = find("Deployment/firstclick-streaming");
    let pod = value_at(deployment, &["spec", "template", "spec"]).unwrap();
    let worker = &seq(pod.get("containers"))[0];

    let port = cfg["METRICS_ADDR"].rsplit(':').next().unwrap();
    let metrics = seq(worker.get("ports"))
        .iter()
        .find(|p| str_at(p, &["name"]) == Some("metrics"))
        .expect("a container port named `metrics`");
    assert_eq!(
        int(metrics, &["containerPort"]).to_string(),
        port,
        "METRICS_ADDR's port"
    );

    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        let p = worker.get(probe).unwrap_or_else(|| panic!("no {probe}"));
        assert_eq!(str_at(p, &["httpGet", "path"]), Some(path), "{probe}");
        assert_eq!(str_at(p, &["httpGet", "port"]), Some("metrics"), "{probe}");
    }
    let startup = worker.get("startupProbe").unwrap();
    let allowed = int(startup, &["periodSeconds"]) * int(startup, &["failureThreshold"]);
    assert!(
        allowed >= 2 * secs(cfg, "STARTUP_TIMEOUT_SECS"),
        "the startup probe allows {allowed} s, less than twice STARTUP_TIMEOUT_SECS"
    );
    let grace = int(pod, &["terminationGracePeriodSeconds"]);
    assert!(
        grace >= secs(cfg, "SHUTDOWN_GRACE_SECS") + 5,
        "terminationGracePeriodSeconds {grace} leaves under 5 s after SHUTDOWN_GRACE_SECS"
    );

    for job in [
        "Job/firstclick-create-pubsub",
        "Job/firstclick-create-bq-table",
    ] {
        let job = find(job);
        assert_eq!(
            str_at(job, &["spec", "template", "spec", "restartPolicy"]),
            Some("Never"),
            "podFailurePolicy needs restartPolicy Never"
        );
        let rules = seq(value_at(job, &["spec", "podFailurePolicy", "rules"]));
        let fails_on_78 = rules.iter().any(|r| {
            str_at(r, &["action"]) == Some("FailJob")
                && str_at(r, &["onExitCodes", "operator"]) == Some("In")
                && seq(value_at(r, &["onExitCodes", "values"]))
                    .iter()
                    .any(|v| v.as_i64() == Some(78))
        });
        assert!(fails_on_78, "{}: exit 78 must fail the Job", object_id(job));
    }
}
