//! Reading the configuration folder into the schema: `switchboard.toml` merged with the
//! defaults and the `SWITCHBOARD_*` environment variables, then each `channels/*.toml` on
//! its own, every mistake of shape reported as a [`Problem`] with its file and key path.
//!
//! Start at [`inspect`]; [`load`] is what the engine calls. What a value that deserialized
//! means is checked in `checks.rs`, which `inspect` runs; the types read are in `schema.rs`.

use super::checks::{check_across_channels, check_channel, check_engine};
use super::schema::{ChannelConfig, EngineConfig};
use super::{LoadedChannel, LoadedConfig, Problem, Problems};
use channels::destination::DestinationKind;
use channels::mllp::listener::ListenerConfig;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// The engine settings' sources, merged as [`load`] merges them: the defaults, then
/// `DIR/switchboard.toml` when it exists, then `SWITCHBOARD_*` environment variables
/// (`SWITCHBOARD_ADMIN__LISTEN` is `admin.listen`). The CLI's admin commands read the admin
/// address and token from the same merge, so they find the engine `run` started.
pub fn engine_figment(dir: &Path) -> Figment {
    let main_file = dir.join("switchboard.toml");
    let mut figment = Figment::from(Serialized::defaults(EngineConfig::default()));
    if main_file.exists() {
        figment = figment.merge(Toml::file(&main_file));
    }
    figment.merge(
        Env::prefixed("SWITCHBOARD_")
            .split("__")
            .filter(|k| is_engine_env_key(k.as_str())),
    )
}

/// The `SWITCHBOARD_*` variable that set `key` (such as `admin.listen`, or
/// `admin.tokens[0].token`, read at `admin.tokens`) in the merged engine settings, or `None`
/// when the value came from the file or the defaults. figment keeps each value's source.
fn env_source(figment: &Figment, key: &str) -> Option<String> {
    let key = key.split('[').next().unwrap_or_default();
    if key.is_empty() {
        return None;
    }
    let md = figment.find_metadata(key)?;
    if !md.name.contains("environment variable") {
        return None;
    }
    // `admin.listen` was read from SWITCHBOARD_ADMIN__LISTEN (keys are lower-cased, `__`
    // goes one table down); name the variable as it is spelled in the environment.
    let wanted = format!("SWITCHBOARD_{}", key.replace('.', "__")).to_ascii_uppercase();
    let spelled = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .find(|k| k.to_ascii_uppercase() == wanted);
    Some(spelled.unwrap_or(wanted))
}

/// Whether a `SWITCHBOARD_*` variable (prefix removed, `__` made `.`) sets an engine key:
/// a top-level key itself or a key inside one of its tables. Other variables, such as the
/// CLI's `SWITCHBOARD_ADMIN_TOKEN`, are not configuration and must not become unknown keys.
fn is_engine_env_key(key: &str) -> bool {
    const TOP_LEVEL: [&str; 11] = [
        "data_dir",
        "durability",
        "retention_days",
        "admin",
        "log",
        "shutdown_grace_secs",
        "retention_interval_secs",
        "min_free_disk_bytes",
        "store_cache_mib",
        "encryption",
        "cluster",
    ];
    let key = key.to_ascii_lowercase();
    let top = key.split('.').next().unwrap_or_default();
    TOP_LEVEL.contains(&top)
}

/// Loads and checks `DIR/switchboard.toml` and `DIR/channels/*.toml`.
///
/// # Errors
///
/// [`Problems`] listing every problem found, each with file, key and hint.
pub fn load(dir: &Path) -> Result<LoadedConfig, Problems> {
    inspect(dir).into_loaded()
}

/// What [`inspect`] found: every problem, and whatever loaded without one (for `check`,
/// which also looks for warnings in the channels that are right).
#[derive(Debug, Clone)]
pub struct Inspection {
    /// The config folder.
    pub dir: PathBuf,
    /// Engine-wide settings, when `switchboard.toml` (with the environment) is right.
    pub engine: Option<EngineConfig>,
    /// The channels whose files have no problem, in file-name order.
    pub channels: Vec<LoadedChannel>,
    /// How many `channels/*.toml` files there are, right or not.
    pub channel_files: usize,
    /// Every problem found, each with file, key and hint.
    pub problems: Vec<Problem>,
    admin_token: Option<String>,
    admin_tokens: Vec<crate::auth::ApiToken>,
    version: String,
    store_keys: Vec<crate::store::seal::StoreKey>,
}

impl Inspection {
    /// The configuration, when nothing is wrong.
    ///
    /// # Errors
    ///
    /// [`Problems`] listing every problem found.
    pub fn into_loaded(self) -> Result<LoadedConfig, Problems> {
        match self.engine {
            Some(engine) if self.problems.is_empty() => Ok(LoadedConfig {
                dir: self.dir,
                engine,
                admin_token: self.admin_token,
                admin_tokens: self.admin_tokens,
                channels: self.channels,
                version: self.version,
                store_keys: self.store_keys,
            }),
            _ => Err(Problems(self.problems)),
        }
    }
}

/// Loads and checks `DIR/switchboard.toml` and `DIR/channels/*.toml`, keeping what is right
/// beside every problem found.
pub fn inspect(dir: &Path) -> Inspection {
    let mut problems = Vec::new();
    let mut hasher = Sha256::new();
    let main_file = dir.join("switchboard.toml");
    let rel = |p: &Path| p.display().to_string();
    if !dir.is_dir() {
        return Inspection {
            dir: dir.to_path_buf(),
            engine: None,
            channels: Vec::new(),
            channel_files: 0,
            problems: vec![Problem {
                file: rel(dir),
                key: String::new(),
                message: "config folder does not exist".into(),
                hint: "pass --config DIR with switchboard.toml and channels/ inside".into(),
            }],
            admin_token: None,
            admin_tokens: Vec::new(),
            version: String::new(),
            store_keys: Vec::new(),
        };
    }
    if main_file.exists() {
        hasher.update(std::fs::read(&main_file).unwrap_or_default());
    }
    let figment = engine_figment(dir);
    // figment merges the layers (and reports TOML syntax errors); the merged table is then
    // deserialized key by key so that every mistake is reported with its path.
    let mut engine_structure_ok = false;
    let engine = match figment.extract::<figment::value::Value>() {
        Ok(merged) => {
            let (engine, found) = deserialize_every::<EngineConfig>(
                figment_to_toml(&merged).unwrap_or_else(|| toml::Value::Table(toml::Table::new())),
                "",
            );
            engine_structure_ok = found.is_empty();
            problems.extend(
                found
                    .into_iter()
                    .map(|(key, message)| structure_problem(&rel(&main_file), key, &message)),
            );
            engine
        }
        Err(errors) => {
            for e in errors {
                problems.push(figment_problem(&e, &rel(&main_file)));
            }
            None
        }
    };

    let secrets = engine
        .as_ref()
        .map(|e| check_engine(e, &rel(&main_file), &mut problems))
        .unwrap_or_default();

    // A value an environment variable set is the variable's mistake, not the file's.
    for p in problems.iter_mut() {
        if p.file == rel(&main_file) {
            if let Some(var) = env_source(&figment, &p.key) {
                p.file = format!("environment variable {var}");
                if !p.hint.is_empty() {
                    p.hint.push_str("; ");
                }
                p.hint
                    .push_str("the variable overrides switchboard.toml: fix or unset it");
            }
        }
    }

    // The checks above also ran on what deserialized around a mistake (defaults in place of
    // wrong keys); only a right file counts as engine settings.
    let engine = engine.filter(|_| engine_structure_ok);
    let mut channels = Vec::new();
    let files = channel_files(dir);
    let channel_files = files.len();
    for file in files {
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        let bytes = std::fs::read(&file);
        hasher.update(bytes.as_deref().unwrap_or_default());
        let parsed = match bytes {
            Ok(bytes) => parse_channel(&String::from_utf8_lossy(&bytes), &rel(&file)),
            Err(e) => Err(vec![Problem {
                file: rel(&file),
                key: String::new(),
                message: format!("cannot read the file: {e}"),
                hint: "check its permissions".into(),
            }]),
        };
        match parsed {
            Ok(config) => {
                let before = problems.len();
                let charset_fallback = check_channel(&config, &rel(&file), &mut problems);
                if problems.len() == before {
                    if let Some(charset_fallback) = charset_fallback {
                        channels.push(LoadedChannel {
                            config,
                            file,
                            charset_fallback,
                        });
                    }
                }
            }
            Err(found) => problems.extend(found),
        }
    }
    check_across_channels(engine.as_ref(), &channels, &mut problems);

    Inspection {
        dir: dir.to_path_buf(),
        engine,
        channels,
        channel_files,
        problems,
        admin_token: secrets.admin_token,
        admin_tokens: secrets.admin_tokens,
        version: hex::encode(&hasher.finalize()[..8]),
        store_keys: secrets.store_keys,
    }
}

/// One step of a key path: a table key or an array index.
enum Step {
    Key(String),
    Index(usize),
}

/// Deserializes `value` as `T` and, when that fails, keeps going: the key at fault is taken
/// out (for a missing key, the table missing it) and the rest deserialized again, so that
/// every mistake is found, each as (key path below `prefix`, serde's message). Paths name
/// array elements by their index in the file, however many were taken out before them.
/// `T` is what deserialized in the end (with the defaults of keys taken out), so that
/// later checks can look at the rest; it is right only when nothing was found.
pub(crate) fn deserialize_every<T: serde::de::DeserializeOwned>(
    mut value: toml::Value,
    prefix: &str,
) -> (Option<T>, Vec<(String, String)>) {
    let mut found = Vec::new();
    let mut removed_keys: Vec<String> = Vec::new();
    // (array path, index in the file) of every element taken out.
    let mut removed_items: Vec<(String, usize)> = Vec::new();
    // Each round takes one value out, so this ends; the bound only caps a pathological file.
    for _ in 0..200 {
        let err = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            Ok(t) => return (Some(t), found),
            Err(e) => e,
        };
        let mut steps: Vec<Step> = err
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Map { key } => Some(Step::Key(key.clone())),
                serde_path_to_error::Segment::Seq { index } => Some(Step::Index(*index)),
                serde_path_to_error::Segment::Enum { .. }
                | serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        // toml adds "in `key`" on a line of its own; the path says that already.
        let message = err.into_inner().to_string();
        let message = message
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let missing = backticked(&message, "missing field `");
        if let Some(field) = &missing {
            steps.push(Step::Key(field.clone()));
        }
        let (key, item) = file_path(prefix, &steps, &removed_items);
        // A required key taken out because it was wrong is reported already.
        if missing.is_none() || !removed_keys.contains(&key) {
            found.push((key.clone(), message));
        }
        // Take out the key at fault; for a missing key, the table that needs it.
        let (taken, taken_item) = if missing.is_some() {
            steps.pop();
            file_path(prefix, &steps, &removed_items)
        } else {
            (key, item)
        };
        if steps.is_empty() || !remove_at(&mut value, &steps) {
            return (None, found);
        }
        removed_keys.push(taken);
        if let Some(item) = taken_item {
            removed_items.push(item);
        }
    }
    (None, found)
}

/// The text between `start` and the next backtick of `message`, when it starts so.
fn backticked(message: &str, start: &str) -> Option<String> {
    let rest = message.strip_prefix(start)?;
    rest.split_once('`').map(|(field, _)| field.to_string())
}

/// The key path of `steps` (indices as they are now) as the file has it, and, when the last
/// step is an array element, (array path, index in the file).
fn file_path(
    prefix: &str,
    steps: &[Step],
    removed_items: &[(String, usize)],
) -> (String, Option<(String, usize)>) {
    let mut out = prefix.to_string();
    let mut last_item = None;
    for s in steps {
        last_item = None;
        match s {
            Step::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            Step::Index(i) => {
                let mut gone: Vec<usize> = removed_items
                    .iter()
                    .filter(|(array, _)| *array == out)
                    .map(|(_, j)| *j)
                    .collect();
                gone.sort_unstable();
                let mut original = *i;
                for g in gone {
                    if g <= original {
                        original += 1;
                    }
                }
                last_item = Some((out.clone(), original));
                out.push_str(&format!("[{original}]"));
            }
        }
    }
    (out, last_item)
}

/// Takes the value at `steps` out of `value`; false when there is nothing to take out.
fn remove_at(value: &mut toml::Value, steps: &[Step]) -> bool {
    let Some((last, parents)) = steps.split_last() else {
        return false;
    };
    let mut at = value;
    for s in parents {
        let next = match (s, at) {
            (Step::Key(k), toml::Value::Table(t)) => t.get_mut(k),
            (Step::Index(i), toml::Value::Array(a)) => a.get_mut(*i),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return false,
        }
    }
    match (last, at) {
        (Step::Key(k), toml::Value::Table(t)) => t.remove(k).is_some(),
        (Step::Index(i), toml::Value::Array(a)) if *i < a.len() => {
            a.remove(*i);
            true
        }
        _ => false,
    }
}

/// figment's merged value as TOML; `None` for an empty value (an unset `Option`).
fn figment_to_toml(v: &figment::value::Value) -> Option<toml::Value> {
    use figment::value::Value as F;
    Some(match v {
        F::String(_, s) => toml::Value::String(s.clone()),
        F::Char(_, c) => toml::Value::String(c.to_string()),
        F::Bool(_, b) => toml::Value::Boolean(*b),
        F::Num(_, n) => match n.to_i128().and_then(|i| i64::try_from(i).ok()) {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.to_f64()?),
        },
        F::Empty(..) => return None,
        F::Dict(_, d) => toml::Value::Table(
            d.iter()
                .filter_map(|(k, v)| figment_to_toml(v).map(|v| (k.clone(), v)))
                .collect(),
        ),
        F::Array(_, a) => toml::Value::Array(a.iter().filter_map(figment_to_toml).collect()),
    })
}

/// A deserialization message as a [`Problem`] at `key`, worded for an operator.
pub(crate) fn structure_problem(file: &str, key: String, message: &str) -> Problem {
    let (message, hint) = if let Some(field) = backticked(message, "unknown field `") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        (
            format!("unknown key '{field}'"),
            if expected.is_empty() || expected.starts_with("there are no fields") {
                "remove it".to_string()
            } else {
                format!("check the spelling; expected {expected}")
            },
        )
    } else if let Some(field) = backticked(message, "missing field `") {
        (
            format!("missing key '{field}'"),
            "this key is required; see conf/examples/ for a working file".into(),
        )
    } else if let Some(v) = backticked(message, "unknown variant `") {
        let expected = message
            .split_once(", expected ")
            .map(|(_, e)| e.replace('`', ""))
            .unwrap_or_default();
        (
            format!("unknown value '{v}'"),
            format!("expected {expected}"),
        )
    } else if message.starts_with("invalid type") || message.starts_with("invalid value") {
        let expected = message.rsplit_once(", expected ").map_or("", |(_, e)| e);
        let hint = if ["u8", "u16", "u32", "u64", "usize", "i64", "integer"]
            .iter()
            .any(|t| expected.contains(t))
        {
            "give a whole number without quotes (0 or more)"
        } else if expected.contains("bool") {
            "give true or false, without quotes"
        } else if expected.contains("sequence") {
            "give a list, such as [\"a\", \"b\"]"
        } else if expected.contains("string") {
            "give text in double quotes"
        } else if expected.contains("map") || expected.contains("struct") {
            "give a table ([name] or { key = value })"
        } else {
            "see conf/examples/ for this key's type"
        };
        (message.to_string(), hint.to_string())
    } else {
        (message.to_string(), String::new())
    };
    Problem {
        file: file.to_string(),
        key,
        message,
        hint,
    }
}

/// Parses one channel file, reporting every mistake with its key path. `source` and each
/// `destination` are internally tagged (`type = ...`), which hides the key of a mistake
/// inside them; they are deserialized again as the kind their `type` names.
pub(crate) fn parse_channel(text: &str, file: &str) -> Result<ChannelConfig, Vec<Problem>> {
    let table = match text.parse::<toml::Table>() {
        Ok(t) => t,
        Err(e) => {
            return Err(vec![Problem {
                file: file.to_string(),
                key: String::new(),
                message: format!("not valid TOML: {}", e.to_string().trim()),
                hint: "check the TOML syntax at that line".into(),
            }])
        }
    };
    let (config, top) = deserialize_every::<ChannelConfig>(toml::Value::Table(table.clone()), "");
    // Mistakes inside `source` and each `destination` are found again, with their keys.
    let mut tagged: Vec<(String, &toml::Value, VariantCheck)> = Vec::new();
    if let Some(source) = table.get("source") {
        tagged.push(("source".into(), source, source_variant));
    }
    if let Some(toml::Value::Array(dests)) = table.get("destination") {
        for (i, d) in dests.iter().enumerate() {
            tagged.push((format!("destination[{i}]"), d, destination_variant));
        }
    }
    let mut found = Vec::new();
    let mut claimed = Vec::new();
    for (prefix, value, variant) in tagged {
        let here: Vec<(String, String)> = top
            .iter()
            .filter(|(k, _)| is_under(k, &prefix))
            .cloned()
            .collect();
        if !here.is_empty() {
            let precise = tagged_problems(value, &prefix, variant);
            if precise.is_empty() {
                // An unknown `type`: say so at the key.
                found.extend(here.into_iter().map(|(k, m)| {
                    if k == prefix && m.starts_with("unknown variant") {
                        (format!("{prefix}.type"), m)
                    } else {
                        (k, m)
                    }
                }));
            } else {
                found.extend(precise);
            }
        }
        claimed.push(prefix);
    }
    let claimed_by = |k: &str| claimed.iter().any(|c| is_under(k, c));
    let mut problems: Vec<Problem> = top
        .iter()
        .filter(|(k, _)| !claimed_by(k))
        .cloned()
        .chain(found)
        .map(|(key, message)| structure_problem(file, key, &message))
        .collect();
    problems.sort_by(|a, b| a.key.cmp(&b.key));
    // A channel with a mistake is not checked further: what deserialized around it lacks
    // the wrong tables, and a route would then name a destination "unknown".
    match config {
        Some(c) if problems.is_empty() => Ok(c),
        _ => Err(problems),
    }
}

/// Finds the mistakes of a table of one kind: (kind, table without `type`, key prefix).
type VariantCheck = fn(&str, toml::Value, &str) -> Option<Vec<(String, String)>>;

/// True when `key` is `prefix` or a key below it.
fn is_under(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|r| r.is_empty() || r.starts_with('.') || r.starts_with('['))
}

/// The mistakes of an internally tagged table, found by deserializing it as the kind its
/// `type` names (see [`source_variant`]); empty when `type` is missing or unknown.
fn tagged_problems(
    value: &toml::Value,
    prefix: &str,
    variant: VariantCheck,
) -> Vec<(String, String)> {
    let Some(table) = value.as_table() else {
        return Vec::new();
    };
    let Some(toml::Value::String(kind)) = table.get("type") else {
        return Vec::new();
    };
    let mut rest = table.clone();
    rest.remove("type");
    variant(kind, toml::Value::Table(rest), prefix).unwrap_or_default()
}

/// The mistakes of a `[source]` table of kind `kind` (its `type`), with their key paths;
/// `None` for a kind [`SourceConfig`](super::SourceConfig) does not have. The kinds must be
/// exactly those of [`SourceConfig`](super::SourceConfig) (a test compares them with serde's
/// list).
fn source_variant(kind: &str, v: toml::Value, prefix: &str) -> Option<Vec<(String, String)>> {
    Some(match kind {
        "mllp_listener" => deserialize_every::<ListenerConfig>(v, prefix).1,
        "sftp" => deserialize_every::<channels::sftp::PollerConfig>(v, prefix).1,
        "latrexa" => {
            deserialize_every::<channels::clinic_api::latrexa_bookings::BookingsConfig>(v, prefix).1
        }
        "fhir_rest" => {
            deserialize_every::<channels::fhir_rest::source::FhirSourceConfig>(v, prefix).1
        }
        "webhook" => deserialize_every::<channels::webhook::receiver::ReceiverConfig>(v, prefix).1,
        "dicom_worklist" => deserialize_every::<channels::dicom::WorklistSourceConfig>(v, prefix).1,
        "dicom_store" => deserialize_every::<channels::dicom::StoreSourceConfig>(v, prefix).1,
        _ => return None,
    })
}

/// As [`source_variant`], for a `[[destination]]` table and
/// [`DestinationConfig`](channels::destination::DestinationConfig): the kind is a
/// [`DestinationKind`], so every kind has its arm here.
fn destination_variant(kind: &str, v: toml::Value, prefix: &str) -> Option<Vec<(String, String)>> {
    use channels::{clinic_api, fhir_rest, file, mllp, sftp, webhook};
    use transforms::dest::Vendor;
    Some(match DestinationKind::parse(kind)? {
        DestinationKind::Mllp => deserialize_every::<mllp::sender::SenderConfig>(v, prefix).1,
        DestinationKind::Webhook => {
            deserialize_every::<webhook::sender::WebhookConfig>(v, prefix).1
        }
        DestinationKind::File => deserialize_every::<file::FileConfig>(v, prefix).1,
        DestinationKind::Sftp => deserialize_every::<sftp::WriterConfig>(v, prefix).1,
        DestinationKind::Vendor(Vendor::Opsport) => {
            deserialize_every::<clinic_api::opsport::OpsportConfig>(v, prefix).1
        }
        DestinationKind::Vendor(Vendor::Buktor) => {
            deserialize_every::<clinic_api::buktor::BuktorConfig>(v, prefix).1
        }
        DestinationKind::Vendor(Vendor::Px360) => {
            deserialize_every::<clinic_api::px360::Px360Config>(v, prefix).1
        }
        DestinationKind::Vendor(Vendor::Latrexa) => {
            deserialize_every::<clinic_api::latrexa::LatrexaConfig>(v, prefix).1
        }
        DestinationKind::Fhir => deserialize_every::<fhir_rest::client::FhirConfig>(v, prefix).1,
        DestinationKind::Dicom => {
            deserialize_every::<channels::dicom::sender::DicomDestinationConfig>(v, prefix).1
        }
        DestinationKind::Worklist => {
            deserialize_every::<channels::dicom::worklist_dest::WorklistDestinationConfig>(
                v, prefix,
            )
            .1
        }
    })
}

fn figment_problem(e: &figment::Error, file: &str) -> Problem {
    use figment::error::Kind;
    let key = e.path.join(".");
    let (message, hint) = match &e.kind {
        Kind::UnknownField(field, expected) => (
            format!("unknown key '{field}'"),
            if expected.is_empty() {
                String::new()
            } else {
                format!("expected one of: {}", expected.join(", "))
            },
        ),
        Kind::MissingField(field) => (
            format!("missing key '{field}'"),
            "this key is required".into(),
        ),
        Kind::UnknownVariant(v, expected) => (
            format!("unknown value '{v}'"),
            format!("expected one of: {}", expected.join(", ")),
        ),
        Kind::Message(m) if m.contains("TOML") || m.contains("expected") => {
            (m.clone(), "check the TOML syntax at that line".into())
        }
        other => (other.to_string(), String::new()),
    };
    // figment reports a missing field at the table, name it at the key.
    let key = match &e.kind {
        Kind::MissingField(field) if key.is_empty() => field.to_string(),
        Kind::MissingField(field) => format!("{key}.{field}"),
        Kind::UnknownField(field, _) if key.is_empty() => field.clone(),
        Kind::UnknownField(field, _) if !key.ends_with(field.as_str()) => format!("{key}.{field}"),
        _ => key,
    };
    Problem {
        file: file.to_string(),
        key,
        message,
        hint,
    }
}

/// The channel files of the configuration in `dir`: every `channels/*.toml`, in name order
/// (none when the folder cannot be read).
pub(crate) fn channel_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("channels"))
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::write;
    use crate::config::{Durability, SourceConfig};
    use channels::destination::DestinationConfig;

    #[test]
    fn loads_a_minimal_config_with_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "switchboard.toml", "data_dir = \"d\"\n");
        write(
            dir.path(),
            "channels/a.toml",
            "name = \"a\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n",
        );
        let c = load(dir.path()).expect("valid");
        assert_eq!(c.engine.retention_days, 90);
        assert_eq!(c.engine.durability, Durability::Fsync);
        assert_eq!(c.channels.len(), 1);
        let SourceConfig::MllpListener(l) = &c.channels[0].config.source else {
            panic!("an MLLP listener")
        };
        assert_eq!(l.max_message_bytes, 1024 * 1024);
        assert_eq!(c.version.len(), 16);
    }

    #[test]
    fn reports_every_problem_with_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "switchboard.toml",
            "data_dir = \"d\"\ncolour = 1\n[admin]\nlisten = \"nope\"\n",
        );
        write(
            dir.path(),
            "channels/a.toml",
            "name = \"a\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:2600\"\nmax_conections = 3\n",
        );
        write(
            dir.path(),
            "channels/b.toml",
            "name = \"B!\"\ncharset_fallback = \"klingon\"\ntimezone = \"Mars/Olympus_Mons\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"localhost\"\n",
        );
        write(
            dir.path(),
            "channels/c.toml",
            "name = \"c\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:2601\"\n",
        );
        write(
            dir.path(),
            "channels/d.toml",
            "name = \"c\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"0.0.0.0:2601\"\n",
        );
        let problems = load(dir.path()).expect_err("invalid").0;
        let shown: Vec<String> = problems
            .iter()
            .map(|p| {
                format!(
                    "{}|{}",
                    p.file.rsplit('/').next().unwrap_or_default(),
                    p.key
                )
            })
            .collect();
        for expect in [
            "switchboard.toml|colour",
            "a.toml|source.max_conections",
            "b.toml|name",
            "b.toml|charset_fallback",
            "b.toml|timezone",
            "b.toml|source.listen",
            "d.toml|name",
            "d.toml|source.listen",
        ] {
            assert!(
                shown.contains(&expect.to_string()),
                "missing {expect} in {shown:?}"
            );
        }
    }

    /// The kinds `source_variant` and `destination_variant` know must be exactly the ones
    /// serde lists for the enums, or a mistake inside a new kind would lose its key path.
    #[test]
    fn variant_checks_know_every_kind() {
        fn kinds<T: serde::de::DeserializeOwned + std::fmt::Debug>() -> Vec<String> {
            let v: toml::Value = toml::from_str("type = \"no-such-kind\"").expect("toml");
            let err = T::deserialize(v).expect_err("unknown kind").to_string();
            let first = err.lines().next().unwrap_or_default().to_string();
            let listed = first
                .split_once("expected one of ")
                .expect("a list")
                .1
                .to_string();
            listed
                .split(", ")
                .map(|k| k.trim().trim_matches('`').to_string())
                .collect()
        }
        let empty = || toml::Value::Table(toml::Table::new());
        let sources = kinds::<SourceConfig>();
        assert_eq!(sources.len(), 7, "{sources:?}");
        for k in &sources {
            assert!(source_variant(k, empty(), "source").is_some(), "{k}");
        }
        let destinations = kinds::<DestinationConfig>();
        assert_eq!(destinations.len(), 11, "{destinations:?}");
        for k in &destinations {
            assert!(destination_variant(k, empty(), "d").is_some(), "{k}");
        }
    }

    #[test]
    fn every_mistake_of_a_file_with_its_key_path() {
        let text = "name = 7\nack = \"sometimes\"\nretention_days = -1\n\
            [source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\nmax_connections = \"many\"\nmax_in_flight = true\n\
            [[route]]\nto = \"a\"\n[[route]]\nwhen = { message_typ = [] }\nto = [\"a\"]\n\
            [[destination]]\nname = \"a\"\ntype = \"file\"\n\
            [[destination]]\nname = \"b\"\ntype = \"mllp\"\naddress = \"x:1\"\nconnections = \"many\"\n\
            [[destination]]\nname = \"c\"\ntype = \"carrier-pigeon\"\n";
        let problems = parse_channel(text, "c.toml").expect_err("mistakes");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "ack",
                "destination[0].folder",
                "destination[1].connections",
                "destination[2].type",
                "name",
                "retention_days",
                "route[0].to",
                "route[1].when.message_typ",
                "source.max_connections",
                "source.max_in_flight",
            ],
            "{problems:#?}"
        );
        let by_key = |k: &str| problems.iter().find(|p| p.key == k).expect("present");
        assert_eq!(
            by_key("destination[0].folder").message,
            "missing key 'folder'"
        );
        assert_eq!(
            by_key("destination[2].type").message,
            "unknown value 'carrier-pigeon'"
        );
        assert!(by_key("destination[2].type").hint.contains("mllp"));
        assert!(by_key("source.max_connections")
            .hint
            .contains("whole number"));
        assert!(by_key("route[0].to").hint.contains("list"));
    }

    /// A kind's name outside its enum is refused at load, naming the file and the key, for
    /// the webhook `format`, a route's `payload` and a destination's `type`.
    #[test]
    fn unknown_kinds_are_refused_with_file_and_key() {
        let text = "name = \"w\"\n\
            [source]\ntype = \"webhook\"\nlisten = \"127.0.0.1:0\"\nformat = \"xml\"\n\
            [[route]]\npayload = \"opsportt\"\nto = [\"a\"]\n\
            [[destination]]\nname = \"a\"\ntype = \"opsport\"\nbase_url = \"http://127.0.0.1:1\"\napi_key = { env = \"K\" }\n\
            [[destination]]\nname = \"b\"\ntype = \"bukto\"\n";
        let problems = parse_channel(text, "w.toml").expect_err("unknown kinds");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["destination[1].type", "route[0].payload", "source.format"],
            "{problems:#?}"
        );
        for p in &problems {
            assert_eq!(p.file, "w.toml", "{p:?}");
        }
        let by_key = |k: &str| problems.iter().find(|p| p.key == k).expect("present");
        assert_eq!(by_key("source.format").message, "unknown value 'xml'");
        assert!(
            by_key("source.format").hint.contains("px360"),
            "{problems:#?}"
        );
        assert_eq!(
            by_key("route[0].payload").message,
            "unknown value 'opsportt'"
        );
        assert!(
            by_key("route[0].payload").hint.contains("canonical")
                && by_key("route[0].payload").hint.contains("latrexa"),
            "{problems:#?}"
        );
        assert_eq!(
            by_key("destination[1].type").message,
            "unknown value 'bukto'"
        );
        assert!(by_key("destination[1].type").hint.contains("buktor"));
    }

    /// Every kind is read from its configuration spelling: the payload and destination
    /// `type` of each vendor, and each webhook format.
    #[test]
    fn each_kind_is_read_from_its_spelling() {
        use channels::source::WebhookFormat;
        use transforms::dest::Vendor;
        for vendor in Vendor::ALL {
            let text = format!(
                "name = \"v\"\n\
                 [source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
                 [[route]]\npayload = \"{vendor}\"\nto = [\"a\"]\n\
                 [[destination]]\nname = \"a\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:1/\"\n"
            );
            let c = parse_channel(&text, "v.toml").expect("valid");
            assert_eq!(
                c.routes[0].payload,
                Some(crate::routing::PayloadKind::Vendor(vendor))
            );
        }
        for format in [
            WebhookFormat::Buktor,
            WebhookFormat::Px360,
            WebhookFormat::Opsport,
        ] {
            let text = format!(
                "name = \"h\"\n\
                 [source]\ntype = \"webhook\"\nlisten = \"127.0.0.1:0\"\nformat = \"{}\"\n\
                 [[route]]\nto = [\"a\"]\n\
                 [[destination]]\nname = \"a\"\ntype = \"file\"\nfolder = \"/tmp/x\"\n",
                format.as_str()
            );
            let c = parse_channel(&text, "h.toml").expect("valid");
            let SourceConfig::Webhook(w) = &c.source else {
                panic!("a webhook source: {:?}", c.source);
            };
            assert_eq!(w.format, format);
        }
    }

    #[test]
    fn only_engine_keys_are_taken_from_the_environment() {
        assert!(is_engine_env_key("admin.listen"));
        assert!(is_engine_env_key("ADMIN.LISTEN"));
        assert!(is_engine_env_key("data_dir"));
        assert!(is_engine_env_key("log.color"));
        // The CLI's token variable and other SWITCHBOARD_* variables are not config keys.
        assert!(!is_engine_env_key("admin_token"));
        assert!(!is_engine_env_key("under_test"));
        assert!(!is_engine_env_key("logger"));
    }
}
