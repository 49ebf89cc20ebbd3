//! `[[destination]] type = "worklist"`: orders routed here become (or stop being) scheduled
//! procedure steps of a worklist that a `dicom_worklist` source serves.
//!
//! It takes the canonical event (payload `canonical`, the default): each order of an
//! `order_placed` or `order_updated` event is written as an item keyed by its accession
//! number; a cancelled, discontinued or completed order (ORC-1 `CA`/`DC`, ORC-5 `CM`)
//! removes its item. The write is committed before the delivery counts as done.

use super::worklist::{changes, Change, DicomState, ItemDefaults};
use crate::destination::{Delivery, DeliveryConfig, DeliveryError, Receipt};
use serde::Deserialize;
use std::sync::Arc;

/// The `[[destination]]` table of a worklist.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WorklistDestinationConfig {
    /// Destination name.
    pub name: String,
    /// The worklist written (the `worklist` of the `dicom_worklist` source that serves it).
    #[serde(default = "default_worklist")]
    pub worklist: String,
    /// Modality for orders that name none (no IPC-5, OBR-24 not a modality code).
    #[serde(default)]
    pub default_modality: String,
    /// Scheduled station AE title for orders that name none (no IPC-9).
    #[serde(default)]
    pub default_station_ae_title: String,
    /// Delivery scheduling.
    #[serde(default)]
    pub delivery: DeliveryConfig,
}

fn default_worklist() -> String {
    "default".into()
}

impl WorklistDestinationConfig {
    /// Problems a config loader cannot see: (key, message).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if self.worklist.trim().is_empty() {
            out.push(("worklist".into(), "must not be empty".into()));
        }
        if !self.default_station_ae_title.is_empty() {
            if let Some(m) = super::ae_title_problem(&self.default_station_ae_title) {
                out.push(("default_station_ae_title".into(), m));
            }
        }
        out
    }
}

/// The built destination.
pub struct WorklistWriter {
    cfg: WorklistDestinationConfig,
    state: Arc<dyn DicomState>,
}

impl std::fmt::Debug for WorklistWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorklistWriter")
            .field("worklist", &self.cfg.worklist)
            .finish_non_exhaustive()
    }
}

impl WorklistWriter {
    /// Builds the writer over the engine's state.
    pub fn new(cfg: WorklistDestinationConfig, state: Arc<dyn DicomState>) -> Self {
        WorklistWriter { cfg, state }
    }

    /// Applies one canonical event to the worklist and commits.
    ///
    /// # Errors
    ///
    /// Permanent for a body that is not a canonical event; retryable when the store fails.
    pub async fn deliver(&self, d: &Delivery) -> Result<Receipt, DeliveryError> {
        let event: transforms::model::Event = serde_json::from_slice(&d.body).map_err(|e| {
            DeliveryError::permanent(format!(
                "worklist {}: not a canonical event (route payload must be canonical): {}",
                self.cfg.worklist,
                transforms::serde_reason::of_json(&e)
            ))
        })?;
        let defaults = ItemDefaults {
            modality: self.cfg.default_modality.clone(),
            station_ae_title: self.cfg.default_station_ae_title.clone(),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        let (mut put, mut removed) = (0, 0);
        for change in changes(&event, &defaults, now) {
            match change {
                Change::Put(item) => {
                    self.state
                        .put_item(&self.cfg.worklist, &item)
                        .map_err(DeliveryError::retry)?;
                    put += 1;
                }
                Change::Remove(accession) => {
                    if self
                        .state
                        .remove_item(&self.cfg.worklist, &accession)
                        .map_err(DeliveryError::retry)?
                    {
                        removed += 1;
                    }
                }
            }
        }
        self.state.commit().await.map_err(DeliveryError::retry)?;
        Ok(Receipt {
            status: None,
            detail: format!(
                "worklist {}: {put} item(s) written, {removed} removed",
                self.cfg.worklist
            ),
            // The engine's own store answered.
            answer: None,
        })
    }

    /// The store is local: always ready.
    ///
    /// # Errors
    ///
    /// Never.
    pub async fn healthcheck(&self) -> Result<(), String> {
        self.state
            .items(&self.cfg.worklist)
            .map(|_| ())
            .map_err(|e| format!("worklist {}: {e}", self.cfg.worklist))
    }
}
