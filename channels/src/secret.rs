//! Secrets given by reference in configuration: `{ env = "NAME" }` or `{ file = "path" }`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// A secret given by reference, never inline: `{ env = "NAME" }` or `{ file = "path" }`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SecretRef {
    /// Name of an environment variable holding the secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// Path of a file holding the secret (trailing newline removed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl SecretRef {
    /// Reads the secret.
    ///
    /// # Errors
    ///
    /// A sentence for the operator naming the variable or file (never the value).
    pub fn resolve(&self) -> Result<String, String> {
        match (&self.env, &self.file) {
            (Some(name), None) => match std::env::var(name) {
                Ok(v) if !v.is_empty() => Ok(v),
                Ok(_) => Err(format!("environment variable {name} is empty")),
                Err(_) => Err(format!("environment variable {name} is not set")),
            },
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| format!("cannot read secret file {}: {e}", path.display())),
            _ => Err("give exactly one of `env` or `file`".into()),
        }
    }
}
