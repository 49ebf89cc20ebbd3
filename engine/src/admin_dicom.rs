//! The console's radiology endpoints: the worklist items `worklist` destinations wrote and
//! the studies `dicom_store` sources received (docs/DICOM.md). Read-only, any valid token.
//!
//! - `GET /api/dicom/worklist[?worklist=NAME]`: every scheduled procedure step, with the
//!   state its MPPS reached (`in_progress`, `completed`, `discontinued`) when a modality
//!   reported one for its accession number;
//! - `GET /api/dicom/studies[?channel=NAME][&limit=N]`: the studies received, newest first
//!   (last instance), each with its series and instance counts and whether it is still
//!   receiving (`receiving`, its quiet period not over) or was announced (`announced`).

use crate::admin::AdminState;
use axum::extract::{Query as QueryParams, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use channels::dicom::storage::{series_of, StudyRecord};
use serde::Deserialize;
use serde_json::json;

pub(crate) fn api() -> Router<AdminState> {
    Router::new()
        .route("/api/dicom/worklist", get(worklist))
        .route("/api/dicom/studies", get(studies))
}

fn error(status: StatusCode, code: &str, detail: &str) -> Response {
    (status, Json(json!({"error": code, "detail": detail}))).into_response()
}

fn store_error() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        "the store could not be read",
    )
}

fn iso(ms: u64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
        .filter(|_| ms > 0)
        .map(|t| t.to_rfc3339())
}

/// Query of `GET /api/dicom/worklist`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorklistParams {
    worklist: Option<String>,
}

async fn worklist(
    State(s): State<AdminState>,
    params: Result<QueryParams<WorklistParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "known parameters: worklist",
        );
    };
    let store = s.store.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let names: Vec<String> = match p.worklist {
            Some(w) => vec![w],
            None => store.worklist_counts().into_keys().collect(),
        };
        let performed = store.mpps_by_accession()?;
        let mut items = Vec::new();
        for name in &names {
            for i in store.worklist_items(name)? {
                let mpps = performed.get(&i.accession_number);
                items.push(json!({
                    "worklist": name,
                    "accession_number": i.accession_number,
                    "placer_number": i.placer_number,
                    "filler_number": i.filler_number,
                    "patient_id": i.patient_id,
                    "patient_name": i.patient_name,
                    "birth_date": i.birth_date,
                    "sex": i.sex,
                    "requested_procedure_id": i.requested_procedure_id,
                    "requested_procedure": i.requested_procedure_description,
                    "study_instance_uid": i.study_instance_uid,
                    "step_id": i.step_id,
                    "modality": i.modality,
                    "station_ae_title": i.station_ae_title,
                    "start_date": i.start_date,
                    "start_time": i.start_time,
                    "referring_physician": i.referring_physician,
                    "updated_at": iso(i.updated_at_ms),
                    "performed": mpps.map(|m| m.0.clone()),
                    "performed_by": mpps.map(|m| m.1.clone()),
                }));
            }
        }
        Ok::<_, crate::store::StoreError>(items)
    })
    .await;
    match listed {
        Ok(Ok(items)) => Json(json!({"count": items.len(), "items": items})).into_response(),
        _ => store_error(),
    }
}

/// Query of `GET /api/dicom/studies`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StudyParams {
    channel: Option<String>,
    limit: Option<usize>,
}

async fn studies(
    State(s): State<AdminState>,
    params: Result<QueryParams<StudyParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(QueryParams(p)) = params else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_query",
            "known parameters: channel, limit",
        );
    };
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let store = s.store.clone();
    let listed = tokio::task::spawn_blocking(move || {
        let mut all: Vec<(String, String, StudyRecord)> = store
            .study_records(p.channel.as_deref())?
            .into_iter()
            .filter_map(|(c, uid, bytes)| {
                serde_json::from_slice::<StudyRecord>(&bytes)
                    .ok()
                    .map(|r| (c, uid, r))
            })
            .collect();
        let total = all.len();
        all.sort_by_key(|x| std::cmp::Reverse(x.2.last_ms));
        all.truncate(limit);
        let mut items = Vec::new();
        for (channel, uid, r) in all {
            let series = series_of(&store.study_instances(&channel, &uid)?);
            let mut modalities: Vec<&str> = Vec::new();
            for s in &series {
                if !s.modality.is_empty() && !modalities.contains(&s.modality.as_str()) {
                    modalities.push(&s.modality);
                }
            }
            let d = &r.document;
            items.push(json!({
                "channel": channel,
                "study_instance_uid": uid,
                "patient_id": d.patient_id,
                "patient_name": d.patient_name,
                "accession_number": d.accession_number,
                "study_date": d.study_date,
                "description": d.description,
                "modalities": modalities,
                "series": series.iter().map(|s| json!({
                    "uid": s.uid,
                    "modality": s.modality,
                    "instances": s.instances,
                })).collect::<Vec<_>>(),
                "number_of_series": series.len(),
                "number_of_instances": series.iter().map(|s| u64::from(s.instances)).sum::<u64>(),
                "calling_ae_title": d.calling_ae_title,
                "first_at": iso(r.first_ms),
                "last_at": iso(r.last_ms),
                "status": if r.pending { "receiving" } else { "announced" },
                "announced_at": iso(r.announced_ms),
                "announced_instances": r.announced_instances,
            }));
        }
        Ok::<_, crate::store::StoreError>((total, items))
    })
    .await;
    match listed {
        Ok(Ok((total, items))) => {
            Json(json!({"count": items.len(), "total": total, "items": items})).into_response()
        }
        _ => store_error(),
    }
}
