//! Test fixtures on real services, for every crate's integration tests.
//!
//! - [`TestEnv`]: a test's own PostgreSQL database (migrated), RabbitMQ vhost and S3
//!   bucket on the machine's real services, removed when dropped.
//! - [`TcpProxy`]: puts a service out of reach of one test and brings it back.
//! - [`GitServer`]: git smart-HTTP with basic auth over bare repositories.
//! - [`TestRepo`]: a real repository built commit by commit, with deterministic dates.
//! - [`FakeCredentialService`], [`FakeGitHub`]: the two third-party SaaS APIs.
//! - [`Process`]: a service binary run as operators run it; [`JobRow`]: a job row in any
//!   state; [`fixtures`]: the repository with planted secrets.

#[cfg(feature = "services")]
mod env;
mod fakes;
pub mod fixtures;
mod git_repo;
mod git_server;
#[cfg(feature = "services")]
mod jobs;
mod process;
mod proxy;

#[cfg(feature = "services")]
pub use env::{Sections, Services, TestEnv};
pub use fakes::{CredentialRequest, FakeCredentialService, FakeGitHub, FakeRepository};
pub use git_repo::{TestRepo, git_in};
pub use git_server::{GitServer, run_git};
#[cfg(feature = "services")]
pub use jobs::JobRow;
pub use process::{Process, free_addr};
pub use proxy::TcpProxy;

/// Runs `rabbitmqctl -q ACTION` on the machine's broker (`stop_app`, `start_app`), for
/// the tests that take the broker itself away; they run alone, after the parallel pass.
pub fn rabbitmqctl(action: &str) {
    let status = std::process::Command::new("rabbitmqctl")
        .args(["-q", action])
        .status()
        .unwrap_or_else(|e| panic!("running rabbitmqctl {action}: {e}"));
    assert!(status.success(), "rabbitmqctl {action}: {status}");
}
