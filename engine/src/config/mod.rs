//! Configuration: `switchboard.toml` plus one file per channel in `channels/`.
//!
//! figment merges, in order, the defaults of the schema, `switchboard.toml`, and environment
//! variables prefixed `SWITCHBOARD_` (`SWITCHBOARD_DATA_DIR`, `SWITCHBOARD_ADMIN__LISTEN`;
//! a double underscore goes one table down). Each channel file is read on its own so that a
//! problem names its file. [`load()`] reports every problem at once; nothing is half-loaded.
//!
//! Where to start reading:
//! - `schema.rs`: every key, as serde types whose doc comments are the user documentation,
//!   with their defaults ([`EngineConfig`], [`ChannelConfig`]);
//! - `load.rs`: reading the folder and the environment into the schema, every mistake of
//!   shape with its file and key path ([`inspect`], [`load()`]);
//! - `checks.rs`: what a value that deserialized means (addresses, names, secrets, routes,
//!   ports shared by two channels), each problem with its file, key and hint.
//!
//! This module holds what the others share: [`Problem`], and the configuration as loaded
//! ([`LoadedConfig`], [`LoadedChannel`]). The schema imports neither the loader nor the
//! checks. Not here: the `[cluster]` table ([`crate::cluster::config`]), the probes of
//! `switchboard check --connect` ([`crate::check`]) and the test cases kept beside the
//! channels ([`crate::config_test`]).

mod checks;
mod load;
mod schema;

pub(crate) use load::{channel_files, deserialize_every, parse_channel, structure_problem};
pub use load::{engine_figment, inspect, load, Inspection};
pub use schema::{
    AcceptConfig, AckTiming, AdminConfig, ChannelConfig, Durability, EncryptionConfig,
    EncryptionKey, EngineConfig, LogColor, LogConfig, LogFormat, SecretRef, SourceConfig,
};

use serde::Serialize;
use std::fmt;
use std::path::PathBuf;
use transforms::hl7v2::charset::Charset;

/// One configuration problem, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The file, relative to the config folder when possible.
    pub file: String,
    /// The key path, such as `source.listen`; empty for the whole file.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if !self.hint.is_empty() {
            write!(f, " (hint: {})", self.hint)?;
        }
        Ok(())
    }
}

/// All problems found while loading, printed one per line.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.0 {
            writeln!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A channel with its file and resolved settings.
#[derive(Debug, Clone)]
pub struct LoadedChannel {
    /// The channel as configured.
    pub config: ChannelConfig,
    /// The file it came from.
    pub file: PathBuf,
    /// `charset_fallback`, resolved.
    pub charset_fallback: Charset,
}

impl LoadedChannel {
    /// The notAfter of every certificate the channel's source and destinations load, by
    /// endpoint (`source`, or the destination's name); a TLS setting that does not load adds
    /// nothing.
    pub fn certificate_expiries(&self) -> Vec<(String, channels::tls::CertExpiry)> {
        let mut out = Vec::new();
        if let Some(Ok(tls)) = self.config.source.server_tls().map(|t| t.load()) {
            out.extend(tls.expiries.into_iter().map(|e| ("source".to_string(), e)));
        }
        for d in &self.config.destinations {
            if let Some(Ok(tls)) = d.client_tls().map(|t| t.load()) {
                out.extend(tls.expiries.into_iter().map(|e| (d.name().to_string(), e)));
            }
        }
        out
    }
}

/// The certificates of every channel, as [`crate::metrics::Metrics::record_tls_expiry`]
/// takes them: (channel, endpoint, expiry).
pub fn certificate_expiries(
    channels: &[LoadedChannel],
) -> impl Iterator<Item = (&str, String, channels::tls::CertExpiry)> {
    channels.iter().flat_map(|ch| {
        ch.certificate_expiries()
            .into_iter()
            .map(move |(endpoint, e)| (ch.config.name.as_str(), endpoint, e))
    })
}

/// Everything needed to start the engine, checked.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    /// The config folder.
    pub dir: PathBuf,
    /// Engine-wide settings.
    pub engine: EngineConfig,
    /// The admin token, resolved.
    pub admin_token: Option<String>,
    /// Every admin API token (`admin.token` as operator `admin`, then `admin.tokens`),
    /// resolved.
    pub admin_tokens: Vec<crate::auth::ApiToken>,
    /// Channels, in file-name order.
    pub channels: Vec<LoadedChannel>,
    /// Hex SHA-256 over every config file, so each stored message names the config that
    /// processed it.
    pub version: String,
    /// `encryption.keys`, resolved, newest first; empty when encryption is off.
    pub store_keys: Vec<crate::store::seal::StoreKey>,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;

    /// Writes `text` to `dir/name`, creating folders as needed.
    pub(crate) fn write(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
        std::fs::write(path, text).expect("write");
    }

    #[test]
    fn log_color_auto_follows_the_terminal_and_no_color() {
        assert!(LogColor::Auto.enabled(true, false));
        assert!(!LogColor::Auto.enabled(false, false));
        assert!(!LogColor::Auto.enabled(true, true));
        assert!(LogColor::Always.enabled(false, true));
        assert!(!LogColor::Never.enabled(true, false));
    }

    #[test]
    fn secret_from_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "token.txt", "s3cret\n");
        let r = SecretRef {
            env: None,
            file: Some(dir.path().join("token.txt")),
        };
        assert_eq!(r.resolve().as_deref(), Ok("s3cret"));
    }
}
