//! JSON over HTTP: the signed webhook sender.

pub mod sender;
