//! An OpenAPI-driven fuzzer (schemathesis) against the running API: whatever it sends,
//! no answer is a 5xx and every answer matches the document. `scripts/test.sh`
//! installs it; `DEPLOYGUARD_SCHEMATHESIS` points elsewhere.
//!
//! Generation is seeded, so a run is the same every time and a red run can be replayed;
//! `DEPLOYGUARD_FUZZ_SEED` picks another seed to explore further.

use std::path::PathBuf;

use crate::helpers::Api;

fn schemathesis() -> PathBuf {
    if let Some(path) = std::env::var_os("DEPLOYGUARD_SCHEMATHESIS") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").expect("HOME");
    let path = PathBuf::from(home).join(".cache/deployguard/venv/bin/schemathesis");
    assert!(
        path.exists(),
        "schemathesis is not installed at {}; scripts/test.sh installs it",
        path.display()
    );
    path
}

fn seed() -> String {
    std::env::var("DEPLOYGUARD_FUZZ_SEED").unwrap_or_else(|_| "20261124".to_owned())
}

async fn fuzz(api: &Api, headers: &[&str]) {
    let mut command = tokio::process::Command::new(schemathesis());
    command
        .args(["--no-color", "run"])
        .arg(api.app.url("/api/v2/openapi.json"))
        // A schema cannot say which hosts resolve, or which opaque cursors this API
        // handed out, so valid-looking data may rightly be refused with a 400: the
        // check that expects acceptance is off; every other check is on.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args([
            "--max-examples",
            "30",
            "--workers",
            "2",
            "--request-timeout",
            "15",
        ])
        // Unseeded, schemathesis 4.32.5 now and then fails inside its own negative-data
        // generation (a traceback in `_with_violations`, no request sent), which says
        // nothing about this API.
        .args(["--seed", &seed(), "--generation-database", "none"])
        .args(["--warnings", "off"])
        .kill_on_drop(true);
    for header in headers {
        command.args(["-H", header]);
    }
    let out = command.output().await.expect("running schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the fuzzer found failures:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("generated"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_fuzzer_finds_no_server_error_and_no_schema_mismatch() {
    let api = Api::start().await;
    fuzz(&api, &["X-User-ID: fuzz-admin", "X-User-Roles: admin"]).await;
    fuzz(&api, &["X-User-ID: fuzz-user"]).await;
}
