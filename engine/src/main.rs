//! The `switchboard` command: run the engine, check a configuration, send HL7 files, look up
//! messages. `switchboard` alone is `switchboard run`.
//!
//! This file lists the commands and dispatches each to its module in `cli/` (start reading
//! there), which holds the command's flags and what it does.
#![forbid(unsafe_code)]

mod cli;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

// sled allocates and frees many small nodes per write; mimalloc keeps that cheap.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard: an HL7 v2 / FHIR integration engine.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the engine on a configuration folder (the default command).
    Run(cli::run::Args),
    /// Check a configuration folder: every error and warning of every file, each with its
    /// file, key path and a hint. Exits 1 on errors (and on warnings with --deny-warnings).
    Check(cli::check::Args),
    /// Run the test cases of DIR/tests/*.toml: each input goes through its channel's checks,
    /// routes, filters and renderings (no network, no store) and what each destination would
    /// receive is compared with what the case expects; a failure prints a diff. Exits 0 when
    /// every case passes, 1 when one fails, 2 on a problem in a test file (file and key
    /// named). The format is in docs/CONFIG_TESTS.md.
    Test(cli::test::Args),
    /// Send HL7 v2 files to an MLLP listener; with --connections/--repeat/--duration, a load test.
    Send(cli::send::Args),
    /// Dry run: print what an HL7 v2 message becomes (canonical, FHIR or a vendor payload).
    Transform(cli::transform::Args),
    /// Start simulated peers on loopback: OpsPort, Latrexa, Buktor, PX360 and an HIS.
    Sandbox(cli::sandbox::Args),
    /// List and show stored messages, and retry dead letters, through a running engine's
    /// admin API.
    Messages(cli::messages::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run(cli::run::Args {
        config: PathBuf::from("conf"),
    }));
    match dispatch(command) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once: error texts name their cause and also return it as source().
            let text = engine::error_chain::join_once(e.chain().map(ToString::to_string));
            eprintln!("switchboard: {text}");
            ExitCode::from(2)
        }
    }
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match command {
        Command::Run(args) => cli::run::run(args, &rt),
        Command::Check(args) => Ok(cli::check::run(args, &rt)),
        Command::Test(args) => Ok(cli::test::run(args)),
        Command::Send(args) => cli::send::run(args, &rt),
        Command::Transform(args) => cli::transform::run(args),
        Command::Sandbox(args) => cli::sandbox::run(args, &rt),
        Command::Messages(args) => cli::messages::run(args, &rt),
    }
}
