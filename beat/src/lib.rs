//! Beat: publishes the periodic tasks to the default queue on their schedules, once per
//! scheduled time however many beat processes run.
//!
//! - Only the process holding a PostgreSQL advisory lock (on a connection of its own)
//!   publishes; the others try for the lock every second and take over when the
//!   leader's connection goes.
//! - A scheduled time is claimed by inserting `(task, scheduled_for)` into `beat_runs`
//!   (unique) and staging the message in the outbox in the same transaction, so a time
//!   is published once even if two processes believed they led. The leader fires the
//!   latest time due for each task when it is not yet claimed: on taking over, a time
//!   missed while no beat ran fires once (not once per missed time).
//! - tokio-cron-scheduler wakes the leader at each scheduled time; a one-second tick
//!   backs it up.

pub mod fire;
pub mod leader;
pub mod metrics;
pub mod settings;
