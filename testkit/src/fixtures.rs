//! The repository with planted secrets that several crates' tests scan and clean.

use crate::TestRepo;

/// A GitHub classic token (valid checksum) and an AWS access key id, planted below.
pub const PLANTED_GITHUB_TOKEN: &str = "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";
pub const PLANTED_AWS_KEY_ID: &str = "AKIAM6COX6AQXF6LI3U3";

/// Three commits on `main`: the AWS key in `config/app.env`, the GitHub token in
/// `ci/token.txt`, then that file deleted (the token lives on in history only); and an
/// annotated tag `v1` on the last commit.
pub fn repo_with_secrets() -> TestRepo {
    let mut repo = TestRepo::new();
    repo.write(
        "config/app.env",
        format!("AWS_ACCESS_KEY_ID={PLANTED_AWS_KEY_ID}\n"),
    );
    repo.commit("config");
    repo.write("ci/token.txt", format!("{PLANTED_GITHUB_TOKEN}\n"));
    repo.commit("ci");
    repo.remove("ci/token.txt");
    repo.commit("remove token");
    repo.tag_annotated("v1", "release");
    repo
}

/// A real PKCS#12 key store (an EC key and its certificate, password `changeit`), as
/// `openssl pkcs12 -export` writes it.
pub fn pkcs12_file() -> Vec<u8> {
    let dir = tempfile::tempdir().expect("temporary directory");
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir.path())
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-subj",
        "/CN=deploy",
        "-days",
        "1",
    ]);
    run(&[
        "pkcs12",
        "-export",
        "-in",
        "cert.pem",
        "-inkey",
        "key.pem",
        "-out",
        "server.p12",
        "-passout",
        "pass:changeit",
    ]);
    std::fs::read(dir.path().join("server.p12")).expect("openssl wrote server.p12")
}
