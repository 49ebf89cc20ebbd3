//! The appointment ledger: per destination and appointment identity, what the engine last sent
//! about that appointment and what the destination answered. Destinations whose meaning depends
//! on history read it before a delivery (OpsPort keys an appointment by patient, day and start
//! time, so a reschedule must close the slot the ledger names before the new one is upserted).
//!
//! | tree | key | value |
//! |---|---|---|
//! | `ledger` | destination (len-prefixed), identity | [`LedgerEntry`] as JSON, sealed |
//! | `ledger_by_message` | message id, ledger key | empty: which entries a message last wrote |
//!
//! An identity is `f:` + the filler (HIS) appointment id or `p:` + the placer id
//! ([`AppointmentRef::identities`]); an entry is written under each identity the appointment
//! has, so a later message that names only one of them finds it. `r:` + a reference
//! (`clinic:<code>`, `doctor:<code>`) marks a reference record an appointment named as sent
//! ([`OutboxItem::reference`]): its value is the message id only, and while it is there the
//! appointment's abbreviated upsert of that record is not sent again.
//!
//! Entries keep each appointment's message order: an entry is only replaced by one of the same
//! or a later message (message ids grow with ingest), and the delivery worker does not send
//! an appointment payload of an earlier message than the one its entry names (an operator's
//! reprocess of an old S12 after the S13 does not move the slot back).
//!
//! A delivery's entry is written in the same sled transaction as its outcome
//! ([`Store::finish_with_ledger`]), so the ledger never says "sent" about something the outbox
//! still holds as undelivered, nor the reverse. The intermediate state of a reschedule (old slot
//! closed, new one not yet upserted) is written on its own ([`Store::ledger_put`]): after a
//! crash between the two the entry names the closed slot, and the retried delivery upserts the
//! new one without opening anything twice. Retention removes an entry together with the
//! message that wrote it last (`ledger_by_message`), never earlier.
//!
//! For a Latrexa upload destination linked to a bookings channel, an entry and that channel's
//! `id_map` entry describe one appointment; [`Store::appointment_link`]
//! (`super::appointments`) reads them together.

use super::outbox::{outbox_key, DeliveryStatus, OutboxItem};
use super::space::WritePath;
use super::{Store, StoreError};
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};
use sled::Transactional;

/// The appointment an outbox item is about: the ids it had in the message it was rendered from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppointmentRef {
    /// The placer's appointment id (SCH-1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placer_id: Option<String>,
    /// The filler's appointment id (SCH-2, the HIS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filler_id: Option<String>,
    /// True for a reschedule (SIU^S13): the message moves an appointment it expects the
    /// destination to have; not part of the appointment's identity.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub moved: bool,
}

impl AppointmentRef {
    /// The ids of a canonical appointment, or `None` when it has neither.
    pub fn of(a: &transforms::model::Appointment) -> Option<AppointmentRef> {
        let r = AppointmentRef {
            placer_id: a.placer_id.clone().filter(|s| !s.is_empty()),
            filler_id: a.filler_id.clone().filter(|s| !s.is_empty()),
            moved: false,
        };
        (r.placer_id.is_some() || r.filler_id.is_some()).then_some(r)
    }

    /// The identities the ledger keys this appointment by, the filler id first.
    pub fn identities(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(2);
        if let Some(f) = &self.filler_id {
            out.push(format!("f:{f}"));
        }
        if let Some(p) = &self.placer_id {
            out.push(format!("p:{p}"));
        }
        out
    }
}

/// What was last sent to one destination about one appointment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// The appointment's ids.
    pub appointment: AppointmentRef,
    /// The destination's key of the slot (OpsPort: patient, day, start time); empty when the
    /// destination has none.
    pub slot: String,
    /// The status as sent, in the destination's words.
    pub status: String,
    /// Whether that status closes the slot (cancelled, deleted, no-show).
    pub closed: bool,
    /// The destination's own id of the appointment, when its answer gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    /// The body last sent (what a later close re-sends with the closed status).
    pub body: String,
    /// The message whose delivery wrote the entry last; retention removes the entry with it.
    pub message_id: u64,
    /// Unix ms of the write.
    pub updated_at_ms: u64,
}

/// One ledger write: the destination (`channel/destination`) and the entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerWrite {
    /// `channel/destination`.
    pub destination: String,
    /// The entry, written under each of its appointment's identities.
    pub entry: LedgerEntry,
}

/// The key of a destination's entry for one identity.
pub(super) fn ledger_key(destination: &str, identity: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(destination.len() + identity.len() + 1);
    k.push(destination.len().min(255) as u8);
    k.extend_from_slice(destination.as_bytes());
    k.extend_from_slice(identity.as_bytes());
    k
}

fn by_message_key(message_id: u64, ledger_key: &[u8]) -> Vec<u8> {
    let mut k = message_id.to_be_bytes().to_vec();
    k.extend_from_slice(ledger_key);
    k
}

/// A `ledger_by_message` key and the `ledger` key it names.
pub(crate) type LedgerRow = (Vec<u8>, Vec<u8>);

type TxResult<T> = Result<T, TransactionError<StoreError>>;

pub(super) fn tx_err(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::Sled(e.to_string()),
    }
}

/// Writes `w` in a transaction over `ledger` and `by_message`, moving each identity's
/// `ledger_by_message` row from the message that wrote it before to this one.
pub(crate) fn write_in(
    ledger: &TransactionalTree,
    by_message: &TransactionalTree,
    w: &LedgerWrite,
    sealed: &[u8],
) -> Result<(), ConflictableTransactionError<StoreError>> {
    // The ledger keeps the message order of each appointment: an entry written by a later
    // message (a higher message id: ids grow with ingest) is never replaced by an earlier
    // message's, so a reprocess of an older message cannot move the slot back.
    for identity in w.entry.appointment.identities() {
        let k = ledger_key(&w.destination, &identity);
        if let Some(old) = ledger.get(&k)? {
            if old_message_id(&old).is_some_and(|id| id > w.entry.message_id) {
                return Ok(());
            }
        }
    }
    for identity in w.entry.appointment.identities() {
        let k = ledger_key(&w.destination, &identity);
        if let Some(old) = ledger.get(&k)? {
            if let Some(old_id) = old_message_id(&old) {
                by_message.remove(by_message_key(old_id, &k))?;
            }
        }
        ledger.insert(k.as_slice(), sealed)?;
        by_message.insert(by_message_key(w.entry.message_id, &k), &[][..])?;
    }
    Ok(())
}

/// The message id at the head of a stored entry (stored as 8 bytes before the sealed JSON, so
/// retention and rewrites need no key to read it).
fn old_message_id(stored: &[u8]) -> Option<u64> {
    stored.get(..8)?.try_into().ok().map(u64::from_be_bytes)
}

impl Store {
    fn encode_entry(&self, e: &LedgerEntry) -> Result<Vec<u8>, StoreError> {
        let json = serde_json::to_vec(e).map_err(|e| StoreError::Codec(e.to_string()))?;
        let sealed = self.seal.seal(b"ledger", &json)?;
        let mut v = e.message_id.to_be_bytes().to_vec();
        v.extend_from_slice(&sealed);
        Ok(v)
    }

    /// An entry as stored: the message id (8 bytes), then the JSON, sealed.
    pub(super) fn decode_entry(&self, stored: &[u8]) -> Result<LedgerEntry, StoreError> {
        let json = self
            .seal
            .open(b"ledger", stored.get(8..).unwrap_or_default())?;
        serde_json::from_slice(&json).map_err(|e| StoreError::Codec(e.to_string()))
    }

    /// The entry of `destination` for an appointment: the first of its identities found.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails or the entry does not open.
    pub fn ledger_get(
        &self,
        destination: &str,
        appointment: &AppointmentRef,
    ) -> Result<Option<LedgerEntry>, StoreError> {
        for identity in appointment.identities() {
            if let Some(v) = self.ledger.get(ledger_key(destination, &identity))? {
                return self.decode_entry(&v).map(Some);
            }
        }
        Ok(None)
    }

    /// Whether `destination` already had the reference record `reference` from this engine.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails.
    pub fn reference_sent(&self, destination: &str, reference: &str) -> Result<bool, StoreError> {
        Ok(self
            .ledger
            .contains_key(ledger_key(destination, &format!("r:{reference}")))?)
    }

    /// Writes one entry on its own (the closed old slot of a reschedule).
    ///
    /// # Errors
    ///
    /// [`StoreError`] when sled fails; [`StoreError::DiskFull`] under the free-space reserve.
    pub fn ledger_put(&self, w: &LedgerWrite) -> Result<(), StoreError> {
        self.space.check(WritePath::Delivery)?;
        let sealed = self.encode_entry(&w.entry)?;
        let r: TxResult<()> = (&self.ledger, &self.ledger_by_message)
            .transaction(|(l, b)| write_in(l, b, w, &sealed));
        r.map_err(tx_err)
    }

    /// [`Store::finish`], and the ledger entry of the delivery in the same transaction.
    ///
    /// # Errors
    ///
    /// As [`Store::finish`].
    pub fn finish_with_ledger(
        &self,
        item: &OutboxItem,
        delivered: bool,
        detail: &str,
        ledger: Option<&LedgerWrite>,
    ) -> Result<super::Status, StoreError> {
        self.space.check(WritePath::Delivery)?;
        if delivered && ledger.is_none() && item.reference.is_none() {
            return self.finish_delivered(item, detail);
        }
        let encoded = item.encode(&self.seal)?;
        let sealed = ledger.map(|w| self.encode_entry(&w.entry)).transpose()?;
        let key = item.message_id.to_be_bytes();
        let outbox = outbox_key(&item.destination, item.seq);
        let r: TxResult<super::Status> = (
            &self.messages,
            &self.outbox,
            &self.dead_letters,
            &self.ledger,
            &self.ledger_by_message,
        )
            .transaction(|(m, o, d, l, b)| {
                o.remove(outbox.as_slice())?;
                if !delivered {
                    d.insert(outbox.as_slice(), encoded.as_slice())?;
                }
                if let (Some(w), Some(sealed)) = (ledger, &sealed) {
                    write_in(l, b, w, sealed)?;
                }
                if let (true, Some(r)) = (delivered, &item.reference) {
                    let k = ledger_key(&item.destination, &format!("r:{r}"));
                    if let Some(old_id) = l.get(&k)?.as_deref().and_then(old_message_id) {
                        b.remove(by_message_key(old_id, &k))?;
                    }
                    l.insert(k.as_slice(), &key[..])?;
                    b.insert(by_message_key(item.message_id, &k), &[][..])?;
                }
                let status = if delivered {
                    DeliveryStatus::Delivered
                } else {
                    DeliveryStatus::DeadLetter
                };
                super::outbox::update_delivery(m, &key, item, status, detail)
            });
        r.map_err(tx_err)
    }

    /// The ledger keys message `id` wrote last, for retention to remove with it.
    pub(crate) fn ledger_keys_of(&self, id: u64) -> Result<Vec<LedgerRow>, StoreError> {
        let mut out = Vec::new();
        for k in self.ledger_by_message.scan_prefix(id.to_be_bytes()).keys() {
            let k = k?;
            out.push((k.to_vec(), k[8..].to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::store::Durability;

    fn entry(message_id: u64, slot: &str) -> LedgerWrite {
        LedgerWrite {
            destination: "ch/ops".into(),
            entry: LedgerEntry {
                appointment: AppointmentRef {
                    placer_id: Some("PL-1".into()),
                    filler_id: Some("HIS-1".into()),
                    moved: false,
                },
                slot: slot.into(),
                status: "Confirmed".into(),
                closed: false,
                remote_id: None,
                body: "{}".into(),
                message_id,
                updated_at_ms: 1,
            },
        }
    }

    #[test]
    fn an_entry_is_found_by_either_id_survives_a_reopen_and_moves_with_its_message() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let s = Store::open(dir.path(), Durability::Os, &Metrics::new("t")).expect("open");
            s.ledger_put(&entry(7, "a|10:00")).expect("put");
            s.ledger_put(&entry(9, "a|11:00")).expect("put");
            assert!(s.ledger_keys_of(7).expect("keys").is_empty(), "moved to 9");
            assert_eq!(s.ledger_keys_of(9).expect("keys").len(), 2);
        }
        let s = crate::store::tests::reopen(|| {
            Store::open(dir.path(), Durability::Os, &Metrics::new("t"))
        });
        let only_placer = AppointmentRef {
            placer_id: Some("PL-1".into()),
            filler_id: None,
            moved: false,
        };
        let got = s.ledger_get("ch/ops", &only_placer).expect("get");
        assert_eq!(got.map(|e| e.slot).as_deref(), Some("a|11:00"));
        assert_eq!(s.ledger_get("other/ops", &only_placer).expect("get"), None);
    }
}
