//! One model of an appointment across the Latrexa agent's two directions: for an appointment
//! named by any of its ids (the Latrexa id, the HIS's id, the placer and filler ids of an SIU),
//! what both sides know, read and completed in one sled transaction.
//!
//! Two trees hold the facts, and keep the layout they have had since they were introduced
//! (so a store written by an earlier version is read as it is, without a migration; the test
//! `a_store_written_in_the_earlier_layout_is_read_whole` writes entries byte for byte as that
//! version did and reads them through this layer):
//!
//! | tree | says | keyed by |
//! |---|---|---|
//! | `id_map` ([`super::id_map`]) | Latrexa -> HIS: an online booking, the HIS id it got, where it stands | bookings channel + Latrexa id (`lx`), bookings channel + HIS id (`his`, the index) |
//! | `ledger` ([`super::ledger`]) | HIS -> a destination: what was last sent about the appointment and the destination's own id of it (Latrexa's `latrexaId`) | destination + `f:` filler (HIS) id / `p:` placer id |
//!
//! An online booking is the same appointment in both: the HIS writes it with the Latrexa id as
//! its placer id (SCH-1) and its own id as filler id (SCH-2), so the booking's `lx` key is the
//! ledger's `p:` identity and its HIS id the ledger's `f:` identity. [`Store::appointment_link`]
//! is the one place that joins them: given the destination (with the bookings channel its
//! configuration links, `bookings_channel`) and the ids a message names, it finds
//!
//! - the destination's ledger entry, under any identity the message names;
//! - the booking, by the placer id (a Latrexa id), else by the filler id through the `his`
//!   index (an HIS message that names only its own id, after the HIS named it in its booking
//!   answer), else by the Latrexa id the ledger's entry holds;
//!
//! and answers the Latrexa id (the destination's answer, else the booking's id) and the HIS id
//! (the filler the message names, else the one the booking learnt). In the same transaction it
//! records in the booking an HIS id the message names for the first time (the HIS's own SIU
//! naming the booking in SCH-1): the bookings worker then confirms with it, and its writes
//! merge with what is stored ([`super::id_map`]), so neither task overwrites what the other
//! learnt. A filler id equal to the Latrexa id (an HIS echoing the placer id) is never taken
//! for the HIS's id.
//!
//! Why this means no second appointment on either side after a restart or a reprocess:
//! - at Latrexa: an HIS message about a booking is uploaded with the booking's `latrexaId`
//!   whichever of the booking's ids it names, and an appointment Latrexa already paired keeps
//!   the id of its pair (the ledger); uploads are keyed by the HIS id, so a resend updates;
//! - at the HIS: a booking the HIS accepted is only ever changed (S13/S15), never booked again,
//!   however often Latrexa lists it or the engine restarts (`crate::latrexa_bookings`); the
//!   HIS id learnt here goes in SCH-2 of those changes.

use super::id_map::{key as id_key, BookingEntry};
use super::ledger::{ledger_key, tx_err, AppointmentRef, LedgerEntry};
use super::space::WritePath;
use super::{Store, StoreError};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

/// Where to look: the destination's ledger and the bookings channel it is linked to.
#[derive(Debug, Clone, Copy)]
pub struct LinkScope<'a> {
    /// `channel/destination` of the ledger.
    pub destination: &'a str,
    /// The `type = "latrexa"` channel whose online bookings the destination's appointments
    /// may be (`bookings_channel` of a Latrexa upload destination).
    pub bookings_channel: Option<&'a str>,
}

/// What both sides know about one appointment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AppointmentLink {
    /// What the destination was last sent about it.
    pub ledger: Option<LedgerEntry>,
    /// The online booking it is, as the bookings channel knows it (after any HIS id this
    /// call learnt).
    pub booking: Option<BookingEntry>,
    /// Latrexa's id: the one the destination answered (the ledger), else the booking's.
    pub latrexa_id: Option<String>,
    /// The HIS's id: the filler id named, else the one the booking learnt, else the ledger's.
    pub his_id: Option<String>,
    /// True when this call recorded the HIS id in the booking.
    pub learnt: bool,
}

type Abort = ConflictableTransactionError<StoreError>;

fn abort(e: StoreError) -> Abort {
    ConflictableTransactionError::Abort(e)
}

impl Store {
    /// What the destination's ledger and the linked bookings channel know about the
    /// appointment `ids` names, completed with an HIS id named for the first time (see the
    /// module documentation). One transaction: a booking written meanwhile by the bookings
    /// worker is read whole or not at all.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or an entry does not open; [`StoreError::DiskFull`]
    /// (nothing written) when an HIS id is to be recorded under the free-space reserve.
    pub fn appointment_link(
        &self,
        scope: LinkScope<'_>,
        ids: &AppointmentRef,
    ) -> Result<AppointmentLink, StoreError> {
        let map = self.id_map()?;
        let r: Result<AppointmentLink, TransactionError<StoreError>> =
            (&self.ledger, &map).transaction(|(l, i)| self.link_in(l, i, scope, ids));
        r.map_err(tx_err)
    }

    fn link_in(
        &self,
        l: &TransactionalTree,
        i: &TransactionalTree,
        scope: LinkScope<'_>,
        ids: &AppointmentRef,
    ) -> Result<AppointmentLink, Abort> {
        let mut link = AppointmentLink::default();
        for identity in ids.identities() {
            if let Some(v) = l.get(ledger_key(scope.destination, &identity))? {
                link.ledger = Some(self.decode_entry(&v).map_err(abort)?);
                break;
            }
        }
        if let Some(channel) = scope.bookings_channel {
            let booking = |latrexa_id: &str| -> Result<Option<BookingEntry>, Abort> {
                match i.get(id_key("lx", channel, latrexa_id))? {
                    Some(v) => self.decode_booking(&v).map(Some).map_err(abort),
                    None => Ok(None),
                }
            };
            let mut found = None;
            if let Some(placer) = ids.placer_id.as_deref() {
                found = booking(placer)?;
            }
            if found.is_none() {
                if let Some(his) = ids.filler_id.as_deref() {
                    if let Some(lx) = i.get(id_key("his", channel, his))? {
                        found = booking(&String::from_utf8_lossy(&lx))?;
                    }
                }
            }
            if found.is_none() {
                let ledger_ids = link
                    .ledger
                    .as_ref()
                    .map(|e| (e.remote_id.clone(), e.appointment.placer_id.clone()));
                if let Some((remote, placer)) = ledger_ids {
                    for id in remote.into_iter().chain(placer) {
                        found = booking(&id)?;
                        if found.is_some() {
                            break;
                        }
                    }
                }
            }
            if let Some(mut entry) = found {
                let named = ids
                    .filler_id
                    .as_deref()
                    .filter(|h| !h.is_empty() && *h != entry.latrexa_id);
                if let Some(his) = named {
                    if entry.his_appointment_id.as_deref() != Some(his) || !entry.his_accepted {
                        self.space.check(WritePath::Booking).map_err(abort)?;
                        entry.his_appointment_id = Some(his.to_owned());
                        // The HIS reports the appointment: it has it.
                        entry.his_accepted = true;
                        let v = self.encode_booking(&entry).map_err(abort)?;
                        i.insert(id_key("lx", channel, &entry.latrexa_id), v)?;
                        i.insert(id_key("his", channel, his), entry.latrexa_id.as_bytes())?;
                        link.learnt = true;
                    }
                }
                link.booking = Some(entry);
            }
        }
        link.latrexa_id = link
            .ledger
            .as_ref()
            .and_then(|e| e.remote_id.clone())
            .or_else(|| link.booking.as_ref().map(|b| b.latrexa_id.clone()));
        link.his_id = ids
            .filler_id
            .clone()
            .filter(|h| link.latrexa_id.as_deref() != Some(h.as_str()))
            .or_else(|| {
                link.booking
                    .as_ref()
                    .and_then(|b| b.his_appointment_id.clone())
            })
            .or_else(|| {
                link.ledger
                    .as_ref()
                    .and_then(|e| e.appointment.filler_id.clone())
            });
        Ok(link)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::id_map::tests::entry;
    use crate::store::id_map::{BookingState, RecordChange};
    use crate::store::ledger::LedgerWrite;
    use crate::store::Durability;
    use crate::store::{MessageRecord, Status};

    fn record(id: u64) -> MessageRecord {
        let mut r = crate::store::tests::record(id, "bookings", &id.to_string(), Status::Received);
        r.format = channels::source::RecordFormat::Latrexa.into();
        r
    }

    const SCOPE: LinkScope<'static> = LinkScope {
        destination: "his/lx",
        bookings_channel: Some("bookings"),
    };

    fn ids(placer: Option<&str>, filler: Option<&str>) -> AppointmentRef {
        AppointmentRef {
            placer_id: placer.map(Into::into),
            filler_id: filler.map(Into::into),
            ..AppointmentRef::default()
        }
    }

    /// The HIS names its id in its own SIU (SCH-1 = the Latrexa id): learnt once, in the
    /// booking, and from then on the appointment is found by either id; an HIS message that
    /// names only its own id is the same booking (uploaded with its Latrexa id). An SCH-2
    /// that only echoes the Latrexa id is never taken for the HIS's id.
    #[test]
    fn an_appointment_is_found_by_any_of_its_ids_and_the_his_id_is_learnt_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        s.put_booking(&record(10), b"{}", &entry(10, "LX-1"))
            .expect("put");
        let echo = s
            .appointment_link(SCOPE, &ids(Some("LX-1"), Some("LX-1")))
            .expect("link");
        assert!(!echo.learnt);
        assert_eq!(echo.his_id, None, "the Latrexa id is not the HIS's id");
        assert_eq!(echo.latrexa_id.as_deref(), Some("LX-1"));

        let first = s
            .appointment_link(SCOPE, &ids(Some("LX-1"), Some("HIS-7")))
            .expect("link");
        assert!(first.learnt);
        assert_eq!(
            (first.latrexa_id.as_deref(), first.his_id.as_deref()),
            (Some("LX-1"), Some("HIS-7"))
        );
        let again = s
            .appointment_link(SCOPE, &ids(Some("LX-1"), Some("HIS-7")))
            .expect("link");
        assert!(!again.learnt, "nothing new");
        let stored = s
            .booking_entry("bookings", "LX-1")
            .expect("get")
            .expect("entry");
        assert_eq!(stored.his_appointment_id.as_deref(), Some("HIS-7"));
        assert!(stored.his_accepted);

        // Only the HIS's own id: the same booking.
        let by_filler = s
            .appointment_link(SCOPE, &ids(None, Some("HIS-7")))
            .expect("link");
        assert_eq!(by_filler.latrexa_id.as_deref(), Some("LX-1"));
        // Another channel's bookings and unknown ids are not linked.
        let other = LinkScope {
            destination: "his/lx",
            bookings_channel: Some("other"),
        };
        assert_eq!(
            s.appointment_link(other, &ids(Some("LX-1"), Some("HIS-7")))
                .expect("link")
                .latrexa_id,
            None
        );
        assert_eq!(
            s.appointment_link(SCOPE, &ids(Some("PL-9"), Some("HIS-9")))
                .expect("link"),
            AppointmentLink {
                his_id: Some("HIS-9".into()),
                ..AppointmentLink::default()
            }
        );

        // Once Latrexa paired the upload, the ledger's id is the answer, and the booking is
        // still found through it.
        let mut w = LedgerWrite {
            destination: "his/lx".into(),
            entry: LedgerEntry {
                appointment: ids(Some("LX-1"), Some("HIS-7")),
                slot: String::new(),
                status: "booked".into(),
                closed: false,
                remote_id: Some("LX-1".into()),
                body: "{}".into(),
                message_id: 20,
                updated_at_ms: 1,
            },
        };
        s.ledger_put(&w).expect("ledger");
        let l = s
            .appointment_link(SCOPE, &ids(None, Some("HIS-7")))
            .expect("link");
        assert_eq!(l.ledger.map(|e| e.message_id), Some(20));
        assert_eq!(l.booking.map(|b| b.latrexa_id).as_deref(), Some("LX-1"));
        // A walk-in Latrexa paired with its own id (no booking): the ledger answers.
        w.entry.appointment = ids(None, Some("HIS-W"));
        w.entry.remote_id = Some("LX-AP-000001".into());
        s.ledger_put(&w).expect("ledger");
        let walk_in = s
            .appointment_link(SCOPE, &ids(None, Some("HIS-W")))
            .expect("link");
        assert_eq!(
            (walk_in.latrexa_id.as_deref(), walk_in.booking),
            (Some("LX-AP-000001"), None)
        );
    }

    /// With `his_id_wait_secs = 0` the bookings worker writes the waiting booking at once,
    /// from the copy it read before the delivery worker learnt the HIS id: the id stays.
    #[test]
    fn the_bookings_worker_never_overwrites_an_id_learnt_through_the_link() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
        s.put_booking(&record(10), b"{}", &entry(10, "LX-1"))
            .expect("put");
        let mut older = s
            .booking_entry("bookings", "LX-1")
            .expect("get")
            .expect("entry");
        s.appointment_link(SCOPE, &ids(Some("LX-1"), Some("HIS-7")))
            .expect("link");
        older.state = BookingState::HisAccepted;
        s.advance_booking(
            "bookings",
            &older,
            &RecordChange {
                status: Some(Status::Retrying),
                error: Some("no HIS appointment id yet".into()),
                ..RecordChange::default()
            },
        )
        .expect("advance");
        let now = s
            .booking_entry("bookings", "LX-1")
            .expect("get")
            .expect("entry");
        assert_eq!(now.state, BookingState::HisAccepted);
        assert_eq!(now.his_appointment_id.as_deref(), Some("HIS-7"));
    }

    /// A store written by the version before this layer: the entries as that version wrote
    /// them, byte for byte (a booking entry from before `his_accepted` existed, its `his`
    /// index, a ledger entry: 8 bytes of message id, then the JSON), read after a reopen.
    #[test]
    fn a_store_written_in_the_earlier_layout_is_read_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
            let map = s.id_map().expect("tree");
            let entry = serde_json::json!({
                "latrexa_id": "LX-OLD",
                "his_appointment_id": "HIS-OLD",
                "booking": {"id": "LX-OLD", "version": 1, "action": "create",
                            "firstName": "A", "lastName": "B", "doctorCode": "D", "clinicCode": "C",
                            "start": "2026-06-15T10:30:00", "end": "2026-06-15T11:00:00"},
                "fingerprint": "f",
                "state": {"state": "confirmed"},
                "message_id": 10,
                "control_id": "10",
                "siu": "MSH|...",
                "updated_at_ms": 10
            });
            map.insert(
                b"lx\0bookings\0LX-OLD",
                serde_json::to_vec(&entry).expect("json"),
            )
            .expect("insert");
            map.insert(b"his\0bookings\0HIS-OLD", &b"LX-OLD"[..])
                .expect("insert");
            let ledger = serde_json::json!({
                "appointment": {"placer_id": "LX-OLD", "filler_id": "HIS-OLD"},
                "slot": "", "status": "booked", "closed": false, "remote_id": "LX-OLD",
                "body": "{}", "message_id": 30, "updated_at_ms": 1
            });
            let mut v = 30u64.to_be_bytes().to_vec();
            v.extend_from_slice(&serde_json::to_vec(&ledger).expect("json"));
            let mut k = vec![6u8];
            k.extend_from_slice(b"his/lxf:HIS-OLD");
            s.ledger.insert(k, v).expect("insert");
            s.db.flush().expect("flush");
        }
        let s = crate::store::tests::reopen(|| {
            Store::open(dir.path(), Durability::Os, &Metrics::new("t"))
        });
        let l = s
            .appointment_link(SCOPE, &ids(None, Some("HIS-OLD")))
            .expect("link");
        // The old entry lacked `his_accepted`: the HIS naming the booking completes it.
        assert!(l.learnt);
        assert_eq!(
            (l.latrexa_id.as_deref(), l.his_id.as_deref()),
            (Some("LX-OLD"), Some("HIS-OLD"))
        );
        assert_eq!(l.ledger.map(|e| e.message_id), Some(30));
        let b = l.booking.expect("the old booking entry");
        assert_eq!(b.state, BookingState::Confirmed);
        assert!(b.his_accepted);
        assert_eq!(b.booking.doctor_code, "D", "the booking as stored");
        // And by the placer id alone (the booking's Latrexa id); nothing more to learn.
        let by_placer = s
            .appointment_link(SCOPE, &ids(Some("LX-OLD"), Some("HIS-OLD")))
            .expect("link");
        assert!(!by_placer.learnt);
        assert_eq!(by_placer.his_id.as_deref(), Some("HIS-OLD"));
        let by_placer = s
            .appointment_link(SCOPE, &ids(Some("LX-OLD"), None))
            .expect("link");
        assert_eq!(by_placer.his_id.as_deref(), Some("HIS-OLD"));
    }
}
