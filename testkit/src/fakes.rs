//! Local HTTP stand-ins for the two third-party services DeployGuard talks to: the
//! external credential service and the GitHub REST API. They keep state in memory and
//! record what they were asked, so tests can assert on both sides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use url::Url;

/// Serves `app` on a free loopback port until the returned task is aborted.
pub(crate) async fn serve(app: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("fake bind");
    let addr = listener.local_addr().expect("fake address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, task)
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "message": message }))).into_response()
}

// ---------------------------------------------------------------------------------------
// Credential service: GET /api/credentials/{id} with X-User-ID → {username, token}.
// ---------------------------------------------------------------------------------------

/// One request the credential service received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialRequest {
    pub credential_id: String,
    pub user_id: Option<String>,
}

#[derive(Default)]
struct CredentialState {
    /// id → (owner, username, token)
    credentials: HashMap<String, (String, String, String)>,
    requests: Vec<CredentialRequest>,
}

pub struct FakeCredentialService {
    addr: SocketAddr,
    state: Arc<Mutex<CredentialState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeCredentialService {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(CredentialState::default()));
        let app = axum::Router::new()
            .route("/api/credentials/{id}", get(get_credential))
            .with_state(Arc::clone(&state));
        let (addr, task) = serve(app).await;
        Self { addr, state, task }
    }

    /// The value for `AUTH_SERVICE_URL`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}", self.addr)).expect("fake URL")
    }

    /// Registers a credential that only `owner` may read.
    pub fn add(&self, id: &str, owner: &str, username: &str, token: &str) {
        self.state.lock().expect("fake lock").credentials.insert(
            id.to_owned(),
            (owner.to_owned(), username.to_owned(), token.to_owned()),
        );
    }

    pub fn requests(&self) -> Vec<CredentialRequest> {
        self.state.lock().expect("fake lock").requests.clone()
    }
}

impl Drop for FakeCredentialService {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn get_credential(
    State(state): State<Arc<Mutex<CredentialState>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let user = headers
        .get("x-user-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut state = state.lock().expect("fake lock");
    state.requests.push(CredentialRequest {
        credential_id: id.clone(),
        user_id: user.clone(),
    });
    let Some(user) = user else {
        return error(StatusCode::UNAUTHORIZED, "X-User-ID required");
    };
    match state.credentials.get(&id) {
        Some((owner, username, token)) if *owner == user => {
            Json(json!({ "username": username, "token": token })).into_response()
        }
        // Someone else's credential looks exactly like a missing one.
        _ => error(StatusCode::NOT_FOUND, "credential not found"),
    }
}

// ---------------------------------------------------------------------------------------
// GitHub REST API: the calls DeployGuard makes (who am I, does a repository exist,
// create one for the user or an organisation).
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeRepository {
    pub owner: String,
    pub name: String,
    pub private: bool,
}

struct GitHubState {
    base: Url,
    token: String,
    login: String,
    /// Where clone URLs point (a [`crate::GitServer`]'s base), if linked.
    clone_base: Option<String>,
    repos: Vec<FakeRepository>,
    requests: Vec<String>,
}

pub struct FakeGitHub {
    addr: SocketAddr,
    state: Arc<Mutex<GitHubState>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeGitHub {
    /// A GitHub that accepts `token` and knows it as user `login`.
    pub async fn start(token: &str, login: &str) -> Self {
        let state = Arc::new(Mutex::new(GitHubState {
            base: Url::parse("http://127.0.0.1/").expect("placeholder"),
            token: token.to_owned(),
            login: login.to_owned(),
            clone_base: None,
            repos: Vec::new(),
            requests: Vec::new(),
        }));
        let app = axum::Router::new()
            .route("/user", get(current_user))
            .route("/user/repos", post(create_user_repo))
            .route("/orgs/{org}/repos", post(create_org_repo))
            .route("/repos/{owner}/{repo}", get(get_repo))
            .with_state(Arc::clone(&state));
        let (addr, task) = serve(app).await;
        state.lock().expect("fake lock").base =
            Url::parse(&format!("http://{addr}/")).expect("fake URL");
        Self { addr, state, task }
    }

    /// The value for `GITHUB_API_URL`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("fake URL")
    }

    /// Make clone URLs of repositories point at `base` (e.g. a test git server).
    pub fn set_clone_base(&self, base: &str) {
        self.state.lock().expect("fake lock").clone_base = Some(base.trim_end_matches('/').into());
    }

    pub fn add_repo(&self, owner: &str, name: &str, private: bool) {
        self.state
            .lock()
            .expect("fake lock")
            .repos
            .push(FakeRepository {
                owner: owner.into(),
                name: name.into(),
                private,
            });
    }

    pub fn repos(&self) -> Vec<FakeRepository> {
        self.state.lock().expect("fake lock").repos.clone()
    }

    /// "METHOD /path" of every authenticated request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.lock().expect("fake lock").requests.clone()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type GitHubShared = State<Arc<Mutex<GitHubState>>>;

fn authorised(state: &GitHubState, headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("token "));
    token == Some(state.token.as_str())
}

fn author_json(base: &Url, login: &str, kind: &str) -> Value {
    let u = |path: &str| format!("{base}{path}");
    json!({
        "login": login, "id": 1000 + login.len(), "node_id": format!("U_{login}"),
        "avatar_url": u(&format!("avatars/{login}")), "gravatar_id": "",
        "url": u(&format!("users/{login}")), "html_url": u(login),
        "followers_url": u(&format!("users/{login}/followers")),
        "following_url": u(&format!("users/{login}/following")),
        "gists_url": u(&format!("users/{login}/gists")),
        "starred_url": u(&format!("users/{login}/starred")),
        "subscriptions_url": u(&format!("users/{login}/subscriptions")),
        "organizations_url": u(&format!("users/{login}/orgs")),
        "repos_url": u(&format!("users/{login}/repos")),
        "events_url": u(&format!("users/{login}/events")),
        "received_events_url": u(&format!("users/{login}/received_events")),
        "type": kind, "site_admin": false
    })
}

fn repo_json(state: &GitHubState, repo: &FakeRepository, id: usize) -> Value {
    let base = &state.base;
    let clone_url = match &state.clone_base {
        Some(clone) => format!("{clone}/{}.git", repo.name),
        None => format!("{base}{}/{}.git", repo.owner, repo.name),
    };
    json!({
        "id": id, "node_id": format!("R_{id}"), "name": repo.name,
        "full_name": format!("{}/{}", repo.owner, repo.name),
        "private": repo.private,
        "owner": author_json(base, &repo.owner, "User"),
        "url": format!("{base}repos/{}/{}", repo.owner, repo.name),
        "html_url": format!("{base}{}/{}", repo.owner, repo.name),
        "clone_url": clone_url,
        "default_branch": "main"
    })
}

/// Checks the token and records the request; `None` means answer 401.
fn enter<'a>(
    state: &'a Arc<Mutex<GitHubState>>,
    headers: &HeaderMap,
    what: String,
) -> Option<std::sync::MutexGuard<'a, GitHubState>> {
    let mut guard = state.lock().expect("fake lock");
    if !authorised(&guard, headers) {
        return None;
    }
    guard.requests.push(what);
    Some(guard)
}

fn bad_credentials() -> Response {
    error(StatusCode::UNAUTHORIZED, "Bad credentials")
}

async fn current_user(State(state): GitHubShared, headers: HeaderMap) -> Response {
    match enter(&state, &headers, "GET /user".into()) {
        Some(s) => Json(author_json(&s.base, &s.login, "User")).into_response(),
        None => bad_credentials(),
    }
}

async fn get_repo(
    State(state): GitHubShared,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(s) = enter(&state, &headers, format!("GET /repos/{owner}/{name}")) else {
        return bad_credentials();
    };
    match s
        .repos
        .iter()
        .position(|r| r.owner == owner && r.name == name)
    {
        Some(i) => Json(repo_json(&s, &s.repos[i], i + 1)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

#[derive(serde::Deserialize)]
struct CreateRepo {
    name: String,
    #[serde(default)]
    private: bool,
}

fn create(state: &mut GitHubState, owner: String, body: CreateRepo) -> Response {
    let valid = !body.name.is_empty()
        && body
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Repository creation failed.",
        );
    }
    if state
        .repos
        .iter()
        .any(|r| r.owner == owner && r.name == body.name)
    {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "name already exists on this account",
        );
    }
    let repo = FakeRepository {
        owner,
        name: body.name,
        private: body.private,
    };
    state.repos.push(repo.clone());
    let id = state.repos.len();
    (StatusCode::CREATED, Json(repo_json(state, &repo, id))).into_response()
}

async fn create_user_repo(
    State(state): GitHubShared,
    headers: HeaderMap,
    Json(body): Json<CreateRepo>,
) -> Response {
    match enter(&state, &headers, "POST /user/repos".into()) {
        Some(mut s) => {
            let owner = s.login.clone();
            create(&mut s, owner, body)
        }
        None => bad_credentials(),
    }
}

async fn create_org_repo(
    State(state): GitHubShared,
    Path(org): Path<String>,
    headers: HeaderMap,
    Json(body): Json<CreateRepo>,
) -> Response {
    match enter(&state, &headers, format!("POST /orgs/{org}/repos")) {
        Some(mut s) => create(&mut s, org, body),
        None => bad_credentials(),
    }
}
