//! `deployguard`: scan, clean and push locally, with no broker, database or object store.

use clap::Parser;

/// Find leaked secrets in a git repository's whole history, remove the ones you choose
/// by rewriting history, and push the cleaned repository.
#[derive(Parser)]
#[command(name = "deployguard", version)]
struct Args {}

fn main() {
    Args::parse();
}
