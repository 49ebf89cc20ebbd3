//! The checks over a configuration that deserialized: what serde cannot see, such as an
//! address that does not parse, a name used twice, a secret that does not resolve, a route to
//! a destination the channel does not have.
//!
//! Each check adds a [`Problem`] with file, key and hint and goes on, so that
//! [`inspect`](super::inspect) reports every problem at once. Not here: reading files and the
//! environment, and mistakes of shape (an unknown key, a wrong type), which are found while
//! deserializing (`load.rs`).

use super::schema::{ChannelConfig, EncryptionConfig, EngineConfig, SourceConfig};
use super::{LoadedChannel, Problem};
use crate::auth::ApiToken;
use crate::routing::Router;
use crate::store::seal::StoreKey;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use transforms::hl7v2::charset::Charset;

/// What [`check_engine`] resolves on the way: the admin API tokens and the store keys.
#[derive(Debug, Default)]
pub(super) struct EngineSecrets {
    /// `admin.token`, resolved.
    pub(super) admin_token: Option<String>,
    /// `admin.token` as operator `admin`, then `admin.tokens`, resolved.
    pub(super) admin_tokens: Vec<ApiToken>,
    /// `encryption.keys`, resolved, newest first.
    pub(super) store_keys: Vec<StoreKey>,
}

/// Checks the engine-wide settings read from `file` (`switchboard.toml` with the
/// environment), resolving their secrets.
pub(super) fn check_engine(
    engine: &EngineConfig,
    file: &str,
    problems: &mut Vec<Problem>,
) -> EngineSecrets {
    let mut admin_token = None;
    let mut admin_tokens = Vec::new();
    let mut store_keys = Vec::new();
    if let Some(enc) = &engine.encryption {
        check_encryption(enc, file, problems, &mut store_keys);
    }
    if let Some(cluster) = &engine.cluster {
        problems.extend(cluster.problems(file));
        if let Ok(listen) = engine.admin.listen.parse::<SocketAddr>() {
            problems.extend(crate::cluster::config::admin_url_problem(
                cluster, listen, file,
            ));
        }
    }
    if engine.admin.listen.parse::<SocketAddr>().is_err() {
        problems.push(Problem {
            file: file.to_string(),
            key: "admin.listen".into(),
            message: format!("'{}' is not an address", engine.admin.listen),
            hint: "use IP:PORT, such as 127.0.0.1:8080".into(),
        });
    }
    if let Some(token) = &engine.admin.token {
        match token.resolve() {
            Ok(t) => {
                admin_tokens.push(ApiToken {
                    name: "admin".into(),
                    role: crate::auth::Role::Operator,
                    secret: t.clone(),
                });
                admin_token = Some(t);
            }
            Err(m) => problems.push(Problem {
                file: file.to_string(),
                key: "admin.token".into(),
                message: m,
                hint: "set the variable or create the file, or remove admin.token".into(),
            }),
        }
    }
    for (key, message) in crate::auth::name_problems(&engine.admin.tokens) {
        problems.push(Problem {
            file: file.to_string(),
            key,
            message,
            hint: "give each token its own name: letters, digits, '_', '-', '.'".into(),
        });
    }
    for (i, t) in engine.admin.tokens.iter().enumerate() {
        match t.token.resolve() {
            Ok(secret) if secret.len() < 8 => problems.push(Problem {
                file: file.to_string(),
                key: format!("admin.tokens[{i}].token"),
                message: "the token is shorter than 8 characters".into(),
                hint: "use a long random value".into(),
            }),
            Ok(secret) if admin_tokens.iter().any(|a| a.secret == secret) => {
                problems.push(Problem {
                    file: file.to_string(),
                    key: format!("admin.tokens[{i}].token"),
                    message: format!("token '{}' has the same secret as another", t.name),
                    hint: "every token needs its own secret, so that its role is clear".into(),
                })
            }
            Ok(secret) => admin_tokens.push(ApiToken {
                name: t.name.clone(),
                role: t.role,
                secret,
            }),
            Err(m) => problems.push(Problem {
                file: file.to_string(),
                key: format!("admin.tokens[{i}].token"),
                message: m,
                hint: "set the variable or create the file".into(),
            }),
        }
    }
    if engine.store_cache_mib == 0 {
        problems.push(Problem {
            file: file.to_string(),
            key: "store_cache_mib".into(),
            message: "must be at least 1".into(),
            hint: format!("the default is {}", crate::store::DEFAULT_CACHE_MIB),
        });
    }
    if engine.retention_days == 0 {
        problems.push(Problem {
            file: file.to_string(),
            key: "retention_days".into(),
            message: "must be at least 1".into(),
            hint: "the default is 90".into(),
        });
    }
    if let Some(message) = log_level_problem(&engine.log.level) {
        problems.push(Problem {
            file: file.to_string(),
            key: "log.level".into(),
            message,
            hint: "use error, warn, info, debug, trace or off, or directives such as info,engine=debug".into(),
        });
    }
    EngineSecrets {
        admin_token,
        admin_tokens,
        store_keys,
    }
}

/// Resolves `encryption.keys`, reporting each problem at its key.
fn check_encryption(
    enc: &EncryptionConfig,
    file: &str,
    problems: &mut Vec<Problem>,
    out: &mut Vec<StoreKey>,
) {
    let mut push = |key: String, message: String, hint: &str| {
        problems.push(Problem {
            file: file.to_string(),
            key,
            message,
            hint: hint.to_string(),
        })
    };
    if enc.keys.is_empty() {
        push(
            "encryption.keys".into(),
            "no key given".into(),
            "add [[encryption.keys]] with id and key, or remove [encryption]",
        );
    }
    for (i, k) in enc.keys.iter().enumerate() {
        if k.id.is_empty()
            || k.id.len() > 32
            || !k
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            push(
                format!("encryption.keys[{i}].id"),
                format!("'{}' is not a valid key id", k.id),
                "use 1 to 32 letters, digits, '-' or '_'",
            );
        }
        if enc.keys[..i].iter().any(|o| o.id == k.id) {
            push(
                format!("encryption.keys[{i}].id"),
                format!("key id '{}' is given twice", k.id),
                "each key needs its own id",
            );
        }
        match k
            .key
            .resolve()
            .and_then(|t| crate::store::seal::parse_key(&t))
        {
            Ok(key) => out.push(StoreKey {
                id: k.id.clone(),
                key,
            }),
            Err(m) => push(
                format!("encryption.keys[{i}].key"),
                m,
                "give 64 hex digits, e.g. from `openssl rand -hex 32`",
            ),
        }
    }
}

/// The tracing levels `log.level` accepts, alone or after `target=`.
const LOG_LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// Why `level` is not a log level or filter, or `None` when it is one.
///
/// tracing's own parser takes any bare word as a target name (`verbose` would mean "trace for
/// the target `verbose`", so the engine would log nothing); here each comma-separated
/// directive must be a level or `target=level`.
fn log_level_problem(level: &str) -> Option<String> {
    if level.trim().is_empty() {
        return Some("is empty".into());
    }
    for directive in level.split(',').map(str::trim) {
        let lvl = match directive.rsplit_once('=') {
            Some((target, lvl)) if !target.trim().is_empty() => lvl,
            Some(_) => return Some(format!("'{directive}' has no target before '='")),
            None => directive,
        };
        if !LOG_LEVELS.contains(&lvl.trim().to_ascii_lowercase().as_str()) {
            return Some(format!("'{lvl}' is not a log level"));
        }
    }
    if tracing_subscriber::EnvFilter::try_new(level).is_err() {
        return Some(format!("'{level}' is not a log filter"));
    }
    None
}

/// Checks one channel that deserialized, adding a problem for each mistake; the channel's
/// `charset_fallback`, resolved, or `None` when it names no character set.
pub(super) fn check_channel(
    c: &ChannelConfig,
    file: &str,
    problems: &mut Vec<Problem>,
) -> Option<Charset> {
    let mut push = |key: &str, message: String, hint: &str| {
        problems.push(Problem {
            file: file.to_string(),
            key: key.to_string(),
            message,
            hint: hint.to_string(),
        })
    };
    if c.name.is_empty()
        || c.name.len() > 64
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-' || ch == '_')
    {
        push(
            "name",
            format!("'{}' is not a valid channel name", c.name),
            "use lower-case letters, digits, '-' and '_' (at most 64)",
        );
    }
    match &c.source {
        SourceConfig::MllpListener(l) => {
            if l.listen.parse::<SocketAddr>().is_err() {
                push(
                    "source.listen",
                    format!("'{}' is not an address", l.listen),
                    "use IP:PORT, such as 0.0.0.0:2575",
                );
            }
            if l.max_message_bytes < 64 {
                push(
                    "source.max_message_bytes",
                    "must be at least 64".into(),
                    "the default is 1048576 (1 MiB)",
                );
            }
            if l.max_connections == 0 {
                push(
                    "source.max_connections",
                    "must be at least 1".into(),
                    "the default is 1024",
                );
            }
            if l.max_connections_per_peer == 0 {
                push(
                    "source.max_connections_per_peer",
                    "must be at least 1".into(),
                    "the default is 64",
                );
            }
            if l.max_in_flight == 0 {
                push(
                    "source.max_in_flight",
                    "must be at least 1".into(),
                    "the default is 64",
                );
            }
            if let Some(tls) = &l.tls {
                for (k, m) in tls.problems() {
                    push(
                        &format!("source.tls.{k}"),
                        m,
                        "give PEM files (or { env = .. } / { file = .. }) readable by the engine",
                    );
                }
            }
            for (key, v) in [
                ("source.idle_timeout_secs", l.idle_timeout_secs),
                ("source.frame_timeout_secs", l.frame_timeout_secs),
                ("source.write_timeout_secs", l.write_timeout_secs),
            ] {
                if v == 0 {
                    push(key, "must be at least 1".into(), "timeouts are in seconds");
                }
            }
        }
        SourceConfig::Sftp(s) => {
            for (k, m) in s.problems() {
                push(
                    &format!("source.{k}"),
                    m,
                    "see conf/examples/sftp-inbound.toml",
                );
            }
            for (k, secret) in s.server.secrets() {
                if let Err(m) = secret.resolve() {
                    push(
                        &format!("source.server.{k}"),
                        m,
                        "set the variable or create the file",
                    );
                }
            }
        }
        SourceConfig::Latrexa(l) => {
            for (k, m) in l.problems() {
                push(&format!("source.{k}"), m, "");
            }
            for (k, secret) in l.secrets() {
                if let Err(m) = secret.resolve() {
                    push(
                        &format!("source.{k}"),
                        m,
                        "set the variable or create the file",
                    );
                }
            }
            if !c.routes.is_empty() || !c.destinations.is_empty() {
                push(
                    "route",
                    "a latrexa channel has no routes or destinations".into(),
                    "bookings go to the HIS named in [source.his]; remove [[route]] and [[destination]]",
                );
            }
        }
        SourceConfig::FhirRest(f) => {
            for (k, m) in f.problems() {
                push(&format!("source.{k}"), m, "");
            }
            if let Some(tls) = &f.tls {
                for (k, m) in tls.problems() {
                    push(
                        &format!("source.tls.{k}"),
                        m,
                        "see conf/examples/mllp-tls.toml",
                    );
                }
            }
            for (k, secret) in f.auth.secrets() {
                if let Err(m) = secret.resolve() {
                    push(
                        &format!("source.{k}"),
                        m,
                        "set the variable or create the file",
                    );
                }
            }
        }
        SourceConfig::DicomWorklist(d) => {
            for (k, m) in d.problems() {
                push(
                    &format!("source.{k}"),
                    m,
                    "see conf/examples/radiology.toml",
                );
            }
        }
        SourceConfig::DicomStore(d) => {
            for (k, m) in d.problems() {
                push(
                    &format!("source.{k}"),
                    m,
                    "see conf/examples/radiology.toml",
                );
            }
        }
        SourceConfig::Webhook(w) => {
            for (k, m) in w.problems() {
                push(&format!("source.{k}"), m, "");
            }
            if let Some(tls) = &w.tls {
                for (k, m) in tls.problems() {
                    push(
                        &format!("source.tls.{k}"),
                        m,
                        "see conf/examples/mllp-tls.toml",
                    );
                }
            }
            for (k, secret) in w.auth.secrets() {
                if let Err(m) = secret.resolve() {
                    push(
                        &format!("source.{k}"),
                        m,
                        "set the variable or create the file",
                    );
                }
            }
        }
    }
    for (i, p) in c.accept.message_types.iter().enumerate() {
        let ok = p == "*"
            || p.split('^').count() <= 2
                && p.split('^').all(|part| {
                    part == "*"
                        || (!part.is_empty() && part.chars().all(|ch| ch.is_ascii_alphanumeric()))
                });
        if !ok {
            push(
                &format!("accept.message_types[{i}]"),
                format!("'{p}' is not a message type pattern"),
                "use *, ADT^*, or ADT^A04",
            );
        }
    }
    if c.accept.processing_ids.is_empty() {
        push(
            "accept.processing_ids",
            "must not be empty".into(),
            "the default is [\"P\", \"D\", \"T\"]",
        );
    }
    if c.accept.versions.is_empty() {
        push(
            "accept.versions",
            "must not be empty".into(),
            "the default is 2.1 to 2.9",
        );
    }
    if c.retention_days == Some(0) {
        push(
            "retention_days",
            "must be at least 1".into(),
            "leave it out to use the engine's retention",
        );
    }
    if c.ack_timeout_secs == 0 {
        push(
            "ack_timeout_secs",
            "must be at least 1".into(),
            "the default is 30",
        );
    }
    let mut dest_names = std::collections::HashSet::new();
    for (i, d) in c.destinations.iter().enumerate() {
        let key = |k: &str| format!("destination[{i}].{k}");
        if !dest_names.insert(d.name()) {
            push(
                &key("name"),
                format!("destination name '{}' is used twice", d.name()),
                "destination names must be unique within a channel",
            );
        }
        if d.name().is_empty()
            || !d
                .name()
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
        {
            push(
                &key("name"),
                format!("'{}' is not a valid destination name", d.name()),
                "use letters, digits, '-' and '_'",
            );
        }
        for (k, m) in d.problems() {
            push(&key(&k), m, "");
        }
        for (k, secret) in d.secrets() {
            if let Err(m) = secret.resolve() {
                push(&key(k), m, "set the variable or create the file");
            }
        }
    }
    if let Err(route_problems) = Router::compile(&c.name, &c.routes, &c.destinations) {
        for (k, m, h) in route_problems {
            push(&k, m, &h);
        }
    }
    if let Some(zone) = &c.timezone {
        if zone.parse::<transforms::model::Tz>().is_err() {
            push(
                "timezone",
                format!("unknown time zone '{zone}'"),
                "use an IANA time zone name such as Asia/Riyadh or Europe/Berlin",
            );
        }
    }
    let charset = Charset::from_name(&c.charset_fallback);
    if charset.is_none() {
        push(
            "charset_fallback",
            format!("unknown character set '{}'", c.charset_fallback),
            "use utf-8, iso-8859-1, windows-1256, or an MSH-18 name such as 8859/1",
        );
    }
    charset
}

/// Checks what no single file shows: a channel name used twice, two sources (or a source
/// and the admin server) on one port.
pub(super) fn check_across_channels(
    engine: Option<&EngineConfig>,
    channels: &[LoadedChannel],
    problems: &mut Vec<Problem>,
) {
    let mut names: HashMap<&str, &Path> = HashMap::new();
    let mut ports: HashMap<SocketAddr, String> = HashMap::new();
    if let Some(addr) = engine.and_then(|e| e.admin.listen.parse::<SocketAddr>().ok()) {
        if addr.port() != 0 {
            ports.insert(addr, "switchboard.toml admin.listen".into());
        }
    }
    for ch in channels {
        let file = ch.file.display().to_string();
        if let Some(other) = names.insert(&ch.config.name, &ch.file) {
            problems.push(Problem {
                file: file.clone(),
                key: "name".into(),
                message: format!(
                    "channel name '{}' is also used in {}",
                    ch.config.name,
                    other.display()
                ),
                hint: "channel names must be unique".into(),
            });
        }
        let Some(listen) = ch.config.source.listen() else {
            continue;
        };
        if let Ok(addr) = listen.parse::<SocketAddr>() {
            if addr.port() == 0 {
                continue;
            }
            let clash = ports
                .iter()
                .find(|(a, _)| {
                    a.port() == addr.port()
                        && (a.ip() == addr.ip()
                            || a.ip().is_unspecified()
                            || addr.ip().is_unspecified())
                })
                .map(|(_, who)| who.clone());
            match clash {
                Some(who) => problems.push(Problem {
                    file,
                    key: "source.listen".into(),
                    message: format!("port {} is also used by {who}", addr.port()),
                    hint: "give each channel its own port".into(),
                }),
                None => {
                    ports.insert(addr, format!("{file} source.listen"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::write;
    use crate::config::{load, LogColor};

    #[test]
    fn the_store_cache_is_a_key_with_a_default_and_a_floor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let channel =
            "name = \"a\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n";
        write(dir.path(), "channels/a.toml", channel);
        write(dir.path(), "switchboard.toml", "data_dir = \"d\"\n");
        let c = load(dir.path()).expect("valid");
        assert_eq!(c.engine.store_cache_mib, crate::store::DEFAULT_CACHE_MIB);
        write(dir.path(), "switchboard.toml", "store_cache_mib = 512\n");
        assert_eq!(load(dir.path()).expect("valid").engine.store_cache_mib, 512);
        write(dir.path(), "switchboard.toml", "store_cache_mib = 0\n");
        let problems = load(dir.path()).expect_err("refused");
        let p = problems
            .0
            .iter()
            .find(|p| p.key == "store_cache_mib")
            .expect("names the key");
        assert!(p.file.ends_with("switchboard.toml"), "{p:?}");
    }

    #[test]
    fn log_levels() {
        for ok in [
            "info",
            "WARN",
            "off",
            "info,engine=debug",
            "warn,channels::mllp=trace",
        ] {
            assert_eq!(log_level_problem(ok), None, "{ok}");
        }
        for bad in ["verbose", "", "info,loud", "engine=chatty"] {
            assert!(log_level_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn missing_secret_is_a_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "switchboard.toml",
            "[admin]\ntoken = { env = \"SWITCHBOARD_TEST_SURELY_UNSET_TOKEN\" }\n",
        );
        let problems = load(dir.path()).expect_err("secret missing").0;
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "admin.token");
        assert!(problems[0]
            .message
            .contains("SWITCHBOARD_TEST_SURELY_UNSET_TOKEN"));
    }

    #[test]
    fn log_color_and_level_are_checked_with_file_and_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(
            dir.path(),
            "switchboard.toml",
            "[log]\nlevel = \"verbose\"\ncolor = \"sometimes\"\n",
        );
        let problems = load(dir.path()).expect_err("invalid").0;
        let shown: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            shown.iter().any(|p| p
                .contains("switchboard.toml: log.color: unknown value 'sometimes'")
                && p.contains("auto, always, never")),
            "{shown:?}"
        );
        // A bad `color` stops the extraction; `level` is checked once the file deserializes.
        write(
            dir.path(),
            "switchboard.toml",
            "[log]\nlevel = \"verbose\"\n",
        );
        let problems = load(dir.path()).expect_err("invalid").0;
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].key, "log.level");
        assert!(problems[0].file.ends_with("switchboard.toml"));
        assert_eq!(problems[0].message, "'verbose' is not a log level");

        for good in [
            "debug",
            "off",
            "INFO",
            "info,engine=debug",
            "warn,channels::mllp=trace",
        ] {
            assert_eq!(log_level_problem(good), None, "{good}");
        }
        for bad in ["", "verbose", "info,engine", "engine=loud", "=debug"] {
            assert!(log_level_problem(bad).is_some(), "{bad:?} accepted");
        }
        write(dir.path(), "switchboard.toml", "[log]\ncolor = \"never\"\n");
        let c = load(dir.path()).expect("valid");
        assert_eq!(c.engine.log.color, LogColor::Never);
    }
}
