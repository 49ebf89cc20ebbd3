//! Imaging studies: what a DICOM storage source received, as the `study_available` event
//! carries it (FHIR ImagingStudy-shaped).

use serde::{Deserialize, Serialize};

use super::Timestamp;

/// One imaging study that became available (all its instances received, none new for the
/// source's quiet period).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagingStudy {
    /// Study Instance UID (0020,000D).
    pub study_instance_uid: String,
    /// Accession number (0008,0050): the order's, as the worklist gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accession_number: Option<String>,
    /// Study description (0008,1030).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// When the study started: Study Date (0008,0020) and Study Time (0008,0030), as sent
    /// (local time, no offset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<Timestamp>,
    /// The modalities of its series (0008,0060), each once, in the order first seen.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modalities: Vec<String>,
    /// Its series, by Series Instance UID.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<ImagingSeries>,
    /// Number of series (NumberOfStudyRelatedSeries).
    pub number_of_series: u32,
    /// Number of instances in all series (NumberOfStudyRelatedInstances).
    pub number_of_instances: u32,
    /// The AE title that sent the instances (the modality).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sender_ae_title: Option<String>,
    /// The AE title that received them (the storage source's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receiver_ae_title: Option<String>,
}

/// One series of an [`ImagingStudy`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImagingSeries {
    /// Series Instance UID (0020,000E).
    pub uid: String,
    /// Its modality (0008,0060).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modality: Option<String>,
    /// Instances received (NumberOfSeriesRelatedInstances).
    pub number_of_instances: u32,
}
