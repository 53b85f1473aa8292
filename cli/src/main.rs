//! `deployguard`: scan, clean and push locally, with no broker, database or object store.

mod clean;
mod scan;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use deployguard_engine::scan::{RuleSet, rules};

/// Find leaked secrets in a git repository's whole history, remove the ones you choose
/// by rewriting history, and push the cleaned repository.
#[derive(Parser)]
#[command(name = "deployguard", version)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Find secrets in a repository's whole history, its staged changes, or plain files.
    ///
    /// Exit status: 0 when nothing is found, 1 when secrets are found, 2 on error, 3
    /// (with `--fail-on-skipped`) when nothing is found but some content was not read.
    Scan(Box<scan::ScanArgs>),
    /// Rewrite a repository's whole history without the selected secrets, verify that
    /// none survives, and write the result as a bundle (and optionally an archive).
    ///
    /// The source repository is not modified. Exit status: 0 when the cleaned,
    /// verified bundle was written, 2 on error (nothing is written then).
    Clean(Box<clean::CleanArgs>),
    /// Push every branch and tag of a cleaned repository (or bundle) to a new remote.
    ///
    /// Credentials come from DEPLOYGUARD_GIT_TOKEN (and DEPLOYGUARD_GIT_USERNAME),
    /// GITHUB_TOKEN for GitHub targets, or your git credential helpers; they are never
    /// written to disk. Exit status: 0 when every ref was accepted, 2 otherwise.
    Push(Box<clean::PushArgs>),
    /// Inspect and test detection rules.
    #[command(subcommand)]
    Rules(RulesCommand),
}

#[derive(Subcommand)]
enum RulesCommand {
    /// List the rules shipped in this binary.
    List,
    /// Check rule files: every pattern compiles, every example is reported by its rule
    /// and no negative is.
    Test {
        /// Rule files (`[[rules]]` tables with a `category`); none checks the shipped rules.
        files: Vec<PathBuf>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Command::Scan(args) => scan::run(*args),
        Command::Clean(args) => clean::run_clean(*args),
        Command::Push(args) => clean::run_push(*args),
        Command::Rules(command) => rules_command(command),
    }
}

fn rules_command(command: RulesCommand) -> ExitCode {
    match command {
        RulesCommand::List => match RuleSet::embedded() {
            Ok(set) => {
                let mut out = String::new();
                for rule in set.rules() {
                    out.push_str(&format!(
                        "{:<40} {:<14} {:<6} {}\n",
                        rule.id,
                        rule.category,
                        rule.confidence.as_str(),
                        rule.name
                    ));
                }
                out.push_str(&format!("{} rules\n", set.len()));
                print(&out);
                ExitCode::SUCCESS
            }
            Err(e) => fail(&e.to_string()),
        },
        RulesCommand::Test { files } => {
            let mut set = RuleSet::default();
            if files.is_empty() {
                set = match RuleSet::embedded() {
                    Ok(set) => set,
                    Err(e) => return fail(&e.to_string()),
                };
            }
            for file in &files {
                let text = match std::fs::read_to_string(file) {
                    Ok(text) => text,
                    Err(e) => return fail(&format!("{}: {e}", file.display())),
                };
                if let Err(e) = set.add_file(&file.display().to_string(), &text) {
                    return fail(&e.to_string());
                }
            }
            let mut problems = rules::check_examples(&set, true);
            problems.extend(rules::check_conflicts(&set));
            for problem in &problems {
                eprintln!("{problem}");
            }
            print(&format!(
                "{} rules, {} problems\n",
                set.len(),
                problems.len()
            ));
            if problems.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Writes to standard output; a reader that went away (`| head`) is not an error.
pub(crate) fn print(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

pub(crate) fn fail(message: &str) -> ExitCode {
    eprintln!("deployguard: {message}");
    ExitCode::from(2)
}
