//! `switchboard sandbox`: the simulated peers (OpsPort, Latrexa, Buktor, PX360 and an HIS) on
//! loopback until Ctrl-C, or with `--patients` the traffic generator, which sends synthetic
//! HL7 traffic to a channel and exits.

use super::signals::Signals;
use super::{logging, pass_fail};
use anyhow::Context;
use engine::config::LogConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tokio::runtime::Runtime;
use transforms::dest::Vendor;

/// The flags of `switchboard sandbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// HTTP address of the four cloud APIs (vendors under /opsport, /latrexa, /buktor, /px360).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// MLLP address of the simulated HIS.
    #[arg(long)]
    pub his_listen: Option<SocketAddr>,
    /// TOML file with sandbox settings (keys, refusals, Buktor mapping); see docs/SANDBOX.md.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Traffic mode: generate realistic ADT/SIU/DFT traffic for this many synthetic
    /// patients (four messages each), send it, print a summary and exit (1 when a message
    /// was not accepted). No peers are started in this mode.
    #[arg(
        long,
        requires = "send_to",
        conflicts_with_all = ["listen", "his_listen", "config"]
    )]
    pub patients: Option<usize>,
    /// With --patients: the engine channel (MLLP host:port) to send the traffic to.
    #[arg(long, requires = "patients")]
    pub send_to: Option<String>,
}

/// Runs the sandbox until SIGINT or SIGTERM, printing each peer's address first; or, with
/// `--patients`, sends the traffic.
///
/// # Errors
///
/// An unreadable or invalid `--config` file, a listener that cannot be bound, or (traffic
/// mode) a connection that fails.
pub fn run(args: Args, rt: &Runtime) -> anyhow::Result<ExitCode> {
    let Args {
        listen,
        his_listen,
        config,
        patients,
        send_to,
    } = args;
    if let (Some(n), Some(to)) = (patients, &send_to) {
        return rt.block_on(send_traffic(n, to));
    }
    logging::init(&LogConfig::default());
    let mut cfg: switchboard_sandbox::SandboxConfig = match &config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            toml::from_str(&text).with_context(|| format!("{}", path.display()))?
        }
        None => switchboard_sandbox::SandboxConfig::default(),
    };
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(l) = his_listen {
        cfg.his_mllp_listen = l;
    }
    rt.block_on(async {
        let mut signals = Signals::listen();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let sandbox = switchboard_sandbox::start(cfg, shutdown.clone()).await?;
        for vendor in Vendor::ALL {
            let name = vendor.as_str();
            println!("{name:<8} {}", sandbox.base_url(name));
        }
        println!(
            "his      mllp://{} (state: http://{}/his/_state)",
            sandbox.his_mllp_addr, sandbox.http_addr
        );
        println!("sandbox running; Ctrl-C stops it");
        signals.stop().await;
        shutdown.cancel();
        sandbox.stopped().await;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `switchboard sandbox --patients N --send-to ADDR`: generates the traffic, sends it over
/// one MLLP connection, prints a summary and ends (exit 1 when a message was not accepted).
async fn send_traffic(patients: usize, to: &str) -> anyhow::Result<ExitCode> {
    use switchboard_sandbox::traffic::{generate, TrafficConfig};
    let messages = generate(&TrafficConfig::new(patients, 42, chrono::Utc::now()));
    let mut client =
        channels::mllp::client::MllpClient::connect(to, Duration::from_secs(10)).await?;
    let (mut ok, mut bad) = (0, 0);
    for m in &messages {
        let answer = client.send(m.as_bytes()).await?;
        match transforms::hl7v2::ack::parse_ack(&String::from_utf8_lossy(&answer)) {
            Some(a) if a.code.is_positive() => ok += 1,
            _ => bad += 1,
        }
    }
    println!(
        "sent {} messages for {patients} patients to {to}: {ok} accepted, {bad} not",
        messages.len()
    );
    Ok(pass_fail(bad == 0))
}
