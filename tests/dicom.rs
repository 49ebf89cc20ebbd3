//! DICOM end to end (docs/DICOM.md): the real engine with a `dicom_worklist` and a
//! `dicom_store` source on 127.0.0.1, spoken to by dcmtk's `echoscu`, `findscu` and
//! `storescu`, by dicom-ul's client (MPPS), with dcmtk's `storescp` as the PACS.

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
fn orm(control_id: &str, orc1: &str, orc5: &str) -> String {
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
    let pc = assoc.presentation_contexts()[0].id;
    let mut cmd = InMemDicomObject::new_empty();
    cmd.put(DataElement::new(
        tags::COMMAND_FIELD,
        VR::US,
        dicom_core::PrimitiveValue::from(field),
    ));
    cmd.put(DataElement::new(
        tags::MESSAGE_ID,
        VR::US,
        dicom_core::PrimitiveValue::from(id),
    ));
    cmd.put(DataElement::new(
        tags::COMMAND_DATA_SET_TYPE,
        VR::US,
        dicom_core::PrimitiveValue::from(0u16),
    ));
    if field == command::N_CREATE_RQ {
        cmd.put_str(
            tags::AFFECTED_SOP_CLASS_UID,
            VR::UI,
            channels::dicom::mpps::MPPS,
        );
        cmd.put_str(tags::AFFECTED_SOP_INSTANCE_UID, VR::UI, uid);
    } else {
        cmd.put_str(
            tags::REQUESTED_SOP_CLASS_UID,
            VR::UI,
            channels::dicom::mpps::MPPS,
        );
        cmd.put_str(tags::REQUESTED_SOP_INSTANCE_UID, VR::UI, uid);
    }
    let bytes = dimse::write_dataset(data, EXPLICIT_LE).expect("encode");
    dimse::send(assoc, pc, &cmd, Some(&bytes))
        .await
        .expect("send");
    match dimse::receive(assoc, Duration::from_secs(20), 1 << 20)
        .await
        .expect("response")
    {
        Received::Message(m) => dimse::us(&m.command, tags::STATUS).expect("status"),
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
}

/// A small synthetic CT object (2x2 pixels, explicit VR little endian) written to `dir`.
fn synthetic_ct(dir: &Path, study: &str, series: &str, n: u32) -> std::path::PathBuf {
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
    let port = free_port();
    let child = dcmtk("storescp")
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
             [[route]]\nwhen = {{ message_type = [\"ORU^R01\"] }}\nto = [\"his\"]\n\
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

    let sent = output_within(
        dcmtk("storescu")
            .args([
                "-aet", "MODALITY", "-aec", "SBSTORE", "-to", "5", host, port,
            ])
            .args(&files),
        30,
    )
    .expect("storescu ends");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
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
