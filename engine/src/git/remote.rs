//! Talking to other repositories: which URLs are accepted, cloning, pushing, and
//! credentials that live only in memory.
//!
//! Credentials never go into a URL, a process argument or a file: git asks for them
//! through a credential helper given in its environment (`GIT_CONFIG_*`), a shell
//! function that prints two environment variables of the git process itself.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;

use super::{GitError, Running, Stopped, command};

/// A username and a password or token for HTTP(S) remotes.
#[derive(Clone)]
pub struct Credentials {
    pub username: String,
    pub secret: SecretString,
}

impl Credentials {
    pub fn new(username: impl Into<String>, secret: impl Into<String>) -> Self {
        Self {
            username: username.into(),
            secret: SecretString::from(secret.into()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("secret", &"***")
            .finish()
    }
}

/// Which kinds of remote a caller accepts. The service takes https only (http when
/// configured); the CLI also takes ssh and local repositories.
#[derive(Clone, Copy, Debug, Default)]
pub struct UrlPolicy {
    pub allow_http: bool,
    pub allow_ssh: bool,
    pub allow_local: bool,
}

impl UrlPolicy {
    /// What the service accepts by default: https only.
    pub fn service() -> Self {
        Self::default()
    }

    /// What a person at a terminal may use: https, ssh and local repositories.
    pub fn local_user() -> Self {
        Self {
            allow_http: false,
            allow_ssh: true,
            allow_local: true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("the repository URL is empty")]
    Empty,
    #[error("the repository URL contains whitespace or control characters")]
    BadCharacters,
    #[error("the repository URL must not start with '-'")]
    LooksLikeOption,
    #[error("git transport helpers such as `{0}::` are not accepted")]
    TransportHelper(String),
    #[error("{0} URLs are not accepted here; use https")]
    Scheme(String),
    #[error("plain http is not allowed; use https (or allow http explicitly)")]
    Http,
    #[error("local paths and file:// URLs are not accepted here")]
    Local,
    #[error("ssh URLs are not accepted here; use https")]
    Ssh,
    #[error("the repository URL is not valid: {0}")]
    Invalid(String),
}

/// A checked remote: the URL git is given (never with credentials in it) and any
/// credentials that were written into the URL the user gave.
#[derive(Clone)]
pub struct RemoteUrl {
    url: String,
    kind: RemoteKind,
    credentials: Option<Credentials>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RemoteKind {
    Https,
    Http,
    Ssh,
    Local,
}

impl fmt::Debug for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteUrl")
            .field("url", &self.url)
            .field("kind", &self.kind)
            .field("credentials", &self.credentials)
            .finish()
    }
}

impl fmt::Display for RemoteUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url)
    }
}

impl RemoteUrl {
    /// Checks `raw` against `policy`. Credentials written into an http(s) URL are taken
    /// out of it and kept in memory.
    pub fn parse(raw: &str, policy: UrlPolicy) -> Result<Self, UrlError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Err(UrlError::Empty);
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(UrlError::BadCharacters);
        }
        if raw.starts_with('-') {
            return Err(UrlError::LooksLikeOption);
        }
        if let Some((helper, _)) = raw.split_once("::")
            && !helper.is_empty()
            && helper
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+.-_".contains(c))
        {
            return Err(UrlError::TransportHelper(helper.to_owned()));
        }
        if let Some((scheme, _)) = raw.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            return match scheme.as_str() {
                "https" | "http" => Self::parse_http(raw, &scheme, policy),
                "ssh" | "git+ssh" | "ssh+git" => {
                    if !policy.allow_ssh {
                        return Err(UrlError::Ssh);
                    }
                    Ok(Self::plain(raw, RemoteKind::Ssh))
                }
                "file" => {
                    if !policy.allow_local {
                        return Err(UrlError::Local);
                    }
                    Ok(Self::plain(raw, RemoteKind::Local))
                }
                other => Err(UrlError::Scheme(other.to_owned())),
            };
        }
        // git's scp-like syntax, `user@host:path`: a colon before any slash.
        if let Some(colon) = raw.find(':')
            && !raw[..colon].contains('/')
            && colon > 1
        {
            if !policy.allow_ssh {
                return Err(UrlError::Ssh);
            }
            return Ok(Self::plain(raw, RemoteKind::Ssh));
        }
        if !policy.allow_local {
            return Err(UrlError::Local);
        }
        Ok(Self::plain(raw, RemoteKind::Local))
    }

    fn plain(url: &str, kind: RemoteKind) -> Self {
        Self {
            url: url.to_owned(),
            kind,
            credentials: None,
        }
    }

    fn parse_http(raw: &str, scheme: &str, policy: UrlPolicy) -> Result<Self, UrlError> {
        if scheme == "http" && !policy.allow_http {
            return Err(UrlError::Http);
        }
        let mut url = url::Url::parse(raw).map_err(|e| UrlError::Invalid(e.to_string()))?;
        if url.host_str().is_none_or(str::is_empty) {
            return Err(UrlError::Invalid("no host".into()));
        }
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            (user, Some(password)) => Some(Credentials::new(decode(user), decode(password))),
            // A lone token in the user part, as GitHub accepts: `https://TOKEN@host/…`.
            (token, None) => Some(Credentials::new("x-access-token", decode(token))),
        };
        let _ = url.set_username("");
        let _ = url.set_password(None);
        Ok(Self {
            url: url.to_string(),
            kind: if scheme == "http" {
                RemoteKind::Http
            } else {
                RemoteKind::Https
            },
            credentials,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.url
    }

    pub fn kind(&self) -> RemoteKind {
        self.kind
    }

    /// Credentials that were written into the URL, if any.
    pub fn credentials(&self) -> Option<&Credentials> {
        self.credentials.as_ref()
    }

    /// Host and path (`github.com/org/repo.git`) of an http(s) URL.
    pub fn host_and_path(&self) -> Option<(String, String)> {
        let url = url::Url::parse(&self.url).ok()?;
        Some((url.host_str()?.to_owned(), url.path().to_owned()))
    }
}

/// A git command that may reach the network for `remote`, with `credentials` (if any)
/// offered only through an in-memory credential helper.
fn network_command(
    repo: &Path,
    remote: &RemoteUrl,
    credentials: Option<&Credentials>,
    pinned: &[SocketAddr],
) -> Result<std::process::Command, GitError> {
    let mut cmd = command(repo);
    let transport = match remote.kind {
        RemoteKind::Https => "https",
        RemoteKind::Http => "http",
        RemoteKind::Ssh => "ssh",
        RemoteKind::Local => "file",
    };
    cmd.args(["-c", &format!("protocol.{transport}.allow=always")]);
    if remote.kind == RemoteKind::Ssh {
        // Never wait for a passphrase or a host-key question nobody will answer.
        cmd.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let mut config: Vec<(String, String)> = vec![
        // Redirects could carry a request, and its credentials, to another host.
        ("http.followRedirects".to_owned(), "false".to_owned()),
    ];
    if let Some(resolve) = curl_resolve(remote, pinned) {
        config.push(("http.curloptResolve".to_owned(), resolve));
    }
    if let Some(credentials) = credentials {
        let bad = |s: &str| s.contains(['\n', '\r', '\0']);
        if bad(&credentials.username) || bad(credentials.secret.expose_secret()) {
            return Err(GitError::new(
                "credentials",
                "the username or token contains a line break",
            ));
        }
        // An empty value first clears any helper the repository configures; ours answers
        // only for the remote's own scheme, host and port.
        config.push(("credential.helper".to_owned(), String::new()));
        let scope = url::Url::parse(&remote.url)
            .ok()
            .and_then(|u| {
                let host = u.host_str()?.to_owned();
                Some(match u.port() {
                    Some(port) => format!("{}://{host}:{port}", u.scheme()),
                    None => format!("{}://{host}", u.scheme()),
                })
            })
            .ok_or_else(|| GitError::new("credentials", "credentials need an http(s) URL"))?;
        config.push((
            format!("credential.{scope}.helper"),
            "!f() { test \"$1\" = get && printf 'username=%s\\npassword=%s\\n' \
             \"$DEPLOYGUARD_GIT_USERNAME\" \"$DEPLOYGUARD_GIT_PASSWORD\"; }; f"
                .to_owned(),
        ));
        cmd.env("DEPLOYGUARD_GIT_USERNAME", &credentials.username);
        cmd.env(
            "DEPLOYGUARD_GIT_PASSWORD",
            credentials.secret.expose_secret(),
        );
    }
    cmd.env("GIT_CONFIG_COUNT", config.len().to_string());
    for (i, (key, value)) in config.iter().enumerate() {
        cmd.env(format!("GIT_CONFIG_KEY_{i}"), key);
        cmd.env(format!("GIT_CONFIG_VALUE_{i}"), value);
    }
    Ok(cmd)
}

/// `host:port:addr,…` for curl, so git connects to exactly the addresses that were
/// checked (no second DNS answer can point it elsewhere); `None` for an address literal
/// or when nothing was pinned.
fn curl_resolve(remote: &RemoteUrl, pinned: &[SocketAddr]) -> Option<String> {
    if pinned.is_empty() {
        return None;
    }
    let url = url::Url::parse(&remote.url).ok()?;
    let host = match url.host()? {
        url::Host::Domain(name) => name.to_owned(),
        url::Host::Ipv4(_) | url::Host::Ipv6(_) => return None,
    };
    let port = url.port_or_known_default()?;
    let addrs: Vec<String> = pinned
        .iter()
        .map(|a| match a.ip() {
            std::net::IpAddr::V4(ip) => ip.to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        })
        .collect();
    Some(format!("{host}:{port}:{}", addrs.join(",")))
}

/// How a clone from a remote is made, beyond its URL.
#[derive(Clone, Debug, Default)]
pub struct CloneOptions<'a> {
    pub credentials: Option<&'a Credentials>,
    /// The addresses the host was checked to resolve to; git connects only to these.
    pub pinned: &'a [SocketAddr],
    /// Set (from another thread) to kill git at once.
    pub cancel: Option<&'a AtomicBool>,
    /// The clone is stopped once its directory holds more bytes than this.
    pub max_bytes: Option<u64>,
    /// Only this branch (no tags); `None`: every ref.
    pub branch: Option<&'a str>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CloneError {
    #[error("authentication to {url} failed: {message}")]
    Authentication { url: String, message: String },
    #[error("the repository {url} does not exist or is not accessible: {message}")]
    NotFound { url: String, message: String },
    #[error("the repository is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("the clone was cancelled")]
    Cancelled,
    #[error("{0}")]
    Git(#[from] GitError),
}

/// What git's complaint about a remote says went wrong.
enum Complaint {
    Authentication,
    NotFound,
    Other,
}

fn complaint(stderr: &str, url: &str) -> Complaint {
    // The URL is taken out first: its port or path may contain "401" or "not found".
    let lower = stderr
        .to_ascii_lowercase()
        .replace(&url.to_ascii_lowercase(), "");
    if lower.contains("authentication failed")
        || lower.contains("could not read username")
        || lower.contains("could not read password")
        || lower.contains("permission denied")
        || lower.contains("error: 403")
        || lower.contains("error: 401")
    {
        Complaint::Authentication
    } else if lower.contains("not found")
        || lower.contains("does not appear to be a git repository")
        || lower.contains("error: 404")
    {
        Complaint::NotFound
    } else {
        Complaint::Other
    }
}

/// Clones every ref of a checked remote into `into` (a bare mirror), with credentials in
/// memory, connecting only to the pinned addresses, and stopping at the size limit or
/// when cancelled. A partial clone is left for the caller's directory to remove.
pub fn clone_remote(
    remote: &RemoteUrl,
    into: &Path,
    options: &CloneOptions<'_>,
) -> Result<(), CloneError> {
    let credentials = options.credentials.or(remote.credentials.as_ref());
    let parent = into.parent().unwrap_or(Path::new("."));
    let mut command = network_command(parent, remote, credentials, options.pinned)?;
    command.args(["clone", "--quiet", "--no-hardlinks"]);
    match options.branch {
        Some(branch) => command
            .args(["--bare", "--single-branch", "--no-tags", "--branch"])
            .arg(branch),
        None => command.arg("--mirror"),
    };
    command.arg("--").arg(remote.as_str()).arg(into);
    let running = Running::spawn(command, "clone")?;
    let (status, stderr) = running
        .wait_watched(options.cancel, || {
            options
                .max_bytes
                .is_some_and(|limit| super::disk_usage(into) > limit)
        })
        .map_err(|stopped| match stopped {
            Stopped::Cancelled => CloneError::Cancelled,
            Stopped::Limit => CloneError::TooLarge {
                limit: options.max_bytes.unwrap_or_default(),
            },
            Stopped::Git(e) => CloneError::Git(e),
        })?;
    if status.success() {
        // A clone faster than the watch's first look is measured once more.
        return match options.max_bytes {
            Some(limit) if super::disk_usage(into) > limit => Err(CloneError::TooLarge { limit }),
            _ => Ok(()),
        };
    }
    let url = remote.as_str().to_owned();
    let stderr = scrub(&String::from_utf8_lossy(&stderr), &url, credentials);
    let message = super::stderr_message(stderr.as_bytes(), status);
    Err(match complaint(&stderr, &url) {
        Complaint::Authentication => CloneError::Authentication { url, message },
        Complaint::NotFound => CloneError::NotFound { url, message },
        Complaint::Other => CloneError::Git(GitError::new("clone", message)),
    })
}

/// Removes a URL's user information and any credential from a message.
fn scrub(message: &str, raw_url: &str, credentials: Option<&Credentials>) -> String {
    let mut out = scrub_url(message, raw_url);
    if let Some(credentials) = credentials {
        let secret = credentials.secret.expose_secret();
        if !secret.is_empty() {
            out = out.replace(secret, "***");
        }
    }
    out
}

/// Clones every ref of `url` into `into` (a bare mirror), for scanning a remote.
/// Credentials written into the URL are taken out of it and given to git in memory, so
/// they reach neither the clone's configuration nor a process argument nor a message.
pub fn clone_mirror(url: &str, into: &Path) -> Result<(), GitError> {
    let policy = UrlPolicy {
        allow_http: true,
        allow_ssh: true,
        allow_local: true,
    };
    let remote = RemoteUrl::parse(url, policy)
        .map_err(|e| GitError::new("clone", scrub_url(&e.to_string(), url)))?;
    let credentials = remote.credentials.clone();
    let mut command = network_command(Path::new("."), &remote, credentials.as_ref(), &[])?;
    command
        .args(["clone", "--mirror", "--quiet", "--no-hardlinks", "--"])
        .arg(remote.as_str())
        .arg(into);
    Running::spawn(command, "clone")?
        .finish()
        .map_err(|e| GitError::new(&e.command, scrub(&e.message, url, credentials.as_ref())))
}

/// The user information of `scheme://userinfo@host/…`, if any.
fn url_userinfo(url: &str) -> Option<&str> {
    let (_, rest) = url.split_once("://")?;
    let (userinfo, _) = rest.split_once('@')?;
    (!userinfo.contains('/')).then_some(userinfo)
}

/// The URL with its user information (a token or a password) replaced by `***`.
pub fn redact_url_userinfo(url: &str) -> String {
    match url_userinfo(url) {
        Some(userinfo) => url.replacen(&format!("{userinfo}@"), "***@", 1),
        None => url.to_owned(),
    }
}

/// Removes a URL's user information from a message.
fn scrub_url(message: &str, url: &str) -> String {
    let Some(userinfo) = url_userinfo(url) else {
        return message.to_owned();
    };
    let mut out = message.replace(userinfo, "***");
    for part in userinfo.split(':').filter(|p| p.len() >= 3) {
        out = out.replace(part, "***");
    }
    out
}

/// Asks the user's own git credential helpers (their normal git configuration, so a
/// keychain or a `gh` login works) for credentials for an http(s) remote. `None` when
/// no helper has any. Never prompts.
pub fn credential_fill(remote: &RemoteUrl) -> Option<Credentials> {
    let url = url::Url::parse(remote.as_str()).ok()?;
    let mut request = format!(
        "protocol={}\nhost={}",
        url.scheme(),
        url.host_str().unwrap_or("")
    );
    if let Some(port) = url.port() {
        request.push_str(&format!(":{port}"));
    }
    request.push_str(&format!(
        "\npath={}\n\n",
        url.path().trim_start_matches('/')
    ));
    let mut child = std::process::Command::new("git")
        .args(["credential", "fill"])
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        std::io::Write::write_all(&mut stdin, request.as_bytes()).ok()?;
    }
    let mut out = String::new();
    child.stdout.take()?.read_to_string(&mut out).ok()?;
    if !child.wait().ok()?.success() {
        return None;
    }
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .map(str::to_owned)
    };
    Some(Credentials::new(field("username")?, field("password")?))
}

/// What the remote did with one ref.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RefOutcome {
    Created,
    Updated,
    Forced,
    UpToDate,
    Deleted,
    Rejected,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RefPush {
    pub refname: String,
    pub outcome: RefOutcome,
    /// Why the remote refused (or git's note on an accepted ref).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PushReport {
    pub url: String,
    pub refs: Vec<RefPush>,
    /// Refs of the repository that were not pushed (anything but branches and tags,
    /// such as `refs/pull/*`, which forges refuse).
    pub not_pushed: Vec<String>,
}

impl PushReport {
    pub fn rejected(&self) -> impl Iterator<Item = &RefPush> {
        self.refs
            .iter()
            .filter(|r| r.outcome == RefOutcome::Rejected)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("authentication to {url} failed: {message}")]
    Authentication { url: String, message: String },
    #[error("the target repository {url} does not exist or is not accessible: {message}")]
    NotFound { url: String, message: String },
    #[error("the remote rejected {count} ref(s): {summary}")]
    Rejected {
        count: usize,
        summary: String,
        report: Box<PushReport>,
    },
    #[error("the push was cancelled")]
    Cancelled,
    #[error("{0}")]
    Git(#[from] GitError),
}

#[derive(Clone, Debug, Default)]
pub struct PushOptions<'a> {
    /// Overwrite what the remote has (`+refs/...` refspecs).
    pub force: bool,
    pub credentials: Option<&'a Credentials>,
    /// The addresses the host was checked to resolve to; git connects only to these.
    pub pinned: &'a [SocketAddr],
    /// Set (from another thread) to kill git at once.
    pub cancel: Option<&'a AtomicBool>,
}

/// Pushes every branch and tag of `repo` to `remote` and reports what happened to each.
/// A ref the remote rejects makes the whole call an error ([`PushError::Rejected`])
/// that still carries the per-ref report.
pub fn push(
    repo: &Path,
    remote: &RemoteUrl,
    options: &PushOptions<'_>,
) -> Result<PushReport, PushError> {
    let credentials = options.credentials.or(remote.credentials.as_ref());
    let refs = super::output(repo, &["for-each-ref", "--format=%(refname)"])?;
    let refs = String::from_utf8_lossy(&refs);
    let not_pushed: Vec<String> = refs
        .lines()
        .filter(|r| !r.starts_with("refs/heads/") && !r.starts_with("refs/tags/"))
        .map(str::to_owned)
        .collect();
    let plus = if options.force { "+" } else { "" };
    let mut cmd = network_command(repo, remote, credentials, options.pinned)?;
    cmd.args(["push", "--porcelain", "--no-verify", "--"])
        .arg(remote.as_str())
        .arg(format!("{plus}refs/heads/*:refs/heads/*"))
        .arg(format!("{plus}refs/tags/*:refs/tags/*"))
        .stdout(Stdio::piped());
    let mut running = Running::spawn(cmd, "push")?;
    let reader = running.child().stdout.take().map(|mut pipe| {
        std::thread::spawn(move || {
            let mut out = String::new();
            pipe.read_to_string(&mut out).map(|_| out)
        })
    });
    let (status, stderr) = running
        .wait_watched(options.cancel, || false)
        .map_err(|stopped| match stopped {
            Stopped::Git(e) => PushError::Git(e),
            Stopped::Cancelled | Stopped::Limit => PushError::Cancelled,
        })?;
    let stdout = match reader.map(std::thread::JoinHandle::join) {
        Some(Ok(Ok(out))) => out,
        Some(Ok(Err(e))) => return Err(GitError::new("push", e.to_string()).into()),
        Some(Err(_)) => return Err(GitError::new("push", "reading git's output failed").into()),
        None => String::new(),
    };
    let stderr = scrub(
        &String::from_utf8_lossy(&stderr),
        remote.as_str(),
        credentials,
    );
    let report = PushReport {
        url: remote.as_str().to_owned(),
        refs: parse_porcelain(&stdout),
        not_pushed,
    };
    let rejected: Vec<&RefPush> = report.rejected().collect();
    if !rejected.is_empty() {
        let summary = rejected
            .iter()
            .map(|r| {
                format!(
                    "{} ({})",
                    r.refname,
                    r.reason.as_deref().unwrap_or("rejected")
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        return Err(PushError::Rejected {
            count: rejected.len(),
            summary,
            report: Box::new(report),
        });
    }
    if status.success() {
        return Ok(report);
    }
    let message = super::stderr_message(stderr.as_bytes(), status);
    let url = remote.as_str().to_owned();
    Err(match complaint(&stderr, &url) {
        Complaint::Authentication => PushError::Authentication { url, message },
        Complaint::NotFound => PushError::NotFound { url, message },
        Complaint::Other => PushError::Git(GitError::new("push", message)),
    })
}

/// Parses `git push --porcelain`: `<flag>\t<from>:<to>\t<summary> (<reason>)` per ref.
fn parse_porcelain(stdout: &str) -> Vec<RefPush> {
    let mut refs = Vec::new();
    for line in stdout.lines() {
        let mut fields = line.splitn(3, '\t');
        let (Some(flag), Some(spec), summary) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let outcome = match flag {
            "*" => RefOutcome::Created,
            " " => RefOutcome::Updated,
            "+" => RefOutcome::Forced,
            "=" => RefOutcome::UpToDate,
            "-" => RefOutcome::Deleted,
            "!" => RefOutcome::Rejected,
            _ => continue,
        };
        let refname = spec.rsplit_once(':').map_or(spec, |(_, to)| to).to_owned();
        let summary = summary.unwrap_or("").trim();
        let reason = summary
            .find('(')
            .filter(|_| summary.ends_with(')'))
            .map(|i| summary[i + 1..summary.len() - 1].to_owned())
            .or_else(|| {
                (outcome == RefOutcome::Rejected && !summary.is_empty()).then(|| summary.to_owned())
            });
        refs.push(RefPush {
            refname,
            outcome,
            reason,
        });
    }
    refs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_urls_lose_their_credentials_to_memory() {
        let remote = RemoteUrl::parse(
            "https://alice:s3cr%40t@git.example.com/org/repo.git",
            UrlPolicy::service(),
        )
        .expect("valid");
        assert_eq!(remote.as_str(), "https://git.example.com/org/repo.git");
        let credentials = remote.credentials().expect("credentials kept");
        assert_eq!(credentials.username, "alice");
        assert_eq!(credentials.secret.expose_secret(), "s3cr@t");
        assert!(!format!("{remote:?}").contains("s3cr"));

        let token = RemoteUrl::parse("https://ghp_token@github.com/o/r", UrlPolicy::service())
            .expect("valid");
        assert_eq!(
            token.credentials().map(|c| c.username.as_str()),
            Some("x-access-token")
        );
    }

    #[test]
    fn the_service_policy_accepts_https_only() {
        let service = UrlPolicy::service();
        for (url, expected) in [
            ("http://example.com/r.git", UrlError::Http),
            ("file:///tmp/r.git", UrlError::Local),
            ("/tmp/r.git", UrlError::Local),
            ("../r", UrlError::Local),
            ("ssh://git@example.com/r.git", UrlError::Ssh),
            ("git@example.com:org/r.git", UrlError::Ssh),
            ("ext::sh -c touch% /tmp/x", UrlError::BadCharacters),
            ("ext::sh", UrlError::TransportHelper("ext".into())),
            ("fd::3", UrlError::TransportHelper("fd".into())),
            ("git://example.com/r.git", UrlError::Scheme("git".into())),
            ("--upload-pack=evil", UrlError::LooksLikeOption),
            ("", UrlError::Empty),
        ] {
            assert_eq!(
                RemoteUrl::parse(url, service).err(),
                Some(expected),
                "{url}"
            );
        }
        assert!(RemoteUrl::parse("https://example.com/r.git", service).is_ok());
        let local = UrlPolicy::local_user();
        assert_eq!(
            RemoteUrl::parse("/tmp/r.git", local).map(|r| r.kind()),
            Ok(RemoteKind::Local)
        );
        assert_eq!(
            RemoteUrl::parse("git@example.com:org/r.git", local).map(|r| r.kind()),
            Ok(RemoteKind::Ssh)
        );
    }

    #[test]
    fn porcelain_output_becomes_per_ref_outcomes() {
        let out = "To http://h/r.git\n\
                   *\trefs/heads/new:refs/heads/new\t[new branch]\n\
                   +\trefs/heads/main:refs/heads/main\tabc...def (forced update)\n\
                   !\trefs/heads/dev:refs/heads/dev\t[rejected] (non-fast-forward)\n\
                   !\trefs/tags/v1:refs/tags/v1\t[remote rejected] (pre-receive hook declined)\n\
                   =\trefs/tags/v0:refs/tags/v0\t[up to date]\n\
                   Done\n";
        let refs = parse_porcelain(out);
        let got: Vec<(&str, RefOutcome, Option<&str>)> = refs
            .iter()
            .map(|r| (r.refname.as_str(), r.outcome, r.reason.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("refs/heads/new", RefOutcome::Created, None),
                ("refs/heads/main", RefOutcome::Forced, Some("forced update")),
                (
                    "refs/heads/dev",
                    RefOutcome::Rejected,
                    Some("non-fast-forward")
                ),
                (
                    "refs/tags/v1",
                    RefOutcome::Rejected,
                    Some("pre-receive hook declined")
                ),
                ("refs/tags/v0", RefOutcome::UpToDate, None),
            ]
        );
    }
}
