//! The library against the real services: schema and migrations, object storage, and
//! the broker connection through an outage.

mod broker;
mod migrations;
mod schema;
mod storage;
