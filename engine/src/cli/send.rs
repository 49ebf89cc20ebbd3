//! `switchboard send`: HL7 v2 files to an MLLP listener, one pass with every answer printed,
//! or a load test (`--connections`, `--repeat`, `--duration`, `--rate`) with a summary line.
//! The sending is `engine::send`.

use super::pass_fail;
use anyhow::bail;
use engine::send::{self, SendOptions};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::runtime::Runtime;

/// The flags of `switchboard send`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// host:port of the MLLP listener.
    #[arg(long)]
    pub to: String,
    /// Files: one message, several messages, or an FHS/BHS batch each.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Parallel connections (load mode when above 1).
    #[arg(long, default_value_t = 1)]
    pub connections: usize,
    /// Send the set this many times per connection (load mode).
    #[arg(long, conflicts_with = "duration")]
    pub repeat: Option<u64>,
    /// Keep sending for this many seconds (load mode).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Seconds to wait for each answer.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Speak TLS, trusting the CA certificates in this PEM file.
    #[arg(long)]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: present this client certificate (PEM) for mutual TLS.
    #[arg(long, requires = "tls_ca", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// With --tls-cert: the client certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// With --tls-ca: the name the listener's certificate must carry (default: the host
    /// of --to).
    #[arg(long, requires = "tls_ca")]
    pub tls_server_name: Option<String>,
    /// At most this many messages per second over all connections (load mode).
    #[arg(long)]
    pub rate: Option<f64>,
}

/// Sends the files. Exit 0 when every answer is positive (load mode: and at least one
/// message was sent), 1 otherwise.
///
/// # Errors
///
/// Bad flags, an unreadable file, TLS files that do not load, or a connection that fails.
pub fn run(args: Args, rt: &Runtime) -> anyhow::Result<ExitCode> {
    let Args {
        to,
        files,
        connections,
        repeat,
        duration,
        timeout,
        tls_ca,
        tls_cert,
        tls_key,
        tls_server_name,
        rate,
    } = args;
    if connections == 0 {
        bail!("--connections must be at least 1");
    }
    let tls = match tls_ca {
        None => None,
        Some(ca) => {
            use channels::tls::{ClientTlsConfig, PemSource};
            let cfg = ClientTlsConfig {
                ca: PemSource::Path(ca),
                cert: tls_cert.map(PemSource::Path),
                key: tls_key.map(PemSource::Path),
                server_name: tls_server_name,
            };
            match cfg.load() {
                Ok(t) => Some(t),
                Err(problems) => {
                    let text: Vec<String> = problems
                        .iter()
                        .map(|(k, m)| format!("--tls-{}: {m}", k.replace('_', "-")))
                        .collect();
                    bail!("{}", text.join("; "));
                }
            }
        }
    };
    let opts = SendOptions {
        tls,
        to,
        files,
        connections,
        repeat,
        duration: duration.map(Duration::from_secs_f64),
        timeout: Duration::from_secs_f64(timeout),
        rate,
    };
    let messages = send::load_messages(&opts.files)?;
    let load_mode = opts.connections > 1
        || opts.repeat.is_some()
        || opts.duration.is_some()
        || opts.rate.is_some();
    rt.block_on(async {
        if load_mode {
            let report = send::send_load(&opts, &messages).await?;
            println!("{}", report.line());
            Ok(pass_fail(report.negative == 0 && report.sent > 0))
        } else {
            let answers = send::send_plain(&opts, &messages).await?;
            let mut all_ok = true;
            for a in &answers {
                println!("{}", a.line());
                all_ok &= a.code.is_some_and(|c| c.is_positive());
            }
            Ok(pass_fail(all_ok))
        }
    })
}
