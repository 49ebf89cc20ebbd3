//! MLLP (minimal lower layer protocol) over TCP: the framing codec, the listener that
//! receives HL7 v2 from senders, and a client that sends to MLLP peers.

pub mod client;
pub mod codec;
pub mod listener;
pub mod sender;

pub use codec::{MllpCodec, MllpFrame};
