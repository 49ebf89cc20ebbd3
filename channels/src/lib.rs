//! Everything in Switchboard that touches a socket, a file or a remote API.
//!
//! A source receives messages and hands each one to the engine as an [`source::Inbound`],
//! then answers its sender with what the engine decided ([`source::Reply`]). This crate knows
//! nothing of routing or the store; what a source needs arrives in a [`source::SourceContext`].
//! Start reading at [`source`], then [`mllp`].
#![forbid(unsafe_code)]

pub mod admission;
pub mod clinic_api;
pub mod destination;
pub mod dicom;
pub mod fhir_rest;
pub mod file;
pub mod health;
pub mod http_answer;
pub mod http_auth;
pub mod http_source;
pub mod kind;
pub mod mllp;
pub mod peers;
pub mod secret;
pub mod sftp;
pub mod source;
pub mod tls;
pub mod webhook;
