//! The file destination: each delivery becomes one file in a local folder, written under a
//! temporary name and renamed, so a reader never sees half a file.

use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use serde::Deserialize;
use std::path::PathBuf;

/// Configuration of a file destination (`type = "file"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Name, unique within the channel.
    pub name: String,
    /// Folder the files are written to (created when missing).
    pub folder: PathBuf,
    /// File name extension, without the dot (`hl7`, `json`).
    #[serde(default = "default_extension")]
    pub extension: String,
    /// Scheduling and retries.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_extension() -> String {
    "hl7".into()
}

impl FileConfig {
    /// Problems the loader cannot see.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.extension.is_empty() || !self.extension.chars().all(|c| c.is_ascii_alphanumeric()) {
            out.push((
                "extension".into(),
                format!("'{}' is not a plain extension", self.extension),
            ));
        }
        out
    }
}

/// The file writer.
#[derive(Debug)]
pub struct FileWriter {
    config: FileConfig,
}

impl FileWriter {
    /// Creates the folder when missing.
    ///
    /// # Errors
    ///
    /// A sentence when the folder cannot be created.
    pub fn new(config: FileConfig) -> Result<Self, String> {
        std::fs::create_dir_all(&config.folder)
            .map_err(|e| format!("cannot create {}: {e}", config.folder.display()))?;
        Ok(FileWriter { config })
    }

    /// Writes, syncs and removes a probe file in the folder.
    ///
    /// # Errors
    ///
    /// The folder and why it cannot be written.
    pub async fn healthcheck(&self) -> Result<(), String> {
        let folder = self.config.folder.clone();
        tokio::task::spawn_blocking(move || {
            let probe = folder.join(format!(".switchboard-health-{}", std::process::id()));
            let wrote = std::fs::write(&probe, b"ok").and_then(|()| std::fs::remove_file(&probe));
            wrote.map_err(|e| format!("{} is not writable: {e}", folder.display()))
        })
        .await
        .map_err(|_| "file health check task failed".to_string())?
    }

    /// Writes one delivery as `<idempotency key>.<extension>`; a retry overwrites the same file.
    ///
    /// # Errors
    ///
    /// Retryable [`DeliveryError`] when the folder cannot be written.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let safe: String = d
            .idempotency_key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let name = format!("{safe}.{}", self.config.extension);
        let tmp = self.config.folder.join(format!(".{name}.tmp"));
        let dst = self.config.folder.join(&name);
        let body = d.body.clone();
        let folder = self.config.folder.display().to_string();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &dst)
        })
        .await
        .map_err(|_| DeliveryError::retry("file writer task failed"))?
        .map_err(|e| DeliveryError::retry(format!("cannot write into {folder}: {e}")))?;
        Ok(Receipt {
            status: None,
            detail: name,
        })
    }
}
