//! Logging of the commands that run servers (`run`, `sandbox`): `tracing` to stderr, as the
//! configuration's `[log]` table says. The other commands print their results and set up no
//! logging.

use engine::config::{LogConfig, LogFormat};

/// Installs the global `tracing` subscriber: `RUST_LOG` if set, else `log.level`; colour and
/// format as `log` says.
pub fn init(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // `log.color = "auto"`: colour only for a person at a terminal, so a log file or a
    // journal gets plain text; NO_COLOR (https://no-color.org) turns it off.
    let colour = log.color.enabled(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").is_some(),
    );
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
