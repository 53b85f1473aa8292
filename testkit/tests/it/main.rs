//! The harness proves its own promises: isolation between tests, cleanup, and that the
//! git server and fakes behave like the services they stand for.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod fakes;
mod git_server;
mod isolation;
mod proxy;
