//! MLLP framing as a tokio-util codec: `0x0B payload 0x1C 0x0D`.
//!
//! Bytes before a start block are skipped and counted ([`MllpCodec::take_junk`]). A frame
//! longer than the limit is reported once as [`MllpFrame::Oversize`] with its first bytes
//! (so the MSH can still be read for the NAK); the rest of it is discarded and decoding
//! resynchronises at the next start block. The final CR after 0x1C is consumed when present
//! but not required, because some senders omit it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Instant;
use tokio_util::codec::{Decoder, Encoder};

/// Start block (VT).
pub const START: u8 = 0x0B;
/// End block (FS).
pub const END: u8 = 0x1C;
/// Carriage return that follows the end block.
pub const CR: u8 = 0x0D;

/// How many bytes of an oversize frame are kept to read its MSH.
pub const OVERSIZE_HEAD_BYTES: usize = 4096;

/// One decoded unit of an MLLP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MllpFrame {
    /// A complete frame's payload, without the framing bytes.
    Message(Bytes),
    /// A frame that grew past the limit; `head` holds its first bytes.
    Oversize {
        /// The first [`OVERSIZE_HEAD_BYTES`] bytes of the payload.
        head: Bytes,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for a start block.
    Seeking,
    /// Inside a frame; `scanned` payload bytes (after the start block) hold no end block.
    InFrame { scanned: usize },
    /// Discarding the rest of an oversize frame up to its end block.
    Discarding,
}

/// The MLLP codec; see the module documentation for its rules.
///
/// ```
/// use bytes::BytesMut;
/// use channels::mllp::codec::{MllpCodec, MllpFrame};
/// use tokio_util::codec::Decoder;
/// let mut codec = MllpCodec::new(1024);
/// let mut buf = BytesMut::from(&b"junk\x0bMSH|^~\\&|A\x1c\x0d"[..]);
/// let frame = codec.decode(&mut buf).unwrap();
/// assert_eq!(frame, Some(MllpFrame::Message("MSH|^~\\&|A".into())));
/// assert_eq!(codec.take_junk(), 4);
/// ```
#[derive(Debug)]
pub struct MllpCodec {
    max_frame: usize,
    state: State,
    junk: u64,
    /// An end block was the last byte seen; a CR right after it belongs to that frame.
    swallow_cr: bool,
    frame_started: Option<Instant>,
}

impl MllpCodec {
    /// A codec that refuses payloads longer than `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        MllpCodec {
            max_frame,
            state: State::Seeking,
            junk: 0,
            swallow_cr: false,
            frame_started: None,
        }
    }

    /// Bytes skipped outside frames since the last call.
    pub fn take_junk(&mut self) -> u64 {
        std::mem::take(&mut self.junk)
    }

    /// When the frame being received started, if one is in progress.
    pub fn frame_started(&self) -> Option<Instant> {
        self.frame_started
    }

    fn skip_cr(&mut self, src: &mut BytesMut) {
        if self.swallow_cr && !src.is_empty() {
            if src[0] == CR {
                src.advance(1);
            }
            self.swallow_cr = false;
        }
    }
}

impl Decoder for MllpCodec {
    type Item = MllpFrame;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<MllpFrame>, std::io::Error> {
        loop {
            self.skip_cr(src);
            match self.state {
                State::Seeking => match src.iter().position(|&b| b == START) {
                    Some(pos) => {
                        self.junk += pos as u64;
                        src.advance(pos + 1);
                        self.state = State::InFrame { scanned: 0 };
                        self.frame_started = Some(Instant::now());
                    }
                    None => {
                        self.junk += src.len() as u64;
                        src.clear();
                        return Ok(None);
                    }
                },
                State::InFrame { scanned } => {
                    let limit = src.len().min(self.max_frame + 1);
                    let found = src[scanned..limit]
                        .iter()
                        .position(|&b| b == END || b == START);
                    match found {
                        Some(pos) if src[scanned + pos] == START => {
                            // A new start block inside a frame: the sender gave up on the
                            // partial frame. Count it as junk and start over.
                            self.junk += (scanned + pos + 1) as u64;
                            src.advance(scanned + pos + 1);
                            self.state = State::InFrame { scanned: 0 };
                            self.frame_started = Some(Instant::now());
                        }
                        Some(pos) => {
                            let payload = src.split_to(scanned + pos).freeze();
                            src.advance(1);
                            self.swallow_cr = true;
                            self.state = State::Seeking;
                            self.frame_started = None;
                            return Ok(Some(MllpFrame::Message(payload)));
                        }
                        None if limit > self.max_frame => {
                            // Only bytes known to be payload: past `limit` the buffer may
                            // already hold the end block and the next frame (found by fuzzing).
                            let head =
                                Bytes::copy_from_slice(&src[..OVERSIZE_HEAD_BYTES.min(limit)]);
                            src.advance(limit);
                            self.state = State::Discarding;
                            self.frame_started = None;
                            return Ok(Some(MllpFrame::Oversize { head }));
                        }
                        None => {
                            self.state = State::InFrame { scanned: limit };
                            src.reserve(4096);
                            return Ok(None);
                        }
                    }
                }
                State::Discarding => match src.iter().position(|&b| b == END) {
                    Some(pos) => {
                        src.advance(pos + 1);
                        self.swallow_cr = true;
                        self.state = State::Seeking;
                    }
                    None => {
                        src.clear();
                        return Ok(None);
                    }
                },
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<MllpFrame>, std::io::Error> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None => {
                // A frame cut off by the peer closing is dropped: it was never complete,
                // so it was never acknowledged either.
                src.clear();
                Ok(None)
            }
        }
    }
}

impl Encoder<&[u8]> for MllpCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> Result<(), std::io::Error> {
        dst.reserve(item.len() + 3);
        dst.put_u8(START);
        dst.put_slice(item);
        dst.put_u8(END);
        dst.put_u8(CR);
        Ok(())
    }
}

/// Frames one payload: `0x0B payload 0x1C 0x0D`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 3);
    v.push(START);
    v.extend_from_slice(payload);
    v.push(END);
    v.push(CR);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz target `mllp_decoder`): with a limit under OVERSIZE_HEAD_BYTES, the
    /// head of an oversize frame held the end block and whatever followed when the frame
    /// arrived in one read, so the answer depended on how the stream was split.
    #[test]
    fn oversize_head_is_payload_only_however_the_stream_is_split() {
        let payload = [b"MSH|^~\\&|".as_slice(), &[b'x'; 600]].concat();
        let stream = [
            &[START][..],
            &payload,
            &[END, CR, START],
            b"MSH|^~\\&|B",
            &[END, CR],
        ]
        .concat();
        let decode_all = |step: usize| {
            let mut codec = MllpCodec::new(512);
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            for piece in stream.chunks(step) {
                buf.extend_from_slice(piece);
                while let Some(f) = codec.decode(&mut buf).expect("decodes") {
                    out.push(f);
                }
            }
            out
        };
        let whole = decode_all(stream.len());
        assert_eq!(whole, decode_all(7));
        assert_eq!(
            whole,
            vec![
                MllpFrame::Oversize {
                    head: Bytes::copy_from_slice(&payload[..513])
                },
                MllpFrame::Message(Bytes::from_static(b"MSH|^~\\&|B")),
            ]
        );
    }

    fn decode_all(codec: &mut MllpCodec, chunks: &[&[u8]]) -> Vec<MllpFrame> {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).expect("decode never fails") {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).expect("decode never fails") {
            out.push(f);
        }
        out
    }

    fn msg(s: &str) -> MllpFrame {
        MllpFrame::Message(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn same_bytes_split_at_every_offset() {
        let mut wire = b"noise".to_vec();
        wire.extend(frame(b"MSH|^~\\&|A|1\rPID|1"));
        wire.extend(frame(b"MSH|^~\\&|A|2"));
        wire.extend(b"\r\n");
        wire.extend(frame(b"MSH|^~\\&|A|3"));
        let expect = vec![
            msg("MSH|^~\\&|A|1\rPID|1"),
            msg("MSH|^~\\&|A|2"),
            msg("MSH|^~\\&|A|3"),
        ];
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut codec = MllpCodec::new(1024);
                let got = decode_all(&mut codec, &[&wire[..a], &wire[a..b], &wire[b..]]);
                assert_eq!(got, expect, "split at {a} and {b}");
                assert_eq!(codec.take_junk(), 7, "split at {a} and {b}");
            }
        }
    }

    #[test]
    fn missing_final_cr_is_tolerated() {
        let mut codec = MllpCodec::new(1024);
        let got = decode_all(&mut codec, &[b"\x0bMSH|1\x1c\x0bMSH|2\x1c"]);
        assert_eq!(got, vec![msg("MSH|1"), msg("MSH|2")]);
        assert_eq!(codec.take_junk(), 0);
    }

    #[test]
    fn oversize_frame_is_reported_once_then_resyncs() {
        let mut codec = MllpCodec::new(16);
        let mut wire = frame(b"MSH|^~\\&|A|B|C|D|1||ADT^A04|BIG|P|2.5");
        wire.extend(frame(b"MSH|small"));
        for split in 0..wire.len() {
            let mut codec2 = MllpCodec::new(16);
            let got = decode_all(&mut codec2, &[&wire[..split], &wire[split..]]);
            assert_eq!(got.len(), 2, "split at {split}: {got:?}");
            assert!(matches!(&got[0], MllpFrame::Oversize { head } if head.starts_with(b"MSH|^~")));
            assert_eq!(got[1], msg("MSH|small"));
        }
        let got = decode_all(&mut codec, &[&wire]);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn frame_that_never_ends_is_dropped_at_eof() {
        let mut codec = MllpCodec::new(1024);
        let got = decode_all(&mut codec, &[b"\x0bMSH|never ends"]);
        assert!(got.is_empty());
    }

    #[test]
    fn start_block_inside_a_frame_restarts_it() {
        let mut codec = MllpCodec::new(1024);
        let mut buf = BytesMut::from(&b"\x0bPART\x0b\x0bMSH"[..]);
        assert_eq!(codec.decode(&mut buf).expect("ok"), None);
        assert!(codec.frame_started().is_some());
        buf.extend_from_slice(b"\x1c\x0d");
        assert_eq!(
            codec.decode(&mut buf).expect("ok"),
            Some(MllpFrame::Message(Bytes::from_static(b"MSH")))
        );
        assert!(codec.frame_started().is_none());
        // The aborted frame: its start block and PART, then the lone doubled start block.
        assert_eq!(codec.take_junk(), 6);
    }

    #[test]
    fn encoder_frames() {
        let mut codec = MllpCodec::new(1024);
        let mut dst = BytesMut::new();
        codec.encode(&b"MSH|x"[..], &mut dst).expect("encode");
        assert_eq!(&dst[..], b"\x0bMSH|x\x1c\x0d");
    }
}
