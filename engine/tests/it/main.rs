//! The engines over real git repositories: scanning every kind of history, rewriting it,
//! bundles, and pushing to a real git server.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod bundle;
mod clean;
mod push;
mod scan;
