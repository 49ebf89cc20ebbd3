//! The `id_map` tree: for every Latrexa online booking a channel took, the HIS appointment id
//! it got and where the booking stands (the mapping table the Latrexa agent keeps in its
//! SQLite file). It is what makes a restart never book anything twice; the state machine that
//! moves an entry is described in `crate::latrexa_bookings`.
//!
//! | key | value |
//! |---|---|
//! | `lx` 0x00 channel 0x00 Latrexa id | [`BookingEntry`] as JSON, sealed like message bodies when encryption is on |
//! | `his` 0x00 channel 0x00 HIS appointment id | the Latrexa id |
//! | `bad` 0x00 channel 0x00 fingerprint | empty: an unreadable booking already stored |
//!
//! Entries are written in the same sled transaction as the message record of the booking
//! revision they describe, so the record in `messages` and the entry always agree. Two tasks
//! write an entry: the bookings worker (its state machine) and the delivery worker, which
//! learns the HIS's id from the HIS's own SIU through the one model of an appointment both
//! directions share ([`Store::appointment_link`], `super::appointments`). Every write reads the
//! stored entry inside its transaction and keeps a HIS id (and `his_accepted`) already there
//! that the written copy lacks, so neither overwrites what the other just learnt. Retention
//! never prunes this tree: an entry is small and forgetting one could book twice. Nor does it
//! prune the record of a revision that is not settled at Latrexa yet
//! ([`BookingState::settled_at_latrexa`]): such a booking has no deliveries, so its record is
//! the only trace of it in the admin API.
//!
//! Every write here is refused under the free-space reserve ([`super::space`], path
//! `booking`); the booking worker retries it and sends nothing meanwhile.

use super::space::WritePath;
use super::{MessageRecord, Status, Store, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;
use std::collections::HashSet;
use transforms::dest::latrexa::PendingBooking;

/// Where one booking stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BookingState {
    /// Stored; the SIU has not been answered by the HIS yet (it may have reached it).
    Received,
    /// The HIS answered AA; Latrexa has not been told yet.
    HisAccepted,
    /// The HIS answered AE/AR (or the booking cannot be written as SIU); Latrexa has not been
    /// told yet.
    Refused {
        /// Why, as the HIS said it (MSA-3 / ERR-8), e.g. `slot unavailable`.
        reason: String,
    },
    /// Confirmed at Latrexa.
    Confirmed,
    /// Rejected at Latrexa.
    Rejected {
        /// The reason given.
        reason: String,
    },
    /// Latrexa refused the confirm or reject (4xx); an operator has to look.
    Failed {
        /// Latrexa's answer.
        reason: String,
    },
}

impl BookingState {
    /// True when nothing more will be done for this revision.
    pub fn is_settled(&self) -> bool {
        matches!(
            self,
            BookingState::Confirmed | BookingState::Rejected { .. } | BookingState::Failed { .. }
        )
    }

    /// True once Latrexa took our answer (confirmed or rejected there). `Failed` is settled
    /// for the worker (nothing more is tried) but not at Latrexa: an operator has to look,
    /// so retention keeps its record, as it keeps a dead letter's message.
    pub fn settled_at_latrexa(&self) -> bool {
        matches!(
            self,
            BookingState::Confirmed | BookingState::Rejected { .. }
        )
    }
}

/// The id mapping of one booking and its latest revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingEntry {
    /// Latrexa's booking id.
    pub latrexa_id: String,
    /// The id the HIS knows the appointment by, once the HIS named it (SCH-2 of its SRR^S01
    /// answer or of an ACK that carries SCH, or of its own SIU naming the booking in SCH-1).
    /// Never the Latrexa id: a write that has none keeps the one already stored (see
    /// [`Store::advance_booking`]).
    #[serde(default)]
    pub his_appointment_id: Option<String>,
    /// True once the HIS accepted a revision of this booking (it has the appointment, under
    /// the Latrexa id as placer id, even while its own id is not known yet).
    #[serde(default)]
    pub his_accepted: bool,
    /// The latest revision taken, as received.
    pub booking: PendingBooking,
    /// Hash of that revision, to recognise it when Latrexa sends no version.
    pub fingerprint: String,
    /// Where it stands.
    pub state: BookingState,
    /// The message record of the revision.
    pub message_id: u64,
    /// MSH-10 of its SIU (the HIS's MSA-2 must echo it).
    pub control_id: String,
    /// The SIU exactly as sent (and as sent again after a crash), or empty when the booking
    /// could not be written as SIU.
    pub siu: String,
    /// Unix milliseconds of the last change.
    pub updated_at_ms: u64,
}

pub(super) fn key(kind: &str, channel: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(kind.len() + channel.len() + id.len() + 2);
    k.extend_from_slice(kind.as_bytes());
    k.push(0);
    k.extend_from_slice(channel.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn codec<T>(r: Result<T, serde_json::Error>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Codec(e.to_string()))
}

fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e.to_string()),
    }
}

/// How the message record of a revision changes with its entry.
#[derive(Debug, Clone, Default)]
pub struct RecordChange {
    /// The new status, if it changes.
    pub status: Option<Status>,
    /// MSA-1 and the ACK text of the HIS's answer.
    pub ack: Option<(String, String)>,
    /// A problem to add (names a cause, never content).
    pub error: Option<String>,
}

/// `entry` merged with what is stored for it: a HIS id or `his_accepted` learnt meanwhile by
/// another task (the delivery worker reading the HIS's own SIU) is kept, never overwritten
/// by an older copy that lacks it.
fn merge_stored(entry: &BookingEntry, stored: Option<&BookingEntry>) -> BookingEntry {
    let mut out = entry.clone();
    if let Some(s) = stored {
        if out.his_appointment_id.is_none() {
            out.his_appointment_id.clone_from(&s.his_appointment_id);
        }
        out.his_accepted |= s.his_accepted && s.latrexa_id == out.latrexa_id;
    }
    out
}

impl Store {
    pub(super) fn id_map(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.db.open_tree("id_map")?)
    }

    /// An entry as stored: JSON, sealed when encryption is on (it holds the booking: the
    /// patient's name and contact details).
    pub(super) fn encode_booking(&self, entry: &BookingEntry) -> Result<Vec<u8>, StoreError> {
        let json = codec(serde_json::to_vec(entry))?;
        Ok(self.seal.seal(b"booking", &json)?.into_owned())
    }

    pub(super) fn decode_booking(&self, stored: &[u8]) -> Result<BookingEntry, StoreError> {
        codec(serde_json::from_slice(&self.seal.open(b"booking", stored)?))
    }

    /// The entry of Latrexa booking `latrexa_id` taken by `channel`.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the entry cannot be decoded.
    pub fn booking_entry(
        &self,
        channel: &str,
        latrexa_id: &str,
    ) -> Result<Option<BookingEntry>, StoreError> {
        self.id_map()?
            .get(key("lx", channel, latrexa_id))?
            .map(|v| self.decode_booking(&v))
            .transpose()
    }

    /// The Latrexa id of HIS appointment `his_id`, when `channel` booked it.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn latrexa_id_of(&self, channel: &str, his_id: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .id_map()?
            .get(key("his", channel, his_id))?
            .map(|v| String::from_utf8_lossy(&v).into_owned()))
    }

    /// Every entry of `channel` that is not settled, oldest change first.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or an entry cannot be decoded.
    pub fn unsettled_bookings(&self, channel: &str) -> Result<Vec<BookingEntry>, StoreError> {
        let prefix = key("lx", channel, "");
        let mut out = Vec::new();
        for v in self.id_map()?.scan_prefix(&prefix).values() {
            let e = self.decode_booking(&v?)?;
            if !e.state.is_settled() {
                out.push(e);
            }
        }
        out.sort_by_key(|e| e.updated_at_ms);
        Ok(out)
    }

    /// The message ids of every revision, of any channel, that is not settled at Latrexa
    /// (retention keeps their records).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or an entry cannot be decoded.
    pub fn unsettled_booking_messages(&self) -> Result<HashSet<u64>, StoreError> {
        let mut out = HashSet::new();
        for v in self.id_map()?.scan_prefix(b"lx\0").values() {
            let e = self.decode_booking(&v?)?;
            if !e.state.settled_at_latrexa() {
                out.insert(e.message_id);
            }
        }
        Ok(out)
    }

    /// Writes the record and raw bytes of a new booking revision together with its entry, in
    /// one transaction (not yet durable: see [`Store::commit`]).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn put_booking(
        &self,
        record: &MessageRecord,
        raw: &[u8],
        entry: &BookingEntry,
    ) -> Result<(), StoreError> {
        self.space.check(WritePath::Booking)?;
        let id = record.id.to_be_bytes();
        let keys = super::keys::stored_keys(&self.seal, &record.business_keys);
        let index: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| super::keys::indexable(k))
            .map(|k| super::keys::index_key(k, record.id))
            .collect();
        let rec = super::value::record_value(
            codec(serde_json::to_vec(&MessageRecord {
                business_keys: keys,
                ..record.clone()
            }))?,
            None,
        );
        let raw = self.seal.seal(b"raw", raw)?;
        let mut idx = record.control_id.as_bytes().to_vec();
        idx.push(0);
        idx.extend_from_slice(&id);
        let channel = record.channel.as_str();
        let map = self.id_map()?;
        let r: Result<(), TransactionError<StoreError>> = (
            &self.messages,
            &self.raw,
            &self.by_control_id,
            &self.by_business_key,
            &map,
        )
            .transaction(|(m, r, c, b, i)| {
                r.insert(&id[..], raw.as_ref())?;
                if !record.control_id.is_empty() {
                    c.insert(idx.as_slice(), &[][..])?;
                }
                for k in &index {
                    b.insert(k.as_slice(), &[][..])?;
                }
                self.write_merged(i, channel, entry)?;
                m.insert(&id[..], rec.as_slice())?;
                Ok(())
            });
        r.map_err(tx_err)
    }

    /// Writes `entry` merged with the stored one ([`merge_stored`]) inside a transaction, with
    /// the `his` index of its HIS id.
    fn write_merged(
        &self,
        i: &sled::transaction::TransactionalTree,
        channel: &str,
        entry: &BookingEntry,
    ) -> Result<BookingEntry, ConflictableTransactionError<StoreError>> {
        let lx = key("lx", channel, &entry.latrexa_id);
        let stored = match i.get(&lx)? {
            Some(v) => Some(
                self.decode_booking(&v)
                    .map_err(ConflictableTransactionError::Abort)?,
            ),
            None => None,
        };
        let merged = merge_stored(entry, stored.as_ref());
        let ent = self
            .encode_booking(&merged)
            .map_err(ConflictableTransactionError::Abort)?;
        i.insert(lx.as_slice(), ent.as_slice())?;
        if let Some(h) = &merged.his_appointment_id {
            i.insert(
                key("his", channel, h).as_slice(),
                merged.latrexa_id.as_bytes(),
            )?;
        }
        Ok(merged)
    }

    /// Writes `entry` (its new state) and applies `change` to the message record of its
    /// revision, in one transaction (not yet durable: see [`Store::commit`]). A record
    /// already removed by retention is not an error: the entry is written anyway.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the record cannot be decoded;
    /// [`StoreError::DiskFull`] (nothing written) under the free-space reserve.
    pub fn advance_booking(
        &self,
        channel: &str,
        entry: &BookingEntry,
        change: &RecordChange,
    ) -> Result<(), StoreError> {
        self.space.check(WritePath::Booking)?;
        let id = entry.message_id.to_be_bytes();
        let map = self.id_map()?;
        let r: Result<(), TransactionError<StoreError>> =
            (&self.messages, &map).transaction(|(m, i)| {
                self.write_merged(i, channel, entry)?;
                let Some(v) = m.get(id)? else {
                    return Ok(());
                };
                let mut rec = match super::decode_record(&v) {
                    Ok(r) => r,
                    Err(e) => return Err(ConflictableTransactionError::Abort(e)),
                };
                if let Some(s) = change.status {
                    rec.status = s;
                }
                if let Some((code, text)) = &change.ack {
                    rec.ack_code.clone_from(code);
                    rec.ack.clone_from(text);
                }
                if let Some(e) = &change.error {
                    rec.errors.push(e.clone());
                }
                let v =
                    super::replace_record(&v, &rec).map_err(ConflictableTransactionError::Abort)?;
                m.insert(&id[..], v)?;
                Ok(())
            });
        r.map_err(tx_err)
    }

    /// Notes that the unreadable booking with `fingerprint` was stored; false when it had
    /// been already (so it is stored once, not at every poll).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] (nothing written) under the
    /// free-space reserve.
    pub fn first_bad_booking(&self, channel: &str, fingerprint: &str) -> Result<bool, StoreError> {
        self.space.check(WritePath::Booking)?;
        let k = key("bad", channel, fingerprint);
        Ok(self
            .id_map()?
            .compare_and_swap(k, None::<&[u8]>, Some(&[][..]))?
            .is_ok())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Durability;

    fn record(id: u64, channel: &str) -> MessageRecord {
        MessageRecord {
            business_keys: Vec::new(),
            dedup_key: String::new(),
            resent_from: None,
            id,
            channel: channel.into(),
            received_at_ms: 1,
            peer: "latrexa".into(),
            format: channels::source::RecordFormat::Latrexa.into(),
            message_type: "booking.create".into(),
            control_id: id.to_string(),
            sending_application: "LATREXA".into(),
            sending_facility: "org".into(),
            version: String::new(),
            charset: "utf-8".into(),
            size: 2,
            truncated: false,
            status: Status::Received,
            ack_code: String::new(),
            ack: String::new(),
            errors: vec![],
            config_version: "v".into(),
            deliveries: vec![],
        }
    }

    /// A booking entry as the bookings worker first stores it (state `Received`), for tests.
    pub(crate) fn entry(id: u64, latrexa_id: &str) -> BookingEntry {
        BookingEntry {
            latrexa_id: latrexa_id.into(),
            his_appointment_id: None,
            his_accepted: false,
            booking: PendingBooking {
                id: latrexa_id.into(),
                version: 1,
                ..PendingBooking::default()
            },
            fingerprint: "f".into(),
            state: BookingState::Received,
            message_id: id,
            control_id: id.to_string(),
            siu: "MSH|...".into(),
            updated_at_ms: id,
        }
    }

    #[test]
    fn entries_move_with_their_record_and_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let metrics = Metrics::new("t");
        {
            let s = Store::open(dir.path(), Durability::Os, &metrics).expect("open");
            s.put_booking(&record(10, "lx"), b"{}", &entry(10, "LX-1"))
                .expect("put");
            s.put_booking(&record(11, "lx"), b"{}", &entry(11, "LX-2"))
                .expect("put");
            s.put_booking(&record(12, "other"), b"{}", &entry(12, "LX-1"))
                .expect("put");
            let mut e = entry(10, "LX-1");
            e.his_appointment_id = Some("HIS-9".into());
            e.state = BookingState::Confirmed;
            s.advance_booking(
                "lx",
                &e,
                &RecordChange {
                    status: Some(Status::Delivered),
                    ack: Some(("AA".into(), "MSH|ack".into())),
                    error: None,
                },
            )
            .expect("advance");
            assert!(s.first_bad_booking("lx", "abc").expect("bad"));
            assert!(!s.first_bad_booking("lx", "abc").expect("bad"));
            s.db.flush().expect("flush");
        }
        let s = crate::store::tests::reopen(|| Store::open(dir.path(), Durability::Os, &metrics));
        let e = s.booking_entry("lx", "LX-1").expect("get").expect("entry");
        assert_eq!(e.state, BookingState::Confirmed);
        assert_eq!(
            s.latrexa_id_of("lx", "HIS-9").expect("his").as_deref(),
            Some("LX-1")
        );
        let rec = s.get(10).expect("get").expect("record");
        assert_eq!(
            (rec.status, rec.ack_code.as_str()),
            (Status::Delivered, "AA")
        );
        let open: Vec<String> = s
            .unsettled_bookings("lx")
            .expect("scan")
            .into_iter()
            .map(|e| e.latrexa_id)
            .collect();
        assert_eq!(
            open,
            ["LX-2"],
            "other channels and settled entries left out"
        );
        assert_eq!(
            s.list(&crate::store::Query {
                control_id: Some("11".into()),
                limit: 5,
                ..Default::default()
            })
            .expect("list")
            .len(),
            1
        );
    }

    /// The delivery worker learns the HIS id while the bookings worker holds an older copy of
    /// the entry without it: the bookings worker's write keeps the learnt id (the write merges
    /// inside its transaction, it never overwrites blindly).
    #[test]
    fn a_learnt_his_id_survives_a_write_of_an_older_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        s.put_booking(&record(10, "lx"), b"{}", &entry(10, "LX-1"))
            .expect("put");
        let mut older = s.booking_entry("lx", "LX-1").expect("get").expect("entry");
        let learn = |channel: &str| {
            s.appointment_link(
                crate::store::appointments::LinkScope {
                    destination: "his/up",
                    bookings_channel: Some(channel),
                },
                &crate::store::ledger::AppointmentRef {
                    placer_id: Some("LX-1".into()),
                    filler_id: Some("HIS-7".into()),
                    moved: false,
                },
            )
            .expect("learn")
            .booking
        };
        assert_eq!(
            learn("lx").and_then(|e| e.his_appointment_id).as_deref(),
            Some("HIS-7")
        );
        assert_eq!(learn("other"), None);
        older.state = BookingState::HisAccepted;
        s.advance_booking("lx", &older, &RecordChange::default())
            .expect("advance");
        let now = s.booking_entry("lx", "LX-1").expect("get").expect("entry");
        assert_eq!(now.state, BookingState::HisAccepted);
        assert_eq!(now.his_appointment_id.as_deref(), Some("HIS-7"));
        assert!(now.his_accepted);
        assert_eq!(
            s.latrexa_id_of("lx", "HIS-7").expect("his").as_deref(),
            Some("LX-1")
        );
        // A new revision written from a copy read before the id was learnt keeps it too.
        let mut revision = entry(11, "LX-1");
        revision.booking.version = 2;
        s.put_booking(&record(11, "lx"), b"{}", &revision)
            .expect("put");
        let now = s.booking_entry("lx", "LX-1").expect("get").expect("entry");
        assert_eq!(
            (now.message_id, now.his_appointment_id.as_deref()),
            (11, Some("HIS-7"))
        );
    }

    /// With encryption on, the booking (patient name, phone) is sealed in the entry and the
    /// raw tree, and reads back whole.
    #[test]
    fn with_encryption_on_bookings_are_sealed() {
        use crate::store::seal::{Seal, StoreKey};
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open_sealed(
            dir.path(),
            Durability::Os,
            &Metrics::new("t"),
            Seal::new(&[StoreKey {
                id: "k1".into(),
                key: [7; 32],
            }]),
        )
        .expect("open");
        let marker = "Zqvorlandt";
        let mut e = entry(10, "LX-1");
        e.booking.last_name = marker.to_string();
        s.put_booking(
            &record(10, "lx"),
            format!("{{\"lastName\":\"{marker}\"}}").as_bytes(),
            &e,
        )
        .expect("put");
        let clear = |t: &sled::Tree| {
            t.iter().any(|kv| {
                let (_, v) = kv.expect("read");
                v.windows(marker.len()).any(|w| w == marker.as_bytes())
            })
        };
        assert!(!clear(&s.id_map().expect("tree")), "entry in clear");
        assert!(!clear(&s.raw), "booking body in clear");
        let back = s.booking_entry("lx", "LX-1").expect("get").expect("entry");
        assert_eq!(back, e);
        assert!(s
            .raw(10)
            .expect("raw")
            .is_some_and(|r| r.windows(marker.len()).any(|w| w == marker.as_bytes())));
    }
}
