//! The harness proves its own promises: isolation between tests, cleanup, and that the
//! git server and fakes behave like the services they stand for.

mod fakes;
mod git_server;
mod isolation;
mod proxy;
