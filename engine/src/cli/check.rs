//! `switchboard check`: every problem of a configuration folder, optionally with a probe of
//! every peer. The checks are `engine::check`.

use std::path::PathBuf;
use std::process::ExitCode;
use tokio::runtime::Runtime;

/// The flags of `switchboard check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder with switchboard.toml and channels/*.toml.
    #[arg(long, default_value = "conf")]
    pub config: PathBuf,
    /// Also probe every source and destination (TLS and SSH handshakes with the
    /// configured trust, a GET of HTTP peers, listen addresses bound), 5 s each; exits 1
    /// when one is down. Nothing is delivered.
    #[arg(long)]
    pub connect: bool,
    /// Print {"errors":[...],"warnings":[...]} (and "connections" with --connect) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 on warnings too.
    #[arg(long)]
    pub deny_warnings: bool,
}

/// Checks the folder and prints the report; the exit code is `engine::check::run`'s.
pub fn run(args: Args, rt: &Runtime) -> ExitCode {
    let opts = engine::check::CheckOptions {
        connect: args.connect,
        json: args.json,
        deny_warnings: args.deny_warnings,
    };
    ExitCode::from(rt.block_on(engine::check::run(&args.config, opts)))
}
