//! The API as its users meet it: over HTTP against a spawned server on real services,
//! and as a process started the way operators start it.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod admin;
mod fuzz;
mod health;
mod helpers;
mod jobs;
mod process;
mod resilience;
