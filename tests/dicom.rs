//! DICOM end to end (docs/DICOM.md): the real engine with a `dicom_worklist` and a
//! `dicom_store` source on 127.0.0.1, spoken to by dcmtk's `echoscu`, `findscu` and
//! `storescu`, by dicom-ul's client (MPPS, malformed requests), with dcmtk's `storescp` as
//! the PACS; malformed requests, a restart in the middle of a study, and DICOM TLS (dcmtk's
//! `+tls` on both sides).

use crate::support::*;
use channels::dicom::dimse::{self, command, Received};
use dicom_core::value::DataSetSequence;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

/// dcmtk is installed by .ci/run; without it these tests cannot say anything.
fn dcmtk(tool: &str) -> Command {
    assert!(
        Path::new(&format!("/usr/bin/{tool}")).exists(),
        "dcmtk's {tool} is missing (apt-get install dcmtk)"
    );
    Command::new(tool)
}

/// An ORM^O01 for a CT on 2026-03-01 09:30 with `control` (ORC-1) and `status` (ORC-5).
pub(crate) fn orm(control_id: &str, orc1: &str, orc5: &str) -> String {
    format!(
        "MSH|^~\\&|HIS|MAIN|SB|HUB|20260220120000||ORM^O01^ORM_O01|{control_id}|P|2.5.1\r\
         PID|1||MRN-RAD1^^^MAIN^MR||Rayfield^Dana||19750412|F\r\
         PV1|1|O\r\
         ORC|{orc1}|PL-7001|ACC-7001||{orc5}||^^^202603010930\r\
         OBR|1|PL-7001|ACC-7001|CTCHEST^CT chest without contrast||||||||||||||||||||CT\r"
    )
}

/// The engine with channel `his` (MLLP: orders into worklist `rad`) and channel `mwl`
/// (the worklist provider, AE `SBMWL`, for calling AE `CT01` only), plus `extra` channels.
fn radiology_config(mwl_extra: &str) -> TestConfig {
    let cfg = TestConfig::new("durability = \"os\"", "");
    let conf = cfg.conf();
    std::fs::remove_file(conf.join("channels/lab.toml")).expect("rm lab");
    std::fs::write(
        conf.join("channels/his.toml"),
        "name = \"his\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
         [[route]]\nwhen = { message_type = [\"ORM^*\", \"OMI^*\"] }\nto = [\"worklist\"]\n\
         [[destination]]\nname = \"worklist\"\ntype = \"worklist\"\nworklist = \"rad\"\n\
         [destination.delivery]\nbackoff_base_ms = 100\nbackoff_max_ms = 500\n",
    )
    .expect("write his");
    std::fs::write(
        conf.join("channels/mwl.toml"),
        format!(
            "name = \"mwl\"\n{mwl_extra}\n[source]\ntype = \"dicom_worklist\"\nlisten = \"127.0.0.1:0\"\n\
             ae_title = \"SBMWL\"\nallowed_calling_ae_titles = [\"CT01\"]\nworklist = \"rad\"\nidle_timeout_secs = 10\n"
        ),
    )
    .expect("write mwl");
    cfg
}

/// `findscu -W` as CT01 with `keys`; the matches it extracted, parsed.
fn find(addr: &str, keys: &[&str], out: &Path) -> Vec<InMemDicomObject> {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    for e in std::fs::read_dir(out).expect("out dir").flatten() {
        let _ = std::fs::remove_file(e.path());
    }
    let mut cmd = dcmtk("findscu");
    cmd.args([
        "-W", "-aet", "CT01", "-aec", "SBMWL", "-to", "5", "-ts", "10", "-X", "-od",
    ])
    .arg(out);
    for k in keys {
        cmd.args(["-k", k]);
    }
    cmd.args([host, port]);
    let output = output_within(&mut cmd, 20).expect("findscu ends");
    assert!(
        output.status.success(),
        "findscu failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files: Vec<_> = std::fs::read_dir(out)
        .expect("out dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "dcm"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            dicom_object::open_file(&p)
                .expect("a DICOM file")
                .into_inner()
        })
        .collect()
}

const KEYS: &[&str] = &[
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "AccessionNumber",
    "StudyInstanceUID",
    "RequestedProcedureDescription",
    "(0040,0100)[0].Modality=CT",
    "(0040,0100)[0].ScheduledProcedureStepStartDate=20260228-20260302",
    "(0040,0100)[0].ScheduledStationAETitle",
];

async fn until_found(addr: &str, keys: &[&str], out: &Path, want: usize) -> Vec<InMemDicomObject> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let found = find(addr, keys, out);
        if found.len() == want || std::time::Instant::now() > deadline {
            return found;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn orders_become_worklist_items_and_a_cancel_removes_them() {
    let cfg = radiology_config("");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let mwl = engine.mllp("mwl");
    let out = tempfile::tempdir().expect("tempdir");

    // C-ECHO.
    let (host, port) = mwl.rsplit_once(':').expect("host:port");
    let echo = output_within(
        dcmtk("echoscu").args(["-aet", "CT01", "-aec", "SBMWL", "-to", "5", host, port]),
        20,
    )
    .expect("echoscu ends");
    assert!(
        echo.status.success(),
        "{}",
        String::from_utf8_lossy(&echo.stderr)
    );

    // An unknown calling AE title is refused in the A-ASSOCIATE.
    let refused = output_within(
        dcmtk("echoscu").args(["-aet", "INTRUDER", "-aec", "SBMWL", "-to", "5", host, port]),
        20,
    )
    .expect("echoscu ends");
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr).to_string();
    assert!(
        said.contains("Rejected") || said.contains("rejected"),
        "{said}"
    );

    // Nothing scheduled yet.
    assert!(find(&mwl, KEYS, out.path()).is_empty());

    let mut client = connect(&engine.mllp("his")).await;
    let ack = send(&mut client, orm("RAD-1", "NW", "").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");

    let found = until_found(&mwl, KEYS, out.path(), 1).await;
    assert_eq!(found.len(), 1, "one scheduled step");
    let item = &found[0];
    assert_eq!(dimse::text(item, tags::PATIENT_NAME), "Rayfield^Dana");
    assert_eq!(dimse::text(item, tags::PATIENT_ID), "MRN-RAD1");
    assert_eq!(dimse::text(item, tags::PATIENT_BIRTH_DATE), "19750412");
    assert_eq!(dimse::text(item, tags::ACCESSION_NUMBER), "ACC-7001");
    assert_eq!(
        dimse::text(item, tags::REQUESTED_PROCEDURE_DESCRIPTION),
        "CT chest without contrast"
    );
    let study = dimse::text(item, tags::STUDY_INSTANCE_UID);
    assert!(study.starts_with("2.25."), "{study}");
    let step = &item
        .element(tags::SCHEDULED_PROCEDURE_STEP_SEQUENCE)
        .expect("step sequence")
        .items()
        .expect("items")[0];
    assert_eq!(dimse::text(step, tags::MODALITY), "CT");
    assert_eq!(
        dimse::text(step, tags::SCHEDULED_PROCEDURE_STEP_START_DATE),
        "20260301"
    );
    // Only what was asked: no start time, no admission id.
    assert!(step
        .element_opt(tags::SCHEDULED_PROCEDURE_STEP_START_TIME)
        .expect("ok")
        .is_none());

    // The console lists it.
    let wl = get_json(&format!("{}/api/dicom/worklist", engine.admin())).await;
    assert_eq!(wl["count"], 1, "{wl}");
    let listed = &wl["items"][0];
    assert_eq!(listed["worklist"], "rad");
    assert_eq!(listed["accession_number"], "ACC-7001");
    assert_eq!(listed["patient_name"], "Rayfield^Dana");
    assert_eq!(listed["modality"], "CT");
    assert_eq!(listed["start_date"], "20260301");
    assert!(listed["performed"].is_null(), "{listed}");

    // Keys that do not match: another modality, another day, another patient.
    for other in [
        "(0040,0100)[0].Modality=MR",
        "(0040,0100)[0].ScheduledProcedureStepStartDate=20260302",
        "PatientName=Smith*",
    ] {
        let keys = ["AccessionNumber", other];
        assert!(find(&mwl, &keys, out.path()).is_empty(), "{other} matched");
    }
    // Wildcards and patient id.
    let keys = ["AccessionNumber", "PatientName=ray*", "PatientID=MRN-RAD1"];
    assert_eq!(find(&mwl, &keys, out.path()).len(), 1);

    // The same order again (a resend with a new control id) keeps one item, the same study.
    let ack = send(&mut client, orm("RAD-2", "XO", "").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let again = until_found(&mwl, KEYS, out.path(), 1).await;
    assert_eq!(again.len(), 1);
    assert_eq!(dimse::text(&again[0], tags::STUDY_INSTANCE_UID), study);

    // The cancel removes it.
    let ack = send(&mut client, orm("RAD-3", "CA", "").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    let gone = until_found(&mwl, KEYS, out.path(), 0).await;
    assert!(gone.is_empty(), "the cancelled order left the worklist");

    let metrics = metrics_text(&engine).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_dicom_associations_total{channel=\"mwl\",outcome=\"rejected\"}"
        ),
        1.0,
        "{metrics}"
    );
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_dicom_worklist_items{worklist=\"rad\"}"
        ),
        0.0
    );
}

/// Sends one N-CREATE or N-SET over `assoc` and returns the response status.
async fn mpps_request(
    assoc: &mut dicom_ul::association::client::AsyncClientAssociation<tokio::net::TcpStream>,
    field: u16,
    uid: &str,
    id: u16,
    data: &InMemDicomObject,
) -> u16 {
    let bytes = dimse::write_dataset(data, EXPLICIT_LE).expect("encode");
    request(
        assoc,
        field,
        channels::dicom::mpps::MPPS,
        uid,
        id,
        Some(&bytes),
    )
    .await
    .0
}

/// Sends one request (command `field` for `sop_class` and instance `uid`, with `data` as
/// its data set bytes, sent as they are) on the association's first presentation context;
/// the response's status and ErrorComment.
async fn request(
    assoc: &mut dicom_ul::association::client::AsyncClientAssociation<tokio::net::TcpStream>,
    field: u16,
    sop_class: &str,
    uid: &str,
    id: u16,
    data: Option<&[u8]>,
) -> (u16, String) {
    let pc = assoc.presentation_contexts()[0].id;
    let mut cmd = InMemDicomObject::new_empty();
    let us = |v: u16| dicom_core::PrimitiveValue::from(v);
    cmd.put(DataElement::new(tags::COMMAND_FIELD, VR::US, us(field)));
    cmd.put(DataElement::new(tags::MESSAGE_ID, VR::US, us(id)));
    cmd.put(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        us(if data.is_some() { 0 } else { 0x0101 }),
    ));
    if field == command::N_SET_RQ {
        cmd.put_str(tags::REQUESTED_SOP_CLASS_UID, VR::UI, sop_class);
        cmd.put_str(tags::REQUESTED_SOP_INSTANCE_UID, VR::UI, uid);
    } else {
        cmd.put_str(tags::AFFECTED_SOP_CLASS_UID, VR::UI, sop_class);
        if !uid.is_empty() {
            cmd.put_str(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, uid);
        }
    }
    if field == command::C_FIND_RQ || field == command::C_STORE_RQ {
        cmd.put(DataElement::new(tags::PRIORITY, VR::US, us(0)));
    }
    dimse::send(assoc, pc, &cmd, data).await.expect("send");
    match dimse::receive(assoc, Duration::from_secs(20), 1 << 20)
        .await
        .expect("response")
    {
        Received::Message(m) => (
            dimse::us(&m.command, tags::STATUS).expect("status"),
            dimse::text(&m.command, tags::ERROR_COMMENT),
        ),
        other => panic!("no response: {other:?}"),
    }
}

#[tokio::test]
async fn mpps_completed_reaches_the_his_as_an_orm_status() {
    let (peer, seen) = crate::delivery::mllp_peer(|_, text| {
        let control = text
            .split('\r')
            .next()
            .and_then(|msh| msh.split('|').nth(9))
            .unwrap_or_default()
            .to_string();
        (
            0,
            Some(format!(
                "MSH|^~\\&|HIS|MAIN|SB|HUB|20260301||ACK|A{control}|P|2.5.1\rMSA|AA|{control}\r"
            )),
        )
    })
    .await;
    let cfg = radiology_config(&format!(
        "[[route]]\nto = [\"his\"]\n[[destination]]\nname = \"his\"\ntype = \"mllp\"\naddress = \"{peer}\"\n"
    ));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    // The order first, so that the status names its order numbers.
    let mut client = connect(&engine.mllp("his")).await;
    let ack = send(&mut client, orm("RAD-10", "NW", "").as_bytes()).await;
    assert_eq!(segment(&ack, "MSA")[1], "AA", "{ack}");
    let out = tempfile::tempdir().expect("tempdir");
    assert_eq!(
        until_found(&engine.mllp("mwl"), KEYS, out.path(), 1)
            .await
            .len(),
        1
    );

    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("CT01")
        .called_ae_title("SBMWL")
        .with_presentation_context(channels::dicom::mpps::MPPS, vec![EXPLICIT_LE])
        .read_timeout(Duration::from_secs(20))
        .establish_with_async(&engine.mllp("mwl"))
        .await
        .expect("association");
    let uid = "1.2.826.0.1.3680043.9.7777.1";
    let mut create = InMemDicomObject::new_empty();
    create.put_str(tags::PATIENT_NAME, VR::PN, "Rayfield^Dana");
    create.put_str(tags::PATIENT_ID, VR::LO, "MRN-RAD1");
    create.put_str(tags::PATIENT_BIRTH_DATE, VR::DA, "19750412");
    create.put_str(tags::PATIENT_SEX, VR::CS, "F");
    create.put_str(tags::MODALITY, VR::CS, "CT");
    create.put_str(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, "IN PROGRESS");
    create.put_str(
        tags::PERFORMED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        "20260301",
    );
    create.put_str(tags::PERFORMED_PROCEDURE_STEP_START_TIME, VR::TM, "093500");
    create.put_str(tags::PERFORMED_PROCEDURE_STEP_ID, VR::SH, "PPS1");
    let mut step = InMemDicomObject::new_empty();
    step.put_str(tags::ACCESSION_NUMBER, VR::SH, "ACC-7001");
    step.put_str(
        tags::STUDY_INSTANCE_UID,
        VR::UI,
        "1.2.826.0.1.3680043.9.7777.2",
    );
    step.put_str(tags::REQUESTED_PROCEDURE_ID, VR::SH, "ACC-7001");
    step.put_str(tags::SCHEDULED_PROCEDURE_STEP_ID, VR::SH, "ACC-7001");
    create.put(DataElement::new(
        tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![step]),
    ));
    let st = mpps_request(&mut assoc, command::N_CREATE_RQ, uid, 1, &create).await;
    assert_eq!(st, 0, "N-CREATE succeeds");
    // A second N-CREATE of the same instance: duplicate.
    let st = mpps_request(&mut assoc, command::N_CREATE_RQ, uid, 2, &create).await;
    assert_eq!(st, 0x0111);
    let mut done = InMemDicomObject::new_empty();
    done.put_str(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, "COMPLETED");
    done.put_str(tags::PERFORMED_PROCEDURE_STEP_END_DATE, VR::DA, "20260301");
    done.put_str(tags::PERFORMED_PROCEDURE_STEP_END_TIME, VR::TM, "095000");
    let st = mpps_request(&mut assoc, command::N_SET_RQ, uid, 3, &done).await;
    assert_eq!(st, 0, "N-SET succeeds");
    // An N-SET of an instance never created.
    let st = mpps_request(&mut assoc, command::N_SET_RQ, "1.2.3.4.5", 4, &done).await;
    assert_eq!(st, 0x0112);
    let _ = assoc.release().await;

    let arrived = eventually(20, || {
        seen.lock()
            .expect("lock")
            .iter()
            .any(|m| m.contains("ORC|SC|") && m.contains("||CM|"))
    })
    .await;
    let messages = seen.lock().expect("lock").clone();
    assert!(arrived, "no completed status at the HIS: {messages:?}");
    let completed = messages
        .iter()
        .find(|m| m.contains("||CM|"))
        .expect("completed");
    let orc = segment(completed, "ORC");
    assert_eq!(
        (orc[1].as_str(), orc[5].as_str()),
        ("SC", "CM"),
        "{completed}"
    );
    assert_eq!(orc[2], "PL-7001", "placer number of the worklist item");
    assert_eq!(orc[3], "ACC-7001", "the accession number");
    assert_eq!(segment(completed, "OBR")[18], "ACC-7001");
    assert_eq!(segment(completed, "PID")[3], "MRN-RAD1");
    // The in-progress status went too, first.
    assert!(messages[0].contains("||IP|"), "{messages:?}");
    // The console shows the step as performed.
    let wl = get_json(&format!(
        "{}/api/dicom/worklist?worklist=rad",
        engine.admin()
    ))
    .await;
    assert_eq!(wl["items"][0]["performed"], "completed", "{wl}");
    assert_eq!(wl["items"][0]["performed_by"], "CT01", "{wl}");
}

/// A small synthetic CT object (2x2 pixels, explicit VR little endian) written to `dir`.
pub(crate) fn synthetic_ct(dir: &Path, study: &str, series: &str, n: u32) -> std::path::PathBuf {
    synthetic_ct_with(dir, study, series, n, |_| {})
}

/// [`synthetic_ct`] changed by `edit` before it is written.
fn synthetic_ct_with(
    dir: &Path,
    study: &str,
    series: &str,
    n: u32,
    edit: impl FnOnce(&mut InMemDicomObject),
) -> std::path::PathBuf {
    let sop = format!("{series}.{n}");
    let mut obj = InMemDicomObject::new_empty();
    obj.put_str(tags::SOP_CLASS_UID, VR::UI, "1.2.840.10008.5.1.4.1.1.2");
    obj.put_str(tags::SOP_INSTANCE_UID, VR::UI, sop.clone());
    obj.put_str(tags::STUDY_INSTANCE_UID, VR::UI, study);
    obj.put_str(tags::SERIES_INSTANCE_UID, VR::UI, series);
    obj.put_str(tags::PATIENT_NAME, VR::PN, "Rayfield^Dana");
    obj.put_str(tags::PATIENT_ID, VR::LO, "MRN-RAD1");
    obj.put_str(tags::ACCESSION_NUMBER, VR::SH, "ACC-7001");
    obj.put_str(tags::MODALITY, VR::CS, "CT");
    obj.put_str(tags::STUDY_DATE, VR::DA, "20260301");
    obj.put_str(tags::INSTANCE_NUMBER, VR::IS, n.to_string());
    for (tag, v) in [
        (tags::SAMPLES_PER_PIXEL, 1u16),
        (tags::ROWS, 2),
        (tags::COLUMNS, 2),
        (tags::BITS_ALLOCATED, 8),
        (tags::BITS_STORED, 8),
        (tags::HIGH_BIT, 7),
        (tags::PIXEL_REPRESENTATION, 0),
    ] {
        obj.put(DataElement::new(
            tag,
            VR::US,
            dicom_core::PrimitiveValue::from(v),
        ));
    }
    obj.put_str(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, "MONOCHROME2");
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        dicom_core::PrimitiveValue::from(vec![0u8, 64, 128, 255]),
    ));
    edit(&mut obj);
    let meta = dicom_object::FileMetaTableBuilder::new()
        .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.2")
        .media_storage_sop_instance_uid(sop.as_str())
        .transfer_syntax(EXPLICIT_LE)
        .build()
        .expect("meta");
    let path = dir.join(format!("{sop}.dcm"));
    obj.with_exact_meta(meta)
        .write_to_file(&path)
        .expect("write");
    path
}

/// dcmtk's storescp as the PACS, on a free port, writing into `dir`; killed on drop.
struct Pacs(std::process::Child, u16);

impl Drop for Pacs {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn pacs(dir: &Path) -> Pacs {
    spawn_pacs(dcmtk("storescp"), dir)
}

/// Starts `storescp` (plain or TLS) writing into `dir`, once it listens.
fn spawn_pacs(mut storescp: Command, dir: &Path) -> Pacs {
    let port = free_port();
    let child = storescp
        .args(["-aet", "PACS", "-od"])
        .arg(dir)
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("storescp starts");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "storescp did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Pacs(child, port)
}

#[tokio::test]
async fn a_stored_study_is_written_forwarded_and_announced_once() {
    let (peer, seen) = crate::delivery::mllp_peer(|_, text| {
        let control = text
            .split('\r')
            .next()
            .and_then(|msh| msh.split('|').nth(9))
            .unwrap_or_default()
            .to_string();
        (
            0,
            Some(format!(
                "MSH|^~\\&|HIS|MAIN|SB|HUB|20260301||ACK|A{control}|P|2.5.1\rMSA|AA|{control}\r"
            )),
        )
    })
    .await;
    let root = tempfile::tempdir().expect("tempdir");
    let (folder, received, made) = (
        root.path().join("store"),
        root.path().join("pacs"),
        root.path().join("made"),
    );
    for d in [&received, &made] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let pacs = pacs(&received);
    let cfg = TestConfig::new("durability = \"os\"", "");
    std::fs::remove_file(cfg.conf().join("channels/lab.toml")).expect("rm lab");
    std::fs::write(
        cfg.conf().join("channels/images.toml"),
        format!(
            "name = \"images\"\n[source]\ntype = \"dicom_store\"\nlisten = \"127.0.0.1:0\"\n\
             ae_title = \"SBSTORE\"\nallowed_calling_ae_titles = [\"MODALITY\"]\n\
             folder = \"{}\"\nquiet_period_secs = 2\n\
             [[route]]\nwhen = {{ message_type = [\"C-STORE\"] }}\nto = [\"pacs\"]\n\
             [[route]]\nwhen = {{ message_type = [\"study_available\"] }}\nto = [\"his\"]\n\
             [[destination]]\nname = \"pacs\"\ntype = \"dicom\"\naddress = \"127.0.0.1:{}\"\nae_title = \"PACS\"\n\
             [destination.delivery]\nbackoff_base_ms = 200\nbackoff_max_ms = 1000\n\
             [[destination]]\nname = \"his\"\ntype = \"mllp\"\naddress = \"{peer}\"\n",
            folder.display(),
            pacs.1
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let addr = engine.mllp("images");
    let (host, port) = addr.rsplit_once(':').expect("host:port");

    let study = "1.2.826.0.1.3680043.9.7777.100";
    let series = [
        "1.2.826.0.1.3680043.9.7777.100.1",
        "1.2.826.0.1.3680043.9.7777.100.2",
    ];
    let files = [
        synthetic_ct(&made, study, series[0], 1),
        synthetic_ct(&made, study, series[0], 2),
        synthetic_ct(&made, study, series[1], 1),
    ];
    // An unknown calling AE title is refused.
    let refused = output_within(
        dcmtk("storescu")
            .args([
                "-aet", "INTRUDER", "-aec", "SBSTORE", "-to", "5", host, port,
            ])
            .arg(&files[0]),
        20,
    )
    .expect("storescu ends");
    assert!(!refused.status.success(), "an unknown AE title stored");

    store_files(&addr, &files);
    // Written, each as StudyUID/SeriesUID/SOPUID.dcm, and readable.
    for (s, n) in [(0, 1), (0, 2), (1, 1)] {
        let path = folder
            .join(study)
            .join(series[s])
            .join(format!("{}.{n}.dcm", series[s]));
        let obj = dicom_object::open_file(&path).expect("a stored DICOM file");
        assert_eq!(dimse::text(&obj, tags::PATIENT_ID), "MRN-RAD1");
    }
    // Forwarded to the PACS.
    let forwarded = eventually(20, || {
        std::fs::read_dir(&received)
            .map(|d| d.flatten().count() >= 3)
            .unwrap_or(false)
    })
    .await;
    assert!(forwarded, "the PACS did not get the three objects");
    // One study-available message with the counts, after the quiet period.
    let announced = eventually(20, || !seen.lock().expect("lock").is_empty()).await;
    assert!(announced, "no study-available message");
    tokio::time::sleep(Duration::from_secs(4)).await;
    let messages = seen.lock().expect("lock").clone();
    assert_eq!(
        messages.len(),
        1,
        "one announcement per study: {messages:?}"
    );
    let m = &messages[0];
    assert!(m.contains("ORU^R01"), "{m}");
    assert!(m.contains(&format!("|{study}|")), "{m}");
    assert!(
        m.contains("NumberOfStudyRelatedSeries^Study series^DCM||2|"),
        "{m}"
    );
    assert!(
        m.contains("NumberOfStudyRelatedInstances^Study instances^DCM||3|"),
        "{m}"
    );
    assert!(m.contains(&format!("|{}|2|", series[0])), "{m}");
    assert_eq!(segment(m, "OBR")[18], "ACC-7001");
    // The console lists the study, announced, with its series.
    let studies = get_json(&format!("{}/api/dicom/studies", engine.admin())).await;
    assert_eq!(studies["count"], 1, "{studies}");
    let listed = &studies["items"][0];
    assert_eq!(listed["channel"], "images");
    assert_eq!(listed["study_instance_uid"], study);
    assert_eq!(listed["accession_number"], "ACC-7001");
    assert_eq!(listed["status"], "announced");
    assert_eq!(listed["number_of_series"], 2);
    assert_eq!(listed["number_of_instances"], 3);
    assert_eq!(listed["announced_instances"], 3);
    assert_eq!(listed["series"][0]["uid"], series[0]);
    assert_eq!(listed["series"][0]["instances"], 2);
    assert_eq!(listed["modalities"][0], "CT");
    let metrics = metrics_text(&engine).await;
    assert_eq!(
        metric_value(
            &metrics,
            "switchboard_dicom_stored_instances_total{channel=\"images\"}"
        ),
        3.0
    );
    drop(pacs);
}

#[test]
fn check_connect_echoes_dicom_destinations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pacs = pacs(dir.path());
    // A port nothing listens on: bound, then released.
    let closed = free_port();
    let cfg = TestConfig::new("", "");
    std::fs::write(
        cfg.conf().join("channels/images.toml"),
        format!(
            "name = \"images\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nto = [\"pacs\", \"gone\"]\n\
             [[destination]]\nname = \"pacs\"\ntype = \"dicom\"\naddress = \"127.0.0.1:{}\"\n\
             ae_title = \"PACS\"\ntimeout_secs = 5\n\
             [[destination]]\nname = \"gone\"\ntype = \"dicom\"\naddress = \"127.0.0.1:{closed}\"\n\
             ae_title = \"PACS\"\ntimeout_secs = 5\n",
            pacs.1
        ),
    )
    .expect("write");
    let out = Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "one destination is down:\n{stdout}"
    );
    let line = |target: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(target))
            .unwrap_or_else(|| panic!("no line for {target} in:\n{stdout}"))
            .to_string()
    };
    let up = line("images/pacs: ");
    assert!(
        up.contains("up: ") && up.contains("C-ECHO answered with success"),
        "{up}"
    );
    assert!(line("images/gone: ").contains("DOWN"), "{stdout}");
}

/// The rejected messages of `channel` in the store: (message type, control id, reasons).
async fn rejected(engine: &EngineProcess, channel: &str) -> Vec<(String, String, String)> {
    let admin = engine.admin();
    let list = get_json(&format!(
        "{admin}/api/messages?channel={channel}&status=rejected&limit=100"
    ))
    .await;
    let mut out = Vec::new();
    for item in list["items"].as_array().expect("items") {
        let id = item["id"].as_str().expect("id");
        let m = get_json(&format!("{admin}/api/messages/{id}")).await;
        assert_eq!(m["format"], "dicom", "{m}");
        out.push((
            m["message_type"].as_str().unwrap_or_default().to_string(),
            m["control_id"].as_str().unwrap_or_default().to_string(),
            m["errors"]
                .as_array()
                .map(|e| {
                    e.iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .unwrap_or_default(),
        ));
    }
    out
}

/// An MPPS N-CREATE data set for `accession`, IN PROGRESS.
fn mpps_create(accession: &str) -> InMemDicomObject {
    let mut create = InMemDicomObject::new_empty();
    create.put_str(tags::PATIENT_NAME, VR::PN, "Rayfield^Dana");
    create.put_str(tags::PATIENT_ID, VR::LO, "MRN-RAD1");
    create.put_str(tags::MODALITY, VR::CS, "CT");
    create.put_str(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, "IN PROGRESS");
    create.put_str(
        tags::PERFORMED_PROCEDURE_STEP_START_DATE,
        VR::DA,
        "20260301",
    );
    create.put_str(tags::PERFORMED_PROCEDURE_STEP_START_TIME, VR::TM, "093500");
    let mut step = InMemDicomObject::new_empty();
    step.put_str(tags::ACCESSION_NUMBER, VR::SH, accession);
    create.put(DataElement::new(
        tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![step]),
    ));
    create
}

/// 30 bytes that declare a 4 GiB pixel data value (explicit VR little endian).
fn four_gib_claim() -> Vec<u8> {
    let mut b = vec![
        0x10u8, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'a', b'b', b'c', b'd',
    ];
    b.extend_from_slice(&[
        0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
    ]);
    b.extend_from_slice(&[1, 2, 3]);
    b
}

#[tokio::test]
async fn malformed_requests_get_their_failure_status_and_are_stored_with_their_reason() {
    let root = tempfile::tempdir().expect("tempdir");
    let (folder, made) = (root.path().join("store"), root.path().join("made"));
    std::fs::create_dir_all(&made).expect("mkdir");
    let cfg = radiology_config("");
    std::fs::write(
        cfg.conf().join("channels/images.toml"),
        format!(
            "name = \"images\"\n[source]\ntype = \"dicom_store\"\nlisten = \"127.0.0.1:0\"\n\
             ae_title = \"SBSTORE\"\nallowed_calling_ae_titles = [\"MODALITY\"]\n\
             folder = \"{}\"\nquiet_period_secs = 60\n",
            folder.display()
        ),
    )
    .expect("write channel");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let (mwl, images) = (engine.mllp("mwl"), engine.mllp("images"));
    let out = tempfile::tempdir().expect("tempdir");

    // C-FIND: a date key that is not a date, with dcmtk's findscu: A900, no match.
    let (host, port) = mwl.rsplit_once(':').expect("host:port");
    let bad_date = output_within(
        dcmtk("findscu")
            .args([
                "-v", "-W", "-aet", "CT01", "-aec", "SBMWL", "-to", "5", "-X", "-od",
            ])
            .arg(out.path())
            .args([
                "-k",
                "AccessionNumber",
                "-k",
                "(0040,0100)[0].ScheduledProcedureStepStartDate=2026-03-01",
                host,
                port,
            ]),
        20,
    )
    .expect("findscu ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&bad_date.stdout),
        String::from_utf8_lossy(&bad_date.stderr)
    );
    assert!(
        said.contains("Final Find Response (Error: DataSetDoesNotMatchSOPClass)"),
        "findscu did not report A900: {said}"
    );

    // C-FIND whose identifier does not parse, and one without an identifier.
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("CT01")
        .called_ae_title("SBMWL")
        .with_presentation_context(channels::dicom::worklist::MWL_FIND, vec![EXPLICIT_LE])
        .with_presentation_context(channels::dicom::mpps::MPPS, vec![EXPLICIT_LE])
        .read_timeout(Duration::from_secs(20))
        .establish_with_async(&mwl)
        .await
        .expect("association");
    let mwl_find = channels::dicom::worklist::MWL_FIND;
    let garbage = [0x08u8, 0x00, 0x50, 0x00, b'S', b'H', 0x40, 0x00, b'A'];
    let (st, comment) = request(
        &mut assoc,
        command::C_FIND_RQ,
        mwl_find,
        "",
        1,
        Some(&garbage),
    )
    .await;
    assert_eq!(st, 0xC001, "{comment}");
    assert!(comment.contains("does not parse"), "{comment}");
    let (st, _) = request(&mut assoc, command::C_FIND_RQ, mwl_find, "", 2, None).await;
    assert_eq!(st, 0xA900);
    let _ = assoc.release().await;

    // MPPS: a data set that does not parse, a missing step sequence, a status that is not
    // one, a creation that is not IN PROGRESS, an N-SET with an end date that is not a date.
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("CT01")
        .called_ae_title("SBMWL")
        .with_presentation_context(channels::dicom::mpps::MPPS, vec![EXPLICIT_LE])
        .read_timeout(Duration::from_secs(20))
        .establish_with_async(&mwl)
        .await
        .expect("association");
    let mpps = channels::dicom::mpps::MPPS;
    let (st, comment) = request(
        &mut assoc,
        command::N_CREATE_RQ,
        mpps,
        "1.2.826.0.1.3680043.9.7777.901",
        1,
        Some(&garbage),
    )
    .await;
    assert_eq!(st, 0x0110, "{comment}");
    let mut no_step = mpps_create("ACC-X");
    no_step.remove_element(tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE);
    let st = mpps_request(
        &mut assoc,
        command::N_CREATE_RQ,
        "1.2.826.0.1.3680043.9.7777.902",
        2,
        &no_step,
    )
    .await;
    assert_eq!(st, 0x0120, "missing attribute");
    let mut not_a_status = mpps_create("ACC-X");
    not_a_status.put_str(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, "FINISHED");
    let st = mpps_request(
        &mut assoc,
        command::N_CREATE_RQ,
        "1.2.826.0.1.3680043.9.7777.903",
        3,
        &not_a_status,
    )
    .await;
    assert_eq!(st, 0x0106, "invalid attribute value");
    let created = "1.2.826.0.1.3680043.9.7777.904";
    let st = mpps_request(
        &mut assoc,
        command::N_CREATE_RQ,
        created,
        4,
        &mpps_create("ACC-X"),
    )
    .await;
    assert_eq!(st, 0, "a good N-CREATE still succeeds");
    let mut bad_end = InMemDicomObject::new_empty();
    bad_end.put_str(tags::PERFORMED_PROCEDURE_STEP_STATUS, VR::CS, "COMPLETED");
    bad_end.put_str(tags::PERFORMED_PROCEDURE_STEP_END_DATE, VR::DA, "20261340");
    let st = mpps_request(&mut assoc, command::N_SET_RQ, created, 5, &bad_end).await;
    assert_eq!(st, 0x0106);
    let _ = assoc.release().await;

    // C-STORE: a data set that does not parse, one that claims a 4 GiB value (refused at
    // once, nothing allocated), and (with dcmtk's storescu) an object without its series.
    let ct = "1.2.840.10008.5.1.4.1.1.2";
    let mut assoc = dicom_ul::ClientAssociationOptions::new()
        .calling_ae_title("MODALITY")
        .called_ae_title("SBSTORE")
        .with_presentation_context(ct, vec![EXPLICIT_LE])
        .read_timeout(Duration::from_secs(20))
        .establish_with_async(&images)
        .await
        .expect("association");
    let (st, _) = request(
        &mut assoc,
        command::C_STORE_RQ,
        ct,
        "1.2.826.0.1.3680043.9.7777.905",
        1,
        Some(&garbage),
    )
    .await;
    assert_eq!(st, 0xC000);
    let (st, comment) = request(
        &mut assoc,
        command::C_STORE_RQ,
        ct,
        "1.2.826.0.1.3680043.9.7777.906",
        2,
        Some(&four_gib_claim()),
    )
    .await;
    assert_eq!(st, 0xC000, "{comment}");
    let _ = assoc.release().await;
    let study = "1.2.826.0.1.3680043.9.7777.910";
    let no_series = synthetic_ct_with(&made, study, "1.2.826.0.1.3680043.9.7777.910.1", 1, |o| {
        o.remove_element(tags::SERIES_INSTANCE_UID);
    });
    let (host, port) = images.rsplit_once(':').expect("host:port");
    let sent = output_within(
        dcmtk("storescu")
            .args([
                "-v", "-aet", "MODALITY", "-aec", "SBSTORE", "-to", "5", host, port,
            ])
            .arg(&no_series),
        20,
    )
    .expect("storescu ends");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&sent.stdout),
        String::from_utf8_lossy(&sent.stderr)
    );
    assert!(
        said.contains("Store Response (Error: DataSetDoesNotMatchSOPClass)"),
        "storescu did not report A900: {said}"
    );

    // Each is stored as a rejected message with its reason; nothing else was affected.
    let mut mwl_rejected = rejected(&engine, "mwl").await;
    mwl_rejected.sort();
    let find = |t: &str, reason: &str| {
        mwl_rejected
            .iter()
            .any(|(mt, _, r)| mt == t && r.contains(reason))
    };
    assert!(
        find("C-FIND", "ScheduledProcedureStepStartDate is not a date"),
        "{mwl_rejected:?}"
    );
    assert!(find("C-FIND", "does not parse"), "{mwl_rejected:?}");
    assert!(find("C-FIND", "without an identifier"), "{mwl_rejected:?}");
    assert!(find("N-CREATE", "does not parse"), "{mwl_rejected:?}");
    assert!(
        find("N-CREATE", "ScheduledStepAttributesSequence is missing"),
        "{mwl_rejected:?}"
    );
    assert!(
        find("N-CREATE", "PerformedProcedureStepStatus is not"),
        "{mwl_rejected:?}"
    );
    assert!(
        find("N-SET", "PerformedProcedureStepEndDate is not a date"),
        "{mwl_rejected:?}"
    );
    assert!(mwl_rejected
        .iter()
        .any(|(mt, id, _)| mt == "N-SET" && id == created));
    assert_eq!(mwl_rejected.len(), 7, "{mwl_rejected:?}");
    let store_rejected = rejected(&engine, "images").await;
    let has = |reason: &str| {
        store_rejected
            .iter()
            .any(|(t, _, r)| t == "C-STORE" && r.contains(reason))
    };
    assert!(has("does not parse"), "{store_rejected:?}");
    assert!(has("exceeds"), "{store_rejected:?}");
    assert!(has("SeriesInstanceUID is missing"), "{store_rejected:?}");
    assert_eq!(store_rejected.len(), 3, "{store_rejected:?}");

    // The engine goes on: C-ECHO, a good query and a good object.
    let (host, port) = mwl.rsplit_once(':').expect("host:port");
    let echo = output_within(
        dcmtk("echoscu").args(["-aet", "CT01", "-aec", "SBMWL", "-to", "5", host, port]),
        20,
    )
    .expect("echoscu ends");
    assert!(echo.status.success());
    assert!(find_ok(&mwl, out.path()));
    let good = synthetic_ct(&made, study, "1.2.826.0.1.3680043.9.7777.910.2", 1);
    store_files(&images, &[good]);
}

/// Whether a plain worklist query succeeds (no match needed).
fn find_ok(addr: &str, out: &Path) -> bool {
    find(addr, &["AccessionNumber", "PatientName"], out).is_empty()
}

/// An MLLP peer standing in for the HIS: answers AA to everything, keeps what it got.
async fn his_peer() -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    crate::delivery::mllp_peer(|_, text| {
        let control = text
            .split('\r')
            .next()
            .and_then(|msh| msh.split('|').nth(9))
            .unwrap_or_default()
            .to_string();
        (
            0,
            Some(format!(
                "MSH|^~\\&|HIS|MAIN|SB|HUB|20260301||ACK|A{control}|P|2.5.1\rMSA|AA|{control}\r"
            )),
        )
    })
    .await
}

/// `storescu` of `files` as MODALITY to the storage source at `addr`.
pub(crate) fn store_files(addr: &str, files: &[std::path::PathBuf]) {
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let sent = output_within(
        dcmtk("storescu")
            .args([
                "-aet", "MODALITY", "-aec", "SBSTORE", "-to", "5", host, port,
            ])
            .args(files),
        30,
    )
    .expect("storescu ends");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
}

/// The study_available messages the store holds for channel `images`: (control id, study
/// UID, instances).
async fn announcements(engine: &EngineProcess) -> Vec<(String, String, u64)> {
    let admin = engine.admin();
    let list = get_json(&format!(
        "{admin}/api/messages?channel=images&message_type=study_available&limit=100"
    ))
    .await;
    let mut out = Vec::new();
    for item in list["items"].as_array().expect("items") {
        let id = item["id"].as_str().expect("id");
        let m = get_json(&format!("{admin}/api/messages/{id}")).await;
        let doc: serde_json::Value =
            serde_json::from_str(m["raw"].as_str().expect("raw")).expect("a study document");
        let instances = doc["series"]
            .as_array()
            .expect("series")
            .iter()
            .map(|s| s["instances"].as_u64().unwrap_or_default())
            .sum();
        out.push((
            m["control_id"].as_str().unwrap_or_default().to_string(),
            doc["study_instance_uid"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            instances,
        ));
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_study_neither_loses_nor_repeats_its_announcement() {
    let (peer, seen) = his_peer().await;
    let root = tempfile::tempdir().expect("tempdir");
    let (folder, made) = (root.path().join("store"), root.path().join("made"));
    std::fs::create_dir_all(&made).expect("mkdir");
    // Durable commits: the first engine is killed without a goodbye.
    let cfg = TestConfig::new("", "");
    std::fs::remove_file(cfg.conf().join("channels/lab.toml")).expect("rm lab");
    std::fs::write(
        cfg.conf().join("channels/images.toml"),
        format!(
            "name = \"images\"\n[source]\ntype = \"dicom_store\"\nlisten = \"127.0.0.1:0\"\n\
             ae_title = \"SBSTORE\"\nallowed_calling_ae_titles = [\"MODALITY\"]\n\
             folder = \"{}\"\nquiet_period_secs = 3\n\
             [[route]]\nwhen = {{ message_type = [\"study_available\"] }}\nto = [\"his\"]\n\
             [[destination]]\nname = \"his\"\ntype = \"mllp\"\naddress = \"{peer}\"\n",
            folder.display()
        ),
    )
    .expect("write channel");
    let (one, two) = (
        "1.2.826.0.1.3680043.9.7777.300",
        "1.2.826.0.1.3680043.9.7777.400",
    );
    let series = |study: &str, n: u32| format!("{study}.{n}");
    let first = [
        synthetic_ct(&made, one, &series(one, 1), 1),
        synthetic_ct(&made, one, &series(one, 1), 2),
        synthetic_ct(&made, two, &series(two, 1), 1),
    ];

    // Study one gets two instances and study two one; the engine dies within the quiet
    // period.
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    store_files(&engine.mllp("images"), &first);
    engine.kill();
    assert!(seen.lock().expect("lock").is_empty(), "announced too early");

    // After the restart study one gets a third instance in a second series, and its first
    // one again (counted once); study two gets nothing more.
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    store_files(
        &engine.mllp("images"),
        &[
            synthetic_ct(&made, one, &series(one, 2), 1),
            first[0].clone(),
        ],
    );
    let both = eventually(30, || {
        let got = seen.lock().expect("lock");
        got.iter().any(|m| m.contains(one)) && got.iter().any(|m| m.contains(two))
    })
    .await;
    assert!(both, "not both announced: {:?}", seen.lock().expect("lock"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    let stored = announcements(&engine).await;
    assert_eq!(stored.len(), 2, "one announcement per study: {stored:?}");
    let count = |study: &str| {
        stored
            .iter()
            .find(|(_, s, _)| s == study)
            .map(|(_, _, n)| *n)
    };
    assert_eq!(count(one), Some(3), "{stored:?}");
    assert_eq!(count(two), Some(1), "{stored:?}");
    let study_one = seen
        .lock()
        .expect("lock")
        .iter()
        .find(|m| m.contains(one))
        .cloned()
        .expect("study one");
    assert!(
        study_one.contains("NumberOfStudyRelatedInstances^Study instances^DCM||3|"),
        "{study_one}"
    );
    assert!(
        study_one.contains("NumberOfStudyRelatedSeries^Study series^DCM||2|"),
        "{study_one}"
    );

    // Announced studies stay announced across another restart.
    assert_eq!(engine.terminate(), Some(0));
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(announcements(&engine).await, stored, "announced again");
    let mut controls: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|m| m.split('|').nth(9).map(str::to_string))
        .collect();
    controls.sort();
    controls.dedup();
    assert_eq!(controls.len(), 2, "{controls:?}");
}

/// `tool` with dcmtk's TLS options: our `leaf` as its certificate, trusting `ca`.
fn dcmtk_tls(tool: &str, leaf: &crate::tls::Leaf, ca: &crate::tls::Ca) -> Command {
    let mut c = dcmtk(tool);
    c.arg("+tls")
        .arg(&leaf.key)
        .arg(&leaf.cert)
        .arg("+cf")
        .arg(&ca.pem);
    c
}

/// dcmtk's storescp over TLS as the PACS, requiring a client certificate signed by `ca`.
fn tls_pacs(dir: &Path, leaf: &crate::tls::Leaf, ca: &crate::tls::Ca) -> Pacs {
    spawn_pacs(dcmtk_tls("storescp", leaf, ca), dir)
}

#[tokio::test]
async fn dicom_tls_on_the_sources_and_the_pacs_destination() {
    let (peer, seen) = his_peer().await;
    let root = tempfile::tempdir().expect("tempdir");
    let (folder, received, made, pki) = (
        root.path().join("store"),
        root.path().join("pacs"),
        root.path().join("made"),
        root.path().join("pki"),
    );
    for d in [&received, &made, &pki] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let ca = crate::tls::Ca::new(&pki, "dicomca");
    let server = ca.leaf("localhost", &["localhost"]);
    let modality = ca.leaf("ct01", &["ct01.example"]);
    let stranger_ca = crate::tls::Ca::new(&pki, "otherca");
    let stranger = stranger_ca.leaf("ct01", &["ct01.example"]);
    let pacs_cert = ca.leaf("pacs", &["localhost"]);
    let pacs = tls_pacs(&received, &pacs_cert, &ca);

    let tls_source = format!(
        "[source.tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\nallowed_client_names = [\"ct01\"]\n",
        server.cert.display(),
        server.key.display(),
        ca.pem.display()
    );
    let cfg = TestConfig::new("durability = \"os\"", "");
    std::fs::remove_file(cfg.conf().join("channels/lab.toml")).expect("rm lab");
    std::fs::write(
        cfg.conf().join("channels/mwl.toml"),
        format!(
            "name = \"mwl\"\n[source]\ntype = \"dicom_worklist\"\nlisten = \"127.0.0.1:0\"\n\
             ae_title = \"SBMWL\"\nworklist = \"rad\"\n{tls_source}"
        ),
    )
    .expect("write mwl");
    std::fs::write(
        cfg.conf().join("channels/images.toml"),
        format!(
            "name = \"images\"\n[source]\ntype = \"dicom_store\"\nlisten = \"127.0.0.1:0\"\n\
             ae_title = \"SBSTORE\"\nfolder = \"{}\"\nquiet_period_secs = 1\n{tls_source}\
             [[route]]\nwhen = {{ message_type = [\"C-STORE\"] }}\nto = [\"pacs\"]\n\
             [[route]]\nwhen = {{ message_type = [\"study_available\"] }}\nto = [\"his\"]\n\
             [[destination]]\nname = \"pacs\"\ntype = \"dicom\"\naddress = \"127.0.0.1:{}\"\nae_title = \"PACS\"\n\
             timeout_secs = 5\n\
             [destination.tls]\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\nserver_name = \"localhost\"\n\
             [destination.delivery]\nbackoff_base_ms = 200\nbackoff_max_ms = 1000\n\
             [[destination]]\nname = \"his\"\ntype = \"mllp\"\naddress = \"{peer}\"\n",
            folder.display(),
            pacs.1,
            ca.pem.display(),
            modality.cert.display(),
            modality.key.display(),
        ),
    )
    .expect("write images");
    let engine = EngineProcess::start(&cfg.conf(), &cfg.data());
    let (mwl, images) = (engine.mllp("mwl"), engine.mllp("images"));
    let hp = |a: &str| {
        let (h, p) = a.rsplit_once(':').expect("host:port");
        (h.to_string(), p.to_string())
    };

    // C-ECHO over TLS with the modality's certificate, on both sources.
    for (addr, called) in [(&mwl, "SBMWL"), (&images, "SBSTORE")] {
        let (host, port) = hp(addr);
        let echo = output_within(
            dcmtk_tls("echoscu", &modality, &ca)
                .args(["-aet", "CT01", "-aec", called, "-to", "5"])
                .args([&host, &port]),
            20,
        )
        .expect("echoscu ends");
        assert!(
            echo.status.success(),
            "TLS C-ECHO to {called}: {}",
            String::from_utf8_lossy(&echo.stderr)
        );
    }
    // Refused: plain TCP on a TLS port, and a certificate from another CA.
    let (host, port) = hp(&mwl);
    let plain = output_within(
        dcmtk("echoscu").args(["-aet", "CT01", "-aec", "SBMWL", "-to", "5", &host, &port]),
        20,
    )
    .expect("echoscu ends");
    assert!(!plain.status.success(), "plain TCP accepted on a TLS port");
    let foreign = output_within(
        dcmtk_tls("echoscu", &stranger, &ca)
            .args(["-aet", "CT01", "-aec", "SBMWL", "-to", "5", &host, &port]),
        20,
    )
    .expect("echoscu ends");
    assert!(
        !foreign.status.success(),
        "a certificate of another CA accepted"
    );

    // A worklist query over TLS.
    let out = tempfile::tempdir().expect("tempdir");
    let found = output_within(
        dcmtk_tls("findscu", &modality, &ca)
            .args([
                "-W",
                "-aet",
                "CT01",
                "-aec",
                "SBMWL",
                "-to",
                "5",
                "-k",
                "AccessionNumber",
            ])
            .args(["-X", "-od"])
            .arg(out.path())
            .args([&host, &port]),
        20,
    )
    .expect("findscu ends");
    assert!(
        found.status.success(),
        "{}",
        String::from_utf8_lossy(&found.stderr)
    );

    // storescu over TLS: stored, forwarded to the PACS over TLS, announced.
    let study = "1.2.826.0.1.3680043.9.7777.800";
    let files = [
        synthetic_ct(&made, study, &format!("{study}.1"), 1),
        synthetic_ct(&made, study, &format!("{study}.1"), 2),
    ];
    let (host, port) = hp(&images);
    let sent = output_within(
        dcmtk_tls("storescu", &modality, &ca)
            .args(["-aet", "CT01", "-aec", "SBSTORE", "-to", "5", &host, &port])
            .args(&files),
        30,
    )
    .expect("storescu ends");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let forwarded = eventually(20, || {
        std::fs::read_dir(&received)
            .map(|d| d.flatten().count() >= 2)
            .unwrap_or(false)
    })
    .await;
    assert!(forwarded, "the TLS PACS did not get the two objects");
    let announced = eventually(20, || {
        seen.lock().expect("lock").iter().any(|m| m.contains(study))
    })
    .await;
    assert!(announced, "no study-available message");

    let metrics = metrics_text(&engine).await;
    assert!(
        metric_value(
            &metrics,
            "switchboard_tls_handshake_failures_total{channel=\"mwl\",reason=\"bad_certificate\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_tls_cert_expiry_timestamp_seconds{channel=\"images\",endpoint=\"pacs\",role=\"client\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchboard_tls_cert_expiry_timestamp_seconds{channel=\"mwl\",endpoint=\"source\",role=\"server\"}"),
        "{metrics}"
    );

    // check --connect echoes the PACS over TLS.
    let out = Command::new(binary())
        .args(["check", "--connect", "--config"])
        .arg(cfg.conf())
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = stdout
        .lines()
        .find(|l| l.starts_with("images/pacs: "))
        .unwrap_or_else(|| panic!("no line for images/pacs in:\n{stdout}"));
    assert!(line.contains("C-ECHO answered with success"), "{stdout}");
    drop(pacs);
}
