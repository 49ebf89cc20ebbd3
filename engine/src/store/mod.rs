//! The message store: one sled database under `data_dir`, behind this one module.
//!
//! Trees (keys are big-endian so byte order is time order):
//!
//! | tree | key | value |
//! |---|---|---|
//! | `messages` | message id (u64) | [`MessageRecord`] as JSON, then 0x1E and the bytes exactly as received, compressed (see [`value`]) |
//! | `raw` | message id | the bytes exactly as received, of messages stored before the raw bytes went beside the record (and of booking messages, see [`id_map`]) |
//! | `dedup` | channel, sender key (HL7: 0x00, MSH-10, 0x00 first, then the channel, MSH-3, MSH-4, MSH-10) | original message id, content digest (see [`dedup`]) |
//! | `by_control_id` | control id, 0x00, message id | empty; for the messages whose `dedup` claim does not name them (see [`dedup`]) |
//! | `by_business_key` | key kind, value, 0x00, message id | empty (see [`keys`]) |
//! | `fhir_ids` | channel, 0x00, FHIR `{type}/{id}`, 0x00, message id | empty (see [`fhir_ids`]) |
//! | `paused` | channel name | [`PauseRecord`] as JSON: who paused the channel, when |
//! | `meta` | name | schema version and the like |
//!
//! The outbox, attempts, dead letters and audit trees are described in [`outbox`], the
//! Latrexa id mapping (`id_map`) in [`id_map`], the appointment ledger (`ledger`,
//! `ledger_by_message`) in [`ledger`], how those two are one model of an appointment
//! (what the HIS and Latrexa each know of it) in [`appointments`], and the DICOM
//! worklists, MPPS states and the studies storage sources received (`worklist`, `mpps`,
//! `dicom_studies`, `dicom_instances`) in [`dicom`], and the visit timelines of the patient
//! journey (`journey`, `journey_by_message`) in [`journey`].
//!
//! The raw bytes beside the record ([`value::record_value`]) save ingest one write per
//! message; a value of the earlier layouts (the JSON alone, its raw bytes in `raw`; or not
//! compressed) is read as before, and every update of a record keeps what was beside it.
//!
//! A message id is `received_at_ms << 20 | n`, made strictly increasing, so ids sort by
//! receipt time and retention can delete a key range from the front.
//!
//! Writes go to sled's in-memory log; [`Store::commit`] waits for the group-committed flush
//! that covers them. A flush covers every write that completed before it was called, so one
//! flush serves every message waiting at that moment.

pub mod appointments;
mod commit;
pub mod dedup;
pub mod dicom;
pub mod fhir_ids;
pub mod id_map;
pub mod journey;
pub mod keys;
pub mod kind;
pub mod ledger;
pub mod outbox;
pub mod retention;
pub mod seal;
pub mod space;
mod value;

use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use commit::{Durability, GroupCommit};
pub use dedup::{Claim, ContentDigest};

/// The page cache, in MiB, of a store opened without a size (the engine's
/// `store_cache_mib` default). It bounds the pages sled keeps decoded in memory; what sled
/// keeps for every page of the store besides (its page table) is not in it.
pub const DEFAULT_CACHE_MIB: u64 = 256;

/// The store schema version written to `meta`: 2 since `messages` values may be compressed
/// ([`value`]), which an engine of version 1 would not read. A store of version 1 is read
/// as it is and marked 2 when opened (its plain values stay readable).
const SCHEMA_VERSION: u32 = 2;

/// The earlier schema versions this engine opens.
const SCHEMA_VERSIONS_READ: [u32; 1] = [1];

/// A store failure; the message it concerned was not stored (or not durably).
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (IO, disk full, corruption).
    #[error("store error: {0}")]
    Sled(String),
    /// A record could not be encoded or decoded.
    #[error("store record error: {0}")]
    Codec(String),
    /// Less free disk space than the reserve (`min_free_disk_bytes`): nothing was written.
    #[error("disk nearly full: {available} bytes free, {reserve} reserved")]
    DiskFull {
        /// Bytes free on the data folder's filesystem.
        available: u64,
        /// The configured reserve.
        reserve: u64,
    },
    /// Encryption at rest: a key is wrong or missing, or a sealed value does not open.
    #[error("store encryption: {0}")]
    Seal(String),
    /// Cluster mode: the work stream did not acknowledge the message (the record is kept,
    /// marked rejected with this reason).
    #[error("{0}")]
    Cluster(String),
    /// The store was written by a newer or unknown schema.
    #[error("store schema version {found} is not supported (expected {SCHEMA_VERSION})")]
    Schema {
        /// The version found in `meta`.
        found: u32,
    },
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e.to_string())
    }
}

/// How many nodes' id lanes the low bits of a message id hold in cluster mode.
pub const ID_LANES: u64 = 64;

/// The smallest id from `candidate` on in `lane` (1 + node id; 0: any id).
fn in_lane(candidate: u64, lane: u64) -> u64 {
    if lane == 0 {
        return candidate;
    }
    let want = lane - 1;
    let have = candidate % ID_LANES;
    if have <= want {
        candidate + (want - have)
    } else {
        candidate + (ID_LANES - have) + want
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Stored and accepted, before routing (only seen in records of older versions and
    /// while a reprocess is being written).
    Received,
    /// Answered negatively; kept with its reason.
    Rejected,
    /// No route matched; kept, delivered nowhere.
    Filtered,
    /// Deliveries queued.
    Routed,
    /// At least one delivery failed and will be tried again.
    Retrying,
    /// Every destination confirmed.
    Delivered,
    /// At least one delivery ended in the dead letters.
    Failed,
}

impl Status {
    /// The status as written in the API and filters.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Rejected => "rejected",
            Status::Filtered => "filtered",
            Status::Routed => "routed",
            Status::Retrying => "retrying",
            Status::Delivered => "delivered",
            Status::Failed => "failed",
        }
    }
}

/// Everything the store keeps about one message, except its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// The message id (time-ordered).
    pub id: u64,
    /// The channel that received it.
    pub channel: String,
    /// Unix milliseconds of receipt.
    pub received_at_ms: u64,
    /// The sender's address.
    pub peer: String,
    /// What the source received (`hl7v2`, `fhir`, ...), which decides how the message is
    /// read; a name this version does not know stays as read (see [`kind`]).
    pub format: kind::Named<channels::source::RecordFormat>,
    /// `ADT^A04`, empty when unreadable.
    pub message_type: String,
    /// MSH-10, empty when unreadable.
    pub control_id: String,
    /// MSH-3.
    pub sending_application: String,
    /// MSH-4.
    pub sending_facility: String,
    /// MSH-12.
    pub version: String,
    /// The character set the message was decoded with.
    pub charset: String,
    /// Size of the message as received, in bytes.
    pub size: usize,
    /// True when only the first bytes were kept (frame over the limit).
    pub truncated: bool,
    /// Where the message is.
    pub status: Status,
    /// MSA-1 of the answer.
    pub ack_code: String,
    /// The answer as sent (HL7 text), or empty when none was sent.
    pub ack: String,
    /// Problems found, each naming a location and a reason (never content).
    pub errors: Vec<String>,
    /// The configuration version that processed the message.
    pub config_version: String,
    /// Each destination the message was routed to, and where that delivery stands.
    #[serde(default)]
    pub deliveries: Vec<outbox::DeliveryState>,
    /// Business identifiers of its canonical event (patient ids, visit numbers,
    /// appointment ids, order numbers), indexed in `by_business_key`. As stored with
    /// encryption on, each value is its keyed hash (`hmac:...`, see [`keys::stored_keys`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub business_keys: Vec<transforms::model::BusinessKey>,
    /// The exact `dedup` tree key this message claimed (channel and sender key), empty when
    /// it claimed none (rejected messages); retention removes the entry with the message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub dedup_key: String,
    /// For a message an operator edited and sent again from the console or the admin API
    /// (`POST /api/messages/{id}/resend`): the id of the message it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resent_from: Option<u64>,
}

/// Why a channel is paused (`POST /api/channels/{name}/pause`), kept in the `paused` tree so
/// a restart keeps it paused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseRecord {
    /// The operator (token name, and the client's `X-Switchboard-User` when sent).
    pub by: String,
    /// Unix ms of the pause.
    pub at_ms: u64,
}

/// Filters of [`Store::list`].
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Only this channel.
    pub channel: Option<String>,
    /// Only this MSH-10.
    pub control_id: Option<String>,
    /// Only messages carrying this business identifier (read from the index).
    pub business_key: Option<String>,
    /// Only messages found by this text: control id, business identifier of any kind, or
    /// the words of the patient's name (see [`Store::ids_by_text`]).
    pub text: Option<String>,
    /// With `business_key`: only as this kind of identifier (any kind when `None`).
    pub business_key_kind: Option<transforms::model::BusinessKeyKind>,
    /// Only this status.
    pub status: Option<String>,
    /// Only this message type: `ORU`, `ADT^A08` or `ADT^*` (see
    /// `transforms::hl7v2::validate::type_matches`); applied before `limit`.
    pub message_type: Option<String>,
    /// Only messages received at or after this Unix millisecond.
    pub since_ms: Option<u64>,
    /// Only messages with an id below this one (paging backwards).
    pub before_id: Option<u64>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// The sled store.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    pub(crate) messages: sled::Tree,
    pub(crate) raw: sled::Tree,
    pub(crate) dedup: sled::Tree,
    pub(crate) by_control_id: sled::Tree,
    pub(crate) by_business_key: sled::Tree,
    pub(crate) fhir_ids: sled::Tree,
    pub(crate) outbox: sled::Tree,
    pub(crate) dead_letters: sled::Tree,
    pub(crate) attempts: sled::Tree,
    pub(crate) audit: sled::Tree,
    pub(crate) ledger: sled::Tree,
    pub(crate) ledger_by_message: sled::Tree,
    pub(crate) worklist: sled::Tree,
    pub(crate) mpps: sled::Tree,
    pub(crate) dicom_studies: sled::Tree,
    pub(crate) dicom_instances: sled::Tree,
    pub(crate) paused: sled::Tree,
    pub(crate) journey: sled::Tree,
    pub(crate) journey_by_message: sled::Tree,
    /// One visit timeline read-and-write at a time (see [`journey`]).
    journey_lock: Arc<std::sync::Mutex<()>>,
    last_id: Arc<AtomicU64>,
    /// Cluster mode: 1 + the node's `node_id`, the residue modulo [`ID_LANES`] of every id
    /// this node assigns; 0 in single-node mode (see [`Store::set_id_lane`]).
    id_lane: Arc<AtomicU64>,
    pub(crate) last_seq: Arc<AtomicU64>,
    commit: GroupCommit,
    pub(crate) inflight: dedup::InFlight,
    space: Arc<space::SpaceGuard>,
    pub(crate) seal: Arc<seal::Seal>,
}

impl Store {
    /// Opens (or creates) the store in `dir` and starts its group committer.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled cannot open the folder or the schema is unknown.
    pub fn open(
        dir: &Path,
        durability: Durability,
        metrics: &Metrics,
    ) -> Result<Store, StoreError> {
        Self::open_sealed(dir, durability, metrics, seal::Seal::plain())
    }

    /// Opens (or creates) the store like [`Store::open`], sealing message bodies and
    /// payloads with `seal` (see [`seal`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled cannot open the folder, the schema is unknown, or the keys
    /// do not match the store ([`StoreError::Seal`]).
    pub fn open_sealed(
        dir: &Path,
        durability: Durability,
        metrics: &Metrics,
        seal: seal::Seal,
    ) -> Result<Store, StoreError> {
        Self::open_with_cache(dir, durability, metrics, seal, DEFAULT_CACHE_MIB)
    }

    /// Opens (or creates) the store like [`Store::open_sealed`], with a page cache of
    /// `cache_mib` MiB (sled's `cache_capacity`, which counts the pages' bytes as stored; see
    /// [`DEFAULT_CACHE_MIB`]).
    ///
    /// # Errors
    ///
    /// As [`Store::open_sealed`].
    pub fn open_with_cache(
        dir: &Path,
        durability: Durability,
        metrics: &Metrics,
        seal: seal::Seal,
        cache_mib: u64,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| StoreError::Sled(format!("cannot create {}: {e}", dir.display())))?;
        let db = sled::Config::new()
            .path(dir.join("sled"))
            .cache_capacity(cache_mib.max(1).saturating_mul(1024 * 1024))
            .flush_every_ms(Some(1000))
            .open()?;
        let meta = db.open_tree("meta")?;
        match meta.get("schema_version")? {
            Some(v) => {
                let found = u32::from_be_bytes(
                    v.as_ref()
                        .try_into()
                        .map_err(|_| StoreError::Schema { found: 0 })?,
                );
                if SCHEMA_VERSIONS_READ.contains(&found) {
                    meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
                } else if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
            None => {
                meta.insert("schema_version", &SCHEMA_VERSION.to_be_bytes())?;
            }
        }
        seal.verify(&meta)?;
        let messages = db.open_tree("messages")?;
        let last = messages
            .last()?
            .and_then(|(k, _)| k.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        let commit = GroupCommit::start(db.clone(), &dir.join("sled"), durability, metrics)?;
        let outbox = db.open_tree("outbox")?;
        let dead_letters = db.open_tree("dead_letters")?;
        let max_seq = |t: &sled::Tree| -> Result<u64, StoreError> {
            let mut max = 0;
            for k in t.iter().keys() {
                let k = k?;
                if let Some(tail) = k
                    .len()
                    .checked_sub(8)
                    .and_then(|at| k[at..].try_into().ok())
                {
                    max = max.max(u64::from_be_bytes(tail));
                }
            }
            Ok(max)
        };
        let last_seq = max_seq(&outbox)?.max(max_seq(&dead_letters)?).max(last);
        let store = Store {
            outbox,
            dead_letters,
            attempts: db.open_tree("attempts")?,
            audit: db.open_tree("audit")?,
            ledger: db.open_tree("ledger")?,
            ledger_by_message: db.open_tree("ledger_by_message")?,
            worklist: db.open_tree("worklist")?,
            mpps: db.open_tree("mpps")?,
            dicom_studies: db.open_tree("dicom_studies")?,
            dicom_instances: db.open_tree("dicom_instances")?,
            paused: db.open_tree("paused")?,
            journey: db.open_tree("journey")?,
            journey_by_message: db.open_tree("journey_by_message")?,
            journey_lock: Arc::default(),
            last_seq: Arc::new(AtomicU64::new(last_seq)),
            raw: db.open_tree("raw")?,
            dedup: db.open_tree("dedup")?,
            by_control_id: db.open_tree("by_control_id")?,
            by_business_key: db.open_tree("by_business_key")?,
            fhir_ids: db.open_tree("fhir_ids")?,
            messages,
            db,
            last_id: Arc::new(AtomicU64::new(last)),
            id_lane: Arc::new(AtomicU64::new(0)),
            commit,
            inflight: dedup::InFlight::default(),
            space: Arc::new(space::SpaceGuard::new(
                dir,
                metrics.store_reserve_refusals.clone(),
            )),
            seal: Arc::new(seal),
        };
        // Before anything can write: see `drop_orphans` for why never later.
        let dropped = store.drop_orphans()?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "Removed outbox items of messages a crash left unstored (never acknowledged)."
            );
        }
        Ok(store)
    }

    /// Refuses every write while less than `bytes` are free on the data folder's disk
    /// (see [`space`]); 0 turns the check off.
    pub fn set_min_free_bytes(&self, bytes: u64) {
        self.space.set_reserve(bytes);
    }

    /// Whether writes would be taken now: a worker asks before it starts work whose outcome
    /// it must write (see [`space`]). Asking is not counted as a refusal.
    ///
    /// # Errors
    ///
    /// [`StoreError::DiskFull`] while less than the reserve is free.
    pub fn reserve_available(&self) -> Result<(), StoreError> {
        self.space.available()
    }

    /// A new message id for a message received at `now_ms`, greater than every earlier one
    /// (and in this node's lane in cluster mode).
    pub fn next_id(&self, now_ms: u64) -> u64 {
        let floor = now_ms << 20;
        let lane = self.id_lane.load(Ordering::Relaxed);
        let next = |last: u64| in_lane(floor.max(last + 1), lane);
        let prev = self
            .last_id
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(next(last)))
            .unwrap_or_else(|last| last);
        next(prev)
    }

    /// Cluster mode: from now on every id this store assigns is `node_id` modulo
    /// [`ID_LANES`], so that nodes never assign the same id (ids stay time-ordered: the
    /// low 20 bits count within a millisecond).
    pub fn set_id_lane(&self, node_id: u8) {
        self.id_lane
            .store(u64::from(node_id) % ID_LANES + 1, Ordering::Relaxed);
    }

    /// Writes a message record with its raw bytes beside it, and its rendered deliveries (not
    /// yet durable: see [`Store::commit`]). The record is written last: a crash part-way leaves outbox
    /// items without a message, which the store removes when it opens next (that message
    /// was never acknowledged, so its sender sends it again). Until the record is written,
    /// its items must stay: nothing removes them while the store is open.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails, [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn put(
        &self,
        record: &MessageRecord,
        raw: &[u8],
        items: &[outbox::OutboxItem],
    ) -> Result<(), StoreError> {
        self.space.check(space::WritePath::Ingest)?;
        let hashed;
        let record = if self.seal.is_on() && !record.business_keys.is_empty() {
            hashed = MessageRecord {
                business_keys: keys::stored_keys(&self.seal, &record.business_keys),
                ..record.clone()
            };
            &hashed
        } else {
            record
        };
        let key = record.id.to_be_bytes();
        let json = serde_json::to_vec(record).map_err(|e| StoreError::Codec(e.to_string()))?;
        let value = value::record_value(json, Some(&self.seal.seal(b"raw", raw)?));
        for item in items {
            self.outbox.insert(item.key(), item.encode(&self.seal)?)?;
        }
        // A claim in the control-id form is this message's entry (see `dedup`).
        if !record.control_id.is_empty()
            && !dedup::indexes_control_id(&record.dedup_key, &record.control_id)
        {
            self.by_control_id.insert(
                control_id_index_key(record.control_id.as_bytes(), record.id),
                &[],
            )?;
        }
        for k in record.business_keys.iter().filter(|k| keys::indexable(k)) {
            self.by_business_key
                .insert(keys::index_key(k, record.id), &[])?;
        }
        for k in self.fhir_index_keys(record) {
            self.fhir_ids.insert(k, &[])?;
        }
        // The record last: its presence means the message is complete.
        self.messages.insert(key, value)?;
        Ok(())
    }

    /// Waits until everything written so far is durable (per the configured durability).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the flush failed: nothing written since the last good flush may
    /// be considered durable.
    pub async fn commit(&self) -> Result<(), StoreError> {
        self.commit.commit().await
    }

    /// One message record.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the record cannot be decoded.
    pub fn get(&self, id: u64) -> Result<Option<MessageRecord>, StoreError> {
        self.messages
            .get(id.to_be_bytes())?
            .map(|v| decode_record(&v))
            .transpose()
    }

    /// Whether message `id` is stored (its record written, durable or not yet).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn contains_message(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.messages.contains_key(id.to_be_bytes())?)
    }

    /// The raw bytes of a message.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn raw(&self, id: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let key = id.to_be_bytes();
        let beside = self.messages.get(key)?;
        let opened = beside.as_deref().map(value::open).transpose()?;
        let sealed = match opened.as_ref().and_then(|v| v.raw()) {
            Some(raw) => Some(sled::IVec::from(raw)),
            // The earlier layout, or a booking message (see `id_map`).
            None => self.raw.get(key)?,
        };
        sealed
            .map(|v| self.seal.open(b"raw", &v).map(|c| c.into_owned()))
            .transpose()
    }

    /// Messages matching `q`, newest first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a record cannot be decoded.
    pub fn list(&self, q: &Query) -> Result<Vec<MessageRecord>, StoreError> {
        let limit = q.limit.clamp(1, 10_000);
        let lower = q.since_ms.map(|ms| ms << 20).unwrap_or(0);
        let upper = q.before_id.unwrap_or(u64::MAX);
        let keep = |r: &MessageRecord| {
            q.channel.as_ref().is_none_or(|c| *c == r.channel)
                && q.status.as_ref().is_none_or(|s| s == r.status.as_str())
                && q.control_id.as_ref().is_none_or(|c| *c == r.control_id)
                && q.message_type
                    .as_ref()
                    .is_none_or(|t| transforms::hl7v2::validate::type_matches(t, &r.message_type))
        };
        let mut out = Vec::new();
        // An index narrows the candidates first: the search text, a business key, a control id.
        let indexed = if let Some(text) = &q.text {
            Some(self.ids_by_text(text, lower, upper)?)
        } else if let Some(value) = &q.business_key {
            Some(self.ids_by_business_key(q.business_key_kind, value, lower, upper)?)
        } else if let Some(control_id) = &q.control_id {
            Some(self.ids_by_control_id(control_id, lower, upper)?)
        } else {
            None
        };
        if let Some(ids) = indexed {
            for id in ids {
                if let Some(r) = self.get(id)? {
                    if keep(&r) {
                        out.push(r);
                        if out.len() >= limit {
                            break;
                        }
                    }
                }
            }
            return Ok(out);
        }
        for item in self
            .messages
            .range(lower.to_be_bytes()..upper.to_be_bytes())
            .rev()
        {
            let (_, v) = item?;
            let r = decode_record(&v)?;
            if keep(&r) {
                out.push(r);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Ids of the messages with MSH-10 (control id) `control_id`, in `lower..upper`, newest
    /// first: from `by_control_id` and from the `dedup` claims in the control-id form (see
    /// [`dedup`]). An id may be of a message whose record is not written yet or was taken
    /// back; readers look the record up.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn ids_by_control_id(
        &self,
        control_id: &str,
        lower: u64,
        upper: u64,
    ) -> Result<Vec<u64>, StoreError> {
        if control_id.is_empty() {
            return Ok(Vec::new());
        }
        let mut prefix = control_id.as_bytes().to_vec();
        prefix.push(0);
        let mut ids = Vec::new();
        for k in self.by_control_id.scan_prefix(&prefix).keys() {
            let k = k?;
            if let Some(id) = k[prefix.len()..].try_into().ok().map(u64::from_be_bytes) {
                if id >= lower && id < upper {
                    ids.push(id);
                }
            }
        }
        for v in self
            .dedup
            .scan_prefix(dedup::control_id_prefix(control_id))
            .values()
        {
            let (id, _) = dedup::decode(&v?)?;
            if id >= lower && id < upper {
                ids.push(id);
            }
        }
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids.dedup();
        Ok(ids)
    }

    /// Records that `channel` is paused (`Some`) or not (`None`); durable once
    /// [`Store::commit`] returns.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn set_paused(&self, channel: &str, pause: Option<&PauseRecord>) -> Result<(), StoreError> {
        self.space.check(space::WritePath::Operator)?;
        match pause {
            Some(p) => {
                let v = serde_json::to_vec(p).map_err(|e| StoreError::Codec(e.to_string()))?;
                self.paused.insert(channel.as_bytes(), v)?;
            }
            None => {
                self.paused.remove(channel.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Every paused channel (configured or not) and why.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or a record cannot be decoded.
    pub fn paused_channels(&self) -> Result<Vec<(String, PauseRecord)>, StoreError> {
        self.paused
            .iter()
            .map(|kv| {
                let (k, v) = kv?;
                let record =
                    serde_json::from_slice(&v).map_err(|e| StoreError::Codec(e.to_string()))?;
                Ok((String::from_utf8_lossy(&k).into_owned(), record))
            })
            .collect()
    }

    /// Number of message records. It reads every record (sled counts by walking the tree),
    /// so it is for tests and tools, never for the engine's start or a request.
    pub fn message_count(&self) -> usize {
        self.messages.len()
    }

    /// Bytes the store takes on disk.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled cannot tell.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Flushes everything and waits; used at shutdown.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the flush fails.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        self.commit().await
    }
}

/// The `by_control_id` key of message `id` with control id `control_id`.
pub(crate) fn control_id_index_key(control_id: &[u8], id: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(control_id.len() + 9);
    k.extend_from_slice(control_id);
    k.push(0);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The record of a `messages` value (either layout).
///
/// # Errors
///
/// [`StoreError::Codec`] when the record cannot be decoded.
pub(crate) fn decode_record(v: &[u8]) -> Result<MessageRecord, StoreError> {
    serde_json::from_slice(value::open(v)?.json()).map_err(|e| StoreError::Codec(e.to_string()))
}

/// The `messages` value `old` with its record replaced by `rec`, keeping what was beside it.
///
/// # Errors
///
/// [`StoreError::Codec`] when the record cannot be encoded.
pub(crate) fn replace_record(old: &[u8], rec: &MessageRecord) -> Result<Vec<u8>, StoreError> {
    let json = serde_json::to_vec(rec).map_err(|_| StoreError::Codec("record encoding".into()))?;
    Ok(value::record_value(json, value::open(old)?.raw()))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Opens a store again after a test dropped it. sled's flusher thread lets go of the file
    /// lock shortly after the last handle is dropped, so the first tries may find it held.
    pub(crate) fn reopen(mut open: impl FnMut() -> Result<Store, StoreError>) -> Store {
        let mut last = None;
        for _ in 0..500 {
            match open() {
                Ok(s) => return s,
                Err(e) => {
                    last = Some(e);
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
        panic!("reopen: {last:?}");
    }

    pub(crate) fn record(
        id: u64,
        channel: &str,
        control_id: &str,
        status: Status,
    ) -> MessageRecord {
        MessageRecord {
            id,
            channel: channel.into(),
            received_at_ms: id >> 20,
            peer: "127.0.0.1:1".into(),
            format: channels::source::RecordFormat::Hl7v2.into(),
            message_type: "ADT^A04".into(),
            control_id: control_id.into(),
            sending_application: "HIS".into(),
            sending_facility: "MAIN".into(),
            version: "2.5".into(),
            charset: "utf-8".into(),
            size: 10,
            truncated: false,
            status,
            ack_code: "AA".into(),
            ack: String::new(),
            errors: vec![],
            config_version: "v".into(),
            deliveries: vec![],
            business_keys: vec![],
            dedup_key: String::new(),
            resent_from: None,
        }
    }

    #[tokio::test]
    async fn a_store_of_schema_1_opens_reads_its_plain_records_and_becomes_2() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Fsync, &m).expect("open");
        // What an engine of schema 1 wrote: the record's JSON, 0x1E, the raw bytes.
        let old = record(5 << 20, "x", "C1", Status::Delivered);
        let mut plain = serde_json::to_vec(&old).expect("json");
        plain.push(0x1e);
        plain.extend_from_slice(b"MSH|old");
        s.messages
            .insert(old.id.to_be_bytes(), plain)
            .expect("insert");
        s.db.open_tree("meta")
            .expect("meta")
            .insert("schema_version", &1u32.to_be_bytes())
            .expect("schema 1");
        s.commit().await.expect("commit");
        drop(s);
        let s = reopen(|| Store::open(dir.path(), Durability::Fsync, &m));
        let meta = s.db.open_tree("meta").expect("meta");
        assert_eq!(
            meta.get("schema_version").expect("get").as_deref(),
            Some(&2u32.to_be_bytes()[..])
        );
        assert_eq!(s.get(old.id).expect("get"), Some(old.clone()));
        assert_eq!(s.raw(old.id).expect("raw"), Some(b"MSH|old".to_vec()));
        // New writes are compressed, and an update keeps the raw bytes of the old layout.
        let new = record(6 << 20, "x", "C2", Status::Received);
        s.put(&new, b"MSH|new", &[]).expect("put");
        let stored = s
            .messages
            .get(new.id.to_be_bytes())
            .expect("get")
            .expect("v");
        assert_eq!(stored[0], 0x01);
        assert_eq!(s.raw(new.id).expect("raw"), Some(b"MSH|new".to_vec()));
        s.set_ack(old.id, "AE", "MSA|AE|C1").expect("set ack");
        assert_eq!(s.raw(old.id).expect("raw"), Some(b"MSH|old".to_vec()));
        assert_eq!(s.get(old.id).expect("get").expect("r").ack_code, "AE");
        // A newer schema than this engine knows is refused, naming it.
        meta.insert("schema_version", &9u32.to_be_bytes())
            .expect("schema 9");
        s.commit().await.expect("commit");
        drop((s, meta));
        let mut refused = None;
        for _ in 0..500 {
            match Store::open(dir.path(), Durability::Fsync, &m) {
                Err(StoreError::Schema { found }) => {
                    refused = Some(found);
                    break;
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                Ok(_) => panic!("a store of schema 9 opened"),
            }
        }
        assert_eq!(refused, Some(9));
    }

    #[tokio::test]
    async fn ids_increase_and_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let s = Store::open(dir.path(), Durability::Fsync, &m).expect("open");
        let a = s.next_id(1000);
        let b = s.next_id(1000);
        let c = s.next_id(999);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert_eq!(a >> 20, 1000);
        s.put(&record(c, "x", "C1", Status::Received), b"raw", &[])
            .expect("put");
        s.commit().await.expect("commit");
        drop(s);
        // The committer task lets go of the database once it sees the store dropped.
        let mut reopened = None;
        for _ in 0..200 {
            match Store::open(dir.path(), Durability::Fsync, &m) {
                Ok(s) => {
                    reopened = Some(s);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
        let s = reopened.expect("reopen");
        assert!(s.next_id(1000) > c);
        assert_eq!(s.raw(c).expect("raw").as_deref(), Some(&b"raw"[..]));
    }

    /// A store written before the raw bytes went beside the record: the record's JSON alone
    /// in `messages`, the raw bytes in `raw`, byte for byte as that version wrote them. After
    /// a reopen it is read whole (record, raw bytes, lists, the control-id index), its updates
    /// keep it readable, and retention removes it whole; a message stored now sits beside it.
    #[tokio::test]
    async fn a_store_written_in_the_earlier_layout_is_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Metrics::new("t");
        let old_id = 5_000u64 << 20;
        let old = serde_json::json!({
            "id": old_id, "channel": "lab", "received_at_ms": 5_000, "peer": "127.0.0.1:1",
            "format": "hl7v2", "message_type": "ADT^A04", "control_id": "OLD-1",
            "sending_application": "HIS", "sending_facility": "MAIN", "version": "2.5",
            "charset": "utf-8", "size": 14, "truncated": false, "status": "routed",
            "ack_code": "AA", "ack": "", "errors": [], "config_version": "v",
            "deliveries": [{"destination": "lab/files", "seq": 1, "status": "pending",
                            "attempts": 0, "detail": ""}]
        });
        {
            let s = Store::open(dir.path(), Durability::Os, &m).expect("open");
            let key = old_id.to_be_bytes();
            s.messages
                .insert(key, serde_json::to_vec(&old).expect("json"))
                .expect("record");
            s.raw.insert(key, &b"MSH|^~\\&|OLD\r"[..]).expect("raw");
            let mut idx = b"OLD-1\0".to_vec();
            idx.extend_from_slice(&key);
            s.by_control_id.insert(idx, &[][..]).expect("index");
            s.db.flush().expect("flush");
        }
        let s = reopen(|| Store::open(dir.path(), Durability::Os, &m));
        let rec = s.get(old_id).expect("get").expect("the old record");
        assert_eq!(
            (rec.control_id.as_str(), rec.status),
            ("OLD-1", Status::Routed)
        );
        assert_eq!(
            s.raw(old_id).expect("raw").as_deref(),
            Some(&b"MSH|^~\\&|OLD\r"[..])
        );
        let new_id = s.next_id(6_000);
        s.put(
            &record(new_id, "lab", "NEW-1", Status::Filtered),
            b"MSH|NEW",
            &[],
        )
        .expect("put");
        assert!(
            s.raw.get(new_id.to_be_bytes()).expect("tree").is_none(),
            "beside the record"
        );
        assert_eq!(
            s.raw(new_id).expect("raw").as_deref(),
            Some(&b"MSH|NEW"[..])
        );
        let all = s
            .list(&Query {
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(
            all.iter().map(|r| r.id).collect::<Vec<_>>(),
            [new_id, old_id]
        );
        assert_eq!(
            s.ids_by_control_id("OLD-1", 0, u64::MAX).expect("ids"),
            [old_id]
        );
        // Updates of either layout keep the raw bytes where they are.
        for id in [old_id, new_id] {
            s.set_ack(id, "AE", "MSA|AE").expect("ack");
            assert_eq!(s.get(id).expect("get").expect("record").ack_code, "AE");
        }
        assert_eq!(
            s.raw(old_id).expect("raw").as_deref(),
            Some(&b"MSH|^~\\&|OLD\r"[..])
        );
        assert_eq!(
            s.raw(new_id).expect("raw").as_deref(),
            Some(&b"MSH|NEW"[..])
        );
        let item = outbox::OutboxItem {
            attempts: 1,
            idempotency_key: "k".into(),
            body: Vec::new(),
            ..outbox::OutboxItem::sample("lab/files", old_id, 1, 5_000)
        };
        assert_eq!(
            s.finish(&item, true, "written").expect("finish"),
            Status::Delivered
        );
        assert_eq!(
            s.raw(old_id).expect("raw").as_deref(),
            Some(&b"MSH|^~\\&|OLD\r"[..])
        );
        // Retention takes both whole.
        let policy = retention::RetentionPolicy {
            default_days: 1,
            per_channel: Default::default(),
        };
        s.prune(&policy, 10 * 86_400_000).expect("prune");
        for id in [old_id, new_id] {
            assert!(s.get(id).expect("get").is_none());
            assert!(s.raw(id).expect("raw").is_none());
        }
        assert!(s.raw.is_empty() && s.by_control_id.is_empty());
    }

    #[tokio::test]
    async fn list_filters_newest_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        for (i, (ch, ctl, st)) in [
            ("a", "C1", Status::Received),
            ("b", "C2", Status::Rejected),
            ("a", "C3", Status::Received),
            ("a", "C1", Status::Rejected),
        ]
        .into_iter()
        .enumerate()
        {
            let id = s.next_id(10_000 + i as u64);
            s.put(&record(id, ch, ctl, st), b"x", &[]).expect("put");
        }
        let all = s
            .list(&Query {
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(
            all.iter()
                .map(|r| r.control_id.as_str())
                .collect::<Vec<_>>(),
            ["C1", "C3", "C2", "C1"]
        );
        let a = s
            .list(&Query {
                channel: Some("a".into()),
                status: Some("received".into()),
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(
            a.iter().map(|r| r.control_id.as_str()).collect::<Vec<_>>(),
            ["C3", "C1"]
        );
        let c1 = s
            .list(&Query {
                control_id: Some("C1".into()),
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(c1.len(), 2);
        assert!(c1[0].id > c1[1].id);
        let since = s
            .list(&Query {
                since_ms: Some(10_002),
                limit: 10,
                ..Query::default()
            })
            .expect("list");
        assert_eq!(since.len(), 2);
    }
}
