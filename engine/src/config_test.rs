//! `switchboard test`: test cases kept beside the channels (`DIR/tests/*.toml`), run through
//! the channel's real checks, routes, filters and renderings, without network or store.
//!
//! A test file names one channel and holds `[[case]]` tables: an input (an HL7 v2 message, a
//! JSON body for an HTTP source, or a Latrexa booking) and what each destination must receive
//! (the exact payload, some fields, an error, or nothing). Each input goes the way the engine
//! takes it: the ingest's checks ([`crate::ingest::ChannelIngest::decide`] for HL7 v2,
//! [`crate::ingest_http::decide`] for JSON, the source's own path routing), then
//! [`Router::render`], which renders every payload (through [`crate::formats`] and
//! [`crate::vendor`]) exactly as it is written to the outbox and sent. A Latrexa bookings
//! channel renders the message its HIS would get ([`crate::latrexa_bookings::his_request`]).
//!
//! What a test does not see: the HTTP layer's own checks (peer allow-list, credentials,
//! signatures, content type, size, Buktor's timestamp window), resend recognition, and
//! what depends on earlier messages in the store (an OpsPort slot closed by a reschedule, a
//! clinic or doctor upsert sent once, a Latrexa booking the HIS accepted before). Each case
//! starts from an empty store. The message ids are 1, 2, ... in the order of the case's
//! messages; a Latrexa channel's HIS message has MSH-10 `1` and MSH-7 [`TEST_CLOCK`].
//!
//! The file format, every key, is in `docs/CONFIG_TESTS.md`.

use crate::config::{self, deserialize_every, structure_problem, ChannelConfig, Problem};
use crate::routing::Router;
use crate::store::kind::ItemPayload;
use crate::store::{MessageRecord, Status};
use channels::clinic_api::latrexa_bookings::{BookingInput, BookingsConfig};
use channels::source::{JsonBody, JsonFormat, RecordFormat};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use transforms::hl7v2::ack::Verdict;
use transforms::hl7v2::charset::Charset;

/// The time a test's Latrexa HIS message carries in MSH-7: 2025-01-01T00:00:00Z.
pub const TEST_CLOCK: &str = "2025-01-01T00:00:00Z";

/// The destination name under which a Latrexa bookings channel's HIS (`[source.his]`) is
/// expected.
pub const LATREXA_HIS: &str = "his";

// ---------------------------------------------------------------------------------------
// The file as written.

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileToml {
    channel: String,
    #[serde(default)]
    channel_file: Option<String>,
    #[serde(default, rename = "case")]
    cases: Vec<CaseToml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseToml {
    name: String,
    input: InputToml,
    #[serde(default)]
    expect: toml::Table,
    #[serde(default)]
    rejected: Option<RejectedToml>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RejectedToml {
    Yes(bool),
    Containing(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputToml {
    #[serde(default)]
    hl7: Option<String>,
    #[serde(default)]
    hl7_file: Option<String>,
    #[serde(default)]
    json: Option<String>,
    #[serde(default)]
    json_file: Option<String>,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    method: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectToml {
    #[serde(default)]
    nothing: bool,
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    payload: Option<String>,
    #[serde(default)]
    payload_file: Option<String>,
    #[serde(default)]
    fields: toml::Table,
    #[serde(default)]
    absent: Vec<String>,
    #[serde(default)]
    error: Option<String>,
}

// ---------------------------------------------------------------------------------------
// The file, checked.

/// One test file, checked: its channel and its cases.
pub struct TestFile {
    /// The test file as given (under `DIR/tests/`).
    pub file: PathBuf,
    /// The channel under test.
    pub channel: ChannelConfig,
    /// Where the channel was read from.
    pub channel_file: PathBuf,
    router: Option<Router>,
    charset_fallback: Charset,
    /// The cases, in file order.
    pub cases: Vec<Case>,
}

/// One `[[case]]`, checked.
pub struct Case {
    /// Its index in the file (`case[N]`).
    pub index: usize,
    /// `name`.
    pub name: String,
    input: Input,
    /// Per destination, in file order of the keys: what each delivery must be.
    expect: Vec<(String, Vec<Expect>)>,
    /// `rejected`: `Some("")` for `true`, the text the reason must contain otherwise.
    rejected: Option<String>,
}

enum Input {
    /// HL7 v2 messages, each as the listener would hand it over.
    Hl7(Vec<Vec<u8>>),
    /// A JSON body as the HTTP source hands it over.
    Json(JsonBody),
    /// A Latrexa booking (the JSON of one pending booking).
    Booking(Vec<u8>),
}

struct Expect {
    /// `case[N].expect.<destination>` (with `[M]` for a list).
    key: String,
    nothing: bool,
    path: Option<String>,
    /// The text and where it came from (`payload` or the file).
    payload: Option<(String, String)>,
    fields: Vec<(String, serde_json::Value)>,
    absent: Vec<String>,
    error: Option<String>,
}

/// What [`inspect`] found in `DIR/tests/`.
pub struct TestInspection {
    /// The files without a problem.
    pub files: Vec<TestFile>,
    /// How many `tests/*.toml` files there are, right or not.
    pub file_count: usize,
    /// Problems of the test files, and of channel files they name outside `channels/`.
    pub problems: Vec<Problem>,
    /// Problems of `channels/*.toml` files a test needs (`check` reports these already).
    pub channel_problems: Vec<Problem>,
}

/// The channels of `DIR/channels/*.toml` that parse, by name, and the problems of the others.
fn channel_files(dir: &Path) -> (HashMap<String, (ChannelConfig, PathBuf)>, Vec<Problem>) {
    let mut by_name = HashMap::new();
    let mut problems = Vec::new();
    for file in crate::config::channel_files(dir) {
        match read_channel(&file) {
            Ok(c) => {
                by_name.entry(c.name.clone()).or_insert((c, file));
            }
            Err(p) => problems.extend(p),
        }
    }
    (by_name, problems)
}

fn read_channel(file: &Path) -> Result<ChannelConfig, Vec<Problem>> {
    let shown = file.display().to_string();
    match std::fs::read(file) {
        Ok(bytes) => config::parse_channel(&String::from_utf8_lossy(&bytes), &shown),
        Err(e) => Err(vec![Problem {
            file: shown,
            key: String::new(),
            message: format!("cannot read the file: {}", io_text(&e)),
            hint: "check the path and its permissions".into(),
        }]),
    }
}

fn io_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Reads and checks every `DIR/tests/*.toml`, in file-name order.
pub fn inspect(dir: &Path) -> TestInspection {
    let mut out = TestInspection {
        files: Vec::new(),
        file_count: 0,
        problems: Vec::new(),
        channel_problems: Vec::new(),
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("tests"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    out.file_count = files.len();
    if files.is_empty() {
        return out;
    }
    let (channels, broken) = channel_files(dir);
    let mut broken_reported = false;
    for file in files {
        let mut problems = Vec::new();
        let loaded = load_file(&file, &channels, &mut problems, &mut out.channel_problems);
        // A channel not found may be one whose file does not parse: say why once.
        if problems.iter().any(|p| p.key == "channel") && !broken.is_empty() && !broken_reported {
            broken_reported = true;
            out.channel_problems.extend(broken.iter().cloned());
        }
        out.problems.extend(problems);
        if let Some(f) = loaded {
            out.files.push(f);
        }
    }
    out
}

/// Reads one test file; `None` when it has a problem (each pushed, with its key path).
fn load_file(
    file: &Path,
    channels: &HashMap<String, (ChannelConfig, PathBuf)>,
    problems: &mut Vec<Problem>,
    channel_problems: &mut Vec<Problem>,
) -> Option<TestFile> {
    let shown = file.display().to_string();
    let base = file.parent().unwrap_or(Path::new("."));
    let problem = |key: &str, message: String, hint: &str| Problem {
        file: shown.clone(),
        key: key.to_string(),
        message,
        hint: hint.to_string(),
    };
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            problems.push(problem(
                "",
                format!("cannot read the file: {}", io_text(&e)),
                "check its permissions",
            ));
            return None;
        }
    };
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            problems.push(problem(
                "",
                format!("not valid TOML: {}", e.to_string().trim()),
                "check the TOML syntax at that line",
            ));
            return None;
        }
    };
    let (parsed, found) = deserialize_every::<FileToml>(toml::Value::Table(table), "");
    let before = problems.len();
    problems.extend(
        found
            .into_iter()
            .map(|(key, message)| structure_problem(&shown, key, &message)),
    );
    let parsed = match parsed {
        Some(p) if problems.len() == before => p,
        _ => return None,
    };

    // The channel: by name from channels/, or from `channel_file`.
    let (channel, channel_file) = match &parsed.channel_file {
        Some(rel) => {
            let path = base.join(rel);
            match read_channel(&path) {
                Ok(c) if c.name == parsed.channel => (c, path),
                Ok(c) => {
                    problems.push(problem(
                        "channel",
                        format!(
                            "channel_file {} holds channel '{}', not '{}'",
                            path.display(),
                            c.name,
                            parsed.channel
                        ),
                        "name the channel the file holds",
                    ));
                    return None;
                }
                Err(found) => {
                    let unreadable = found.iter().any(|p| p.message.starts_with("cannot read"));
                    if unreadable {
                        problems.push(problem(
                            "channel_file",
                            format!("cannot read {}", path.display()),
                            "give a channel file, relative to this test file",
                        ));
                    } else {
                        problems.extend(found);
                    }
                    return None;
                }
            }
        }
        None => match channels.get(&parsed.channel) {
            Some((c, f)) => (c.clone(), f.clone()),
            None => {
                let mut known: Vec<&str> = channels.keys().map(String::as_str).collect();
                known.sort_unstable();
                problems.push(problem(
                    "channel",
                    format!("unknown channel '{}'", parsed.channel),
                    &format!(
                        "channels in channels/: {}; or give channel_file",
                        if known.is_empty() {
                            "(none)".to_string()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
                return None;
            }
        },
    };
    // What the engine needs of the channel to route: compiled routes, its zone and charset.
    let outside = parsed.channel_file.is_some();
    let mut ch_problems = Vec::new();
    let ch_shown = channel_file.display().to_string();
    let is_latrexa = matches!(channel.source, config::SourceConfig::Latrexa(_));
    let router = if is_latrexa {
        None
    } else {
        match Router::compile(&channel.name, &channel.routes, &channel.destinations) {
            Ok(r) => {
                Some(r.with_timezone(channel.timezone.as_deref().and_then(|z| z.parse().ok())))
            }
            Err(found) => {
                ch_problems.extend(found.into_iter().map(|(key, message, hint)| Problem {
                    file: ch_shown.clone(),
                    key,
                    message,
                    hint,
                }));
                None
            }
        }
    };
    if let Some(zone) = &channel.timezone {
        if zone.parse::<transforms::model::Tz>().is_err() {
            ch_problems.push(Problem {
                file: ch_shown.clone(),
                key: "timezone".into(),
                message: format!("unknown time zone '{zone}'"),
                hint: "use an IANA time zone name such as Asia/Riyadh".into(),
            });
        }
    }
    let charset_fallback = Charset::from_name(&channel.charset_fallback);
    if charset_fallback.is_none() {
        ch_problems.push(Problem {
            file: ch_shown.clone(),
            key: "charset_fallback".into(),
            message: format!("unknown character set '{}'", channel.charset_fallback),
            hint: "use utf-8, iso-8859-1, windows-1256, or an MSH-18 name".into(),
        });
    }
    if !ch_problems.is_empty() {
        if outside {
            problems.extend(ch_problems);
        } else {
            channel_problems.extend(ch_problems);
        }
        problems.push(problem(
            "channel",
            format!("channel '{}' has problems ({ch_shown})", channel.name),
            "switchboard check lists them",
        ));
        return None;
    }
    let charset_fallback = charset_fallback.unwrap_or(Charset::Utf8);

    if parsed.cases.is_empty() {
        problems.push(problem(
            "case",
            "no [[case]] in the file".into(),
            "add [[case]] tables (docs/CONFIG_TESTS.md)",
        ));
    }
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut cases = Vec::new();
    for (i, c) in parsed.cases.into_iter().enumerate() {
        let before = problems.len();
        let key = |k: &str| format!("case[{i}].{k}");
        if c.name.trim().is_empty() {
            problems.push(problem(&key("name"), "is empty".into(), "name the case"));
        } else if let Some(first) = names.insert(c.name.clone(), i) {
            problems.push(problem(
                &key("name"),
                format!("case name '{}' is also case[{first}]'s", c.name),
                "give each case its own name",
            ));
        }
        let input = check_input(&c.input, &channel, base, i, &shown, problems);
        let mut expect = Vec::new();
        let destinations: Vec<&str> = if is_latrexa {
            vec![LATREXA_HIS]
        } else {
            channel.destinations.iter().map(|d| d.name()).collect()
        };
        for (dest, value) in &c.expect {
            let dkey = key(&format!("expect.{dest}"));
            if !destinations.contains(&dest.as_str()) {
                problems.push(problem(
                    &dkey,
                    format!("unknown destination '{dest}' of channel '{}'", channel.name),
                    &format!("destinations of the channel: {}", destinations.join(", ")),
                ));
                continue;
            }
            let items: Vec<(String, &toml::Value)> = match value {
                toml::Value::Array(a) => a
                    .iter()
                    .enumerate()
                    .map(|(j, v)| (format!("{dkey}[{j}]"), v))
                    .collect(),
                other => vec![(dkey.clone(), other)],
            };
            if items.is_empty() {
                problems.push(problem(
                    &dkey,
                    "an empty list".into(),
                    "give a table per delivery, or { nothing = true }",
                ));
            }
            let mut list = Vec::new();
            for (ikey, v) in items {
                if let Some(e) = check_expect(v, &ikey, base, &shown, problems) {
                    list.push(e);
                }
            }
            if list.len() > 1 && list.iter().any(|e| e.nothing) {
                problems.push(problem(
                    &dkey,
                    "`nothing = true` in a list of deliveries".into(),
                    "give { nothing = true } alone",
                ));
            }
            expect.push((dest.clone(), list));
        }
        let rejected = match c.rejected {
            None | Some(RejectedToml::Yes(false)) => None,
            Some(RejectedToml::Yes(true)) => Some(String::new()),
            Some(RejectedToml::Containing(s)) => Some(s),
        };
        if rejected.is_some()
            && expect
                .iter()
                .any(|(_, list)| list.iter().any(|e| !e.nothing))
        {
            problems.push(problem(
                &key("rejected"),
                "a rejected input reaches no destination, yet the case expects a delivery".into(),
                "remove `rejected`, or expect { nothing = true }",
            ));
        }
        if rejected.is_none() && c.expect.is_empty() {
            problems.push(problem(
                &key("expect"),
                "the case checks nothing".into(),
                "add [case.expect.<destination>] tables, or rejected = true",
            ));
        }
        if problems.len() == before {
            if let Some(input) = input {
                cases.push(Case {
                    index: i,
                    name: c.name,
                    input,
                    expect,
                    rejected,
                });
            }
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(TestFile {
        file: file.to_path_buf(),
        channel,
        channel_file,
        router,
        charset_fallback,
        cases,
    })
}

/// Reads a file named by a test, relative to the test file; the problem is at `key`.
fn read_beside(
    base: &Path,
    rel: &str,
    key: &str,
    shown: &str,
    problems: &mut Vec<Problem>,
) -> Option<Vec<u8>> {
    let path = base.join(rel);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            problems.push(Problem {
                file: shown.to_string(),
                key: key.to_string(),
                message: format!("cannot read {}: {}", path.display(), io_text(&e)),
                hint: "paths are relative to the test file".into(),
            });
            None
        }
    }
}

fn check_input(
    input: &InputToml,
    channel: &ChannelConfig,
    base: &Path,
    i: usize,
    shown: &str,
    problems: &mut Vec<Problem>,
) -> Option<Input> {
    use config::SourceConfig as S;
    let key = |k: &str| format!("case[{i}].input.{k}");
    let mut push = |k: &str, message: String, hint: &str| {
        problems.push(Problem {
            file: shown.to_string(),
            key: k.to_string(),
            message,
            hint: hint.to_string(),
        })
    };
    let given: Vec<&str> = [
        ("hl7", input.hl7.is_some()),
        ("hl7_file", input.hl7_file.is_some()),
        ("json", input.json.is_some()),
        ("json_file", input.json_file.is_some()),
    ]
    .iter()
    .filter(|(_, g)| *g)
    .map(|(k, _)| *k)
    .collect();
    if given.len() != 1 {
        push(
            &format!("case[{i}].input"),
            if given.is_empty() {
                "no message given".into()
            } else {
                format!("{} given; one only", given.join(" and "))
            },
            "give exactly one of hl7, hl7_file, json, json_file",
        );
        return None;
    }
    let kind = given[0];
    let (takes, source_type) = match &channel.source {
        S::MllpListener(_) => ("hl7", "mllp_listener"),
        S::Sftp(_) => ("hl7", "sftp"),
        S::FhirRest(_) => ("json", "fhir_rest"),
        S::Webhook(_) => ("json", "webhook"),
        S::Latrexa(_) => ("json", "latrexa"),
        S::DicomWorklist(_) | S::DicomStore(_) => {
            push(
                &format!("case[{i}].input"),
                format!(
                    "channel '{}' has a DICOM source: config tests take HL7 v2 messages and \
                     JSON bodies, not DICOM datasets",
                    channel.name
                ),
                "test the channel that sends the orders to the worklist instead",
            );
            return None;
        }
    };
    if !kind.starts_with(takes) {
        push(
            &key(kind),
            format!(
                "channel '{}' has a {source_type} source, which takes {}",
                channel.name,
                if takes == "hl7" {
                    "HL7 v2 messages"
                } else {
                    "JSON bodies"
                }
            ),
            &format!("give {takes} or {takes}_file"),
        );
        return None;
    }
    let http = matches!(channel.source, S::FhirRest(_) | S::Webhook(_));
    if !http {
        for (k, given) in [("path", &input.path), ("method", &input.method)] {
            if given.is_some() {
                push(
                    &key(k),
                    format!("only for HTTP sources, not {source_type}"),
                    "remove it",
                );
                return None;
            }
        }
    }
    let bytes = match (kind, input) {
        ("hl7", InputToml { hl7: Some(t), .. }) | ("json", InputToml { json: Some(t), .. }) => {
            t.clone().into_bytes()
        }
        (
            "hl7_file",
            InputToml {
                hl7_file: Some(f), ..
            },
        )
        | (
            "json_file",
            InputToml {
                json_file: Some(f), ..
            },
        ) => read_beside(base, f, &key(kind), shown, problems)?,
        _ => return None,
    };
    let mut push = |k: &str, message: String, hint: &str| {
        problems.push(Problem {
            file: shown.to_string(),
            key: k.to_string(),
            message,
            hint: hint.to_string(),
        })
    };
    match &channel.source {
        S::MllpListener(_) | S::Sftp(_) => {
            // Line ends as a person writes them (LF, CRLF) become segment ends; a file with
            // several messages or an FHS/BHS batch gives each message.
            let (text, single_byte) = match String::from_utf8(bytes) {
                Ok(t) => (t, false),
                Err(e) => (e.into_bytes().iter().map(|&b| b as char).collect(), true),
            };
            match transforms::hl7v2::batch::split(&text) {
                Ok(b) if !b.messages.is_empty() => Some(Input::Hl7(
                    b.messages
                        .into_iter()
                        .map(|m| {
                            if single_byte {
                                m.chars().map(|c| c as u32 as u8).collect()
                            } else {
                                m.into_bytes()
                            }
                        })
                        .collect(),
                )),
                Ok(_) => {
                    push(&key(kind), "holds no HL7 v2 message".into(), "");
                    None
                }
                Err(e) => {
                    push(&key(kind), format!("not an HL7 v2 message: {e}"), "");
                    None
                }
            }
        }
        S::Latrexa(_) => Some(Input::Booking(bytes)),
        // Refused above, before the input was read.
        S::DicomWorklist(_) | S::DicomStore(_) => None,
        S::Webhook(w) => {
            let method = input.method.as_deref().unwrap_or("POST");
            if !method.eq_ignore_ascii_case("POST") {
                push(
                    &key("method"),
                    format!("a webhook source takes POST, not {method}"),
                    "remove method",
                );
                return None;
            }
            use channels::webhook::receiver::{endpoint, WebhookFormat};
            let default_path = match w.format {
                WebhookFormat::Buktor => Some("/his/receive"),
                WebhookFormat::Px360 => Some("/api/simulator/his-patient-data/"),
                WebhookFormat::Opsport => None,
            };
            let Some(path) = input.path.as_deref().or(default_path) else {
                push(
                    &format!("case[{i}].input"),
                    "missing key 'path'".into(),
                    "the endpoint posted to, such as /api/healthcare/patient",
                );
                return None;
            };
            let Some(interaction) = endpoint(w.format, path) else {
                push(
                    &key("path"),
                    format!(
                        "'{path}' is not an endpoint of a {} webhook (it answers 404)",
                        w.format.as_str()
                    ),
                    match w.format {
                        WebhookFormat::Buktor => "use /his/receive",
                        WebhookFormat::Px360 => "use /api/simulator/his-patient-data/",
                        WebhookFormat::Opsport => {
                            "use /api/healthcare/{clinic,doctor,patient,appointment}[s]"
                        }
                    },
                );
                return None;
            };
            Some(Input::Json(JsonBody {
                format: JsonFormat::Webhook(w.format),
                interaction,
                resource_type: None,
                resource_id: None,
                body: bytes.into(),
            }))
        }
        S::FhirRest(f) => {
            use channels::fhir_rest::source::{route, Route, TypeInteraction};
            let method = input
                .method
                .as_deref()
                .unwrap_or("POST")
                .to_ascii_uppercase();
            let Ok(m) = axum::http::Method::from_bytes(method.as_bytes()) else {
                push(
                    &key("method"),
                    format!("'{method}' is not an HTTP method"),
                    "",
                );
                return None;
            };
            let base_path = f.base_path.trim_end_matches('/');
            let Some(path) = input.path.as_deref() else {
                push(
                    &format!("case[{i}].input"),
                    "missing key 'path'".into(),
                    &format!(
                        "the request path, such as {base_path}/Patient (POST), {base_path}/Patient/ID (PUT) or {base_path}/ (a Bundle)"
                    ),
                );
                return None;
            };
            let Some(rest) = path.strip_prefix(base_path) else {
                push(
                    &key("path"),
                    format!(
                        "'{path}' is outside the source's base_path '{}'",
                        f.base_path
                    ),
                    "start it with the base path",
                );
                return None;
            };
            let (interaction, resource_type, resource_id) = match route(&m, rest) {
                Ok(Route::Bundle) => ("bundle", None, None),
                Ok(Route::Type {
                    interaction: i @ (TypeInteraction::Create | TypeInteraction::Update),
                    resource_type,
                    id,
                }) => (i.code(), Some(resource_type), id),
                Ok(_) => {
                    push(
                        &key("path"),
                        format!("{method} {path} takes no body"),
                        "test a create (POST [base]/Type), an update (PUT [base]/Type/id) or a Bundle (POST [base]/)",
                    );
                    return None;
                }
                Err(resp) => {
                    push(
                        &key("path"),
                        format!(
                            "the FHIR source answers {} to {method} {path}",
                            resp.status().as_u16()
                        ),
                        "POST [base]/Type, PUT [base]/Type/id or POST [base]/",
                    );
                    return None;
                }
            };
            Some(Input::Json(JsonBody {
                format: JsonFormat::Fhir,
                interaction: interaction.into(),
                resource_type,
                resource_id,
                body: bytes.into(),
            }))
        }
    }
}

fn check_expect(
    v: &toml::Value,
    key: &str,
    base: &Path,
    shown: &str,
    problems: &mut Vec<Problem>,
) -> Option<Expect> {
    let before = problems.len();
    if !v.is_table() {
        problems.push(Problem {
            file: shown.to_string(),
            key: key.to_string(),
            message: "not a table".into(),
            hint: "give [case.expect.<destination>] (one delivery) or [[case.expect.<destination>]] (one per delivery)".into(),
        });
        return None;
    }
    let (e, found) = deserialize_every::<ExpectToml>(v.clone(), key);
    problems.extend(
        found
            .into_iter()
            .map(|(k, message)| structure_problem(shown, k, &message)),
    );
    let e = e.filter(|_| problems.len() == before)?;
    let mut push = |k: &str, message: String, hint: &str| {
        problems.push(Problem {
            file: shown.to_string(),
            key: if k.is_empty() {
                key.to_string()
            } else {
                format!("{key}.{k}")
            },
            message,
            hint: hint.to_string(),
        })
    };
    let has_fields = !e.fields.is_empty() || !e.absent.is_empty();
    let has_payload = e.payload.is_some() || e.payload_file.is_some();
    if e.nothing && (has_fields || has_payload || e.error.is_some() || e.path.is_some()) {
        push(
            "nothing",
            "nothing = true with other keys".into(),
            "give nothing = true alone",
        );
    }
    if e.payload.is_some() && e.payload_file.is_some() {
        push(
            "payload_file",
            "payload and payload_file given; one only".into(),
            "",
        );
    }
    if e.error.is_some() && (has_fields || has_payload) {
        push(
            "error",
            "error with payload or fields: a failed rendering sends nothing".into(),
            "give error alone (with path, if any)",
        );
    }
    let mut fields = Vec::new();
    for (path, value) in &e.fields {
        if !path.starts_with('/') && !is_hl7_path(path) {
            push(
                &format!("fields.\"{path}\""),
                format!("'{path}' is neither a JSON pointer nor an HL7 path"),
                "use /a/0/b for JSON payloads, PID.5.1 for HL7 v2",
            );
            continue;
        }
        fields.push((path.clone(), toml_to_json(value)));
    }
    for (j, path) in e.absent.iter().enumerate() {
        if !path.starts_with('/') && !is_hl7_path(path) {
            push(
                &format!("absent[{j}]"),
                format!("'{path}' is neither a JSON pointer nor an HL7 path"),
                "use /a/0/b for JSON payloads, PID.5.1 for HL7 v2",
            );
        }
    }
    let payload = match (&e.payload, &e.payload_file) {
        (Some(p), _) => Some((p.clone(), format!("{key}.payload"))),
        (None, Some(f)) => {
            let bytes = read_beside(base, f, &format!("{key}.payload_file"), shown, problems)?;
            Some((
                String::from_utf8_lossy(&bytes).into_owned(),
                base.join(f).display().to_string(),
            ))
        }
        (None, None) => None,
    };
    if problems.len() != before {
        return None;
    }
    Some(Expect {
        key: key.to_string(),
        nothing: e.nothing,
        path: e.path,
        payload,
        fields,
        absent: e.absent,
        error: e.error,
    })
}

/// True for an HL7 path as routes write them: a segment id (three capitals or digits), then
/// `[n]`, `.field`, `[rep]`, `.component`, `.subcomponent` as far as needed.
fn is_hl7_path(path: &str) -> bool {
    let seg = path.get(..3).unwrap_or_default();
    seg.len() == 3
        && seg
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && matches!(path.as_bytes().get(3), None | Some(b'.') | Some(b'['))
        && hl7_parser::query::LocationQuery::parse(path).is_ok()
}

/// A TOML value as the JSON value it stands for (a date-time as its text).
fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Running a case.

/// One delivery the engine would make.
#[derive(Debug, Clone)]
struct Delivered {
    path: Option<String>,
    content_type: String,
    body: Vec<u8>,
    /// The rendering failed: the reason (the delivery goes to the dead letters).
    failure: Option<String>,
}

/// What the channel did with a case's input.
#[derive(Debug, Default)]
struct Outcome {
    /// Why an input was refused, one per refused message.
    rejected: Vec<String>,
    /// Per destination, in order.
    deliveries: BTreeMap<String, Vec<Delivered>>,
}

fn outcome(tf: &TestFile, case: &Case) -> Outcome {
    let mut out = Outcome::default();
    let add = |out: &mut Outcome, record: &MessageRecord, raw: &[u8]| {
        let Some(router) = &tf.router else { return };
        let mut n = 0;
        let items = router.render(
            record,
            raw,
            &mut || {
                n += 1;
                n
            },
            0,
            None,
            "",
            None,
        );
        for item in items {
            let dest = item
                .destination
                .split_once('/')
                .map_or(item.destination.clone(), |(_, d)| d.to_string());
            let failure =
                (item.payload == ItemPayload::MappingFailed).then(|| item.last_error.clone());
            out.deliveries.entry(dest).or_default().push(Delivered {
                path: item.path,
                content_type: item.content_type,
                body: item.body,
                failure,
            });
        }
    };
    match &case.input {
        Input::Hl7(messages) => {
            let policy = tf.channel.accept.policy();
            for (i, raw) in messages.iter().enumerate() {
                let (header, charset, verdict) =
                    crate::ingest::ChannelIngest::decide(&policy, tf.charset_fallback, raw, None);
                if let Verdict::Nak(n) = verdict {
                    out.rejected.push(n.to_string());
                    continue;
                }
                let Some(h) = header else { continue };
                let record = MessageRecord {
                    id: i as u64 + 1,
                    channel: tf.channel.name.clone(),
                    received_at_ms: 0,
                    peer: String::new(),
                    format: RecordFormat::Hl7v2.into(),
                    message_type: h.message_type(),
                    control_id: h.control_id.clone(),
                    sending_application: h.sending_application.clone(),
                    sending_facility: h.sending_facility.clone(),
                    version: h.version.clone(),
                    charset,
                    size: raw.len(),
                    truncated: false,
                    status: Status::Received,
                    ack_code: "AA".into(),
                    ack: String::new(),
                    errors: Vec::new(),
                    config_version: String::new(),
                    deliveries: Vec::new(),
                    business_keys: Vec::new(),
                    dedup_key: String::new(),
                    resent_from: None,
                };
                add(&mut out, &record, raw);
            }
        }
        Input::Json(req) => {
            let d = crate::ingest_http::decide(req);
            if let Some(reason) = d.rejected {
                out.rejected.push(format!("HTTP {}: {reason}", d.status));
                return out;
            }
            let record = MessageRecord {
                id: 1,
                channel: tf.channel.name.clone(),
                received_at_ms: 0,
                peer: String::new(),
                format: RecordFormat::Json(req.format).into(),
                message_type: d.message_type,
                control_id: d.control_id,
                sending_application: String::new(),
                sending_facility: String::new(),
                version: if req.format == JsonFormat::Fhir {
                    "R4".into()
                } else {
                    String::new()
                },
                charset: "utf-8".into(),
                size: req.body.len(),
                truncated: false,
                status: Status::Received,
                ack_code: d.status.to_string(),
                ack: String::new(),
                errors: Vec::new(),
                config_version: String::new(),
                deliveries: Vec::new(),
                business_keys: Vec::new(),
                dedup_key: String::new(),
                resent_from: None,
            };
            add(&mut out, &record, &req.body);
        }
        Input::Booking(raw) => {
            let config::SourceConfig::Latrexa(cfg) = &tf.channel.source else {
                return out;
            };
            his_message(cfg, raw, &mut out);
        }
    }
    out
}

/// What a Latrexa bookings channel sends its HIS for a booking it has not seen before.
fn his_message(cfg: &BookingsConfig, raw: &[u8], out: &mut Outcome) {
    let value = match serde_json::from_slice::<serde_json::Value>(raw) {
        Ok(v) => v,
        Err(e) => {
            out.rejected.push(format!("not JSON: {e}"));
            return;
        }
    };
    let booking = match BookingInput::from_value(value) {
        BookingInput::Booking(b) => b,
        BookingInput::Invalid { reason, .. } => {
            out.rejected.push(reason);
            return;
        }
    };
    let his_id = booking.his_appointment_id.clone();
    let known = his_id.is_some();
    let for_his = crate::latrexa_bookings::for_his(&booking, his_id, known);
    let now = chrono::DateTime::parse_from_rfc3339(TEST_CLOCK)
        .map(|t| t.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let header = crate::latrexa_bookings::siu_header(cfg, "1", now);
    match crate::latrexa_bookings::his_request(cfg, &for_his, &header) {
        Ok(text) => out
            .deliveries
            .entry(LATREXA_HIS.to_string())
            .or_default()
            .push(Delivered {
                path: None,
                content_type: "application/hl7-v2".into(),
                body: text.into_bytes(),
                failure: None,
            }),
        // The engine rejects such a booking at Latrexa; the HIS gets nothing.
        Err(e) => out
            .rejected
            .push(format!("booking cannot be written as SIU: {e}")),
    }
}

// ---------------------------------------------------------------------------------------
// Comparing.

/// One way a case failed.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The destination, empty for the case as a whole.
    pub destination: String,
    /// The delivery (1-based) of that destination, 0 for all of them.
    pub delivery: usize,
    /// The key of the expectation in the test file.
    pub key: String,
    /// What differs.
    pub message: String,
    /// A unified diff, expected against actual; empty when the message says it all.
    pub diff: String,
}

/// The result of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// The test file.
    pub file: String,
    /// The channel.
    pub channel: String,
    /// `case[N]`.
    pub index: usize,
    /// The case's name.
    pub case: String,
    /// True when nothing failed.
    pub passed: bool,
    /// Every failure.
    pub failures: Vec<Failure>,
}

/// Runs one case and compares what the channel did with what it expects.
pub fn run_case(tf: &TestFile, case: &Case) -> CaseResult {
    let got = outcome(tf, case);
    let mut failures = Vec::new();
    let case_key = format!("case[{}]", case.index);
    match (&case.rejected, got.rejected.is_empty()) {
        (Some(want), false) => {
            if !got.rejected.iter().any(|r| r.contains(want.as_str())) {
                failures.push(Failure {
                    destination: String::new(),
                    delivery: 0,
                    key: format!("{case_key}.rejected"),
                    message: "rejected for another reason".into(),
                    diff: crate::unified_diff::diff(
                        "expected reason (contains)",
                        "actual",
                        &format!("{want}\n"),
                        &lines(&got.rejected),
                    ),
                });
            }
        }
        (Some(_), true) => failures.push(Failure {
            destination: String::new(),
            delivery: 0,
            key: format!("{case_key}.rejected"),
            message: "the channel accepted the input, expected a rejection".into(),
            diff: String::new(),
        }),
        (None, false) => failures.push(Failure {
            destination: String::new(),
            delivery: 0,
            key: format!("{case_key}.input"),
            message: format!(
                "the channel rejected the input: {}",
                got.rejected.join("; ")
            ),
            diff: String::new(),
        }),
        (None, true) => {}
    }
    for (dest, expected) in &case.expect {
        let actual = got.deliveries.get(dest).map(Vec::as_slice).unwrap_or(&[]);
        compare_destination(dest, expected, actual, &mut failures);
    }
    CaseResult {
        file: tf.file.display().to_string(),
        channel: tf.channel.name.clone(),
        index: case.index,
        case: case.name.clone(),
        passed: failures.is_empty(),
        failures,
    }
}

fn lines(items: &[String]) -> String {
    items.iter().map(|l| format!("{l}\n")).collect()
}

fn compare_destination(
    dest: &str,
    expected: &[Expect],
    actual: &[Delivered],
    failures: &mut Vec<Failure>,
) {
    if expected.len() == 1 && expected[0].nothing {
        if !actual.is_empty() {
            failures.push(Failure {
                destination: dest.to_string(),
                delivery: 0,
                key: expected[0].key.clone(),
                message: format!(
                    "expected nothing, {} {} sent",
                    actual.len(),
                    plural(actual.len(), "delivery was", "deliveries were")
                ),
                diff: crate::unified_diff::diff(
                    "expected (nothing)",
                    "actual",
                    "",
                    &actual
                        .iter()
                        .enumerate()
                        .map(|(i, d)| shown(i, d))
                        .collect::<String>(),
                ),
            });
        }
        return;
    }
    for (i, e) in expected.iter().enumerate() {
        match actual.get(i) {
            Some(a) => compare_delivery(dest, i, e, a, failures),
            None => failures.push(Failure {
                destination: dest.to_string(),
                delivery: i + 1,
                key: e.key.clone(),
                message: format!(
                    "expected {} {}, {} sent",
                    expected.len(),
                    plural(expected.len(), "delivery", "deliveries"),
                    actual.len()
                ),
                diff: String::new(),
            }),
        }
    }
    for (i, a) in actual.iter().enumerate().skip(expected.len()) {
        failures.push(Failure {
            destination: dest.to_string(),
            delivery: i + 1,
            key: expected.last().map(|e| e.key.clone()).unwrap_or_default(),
            message: format!(
                "{} {} sent, {} expected",
                actual.len(),
                plural(actual.len(), "delivery", "deliveries"),
                expected.len()
            ),
            diff: crate::unified_diff::diff("expected (none)", "actual", "", &shown(i, a)),
        });
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// A delivery as a failure shows it: a heading line and its payload.
fn shown(i: usize, d: &Delivered) -> String {
    let mut out = format!(
        "# delivery {}{}{}\n",
        i + 1,
        d.path
            .as_deref()
            .map(|p| format!(" to {p}"))
            .unwrap_or_default(),
        d.failure
            .as_deref()
            .map(|f| format!(" (not sent: {f})"))
            .unwrap_or_default()
    );
    out.push_str(&payload_text(d).0);
    out
}

#[derive(PartialEq)]
enum Kind {
    Hl7,
    Json,
    Text,
}

fn kind_of(content_type: &str) -> Kind {
    if content_type.contains("hl7") {
        Kind::Hl7
    } else if content_type.contains("json") {
        Kind::Json
    } else {
        Kind::Text
    }
}

/// A payload as text to compare line by line: HL7 v2 one segment a line, JSON pretty-printed
/// (keys sorted), and its JSON value when it is JSON.
fn payload_text(d: &Delivered) -> (String, Option<serde_json::Value>) {
    let text = String::from_utf8_lossy(&d.body);
    match kind_of(&d.content_type) {
        Kind::Hl7 => (hl7_lines(&text), None),
        Kind::Json => match serde_json::from_slice::<serde_json::Value>(&d.body) {
            Ok(v) => (pretty(&v), Some(v)),
            Err(_) => (format!("{text}\n"), None),
        },
        Kind::Text => (text.into_owned(), None),
    }
}

/// A JSON value pretty-printed with the keys of every object sorted, so that two values that
/// differ only in key order print the same, and a diff shows only what differs.
fn pretty(v: &serde_json::Value) -> String {
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(o) => {
                let mut keys: Vec<&String> = o.keys().collect();
                keys.sort();
                serde_json::Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&o[k])))
                        .collect(),
                )
            }
            serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    format!(
        "{}\n",
        serde_json::to_string_pretty(&sorted(v)).unwrap_or_default()
    )
}

/// HL7 v2 text one segment a line, whatever ends its segments (CR, LF, CRLF); blank lines
/// left out.
fn hl7_lines(text: &str) -> String {
    text.split(['\r', '\n'])
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{l}\n"))
        .collect()
}

fn compare_delivery(dest: &str, i: usize, e: &Expect, a: &Delivered, failures: &mut Vec<Failure>) {
    let mut fail = |message: String, diff: String| {
        failures.push(Failure {
            destination: dest.to_string(),
            delivery: i + 1,
            key: e.key.clone(),
            message,
            diff,
        })
    };
    if let Some(want) = &e.path {
        let got = a.path.as_deref().unwrap_or("(none)");
        if got != want {
            fail(
                "path differs".into(),
                crate::unified_diff::diff(
                    "expected",
                    "actual",
                    &format!("path {want}\n"),
                    &format!("path {got}\n"),
                ),
            );
        }
    }
    match (&e.error, &a.failure) {
        (Some(want), Some(got)) => {
            if !got.contains(want.as_str()) {
                fail(
                    "the rendering failed for another reason".into(),
                    crate::unified_diff::diff(
                        "expected error (contains)",
                        "actual",
                        &format!("{want}\n"),
                        &format!("{got}\n"),
                    ),
                );
            }
            return;
        }
        (Some(want), None) => {
            fail(
                format!("expected the rendering to fail ({want}), it succeeded"),
                String::new(),
            );
            return;
        }
        (None, Some(got)) => {
            fail(format!("the rendering failed: {got}"), String::new());
            return;
        }
        (None, None) => {}
    }
    let (actual_text, actual_json) = payload_text(a);
    if let Some((want, origin)) = &e.payload {
        let (expected_text, equal) = match (kind_of(&a.content_type), &actual_json) {
            (Kind::Json, Some(actual)) => match serde_json::from_str::<serde_json::Value>(want) {
                Ok(v) => (pretty(&v), &v == actual),
                Err(err) => (format!("{want}\n(not JSON: {err})\n"), false),
            },
            (Kind::Hl7, _) => {
                let t = hl7_lines(want);
                let eq = t == actual_text;
                (t, eq)
            }
            _ => (want.clone(), *want == actual_text),
        };
        if !equal {
            fail(
                "payload differs".into(),
                crate::unified_diff::diff(
                    &format!("expected ({origin})"),
                    "actual",
                    &expected_text,
                    &actual_text,
                ),
            );
        }
    }
    if !e.fields.is_empty() || !e.absent.is_empty() {
        let parsed_hl7 = String::from_utf8_lossy(&a.body).into_owned();
        let v2 = (kind_of(&a.content_type) == Kind::Hl7)
            .then(|| transforms::hl7v2::access::V2Message::parse(&parsed_hl7).ok())
            .flatten();
        let read = |path: &str| -> Result<Option<serde_json::Value>, String> {
            if path.starts_with('/') {
                match &actual_json {
                    Some(v) => Ok(v.pointer(path).filter(|x| !x.is_null()).cloned()),
                    None => Err(format!(
                        "{path} is a JSON pointer, but the payload is not JSON"
                    )),
                }
            } else {
                match &v2 {
                    Some(m) => Ok(crate::routing::value(m, path).map(serde_json::Value::String)),
                    None => Err(format!(
                        "{path} is an HL7 path, but the payload is not HL7 v2"
                    )),
                }
            }
        };
        let show = |v: &Option<serde_json::Value>| match v {
            Some(v) => v.to_string(),
            None => "(absent)".to_string(),
        };
        let (mut want_lines, mut got_lines, mut differ) = (String::new(), String::new(), false);
        for (path, want) in &e.fields {
            let got = match read(path) {
                Ok(g) => g,
                Err(m) => {
                    fail(m, String::new());
                    return;
                }
            };
            differ |= got.as_ref() != Some(want);
            want_lines.push_str(&format!("{path} = {want}\n"));
            got_lines.push_str(&format!("{path} = {}\n", show(&got)));
        }
        for path in &e.absent {
            let got = match read(path) {
                Ok(g) => g,
                Err(m) => {
                    fail(m, String::new());
                    return;
                }
            };
            differ |= got.is_some();
            want_lines.push_str(&format!("{path} = (absent)\n"));
            got_lines.push_str(&format!("{path} = {}\n", show(&got)));
        }
        if differ {
            fail(
                "fields differ".into(),
                crate::unified_diff::diff("expected", "actual", &want_lines, &got_lines),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// The command.

/// How `switchboard test` was asked to run.
#[derive(Debug, Clone, Default)]
pub struct TestOptions {
    /// Print JSON (`--json`).
    pub json: bool,
    /// Only cases whose test file name, channel or case name contains this (any case).
    pub filter: Option<String>,
}

/// Runs `switchboard test` on `dir`, prints the outcome and returns the exit code: 2 when a
/// test file (or a channel it needs) has a problem or no case ran, else 1 when a case
/// failed, else 0.
pub fn run(dir: &Path, opts: &TestOptions) -> u8 {
    let inspection = inspect(dir);
    let filter = opts.filter.as_deref().map(str::to_lowercase);
    let mut results = Vec::new();
    for tf in &inspection.files {
        let stem = tf
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        for case in &tf.cases {
            let keep = filter.as_deref().is_none_or(|f| {
                [&stem, &tf.channel.name, &case.name]
                    .iter()
                    .any(|s| s.to_lowercase().contains(f))
            });
            if keep {
                results.push(run_case(tf, case));
            }
        }
    }
    let problems: Vec<&Problem> = inspection
        .channel_problems
        .iter()
        .chain(&inspection.problems)
        .collect();
    let passed = results.iter().filter(|r| r.passed).count();
    let failed = results.len() - passed;
    let nothing_ran = results.is_empty();
    let why_none = if inspection.file_count == 0 {
        format!(
            "no test files in {}: add tests/<name>.toml (docs/CONFIG_TESTS.md)",
            dir.join("tests").display()
        )
    } else if filter.is_some() && problems.is_empty() {
        format!(
            "no case matches '{}'",
            opts.filter.as_deref().unwrap_or_default()
        )
    } else {
        "no case ran: see the problems above".to_string()
    };
    if opts.json {
        let out = serde_json::json!({
            "problems": problems,
            "cases": results,
            "passed": passed,
            "failed": failed,
        });
        println!("{out:#}");
    } else {
        print!("{}", render(&results, &problems));
        if nothing_ran {
            println!("switchboard test: {why_none}");
        } else {
            println!(
                "switchboard test: {} case(s) in {} file(s): {passed} passed, {failed} failed{}",
                results.len(),
                results
                    .iter()
                    .map(|r| r.file.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .len(),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(", {} problem(s) in test files", problems.len())
                }
            );
        }
    }
    if !problems.is_empty() || nothing_ran {
        2
    } else {
        u8::from(failed > 0)
    }
}

/// The text `switchboard test` prints before its summary.
fn render(results: &[CaseResult], problems: &[&Problem]) -> String {
    let mut out = String::new();
    for p in problems {
        out.push_str(&format!("error: {p}\n"));
    }
    for r in results {
        if r.passed {
            out.push_str(&format!(
                "ok    {} case[{}] {:?}\n",
                r.file, r.index, r.case
            ));
        }
    }
    for r in results.iter().filter(|r| !r.passed) {
        out.push_str(&format!(
            "FAIL  {} case[{}] {:?}\n",
            r.file, r.index, r.case
        ));
        for f in &r.failures {
            let what = match (f.destination.as_str(), f.delivery) {
                ("", _) => String::new(),
                (d, 0) => format!("destination {d:?}: "),
                (d, n) => format!("destination {d:?}, delivery {n}: "),
            };
            out.push_str(&format!("  {what}{} (at {})\n", f.message, f.key));
            for line in f.diff.lines() {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::write;

    const CHANNEL: &str =
        "name = \"lab\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
        [accept]\nmessage_types = [\"ADT^*\", \"ORU^R01\"]\n\
        [[route]]\nwhen = { message_type = [\"ADT^*\"] }\nto = [\"archive\", \"portal\"]\n\
        [route.mapping]\nconstant = { site = \"north\" }\n\
        [[destination]]\nname = \"archive\"\ntype = \"file\"\nfolder = \"out\"\n\
        [[destination]]\nname = \"portal\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/hook\"\n";

    const ADT: &str = "MSH|^~\\\\&|HIS|RUH|SB|HUB|20260615103000||ADT^A04|C1|P|2.5\nPID|1||MRN1^^^HIS^MR||Doe^Jo||19800101|F\n";

    fn conf(test: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "channels/lab.toml", CHANNEL);
        write(dir.path(), "tests/lab.toml", test);
        dir
    }

    fn results(dir: &Path) -> Vec<CaseResult> {
        let inspection = inspect(dir);
        assert!(inspection.problems.is_empty(), "{:?}", inspection.problems);
        inspection
            .files
            .iter()
            .flat_map(|f| f.cases.iter().map(move |c| run_case(f, c)))
            .collect()
    }

    #[test]
    fn a_case_passes_and_a_changed_expectation_fails_with_a_diff() {
        let test = format!(
            "channel = \"lab\"\n[[case]]\nname = \"adt\"\ninput.hl7 = \"\"\"\n{ADT}\"\"\"\n\
             expect.archive = {{ payload = \"\"\"\n{ADT}\"\"\" }}\n\
             [case.expect.portal.fields]\n\"/kind\" = \"patient_registered\"\n\"/site\" = \"north\"\n\"/patient/name/family\" = \"Doe\"\n\
             [[case]]\nname = \"oru\"\ninput.hl7 = \"MSH|^~\\\\&|LAB|RUH|||2026||ORU^R01|C2|P|2.5\\nPID|1||MRN1\"\n\
             expect.archive = {{ nothing = true }}\nexpect.portal = {{ nothing = true }}\n\
             [[case]]\nname = \"siu\"\nrejected = \"message type\"\ninput.hl7 = \"MSH|^~\\\\&|HIS|RUH|||2026||SIU^S12|C3|P|2.5\"\n"
        );
        let dir = conf(&test);
        let r = results(dir.path());
        assert_eq!(r.len(), 3);
        for c in &r {
            assert!(c.passed, "{:#?}", c.failures);
        }

        // The mapping now sets another constant: the field differs, shown as a diff.
        write(
            dir.path(),
            "channels/lab.toml",
            &CHANNEL.replace("site = \"north\"", "site = \"south\""),
        );
        let r = results(dir.path());
        assert!(!r[0].passed && r[1].passed && r[2].passed);
        assert_eq!(r[0].failures.len(), 1, "{:#?}", r[0].failures);
        let f = &r[0].failures[0];
        assert_eq!(
            (f.destination.as_str(), f.delivery, f.key.as_str()),
            ("portal", 1, "case[0].expect.portal")
        );
        assert!(
            f.diff.contains("-/site = \"north\"\n+/site = \"south\"\n"),
            "{}",
            f.diff
        );
    }

    #[test]
    fn unexpected_and_missing_deliveries_and_rejections_fail() {
        let test = format!(
            "channel = \"lab\"\n[[case]]\nname = \"adt\"\ninput.hl7 = \"\"\"\n{ADT}\"\"\"\n\
             expect.archive = {{ nothing = true }}\n\
             [[case.expect.portal]]\n[[case.expect.portal]]\n\
             [[case]]\nname = \"refused\"\ninput.hl7 = \"MSH|^~\\\\&|HIS|RUH|||2026||SIU^S12|C3|P|2.5\"\n\
             expect.archive = {{ nothing = true }}\n"
        );
        let dir = conf(&test);
        let r = results(dir.path());
        let messages: Vec<&str> = r[0].failures.iter().map(|f| f.message.as_str()).collect();
        assert_eq!(
            messages,
            [
                "expected nothing, 1 delivery was sent",
                "expected 2 deliveries, 1 sent"
            ],
            "{:#?}",
            r[0].failures
        );
        assert!(r[0].failures[0].diff.contains("+MSH|^~\\&|HIS|RUH|SB|HUB|"));
        assert_eq!(r[1].failures.len(), 1);
        assert!(
            r[1].failures[0]
                .message
                .starts_with("the channel rejected the input: 200 MSH-9"),
            "{:#?}",
            r[1].failures
        );
    }

    #[test]
    fn problems_of_a_test_file_name_the_key() {
        let test = "channel = \"lab\"\n\
            [[case]]\nname = \"a\"\ninput = { hl7_file = \"nope.hl7\" }\nexpect.archive = { nothing = true }\n\
            [[case]]\nname = \"a\"\ninput = { json = \"{}\" }\nexpect.archive = { nothing = true }\n\
            [[case]]\nname = \"c\"\ninput = { hl7 = \"MSH|^~\\\\&|X\", path = \"/x\" }\nexpect.archive = { nothing = true }\n\
            [[case]]\nname = \"d\"\ninput = { hl7 = \"MSH|^~\\\\&|X\" }\nexpect.archiv = { nothing = true }\n\
            [[case]]\nname = \"e\"\ninput = { hl7 = \"MSH|^~\\\\&|X\" }\nexpect.archive = { nothing = true, path = \"/x\" }\n\
            [[case]]\nname = \"f\"\ninput = { hl7 = \"MSH|^~\\\\&|X\" }\n[case.expect.portal]\nfields = { \"nope\" = 1 }\nerror = \"x\"\n\
            [[case]]\nname = \"g\"\ninput = { hl7 = \"MSH|^~\\\\&|X\" }\n\
            [[case]]\nname = \"h\"\ninput = { hl7 = \"MSH|^~\\\\&|X\" }\nrejected = true\nexpect.portal = { path = \"/x\" }\n\
            [[case]]\nname = \"i\"\ninput = { hl7 = \"MSH|^~\\\\&|X\" }\nexpect.portal = { payload_file = \"missing.json\", payloud = 1 }\n";
        let dir = conf(test);
        let inspection = inspect(dir.path());
        assert!(inspection.files.is_empty());
        let keys: Vec<&str> = inspection.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "case[0].input.hl7_file",
                "case[1].name",
                "case[1].input.json",
                "case[2].input.path",
                "case[3].expect.archiv",
                "case[4].expect.archive.nothing",
                "case[5].expect.portal.error",
                "case[5].expect.portal.fields.\"nope\"",
                "case[6].expect",
                "case[7].rejected",
                "case[8].expect.portal.payloud",
            ],
            "{:#?}",
            inspection.problems
        );
        let p = &inspection.problems[0];
        assert!(p.file.ends_with("tests/lab.toml"), "{p}");
        assert!(p.message.contains("nope.hl7") && p.hint.contains("relative to the test file"));
        assert!(inspection.problems[2]
            .message
            .contains("takes HL7 v2 messages"));
        assert!(inspection.problems[4].hint.contains("archive, portal"));

        // An unknown channel, and a channel_file that holds another one.
        write(dir.path(), "tests/lab.toml", "channel = \"lob\"\n[[case]]\nname = \"a\"\ninput.hl7 = \"MSH|^~\\\\&|X\"\nexpect.archive = { nothing = true }\n");
        let inspection = inspect(dir.path());
        assert_eq!(inspection.problems.len(), 1);
        assert_eq!(inspection.problems[0].key, "channel");
        assert!(inspection.problems[0].hint.contains("lab"));
        write(dir.path(), "tests/lab.toml", "channel = \"lob\"\nchannel_file = \"../channels/lab.toml\"\n[[case]]\nname = \"a\"\ninput.hl7 = \"MSH|^~\\\\&|X\"\nexpect.archive = { nothing = true }\n");
        let inspection = inspect(dir.path());
        assert_eq!(inspection.problems.len(), 1);
        assert!(inspection.problems[0]
            .message
            .contains("holds channel 'lab'"));
    }

    #[test]
    fn http_inputs_are_routed_as_the_source_routes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "channels/f.toml",
            "name = \"f\"\n[source]\ntype = \"fhir_rest\"\nlisten = \"127.0.0.1:0\"\nbase_path = \"/fhir\"\n\
             [[route]]\nto = [\"portal\"]\n[[destination]]\nname = \"portal\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:9/h\"\n",
        );
        let patient = r#"{"resourceType":"Patient","identifier":[{"system":"urn:x","value":"P1"}],"name":[{"family":"Doe"}]}"#;
        write(
            dir.path(),
            "tests/f.toml",
            &format!(
                "channel = \"f\"\n[[case]]\nname = \"create\"\ninput = {{ path = \"/fhir/Patient\", json = '{patient}' }}\n\
                 expect.portal = {{ fields = {{ \"/patient/name/family\" = \"Doe\" }} }}\n\
                 [[case]]\nname = \"wrong type\"\ninput = {{ path = \"/fhir/Appointment\", json = '{patient}' }}\nrejected = \"resourceType\"\n"
            ),
        );
        let r = results(dir.path());
        assert!(r.iter().all(|c| c.passed), "{r:#?}");
        write(
            dir.path(),
            "tests/f.toml",
            "channel = \"f\"\n[[case]]\nname = \"read\"\ninput = { path = \"/fhir/Patient/1\", method = \"GET\", json = \"{}\" }\nrejected = true\n\
             [[case]]\nname = \"outside\"\ninput = { path = \"/other/Patient\", json = \"{}\" }\nrejected = true\n\
             [[case]]\nname = \"no path\"\ninput = { json = \"{}\" }\nrejected = true\n",
        );
        let inspection = inspect(dir.path());
        let shown: Vec<String> = inspection
            .problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.message))
            .collect();
        assert_eq!(
            shown,
            [
                "case[0].input.path: GET /fhir/Patient/1 takes no body",
                "case[1].input.path: '/other/Patient' is outside the source's base_path '/fhir'",
                "case[2].input: missing key 'path'",
            ]
        );
    }
}
