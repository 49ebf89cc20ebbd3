//! A `type = "latrexa"` channel: Latrexa online bookings written into the HIS, as the Latrexa
//! Sync Agent does it (seed `latrexa-sync-agent.txt`), with the protocol in
//! [`channels::clinic_api::latrexa_bookings`] and the id mapping in [`crate::store::id_map`].
//!
//! Three tasks per channel:
//! - the **intake** takes bookings from the SignalR hub in real time and polls
//!   `GET .../pending` every `poll_interval_secs` whenever the hub is not connected (and once
//!   after every (re)connection, for what was missed meanwhile);
//! - the **worker** handles one booking revision at a time, in the order received: store,
//!   SIU (or SRM^S01, `book_with = "srm"`) to the HIS, confirm or reject at Latrexa, each step
//!   retried with backoff while Latrexa or the HIS is unreachable (a booking is never given up
//!   for unavailability). A booking the HIS accepted without naming its appointment id waits
//!   in the store (`HisAccepted` without an id) and the worker goes on with the next; every
//!   second it confirms the waiting ones whose id was learnt meanwhile;
//! - the **heartbeat** posts `POST .../heartbeat` every `heartbeat_interval_secs`.
//!
//! While an operator has the channel paused (`POST /api/channels/{name}/pause`), the intake
//! takes nothing: no `pending` poll, and bookings the hub pushes are left at Latrexa (still
//! pending there); the first poll tick after the resume fetches them. The worker finishes
//! bookings already taken, and the heartbeat goes on.
//!
//! # The state machine of one booking revision
//!
//! A revision is a booking as Latrexa sent it, identified by its `version` (or, without one,
//! by a hash of its content). Its entry in `id_map` moves, one durable write per arrow
//! (each write is one sled transaction with the message record, then a group commit):
//!
//! ```text
//!  (new revision) --store--> Received --HIS AA--> HisAccepted --HIS id known,--> Confirmed
//!                                                               confirm 2xx
//!                               |                      \--confirm 4xx--> Failed
//!                               \--HIS AE/AR--> Refused --reject 2xx--> Rejected
//!  (unusable booking) ---------------------------^      \--reject 4xx--> Failed
//! ```
//!
//! What a crash at each point leaves, and what the restart does (unsettled entries are taken
//! up again before anything new):
//! - before the store write is durable: nothing was sent to the HIS; Latrexa still lists the
//!   booking as pending, so it arrives again and is handled as new.
//! - in `Received` (the SIU may or may not have reached the HIS, its answer was not recorded):
//!   the **same** SIU is sent again, same MSH-10, so a HIS that recognises resends takes it as
//!   one. This is the only window in which the HIS can see a booking twice, and it needs a
//!   crash between the HIS's answer and our write of it.
//! - in `HisAccepted`: confirmed without a second SIU, once the HIS id is known (it waits
//!   for it across the restart).
//! - in `Refused`: rejected without a second SIU.
//! - after confirm/reject was answered but before `Confirmed`/`Rejected` was written:
//!   the call is made again; Latrexa answers it idempotently.
//! - in a settled state: nothing. A settled revision that Latrexa still lists (our answer was
//!   lost) is answered again (confirm or reject), never sent to the HIS again.
//!
//! A newer revision of a booking the HIS already accepted goes as SIU^S13 (or S15 for a
//! cancellation), even when Latrexa still calls it a `create`; only a booking the HIS never
//! accepted goes as S12 (SRM^S01). An older revision than the one in the map (a late hub
//! message) is dropped.
//!
//! The id confirmed as `hisAppointmentId` is always one the HIS named, never the Latrexa id:
//! SCH-2 of its answer (the SRR^S01 of a booking request, or an ACK that carries an SCH
//! segment), else SCH-2 of its next SIU naming the booking in SCH-1, which a Latrexa upload
//! destination with `bookings_channel` records in this channel's entry
//! ([`Store::appointment_link`], the one model both directions share, one read-modify-write
//! transaction over the id map and the ledger). The worker's own writes of an
//! entry merge with what is stored ([`Store::advance_booking`]), so an id learnt meanwhile is
//! never overwritten by the worker's older copy. Until the id is known the booking waits
//! (see the worker above); after `his_id_wait_secs` the wait is reported (warning, record
//! status `retrying` with the error "no HIS appointment id yet"). Later S13/S15 carry the
//! Latrexa id in SCH-1 and the HIS id, once known, in SCH-2.
//!
//! Each revision is a message record (`format = "latrexa"`, `message_type = "booking.create"`
//! / `booking.reschedule` / `booking.cancel`, control id = the SIU's MSH-10, raw = the booking
//! JSON, ack = the HIS's answer), so it shows in the admin API and console: `received` and
//! `retrying` while in flight, `delivered` once confirmed, `rejected` once rejected (with the
//! reason), `failed` when Latrexa refused our answer. A booking that cannot be read is stored
//! once as `rejected` with the reason.
//!
//! While the free-space reserve refuses store writes (`crate::store::space`), the worker takes
//! no step of a booking (no SIU to the HIS, no confirm or reject: their outcome could not be
//! recorded) and retries a write it could not make, holding the outcome in memory; it goes on
//! by itself once space is back. Retention keeps the record of every revision that is not
//! confirmed or rejected at Latrexa yet.

use crate::delivery::{backoff, now_ms};
use crate::metrics::Metrics;
use crate::store::id_map::{BookingEntry, BookingState, RecordChange};
use crate::store::{MessageRecord, Status, Store, StoreError};
use channels::clinic_api::latrexa_bookings::{
    run_hub, ApiError, BookWith, BookingInput, BookingsConfig, HubTiming, HubUpdate, LatrexaApi,
};
use channels::destination::DeliveryConfig;
use channels::mllp::sender::MllpSender;
use channels::source::BuildError;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use transforms::dest::latrexa::{
    BookingAction, ConfirmRequest, Heartbeat, PendingBooking, RejectRequest,
};
use transforms::from_json::latrexa::siu_from_booking;
use transforms::hl7v2::ack::AckCode;
use transforms::hl7v2::header::MessageHeader;
use transforms::model::Timestamp;
use transforms::to_v2::SiuHeader;

/// The booking as the HIS is told about it: `his_id` as its HIS appointment id, and, unless
/// it is a cancellation, a create when the HIS does not have it (`his_has_it`) and a
/// reschedule when it does, whatever Latrexa calls it.
pub(crate) fn for_his(
    booking: &PendingBooking,
    his_id: Option<String>,
    his_has_it: bool,
) -> PendingBooking {
    let mut for_his = booking.clone();
    for_his.his_appointment_id = his_id;
    if for_his.action != BookingAction::Cancel {
        for_his.action = if his_has_it {
            BookingAction::Reschedule
        } else {
            BookingAction::Create
        };
    }
    for_his
}

/// MSH-3..6, 7, 10 and 11 of the message sent to the HIS: `[source.his]`'s names, `now`,
/// `control_id`.
pub(crate) fn siu_header(
    cfg: &BookingsConfig,
    control_id: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> SiuHeader {
    let now = now.format("%Y-%m-%dT%H:%M:%S+00:00").to_string();
    let his = &cfg.his;
    SiuHeader {
        sending_application: his.sending_application.clone(),
        sending_facility: his.sending_facility.clone(),
        receiving_application: his.receiving_application.clone(),
        receiving_facility: his.receiving_facility.clone(),
        message_time: Timestamp::parse_iso(&now)
            .unwrap_or_else(|_| Timestamp::date(2000, 1, 1).expect("a valid date")),
        control_id: control_id.to_string(),
        processing_id: his.processing_id.clone(),
    }
}

/// The HL7 v2 message that tells the HIS about `b` (see [`for_his`]): SIU^S12/S13/S15, or
/// SRM^S01 for a new booking with `book_with = "srm"`.
///
/// # Errors
///
/// Why the booking cannot be written as SIU (a field path, never patient data).
pub(crate) fn his_request(
    cfg: &BookingsConfig,
    b: &PendingBooking,
    header: &SiuHeader,
) -> Result<String, transforms::from_json::latrexa::BookingError> {
    let siu = siu_from_booking(b, header)?;
    Ok(
        if b.action == BookingAction::Create && cfg.book_with == BookWith::Srm {
            transforms::to_v2::srm_s01_from_siu(&siu)
        } else {
            siu
        },
    )
}

/// Where a booking came from (the `source` label of the received metric).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// Pushed by the hub.
    Hub,
    /// Listed by a fetch of the pending bookings that started at this Unix millisecond.
    Poll(u64),
}

impl Via {
    fn label(self) -> &'static str {
        match self {
            Via::Hub => "hub",
            Via::Poll(_) => "poll",
        }
    }
}

/// Last known state of the HIS link: unknown, up, down.
const HIS_UNKNOWN: u8 = 0;
const HIS_UP: u8 = 1;
const HIS_DOWN: u8 = 2;

/// Longest reason kept from a HIS answer.
const MAX_REASON: usize = 200;

/// How often a write the free-space reserve refused is tried again.
const RESERVE_RECHECK: Duration = Duration::from_secs(1);

/// How often the worker looks whether the HIS id of a booking waiting for it was learnt.
const WAITING_RECHECK: Duration = Duration::from_secs(1);

/// The error a booking waiting too long for its HIS id gets on its record.
const NO_HIS_ID: &str = "no HIS appointment id yet: the confirm waits for the HIS to name it";

struct Agent {
    channel: String,
    cfg: BookingsConfig,
    api: LatrexaApi,
    his: MllpSender,
    his_state: AtomicU8,
    /// Whether a booking may be waiting for its HIS id (so `waiting` scans the id map only
    /// then): true at start, set again whenever a booking parks.
    some_waiting: AtomicBool,
    store: Store,
    metrics: Metrics,
    config_version: String,
    retry: DeliveryConfig,
    shutdown: CancellationToken,
    /// Set while an operator has the channel paused: no bookings are taken (see `intake`).
    paused: channels::source::PauseFlag,
}

/// Starts the channel's tasks; the handle ends once all of them stopped after `shutdown`.
///
/// # Errors
///
/// [`BuildError::Config`] when the API key cannot be read or the HTTP client cannot be built.
pub fn start(
    cfg: &BookingsConfig,
    channel: &str,
    store: Store,
    metrics: Metrics,
    config_version: &str,
    shutdown: CancellationToken,
    paused: channels::source::PauseFlag,
) -> Result<JoinHandle<()>, BuildError> {
    let key = cfg
        .api_key
        .resolve()
        .map_err(|m| BuildError::Config(format!("source.api_key: {m}")))?;
    let api = LatrexaApi::new(
        &cfg.base_url,
        key,
        &cfg.organization_code,
        Duration::from_secs(cfg.request_timeout_secs),
    )
    .map_err(BuildError::Config)?;
    for via in [Via::Hub, Via::Poll(0)] {
        metrics
            .latrexa_received
            .with_label_values(&[channel, via.label()]);
    }
    metrics.latrexa_confirmed.with_label_values(&[channel]);
    metrics.latrexa_rejected.with_label_values(&[channel]);
    metrics
        .latrexa_hub_connected
        .with_label_values(&[channel])
        .set(0);
    for outcome in ["sent", "failed"] {
        metrics
            .latrexa_heartbeats
            .with_label_values(&[channel, outcome]);
    }
    let agent = Arc::new(Agent {
        channel: channel.to_string(),
        his: MllpSender::build(cfg.his.sender_config())
            .map_err(|m| BuildError::Config(format!("source.his: {m}")))?,
        his_state: AtomicU8::new(HIS_UNKNOWN),
        some_waiting: AtomicBool::new(true),
        retry: DeliveryConfig {
            backoff_base_ms: cfg.retry_base_ms,
            backoff_max_ms: cfg.retry_max_ms,
            ..DeliveryConfig::default()
        },
        cfg: cfg.clone(),
        api,
        store,
        metrics,
        config_version: config_version.to_string(),
        shutdown,
        paused,
    });
    info!(channel = %agent.channel, url = %agent.api.base_url(), his = %agent.cfg.his.address, hub = agent.cfg.hub, "Latrexa bookings channel started.");
    let (work_tx, work_rx) = mpsc::channel(64);
    let worker = tokio::spawn(agent.clone().work(work_rx));
    let heartbeat = tokio::spawn(agent.clone().heartbeats());
    let intake = tokio::spawn(agent.intake(work_tx));
    Ok(tokio::spawn(async move {
        let _ = intake.await;
        let _ = worker.await;
        let _ = heartbeat.await;
    }))
}

fn fingerprint(bytes: &[u8]) -> String {
    hex::encode(&Sha256::digest(bytes)[..12])
}

fn message_type(action: BookingAction) -> &'static str {
    match action {
        BookingAction::Create => "booking.create",
        BookingAction::Reschedule => "booking.reschedule",
        BookingAction::Cancel => "booking.cancel",
    }
}

fn clip(text: &str) -> String {
    text.chars().take(MAX_REASON).collect()
}

impl Agent {
    /// Hub and polling, until shutdown; bookings go to the worker in the order received.
    async fn intake(self: Arc<Self>, work: mpsc::Sender<(BookingInput, Via)>) {
        let (hub_tx, mut hub_rx) = mpsc::channel(64);
        let hub = self.cfg.hub.then(|| {
            tokio::spawn(run_hub(
                self.api.clone(),
                HubTiming {
                    reconnect_max: Duration::from_secs(self.cfg.hub_reconnect_max_secs),
                    timeout: Duration::from_secs(self.cfg.hub_timeout_secs),
                    ping: Duration::from_secs(15),
                },
                hub_tx,
                self.shutdown.clone(),
            ))
        });
        let connected = self
            .metrics
            .latrexa_hub_connected
            .with_label_values(&[&self.channel]);
        let mut hub_up = false;
        let mut hub_open = hub.is_some();
        let mut poll = tokio::time::interval(Duration::from_secs(self.cfg.poll_interval_secs));
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut poll_failing = false;
        // Bookings the hub offered while the channel was paused: a poll after the resume
        // takes them (Latrexa lists a booking as pending until it is confirmed or rejected).
        let mut missed_while_paused = false;
        loop {
            let poll_now = tokio::select! {
                () = self.shutdown.cancelled() => break,
                u = hub_rx.recv(), if hub_open => match u {
                    Some(HubUpdate::Connected) => {
                        hub_up = true;
                        connected.set(1);
                        true
                    }
                    Some(HubUpdate::Disconnected(_)) => {
                        let was_up = hub_up;
                        hub_up = false;
                        connected.set(0);
                        if was_up {
                            poll.reset();
                        }
                        was_up
                    }
                    Some(HubUpdate::Booking(_)) if self.paused.is_paused() => {
                        missed_while_paused = true;
                        false
                    }
                    Some(HubUpdate::Booking(input)) => {
                        if !self.hand_over(&work, input, Via::Hub).await {
                            break;
                        }
                        false
                    }
                    None => {
                        hub_open = false;
                        false
                    }
                },
                _ = poll.tick() => !hub_up || missed_while_paused,
            };
            if !poll_now {
                continue;
            }
            if self.paused.is_paused() {
                // Paused by an operator: nothing is fetched; a poll follows the resume.
                missed_while_paused = true;
                continue;
            }
            missed_while_paused = false;
            let fetched_at = now_ms();
            match self.api.pending().await {
                Ok(items) => {
                    if poll_failing {
                        info!(channel = %self.channel, "Latrexa pending bookings can be fetched again.");
                        poll_failing = false;
                    }
                    debug!(channel = %self.channel, count = items.len(), "Pending bookings fetched.");
                    for input in items {
                        if !self.hand_over(&work, input, Via::Poll(fetched_at)).await {
                            return;
                        }
                    }
                }
                Err(e) => {
                    if !poll_failing {
                        warn!(channel = %self.channel, error = %e, "Cannot fetch pending bookings from Latrexa; will try again.");
                    }
                    poll_failing = true;
                }
            }
        }
        connected.set(0);
        drop(hub_rx);
        if let Some(h) = hub {
            let _ = h.await;
        }
    }

    /// Gives one input to the worker; false on shutdown.
    async fn hand_over(
        &self,
        work: &mpsc::Sender<(BookingInput, Via)>,
        input: BookingInput,
        via: Via,
    ) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            r = work.send((input, via)) => r.is_ok(),
        }
    }

    /// Takes up what a previous run left unsettled, then handles bookings until shutdown.
    async fn work(self: Arc<Self>, mut rx: mpsc::Receiver<(BookingInput, Via)>) {
        match self.store.unsettled_bookings(&self.channel) {
            Ok(open) => {
                if !open.is_empty() {
                    info!(channel = %self.channel, count = open.len(), "Taking up bookings left unsettled.");
                }
                for entry in open {
                    if !self.drive(entry).await {
                        return;
                    }
                }
            }
            Err(e) => {
                warn!(channel = %self.channel, error = %e, "Cannot read the id map; unsettled bookings wait for Latrexa to list them again.")
            }
        }
        let mut recheck = tokio::time::interval(WAITING_RECHECK);
        recheck.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut reported: HashSet<u64> = HashSet::new();
        loop {
            let next = tokio::select! {
                () = self.shutdown.cancelled() => return,
                n = rx.recv() => n,
                _ = recheck.tick() => {
                    if !self.waiting(&mut reported).await {
                        return;
                    }
                    continue;
                }
            };
            let Some((input, via)) = next else { return };
            let goes_on = match input {
                BookingInput::Booking(b) => self.take(*b, via).await,
                BookingInput::Invalid { raw, reason } => self.store_invalid(&raw, &reason).await,
            };
            if !goes_on {
                return;
            }
        }
    }

    /// Takes up the bookings the HIS accepted that wait for its appointment id: confirms those
    /// whose id was learnt meanwhile (the delivery worker reading the HIS's own SIU), reports
    /// once those waiting longer than `his_id_wait_secs`. False on shutdown.
    async fn waiting(&self, reported: &mut HashSet<u64>) -> bool {
        if !self.some_waiting.swap(false, Ordering::Relaxed) {
            return true;
        }
        let open = match self.store.unsettled_bookings(&self.channel) {
            Ok(open) => open,
            Err(e) => {
                debug!(channel = %self.channel, error = %e, "Cannot read the id map; looking again later.");
                self.some_waiting.store(true, Ordering::Relaxed);
                return true;
            }
        };
        for entry in open {
            if entry.state != BookingState::HisAccepted {
                continue;
            }
            // Still waiting, or about to be confirmed: look again at the next tick (a confirm
            // that parks or fails sets it too).
            self.some_waiting.store(true, Ordering::Relaxed);
            if entry.his_appointment_id.is_some() {
                reported.remove(&entry.message_id);
                if !self.drive(entry).await {
                    return false;
                }
                continue;
            }
            let waited_ms = now_ms().saturating_sub(entry.updated_at_ms);
            let over = waited_ms >= self.cfg.his_id_wait_secs.saturating_mul(1000);
            if over && reported.insert(entry.message_id) {
                warn!(channel = %self.channel, latrexa_id = %entry.latrexa_id, control_id = %entry.control_id, waited_secs = waited_ms / 1000, "The HIS accepted a booking but has not named its appointment id; the confirm at Latrexa waits for it.");
                let change = RecordChange {
                    status: Some(Status::Retrying),
                    error: Some(NO_HIS_ID.into()),
                    ..RecordChange::default()
                };
                let channel = self.channel.clone();
                if !self
                    .persist(move |s| s.advance_booking(&channel, &entry, &change))
                    .await
                {
                    return false;
                }
            }
        }
        true
    }

    /// Waits before attempt `attempt + 1`; false on shutdown.
    async fn pause(&self, attempt: u32) -> bool {
        self.wait(backoff(&self.retry, attempt, None)).await
    }

    /// Runs a store write and its commit until both succeed; false on shutdown. A write the
    /// free-space reserve refuses is tried again every second (nothing was written).
    async fn persist(&self, write: impl Fn(&Store) -> Result<(), StoreError>) -> bool {
        let mut attempt = 0;
        loop {
            let done = match write(&self.store) {
                Ok(()) => self.store.commit().await,
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => return true,
                Err(e) => {
                    attempt += 1;
                    if attempt == 1 {
                        warn!(channel = %self.channel, error = %e, "Cannot write a booking to the store; will try again.");
                    } else {
                        debug!(channel = %self.channel, attempt, error = %e, "Cannot write a booking to the store yet.");
                    }
                    let waited = if matches!(e, StoreError::DiskFull { .. }) {
                        self.wait(RESERVE_RECHECK).await
                    } else {
                        self.pause(attempt).await
                    };
                    if !waited {
                        return false;
                    }
                }
            }
        }
    }

    /// Waits `d`; false on shutdown.
    async fn wait(&self, d: Duration) -> bool {
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(d) => true,
        }
    }

    /// Waits while the free-space reserve refuses store writes: the outcome of the next step
    /// (the HIS's answer, Latrexa's) could not be recorded. False on shutdown.
    async fn wait_for_space(&self) -> bool {
        let mut waited = false;
        while self.store.reserve_available().is_err() {
            if !waited {
                warn!(channel = %self.channel, "Free disk space is under the reserve; bookings wait until it is back.");
                waited = true;
            }
            if !self.wait(RESERVE_RECHECK).await {
                return false;
            }
        }
        if waited {
            info!(channel = %self.channel, "Free disk space is back above the reserve; bookings go on.");
        }
        true
    }

    /// A new item from Latrexa: decide what it is against the id map and act.
    async fn take(&self, booking: PendingBooking, via: Via) -> bool {
        let raw = serde_json::to_vec(&booking).unwrap_or_default();
        let print = fingerprint(&raw);
        let existing = match self.store.booking_entry(&self.channel, &booking.id) {
            Ok(e) => e,
            Err(e) => {
                // Without the map we cannot know whether the HIS has it: leave it pending at
                // Latrexa; it is listed again at the next poll.
                warn!(channel = %self.channel, latrexa_id = %booking.id, error = %e, "Cannot read the id map; booking left for later.");
                return true;
            }
        };
        if let Some(e) = existing {
            let known = &e.booking;
            if booking.version > 0 && known.version > booking.version {
                debug!(channel = %self.channel, latrexa_id = %booking.id, version = booking.version, "Older revision than the one handled; dropped.");
                return true;
            }
            let same = if booking.version > 0 {
                known.version == booking.version
            } else {
                e.fingerprint == print
            };
            if same {
                return self.again(e, via).await;
            }
            return self.new_revision(booking, raw, print, Some(e), via).await;
        }
        self.new_revision(booking, raw, print, None, via).await
    }

    /// A revision already taken arrives again.
    async fn again(&self, mut entry: BookingEntry, via: Via) -> bool {
        // Listed by a fetch that started after we settled it: Latrexa did not get our answer.
        let lost = matches!(via, Via::Poll(at) if at > entry.updated_at_ms);
        match &entry.state {
            BookingState::Confirmed if lost => {
                // Answer again, no SIU.
                entry.state = BookingState::HisAccepted;
            }
            BookingState::Rejected { reason } if lost => {
                entry.state = BookingState::Refused {
                    reason: reason.clone(),
                };
            }
            s if s.is_settled() => {
                debug!(channel = %self.channel, latrexa_id = %entry.latrexa_id, "Booking already settled.");
                return true;
            }
            _ => {}
        }
        debug!(channel = %self.channel, latrexa_id = %entry.latrexa_id, "Booking seen again; settling it without a new SIU.");
        self.drive(entry).await
    }

    async fn new_revision(
        &self,
        booking: PendingBooking,
        raw: Vec<u8>,
        print: String,
        previous: Option<BookingEntry>,
        via: Via,
    ) -> bool {
        let now = now_ms();
        let id = self.store.next_id(now);
        let control_id = id.to_string();
        // The id the HIS itself gave (learnt from its own SIU, see `crate::delivery`) wins over
        // the one Latrexa repeats from an earlier confirm.
        let his_id = previous
            .as_ref()
            .and_then(|p| p.his_appointment_id.clone())
            .or_else(|| booking.his_appointment_id.clone());
        // What the HIS needs is decided by what the HIS has, not by Latrexa's word for it: a
        // booking it accepted (known by the Latrexa id as placer id even while its own id is
        // not learnt yet) is changed with S13, never booked a second time.
        let his_has_it = his_id.is_some() || previous.as_ref().is_some_and(|p| p.his_accepted);
        let for_his = for_his(&booking, his_id.clone(), his_has_it);
        let header = siu_header(&self.cfg, &control_id, chrono::Utc::now());
        let (siu, state, error) = match his_request(&self.cfg, &for_his, &header) {
            Ok(text) => (text, BookingState::Received, None),
            Err(e) => {
                let reason = format!("booking cannot be written as SIU: {e}");
                (
                    String::new(),
                    BookingState::Refused {
                        reason: reason.clone(),
                    },
                    Some(reason),
                )
            }
        };
        let business_keys = transforms::from_json::latrexa::event_from_booking(&booking)
            .map(|e| crate::keys::keys_of_events(std::slice::from_ref(&e)))
            .unwrap_or_default();
        let record = MessageRecord {
            business_keys,
            dedup_key: String::new(),
            resent_from: None,
            id,
            channel: self.channel.clone(),
            received_at_ms: now,
            peer: format!("{} ({})", self.api.base_url(), via.label()),
            format: channels::source::RecordFormat::Latrexa.into(),
            message_type: message_type(for_his.action).into(),
            control_id: control_id.clone(),
            sending_application: "LATREXA".into(),
            sending_facility: self.cfg.organization_code.clone(),
            version: String::new(),
            charset: "utf-8".into(),
            size: raw.len(),
            truncated: false,
            status: Status::Received,
            ack_code: String::new(),
            ack: String::new(),
            errors: error.into_iter().collect(),
            config_version: self.config_version.clone(),
            deliveries: Vec::new(),
        };
        let entry = BookingEntry {
            latrexa_id: booking.id.clone(),
            his_appointment_id: his_id,
            his_accepted: his_has_it,
            booking,
            fingerprint: print,
            state,
            message_id: id,
            control_id,
            siu,
            updated_at_ms: now,
        };
        if !self.persist(|s| s.put_booking(&record, &raw, &entry)).await {
            return false;
        }
        self.metrics
            .latrexa_received
            .with_label_values(&[&self.channel, via.label()])
            .inc();
        info!(channel = %self.channel, latrexa_id = %entry.latrexa_id, id, control_id = %entry.control_id, via = via.label(), kind = %record.message_type, "Online booking received.");
        self.drive(entry).await
    }

    /// Moves `entry` until it is settled; false on shutdown (it is taken up at the next start).
    async fn drive(&self, mut entry: BookingEntry) -> bool {
        let mut attempt: u32 = 0;
        let mut marked_retrying = false;
        loop {
            if !entry.state.is_settled() && !self.wait_for_space().await {
                return false;
            }
            let step = match entry.state.clone() {
                BookingState::Received => self.send_to_his(&mut entry).await,
                BookingState::HisAccepted => self.confirm(&mut entry).await,
                BookingState::Refused { reason } => self.reject(&mut entry, &reason).await,
                BookingState::Confirmed
                | BookingState::Rejected { .. }
                | BookingState::Failed { .. } => return true,
            };
            match step {
                Step::Moved(change) => {
                    attempt = 0;
                    entry.updated_at_ms = now_ms();
                    let channel = self.channel.clone();
                    let e = entry.clone();
                    if !self
                        .persist(move |s| s.advance_booking(&channel, &e, &change))
                        .await
                    {
                        return false;
                    }
                    self.settled_metrics(&entry);
                }
                Step::Park => {
                    // Durable as `HisAccepted` already; `waiting` takes it up once the HIS id
                    // is learnt, and the next booking goes on meanwhile.
                    self.some_waiting.store(true, Ordering::Relaxed);
                    debug!(channel = %self.channel, latrexa_id = %entry.latrexa_id, control_id = %entry.control_id, "Booking waits for the HIS to name its appointment id.");
                    return true;
                }
                Step::Retry(reason) => {
                    attempt = attempt.saturating_add(1);
                    if attempt == 1 {
                        warn!(channel = %self.channel, latrexa_id = %entry.latrexa_id, control_id = %entry.control_id, error = %reason, "Booking step failed; will retry.");
                    } else {
                        debug!(channel = %self.channel, latrexa_id = %entry.latrexa_id, attempt, error = %reason, "Booking step failed again.");
                    }
                    if !marked_retrying {
                        marked_retrying = true;
                        let change = RecordChange {
                            status: Some(Status::Retrying),
                            error: Some(reason),
                            ..RecordChange::default()
                        };
                        let channel = self.channel.clone();
                        let e = entry.clone();
                        if !self
                            .persist(move |s| s.advance_booking(&channel, &e, &change))
                            .await
                        {
                            return false;
                        }
                    }
                    if !self.pause(attempt).await {
                        return false;
                    }
                }
            }
        }
    }

    fn settled_metrics(&self, entry: &BookingEntry) {
        match &entry.state {
            BookingState::Confirmed => {
                self.metrics
                    .latrexa_confirmed
                    .with_label_values(&[&self.channel])
                    .inc();
                info!(channel = %self.channel, latrexa_id = %entry.latrexa_id, control_id = %entry.control_id, "Booking written in the HIS and confirmed at Latrexa.");
            }
            BookingState::Rejected { reason } => {
                self.metrics
                    .latrexa_rejected
                    .with_label_values(&[&self.channel])
                    .inc();
                info!(channel = %self.channel, latrexa_id = %entry.latrexa_id, control_id = %entry.control_id, reason = %reason, "Booking refused by the HIS and rejected at Latrexa.");
            }
            BookingState::Failed { reason } => {
                warn!(channel = %self.channel, latrexa_id = %entry.latrexa_id, control_id = %entry.control_id, error = %reason, "Latrexa refused our answer for a booking; an operator has to look.");
            }
            BookingState::Received | BookingState::HisAccepted | BookingState::Refused { .. } => {}
        }
    }

    async fn send_to_his(&self, entry: &mut BookingEntry) -> Step {
        match self
            .his
            .exchange_answer(entry.siu.as_bytes(), &entry.control_id)
            .await
        {
            Err(e) => {
                self.his_state.store(HIS_DOWN, Ordering::Relaxed);
                Step::Retry(e.reason)
            }
            Ok((ack, answer)) => {
                self.his_state.store(HIS_UP, Ordering::Relaxed);
                let code = ack.code.as_str().to_string();
                let change_ack = Some((code.clone(), format!("MSA|{code}|{}", ack.control_id)));
                match ack.code {
                    AckCode::AA | AckCode::CA => {
                        // The HIS's own id when its answer names it (SRR^S01, or an ACK that
                        // carries SCH); otherwise the confirm waits for it (`confirm`).
                        if let Some(id) = his_id_of_answer(&answer, &entry.latrexa_id) {
                            entry.his_appointment_id = Some(id);
                        }
                        entry.his_accepted = true;
                        entry.state = BookingState::HisAccepted;
                        Step::Moved(RecordChange {
                            ack: change_ack,
                            ..RecordChange::default()
                        })
                    }
                    AckCode::AE | AckCode::AR | AckCode::CE | AckCode::CR => {
                        let reason = if ack.text.trim().is_empty() {
                            format!("HIS answered {code}")
                        } else {
                            clip(ack.text.trim())
                        };
                        entry.state = BookingState::Refused {
                            reason: reason.clone(),
                        };
                        Step::Moved(RecordChange {
                            ack: change_ack,
                            error: Some(format!("HIS answered {code}: {reason}")),
                            ..RecordChange::default()
                        })
                    }
                }
            }
        }
    }

    async fn confirm(&self, entry: &mut BookingEntry) -> Step {
        if entry.his_appointment_id.is_none() {
            // Learnt meanwhile from the HIS's own SIU (written by `crate::delivery`)?
            match self.store.booking_entry(&self.channel, &entry.latrexa_id) {
                Ok(Some(stored)) => entry.his_appointment_id = stored.his_appointment_id,
                Ok(None) => {}
                Err(e) => return Step::Retry(format!("id map: {e}")),
            }
        }
        // Only the HIS's own id is ever confirmed as `hisAppointmentId`.
        let Some(his_appointment_id) = entry.his_appointment_id.clone() else {
            return Step::Park;
        };
        let body = ConfirmRequest {
            latrexa_id: entry.latrexa_id.clone(),
            his_appointment_id,
        };
        match self.api.confirm(&body).await {
            Ok(()) => {
                entry.state = BookingState::Confirmed;
                Step::Moved(RecordChange {
                    status: Some(Status::Delivered),
                    ..RecordChange::default()
                })
            }
            Err(e) => self.api_failure(entry, e),
        }
    }

    async fn reject(&self, entry: &mut BookingEntry, reason: &str) -> Step {
        let body = RejectRequest {
            latrexa_id: entry.latrexa_id.clone(),
            reason: reason.to_string(),
        };
        match self.api.reject(&body).await {
            Ok(()) => {
                entry.state = BookingState::Rejected {
                    reason: reason.to_string(),
                };
                Step::Moved(RecordChange {
                    status: Some(Status::Rejected),
                    ..RecordChange::default()
                })
            }
            Err(e) => self.api_failure(entry, e),
        }
    }

    fn api_failure(&self, entry: &mut BookingEntry, e: ApiError) -> Step {
        if e.is_retryable() {
            return Step::Retry(e.to_string());
        }
        let reason = e.to_string();
        entry.state = BookingState::Failed {
            reason: reason.clone(),
        };
        Step::Moved(RecordChange {
            status: Some(Status::Failed),
            error: Some(reason),
            ..RecordChange::default()
        })
    }

    /// Stores an item that is not a booking once, as rejected with its reason.
    async fn store_invalid(&self, raw: &serde_json::Value, reason: &str) -> bool {
        let bytes = serde_json::to_vec(raw).unwrap_or_default();
        let print = fingerprint(&bytes);
        match self.store.first_bad_booking(&self.channel, &print) {
            Ok(true) => {}
            Ok(false) => return true,
            Err(e) => {
                warn!(channel = %self.channel, error = %e, "Cannot record an unreadable booking.");
                return true;
            }
        }
        let now = now_ms();
        let id = self.store.next_id(now);
        let record = MessageRecord {
            business_keys: Vec::new(),
            dedup_key: String::new(),
            resent_from: None,
            id,
            channel: self.channel.clone(),
            received_at_ms: now,
            peer: self.api.base_url().to_string(),
            format: channels::source::RecordFormat::Latrexa.into(),
            message_type: "booking.unreadable".into(),
            control_id: String::new(),
            sending_application: "LATREXA".into(),
            sending_facility: self.cfg.organization_code.clone(),
            version: String::new(),
            charset: "utf-8".into(),
            size: bytes.len(),
            truncated: false,
            status: Status::Rejected,
            ack_code: String::new(),
            ack: String::new(),
            errors: vec![reason.to_string()],
            config_version: self.config_version.clone(),
            deliveries: Vec::new(),
        };
        warn!(channel = %self.channel, id, error = %reason, "Latrexa sent a booking that cannot be read; stored as rejected.");
        self.persist(|s| s.put(&record, &bytes, &[])).await
    }

    /// Posts a heartbeat every `heartbeat_interval_secs` until shutdown.
    async fn heartbeats(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_secs(self.cfg.heartbeat_interval_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let his_connected = match self.his_state.load(Ordering::Relaxed) {
                HIS_UP => true,
                HIS_DOWN => false,
                _ => self.probe_his().await,
            };
            let pending = self
                .store
                .unsettled_bookings(&self.channel)
                .map(|v| u32::try_from(v.len()).unwrap_or(u32::MAX))
                .unwrap_or(0);
            let beat = Heartbeat {
                agent: format!("switchboard/{}", env!("CARGO_PKG_VERSION")),
                his_connected,
                pending,
                timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            };
            let outcome = match self.api.heartbeat(&beat).await {
                Ok(()) => {
                    if failing {
                        info!(channel = %self.channel, "Latrexa heartbeat sent again.");
                    }
                    failing = false;
                    "sent"
                }
                Err(e) => {
                    if !failing {
                        warn!(channel = %self.channel, error = %e, "Latrexa heartbeat failed; will send the next one on time.");
                    }
                    failing = true;
                    "failed"
                }
            };
            self.metrics
                .latrexa_heartbeats
                .with_label_values(&[&self.channel, outcome])
                .inc();
        }
    }

    /// Whether the HIS accepts a TCP connection, when no exchange told us yet.
    async fn probe_his(&self) -> bool {
        let timeout = Duration::from_secs(self.cfg.his.connect_timeout_secs);
        matches!(
            tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect(self.cfg.his.address.as_str())
            )
            .await,
            Ok(Ok(_))
        )
    }
}

/// The HIS's appointment id in the SCH-2 of its answer (SRR^S01, or an ACK carrying SCH),
/// unless empty or the Latrexa id itself echoed back.
fn his_id_of_answer(answer: &str, latrexa_id: &str) -> Option<String> {
    let d = MessageHeader::read(answer).ok()?.delimiters;
    let sch = answer
        .split(['\r', '\n'])
        .find(|s| s.get(..3) == Some("SCH") && s[3..].starts_with(d.field))?;
    let id = sch
        .split(d.field)
        .nth(2)?
        .split(d.repetition)
        .next()?
        .split(d.component)
        .next()?
        .trim();
    (!id.is_empty() && id != latrexa_id).then(|| id.to_owned())
}

/// The outcome of one step of a booking.
enum Step {
    /// The entry has a new state; write it with this change of the record.
    Moved(RecordChange),
    /// The HIS accepted the booking but has not named its appointment id: the entry stays as
    /// stored (`HisAccepted`) until the id is learnt.
    Park,
    /// Nothing changed; try again after a pause.
    Retry(String),
}

#[cfg(test)]
mod tests {
    use super::his_id_of_answer;

    #[test]
    fn the_his_id_is_read_from_an_ack_that_carries_sch() {
        let ack = "MSH|^~\\&|HIS|H|SB|S|20260615103000||ACK^S12^ACK|A1|P|2.5\r\
                   MSA|AA|C1\r\
                   SCH|LX-77|HIS-4711^HIS||||||||||\r";
        assert_eq!(his_id_of_answer(ack, "LX-77").as_deref(), Some("HIS-4711"));
    }

    #[test]
    fn the_his_id_is_read_from_srr_s01_with_other_delimiters() {
        let srr = "MSH#$~\\&#HIS#H#SB#S#20260615103000##SRR^S01^SRR_S01#A2#P#2.5\n\
                   MSA#AA#C2\n\
                   SCH#LX-78#HIS-9$RM###\n";
        assert_eq!(his_id_of_answer(srr, "LX-78").as_deref(), Some("HIS-9"));
    }

    #[test]
    fn no_his_id_from_a_plain_ack_an_empty_sch_2_or_the_latrexa_id_echoed() {
        let plain = "MSH|^~\\&|HIS|H|SB|S|20260615103000||ACK|A3|P|2.5\rMSA|AA|C3\r";
        assert_eq!(his_id_of_answer(plain, "LX-79"), None);
        let empty = "MSH|^~\\&|HIS|H|SB|S|20260615103000||ACK|A4|P|2.5\rMSA|AA|C4\rSCH|LX-79||\r";
        assert_eq!(his_id_of_answer(empty, "LX-79"), None);
        let echoed =
            "MSH|^~\\&|HIS|H|SB|S|20260615103000||ACK|A5|P|2.5\rMSA|AA|C5\rSCH|LX-79|LX-79|\r";
        assert_eq!(his_id_of_answer(echoed, "LX-79"), None);
        // A segment whose name only starts with SCH is not the SCH segment.
        let schx = "MSH|^~\\&|HIS|H|SB|S|20260615103000||ACK|A6|P|2.5\rSCHX|LX-79|HIS-1|\r";
        assert_eq!(his_id_of_answer(schx, "LX-79"), None);
    }
}
