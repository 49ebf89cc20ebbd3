//! `switchboard transform`: a dry run of the mappings. Each message of a file becomes what a
//! route would send: the canonical event, a FHIR bundle or a vendor's requests, through the
//! same render functions routing uses (`transforms::dest::render`), optionally with a field
//! mapping applied. Nothing is sent and nothing is stored.

use super::pass_fail;
use anyhow::{bail, Context};
use engine::routing::PayloadKind;
use engine::send;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use transforms::dest::{Vendor, VendorOptions};

/// The flags of `switchboard transform`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// canonical, fhir, or a vendor: opsport, buktor, px360, latrexa.
    #[arg(long, value_parser = transform_target)]
    pub to: PayloadKind,
    /// TOML file with the vendor's options (what its destination's `options` table holds;
    /// Latrexa: `walk_in_registrations`); defaults otherwise.
    #[arg(long)]
    pub options: Option<PathBuf>,
    /// TOML file with a field mapping (what a destination's `[destination.mapping]` table
    /// holds), applied after the built-in rendering; see conf/examples/mappings/.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// A file with one HL7 v2 message (or several; each is shown).
    pub file: PathBuf,
}

/// Prints what each message becomes. Exit 0 when every message maps, 1 when one does not
/// (its reason printed), 2 on problems in the `--mapping` file (each printed).
///
/// # Errors
///
/// An unreadable file, `--options` that do not deserialize, or a message that is not HL7 v2.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Args {
        to,
        options,
        mapping,
        file,
    } = args;
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
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
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
        let (text, _) =
            transforms::hl7v2::charset::decode(bytes, transforms::hl7v2::charset::Charset::Utf8)
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
    Ok(pass_fail(!failed))
}

/// Reads a `--mapping` file: a TOML table deserializing to `FieldMapping`. The outer error is
/// an unreadable file; the inner list is every problem, each naming the file and the key.
fn load_field_mapping(
    path: &Path,
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
