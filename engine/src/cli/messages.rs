//! `switchboard messages ...`: list and show stored messages, reprocess one, and list, retry
//! or discard dead letters, each one call of a running engine's admin API
//! (`engine::admin_client`). `--json` prints the API's answer as it came.

use anyhow::bail;
use engine::admin_client::{cell, AdminTarget, Table};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::runtime::Runtime;

/// The flags of `switchboard messages`, shared by its subcommands.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The engine's admin API, as host:port or an http:// or https:// URL. Default: the
    /// engine `run --config DIR` starts (admin.listen from DIR/switchboard.toml and
    /// SWITCHBOARD_* variables; port 0 is read from data_dir/engine.json).
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// The engine's configuration folder, as given to `run` [default: conf].
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Bearer token of the admin API. Default: admin.token of the configuration.
    #[arg(
        long,
        env = "SWITCHBOARD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub token: Option<String>,
    /// Print the admin API's answer as one JSON document instead of text.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: MessagesCommand,
}

/// The subcommands of `switchboard messages`.
#[derive(Debug, clap::Subcommand)]
pub enum MessagesCommand {
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

/// Finds the admin API (`--admin`, or the one `--config` names) and makes the call.
///
/// # Errors
///
/// No admin API to be found, an engine that does not answer, or one that refuses the call.
pub fn run(args: Args, rt: &Runtime) -> anyhow::Result<ExitCode> {
    let Args {
        admin,
        config,
        token,
        json,
        command,
    } = args;
    let target = AdminTarget::resolve(
        admin.as_deref(),
        token,
        config.as_deref().unwrap_or(Path::new("conf")),
        config.is_some(),
    )?;
    rt.block_on(messages(&target, json, command))
}

/// `switchboard messages ...`: one admin API call each; `json` prints the answer as it came.
async fn messages(
    target: &AdminTarget,
    json: bool,
    command: MessagesCommand,
) -> anyhow::Result<ExitCode> {
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
            report_dead_letters(&r, "retried", json)?;
        }
        MessagesCommand::Discard {
            destination,
            seq,
            all,
            channel,
        } => {
            let r = dead_letter_action(target, "discard", destination, seq, all, channel).await?;
            report_dead_letters(&r, "discarded", json)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// POSTs a dead-letter retry or discard: one (`DESTINATION SEQ`) or all (`--all`).
/// Prints an admin API answer as indented JSON (`--json`).
fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints what a retry or discard of dead letters did: the answer as JSON, or one line with
/// the count under `done` (`retried`, `discarded`) and the count not found.
fn report_dead_letters(r: &serde_json::Value, done: &str, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    println!(
        "{done} {} dead letter(s), {} not found",
        cell(&r[done]),
        cell(&r["not_found"])
    );
    Ok(())
}

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
