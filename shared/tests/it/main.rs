//! The service library against the real services: schema and migrations, object
//! storage, the broker connection through an outage.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod broker;
mod migrations;
mod queue;
mod schema;
mod storage;
mod work;
