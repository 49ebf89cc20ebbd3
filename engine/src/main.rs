//! The `switchboard` command: run the engine, check a configuration, send HL7 files, look up
//! messages. `switchboard` alone is `switchboard run`.
#![forbid(unsafe_code)]

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use engine::admin_client::{cell, AdminTarget, Table};
use engine::config::{self, LogConfig};
use engine::routing::PayloadKind;
use engine::send::{self, SendOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;
use transforms::dest::{Vendor, VendorOptions};

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
    Run {
        /// Folder with switchboard.toml and channels/*.toml.
        #[arg(long, default_value = "conf")]
        config: PathBuf,
    },
    /// Check a configuration folder: every error and warning of every file, each with its
    /// file, key path and a hint. Exits 1 on errors (and on warnings with --deny-warnings).
    Check {
        /// Folder with switchboard.toml and channels/*.toml.
        #[arg(long, default_value = "conf")]
        config: PathBuf,
        /// Also probe every source and destination (TLS and SSH handshakes with the
        /// configured trust, a GET of HTTP peers, listen addresses bound), 5 s each; exits 1
        /// when one is down. Nothing is delivered.
        #[arg(long)]
        connect: bool,
        /// Print {"errors":[...],"warnings":[...]} (and "connections" with --connect) as JSON.
        #[arg(long)]
        json: bool,
        /// Exit 1 on warnings too.
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Run the test cases of DIR/tests/*.toml: each input goes through its channel's checks,
    /// routes, filters and renderings (no network, no store) and what each destination would
    /// receive is compared with what the case expects; a failure prints a diff. Exits 0 when
    /// every case passes, 1 when one fails, 2 on a problem in a test file (file and key
    /// named). The format is in docs/CONFIG_TESTS.md.
    Test {
        /// Folder with switchboard.toml, channels/*.toml and tests/*.toml.
        #[arg(long, default_value = "conf")]
        config: PathBuf,
        /// Print {"problems":[...],"cases":[...],"passed":N,"failed":N} as JSON.
        #[arg(long)]
        json: bool,
        /// Only the cases whose test file name, channel or case name contains this (any
        /// letter case).
        filter: Option<String>,
    },
    /// Send HL7 v2 files to an MLLP listener; with --connections/--repeat/--duration, a load test.
    Send {
        /// host:port of the MLLP listener.
        #[arg(long)]
        to: String,
        /// Files: one message, several messages, or an FHS/BHS batch each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Parallel connections (load mode when above 1).
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Send the set this many times per connection (load mode).
        #[arg(long, conflicts_with = "duration")]
        repeat: Option<u64>,
        /// Keep sending for this many seconds (load mode).
        #[arg(long)]
        duration: Option<f64>,
        /// Seconds to wait for each answer.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
        /// Speak TLS, trusting the CA certificates in this PEM file.
        #[arg(long)]
        tls_ca: Option<PathBuf>,
        /// With --tls-ca: present this client certificate (PEM) for mutual TLS.
        #[arg(long, requires = "tls_ca", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// With --tls-cert: the client certificate's private key (PEM).
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// With --tls-ca: the name the listener's certificate must carry (default: the host
        /// of --to).
        #[arg(long, requires = "tls_ca")]
        tls_server_name: Option<String>,
        /// At most this many messages per second over all connections (load mode).
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Dry run: print what an HL7 v2 message becomes (canonical, FHIR or a vendor payload).
    Transform {
        /// canonical, fhir, or a vendor: opsport, buktor, px360, latrexa.
        #[arg(long, value_parser = transform_target)]
        to: PayloadKind,
        /// TOML file with the vendor's options (what its destination's `options` table holds;
        /// Latrexa: `walk_in_registrations`); defaults otherwise.
        #[arg(long)]
        options: Option<PathBuf>,
        /// TOML file with a field mapping (what a destination's `[destination.mapping]` table
        /// holds), applied after the built-in rendering; see conf/examples/mappings/.
        #[arg(long)]
        mapping: Option<PathBuf>,
        /// A file with one HL7 v2 message (or several; each is shown).
        file: PathBuf,
    },
    /// Start simulated peers on loopback: OpsPort, Latrexa, Buktor, PX360 and an HIS.
    Sandbox {
        /// HTTP address of the four cloud APIs (vendors under /opsport, /latrexa, /buktor, /px360).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// MLLP address of the simulated HIS.
        #[arg(long)]
        his_listen: Option<std::net::SocketAddr>,
        /// TOML file with sandbox settings (keys, refusals, Buktor mapping); see docs/SANDBOX.md.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Traffic mode: generate realistic ADT/SIU/DFT traffic for this many synthetic
        /// patients (four messages each), send it, print a summary and exit (1 when a message
        /// was not accepted). No peers are started in this mode.
        #[arg(
            long,
            requires = "send_to",
            conflicts_with_all = ["listen", "his_listen", "config"]
        )]
        patients: Option<usize>,
        /// With --patients: the engine channel (MLLP host:port) to send the traffic to.
        #[arg(long, requires = "patients")]
        send_to: Option<String>,
    },
    /// List and show stored messages, and retry dead letters, through a running engine's
    /// admin API.
    Messages {
        /// The engine's admin API, as host:port or an http:// or https:// URL. Default: the
        /// engine `run --config DIR` starts (admin.listen from DIR/switchboard.toml and
        /// SWITCHBOARD_* variables; port 0 is read from data_dir/engine.json).
        #[arg(long, global = true)]
        admin: Option<String>,
        /// The engine's configuration folder, as given to `run` [default: conf].
        #[arg(long, global = true)]
        config: Option<PathBuf>,
        /// Bearer token of the admin API. Default: admin.token of the configuration.
        #[arg(
            long,
            env = "SWITCHBOARD_ADMIN_TOKEN",
            hide_env_values = true,
            global = true
        )]
        token: Option<String>,
        /// Print the admin API's answer as one JSON document instead of text.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        command: MessagesCommand,
    },
}

#[derive(Debug, Subcommand)]
enum MessagesCommand {
    /// List messages, newest first.
    List {
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only this MSH-10.
        #[arg(long)]
        control_id: Option<String>,
        /// Only messages carrying this business identifier (patient id, visit number,
        /// appointment id, order number); looked up in the index.
        #[arg(long)]
        key: Option<String>,
        /// With --key: patient_id (mrn), visit_number (visit), appointment_id
        /// (appointment) or order_number (order).
        #[arg(long, requires = "key")]
        key_type: Option<String>,
        /// Only this status (received, rejected).
        #[arg(long)]
        status: Option<String>,
        /// Only messages since this time (RFC 3339 or Unix ms).
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Show one message: metadata, the raw message, the answer sent, deliveries, attempts.
    Show {
        /// The message id.
        id: String,
    },
    /// Send a message again through the current configuration.
    Reprocess {
        /// The message id.
        id: String,
        /// Only to these destinations of its channel (repeatable).
        #[arg(long = "destination")]
        destinations: Vec<String>,
    },
    /// List dead letters.
    DeadLetters {
        /// Only this channel.
        #[arg(long)]
        channel: Option<String>,
        /// Only this destination (`channel/name`).
        #[arg(long)]
        destination: Option<String>,
    },
    /// Retry dead letters: one (`DESTINATION SEQ`) or all (`--all`, with filters).
    Retry {
        /// `channel/name` of the destination.
        destination: Option<String>,
        /// The dead letter's seq.
        seq: Option<u64>,
        /// Every dead letter (of --channel, if given).
        #[arg(long)]
        all: bool,
        /// With --all: only this channel.
        #[arg(long)]
        channel: Option<String>,
    },
    /// Discard dead letters for good: one (`DESTINATION SEQ`) or all (`--all`).
    Discard {
        /// `channel/name` of the destination.
        destination: Option<String>,
        /// The dead letter's seq.
        seq: Option<u64>,
        /// Every dead letter (of --channel, if given).
        #[arg(long)]
        all: bool,
        /// With --all: only this channel.
        #[arg(long)]
        channel: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Run {
        config: PathBuf::from("conf"),
    });
    match run(command) {
        Ok(code) => code,
        Err(e) => {
            // Each cause once: error texts name their cause and also return it as source().
            let text = engine::error_chain::join_once(e.chain().map(ToString::to_string));
            eprintln!("switchboard: {text}");
            ExitCode::from(2)
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    match command {
        Command::Run { config } => {
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
            init_logging(&loaded.engine.log);
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
        Command::Check {
            config,
            connect,
            json,
            deny_warnings,
        } => {
            let opts = engine::check::CheckOptions {
                connect,
                json,
                deny_warnings,
            };
            Ok(ExitCode::from(
                rt.block_on(engine::check::run(&config, opts)),
            ))
        }
        Command::Test {
            config,
            json,
            filter,
        } => {
            // No logging is set up: what the engine would log about a case (a mapping
            // failure) is in the test's own report.
            let opts = engine::config_test::TestOptions { json, filter };
            Ok(ExitCode::from(engine::config_test::run(&config, &opts)))
        }
        Command::Send {
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
        } => {
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
                    Ok(if report.negative == 0 && report.sent > 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                } else {
                    let answers = send::send_plain(&opts, &messages).await?;
                    let mut all_ok = true;
                    for a in &answers {
                        println!("{}", a.line());
                        all_ok &= a.code.is_some_and(|c| c.is_positive());
                    }
                    Ok(if all_ok {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    })
                }
            })
        }
        Command::Transform {
            to,
            options,
            mapping,
            file,
        } => {
            let mapping = match &mapping {
                Some(path) => match load_field_mapping(path)? {
                    Ok(m) => Some(m),
                    Err(problems) => {
                        for p in &problems {
                            println!("{p}");
                        }
                        return Ok(ExitCode::from(2));
                    }
                },
                None => None,
            };
            let messages = send::load_messages(std::slice::from_ref(&file))?;
            let opts_text = match &options {
                Some(p) => std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read {}", p.display()))?,
                None => String::new(),
            };
            // The vendor's options, read once; rendered below by the function routing uses.
            let vendor_options = match to.vendor() {
                Some(vendor) => Some(
                    VendorOptions::deserialize_for(vendor, toml::Deserializer::new(&opts_text))
                        .context("--options")?,
                ),
                None => None,
            };
            let mut failed = false;
            for (what, bytes) in &messages {
                let (text, _) = transforms::hl7v2::charset::decode(
                    bytes,
                    transforms::hl7v2::charset::Charset::Utf8,
                )
                .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
                let msg = transforms::hl7v2::access::V2Message::parse(&text)
                    .map_err(|e| anyhow::anyhow!("{what}: cannot parse: {e}"))?;
                let events = match transforms::v2_to_event(&msg) {
                    Ok(transforms::Mapped::Event(e)) => vec![*e],
                    Ok(transforms::Mapped::MasterFile(mf)) => {
                        for why in mf.rejections() {
                            println!("{what}: record rejected: {why}");
                            failed = true;
                        }
                        mf.events
                    }
                    Ok(transforms::Mapped::Unsupported { message_type }) => {
                        println!("{what}: {message_type} is not mapped (unsupported message type)");
                        failed = true;
                        continue;
                    }
                    Err(e) => {
                        println!("{what}: mapping error: {e}");
                        failed = true;
                        continue;
                    }
                };
                // A master file is one event per record.
                for event in events {
                    let mut out: serde_json::Value = match to {
                        PayloadKind::Canonical => serde_json::to_value(&event)?,
                        PayloadKind::Fhir => {
                            match transforms::fhir::render_bundle(&event, &Default::default()) {
                                Ok(r) => r.map(|r| r.body).unwrap_or(serde_json::Value::Null),
                                Err(e) => {
                                    println!("{what}: FHIR error: {e}");
                                    failed = true;
                                    continue;
                                }
                            }
                        }
                        PayloadKind::Vendor(vendor) => {
                            let options = match &vendor_options {
                                Some(o) => std::borrow::Cow::Borrowed(o),
                                None => std::borrow::Cow::Owned(vendor.default_options()),
                            };
                            match transforms::dest::render(&options, &event, None) {
                                Ok(items) => serde_json::Value::Array(
                                    items
                                        .into_iter()
                                        .map(|mut r| {
                                            if let Some(m) = &mapping {
                                                m.apply(&mut r.body);
                                            }
                                            serde_json::json!({"path": r.path, "kind": r.kind, "idempotency_key": r.idempotency_key, "body": r.body})
                                        })
                                        .collect(),
                                ),
                                Err(e) => {
                                    println!("{what}: mapping error: {e}");
                                    failed = true;
                                    continue;
                                }
                            }
                        }
                        PayloadKind::Hl7 | PayloadKind::Dicom => {
                            bail!("--to {to}: {}", transform_targets())
                        }
                    };
                    // Vendor bodies were mapped one by one above; canonical and FHIR are one body.
                    if let (Some(m), PayloadKind::Canonical | PayloadKind::Fhir) = (&mapping, to) {
                        m.apply(&mut out);
                    }
                    println!("{}", serde_json::to_string_pretty(&out)?);
                }
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Sandbox {
            listen,
            his_listen,
            config,
            patients,
            send_to,
        } => {
            if let (Some(n), Some(to)) = (patients, &send_to) {
                return rt.block_on(send_traffic(n, to));
            }
            init_logging(&LogConfig::default());
            let mut cfg: channels::sandbox::SandboxConfig = match &config {
                Some(path) => {
                    let text = std::fs::read_to_string(path)
                        .with_context(|| format!("cannot read {}", path.display()))?;
                    toml::from_str(&text).with_context(|| format!("{}", path.display()))?
                }
                None => channels::sandbox::SandboxConfig::default(),
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
                let sandbox = channels::sandbox::start(cfg, shutdown.clone()).await?;
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
        Command::Messages {
            admin,
            config,
            token,
            json,
            command,
        } => {
            let target = AdminTarget::resolve(
                admin.as_deref(),
                token,
                config.as_deref().unwrap_or(Path::new("conf")),
                config.is_some(),
            )?;
            rt.block_on(messages(&target, json, command))
        }
    }
}

/// `switchboard messages ...`: one admin API call each; `json` prints the answer as it came.
async fn messages(
    target: &AdminTarget,
    json: bool,
    command: MessagesCommand,
) -> anyhow::Result<ExitCode> {
    let print_json = |v: &serde_json::Value| -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(v)?);
        Ok(())
    };
    match command {
        MessagesCommand::List {
            channel,
            control_id,
            key,
            key_type,
            status,
            since,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("channel", channel),
                ("control_id", control_id),
                ("key", key),
                ("key_type", key_type),
                ("status", status),
                ("since", since),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let body = target.get_json("/api/messages", &q).await?;
            if json {
                return print_json(&body).map(|()| ExitCode::SUCCESS);
            }
            let items = body["items"].as_array().cloned().unwrap_or_default();
            let mut table = Table::new(&[
                "ID",
                "CHANNEL",
                "RECEIVED",
                "TYPE",
                "CONTROL ID",
                "STATUS",
                "ACK",
            ]);
            for m in &items {
                table.row(
                    [
                        "id",
                        "channel",
                        "received_at",
                        "message_type",
                        "control_id",
                        "status",
                        "ack_code",
                    ]
                    .iter()
                    .map(|k| cell(&m[*k]))
                    .collect(),
                );
            }
            print!("{}", table.render());
            println!("{} message(s)", items.len());
        }
        MessagesCommand::Show { id } => {
            let body = target.get_json(&format!("/api/messages/{id}"), &[]).await?;
            if json {
                return print_json(&body).map(|()| ExitCode::SUCCESS);
            }
            let mut shown = body.clone();
            if let Some(o) = shown.as_object_mut() {
                o.remove("raw");
                o.remove("ack");
            }
            print_json(&shown)?;
            println!(
                "--- raw ---\n{}",
                body["raw"].as_str().unwrap_or_default().replace('\r', "\n")
            );
            println!(
                "--- answer sent ---\n{}",
                body["ack"].as_str().unwrap_or_default().replace('\r', "\n")
            );
        }
        MessagesCommand::Reprocess { id, destinations } => {
            let body = if destinations.is_empty() {
                serde_json::json!({})
            } else {
                serde_json::json!({ "destinations": destinations })
            };
            let r = target
                .post_json(&format!("/api/messages/{id}/reprocess"), &body)
                .await?;
            if json {
                return print_json(&r).map(|()| ExitCode::SUCCESS);
            }
            println!("message {id}: {}", cell(&r["status"]));
        }
        MessagesCommand::DeadLetters {
            channel,
            destination,
        } => {
            let mut q = vec![("limit", "1000".to_string())];
            for (k, v) in [("channel", channel), ("destination", destination)] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let body = target.get_json("/api/dead-letters", &q).await?;
            if json {
                return print_json(&body).map(|()| ExitCode::SUCCESS);
            }
            let items = body["items"].as_array().cloned().unwrap_or_default();
            let mut table = Table::new(&["DESTINATION", "SEQ", "MESSAGE", "ATTEMPTS", "REASON"]);
            for d in &items {
                table.row(
                    ["destination", "seq", "message_id", "attempts", "reason"]
                        .iter()
                        .map(|k| cell(&d[*k]))
                        .collect(),
                );
            }
            print!("{}", table.render());
            println!("{} dead letter(s)", items.len());
        }
        MessagesCommand::Retry {
            destination,
            seq,
            all,
            channel,
        } => {
            let r = dead_letter_action(target, "retry", destination, seq, all, channel).await?;
            if json {
                return print_json(&r).map(|()| ExitCode::SUCCESS);
            }
            println!(
                "retried {} dead letter(s), {} not found",
                cell(&r["retried"]),
                cell(&r["not_found"])
            );
        }
        MessagesCommand::Discard {
            destination,
            seq,
            all,
            channel,
        } => {
            let r = dead_letter_action(target, "discard", destination, seq, all, channel).await?;
            if json {
                return print_json(&r).map(|()| ExitCode::SUCCESS);
            }
            println!(
                "discarded {} dead letter(s), {} not found",
                cell(&r["discarded"]),
                cell(&r["not_found"])
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// POSTs a dead-letter retry or discard: one (`DESTINATION SEQ`) or all (`--all`).
async fn dead_letter_action(
    target: &AdminTarget,
    action: &str,
    destination: Option<String>,
    seq: Option<u64>,
    all: bool,
    channel: Option<String>,
) -> anyhow::Result<serde_json::Value> {
    let body = match (all, destination, seq) {
        (true, dest, _) => {
            serde_json::json!({ "all": true, "channel": channel, "destination": dest })
        }
        (false, Some(d), Some(q)) => {
            serde_json::json!({ "items": [{ "destination": d, "seq": q }] })
        }
        _ => bail!("give DESTINATION SEQ, or --all"),
    };
    Ok(target
        .post_json(&format!("/api/dead-letters/{action}"), &body)
        .await?)
}

/// `switchboard sandbox --patients N --send-to ADDR`: generates the traffic, sends it over
/// one MLLP connection, prints a summary and ends (exit 1 when a message was not accepted).
async fn send_traffic(patients: usize, to: &str) -> anyhow::Result<ExitCode> {
    use channels::sandbox::traffic::{generate, TrafficConfig};
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
    Ok(if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn init_logging(log: &LogConfig) {
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
        config::LogFormat::Human => builder.init(),
        config::LogFormat::Json => builder.json().init(),
    }
}

/// Waits for SIGINT/SIGTERM (returns false) or SIGHUP (returns true: reload).
/// SIGTERM, SIGINT (Ctrl-C) and SIGHUP, listened for from the moment this is made. Made
/// before the engine or the sandbox says it runs, so that a signal sent right after that line
/// stops it cleanly instead of killing it with the default action.
struct Signals {
    #[cfg(unix)]
    unix: Option<UnixSignals>,
}

#[cfg(unix)]
struct UnixSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers; call inside the runtime.
    fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(int), Ok(hup)) => Some(UnixSignals { term, int, hup }),
                _ => None,
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Waits for the next signal: `true` for SIGHUP (reload), `false` for a stop.
    async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(u) = &mut self.unix {
            return tokio::select! {
                _ = u.term.recv() => false,
                _ = u.int.recv() => false,
                _ = u.hup.recv() => true,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        false
    }

    /// Waits for a stop signal; SIGHUP is ignored.
    async fn stop(&mut self) {
        while self.next().await {}
    }
}

/// Reads a `--mapping` file: a TOML table deserializing to `FieldMapping`. The outer error is
/// an unreadable file; the inner list is every problem, each naming the file and the key.
fn load_field_mapping(
    path: &std::path::Path,
) -> anyhow::Result<Result<transforms::mapping::FieldMapping, Vec<String>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shown = path.display();
    let mapping: transforms::mapping::FieldMapping = match toml::from_str(&text) {
        Ok(m) => m,
        // toml names the key and the line, e.g. "unknown field `renames`, expected one of ...".
        Err(e) => return Ok(Err(vec![format!("{shown}: {}", e.to_string().trim_end())])),
    };
    let problems = mapping.validate();
    if problems.is_empty() {
        Ok(Ok(mapping))
    } else {
        Ok(Err(problems
            .iter()
            .map(|p| format!("{shown}: {p}"))
            .collect()))
    }
}

/// The payloads `switchboard transform --to` renders, as its error lists them.
fn transform_targets() -> String {
    let vendors: Vec<&str> = Vendor::ALL.map(Vendor::as_str).to_vec();
    format!("use canonical, fhir, {}", vendors.join(", "))
}

/// Reads `--to`: `canonical`, `fhir` or a vendor.
fn transform_target(name: &str) -> Result<PayloadKind, String> {
    match PayloadKind::parse(name) {
        Some(kind @ (PayloadKind::Canonical | PayloadKind::Fhir | PayloadKind::Vendor(_))) => {
            Ok(kind)
        }
        Some(PayloadKind::Hl7 | PayloadKind::Dicom) | None => Err(transform_targets()),
    }
}
