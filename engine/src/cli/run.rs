//! `switchboard run`: load a configuration folder and run the engine until SIGINT or SIGTERM;
//! SIGHUP reloads the configuration.

use super::logging;
use super::signals::Signals;
use anyhow::Context;
use engine::config;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::runtime::Runtime;

/// The flags of `switchboard run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder with switchboard.toml and channels/*.toml.
    #[arg(long, default_value = "conf")]
    pub config: PathBuf,
}

/// Runs the engine. A configuration with problems prints every one and exits 2 without
/// starting.
///
/// # Errors
///
/// The engine could not start (a listener, the store).
pub fn run(args: Args, rt: &Runtime) -> anyhow::Result<ExitCode> {
    let Args { config } = args;
    let loaded = match config::load(&config) {
        Ok(c) => c,
        Err(problems) => {
            eprint!("{problems}");
            eprintln!(
                "switchboard: {} problem(s) in {}; not starting.",
                problems.0.len(),
                config.display()
            );
            return Ok(ExitCode::from(2));
        }
    };
    logging::init(&loaded.engine.log);
    rt.block_on(async {
        let mut signals = Signals::listen();
        let engine = engine::Engine::start(loaded)
            .await
            .context("cannot start")?;
        while signals.next().await {
            // Problems and the outcome are logged by the reload itself.
            let _ = engine.reload("signal:SIGHUP").await;
        }
        engine.shutdown().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}
