//! The worker: consumes task queues and runs tasks with Celery-grade guarantees (late
//! acknowledgement, redelivery-safe claims, retries through delay queues, dead letters,
//! time limits, cancellation, graceful shutdown). `main.rs` wires it to configuration.

pub mod diagnostic;
pub mod listen;
pub mod metrics;
pub mod records;
pub mod registry;
pub mod runtime;
pub mod settings;
pub mod tasks;
pub mod workdir;
