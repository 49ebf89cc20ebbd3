//! The simulated hospital information system: an MLLP peer that acknowledges what it receives.
//!
//! Every framed message (`0x0B payload 0x1C 0x0D`, read with [`channels::mllp::codec::MllpCodec`])
//! gets an original-mode ACK built by `transforms` (MSH mirrored, `MSA|AA|<MSH-10>`). A
//! scheduling message (SIU S12/S13/S14) whose slot the configured [`SlotRefusal`] refuses gets
//! `MSA|AE|<MSH-10>|slot unavailable` and an ERR segment with the same text instead: that is
//! how an online booking that no longer fits the HIS calendar is refused. A frame with no
//! readable MSH is answered AE (ERR-3 100, segment sequence error) with an empty MSA-2.
//!
//! A booking request SRM^S01 (HL7 v2.5 chapter 10, placer application requests a booking) is
//! answered SRR^S01: MSA-1 AA and an SCH whose SCH-1 is the request's ARQ-1 (the placer id)
//! and SCH-2 the HIS's own new appointment id (`HISAPT<n>`), or MSA-1 AE with "slot
//! unavailable" and no SCH when the refusal rule refuses its slot (ARQ-11.1 is its start).
//!
//! State is on the sandbox's HTTP server: `GET /his/_state` (messages received, with the code
//! answered and the answer, and the current refusal rule) and `POST /his/_refusal` (a new [`SlotRefusal`] as
//! JSON, e.g. `{"mode":"doctors","codes":["DOC-1"]}`).

use crate::{json, lock, Shared};
use axum::body::Bytes as BodyBytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use channels::mllp::codec::{MllpCodec, MllpFrame};
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use transforms::hl7v2::ack::{build_ack, hl7_timestamp, AckParams, Verdict};
use transforms::hl7v2::header::MessageHeader;
use transforms::hl7v2::validate::{ErrorCode, Nak};

/// Largest frame the simulated HIS reads (1 MiB).
const MAX_FRAME: usize = 1 << 20;

/// The text of MSA-3 and ERR-8 when a slot is refused.
pub const SLOT_UNAVAILABLE: &str = "slot unavailable";

/// Which bookings (SIU S12/S13/S14) the simulated HIS refuses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum SlotRefusal {
    /// Accept every booking (the default).
    #[default]
    None,
    /// Refuse every booking.
    All,
    /// Refuse bookings with one of these doctors (AIP-3, first component).
    Doctors {
        /// Doctor codes.
        codes: Vec<String>,
    },
    /// Refuse bookings whose start (AIS-4 or SCH-11.4) begins with one of these HL7
    /// timestamps, e.g. `202606151030` or the whole day `20260615`.
    Starts {
        /// Timestamp prefixes.
        times: Vec<String>,
    },
}

impl SlotRefusal {
    /// True when this rule refuses the booking in `msg` (an SIU message's text).
    pub fn refuses(&self, msg: &str, h: &MessageHeader) -> bool {
        let booking = (h.message_code == "SIU"
            && matches!(h.trigger_event.as_str(), "S12" | "S13" | "S14"))
            || (h.message_code == "SRM" && h.trigger_event == "S01");
        if !booking {
            return false;
        }
        match self {
            SlotRefusal::None => false,
            SlotRefusal::All => true,
            SlotRefusal::Doctors { codes } => field(msg, h, "AIP", 3, 1)
                .into_iter()
                .any(|d| codes.iter().any(|c| c == d)),
            SlotRefusal::Starts { times } => field(msg, h, "AIS", 4, 1)
                .into_iter()
                .chain(field(msg, h, "SCH", 11, 4))
                .chain(field(msg, h, "ARQ", 11, 1))
                .any(|s| !s.is_empty() && times.iter().any(|t| s.starts_with(t.as_str()))),
        }
    }
}

/// Component `comp` (1-based) of field `n` of every `seg` segment in `msg`.
fn field<'a>(msg: &'a str, h: &MessageHeader, seg: &str, n: usize, comp: usize) -> Vec<&'a str> {
    let d = h.delimiters;
    msg.split(['\r', '\n'])
        .filter(|s| s.get(..3) == Some(seg) && s[3..].starts_with(d.field))
        .filter_map(|s| s.split(d.field).nth(n))
        .filter_map(|f| f.split(d.repetition).next())
        .filter_map(|f| f.split(d.component).nth(comp - 1))
        .collect()
}

#[derive(Debug, Default)]
struct Log {
    messages: Vec<Value>,
    next_ack: u64,
    next_appointment: u64,
}

/// State shared between the MLLP listener and the HTTP control routes.
#[derive(Debug, Clone)]
pub(crate) struct HisState {
    refusal: Shared<SlotRefusal>,
    log: Shared<Log>,
}

impl HisState {
    pub(crate) fn new(refusal: SlotRefusal) -> Self {
        HisState {
            refusal: Shared::new(Mutex::new(refusal)),
            log: Shared::default(),
        }
    }

    /// The answer to one received frame; records it.
    fn answer(&self, payload: &[u8]) -> String {
        let text = String::from_utf8_lossy(payload);
        let header = MessageHeader::read(&text).ok();
        let now = chrono::Utc::now();
        let ts = hl7_timestamp(now);
        let mut log = lock(&self.log);
        log.next_ack += 1;
        let ack_id = format!("HISACK{}", log.next_ack);
        let params = AckParams {
            control_id: &ack_id,
            timestamp: &ts,
        };
        let ack = match &header {
            None => build_ack(
                None,
                &Verdict::Nak(Nak::new(ErrorCode::SegmentSequence, "no readable MSH")),
                &params,
            ),
            Some(h) if lock(&self.refusal).refuses(&text, h) => {
                as_srr(h, slot_unavailable(h, &params), None)
            }
            Some(h) => {
                let accept = build_ack(Some(h), &Verdict::Accept, &params);
                if is_srm(h) {
                    log.next_appointment += 1;
                    let placer = field(&text, h, "ARQ", 1, 1).first().copied().unwrap_or("");
                    let sch = format!("SCH|{placer}|HISAPT{}", log.next_appointment);
                    as_srr(h, accept, Some(sch))
                } else {
                    accept
                }
            }
        };
        let code = ack
            .split('\r')
            .find_map(|s| s.get(4..6).filter(|_| s.starts_with("MSA")))
            .unwrap_or("")
            .to_string();
        log.messages.push(json!({
            "control_id": header.as_ref().map(|h| h.control_id.clone()),
            "message_type": header.as_ref().map(MessageHeader::message_type),
            "ack_code": code,
            "received_at": crate::now_rfc3339(),
            "raw": text,
            "answer": ack,
        }));
        ack
    }
}

fn is_srm(h: &MessageHeader) -> bool {
    h.message_code == "SRM" && h.trigger_event == "S01"
}

/// For an SRM^S01, `ack` as its SRR^S01 answer (MSH-9 `SRR^S01^SRR_S01`, then `sch` after
/// MSA and ERR); any other message's `ack` unchanged.
fn as_srr(h: &MessageHeader, ack: String, sch: Option<String>) -> String {
    if !is_srm(h) {
        return ack;
    }
    let mut segments: Vec<String> = ack
        .split('\r')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(msh) = segments.first_mut() {
        let mut f: Vec<&str> = msh.split('|').collect();
        if f.len() > 8 {
            f[8] = "SRR^S01^SRR_S01";
        }
        *msh = f.join("|");
    }
    segments.extend(sch);
    let mut out = segments.join("\r");
    out.push('\r');
    out
}

/// An AE whose MSA-3 and ERR-8 say "slot unavailable" (ERR-3 207, application error).
fn slot_unavailable(h: &MessageHeader, params: &AckParams<'_>) -> String {
    let accept = build_ack(Some(h), &Verdict::Accept, params);
    let msh = accept.split('\r').next().unwrap_or_default();
    let d = h.delimiters;
    let (f, c) = (d.field, d.component);
    let ctrl = &h.control_id;
    format!(
        "{msh}\rMSA{f}AE{f}{ctrl}{f}{SLOT_UNAVAILABLE}\rERR{f}{f}{f}207{c}Application internal error{c}HL70357{f}E{f}{f}{f}{f}{SLOT_UNAVAILABLE}\r"
    )
}

/// Accepts MLLP connections until `shutdown`, each served in its own task.
pub(crate) async fn serve(
    listener: TcpListener,
    state: HisState,
    shutdown: CancellationToken,
    tasks: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tasks.spawn(connection(stream, state.clone(), shutdown.clone()));
            }
            Err(e) => tracing::warn!(error = %e, "Simulated HIS could not accept a connection."),
        }
    }
}

async fn connection(stream: TcpStream, state: HisState, shutdown: CancellationToken) {
    let mut framed = Framed::new(stream, MllpCodec::new(MAX_FRAME));
    loop {
        let frame = tokio::select! {
            () = shutdown.cancelled() => break,
            f = framed.next() => f,
        };
        let payload = match frame {
            Some(Ok(MllpFrame::Message(p))) => p,
            Some(Ok(MllpFrame::Oversize { head })) => head,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "Simulated HIS connection failed.");
                break;
            }
            None => break,
        };
        let ack = state.answer(&payload);
        if let Err(e) = framed.send(ack.as_bytes()).await {
            tracing::debug!(error = %e, "Simulated HIS could not answer.");
            break;
        }
    }
}

/// The HTTP control routes, to be nested under `/his`.
pub(crate) fn router(state: HisState) -> Router {
    Router::new()
        .route("/_state", get(state_view))
        .route("/_refusal", post(set_refusal))
        .with_state(state)
}

async fn state_view(State(s): State<HisState>) -> Response {
    let refusal = lock(&s.refusal).clone();
    let log = lock(&s.log);
    json(
        StatusCode::OK,
        json!({"messages": log.messages, "refusal": refusal}),
    )
}

async fn set_refusal(State(s): State<HisState>, body: BodyBytes) -> Response {
    match serde_json::from_slice::<SlotRefusal>(&body) {
        Ok(r) => {
            *lock(&s.refusal) = r.clone();
            json(StatusCode::OK, json!({"refusal": r}))
        }
        Err(e) => json(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::TestSandbox;
    use crate::SandboxConfig;
    use channels::mllp::client::MllpClient;
    use std::time::Duration;

    fn siu(ctrl: &str, doctor: &str, start: &str) -> String {
        format!(
            "MSH|^~\\&|SWITCHBOARD|HUB|HIS|CLINIC|20260601120000||SIU^S12^SIU_S12|{ctrl}|P|2.5.1\r\
             SCH|LX-1||||||||||^^^{start}\r\
             PID|1||P-1^^^HIS^MR||Haddad^Lina\r\
             AIS|1||CONS^Consultation|{start}\r\
             AIP|1||{doctor}^Otaibi^Sarah\r"
        )
    }

    async fn send(addr: std::net::SocketAddr, msg: &str) -> String {
        let mut c = MllpClient::connect(&addr.to_string(), Duration::from_secs(5))
            .await
            .expect("connects");
        let answer = c.send(msg.as_bytes()).await.expect("answered");
        String::from_utf8(answer.to_vec()).expect("utf-8 ack")
    }

    #[tokio::test]
    async fn acks_with_mirrored_msh_and_msa_aa() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let ack = send(t.sb.his_mllp_addr, &siu("C1", "DOC-1", "202606151030")).await;
        assert!(
            ack.starts_with("MSH|^~\\&|HIS|CLINIC|SWITCHBOARD|HUB|"),
            "{ack}"
        );
        assert!(ack.contains("\rMSA|AA|C1\r"), "{ack}");
        let state = t.get_json("/his/_state").await;
        assert_eq!(state["messages"][0]["control_id"], "C1");
        assert_eq!(state["messages"][0]["ack_code"], "AA");
        assert_eq!(state["messages"][0]["message_type"], "SIU^S12");
    }

    #[tokio::test]
    async fn refuses_listed_doctor_with_slot_unavailable() {
        let mut cfg = SandboxConfig::for_tests();
        cfg.his_refuse_slots = SlotRefusal::Doctors {
            codes: vec!["DOC-BUSY".into()],
        };
        let t = TestSandbox::start(cfg).await;
        let ack = send(t.sb.his_mllp_addr, &siu("C2", "DOC-BUSY", "202606151030")).await;
        assert!(ack.contains("\rMSA|AE|C2|slot unavailable\r"), "{ack}");
        assert!(ack.contains("\rERR|||207^"), "{ack}");
        let ack = send(t.sb.his_mllp_addr, &siu("C3", "DOC-FREE", "202606151030")).await;
        assert!(ack.contains("MSA|AA|C3"), "{ack}");
    }

    #[tokio::test]
    async fn refusal_by_start_time_can_be_switched_at_run_time() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let r = t
            .http
            .post(t.url("/his/_refusal"))
            .json(&json!({"mode": "starts", "times": ["20260615"]}))
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 200);
        let ack = send(t.sb.his_mllp_addr, &siu("C4", "D", "202606151030")).await;
        assert!(ack.contains("MSA|AE|C4|slot unavailable"), "{ack}");
        let ack = send(t.sb.his_mllp_addr, &siu("C5", "D", "202606161030")).await;
        assert!(ack.contains("MSA|AA|C5"), "{ack}");
        t.http
            .post(t.url("/his/_refusal"))
            .json(&json!({"mode": "all"}))
            .send()
            .await
            .expect("sent");
        let adt = "MSH|^~\\&|A|B|C|D|20260601||ADT^A04|C6|P|2.5\rPID|1||X\r";
        assert!(
            send(t.sb.his_mllp_addr, adt).await.contains("MSA|AA|C6"),
            "only bookings are refused"
        );
    }

    #[tokio::test]
    async fn a_booking_request_is_answered_srr_with_the_his_id_in_sch_2() {
        let mut cfg = SandboxConfig::for_tests();
        cfg.his_refuse_slots = SlotRefusal::Starts {
            times: vec!["20260616".into()],
        };
        let t = TestSandbox::start(cfg).await;
        let srm = |ctrl: &str, start: &str| {
            format!(
                "MSH|^~\\&|SWITCHBOARD|HUB|HIS|CLINIC|20260601120000||SRM^S01^SRM_S01|{ctrl}|P|2.5\r\
                 ARQ|LX-9||||||||30|min|{start}^{start}\r\
                 PID|1||P-1^^^HIS^MR||Haddad^Lina\r\
                 RGS|1|A\r"
            )
        };
        let srr = send(t.sb.his_mllp_addr, &srm("R1", "202606151030")).await;
        assert!(srr.contains("|SRR^S01^SRR_S01|"), "{srr}");
        assert!(srr.contains("\rMSA|AA|R1\r"), "{srr}");
        assert!(srr.contains("\rSCH|LX-9|HISAPT1\r"), "{srr}");
        let srr = send(t.sb.his_mllp_addr, &srm("R2", "202606161030")).await;
        assert!(srr.contains("\rMSA|AE|R2|slot unavailable\r"), "{srr}");
        assert!(!srr.contains("\rSCH|"), "{srr}");
        let state = t.get_json("/his/_state").await;
        assert_eq!(state["messages"][0]["message_type"], "SRM^S01");
    }

    #[tokio::test]
    async fn unreadable_message_gets_ae() {
        let t = TestSandbox::start(SandboxConfig::for_tests()).await;
        let ack = send(t.sb.his_mllp_addr, "hello").await;
        assert!(ack.contains("\rMSA|AE||no readable MSH\r"), "{ack}");
    }
}
