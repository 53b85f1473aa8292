//! DeployGuard's library: the domain model, configuration and every adapter and engine.
//! The binaries (`api`, `worker`, `beat`, `cli`) only wire these to their transport.

pub mod clean;
pub mod config;
pub mod credentials;
pub mod crypto;
pub mod db;
pub mod git;
pub mod github;
pub mod health;
pub mod jobs;
pub mod net;
pub mod queue;
pub mod scan;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod telemetry;

pub use config::Config;
