//! The commands of the `switchboard` binary, one module each: its flags (a clap `Args` struct)
//! and what it does. `main.rs` lists the commands and dispatches to [`run::run`],
//! [`check::run`], and so on.
//!
//! What several commands share lives here once: the exit code of a pass/fail outcome
//! ([`pass_fail`]), logging set-up ([`logging`]) and the stop and reload signals ([`signals`]).
//! The work itself is in the engine library (`engine::check`, `engine::send`, ...); these
//! modules read flags, call it and print.

pub mod check;
pub mod logging;
pub mod messages;
pub mod run;
pub mod sandbox;
pub mod send;
pub mod signals;
pub mod test;
pub mod transform;

use std::process::ExitCode;

/// Exit 0 when `ok`, 1 otherwise: a message not accepted, a case failed, a mapping error.
pub fn pass_fail(ok: bool) -> ExitCode {
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
