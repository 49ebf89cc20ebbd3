//! SFTP: the poller source that takes HL7 v2 files from a remote folder, and the writer
//! destination that puts each delivery in one as a file.
//!
//! Both speak SSH through russh and SFTP through russh-sftp, over one connection each
//! ([`remote`]). The server's host key must equal the configured known-hosts entry, or the
//! connection is refused. Start reading at [`poller`] for the rules a file goes through.

pub mod poller;
pub mod remote;
pub mod writer;

pub use poller::{PollerConfig, SftpMetrics};
pub use writer::{SftpWriter, WriterConfig};
