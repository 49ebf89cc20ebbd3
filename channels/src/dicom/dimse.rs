//! DIMSE messages over an association: command sets (implicit VR little endian, PS3.7 E.1)
//! and the data sets after them, read from and written as P-DATA fragments.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_ul::association::AsyncAssociation;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::Pdu;
use std::time::Duration;

/// Command field values (PS3.7 E.1-1).
pub mod command {
    /// C-STORE-RQ.
    pub const C_STORE_RQ: u16 = 0x0001;
    /// C-STORE-RSP.
    pub const C_STORE_RSP: u16 = 0x8001;
    /// C-FIND-RQ.
    pub const C_FIND_RQ: u16 = 0x0020;
    /// C-FIND-RSP.
    pub const C_FIND_RSP: u16 = 0x8020;
    /// C-ECHO-RQ.
    pub const C_ECHO_RQ: u16 = 0x0030;
    /// C-ECHO-RSP.
    pub const C_ECHO_RSP: u16 = 0x8030;
    /// N-SET-RQ.
    pub const N_SET_RQ: u16 = 0x0120;
    /// N-SET-RSP.
    pub const N_SET_RSP: u16 = 0x8120;
    /// N-CREATE-RQ.
    pub const N_CREATE_RQ: u16 = 0x0140;
    /// N-CREATE-RSP.
    pub const N_CREATE_RSP: u16 = 0x8140;
    /// C-CANCEL-RQ.
    pub const C_CANCEL_RQ: u16 = 0x0FFF;
}

/// Status codes used here (PS3.7 C, PS3.4).
pub mod status {
    /// Success.
    pub const SUCCESS: u16 = 0x0000;
    /// C-FIND: a match follows.
    pub const PENDING: u16 = 0xFF00;
    /// N-CREATE/N-SET: processing failure.
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// N-CREATE: the SOP instance exists already.
    pub const DUPLICATE_INSTANCE: u16 = 0x0111;
    /// N-SET: no such SOP instance.
    pub const NO_SUCH_INSTANCE: u16 = 0x0112;
    /// N-CREATE/N-SET: an attribute value is out of range or not allowed.
    pub const INVALID_ATTRIBUTE_VALUE: u16 = 0x0106;
    /// N-CREATE: a required attribute is missing.
    pub const MISSING_ATTRIBUTE: u16 = 0x0120;
    /// N-CREATE/N-SET: a required attribute has no value.
    pub const MISSING_ATTRIBUTE_VALUE: u16 = 0x0121;
    /// An operation the SCP does not support.
    pub const UNRECOGNIZED_OPERATION: u16 = 0x0211;
    /// No such SOP class.
    pub const NO_SUCH_SOP_CLASS: u16 = 0x0118;
    /// C-STORE: out of resources.
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// C-FIND / C-STORE: the data set does not match the SOP class.
    pub const DATASET_MISMATCH: u16 = 0xA900;
    /// C-STORE / C-FIND: cannot understand (the data set does not parse).
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
    /// C-FIND: unable to process.
    pub const UNABLE_TO_PROCESS: u16 = 0xC001;
}

/// CommandDataSetType value meaning "no data set follows".
pub const NO_DATASET: u16 = 0x0101;

/// One DIMSE message as received: its presentation context, command set and the raw bytes
/// of its data set (in the context's transfer syntax), when one came.
#[derive(Debug)]
pub struct Message {
    /// The presentation context it came on.
    pub context_id: u8,
    /// The command set.
    pub command: InMemDicomObject,
    /// The data set, as received.
    pub dataset: Option<Vec<u8>>,
}

impl Message {
    /// CommandField (0000,0100).
    pub fn field(&self) -> u16 {
        us(&self.command, tags::COMMAND_FIELD).unwrap_or_default()
    }

    /// MessageID (0000,0110).
    pub fn message_id(&self) -> u16 {
        us(&self.command, tags::MESSAGE_ID).unwrap_or_default()
    }

    /// A string attribute of the command set, trimmed.
    pub fn text(&self, tag: Tag) -> String {
        text(&self.command, tag)
    }
}

/// What ended reading: the peer released or aborted, or the association broke.
#[derive(Debug)]
pub enum Received {
    /// A complete message.
    Message(Message),
    /// A-RELEASE-RQ: answered with A-RELEASE-RP by the caller.
    Release,
    /// A-ABORT.
    Abort,
}

/// Why reading or writing failed.
#[derive(Debug, thiserror::Error)]
pub enum DimseError {
    /// The association layer failed (IO, timeout, bad PDU).
    #[error("association: {0}")]
    Ul(String),
    /// A message could not be read or written.
    #[error("message: {0}")]
    Codec(String),
    /// Nothing arrived within the idle timeout.
    #[error("idle for {0} s")]
    Idle(u64),
    /// A message larger than the configured limit.
    #[error("message larger than {0} bytes")]
    TooLarge(usize),
}

impl DimseError {
    /// What went wrong, without the kind's prefix (for reasons stored with a rejected
    /// request).
    pub fn detail(&self) -> String {
        match self {
            DimseError::Codec(s) | DimseError::Ul(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// A u16 attribute.
pub fn us(obj: &InMemDicomObject, tag: Tag) -> Option<u16> {
    obj.element_opt(tag).ok().flatten()?.to_int::<u16>().ok()
}

/// A string attribute, trimmed of padding; empty when absent.
pub fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.element_opt(tag)
        .ok()
        .flatten()
        .and_then(|e| {
            e.to_str()
                .ok()
                .map(|s| s.trim_matches([' ', '\0']).to_string())
        })
        .unwrap_or_default()
}

/// Reads the next DIMSE message (command and, when announced, its data set), waiting at
/// most `idle` for each PDU; data sets over `max_bytes` fail.
///
/// # Errors
///
/// [`DimseError`] when the association breaks, times out, or a command does not parse.
pub async fn receive<A, S>(
    assoc: &mut A,
    idle: Duration,
    max_bytes: usize,
) -> Result<Received, DimseError>
where
    A: AsyncAssociation<S> + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let mut command_bytes: Vec<u8> = Vec::new();
    let mut command: Option<InMemDicomObject> = None;
    let mut data: Vec<u8> = Vec::new();
    loop {
        let pdu = match tokio::time::timeout(idle, AsyncAssociation::receive(assoc)).await {
            Err(_) => return Err(DimseError::Idle(idle.as_secs())),
            Ok(Err(e)) => return Err(DimseError::Ul(e.to_string())),
            Ok(Ok(p)) => p,
        };
        let values = match pdu {
            Pdu::PData { data } => data,
            Pdu::ReleaseRQ => return Ok(Received::Release),
            Pdu::AbortRQ { .. } => return Ok(Received::Abort),
            other => {
                return Err(DimseError::Ul(format!(
                    "unexpected PDU {}",
                    pdu_name(&other)
                )))
            }
        };
        for v in values {
            let context_id = v.presentation_context_id;
            match v.value_type {
                PDataValueType::Command => {
                    command_bytes.extend_from_slice(&v.data);
                    if command_bytes.len() > 64 * 1024 {
                        return Err(DimseError::TooLarge(64 * 1024));
                    }
                    if v.is_last {
                        let cmd = read_command(&command_bytes)?;
                        let has_data =
                            us(&cmd, tags::COMMAND_DATA_SET_TYPE).is_some_and(|t| t != NO_DATASET);
                        if !has_data {
                            return Ok(Received::Message(Message {
                                context_id,
                                command: cmd,
                                dataset: None,
                            }));
                        }
                        command = Some(cmd);
                    }
                }
                PDataValueType::Data => {
                    data.extend_from_slice(&v.data);
                    if data.len() > max_bytes {
                        return Err(DimseError::TooLarge(max_bytes));
                    }
                    if v.is_last {
                        if let Some(cmd) = command.take() {
                            return Ok(Received::Message(Message {
                                context_id,
                                command: cmd,
                                dataset: Some(std::mem::take(&mut data)),
                            }));
                        }
                        return Err(DimseError::Codec("data set before its command".into()));
                    }
                }
            }
        }
    }
}

fn pdu_name(p: &Pdu) -> &'static str {
    match p {
        Pdu::Unknown { .. } => "unknown",
        Pdu::AssociationRQ(_) => "A-ASSOCIATE-RQ",
        Pdu::AssociationAC(_) => "A-ASSOCIATE-AC",
        Pdu::AssociationRJ(_) => "A-ASSOCIATE-RJ",
        Pdu::PData { .. } => "P-DATA",
        Pdu::ReleaseRQ => "A-RELEASE-RQ",
        Pdu::ReleaseRP => "A-RELEASE-RP",
        Pdu::AbortRQ { .. } => "A-ABORT",
    }
}

/// Parses a command set (always implicit VR little endian).
///
/// # Errors
///
/// [`DimseError::Codec`] when it does not parse.
pub fn read_command(bytes: &[u8]) -> Result<InMemDicomObject, DimseError> {
    check_structure(bytes, Layout::IMPLICIT_LE)
        .map_err(|e| DimseError::Codec(format!("command set: {e}")))?;
    InMemDicomObject::read_dataset_with_ts(
        bytes,
        &dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased(),
    )
    .map_err(|e| DimseError::Codec(format!("command set: {e}")))
}

/// Encodes a command set, with its CommandGroupLength computed.
///
/// # Errors
///
/// [`DimseError::Codec`] when it cannot be encoded.
pub fn write_command(cmd: &InMemDicomObject) -> Result<Vec<u8>, DimseError> {
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut body = cmd.clone();
    body.remove_element(tags::COMMAND_GROUP_LENGTH);
    let mut bytes = Vec::new();
    body.write_dataset_with_ts(&mut bytes, &ts)
        .map_err(|e| DimseError::Codec(e.to_string()))?;
    let mut full = InMemDicomObject::new_empty();
    full.put(DataElement::new(
        tags::COMMAND_GROUP_LENGTH,
        VR::UL,
        PrimitiveValue::from(bytes.len() as u32),
    ));
    let mut out = Vec::with_capacity(bytes.len() + 12);
    full.write_dataset_with_ts(&mut out, &ts)
        .map_err(|e| DimseError::Codec(e.to_string()))?;
    out.extend_from_slice(&bytes);
    Ok(out)
}

/// Encodes a data set in transfer syntax `ts_uid`.
///
/// # Errors
///
/// [`DimseError::Codec`] for an unknown transfer syntax or a value that cannot be written.
pub fn write_dataset(obj: &InMemDicomObject, ts_uid: &str) -> Result<Vec<u8>, DimseError> {
    let ts = transfer_syntax(ts_uid)?;
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, ts)
        .map_err(|e| DimseError::Codec(e.to_string()))?;
    Ok(out)
}

/// Parses a data set received in transfer syntax `ts_uid`.
///
/// # Errors
///
/// [`DimseError::Codec`] naming why it does not parse (never its content).
pub fn read_dataset(bytes: &[u8], ts_uid: &str) -> Result<InMemDicomObject, DimseError> {
    let ts = transfer_syntax(ts_uid)?;
    if !ts.is_unsupported() {
        let layout = Layout {
            explicit_vr: ts.uid() != IMPLICIT_VR_LE,
            big_endian: ts.endianness() == dicom_encoding::Endianness::Big,
        };
        check_structure(bytes, layout).map_err(|e| DimseError::Codec(format!("data set: {e}")))?;
    }
    InMemDicomObject::read_dataset_with_ts(bytes, ts)
        .map_err(|e| DimseError::Codec(format!("data set: {e}")))
}

/// Implicit VR little endian, the command set's transfer syntax.
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";

/// Sequences nested deeper than this are refused (the data set reader recurses per level).
pub const MAX_DEPTH: usize = 32;

/// Element and item headers in one data set: more are refused.
pub const MAX_ELEMENTS: usize = 1_000_000;

/// How a data set's headers are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Explicit VR (every syntax but implicit VR little endian).
    pub explicit_vr: bool,
    /// Big endian (the retired explicit VR big endian).
    pub big_endian: bool,
}

impl Layout {
    /// Implicit VR little endian.
    pub const IMPLICIT_LE: Layout = Layout {
        explicit_vr: false,
        big_endian: false,
    };
    /// Explicit VR little endian.
    pub const EXPLICIT_LE: Layout = Layout {
        explicit_vr: true,
        big_endian: false,
    };
}

/// Where the walk in [`check_structure`] stands.
enum Frame {
    /// Element level: the top (`top`), or an item's content, which ends at `end` or, for an
    /// item of undefined length, at its item delimiter.
    Elements { end: Option<usize>, top: bool },
    /// Item level of a sequence (or of encapsulated pixel data, whose items are raw
    /// fragments), which ends at `end` or, undefined, at its sequence delimiter.
    Items { end: Option<usize>, pixel: bool },
}

const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Walks a data set's element and item headers the way the dicom-rs reader does and refuses
/// one it must not be given: a defined length larger than the bytes left (the reader
/// allocates and zeroes the declared length before it reads: 4 GiB for a 30-byte data set),
/// sequences nested deeper than [`MAX_DEPTH`] (it recurses per level) or more than
/// [`MAX_ELEMENTS`] headers. What is merely truncated is left to the reader to report.
///
/// # Errors
///
/// A sentence naming the problem and its byte offset (never a value).
pub fn check_structure(bytes: &[u8], layout: Layout) -> Result<(), String> {
    use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
    let n = bytes.len();
    let u16_at = |at: usize| -> u16 {
        let b = [bytes[at], bytes[at + 1]];
        if layout.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        }
    };
    let u32_at = |at: usize| -> u32 {
        let b = [bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]];
        if layout.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let fits = |at: usize, len: u32| -> Result<(), String> {
        if len as usize > n - at {
            Err(format!(
                "a value length of {len} bytes at offset {at} exceeds the {} bytes left",
                n - at
            ))
        } else {
            Ok(())
        }
    };
    let mut stack = vec![Frame::Elements {
        end: Some(n),
        top: true,
    }];
    let mut pos = 0usize;
    let mut headers = 0usize;
    loop {
        let depth = stack
            .iter()
            .filter(|f| matches!(f, Frame::Items { .. }))
            .count();
        if depth > MAX_DEPTH {
            return Err(format!(
                "sequences nested deeper than {MAX_DEPTH} levels at offset {pos}"
            ));
        }
        let Some(frame) = stack.last() else {
            return Ok(());
        };
        let (end, is_items) = match frame {
            Frame::Elements { end, .. } => (*end, false),
            Frame::Items { end, .. } => (*end, true),
        };
        if end.is_some_and(|e| pos >= e) {
            stack.pop();
            continue;
        }
        // Too short for a header: the reader reports the truncation itself.
        if n - pos < 8 {
            return Ok(());
        }
        headers += 1;
        if headers > MAX_ELEMENTS {
            return Err(format!("more than {MAX_ELEMENTS} elements"));
        }
        let tag = (u16_at(pos), u16_at(pos + 2));
        if is_items {
            let Some(Frame::Items { pixel, .. }) = stack.last() else {
                return Ok(());
            };
            let pixel = *pixel;
            let len = u32_at(pos + 4);
            pos += 8;
            match tag {
                (0xFFFE, 0xE000) if len == UNDEFINED => {
                    if pixel {
                        return Err(format!(
                            "a pixel data fragment of undefined length at offset {}",
                            pos - 8
                        ));
                    }
                    stack.push(Frame::Elements {
                        end: None,
                        top: false,
                    });
                }
                (0xFFFE, 0xE000) => {
                    fits(pos, len)?;
                    if pixel {
                        pos += len as usize;
                    } else {
                        stack.push(Frame::Elements {
                            end: Some(pos + len as usize),
                            top: false,
                        });
                    }
                }
                (0xFFFE, 0xE0DD) => {
                    stack.pop();
                }
                (0xFFFE, 0xE00D) => {}
                (g, e) => {
                    return Err(format!(
                        "({g:04X},{e:04X}) where a sequence item was expected, at offset {}",
                        pos - 8
                    ))
                }
            }
            continue;
        }
        // Element level.
        if tag == (0xFFFE, 0xE00D) {
            pos += 8;
            if matches!(stack.last(), Some(Frame::Elements { top: false, .. })) {
                stack.pop();
            }
            continue;
        }
        let (vr, len, header) = if layout.explicit_vr && tag.0 != 0xFFFE {
            let vr = VR::from_binary([bytes[pos + 4], bytes[pos + 5]]).unwrap_or(VR::UN);
            let short = matches!(
                vr,
                VR::AE
                    | VR::AS
                    | VR::AT
                    | VR::CS
                    | VR::DA
                    | VR::DS
                    | VR::DT
                    | VR::FL
                    | VR::FD
                    | VR::IS
                    | VR::LO
                    | VR::LT
                    | VR::PN
                    | VR::SH
                    | VR::SL
                    | VR::SS
                    | VR::ST
                    | VR::TM
                    | VR::UI
                    | VR::UL
                    | VR::US
            );
            if short {
                (vr, u32::from(u16_at(pos + 6)), 8)
            } else {
                if n - pos < 12 {
                    return Ok(());
                }
                (vr, u32_at(pos + 8), 12)
            }
        } else if layout.explicit_vr {
            (VR::UN, u32_at(pos + 4), 8)
        } else {
            let t = Tag(tag.0, tag.1);
            let vr = if t == tags::PIXEL_DATA {
                VR::OW
            } else {
                dicom_dictionary_std::StandardDataDictionary
                    .by_tag(t)
                    .map(|e| e.vr().relaxed())
                    .unwrap_or(VR::UN)
            };
            (vr, u32_at(pos + 4), 8)
        };
        pos += header;
        if len == UNDEFINED {
            stack.push(Frame::Items {
                end: None,
                pixel: tag == (0x7FE0, 0x0010),
            });
        } else {
            fits(pos, len)?;
            if vr == VR::SQ {
                stack.push(Frame::Items {
                    end: Some(pos + len as usize),
                    pixel: false,
                });
            } else {
                pos += len as usize;
            }
        }
    }
}

/// The transfer syntax of `uid` from the registry.
///
/// # Errors
///
/// [`DimseError::Codec`] when the registry does not know it.
pub fn transfer_syntax(uid: &str) -> Result<&'static dicom_encoding::TransferSyntax, DimseError> {
    use dicom_encoding::TransferSyntaxIndex;
    dicom_transfer_syntax_registry::TransferSyntaxRegistry
        .get(uid.trim_end_matches(['\0', ' ']))
        .ok_or_else(|| DimseError::Codec(format!("unknown transfer syntax {uid}")))
}

/// A response command set: `field`, answering `message_id`, with `status`.
pub fn response(
    field: u16,
    sop_class: &str,
    message_id: u16,
    status: u16,
    has_dataset: bool,
) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    if !sop_class.is_empty() {
        c.put_str(tags::AFFECTED_SOP_CLASS_UID, VR::UI, sop_class);
    }
    put_us(&mut c, tags::COMMAND_FIELD, field);
    put_us(&mut c, tags::MESSAGE_ID_BEING_RESPONDED_TO, message_id);
    put_us(
        &mut c,
        tags::COMMAND_DATA_SET_TYPE,
        data_set_type(has_dataset),
    );
    put_us(&mut c, tags::STATUS, status);
    c
}

/// Adds ErrorComment (0000,0902) to a failure response: printable ASCII without `\\`, at
/// most 64 characters (LO).
pub fn put_error_comment(c: &mut InMemDicomObject, comment: &str) {
    let clean: String = comment
        .chars()
        .map(|ch| {
            if (' '..='~').contains(&ch) && ch != '\\' {
                ch
            } else {
                ' '
            }
        })
        .take(64)
        .collect();
    let clean = clean.trim_end();
    if !clean.is_empty() {
        c.put_str(tags::ERROR_COMMENT, VR::LO, clean);
    }
}

/// A request command set: `field` with `message_id`, for `sop_class`.
pub fn request(
    field: u16,
    sop_class: &str,
    message_id: u16,
    has_dataset: bool,
) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    c.put_str(tags::AFFECTED_SOP_CLASS_UID, VR::UI, sop_class);
    put_us(&mut c, tags::COMMAND_FIELD, field);
    put_us(&mut c, tags::MESSAGE_ID, message_id);
    put_us(
        &mut c,
        tags::COMMAND_DATA_SET_TYPE,
        data_set_type(has_dataset),
    );
    c
}

/// Puts the US element `tag` = `value` into a command set.
fn put_us(c: &mut InMemDicomObject, tag: dicom_core::Tag, value: u16) {
    c.put(DataElement::new(tag, VR::US, PrimitiveValue::from(value)));
}

/// CommandDataSetType: 0x0000 when a data set follows, else [`NO_DATASET`].
fn data_set_type(has_dataset: bool) -> u16 {
    if has_dataset {
        0x0000
    } else {
        NO_DATASET
    }
}

/// Sends a command and, when given, its data set, each split into P-DATA PDUs no larger
/// than the peer takes.
///
/// # Errors
///
/// [`DimseError`] when writing fails.
pub async fn send<A, S>(
    assoc: &mut A,
    context_id: u8,
    command: &InMemDicomObject,
    dataset: Option<&[u8]>,
) -> Result<(), DimseError>
where
    A: AsyncAssociation<S> + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let peer_max = assoc.peer_max_pdu_length();
    // A PDV item header is 6 bytes; 0 means the peer set no limit.
    let chunk = if peer_max == 0 {
        16 * 1024
    } else {
        (peer_max as usize).saturating_sub(6).max(64)
    };
    let cmd = write_command(command)?;
    send_fragments(assoc, context_id, PDataValueType::Command, &cmd, chunk).await?;
    if let Some(data) = dataset {
        send_fragments(assoc, context_id, PDataValueType::Data, data, chunk).await?;
    }
    Ok(())
}

async fn send_fragments<A, S>(
    assoc: &mut A,
    context_id: u8,
    kind: PDataValueType,
    bytes: &[u8],
    chunk: usize,
) -> Result<(), DimseError>
where
    A: AsyncAssociation<S> + Send,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let mut parts: Vec<&[u8]> = bytes.chunks(chunk).collect();
    if parts.is_empty() {
        parts.push(&[]);
    }
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let pdu = Pdu::PData {
            data: vec![PDataValue {
                presentation_context_id: context_id,
                value_type: kind.clone(),
                is_last: i + 1 == n,
                data: part.to_vec(),
            }],
        };
        AsyncAssociation::send(assoc, &pdu)
            .await
            .map_err(|e| DimseError::Ul(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_round_trip_with_group_length() {
        let c = response(
            command::C_ECHO_RSP,
            "1.2.840.10008.1.1",
            7,
            status::SUCCESS,
            false,
        );
        let bytes = write_command(&c).expect("encode");
        let back = read_command(&bytes).expect("decode");
        assert_eq!(us(&back, tags::COMMAND_FIELD), Some(command::C_ECHO_RSP));
        assert_eq!(us(&back, tags::MESSAGE_ID_BEING_RESPONDED_TO), Some(7));
        assert_eq!(
            text(&back, tags::AFFECTED_SOP_CLASS_UID),
            "1.2.840.10008.1.1"
        );
        let group = back
            .element(tags::COMMAND_GROUP_LENGTH)
            .expect("group length")
            .to_int::<u32>()
            .expect("u32");
        // Group length element: 4 tag + 4 length + 4 value = 12 bytes.
        assert_eq!(group as usize, bytes.len() - 12);
    }

    /// A data set with a nested sequence, in `ts`.
    fn nested(ts: &str) -> Vec<u8> {
        let mut inner = InMemDicomObject::new_empty();
        inner.put_str(tags::ACCESSION_NUMBER, VR::SH, "ACC1");
        inner.put_str(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
        let mut obj = InMemDicomObject::new_empty();
        obj.put_str(tags::PATIENT_NAME, VR::PN, "Doe^Jane");
        obj.put(DataElement::new(
            tags::SCHEDULED_STEP_ATTRIBUTES_SEQUENCE,
            VR::SQ,
            dicom_core::value::DataSetSequence::from(vec![inner.clone(), inner]),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::from(vec![1u8, 2, 3, 4]),
        ));
        write_dataset(&obj, ts).expect("encode")
    }

    #[test]
    fn well_formed_data_sets_pass_the_structure_check() {
        for ts in [
            "1.2.840.10008.1.2",
            "1.2.840.10008.1.2.1",
            "1.2.840.10008.1.2.2",
        ] {
            let bytes = nested(ts);
            let back = read_dataset(&bytes, ts).expect("reads");
            assert_eq!(text(&back, tags::PATIENT_NAME), "Doe^Jane", "{ts}");
        }
        // Sequences and items of undefined length, and encapsulated pixel data.
        let mut b: Vec<u8> = Vec::new();
        b.extend_from_slice(&[
            0x40, 0x00, 0x70, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        b.extend_from_slice(&[
            0x08, 0x00, 0x50, 0x00, b'S', b'H', 4, 0, b'A', b'C', b'C', b'1',
        ]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0, 0, 0, 0]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 4, 0, 0, 0, 9, 9, 9, 9]);
        b.extend_from_slice(&[0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0]);
        check_structure(&b, Layout::EXPLICIT_LE).expect("well formed");
        read_dataset(&b, "1.2.840.10008.1.2.4.50").expect("reads");
    }

    #[test]
    fn lengths_beyond_the_data_and_deep_nesting_are_refused_before_reading() {
        // 30 bytes declaring a 4 GiB value: refused at once, nothing allocated.
        let mut b = vec![
            0x10u8, 0x00, 0x10, 0x00, b'P', b'N', 4, 0, b'a', b'b', b'c', b'd',
        ];
        b.extend_from_slice(&[
            0xE0, 0x7F, 0x10, 0x00, b'O', b'B', 0, 0, 0xF0, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend_from_slice(&[1, 2, 3]);
        let e = read_dataset(&b, "1.2.840.10008.1.2.1").expect_err("refused");
        assert!(e.to_string().contains("exceeds"), "{e}");
        // Implicit VR, a long string of 2 GiB.
        let b = [0x10u8, 0x00, 0x10, 0x00, 0xF0, 0xFF, 0xFF, 0x7F, 1, 2];
        assert!(read_dataset(&b, "1.2.840.10008.1.2").is_err());
        // A sequence item of 4 GiB inside a sequence of undefined length.
        let mut b: Vec<u8> = Vec::new();
        b.extend_from_slice(&[
            0x40, 0x00, 0x70, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
        ]);
        b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xF0, 0xFF, 0xFF, 0xFF]);
        assert!(check_structure(&b, Layout::EXPLICIT_LE).is_err());
        // A command set too.
        assert!(read_command(&[0x00, 0x00, 0x00, 0x01, 0xF0, 0xFF, 0xFF, 0xFF, 0]).is_err());
        // 10,000 nested sequences of undefined length.
        let mut b: Vec<u8> = Vec::new();
        for _ in 0..10_000 {
            b.extend_from_slice(&[
                0x40, 0x00, 0x70, 0x02, b'S', b'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
            ]);
            b.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF]);
        }
        let e = read_dataset(&b, "1.2.840.10008.1.2.1").expect_err("refused");
        assert!(e.to_string().contains("nested deeper"), "{e}");
    }

    #[test]
    fn damaged_data_sets_never_panic() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(22);
        for ts in ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"] {
            let good = nested(ts);
            for _ in 0..3000 {
                let mut b = good.clone();
                for _ in 0..rng.random_range(1..6) {
                    let at = rng.random_range(0..b.len());
                    b[at] = rng.random();
                }
                let cut = rng.random_range(0..=b.len());
                b.truncate(cut);
                let _ = read_dataset(&b, ts);
            }
        }
    }
}
