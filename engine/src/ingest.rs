//! Ingest of HL7 v2 messages: decide, store, commit, answer.
//!
//! For each [`Inbound`]: decode by MSH-18, read the MSH, check it against the channel's
//! accept policy and the body's structure, recognise resends, build the answer, write the
//! record with that answer, wait for the group commit, and only then hand the answer to the
//! connection. A message that fails a check is stored too, as rejected, with its reason.
//! When the store fails, the answer is AR/CR with ERR 207 and nothing positive is ever sent.
//! While an operator has the channel paused (see [`crate::pause`]) every message is answered
//! AR/CR with ERR 207 "channel paused by operator" and not stored.
//!
//! An operator's resend ([`ChannelIngest::handle_as`] with a [`Resend`], from
//! `POST /api/messages/{id}/resend`) takes the same path as a message from the source (checks,
//! store, commit, routing); it is always a new message (no resend recognition) and its record
//! names the message it was made from.

use crate::config::{AckTiming, LoadedChannel};
use crate::delivery::Finished;
use crate::metrics::{message_type_label, Metrics};
use crate::pipeline::Pipeline;
use crate::store::{Claim, MessageRecord, Status, Store};
use bytes::Bytes;
use channels::source::{Disposition, Inbound, Payload, Reply};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tracing::{debug, error, warn, Instrument, Span};
use transforms::hl7v2::ack::{
    build_ack, hl7_timestamp, should_answer, store_failure, AckParams, Verdict,
};
use transforms::hl7v2::charset::{self, Charset};
use transforms::hl7v2::header::{content_digest, HeaderError, MessageHeader};
use transforms::hl7v2::validate::{
    check_body, check_header, AcceptPolicy, ErrorCode, ErrorLocation, Nak,
};

/// Messages from this size on are decoded and checked on the blocking pool.
const OFF_THREAD_BYTES: usize = 64 * 1024;

/// What one channel's ingest needs.
pub struct ChannelIngest {
    /// The channel's name.
    pub channel: String,
    /// Accept policy from `[accept]`.
    pub policy: AcceptPolicy,
    /// Character set for messages without MSH-18.
    pub charset_fallback: Charset,
    /// The store.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
    /// Configuration version stamped on records.
    pub config_version: String,
    /// Routing and delivery after the message is stored.
    pub pipeline: Arc<Pipeline>,
    /// When the sender is answered.
    pub ack: AckTiming,
    /// How long `ack = "on_delivery"` waits.
    pub ack_timeout: std::time::Duration,
    /// The live event stream.
    pub events: crate::events::EventBus,
    /// Set while an operator has the channel paused.
    pub paused: channels::source::PauseFlag,
    /// The channel's metric series every message touches, looked up once.
    series: ChannelSeries,
}

/// The per-channel series of [`Metrics`] that every message updates: resolved when the ingest
/// is built, so a message costs an atomic add each rather than a label lookup (a hash of the
/// label values and a lock) each.
struct ChannelSeries {
    last_message: prometheus::IntGauge,
    ingest_duration: prometheus::Histogram,
    accepted_aa: prometheus::IntCounter,
}

impl ChannelSeries {
    fn of(metrics: &Metrics, channel: &str) -> ChannelSeries {
        ChannelSeries {
            last_message: metrics.last_message.with_label_values(&[channel]),
            ingest_duration: metrics.ingest_duration.with_label_values(&[channel]),
            accepted_aa: metrics.acks.with_label_values(&[channel, "AA"]),
        }
    }

    /// Counts an answer with `code` on `channel` (AA without a lookup).
    fn count_ack(&self, metrics: &Metrics, channel: &str, code: &str) {
        if code == "AA" {
            self.accepted_aa.inc();
        } else {
            metrics.acks.with_label_values(&[channel, code]).inc();
        }
    }
}

/// An operator's resend of an edited message: the message it was made from and who sent it.
#[derive(Debug, Clone)]
pub struct Resend {
    /// The id of the message it was made from.
    pub original: u64,
    /// The operator (token name, and `X-Switchboard-User` when sent).
    pub by: String,
}

impl ChannelIngest {
    /// Builds the ingest of a loaded channel.
    pub fn new(
        ch: &LoadedChannel,
        store: Store,
        metrics: Metrics,
        config_version: &str,
        pipeline: Arc<Pipeline>,
    ) -> Self {
        ChannelIngest {
            series: ChannelSeries::of(&metrics, &ch.config.name),
            channel: ch.config.name.clone(),
            policy: ch.config.accept.policy(),
            charset_fallback: ch.charset_fallback,
            store,
            metrics,
            config_version: config_version.to_string(),
            events: pipeline.hub().events().clone(),
            pipeline,
            ack: ch.config.ack,
            ack_timeout: std::time::Duration::from_secs(ch.config.ack_timeout_secs),
            paused: Default::default(),
        }
    }

    /// The same ingest, refusing messages while `flag` says the channel is paused.
    pub fn with_pause(mut self, flag: channels::source::PauseFlag) -> Self {
        self.paused = flag;
        self
    }
}

impl ChannelIngest {
    /// Handles one message from receipt to answer.
    pub(crate) async fn handle(&self, inbound: Inbound) {
        self.handle_as(inbound, None).await;
    }

    /// Handles one message from receipt to answer; `resend` when an operator sent it again
    /// (see [`Resend`]). All of it runs in the message's span
    /// ([`crate::delivery::message_span`]), whose id and type are recorded once known.
    pub async fn handle_as(&self, inbound: Inbound, resend: Option<&Resend>) {
        let span = crate::delivery::message_span(None, &self.channel);
        self.receive(inbound, resend).instrument(span).await;
    }

    /// [`ChannelIngest::handle_as`], in the message's span.
    async fn receive(&self, inbound: Inbound, resend: Option<&Resend>) {
        let started = Instant::now();
        let (raw, truncated_limit) = match &inbound.payload {
            Payload::Hl7v2(b) => (b.clone(), None),
            Payload::Hl7v2Oversize { head, limit } => (head.clone(), Some(*limit)),
            // JSON from the HTTP sources has its own checks and answers.
            Payload::Json(_) if self.paused.is_paused() => {
                return crate::ingest_http::refuse_paused(self, inbound)
            }
            Payload::Json(_) => return crate::ingest_http::handle(self, inbound).await,
            // A DICOM source's record: refused like a store failure while paused (the
            // modality gets a failure status and sends again later), nothing stored.
            Payload::Rejected { .. } | Payload::Record { .. } if self.paused.is_paused() => {
                self.metrics
                    .rejected
                    .with_label_values(&[&self.channel, ErrorCode::ChannelPaused.reason_label()])
                    .inc();
                let _ = inbound.reply.send(Reply {
                    disposition: Disposition::Retry(crate::pause::PAUSED_REASON.into()),
                    body: None,
                    http: None,
                    message_id: None,
                });
                return;
            }
            Payload::Rejected { .. } | Payload::Record { .. } => {
                return self.handle_other(inbound).await
            }
        };
        if self.paused.is_paused() {
            self.refuse_paused(inbound, &raw);
            return;
        }
        let received_at_ms = received_at_ms(&inbound);
        let id = self.store.next_id(received_at_ms);
        Span::current().record("message_id", id);
        let (header, charset_name, mut verdict) =
            self.decide_off_thread(&raw, truncated_limit).await;
        // A master file is answered record by record (MFK), so its records are read now.
        let master_file = match (&header, &verdict) {
            (Some(h), Verdict::Accept) if h.message_code.eq_ignore_ascii_case("MFN") => {
                master_file_outcome(&raw, &charset_name)
            }
            _ => None,
        };
        if let Some(nak) = master_file.as_ref().and_then(MasterFileAnswer::nak) {
            verdict = Verdict::Nak(nak);
        }
        let message_type = header
            .as_ref()
            .map(|h| h.message_type())
            .unwrap_or_default();
        let label = header
            .as_ref()
            .map(|h| message_type_label(&h.message_code, h.trigger()))
            .unwrap_or_else(|| "other".into());
        Span::current().record("message_type", label.as_str());
        self.count_received(&label);
        let control_id = header
            .as_ref()
            .map(|h| h.control_id.clone())
            .unwrap_or_default();
        debug!(control_id = %control_id, "Message received.");

        // A resend of an accepted message gets the original answer and no second record,
        // once the original is durable.
        let mut pending = None;
        let mut dedup_key = String::new();
        if let (Some(h), Verdict::Accept, None) = (&header, &verdict, resend) {
            let key =
                crate::store::dedup::hl7_dedup_key(&self.channel, &h.control_id, &h.sender_key());
            match self.store.claim(&key, &content_digest(&raw), id).await {
                Ok(Claim::New(p)) => pending = Some(p),
                Ok(Claim::Reused {
                    previous,
                    pending: p,
                }) => {
                    self.metrics
                        .control_id_reused
                        .with_label_values(&[&self.channel])
                        .inc();
                    warn!(control_id = %control_id, previous, "Control id reused with a different body; stored as a new message.");
                    pending = Some(p);
                }
                Ok(Claim::Duplicate(original)) => {
                    self.metrics
                        .duplicates
                        .with_label_values(&[&self.channel])
                        .inc();
                    debug!(control_id = %control_id, original = original.id, "Duplicate answered from the store.");
                    self.answer_duplicate(
                        inbound,
                        started,
                        (h, master_file.as_ref()),
                        &charset_name,
                        *original,
                    )
                    .await;
                    return;
                }
                Err(e) => {
                    self.fail(inbound, started, header.as_ref(), id, &e.to_string());
                    return;
                }
            }
            dedup_key = key;
        }

        let now = hl7_timestamp(chrono::Utc::now());
        let mut ack_text = build_ack(
            header.as_ref(),
            &verdict,
            &AckParams {
                control_id: &id.to_string(),
                timestamp: &now,
            },
        );
        if let (Some(mf), Some(h)) = (&master_file, &header) {
            ack_text = transforms::hl7v2::mfk::mfk_from_ack(
                &ack_text,
                &h.delimiters,
                mf.mfi.as_deref(),
                &mf.file.records,
                &now,
            );
        }
        let answer = should_answer(header.as_ref(), &verdict);
        let code = verdict.ack_code(header.as_ref());
        let (status, mut errors) = match &verdict {
            Verdict::Accept => (Status::Received, vec![]),
            Verdict::Nak(n) => (Status::Rejected, vec![n.to_string()]),
        };
        // The records a master file could not post are stored with their reasons, even when
        // the others were accepted.
        if let Some(mf) = &master_file {
            errors.extend(mf.file.rejections());
        }
        let record = MessageRecord {
            id,
            channel: self.channel.clone(),
            received_at_ms,
            peer: match resend {
                Some(r) => format!("resent by {}", r.by),
                None => inbound.peer.to_string(),
            },
            format: channels::source::RecordFormat::Hl7v2.into(),
            message_type,
            control_id: control_id.clone(),
            sending_application: header
                .as_ref()
                .map(|h| h.sending_application.clone())
                .unwrap_or_default(),
            sending_facility: header
                .as_ref()
                .map(|h| h.sending_facility.clone())
                .unwrap_or_default(),
            version: header
                .as_ref()
                .map(|h| h.version.clone())
                .unwrap_or_default(),
            charset: charset_name.clone(),
            size: truncated_limit.map(|l| l + 1).unwrap_or(raw.len()),
            truncated: truncated_limit.is_some(),
            status,
            ack_code: code.as_str().into(),
            ack: if answer {
                ack_text.clone()
            } else {
                String::new()
            },
            errors,
            config_version: self.config_version.clone(),
            deliveries: vec![],
            business_keys: Vec::new(),
            dedup_key,
            resent_from: resend.map(|r| r.original),
        };
        let mut record = record;
        if verdict == Verdict::Accept && self.ack == AckTiming::OnDelivery {
            // Undecided until every destination answers (see `answer_on_delivery`).
            record.ack_code.clear();
            record.ack.clear();
        }
        let items = match self
            .persist(&mut record, &raw, verdict == Verdict::Accept)
            .await
        {
            Ok(items) => {
                if let Some(p) = pending {
                    p.durable();
                }
                items
            }
            Err(e) => {
                if let Some(p) = pending {
                    take_back(p, &self.store, &record, &e);
                }
                self.fail(inbound, started, header.as_ref(), id, &e.to_string());
                return;
            }
        };
        if verdict == Verdict::Accept && self.ack == AckTiming::OnDelivery {
            self.answer_on_delivery(
                inbound,
                started,
                (header.as_ref(), id, master_file.as_ref()),
                &charset_name,
                record.status,
                &items,
            )
            .await;
            return;
        }
        let disposition = match &verdict {
            Verdict::Accept => Disposition::Accepted,
            Verdict::Nak(n) => {
                self.metrics
                    .rejected
                    .with_label_values(&[&self.channel, n.code.reason_label()])
                    .inc();
                debug!(control_id = %control_id, reason = %n, "Message rejected.");
                Disposition::Rejected(n.to_string())
            }
        };
        let body = answer.then(|| Bytes::from(encode(&ack_text, &charset_name)));
        if body.is_some() {
            self.series
                .count_ack(&self.metrics, &self.channel, code.as_str());
        }
        // Durable now: the workers may start delivering. Handed over before the sender is
        // answered, so a message it sends next is never queued ahead of this one's items.
        self.pipeline.hub().enqueue(&items);
        self.answer(inbound, started, (header.as_ref(), id), disposition, body);
    }

    /// `ack = "on_delivery"`: route, wait for every destination, then answer AA or AE (a
    /// master file: its MFK, see [`MasterFileAnswer::after_delivery`]).
    async fn answer_on_delivery(
        &self,
        inbound: Inbound,
        started: Instant,
        (header, id, master_file): (Option<&MessageHeader>, u64, Option<&MasterFileAnswer>),
        charset_name: &str,
        status: Status,
        items: &[crate::store::outbox::OutboxItem],
    ) {
        let watch = self.pipeline.hub().watch(id);
        self.pipeline.hub().enqueue(items);
        // In cluster mode another node delivers: its completion notice may have been
        // written before the watch was set, so the record is read after setting it.
        let outcome = match status {
            Status::Filtered => Ok(()),
            _ => match self.settled(id) {
                Some(outcome) => outcome,
                None => self.wait_for_delivery(watch).await,
            },
        };
        self.pipeline.hub().unwatch(id);
        if outcome.is_err() {
            if let Some(h) = header {
                self.record_late_delivery(h.clone(), id, master_file.cloned());
            }
        }
        self.answer_delivery_outcome(
            inbound,
            started,
            (header, id, master_file),
            charset_name,
            outcome,
        );
    }

    /// The `on_delivery` outcome of message `id` when its deliveries are finished as the
    /// store says now; `None` while they are under way (or the record cannot be read: the
    /// waiter then waits).
    fn settled(&self, id: u64) -> Option<Result<(), String>> {
        let record = self.store.get(id).ok().flatten()?;
        match Finished::of(record.status, &record.deliveries)? {
            Finished::Delivered => Some(Ok(())),
            Finished::Failed(reason) => Some(Err(format!("delivery failed: {reason}"))),
        }
    }

    /// Waits at most `ack_timeout` for every destination of a message to confirm.
    async fn wait_for_delivery(
        &self,
        watch: tokio::sync::oneshot::Receiver<Finished>,
    ) -> Result<(), String> {
        match tokio::time::timeout(self.ack_timeout, watch).await {
            Ok(Ok(Finished::Delivered)) => Ok(()),
            Ok(Ok(Finished::Failed(reason))) => Err(format!("delivery failed: {reason}")),
            Ok(Err(_)) => Err("delivery outcome unknown (engine stopping)".to_string()),
            Err(_) => Err(format!(
                "not confirmed by every destination within {} s",
                self.ack_timeout.as_secs()
            )),
        }
    }

    /// After an `on_delivery` answer that was not AA: when the deliveries do succeed later,
    /// the stored answer becomes AA, so that a resend is told the truth.
    fn record_late_delivery(
        &self,
        header: MessageHeader,
        id: u64,
        master_file: Option<MasterFileAnswer>,
    ) {
        let pipeline = self.pipeline.clone();
        let store = self.store.clone();
        // In the message's span, which it keeps open until the deliveries end.
        tokio::spawn(
            async move {
                let watch = pipeline.hub().watch(id);
                let delivered = match store.get(id) {
                    Ok(Some(r)) if r.status == Status::Delivered => true,
                    Ok(Some(r)) if r.status == Status::Failed => false,
                    Ok(Some(_)) => matches!(watch.await, Ok(Finished::Delivered)),
                    _ => false,
                };
                if delivered {
                    let (code, mut text) = positive_ack(&header, id);
                    if let Some(mf) = &master_file {
                        text = mf.after_delivery(&text, &header, &Ok(()));
                    }
                    if let Err(e) = store.set_ack(id, &code, &text) {
                        warn!(error = %e, "Cannot record the late answer on the message.");
                    }
                }
            }
            .instrument(Span::current()),
        );
    }

    /// Answers a message of an `on_delivery` channel with `outcome` and records the answer.
    fn answer_delivery_outcome(
        &self,
        inbound: Inbound,
        started: Instant,
        (header, id, master_file): (Option<&MessageHeader>, u64, Option<&MasterFileAnswer>),
        charset_name: &str,
        outcome: Result<(), String>,
    ) {
        let (verdict, disposition) = match outcome.clone() {
            Ok(()) => (Verdict::Accept, Disposition::Accepted),
            Err(reason) => {
                self.metrics
                    .rejected
                    .with_label_values(&[
                        &self.channel,
                        ErrorCode::DeliveryNotConfirmed.reason_label(),
                    ])
                    .inc();
                (
                    Verdict::Nak(Nak::new(ErrorCode::DeliveryNotConfirmed, reason.clone())),
                    Disposition::Retry(reason),
                )
            }
        };
        let text = build_ack(
            header,
            &verdict,
            &AckParams {
                control_id: &id.to_string(),
                timestamp: &hl7_timestamp(chrono::Utc::now()),
            },
        );
        let text = match (master_file, header) {
            (Some(mf), Some(h)) => mf.after_delivery(&text, h, &outcome),
            _ => text,
        };
        let code = verdict.ack_code(header);
        let answer = should_answer(header, &verdict);
        if let Err(e) = self
            .store
            .set_ack(id, code.as_str(), if answer { &text } else { "" })
        {
            // `id` is the span's, except for a resend answered here for its original.
            warn!(id, error = %e, "Cannot record the answer on the message.");
        }
        let body = answer.then(|| Bytes::from(encode(&text, charset_name)));
        if body.is_some() {
            self.metrics
                .acks
                .with_label_values(&[&self.channel, code.as_str()])
                .inc();
        }
        self.answer(inbound, started, (header, id), disposition, body);
    }

    /// Answers a resend of a durable original.
    ///
    /// On an `on_delivery` channel the answer is the state now: AA once every destination
    /// confirmed (also after a late success), AE once a delivery failed, and while the
    /// deliveries are still under way the resend waits like the original did. Elsewhere it
    /// is the original's answer, byte for byte.
    async fn answer_duplicate(
        &self,
        inbound: Inbound,
        started: Instant,
        (header, master_file): (&MessageHeader, Option<&MasterFileAnswer>),
        charset_name: &str,
        original: MessageRecord,
    ) {
        let id = original.id;
        if self.ack == AckTiming::OnDelivery && original.status != Status::Rejected {
            let watch = self.pipeline.hub().watch(id);
            let outcome = match self.settled(id) {
                Some(outcome) => outcome,
                None => self.wait_for_delivery(watch).await,
            };
            self.answer_delivery_outcome(
                inbound,
                started,
                (Some(header), id, master_file),
                charset_name,
                outcome,
            );
            return;
        }
        let body = (!original.ack.is_empty())
            .then(|| Bytes::from(encode(&original.ack, &original.charset)));
        if body.is_some() {
            self.metrics
                .acks
                .with_label_values(&[&self.channel, &original.ack_code])
                .inc();
        }
        self.answer(
            inbound,
            started,
            (Some(header), id),
            Disposition::Accepted,
            body,
        );
    }

    /// [`decide`](Self::decide), on the blocking pool for a large message: decoding and
    /// checking cost time in proportion to the size, and an async worker that spends it
    /// delays every other sender's answer.
    async fn decide_off_thread(
        &self,
        raw: &Bytes,
        truncated: Option<usize>,
    ) -> (Option<MessageHeader>, String, Verdict) {
        if raw.len() < OFF_THREAD_BYTES {
            return Self::decide(&self.policy, self.charset_fallback, raw, truncated);
        }
        let (policy, fallback, bytes) = (self.policy.clone(), self.charset_fallback, raw.clone());
        match tokio::task::spawn_blocking(move || {
            Self::decide(&policy, fallback, &bytes, truncated)
        })
        .await
        {
            Ok(decided) => decided,
            Err(e) => {
                error!(error = %e, "Message check failed to run; rejecting the message.");
                (
                    None,
                    String::new(),
                    Verdict::Nak(Nak::new(
                        ErrorCode::ApplicationInternalError,
                        "the message could not be checked",
                    )),
                )
            }
        }
    }

    /// Decodes and checks a message: its header (if readable), charset name and verdict.
    pub(crate) fn decide(
        policy: &AcceptPolicy,
        charset_fallback: Charset,
        raw: &[u8],
        truncated: Option<usize>,
    ) -> (Option<MessageHeader>, String, Verdict) {
        // MSH is ASCII in every supported character set, so it can be read before decoding;
        // a message that does not decode can still be answered in its sender's terms.
        let lossy = String::from_utf8_lossy(raw);
        let header = match MessageHeader::read(&lossy) {
            Ok(h) => h,
            Err(e) => {
                let nak = match e {
                    HeaderError::NoMsh => Nak::new(
                        ErrorCode::SegmentSequence,
                        "message does not start with an MSH segment",
                    ),
                    HeaderError::BadFieldSeparator => Nak::at(
                        ErrorCode::DataType,
                        ErrorLocation::field("MSH", 1),
                        "MSH-1 field separator is missing or invalid",
                    ),
                    HeaderError::BadEncodingCharacters => Nak::at(
                        ErrorCode::DataType,
                        ErrorLocation::field("MSH", 2),
                        "MSH-2 encoding characters are invalid",
                    ),
                };
                return (None, String::new(), Verdict::Nak(nak));
            }
        };
        if let Some(limit) = truncated {
            let nak = Nak::new(
                ErrorCode::ValueTooLong,
                format!("message is larger than the limit of {limit} bytes"),
            );
            return (Some(header), String::new(), Verdict::Nak(nak));
        }
        let (text, cs) = match charset::decode(raw, charset_fallback) {
            Ok(t) => t,
            Err(e) => {
                let nak = match e {
                    charset::CharsetError::Unsupported(_) => Nak::at(
                        ErrorCode::TableValueNotFound,
                        ErrorLocation::field("MSH", 18),
                        "MSH-18 character set is not supported",
                    ),
                    charset::CharsetError::Invalid { charset, offset } => Nak::new(
                        ErrorCode::DataType,
                        format!("bytes at offset {offset} are not valid {charset}"),
                    ),
                };
                return (Some(header), String::new(), Verdict::Nak(nak));
            }
        };
        let verdict = match check_header(&header, policy).and_then(|()| check_body(&text)) {
            Ok(()) => Verdict::Accept,
            Err(nak) => Verdict::Nak(nak),
        };
        (Some(header), cs.name().to_string(), verdict)
    }

    /// Answers AR/CR 207 when the store failed; the message is not on disk.
    fn fail(
        &self,
        inbound: Inbound,
        started: Instant,
        header: Option<&MessageHeader>,
        id: u64,
        reason: &str,
    ) {
        error!(error = %reason, "Message could not be stored; answering with a reject.");
        let verdict = store_failure("message could not be stored, send it again later");
        let code = verdict.ack_code(header);
        let text = build_ack(
            header,
            &verdict,
            &AckParams {
                control_id: &id.to_string(),
                timestamp: &hl7_timestamp(chrono::Utc::now()),
            },
        );
        let charset = header.map(|h| h.charset.clone()).unwrap_or_default();
        self.metrics
            .rejected
            .with_label_values(&[
                &self.channel,
                ErrorCode::ApplicationInternalError.reason_label(),
            ])
            .inc();
        let body = should_answer(header, &verdict).then(|| Bytes::from(encode(&text, &charset)));
        if body.is_some() {
            self.metrics
                .acks
                .with_label_values(&[&self.channel, code.as_str()])
                .inc();
        }
        self.answer(
            inbound,
            started,
            (header, id),
            Disposition::Retry(reason.to_string()),
            body,
        );
    }

    /// Answers AR/CR with ERR 207 "channel paused by operator" while the channel is paused;
    /// nothing is stored, so the sender sends the message again later.
    fn refuse_paused(&self, inbound: Inbound, raw: &[u8]) {
        let lossy = String::from_utf8_lossy(raw);
        let header = MessageHeader::read(&lossy).ok();
        let verdict = Verdict::Nak(Nak::new(
            ErrorCode::ChannelPaused,
            crate::pause::PAUSED_REASON,
        ));
        let code = verdict.ack_code(header.as_ref());
        let text = build_ack(
            header.as_ref(),
            &verdict,
            &AckParams {
                control_id: &self.store.next_id(received_at_ms(&inbound)).to_string(),
                timestamp: &hl7_timestamp(chrono::Utc::now()),
            },
        );
        self.metrics
            .rejected
            .with_label_values(&[&self.channel, ErrorCode::ChannelPaused.reason_label()])
            .inc();
        let charset = header
            .as_ref()
            .map(|h| h.charset.clone())
            .unwrap_or_default();
        let body =
            should_answer(header.as_ref(), &verdict).then(|| Bytes::from(encode(&text, &charset)));
        if body.is_some() {
            self.metrics
                .acks
                .with_label_values(&[&self.channel, code.as_str()])
                .inc();
        }
        debug!("Message refused: the channel is paused.");
        let _ = inbound.reply.send(Reply {
            disposition: Disposition::Retry(crate::pause::PAUSED_REASON.into()),
            body,
            http: None,
            message_id: None,
        });
    }

    fn answer(
        &self,
        inbound: Inbound,
        started: Instant,
        (header, id): (Option<&MessageHeader>, u64),
        disposition: Disposition,
        body: Option<Bytes>,
    ) {
        let kind = match &disposition {
            Disposition::Accepted => "received",
            Disposition::Rejected(_) | Disposition::Retry(_) => "rejected",
        };
        self.observe(
            started,
            kind,
            id,
            &header.map(|h| h.message_type()).unwrap_or_default(),
            &header.map(|h| h.control_id.clone()).unwrap_or_default(),
        );
        // A message answered "send again" was not stored, except on an `on_delivery`
        // channel whose deliveries were not confirmed in time.
        let message_id = match &disposition {
            Disposition::Retry(_) => self.store.contains_message(id).unwrap_or(false),
            Disposition::Accepted | Disposition::Rejected(_) => true,
        }
        .then_some(id);
        if inbound
            .reply
            .send(Reply {
                disposition,
                body,
                http: None,
                message_id,
            })
            .is_err()
        {
            warn!("Sender went away before its answer was sent.");
        }
    }
}

/// Steps every source format shares (HL7 here, JSON in [`crate::ingest_http`]).
impl ChannelIngest {
    /// Stores what a source could not use ([`Payload::Rejected`]) as rejected, with its
    /// reason, or what it keeps itself ([`Payload::Record`]) as accepted and routed; answers
    /// once durable (`Retry` when the store fails).
    async fn handle_other(&self, inbound: Inbound) {
        let started = Instant::now();
        let (format, message_type, control_id, body, reason) = match &inbound.payload {
            Payload::Rejected {
                format,
                message_type,
                control_id,
                body,
                reason,
            } => (
                format,
                message_type,
                control_id.clone(),
                body,
                Some(reason.clone()),
            ),
            Payload::Record {
                format,
                message_type,
                control_id,
                body,
                ..
            } => (format, message_type, control_id.clone(), body, None),
            _ => return,
        };
        let dedup = matches!(&inbound.payload, Payload::Record { dedup: true, .. })
            && !control_id.is_empty();
        let received_at_ms = received_at_ms(&inbound);
        let id = self.store.next_id(received_at_ms);
        Span::current().record("message_id", id);
        Span::current().record("message_type", message_type.as_str());
        self.count_received("other");
        // A record whose control id names what it says (a study's announcement): the same
        // one again is a resend, answered from the store.
        let mut pending = None;
        let mut dedup_key = String::new();
        if dedup {
            let key = crate::store::dedup::dedup_key(
                &format!("{format}\u{1f}{}", self.channel),
                &format!("{message_type}\u{1f}{control_id}"),
            );
            let digest: crate::store::ContentDigest =
                <sha2::Sha256 as sha2::Digest>::digest(key.as_bytes()).into();
            match self.store.claim(&key, &digest, id).await {
                Ok(Claim::New(p) | Claim::Reused { pending: p, .. }) => pending = Some(p),
                Ok(Claim::Duplicate(original)) => {
                    self.metrics
                        .duplicates
                        .with_label_values(&[&self.channel])
                        .inc();
                    debug!(control_id = %control_id, original = original.id, "Duplicate record answered from the store.");
                    let _ = inbound.reply.send(Reply {
                        disposition: Disposition::Accepted,
                        body: None,
                        http: None,
                        message_id: Some(original.id),
                    });
                    return;
                }
                Err(e) => {
                    error!(error = %e, "Input could not be stored.");
                    let _ = inbound.reply.send(Reply {
                        disposition: Disposition::Retry(e.to_string()),
                        body: None,
                        http: None,
                        message_id: None,
                    });
                    return;
                }
            }
            dedup_key = key;
        }
        let mut record = MessageRecord {
            id,
            channel: self.channel.clone(),
            received_at_ms,
            peer: inbound.peer.to_string(),
            format: (*format).into(),
            message_type: message_type.clone(),
            control_id,
            sending_application: String::new(),
            sending_facility: String::new(),
            version: String::new(),
            charset: String::new(),
            size: body.len(),
            truncated: false,
            status: if reason.is_some() {
                Status::Rejected
            } else {
                Status::Received
            },
            ack_code: String::new(),
            ack: String::new(),
            errors: reason.iter().cloned().collect(),
            config_version: self.config_version.clone(),
            deliveries: vec![],
            business_keys: Vec::new(),
            dedup_key,
            resent_from: None,
        };
        let body = body.clone();
        let message_type = message_type.clone();
        let mut items = Vec::new();
        let persisted = self.persist(&mut record, &body, reason.is_none()).await;
        if let Some(p) = pending {
            match &persisted {
                Ok(_) => p.durable(),
                Err(e) => take_back(p, &self.store, &record, e),
            }
        }
        let disposition = match persisted {
            Ok(routed) => match reason {
                Some(reason) => {
                    self.metrics
                        .rejected
                        .with_label_values(&[&self.channel, ErrorCode::DataType.reason_label()])
                        .inc();
                    Disposition::Rejected(reason)
                }
                None => {
                    items = routed;
                    Disposition::Accepted
                }
            },
            Err(e) => {
                error!(error = %e, "Input could not be stored.");
                Disposition::Retry(e.to_string())
            }
        };
        let kind = match disposition {
            Disposition::Accepted => "received",
            Disposition::Rejected(_) => "rejected",
            Disposition::Retry(_) => "failed",
        };
        self.observe(started, kind, id, &message_type, "");
        let stored = !matches!(disposition, Disposition::Retry(_));
        // Durable now: the workers may start delivering (before the answer, as above).
        self.pipeline.hub().enqueue(&items);
        let _ = inbound.reply.send(Reply {
            disposition,
            body: None,
            http: None,
            message_id: stored.then_some(id),
        });
    }

    /// Counts a received message and stamps the channel's last-message time.
    pub(crate) fn count_received(&self, message_type_label: &str) {
        self.metrics
            .received
            .with_label_values(&[&self.channel, message_type_label])
            .inc();
        self.series.last_message.set(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or_default(),
        );
    }

    /// Renders the deliveries of an accepted message (`route`), writes record, raw bytes and
    /// deliveries, and waits for the group commit. Only after `Ok` may the sender be told.
    ///
    /// Routing happens here, before the write: the rendered deliveries are committed with the
    /// message and its status, and a crash cannot leave it half-routed.
    pub(crate) async fn persist(
        &self,
        record: &mut MessageRecord,
        raw: &[u8],
        route: bool,
    ) -> Result<Vec<crate::store::outbox::OutboxItem>, crate::store::StoreError> {
        let items = if route {
            let items = if raw.len() < OFF_THREAD_BYTES {
                let (keys, items) = self.pipeline.keys_and_render(record, raw);
                record.business_keys = keys;
                items
            } else {
                // Parsing and mapping a large message: off the async workers (see decide).
                let (pipeline, rec, bytes) = (self.pipeline.clone(), record.clone(), raw.to_vec());
                let (keys, items) =
                    tokio::task::spawn_blocking(move || pipeline.keys_and_render(&rec, &bytes))
                        .await
                        .map_err(|e| {
                            crate::store::StoreError::Codec(format!("routing failed: {e}"))
                        })?;
                record.business_keys = keys;
                items
            };
            // Cluster mode: the deliveries go to the stream; the owner of their partition
            // writes them to its own outbox.
            if self.pipeline.cluster().is_none() || items.is_empty() {
                crate::store::outbox::attach(record, &items);
            }
            items
        } else {
            Vec::new()
        };
        let cluster = self.pipeline.cluster().filter(|_| !items.is_empty());
        let local = if cluster.is_some() {
            &[][..]
        } else {
            &items[..]
        };
        if let Err(e) = self.store.put(record, raw, local) {
            // The sender will send it again: what it wrote to visit timelines goes too.
            if let Err(forget) = self.store.journey_forget(record.id) {
                warn!(error = %forget, "Cannot take back the visit timeline steps of a message that was not stored.");
            }
            self.metrics
                .store_errors
                .with_label_values(&["write"])
                .inc();
            return Err(e);
        }
        let Some(cluster) = cluster else {
            self.store.commit().await?;
            return Ok(items);
        };
        // Cluster mode: the local fsync and the stream's replicated write run at once, and
        // the answer waits for both. A message the stream took but this node could not make
        // durable is answered as not stored; its resend is then the stream's duplicate.
        let (committed, published) = tokio::join!(
            self.store.commit(),
            cluster.publish(&self.store.seal, record, raw, &items)
        );
        committed?;
        match published {
            Ok(crate::cluster::Published::New) => {}
            Ok(crate::cluster::Published::Duplicate) => {
                if let Err(e) = cluster.duplicate(&self.store, record, raw).await {
                    warn!(error = %e, "Cannot mark a message the cluster stream already held as a duplicate.");
                }
            }
            Err(reason) => return Err(cluster.refused(&self.store, record, raw, reason)),
        }
        Ok(Vec::new())
    }

    /// Publishes the live event of an answered message and observes its ingest time.
    pub(crate) fn observe(
        &self,
        started: Instant,
        kind: &str,
        id: u64,
        message_type: &str,
        control_id: &str,
    ) {
        self.events.publish_with(|| crate::events::LiveEvent {
            kind: kind.into(),
            id: id.to_string(),
            channel: self.channel.clone(),
            message_type: message_type.to_string(),
            control_id: control_id.to_string(),
            destination: String::new(),
            at_ms: crate::delivery::now_ms(),
        });
        self.series
            .ingest_duration
            .observe(started.elapsed().as_secs_f64());
    }
}

/// After a failed [`ChannelIngest::persist`]: a message whose write or flush failed is taken
/// back (its sender sends it again); one the cluster stream did not acknowledge stays stored,
/// marked rejected with the reason, and only its resend claim is let go.
pub(crate) fn take_back(
    pending: crate::store::dedup::Pending,
    store: &Store,
    record: &MessageRecord,
    e: &crate::store::StoreError,
) {
    if !matches!(e, crate::store::StoreError::Cluster(_)) {
        pending.failed(store, record);
    }
}

/// A master file notification read at receipt: its records' outcomes for the MFK, and the
/// request's MFI segment the MFK echoes.
#[derive(Clone)]
struct MasterFileAnswer {
    file: transforms::from_v2::mfn::MasterFile,
    mfi: Option<String>,
}

impl MasterFileAnswer {
    /// The MFK of an `ack = "on_delivery"` channel, from the ACK `ack` built for the outcome:
    /// once every destination confirmed, each record as at receipt (`S` accepted and
    /// delivered, `U` rejected with its reason); when the deliveries were not all confirmed,
    /// every accepted record `U` with that reason too. The outcome is the message's (its
    /// records' deliveries are confirmed together), so no record is said to be posted that
    /// a destination may not have; the sender sends the file again and the upserts repeat
    /// harmlessly.
    fn after_delivery(
        &self,
        ack: &str,
        header: &MessageHeader,
        outcome: &Result<(), String>,
    ) -> String {
        let mut records = self.file.records.clone();
        if let Err(reason) = outcome {
            for r in records.iter_mut().filter(|r| r.accepted()) {
                r.rejected = Some(format!("not confirmed by the destinations: {reason}"));
            }
        }
        transforms::hl7v2::mfk::mfk_from_ack(
            ack,
            &header.delimiters,
            self.mfi.as_deref(),
            &records,
            &hl7_timestamp(chrono::Utc::now()),
        )
    }

    /// The NAK when no record could be posted: the first record's error decides the HL7
    /// error code. `None` when at least one record was accepted (the MFAs name the others).
    fn nak(&self) -> Option<Nak> {
        use transforms::from_v2::MappingError as E;
        if self.file.records.iter().any(|r| r.accepted()) {
            return None;
        }
        let first = self.file.records.first();
        let code = match first.and_then(|r| r.error.as_ref()) {
            Some(E::Missing { .. }) | None => ErrorCode::RequiredFieldMissing,
            Some(E::BadDateTime { .. } | E::BadNumber { .. }) => ErrorCode::DataType,
            Some(E::UnknownCode { .. }) => ErrorCode::TableValueNotFound,
        };
        let reason = match first.and_then(|r| r.rejected.as_deref()) {
            Some(why) if self.file.records.len() == 1 => format!("the record was rejected: {why}"),
            Some(why) => format!(
                "none of the {} records could be posted; the first: {why}",
                self.file.records.len()
            ),
            None => "the master file has no record (MFE)".to_owned(),
        };
        Some(Nak::new(code, reason))
    }
}

/// Reads the records of an MFN (M02, M04, M05); `None` when the message is not one of the
/// master files Switchboard maps (it is then answered as any other message).
fn master_file_outcome(raw: &[u8], charset_name: &str) -> Option<MasterFileAnswer> {
    let text = transforms::hl7v2::charset::decode_lossy(raw, charset_name);
    let msg = transforms::hl7v2::access::V2Message::parse(&text).ok()?;
    match transforms::v2_to_event(&msg) {
        Ok(transforms::Mapped::MasterFile(file)) => Some(MasterFileAnswer {
            file: *file,
            mfi: msg.segment("MFI").map(|s| s.raw().to_owned()),
        }),
        _ => None,
    }
}

/// Unix milliseconds of an inbound message's receipt.
pub(crate) fn received_at_ms(inbound: &Inbound) -> u64 {
    inbound
        .received_at
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// The positive answer (code and text) to a message with `header`, stored as message `id`.
fn positive_ack(header: &MessageHeader, id: u64) -> (String, String) {
    let text = build_ack(
        Some(header),
        &Verdict::Accept,
        &AckParams {
            control_id: &id.to_string(),
            timestamp: &hl7_timestamp(chrono::Utc::now()),
        },
    );
    let code = Verdict::Accept.ack_code(Some(header)).as_str().to_string();
    let text = if should_answer(Some(header), &Verdict::Accept) {
        text
    } else {
        String::new()
    };
    (code, text)
}

/// Encodes an answer in the character set of the message it answers.
fn encode(text: &str, charset_name: &str) -> Vec<u8> {
    match Charset::from_name(charset_name) {
        Some(cs) => cs.encode(text).into_owned(),
        None => text.as_bytes().to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelConfig, Durability};
    use crate::store::Query;

    /// A channel `images` with no route, over a store in `dir`.
    fn ingest(dir: &std::path::Path) -> (ChannelIngest, Store) {
        ingest_with(dir, Durability::Os)
    }

    /// A channel `images` with no route, over a store in `dir` that commits with
    /// `durability`.
    fn ingest_with(dir: &std::path::Path, durability: Durability) -> (ChannelIngest, Store) {
        let metrics = Metrics::new("t");
        let store = Store::open(dir, durability, &metrics).expect("open");
        let config: ChannelConfig = toml::from_str(
            "name = \"images\"\n[source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n",
        )
        .expect("channel");
        let loaded = LoadedChannel {
            config,
            file: "images.toml".into(),
            charset_fallback: Charset::Ascii,
        };
        let hub = crate::delivery::Hub::new(
            store.clone(),
            metrics.clone(),
            Default::default(),
            tokio_util::sync::CancellationToken::new(),
        );
        let pipeline = Arc::new(Pipeline::new(
            Default::default(),
            hub,
            store.clone(),
            metrics.clone(),
        ));
        (
            ChannelIngest::new(&loaded, store.clone(), metrics, "v1", pipeline),
            store,
        )
    }

    async fn send(ingest: &ChannelIngest, control_id: &str, dedup: bool) -> Reply {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ingest
            .handle(Inbound {
                payload: Payload::Record {
                    format: channels::source::RecordFormat::Dicom,
                    message_type: "study_available".into(),
                    control_id: control_id.into(),
                    body: Bytes::from_static(b"{\"study_instance_uid\":\"1.2.3\"}"),
                    dedup,
                },
                peer: "127.0.0.1:104".parse().expect("addr"),
                received_at: SystemTime::now(),
                reply: tx,
            })
            .await;
        rx.await.expect("answered")
    }

    #[tokio::test]
    async fn a_record_that_names_what_it_says_is_stored_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, store) = ingest(dir.path());
        let first = send(&ingest, "STUDY1", true).await;
        assert_eq!(first.disposition, Disposition::Accepted);
        // The same announcement again (a crash before it was marked announced): answered
        // as accepted, naming the first, and neither stored nor routed again.
        let again = send(&ingest, "STUDY1", true).await;
        assert_eq!(again.disposition, Disposition::Accepted);
        assert_eq!(again.message_id, first.message_id);
        let other = send(&ingest, "STUDY2", true).await;
        assert_ne!(other.message_id, first.message_id);
        // Records without the flag are each stored.
        send(&ingest, "OBJ1", false).await;
        send(&ingest, "OBJ1", false).await;
        let stored = store
            .list(&Query {
                channel: Some("images".into()),
                limit: 100,
                ..Query::default()
            })
            .expect("list");
        let controls: Vec<&str> = stored.iter().map(|r| r.control_id.as_str()).collect();
        assert_eq!(controls.len(), 4, "{controls:?}");
        assert_eq!(controls.iter().filter(|c| **c == "STUDY1").count(), 1);
    }

    /// Sends HL7 v2 `text` (segments separated by CR) as an MLLP source would.
    async fn send_hl7(ingest: &ChannelIngest, text: &str) -> Reply {
        let (tx, rx) = tokio::sync::oneshot::channel();
        ingest
            .handle(Inbound {
                payload: Payload::Hl7v2(Bytes::from(text.replace('\n', "\r"))),
                peer: "127.0.0.1:2575".parse().expect("addr"),
                received_at: SystemTime::now(),
                reply: tx,
            })
            .await;
        rx.await.expect("answered")
    }

    fn ack_text(reply: &Reply) -> String {
        String::from_utf8_lossy(reply.body.as_deref().expect("an ACK")).replace('\r', "\n")
    }

    const ADT_A04: &str = "MSH|^~\\&|HIS|RUH|||20260615103000||ADT^A04|MIN-A04|P|2.5\n\
        EVN|A04|20260615103000\n\
        PID|1||MRN-100234^^^HIS^MR||Haddad^Layla||19880312|F\n\
        PV1|1|O\n";

    /// The AA comes only once the message is written and a group commit (flush and
    /// fdatasync) covered it: when the answer arrives the fsync has happened and the record
    /// and the exact bytes are in the store.
    #[tokio::test]
    async fn a_message_is_stored_and_committed_before_its_aa() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, store) = ingest_with(dir.path(), Durability::Fsync);
        let fsyncs = ingest.metrics.store_fsyncs.get();
        let reply = send_hl7(&ingest, ADT_A04).await;
        assert_eq!(reply.disposition, Disposition::Accepted);
        let ack = ack_text(&reply);
        assert!(ack.contains("MSA|AA|MIN-A04"), "{ack}");
        assert!(
            ingest.metrics.store_fsyncs.get() > fsyncs,
            "answered before a commit covered the message"
        );
        let id = reply.message_id.expect("stored");
        let rec = store.get(id).expect("get").expect("record");
        assert_eq!(rec.control_id, "MIN-A04");
        assert_eq!(rec.message_type, "ADT^A04");
        assert_eq!(rec.ack_code, "AA");
        assert_ne!(rec.status, Status::Rejected);
        assert_eq!(
            store.raw(id).expect("raw").expect("bytes"),
            ADT_A04.replace('\n', "\r").into_bytes()
        );
    }

    /// A message whose body is malformed is answered AE with an ERR segment that names the
    /// problem, and is stored as rejected with the same reason: nothing vanishes.
    #[tokio::test]
    async fn a_bad_message_gets_ae_with_err_and_is_stored_with_its_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, store) = ingest(dir.path());
        let bad = "MSH|^~\\&|HIS|RUH|||20260615103000||ADT^A04|BAD-1|P|2.5\n\
            EVN|A04|20260615103000\n\
            PIDX|1\n";
        let reply = send_hl7(&ingest, bad).await;
        assert!(
            matches!(reply.disposition, Disposition::Rejected(_)),
            "{:?}",
            reply.disposition
        );
        let ack = ack_text(&reply);
        assert!(ack.contains("MSA|AE|BAD-1"), "{ack}");
        let err = ack
            .lines()
            .find(|l| l.starts_with("ERR|"))
            .unwrap_or_else(|| panic!("no ERR segment: {ack}"));
        assert!(err.contains("100"), "{err}");
        assert!(err.contains("segment 3 has no valid segment id"), "{err}");
        let id = reply.message_id.expect("stored although rejected");
        let rec = store.get(id).expect("get").expect("record");
        assert_eq!(rec.status, Status::Rejected);
        assert_eq!(rec.ack_code, "AE");
        assert!(
            rec.errors
                .iter()
                .any(|e| e.contains("segment 3 has no valid segment id")),
            "{:?}",
            rec.errors
        );
        assert!(store.raw(id).expect("raw").is_some());
    }

    /// A store that refuses writes (less free disk space than the reserve) gets AR with
    /// ERR-3 207, never an AA, and no record is claimed.
    #[tokio::test]
    async fn a_store_that_refuses_the_write_gets_ar_207_never_aa() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (ingest, store) = ingest(dir.path());
        store.set_min_free_bytes(u64::MAX);
        let reply = send_hl7(&ingest, ADT_A04).await;
        assert!(
            !matches!(reply.disposition, Disposition::Accepted),
            "{:?}",
            reply.disposition
        );
        let ack = ack_text(&reply);
        assert!(ack.contains("MSA|AR|MIN-A04"), "{ack}");
        assert!(!ack.contains("MSA|AA"), "{ack}");
        let err = ack
            .lines()
            .find(|l| l.starts_with("ERR|"))
            .unwrap_or_else(|| panic!("no ERR segment: {ack}"));
        assert!(err.contains("207"), "{err}");
        assert_eq!(reply.message_id, None);
        store.set_min_free_bytes(0);
        let stored = store
            .list(&Query {
                channel: Some("images".into()),
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert!(stored.is_empty(), "{stored:?}");
    }

    /// What a test subscriber keeps of one event: its message and fields, and the spans it
    /// was logged in (root first) with theirs.
    #[derive(Debug, Clone)]
    struct Seen {
        message: String,
        fields: Vec<(String, String)>,
        spans: Vec<(String, Vec<(String, String)>)>,
    }

    /// A span's fields as recorded so far, kept in its extensions.
    struct SpanFields(Vec<(String, String)>);

    /// Reads fields as text (strings without quotes).
    struct Fields<'a>(&'a mut Vec<(String, String)>);

    impl tracing::field::Visit for Fields<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.push((field.name().to_owned(), value.to_owned()));
        }

        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.push((field.name().to_owned(), format!("{value:?}")));
        }
    }

    /// A `tracing` layer that keeps every event with the spans it was logged in.
    struct Capture(Arc<std::sync::Mutex<Vec<Seen>>>);

    impl<S> tracing_subscriber::Layer<S> for Capture
    where
        S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    {
        fn on_new_span(
            &self,
            attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = Vec::new();
            attrs.record(&mut Fields(&mut fields));
            if let Some(span) = ctx.span(id) {
                span.extensions_mut().insert(SpanFields(fields));
            }
        }

        fn on_record(
            &self,
            id: &tracing::span::Id,
            values: &tracing::span::Record<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            if let Some(span) = ctx.span(id) {
                if let Some(SpanFields(fields)) = span.extensions_mut().get_mut::<SpanFields>() {
                    values.record(&mut Fields(fields));
                }
            }
        }

        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            ctx: tracing_subscriber::layer::Context<'_, S>,
        ) {
            let mut fields = Vec::new();
            event.record(&mut Fields(&mut fields));
            let message = fields
                .iter()
                .position(|(k, _)| k == "message")
                .map(|at| fields.remove(at).1)
                .unwrap_or_default();
            let spans = ctx
                .event_scope(event)
                .map(|scope| {
                    scope
                        .from_root()
                        .map(|span| {
                            let fields = span
                                .extensions()
                                .get::<SpanFields>()
                                .map(|f| f.0.clone())
                                .unwrap_or_default();
                            (span.name().to_owned(), fields)
                        })
                        .collect()
                })
                .unwrap_or_default();
            if let Ok(mut seen) = self.0.lock() {
                seen.push(Seen {
                    message,
                    fields,
                    spans,
                });
            }
        }
    }

    /// The fields of the `message` span an event was logged in; `None` outside one.
    fn message_span_of(seen: &Seen) -> Option<std::collections::HashMap<&str, &str>> {
        seen.spans
            .iter()
            .find(|(name, _)| name == "message")
            .map(|(_, fields)| {
                fields
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect()
            })
    }

    /// One span per message: a line logged while the message is received and a line logged
    /// by the delivery worker that delivers it are both in a span named `message` with the
    /// message's id and channel (and, at receipt, its type), so a search for the id finds
    /// both; the lines do not repeat the id themselves.
    #[tokio::test]
    async fn the_lines_of_a_message_s_receipt_and_delivery_carry_its_id_and_channel() {
        let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
        let _subscriber =
            tracing::subscriber::set_default(tracing_subscriber::layer::SubscriberExt::with(
                tracing_subscriber::registry(),
                Capture(seen.clone()),
            ));
        let dir = tempfile::tempdir().expect("tempdir");
        let folder = dir.path().join("out");
        let metrics = Metrics::new("t");
        let store = Store::open(&dir.path().join("data"), Durability::Os, &metrics).expect("open");
        // Answered once delivered, so the delivery's lines are written when the answer comes.
        let config: ChannelConfig = toml::from_str(&format!(
            "name = \"lab\"\nack = \"on_delivery\"\n\
             [source]\ntype = \"mllp_listener\"\nlisten = \"127.0.0.1:0\"\n\
             [[route]]\nto = [\"files\"]\n\
             [[destination]]\nname = \"files\"\ntype = \"file\"\nfolder = {:?}\n",
            folder.display().to_string()
        ))
        .expect("channel");
        let router = crate::routing::Router::compile("lab", &config.routes, &config.destinations)
            .expect("routes");
        let hub = crate::delivery::Hub::new(
            store.clone(),
            metrics.clone(),
            Default::default(),
            tokio_util::sync::CancellationToken::new(),
        );
        hub.start_channel("lab", &config.destinations)
            .expect("destinations");
        let pipeline = Arc::new(Pipeline::new(
            [("lab".to_string(), router)].into(),
            hub.clone(),
            store.clone(),
            metrics.clone(),
        ));
        let loaded = LoadedChannel {
            config,
            file: "lab.toml".into(),
            charset_fallback: Charset::Ascii,
        };
        let ingest = ChannelIngest::new(&loaded, store.clone(), metrics, "v1", pipeline);
        let reply = send_hl7(&ingest, ADT_A04).await;
        let ack = ack_text(&reply);
        assert!(ack.contains("MSA|AA|MIN-A04"), "{ack}");
        let id = reply.message_id.expect("stored").to_string();
        assert!(
            folder.join(format!("{id}-files.hl7")).exists(),
            "not delivered"
        );
        hub.stop_channel("lab").await;

        let seen = seen.lock().expect("seen").clone();
        let line = |message: &str| {
            seen.iter()
                .find(|s| s.message == message)
                .unwrap_or_else(|| panic!("no line {message:?} in {seen:#?}"))
        };
        let received = line("Message received.");
        let span = message_span_of(received)
            .unwrap_or_else(|| panic!("received outside a message span: {received:?}"));
        assert_eq!(span.get("message_id"), Some(&id.as_str()), "{span:?}");
        assert_eq!(span.get("channel"), Some(&"lab"), "{span:?}");
        assert_eq!(span.get("message_type"), Some(&"ADT_A04"), "{span:?}");
        let delivered = line("Delivered.");
        let span = message_span_of(delivered)
            .unwrap_or_else(|| panic!("delivered outside a message span: {delivered:?}"));
        assert_eq!(span.get("message_id"), Some(&id.as_str()), "{span:?}");
        assert_eq!(span.get("channel"), Some(&"lab"), "{span:?}");
        assert_eq!(span.get("message_type"), Some(&"ADT_A04"), "{span:?}");
        for s in [received, delivered] {
            assert!(
                !s.fields
                    .iter()
                    .any(|(k, _)| k == "message_id" || k == "id" || k == "channel"),
                "the line repeats what its span says: {s:?}"
            );
        }
    }
}
