//! `switchboard test`: the test cases of a configuration folder (`DIR/tests/*.toml`), run
//! without network or store by `engine::config_test`.

use std::path::PathBuf;
use std::process::ExitCode;

/// The flags of `switchboard test`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder with switchboard.toml, channels/*.toml and tests/*.toml.
    #[arg(long, default_value = "conf")]
    pub config: PathBuf,
    /// Print {"problems":[...],"cases":[...],"passed":N,"failed":N} as JSON.
    #[arg(long)]
    pub json: bool,
    /// Only the cases whose test file name, channel or case name contains this (any
    /// letter case).
    pub filter: Option<String>,
}

/// Runs the cases and prints the report; the exit code is `engine::config_test::run`'s.
pub fn run(args: Args) -> ExitCode {
    // No logging is set up: what the engine would log about a case (a mapping failure) is in
    // the test's own report.
    let opts = engine::config_test::TestOptions {
        json: args.json,
        filter: args.filter,
    };
    ExitCode::from(engine::config_test::run(&args.config, &opts))
}
