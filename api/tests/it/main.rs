//! The API as its users meet it: over HTTP against a spawned server on real services,
//! and as a process started the way operators start it.

mod health;
mod helpers;
mod process;
