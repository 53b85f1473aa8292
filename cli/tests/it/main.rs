//! The `deployguard` command as people and pipelines run it: flags, files, output
//! formats and exit codes, over real repositories.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

mod clean;
mod scan;
