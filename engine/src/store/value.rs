//! How a `messages` value is laid out: the record's JSON, then, when the raw bytes are beside
//! it, [`RAW_BESIDE`] and the (sealed) raw bytes; and since store layout 2, that whole text
//! compressed.
//!
//! | first byte | layout |
//! |---|---|
//! | `{` | plain: the record's JSON, then [`RAW_BESIDE`] and the raw bytes, or the JSON alone (the earliest layout, raw bytes in the `raw` tree) |
//! | [`ZSTD_DICTIONARY_1`] | a zstd frame of the plain layout, compressed against [`DICTIONARY_1`] |
//!
//! A record is a few hundred bytes of JSON whose field names, statuses and acknowledgement
//! repeat in every message, and its HL7 v2 text repeats segment names and separators, so
//! each value is compressed on its own against a dictionary of that common text: 1.4 KB
//! (record and message) becomes about a fifth on the benchmark's ADT messages (see
//! docs/PERFORMANCE.md). The dictionary is part of the stored format: values written with
//! it open only with it, so it never changes; a better one would get a new first byte, and
//! both would be read. A value that does not get smaller is stored plain, and every reader
//! takes either layout, so a store keeps working whichever wrote it.
//!
//! The compression contexts live one per thread (making a zstd context per value costs more
//! than compressing it), with the dictionary prepared once per process.

use super::StoreError;
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::LazyLock;

/// In a plain value, what follows the record's JSON when the raw bytes are beside it: a byte
/// that JSON text never holds unescaped, so the first one ends the JSON.
pub(crate) const RAW_BESIDE: u8 = 0x1e;

/// The first byte of a value compressed against [`DICTIONARY_1`] (JSON text never starts with
/// it).
const ZSTD_DICTIONARY_1: u8 = 0x01;

/// The text values are compressed against: a record of each common kind and an HL7 v2
/// message's usual segments, all synthetic. Frozen: see the module's text.
static DICTIONARY_1: &[u8] = include_bytes!("dictionary-1.bin");

/// zstd's level: the default level's ratio at about 3 µs per value on the benchmark machine.
const LEVEL: i32 = 3;

/// The largest value a compressed frame may say it holds (a corrupt header must not make
/// the store allocate without bound): far above the largest message a source accepts.
const MAX_PLAIN: u64 = 1 << 30;

static ENCODER: LazyLock<zstd::dict::EncoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::EncoderDictionary::copy(DICTIONARY_1, LEVEL));
static DECODER: LazyLock<zstd::dict::DecoderDictionary<'static>> =
    LazyLock::new(|| zstd::dict::DecoderDictionary::copy(DICTIONARY_1));

thread_local! {
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// A `messages` value: the record's JSON, then, when given, the (sealed) raw bytes; stored
/// compressed when that is smaller.
pub(crate) fn record_value(mut plain: Vec<u8>, raw: Option<&[u8]>) -> Vec<u8> {
    if let Some(raw) = raw {
        plain.reserve(1 + raw.len());
        plain.push(RAW_BESIDE);
        plain.extend_from_slice(raw);
    }
    match compress(&plain) {
        Some(packed) if packed.len() < plain.len() => packed,
        _ => plain,
    }
}

/// `plain` compressed, after its first byte; `None` if zstd refused (the value is then
/// stored plain).
fn compress(plain: &[u8]) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = zstd::bulk::Compressor::with_prepared_dictionary(&ENCODER).ok();
        }
        let compressor = slot.as_mut()?;
        let mut out = Vec::with_capacity(1 + zstd::zstd_safe::compress_bound(plain.len()));
        out.push(ZSTD_DICTIONARY_1);
        // The frame goes straight after the first byte: no second buffer, no copy.
        let mut frame = std::io::Cursor::new(out);
        frame.set_position(1);
        compressor.compress_to_buffer(plain, &mut frame).ok()?;
        Some(frame.into_inner())
    })
}

/// A `messages` value opened: its record's JSON and the (sealed) raw bytes beside it.
#[derive(Debug)]
pub(crate) struct Opened<'a> {
    text: Cow<'a, [u8]>,
    /// Where the raw bytes start (after [`RAW_BESIDE`]); `None`: the JSON alone.
    raw_at: Option<usize>,
}

impl Opened<'_> {
    /// The record's JSON.
    pub(crate) fn json(&self) -> &[u8] {
        match self.raw_at {
            Some(at) => &self.text[..at - 1],
            None => &self.text,
        }
    }

    /// The (sealed) raw bytes beside the record; `None` for a value of the earliest layout
    /// (its raw bytes are in the `raw` tree) and for a booking message's (see `id_map`).
    pub(crate) fn raw(&self) -> Option<&[u8]> {
        self.raw_at.map(|at| &self.text[at..])
    }
}

/// Opens a `messages` value of any layout.
///
/// # Errors
///
/// [`StoreError::Codec`] for a compressed value that does not decompress, or a first byte
/// no layout has.
pub(crate) fn open(v: &[u8]) -> Result<Opened<'_>, StoreError> {
    let text = match v.first() {
        Some(&ZSTD_DICTIONARY_1) => Cow::Owned(decompress(&v[1..])?),
        _ => Cow::Borrowed(v),
    };
    let raw_at = text.iter().position(|b| *b == RAW_BESIDE).map(|at| at + 1);
    Ok(Opened { text, raw_at })
}

fn decompress(frame: &[u8]) -> Result<Vec<u8>, StoreError> {
    let corrupt = |why: &str| StoreError::Codec(format!("compressed record: {why}"));
    let size = match zstd::zstd_safe::get_frame_content_size(frame) {
        Ok(Some(size)) if size <= MAX_PLAIN => size,
        Ok(Some(_)) => return Err(corrupt("its header gives an impossible size")),
        Ok(None) | Err(_) => return Err(corrupt("its header gives no size")),
    };
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(
                zstd::bulk::Decompressor::with_prepared_dictionary(&DECODER)
                    .map_err(|e| corrupt(&e.to_string()))?,
            );
        }
        let decompressor = slot.as_mut().ok_or_else(|| corrupt("no context"))?;
        let capacity = usize::try_from(size).map_err(|_| corrupt("too large"))?;
        decompressor
            .decompress(frame, capacity)
            .map_err(|e| corrupt(&e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    const JSON: &[u8] =
        br#"{"id":1,"channel":"adt","status":"delivered","ack":"MSH|^~\\&|SB\rMSA|AA|1\r"}"#;
    const RAW: &[u8] = b"MSH|^~\\&|HIS|MAIN|SB|HUB|20260101120000||ADT^A04^ADT_A01|1|P|2.5.1\rPID|1||P1^^^MAIN^MR\r";

    #[test]
    fn the_dictionary_never_changes() {
        // Values written with it open only with it: a change here loses every stored record.
        let digest = sha2::Sha256::digest(DICTIONARY_1);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex, "7145d7e2ad1709f4450fe40d41cdcf7d2b38373a343c5ef6f937fd7e6072451a",
            "dictionary-1.bin changed: stored records would no longer open; add a new layout byte instead"
        );
    }

    #[test]
    fn a_value_with_its_raw_bytes_is_stored_smaller_and_reads_back_exactly() {
        let v = record_value(JSON.to_vec(), Some(RAW));
        assert_eq!(v[0], ZSTD_DICTIONARY_1);
        assert!(v.len() < JSON.len() + 1 + RAW.len(), "{} bytes", v.len());
        let opened = open(&v).expect("open");
        assert_eq!(opened.json(), JSON);
        assert_eq!(opened.raw(), Some(RAW));
    }

    #[test]
    fn a_value_without_raw_bytes_reads_back_without_them() {
        let v = record_value(JSON.to_vec(), None);
        let opened = open(&v).expect("open");
        assert_eq!(opened.json(), JSON);
        assert_eq!(opened.raw(), None);
    }

    #[test]
    fn plain_values_of_the_earlier_layouts_still_open() {
        let mut beside = JSON.to_vec();
        beside.push(RAW_BESIDE);
        beside.extend_from_slice(RAW);
        let opened = open(&beside).expect("open");
        assert_eq!((opened.json(), opened.raw()), (JSON, Some(RAW)));
        let alone = open(JSON).expect("open");
        assert_eq!((alone.json(), alone.raw()), (JSON, None));
    }

    #[test]
    fn a_value_that_does_not_shrink_is_stored_plain() {
        let v = record_value(b"{}".to_vec(), None);
        assert_eq!(v, b"{}");
    }

    #[test]
    fn a_damaged_compressed_value_is_a_codec_error_not_a_panic() {
        let mut v = record_value(JSON.to_vec(), Some(RAW));
        let last = v.len() - 1;
        v.truncate(last);
        assert!(matches!(open(&v), Err(StoreError::Codec(_))));
        assert!(matches!(
            open(&[ZSTD_DICTIONARY_1, 0x28, 0xb5]),
            Err(StoreError::Codec(_))
        ));
    }

    #[test]
    fn every_hl7_fixture_with_its_record_is_stored_smaller() {
        // The benchmark's messages resemble the dictionary; the fixtures are varied. Each
        // must shrink, and together they must come to well under the plain size.
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/hl7v2");
        let (mut plain, mut packed, mut n) = (0usize, 0usize, 0usize);
        for dir in std::fs::read_dir(&root).expect("fixtures") {
            for file in std::fs::read_dir(dir.expect("dir").path()).expect("fixture dir") {
                let raw = std::fs::read(file.expect("file").path()).expect("fixture");
                let json = format!(
                    r#"{{"id":1883957275139244032,"channel":"adt","received_at_ms":1796681666507,"peer":"127.0.0.1:40000","format":"hl7v2","message_type":"ADT^A08","control_id":"X{n}","status":"delivered","ack_code":"AA","size":{}}}"#,
                    raw.len()
                );
                let v = record_value(json.clone().into_bytes(), Some(&raw));
                assert!(v.len() < json.len() + 1 + raw.len());
                let opened = open(&v).expect("open");
                assert_eq!(opened.raw(), Some(&raw[..]));
                plain += json.len() + 1 + raw.len();
                packed += v.len();
                n += 1;
            }
        }
        assert!(n > 100, "{n} fixtures");
        eprintln!("{n} fixtures: {plain} bytes plain, {packed} stored");
        assert!(packed * 10 < plain * 6, "{packed} of {plain} bytes");
    }
}
