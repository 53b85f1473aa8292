//! The library against the real services: schema and migrations, object storage, the
//! broker connection through an outage, and the scanner over real git repositories.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod broker;
mod bundle;
mod clean;
mod deploy_config;
mod migrations;
mod push;
mod queue;
mod scan;
mod schema;
mod storage;
mod work;
