//! No drift between the environment variables the service binaries read and the ones
//! the README documents, docker-compose.api.yaml sets and the Kubernetes ConfigMap and
//! Secret template carry.
//!
//! What the binaries read is observed, not listed: each binary's settings are loaded
//! (as its `main` does) from a source that records every name asked for, in every mode
//! that reads different names (gateway and JWT authentication). It lives with the
//! worker's tests because they link all three service binaries.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use deployguard::env::{ConfigError, Load, Source};

/// Names that carry credentials: they belong in the Secret, never in the ConfigMap.
const CREDENTIALS: [&str; 9] = [
    "DATABASE_URL",
    "AMQP_URL",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "SECRET_HASH_KEY",
    "REPORT_KEYS",
    "CALLBACK_SECRET",
    "GATEWAY_TOKEN",
    "JWT_HS256_SECRET",
];

/// Read for compatibility with the specification's Celery setting; documented in the
/// README beside AMQP_URL, not set by the deployment files.
const ALIASES: [&str; 1] = ["CELERY_BROKER_URL"];

struct Recording {
    values: HashMap<&'static str, &'static str>,
    asked: RefCell<BTreeSet<String>>,
}

impl Source for Recording {
    fn get(&self, name: &str) -> Option<String> {
        self.asked.borrow_mut().insert(name.to_owned());
        self.values.get(name).map(|v| (*v).to_owned())
    }
}

/// Every variable the API (serve and migrate), the worker and beat read.
fn read_by_binaries() -> BTreeSet<String> {
    let base = [
        ("DATABASE_URL", "postgresql://u:p@db:5432/deployguard"),
        ("AMQP_URL", "amqp://u:p@mq:5672/%2f"),
        ("S3_ENDPOINT_URL", "http://minio:9000"),
        ("S3_ACCESS_KEY", "access"),
        ("S3_SECRET_KEY", "secret"),
        ("SECRET_HASH_KEY", "0123456789abcdef0123456789abcdef"),
        (
            "REPORT_KEYS",
            "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    ];
    let modes: [&[(&str, &str)]; 2] = [
        &[("AUTH_MODE", "gateway")],
        &[
            ("AUTH_MODE", "jwt"),
            ("JWT_HS256_SECRET", "0123456789abcdef0123456789abcdef"),
            ("JWT_AUDIENCE", "deployguard"),
        ],
    ];
    let mut names = BTreeSet::new();
    for mode in modes {
        let src = Recording {
            values: base.iter().chain(mode).copied().collect(),
            asked: RefCell::default(),
        };
        // deployguard-api serve; deployguard-api migrate; the worker; beat.
        deployguard_api::settings::Settings::from_source(&src).unwrap();
        deployguard_api::settings::MigrateSettings::from_source(&src).unwrap();
        deployguard_worker::settings::Settings::from_source(&src).unwrap();
        deployguard_beat::settings::Settings::from_source(&src).unwrap();
        names.extend(src.asked.into_inner());
    }
    names
}

fn repo_file(path: &str) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn is_variable(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The entries of the YAML mapping under `header` (a line of its own), up to the first
/// line indented no deeper than the header. Comments and blank lines are skipped; a
/// value is a plain or double-quoted scalar, with any trailing comment dropped.
fn yaml_block(text: &str, header: &str) -> BTreeMap<String, String> {
    let mut lines = text.lines().skip_while(|l| l.trim_end() != header);
    let header_line = lines
        .next()
        .unwrap_or_else(|| panic!("no {header:?} block"));
    let header_indent = header_line.len() - header_line.trim_start().len();
    let mut entries = BTreeMap::new();
    for line in lines {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.len() - trimmed.len() <= header_indent {
            break;
        }
        let (key, raw) = trimmed.split_once(':').unwrap();
        assert!(is_variable(key), "{header}: {key:?} is not a variable name");
        let raw = raw.trim();
        let value = match raw.strip_prefix('"') {
            Some(quoted) => quoted.split('"').next().unwrap(),
            None => raw.split(" #").next().unwrap().trim(),
        };
        let previous = entries.insert(key.to_owned(), value.to_owned());
        assert!(previous.is_none(), "{header}: {key} set twice");
    }
    entries
}

fn yaml_block_keys(text: &str, header: &str) -> BTreeSet<String> {
    yaml_block(text, header).into_keys().collect()
}

/// Loads every binary's configuration from `values`, as their `main`s do.
fn every_binary_accepts(values: &BTreeMap<String, String>) -> Result<(), String> {
    let src: HashMap<String, String> = values.clone().into_iter().collect();
    let fail = |e: ConfigError| e.to_string();
    deployguard_api::settings::Settings::from_source(&src).map_err(fail)?;
    deployguard_api::settings::MigrateSettings::from_source(&src).map_err(fail)?;
    deployguard_worker::settings::Settings::from_source(&src).map_err(fail)?;
    deployguard_beat::settings::Settings::from_source(&src).map_err(fail)?;
    Ok(())
}

/// The variables of the README's configuration table: every backticked name in a
/// row's first cell, plus the aliases named in the row.
fn readme_table() -> BTreeSet<String> {
    let readme = repo_file("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has a Configuration section");
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap();
        for name in first_cell.split('`').skip(1).step_by(2) {
            assert!(is_variable(name), "README: {name:?} is not a variable name");
            assert!(names.insert(name.to_owned()), "README: {name} in two rows");
        }
        for alias in ALIASES.iter().filter(|a| row.contains(&format!("`{a}`"))) {
            names.insert((*alias).to_owned());
        }
    }
    names
}

fn difference(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).cloned().collect()
}

/// `place` names exactly the variables the binaries read.
fn assert_names_what_is_read(read: &BTreeSet<String>, named: &BTreeSet<String>, place: &str) {
    assert_eq!(
        (difference(read, named), difference(named, read)),
        (vec![], vec![]),
        "(read but not in {place}, in {place} but read by no binary)"
    );
}

#[test]
fn readme_configuration_table_documents_exactly_what_the_binaries_read() {
    let read = read_by_binaries();
    assert_names_what_is_read(&read, &readme_table(), "the README's table");
}

#[test]
fn compose_sets_every_variable_the_binaries_read_and_no_other() {
    let read = read_by_binaries();
    let compose = yaml_block_keys(
        &repo_file("docker-compose.api.yaml"),
        "x-deployguard-env: &deployguard-env",
    );
    assert_names_what_is_read(&read, &compose, "compose");
}

#[test]
fn kubernetes_configmap_and_secret_carry_every_variable_and_credentials_only_in_the_secret() {
    let read = read_by_binaries();
    let configmap = yaml_block_keys(&repo_file("k8s/base/configmap.yaml"), "data:");
    let secret = yaml_block_keys(&repo_file("k8s/base/secret.template.yaml"), "stringData:");

    let both: Vec<_> = configmap.intersection(&secret).cloned().collect();
    assert!(both.is_empty(), "in the ConfigMap and the Secret: {both:?}");
    let credentials: BTreeSet<String> = CREDENTIALS.iter().map(|c| (*c).to_owned()).collect();
    assert_eq!(
        secret, credentials,
        "the Secret holds exactly the credentials"
    );

    let expected: BTreeSet<String> = read
        .iter()
        .filter(|name| !ALIASES.contains(&name.as_str()))
        .cloned()
        .collect();
    let deployed: BTreeSet<String> = configmap.union(&secret).cloned().collect();
    assert_names_what_is_read(&expected, &deployed, "the ConfigMap or Secret");
}

#[test]
fn standalone_overlay_sets_only_variables_the_binaries_read() {
    let read = read_by_binaries();
    let overlay = repo_file("k8s/overlays/standalone/kustomization.yaml");
    // The ConfigMap patch and the connection URLs put into the containers.
    let mut set = yaml_block_keys(&overlay, "      data:");
    set.extend(
        overlay
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("- name: "))
            .filter(|name| is_variable(name))
            .map(str::to_owned),
    );
    // secrets.env also holds the datastores' passwords, which the overlay's
    // StatefulSets and URLs use; everything else in it is for the binaries.
    let datastores = ["POSTGRES_PASSWORD", "RABBITMQ_PASSWORD"];
    for line in repo_file("k8s/overlays/standalone/secrets.env.example").lines() {
        if let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
            && !datastores.contains(&name)
        {
            set.insert(name.to_owned());
        }
    }
    assert!(set.contains("DATABASE_URL") && set.contains("S3_ENDPOINT_URL"));
    let unknown = difference(&set, &read);
    assert!(unknown.is_empty(), "read by no binary: {unknown:?}");
}

#[test]
fn dockerfile_sets_only_variables_the_binaries_read() {
    let read = read_by_binaries();
    let dockerfile = repo_file("Dockerfile");
    let set: BTreeSet<String> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("ENV "))
        .filter_map(|rest| rest.split('=').next())
        .map(|name| name.trim().to_owned())
        .collect();
    assert!(set.contains("WORK_DIR"), "{set:?}");
    let unknown = difference(&set, &read);
    assert!(unknown.is_empty(), "read by no binary: {unknown:?}");
}

/// Compose's nested `${NAME:-default}` with nothing set: each becomes its default.
fn resolve_defaults(value: &str) -> String {
    let mut value = value.to_owned();
    while let Some(start) = value.rfind("${") {
        let end = start + value[start..].find('}').expect("closed interpolation");
        let inner = &value[start + 2..end];
        let (_, default) = inner.split_once(":-").expect("${NAME:-default}");
        let default = default.to_owned();
        value.replace_range(start..=end, &default);
    }
    value
}

#[test]
fn compose_defaults_are_a_configuration_every_binary_accepts() {
    let compose = yaml_block(
        &repo_file("docker-compose.api.yaml"),
        "x-deployguard-env: &deployguard-env",
    );
    let mut defaults = BTreeMap::new();
    for (name, value) in &compose {
        // `${NAME:-default}`: a .env file or the shell overrides each one by its name.
        let default = value
            .strip_prefix(&format!("${{{name}:-"))
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_else(|| panic!("{name}: {value:?} is not ${{{name}:-default}}"));
        defaults.insert(name.clone(), resolve_defaults(default));
    }
    assert_eq!(
        defaults["DATABASE_URL"],
        "postgresql://deployguard:deployguard-dev@postgres:5432/deployguard"
    );
    every_binary_accepts(&defaults).unwrap();
}

#[test]
fn kubernetes_configmaps_with_a_filled_secret_are_a_configuration_every_binary_accepts() {
    let configmap = yaml_block(&repo_file("k8s/base/configmap.yaml"), "data:");
    let mut values = configmap.clone();
    for (name, value) in [
        (
            "DATABASE_URL",
            "postgresql://dg:pw@db.example.com:5432/deployguard",
        ),
        ("AMQP_URL", "amqps://dg:pw@mq.example.com:5671/%2f"),
        ("S3_ACCESS_KEY", "access"),
        ("S3_SECRET_KEY", "secret"),
        ("JWT_HS256_SECRET", "0123456789abcdef0123456789abcdef"),
        ("SECRET_HASH_KEY", "0123456789abcdef0123456789abcdef0123"),
        (
            "REPORT_KEYS",
            "k1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
    ] {
        values.insert(name.to_owned(), value.to_owned());
    }
    every_binary_accepts(&values).unwrap();

    // The standalone overlay's ConfigMap patch on top.
    let overlay = yaml_block(
        &repo_file("k8s/overlays/standalone/kustomization.yaml"),
        "      data:",
    );
    values.extend(overlay);
    every_binary_accepts(&values).unwrap();

    // The worker drains its task within the pod's termination grace period.
    let worker = repo_file("k8s/base/worker.yaml");
    let grace: u64 = worker
        .lines()
        .find_map(|l| l.trim().strip_prefix("terminationGracePeriodSeconds: "))
        .unwrap()
        .parse()
        .unwrap();
    let secs = |name: &str| configmap[name].parse::<u64>().unwrap();
    assert!(secs("WORKER_SHUTDOWN_GRACE_SECS") > secs("TASK_SOFT_TIME_LIMIT_SECS"));
    assert!(grace > secs("WORKER_SHUTDOWN_GRACE_SECS"));
}

#[test]
fn service_binaries_read_the_environment_only_through_the_loaders_observed_here() {
    // The loaders read_by_binaries() runs; a binary calling another would escape it.
    let observed = ["Settings", "MigrateSettings"];
    // Set by the platform, not configuration: the pod or host name, and git's own
    // variable for the CLI's --staged scan.
    let not_settings = ["HOSTNAME", "GIT_INDEX_FILE"];
    let mut loaders = BTreeSet::new();
    for dir in [
        "api/src",
        "worker/src",
        "beat/src",
        "shared/src",
        "engine/src",
    ] {
        for path in rust_files(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)) {
            let text = std::fs::read_to_string(&path).unwrap();
            for (at, _) in text.match_indices("::from_env()") {
                let name = text[..at]
                    .rsplit(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .next()
                    .unwrap();
                if name != "Self" {
                    loaders.insert(name.to_owned());
                }
            }
            // The environment plumbing itself.
            if path.ends_with("shared/src/env.rs") {
                continue;
            }
            for (at, _) in text.match_indices("env::var") {
                let call = &text[at..text.len().min(at + 60)];
                assert!(
                    not_settings
                        .iter()
                        .any(|v| call.contains(&format!("\"{v}\""))),
                    "{}: reads the environment outside shared/src/env.rs: {call:?}",
                    path.display()
                );
            }
        }
    }
    let unobserved: Vec<_> = loaders
        .iter()
        .filter(|l| !observed.contains(&l.as_str()))
        .collect();
    assert!(
        unobserved.is_empty(),
        "loaders the drift tests do not run: {unobserved:?}"
    );
    assert!(loaders.contains("Settings") && loaders.contains("MigrateSettings"));
}

fn rust_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
