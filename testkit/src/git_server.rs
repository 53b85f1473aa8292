//! A real git smart-HTTP server (`git http-backend` behind HTTP basic auth) serving bare
//! repositories that a test creates, for clone and push with credentials.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct GitServer {
    addr: SocketAddr,
    root: tempfile::TempDir,
    username: String,
    password: String,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    root: PathBuf,
    authorization: String,
}

impl GitServer {
    /// Starts a server with fresh random credentials and no repositories.
    pub async fn start() -> Self {
        let root = tempfile::tempdir().expect("git server root");
        let username = "git-user".to_owned();
        let password = format!("pw-{}", uuid::Uuid::new_v4().simple());
        let shared = Arc::new(Shared {
            root: root.path().to_owned(),
            authorization: basic_auth(&username, &password),
        });
        let app = axum::Router::new()
            .fallback(handle)
            .layer(DefaultBodyLimit::disable())
            .with_state(shared);
        let (addr, task) = crate::fakes::serve(app).await;
        Self {
            addr,
            root,
            username,
            password,
            task,
        }
    }

    pub fn username(&self) -> &str {
        &self.username
    }

    pub fn password(&self) -> &str {
        &self.password
    }

    /// The value of an `Authorization` header that the server accepts.
    pub fn authorization(&self) -> String {
        basic_auth(&self.username, &self.password)
    }

    /// Creates an empty bare repository that accepts pushes; returns its directory.
    pub fn create_bare(&self, name: &str) -> PathBuf {
        let path = self.path(name);
        run_git(
            &["init", "--quiet", "--bare", "--initial-branch=main"],
            None,
            &path,
        );
        run_git(&["config", "http.receivepack", "true"], Some(&path), &path);
        path
    }

    /// The on-disk directory of repository `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(format!("{name}.git"))
    }

    /// The clone URL of repository `name` (no credentials in it).
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{name}.git", self.addr)
    }
}

impl Drop for GitServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn basic_auth(user: &str, password: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{password}")))
}

/// Runs git with an isolated configuration; panics on failure (test set-up).
pub fn run_git(args: &[&str], cwd: Option<&Path>, target: &Path) {
    let mut cmd = std::process::Command::new("git");
    cmd.args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(Stdio::null());
    match cwd {
        Some(dir) => cmd.current_dir(dir),
        None => cmd.arg(target),
    };
    let out = cmd.output().expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorised = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == shared.authorization);
    if !authorised {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Basic realm=\"deployguard-test\"")],
            "authentication required",
        )
            .into_response();
    }
    match cgi(&shared.root, &method, &uri, &headers, body).await {
        Ok(response) => response,
        Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, err).into_response(),
    }
}

/// Runs `git http-backend` as a CGI program for one request.
async fn cgi(
    root: &Path,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response, String> {
    let header = |name: header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let mut child = tokio::process::Command::new("git")
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_PROJECT_ROOT", root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REMOTE_USER", "git-user")
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REQUEST_METHOD", method.as_str())
        .env("PATH_INFO", uri.path())
        .env("QUERY_STRING", uri.query().unwrap_or(""))
        .env("CONTENT_TYPE", header(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("HTTP_CONTENT_ENCODING", header(header::CONTENT_ENCODING))
        .env(
            "GIT_PROTOCOL",
            headers
                .get("git-protocol")
                .and_then(|v| v.to_str().ok())
                .unwrap_or(""),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("git http-backend: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    // Write the request while reading the reply: either side may fill a pipe.
    let writer = tokio::spawn(async move {
        let _ = stdin.write_all(&body).await;
    });
    let mut output = Vec::new();
    stdout
        .read_to_end(&mut output)
        .await
        .map_err(|e| e.to_string())?;
    let _ = writer.await;
    let _ = child.wait().await;

    let split = output
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| output.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)))
        .ok_or("http-backend wrote no header block")?;
    let (head, rest) = output.split_at(split.0);
    let mut response = Response::new(axum::body::Body::from(rest[split.1..].to_vec()));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            let code = value.split_whitespace().next().unwrap_or("500");
            *response.status_mut() = code
                .parse::<u16>()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_str(value),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}
