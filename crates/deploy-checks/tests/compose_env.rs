//! docker-compose.yml against the binaries' command lines.
//!
//! Each compose service that runs one of the four binaries (found by the first word of its
//! `entrypoint`, else of its `command`) may only pass environment variables that this binary
//! reads: the `env` names of its `clap` arguments, at the top level and along the subcommands
//! named in the command (`streaming run`). A name changed on one side only (in compose or in a
//! crate's `#[arg(env = ...)]`) fails here, before anyone runs a container. The same file and
//! `.env.example` must also agree: every variable compose reads is documented there, and
//! nothing documented there is ignored by compose.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use clap::CommandFactory;
use serde_norway::{Mapping, Value};

use common::{
    binaries, env_vars_read, is_scale_out_problem, read_repo_file, scale_out_note, words, SCALE_OUT,
};

/// Variables compose reads that are not passed to any container but are meant for compose
/// itself (they may appear in .env.example without a `${...}` in the compose file).
const READ_BY_COMPOSE: &[&str] = &["COMPOSE_PROFILES"];

/// The services the compose file must have, with the binary and subcommand each runs, so that
/// a renamed service or command cannot make the check below pass by checking nothing.
const EXPECTED_JOBS: &[(&str, &str)] = &[
    ("create_pubsub", "create-pubsub"),
    ("create_bq_table", "create-bq-table"),
    ("datagen", "datagen"),
    ("streaming", "streaming run"),
    ("create_pubsub_local", "create-pubsub"),
    ("create_bq_table_local", "create-bq-table"),
    ("datagen_local", "datagen"),
    ("streaming_local", "streaming run"),
];

/// Parses a compose file and resolves its YAML merge keys (`<<`), as compose does.
fn parse_compose(text: &str) -> Value {
    let mut doc: Value = serde_norway::from_str(text).expect("docker-compose.yml is valid YAML");
    // A merged-in mapping may carry merge keys of its own: resolve until none is left.
    for _ in 0..8 {
        doc.apply_merge().expect("the merge keys (<<) resolve");
        if !has_merge_key(&doc) {
            return doc;
        }
    }
    panic!("merge keys (<<) still present after 8 rounds of resolution");
}

fn has_merge_key(v: &Value) -> bool {
    match v {
        Value::Mapping(m) => m.contains_key("<<") || m.values().any(has_merge_key),
        Value::Sequence(s) => s.iter().any(has_merge_key),
        Value::Tagged(t) => has_merge_key(&t.value),
        _ => false,
    }
}

/// The variable names and values of a service's `environment` (mapping or `KEY=VALUE` list);
/// `None` for a name passed through from .env/the shell.
fn environment(service: &Mapping) -> BTreeMap<String, Option<String>> {
    let mut out = BTreeMap::new();
    match service.get("environment") {
        None | Some(Value::Null) => {}
        Some(Value::Mapping(m)) => {
            for (k, v) in m {
                let key = k
                    .as_str()
                    .expect("environment keys are strings")
                    .to_string();
                let value = match v {
                    Value::Null => None,
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    Value::Bool(b) => Some(b.to_string()),
                    other => panic!("environment {key}: unexpected value {other:?}"),
                };
                out.insert(key, value);
            }
        }
        Some(Value::Sequence(items)) => {
            for item in items {
                let s = item.as_str().expect("environment list items are strings");
                match s.split_once('=') {
                    Some((k, v)) => out.insert(k.to_string(), Some(v.to_string())),
                    None => out.insert(s.to_string(), None),
                };
            }
        }
        Some(other) => panic!("environment: expected a mapping or a list, found {other:?}"),
    }
    out
}

/// One service that runs a firstclick binary.
#[derive(Debug)]
struct Job {
    service: String,
    /// `streaming run`, `datagen`, ...
    command_path: String,
    env: BTreeMap<String, Option<String>>,
    volumes: Vec<String>,
    profiles: Vec<String>,
}

/// Checks every service of the compose file `text` against `binaries`. Returns the jobs found
/// and one message per problem.
fn check_compose(
    text: &str,
    binaries: &BTreeMap<String, clap::Command>,
) -> (Vec<Job>, Vec<String>) {
    let doc = parse_compose(text);
    let services = doc
        .get("services")
        .and_then(Value::as_mapping)
        .expect("the compose file has a `services` mapping");
    let mut jobs = Vec::new();
    let mut problems = Vec::new();
    for (name, service) in services {
        let name = name
            .as_str()
            .expect("service names are strings")
            .to_string();
        let service = service
            .as_mapping()
            .unwrap_or_else(|| panic!("service {name} is not a mapping"));
        let entrypoint = words(service.get("entrypoint"));
        let command = words(service.get("command"));
        let argv: Vec<String> = entrypoint.iter().chain(command.iter()).cloned().collect();
        let uses_our_image = service
            .get("image")
            .and_then(Value::as_str)
            .is_some_and(|image| image.starts_with("firstclick:"));
        let Some((program, args)) = argv.split_first() else {
            if uses_our_image {
                problems.push(format!(
                    "service `{name}` runs the firstclick image without a command: name the \
                     binary ({}) in `command`",
                    binaries.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            continue;
        };
        let Some(cmd) = binaries.get(program.as_str()) else {
            if uses_our_image {
                problems.push(format!(
                    "service `{name}` runs `{program}`, which is not one of the binaries ({})",
                    binaries.keys().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
            continue;
        };
        if service.contains_key("env_file") {
            problems.push(format!(
                "service `{name}` uses env_file: every variable of such a file would reach \
                 `{program}` unchecked; list the variables under `environment` instead"
            ));
        }
        let (known, command_path) = env_vars_read(cmd, args);
        let env = environment(service);
        for var in env.keys() {
            if !known.contains(var) {
                let note = scale_out_note(var);
                problems.push(if note.is_empty() {
                    format!(
                        "service `{name}` passes {var}, which `{command_path}` does not read; \
                         rename it to one of: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(" ")
                    )
                } else {
                    format!(
                        "service `{name}` passes {var}, which `{command_path}` does not read{note}"
                    )
                });
            }
        }
        let strings = |key: &str| -> Vec<String> {
            match service.get(key) {
                Some(Value::Sequence(items)) => items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
                _ => Vec::new(),
            }
        };
        jobs.push(Job {
            service: name,
            command_path,
            env,
            volumes: strings("volumes"),
            profiles: strings("profiles"),
        });
    }
    (jobs, problems)
}

fn real_compose() -> String {
    read_repo_file("docker-compose.yml")
}

/// The problems of `check_compose` that are not about issue 9's scale-out settings (those
/// wait in `the_scale_out_settings_are_read_by_the_binaries`).
fn without_scale_out(problems: Vec<String>) -> Vec<String> {
    problems
        .into_iter()
        .filter(|p| !is_scale_out_problem(p))
        .collect()
}

#[test]
fn compose_passes_only_variables_the_binaries_read() {
    let (jobs, problems) = check_compose(&real_compose(), &binaries());
    let problems = without_scale_out(problems);
    assert!(
        problems.is_empty(),
        "docker-compose.yml:\n{}",
        problems.join("\n")
    );
    let found: BTreeMap<&str, &str> = jobs
        .iter()
        .map(|j| (j.service.as_str(), j.command_path.as_str()))
        .collect();
    let expected: BTreeMap<&str, &str> = EXPECTED_JOBS.iter().copied().collect();
    assert_eq!(found, expected, "services and the binaries they run");
    for job in &jobs {
        // PROJECT_ID alone would make the check nearly empty: each job passes its own settings.
        assert!(
            job.env.len() >= 5,
            "service `{}` passes only {:?}",
            job.service,
            job.env.keys().collect::<Vec<_>>()
        );
    }
}

/// Red until issue 9's scale-out gives the binaries these settings (the message names them).
#[test]
fn the_scale_out_settings_are_read_by_the_binaries() {
    let (_, problems) = check_compose(&real_compose(), &binaries());
    let waiting: Vec<_> = problems
        .into_iter()
        .filter(|p| is_scale_out_problem(p))
        .collect();
    assert!(
        waiting.is_empty(),
        "docker-compose.yml uses issue 9's scale-out settings ({}), which the binaries do not \
         read yet:\n{}",
        SCALE_OUT.join(" "),
        waiting.join("\n")
    );
}

/// The proof that the check bites: a compose snippet with one misspelled variable.
#[test]
fn a_misspelled_variable_is_reported() {
    let snippet = r#"
x-env: &env
  PROJECT_ID:
  CLICK_TOPCI: clicks
services:
  create_pubsub:
    image: firstclick:latest
    command: ["create-pubsub"]
    environment:
      <<: *env
      CHECKOUT_TOPIC:
  redis:
    image: redis:7.4-alpine
    environment:
      ANYTHING: goes
"#;
    let (jobs, problems) = check_compose(snippet, &binaries());
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].contains("`create_pubsub` passes CLICK_TOPCI"),
        "{}",
        problems[0]
    );
    assert!(problems[0].contains("CLICK_TOPIC"), "{}", problems[0]);
}

/// A rename on the compose side only, in the real file.
#[test]
fn renaming_a_variable_in_compose_only_is_reported() {
    let text = real_compose();
    assert!(
        text.contains("\n  BQ_DATASET:\n"),
        "the test edits this line"
    );
    let renamed = text.replace("\n  BQ_DATASET:\n", "\n  BQ_DATASET_NAME:\n");
    let (_, problems) = check_compose(&renamed, &binaries());
    let problems = without_scale_out(problems);
    // create_bq_table, streaming and their _local twins.
    assert_eq!(problems.len(), 4, "{problems:#?}");
    assert!(
        problems.iter().all(|p| p.contains("BQ_DATASET_NAME")),
        "{problems:#?}"
    );
}

/// A rename on the binary side only: create-bq-table's dataset flag reading another variable.
#[test]
fn renaming_a_variable_in_a_binary_only_is_reported() {
    let mut bins = binaries();
    let renamed = firstclick_create_bq_table::CreateBqTableCli::command()
        .mut_arg("dataset", |a| a.env("BQ_DATASET_ID"));
    bins.insert("create-bq-table".to_string(), renamed);
    let (_, problems) = check_compose(&real_compose(), &bins);
    let problems = without_scale_out(problems);
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(
        problems
            .iter()
            .all(|p| p.contains("BQ_DATASET,") && p.contains("create_bq_table")),
        "{problems:#?}"
    );
}

#[test]
fn the_firstclick_image_always_runs_a_named_binary() {
    let snippet = r#"
services:
  a:
    image: firstclick:latest
  b:
    image: firstclick:latest
    command: ["replay"]
  c:
    image: firstclick:latest
    command: ["datagen"]
    env_file: .env
"#;
    let (_, problems) = check_compose(snippet, &binaries());
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].contains("without a command"), "{}", problems[0]);
    assert!(problems[1].contains("`replay`"), "{}", problems[1]);
    assert!(problems[2].contains("env_file"), "{}", problems[2]);
}

/// Subcommands count: `streaming run` does not read the demo's variables.
#[test]
fn variables_of_another_subcommand_are_reported() {
    let snippet = r#"
services:
  streaming:
    image: firstclick:latest
    command: ["streaming", "run"]
    environment:
      LOOKBACK_SECS: "60"
      DEMO_CLICKS: "10"
"#;
    let (_, problems) = check_compose(snippet, &binaries());
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(problems[0].contains("DEMO_CLICKS"), "{}", problems[0]);
    assert!(problems[0].contains("`streaming run`"), "{}", problems[0]);
}

/// Google Cloud services use the mounted key and no emulator; emulator services never see a
/// key and reach both emulators they need.
#[test]
fn each_mode_talks_to_its_own_backend() {
    let (jobs, _) = check_compose(&real_compose(), &binaries());
    for job in &jobs {
        let local = job.service.ends_with("_local");
        let profile = if local { "emulators" } else { "cloud" };
        assert_eq!(job.profiles, [profile], "profiles of `{}`", job.service);
        let creds = job.env.get("GOOGLE_APPLICATION_CREDENTIALS");
        let pubsub = job.env.get("PUBSUB_EMULATOR_HOST");
        let bigquery = job.env.get("BIGQUERY_EMULATOR_HOST");
        if local {
            assert_eq!(creds, None, "`{}` must not use a key", job.service);
            assert!(
                job.volumes.is_empty(),
                "`{}` mounts {:?}",
                job.service,
                job.volumes
            );
            let uses_pubsub = !job.command_path.starts_with("create-bq-table");
            let uses_bigquery = matches!(
                job.command_path.as_str(),
                "create-bq-table" | "streaming run"
            );
            assert_eq!(
                pubsub.is_some(),
                uses_pubsub,
                "PUBSUB_EMULATOR_HOST of `{}`",
                job.service
            );
            assert_eq!(
                bigquery.is_some(),
                uses_bigquery,
                "BIGQUERY_EMULATOR_HOST of `{}`",
                job.service
            );
        } else {
            assert_eq!(
                creds,
                Some(&Some("/keys/service-account.json".to_string())),
                "key of `{}`",
                job.service
            );
            assert_eq!(
                job.volumes,
                ["./keys:/keys:ro"],
                "volumes of `{}`",
                job.service
            );
            assert_eq!((pubsub, bigquery), (None, None), "`{}`", job.service);
        }
    }
}

/// Names of the `${NAME...}` references in a compose file (`$$` is a literal `$`).
fn interpolated_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            rest = after;
        } else if let Some(after) = rest.strip_prefix('{') {
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.insert(name);
            }
            rest = after;
        }
    }
    names
}

/// `NAME=` assignments of an env file, commented out or not.
fn env_file_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start().trim_start_matches('#').trim_start();
            let (name, _) = line.split_once('=')?;
            let ok = !name.is_empty()
                && name.starts_with(|c: char| c.is_ascii_uppercase())
                && name
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            ok.then(|| name.to_string())
        })
        .collect()
}

#[test]
fn env_example_documents_exactly_what_compose_reads() {
    let compose = real_compose();
    let (jobs, _) = check_compose(&compose, &binaries());
    let mut read: BTreeSet<String> = interpolated_names(&compose);
    for job in &jobs {
        // Passed through from .env or the shell.
        read.extend(
            job.env
                .iter()
                .filter(|(_, v)| v.is_none())
                .map(|(k, _)| k.clone()),
        );
    }
    read.extend(READ_BY_COMPOSE.iter().map(|v| v.to_string()));
    let documented = env_file_names(&read_repo_file(".env.example"));
    let missing: Vec<_> = read.difference(&documented).collect();
    let unused: Vec<_> = documented.difference(&read).collect();
    assert!(
        missing.is_empty(),
        "read by docker-compose.yml but not in .env.example: {missing:?}"
    );
    assert!(
        unused.is_empty(),
        "in .env.example but not read by docker-compose.yml: {unused:?}"
    );
}

#[test]
fn env_file_parsing_sees_commented_and_plain_assignments() {
    let names = env_file_names(
        "# A comment = no\nPROJECT_ID=x\n# LOOKBACK_SECS=3600  # note\n#   lower=1\n",
    );
    assert_eq!(
        names,
        BTreeSet::from(["PROJECT_ID".to_string(), "LOOKBACK_SECS".to_string()])
    );
    assert_eq!(
        interpolated_names("a: ${X:-1} ${Y_2:?e} $${NOT} ${Z}"),
        BTreeSet::from(["X".into(), "Y_2".into(), "Z".into()])
    );
}
