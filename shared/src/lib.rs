//! DeployGuard's service library: jobs and their records, the task queue, object
//! storage, the database, telemetry, network policy and credentials. The engines (scan,
//! clean, git) are the `deployguard-engine` crate; the service binaries (`api`,
//! `worker`, `beat`) wire both to their transport.

pub mod audit;
pub mod credentials;
pub mod crypto;
pub mod db;
pub mod env;
pub mod health;
pub mod jobs;
pub mod net;
pub mod queue;
pub mod service;
pub mod shutdown;
pub mod storage;
pub mod tasks;
pub mod telemetry;
