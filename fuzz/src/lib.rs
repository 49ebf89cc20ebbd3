//! The bodies of Switchboard's fuzz targets (one thin file per target in `fuzz_targets/`).
//!
//! Each function takes the fuzzer's bytes and makes the same calls the engine makes on input
//! from outside; a panic, a hang or an allocation past libFuzzer's `-malloc_limit_mb` is a bug.
//! Invariants that must hold for any input are asserted here too (an MLLP stream decodes to
//! the same frames however it is split). How to run them: `docs/FUZZING.md`.
// Only the allocator below needs `unsafe` (GlobalAlloc is an unsafe trait).
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use bytes::BytesMut;
use channels::mllp::codec::{MllpCodec, MllpFrame};
use tokio_util::codec::Decoder;
use transforms::hl7v2::access::V2Message;
use transforms::hl7v2::ack::{build_ack, parse_ack, should_answer, AckParams, Verdict};
use transforms::hl7v2::charset::{self, Charset};
use transforms::hl7v2::header::MessageHeader;
use transforms::hl7v2::validate::{check_body, check_header, AcceptPolicy};
use transforms::model::Event;

/// Largest single allocation any input may cause. A bigger one aborts the run, which
/// libFuzzer reports as a crash with the input saved: without a sanitizer, libFuzzer's own
/// `-malloc_limit_mb` cannot see Rust allocations, so the bound is kept here.
pub const MAX_ALLOCATION_BYTES: usize = 64 << 20;

/// The system allocator with [`MAX_ALLOCATION_BYTES`] enforced on every request.
struct Bounded;

fn within_bound(size: usize) {
    if size > MAX_ALLOCATION_BYTES {
        use std::io::Write;
        let _ = std::io::stderr().write_all(b"switchboard-fuzz: allocation over the bound\n");
        std::process::abort();
    }
}

#[allow(unsafe_code)]
// SAFETY: every call is passed on unchanged to `System`, which upholds GlobalAlloc's contract;
// the only addition is a size check that aborts before allocating.
unsafe impl std::alloc::GlobalAlloc for Bounded {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        within_bound(layout.size());
        unsafe { std::alloc::System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        within_bound(layout.size());
        unsafe { std::alloc::System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        within_bound(new_size);
        unsafe { std::alloc::System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        unsafe { std::alloc::System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Bounded = Bounded;

/// Frame limit used by the MLLP target: small, so oversize handling is reached often.
const MLLP_MAX_FRAME: usize = 512;

/// Decodes `stream` with `chunk`-byte reads (0 = all at once), then the end of stream.
fn mllp_frames(stream: &[u8], chunk: usize) -> Vec<Result<MllpFrame, String>> {
    let mut codec = MllpCodec::new(MLLP_MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let step = if chunk == 0 { stream.len().max(1) } else { chunk };
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Ok(frame)),
                Ok(None) => break,
                Err(e) => out.push(Err(e.to_string())),
            }
        }
    }
    match codec.decode_eof(&mut buf) {
        Ok(Some(frame)) => out.push(Ok(frame)),
        Ok(None) => {}
        Err(e) => out.push(Err(e.to_string())),
    }
    out
}

/// MLLP decoder: any byte stream, read in one piece and in small pieces (the first input byte
/// picks the piece size), gives the same frames and errors, each frame within the limit.
pub fn mllp(data: &[u8]) {
    let Some((&first, stream)) = data.split_first() else {
        return;
    };
    let whole = mllp_frames(stream, 0);
    let split = mllp_frames(stream, usize::from(first % 16) + 1);
    assert_eq!(whole, split, "frames depend on how the stream was split");
    for frame in whole.iter().flatten() {
        match frame {
            MllpFrame::Message(m) => assert!(m.len() <= MLLP_MAX_FRAME),
            MllpFrame::Oversize { head } => {
                assert!(head.len() <= channels::mllp::codec::OVERSIZE_HEAD_BYTES)
            }
        }
    }
}

/// What ingest does with received bytes (`engine::ingest` `decide`): read MSH from a lossy
/// decoding, decode by MSH-18, check header and body against the default policy, build the
/// ACK or NAK; then the ACK must parse back and echo the control id.
pub fn ingest(raw: &[u8]) {
    let lossy = String::from_utf8_lossy(raw);
    let header = MessageHeader::read(&lossy).ok();
    let verdict = match &header {
        None => Verdict::Accept,
        Some(h) => match charset::decode(raw, Charset::Utf8) {
            Err(_) => Verdict::Accept,
            Ok((text, _)) => {
                let checked = check_header(h, &AcceptPolicy::default()).and_then(|()| check_body(&text));
                // The stored message is also read with typed access and its error report.
                if let Ok(msg) = V2Message::parse(&text) {
                    let _ = msg.errors();
                    let _ = msg.message_type();
                }
                match checked {
                    Ok(()) => Verdict::Accept,
                    Err(nak) => Verdict::Nak(nak),
                }
            }
        },
    };
    // How stored bytes are shown later (admin API, console), for both kinds of stored name.
    let _ = charset::decode_lossy(raw, "");
    let _ = charset::decode_lossy(raw, "8859/1");
    let _ = should_answer(header.as_ref(), &verdict);
    let ack = build_ack(
        header.as_ref(),
        &verdict,
        &AckParams {
            control_id: "FUZZ-ACK-1",
            timestamp: "20260101120000",
        },
    );
    let parsed = parse_ack(&ack).expect("every ACK we build parses back");
    assert_eq!(parsed.code, verdict.ack_code(header.as_ref()));
}

/// Renders an event through FHIR and every vendor payload, as routes do.
fn render_all(event: &Event) {
    use transforms::dest::{buktor, latrexa, opsport, px360};
    let _ = opsport::render(event, &opsport::OpsportOptions::default());
    let _ = buktor::render(event, &buktor::BuktorOptions::default());
    let _ = px360::render(event, &px360::Px360Options::default());
    let _ = latrexa::render(event);
    // render_bundle serialises as the FHIR destination does (and as transforms is built:
    // one serialiser instantiation of fhirbolt's model, which dominates build time).
    if let Ok(Some(rendered)) = transforms::fhir::render_bundle(event, &Default::default()) {
        let _ = transforms::fhir::fhir_to_events(&rendered.body.to_string());
    }
    let json = serde_json::to_string(event).expect("events serialise");
    let back: Event = serde_json::from_str(&json).expect("event JSON reads back");
    assert_eq!(&back, event, "canonical JSON round trip");
}

/// v2 -> canonical for one message family: an input starting with `MSH` is a whole message;
/// otherwise its first byte picks one of `types` and the rest are the segments after a fixed
/// MSH, so the fuzzer spends its time in that family's mapping.
pub fn v2_family(data: &[u8], types: &[&str]) {
    let text = if data.starts_with(b"MSH") {
        String::from_utf8_lossy(data).into_owned()
    } else {
        let Some((&pick, rest)) = data.split_first() else {
            return;
        };
        let message_type = types[usize::from(pick) % types.len()];
        format!(
            "MSH|^~\\&|HIS|RUH|SB|HUB|20260615103000||{message_type}|FZ1|P|2.5\r{}",
            String::from_utf8_lossy(rest)
        )
    };
    let Ok(msg) = V2Message::parse(&text) else {
        return;
    };
    if let Ok(transforms::Mapped::Event(event)) = transforms::v2_to_event(&msg) {
        let _ = event.business_keys();
        let _ = event.partition_key();
        render_all(&event);
    }
}

/// FHIR JSON input (a resource or a Bundle), then every event rendered back.
pub fn fhir_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(events) = transforms::fhir::fhir_to_events(text) {
        for e in &events {
            render_all(e);
        }
    }
}

/// Webhook JSON bodies: the first byte picks Buktor, OpsPort (patient/doctor/clinic/
/// appointment), PX360 or a Latrexa pending booking (then its SIU^S12 for the HIS).
pub fn webhook_json(data: &[u8]) {
    use transforms::from_json::{buktor, latrexa, opsport, px360};
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(rest) else {
        return;
    };
    let events = match pick % 7 {
        0 => buktor::events_from_body(body).ok(),
        1..=4 => {
            let kind = ["patient", "doctor", "clinic", "appointments"][usize::from(pick % 7) - 1];
            opsport::events_from_body(kind, body, &Default::default()).ok()
        }
        5 => serde_json::from_str::<serde_json::Value>(body)
            .ok()
            .and_then(|v| px360::events_from_body(&v, &Default::default()).ok()),
        _ => {
            let Ok(booking) = serde_json::from_str::<transforms::dest::latrexa::PendingBooking>(body)
            else {
                return;
            };
            let header = transforms::to_v2::SiuHeader {
                sending_application: "SWITCHBOARD".into(),
                sending_facility: "HUB".into(),
                receiving_application: "HIS".into(),
                receiving_facility: "RUH".into(),
                message_time: transforms::hl7v2::datetime::parse("20260615103000")
                    .expect("fixed time parses"),
                control_id: "FZ-SIU-1".into(),
                processing_id: "P".into(),
            };
            if let Ok(siu) = latrexa::siu_from_booking(&booking, &header) {
                // What we send the HIS must be a message we would accept ourselves.
                let msg = V2Message::parse(&siu).expect("our SIU parses");
                let _ = transforms::v2_to_event(&msg);
            }
            latrexa::event_from_booking(&booking).ok().map(|e| vec![e])
        }
    };
    for e in events.iter().flatten() {
        render_all(e);
    }
}

/// A config folder reused by every run (creating one per input would dominate the time).
fn config_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-fuzz-config")
            .tempdir()
            .expect("temp dir")
            .keep();
        std::fs::create_dir_all(dir.join("channels")).expect("channels dir");
        dir
    })
}

/// Configuration loading: the input is the one channel file of a config folder.
pub fn config_load(data: &[u8]) {
    let dir = config_dir();
    std::fs::write(dir.join("channels").join("fuzz.toml"), data).expect("write channel file");
    if let Err(problems) = engine::config::load(dir) {
        // Every problem names its file.
        let _ = problems.to_string();
    }
}
