//! DeployGuard's engines: finding secrets in a repository's whole history ([`scan`]),
//! rewriting that history without the selected ones ([`clean`]) and the git access
//! both stand on ([`git`]: objects, packs, bundles, remotes).
//!
//! Knows nothing of HTTP servers, AMQP, SQL, object storage or the service's settings:
//! the CLI stands on this crate alone, and the worker calls the same code. Blocking
//! throughout; callers that are async run it on blocking threads.

pub mod clean;
pub mod git;
#[cfg(feature = "github")]
pub mod github;
pub mod scan;
