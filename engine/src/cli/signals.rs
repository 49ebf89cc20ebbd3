//! The stop and reload signals of the commands that run until stopped (`run`, `sandbox`).

/// SIGTERM, SIGINT (Ctrl-C) and SIGHUP, listened for from the moment this is made. Made
/// before the engine or the sandbox says it runs, so that a signal sent right after that line
/// stops it cleanly instead of killing it with the default action.
pub struct Signals {
    #[cfg(unix)]
    unix: Option<UnixSignals>,
}

#[cfg(unix)]
struct UnixSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Registers the handlers; call inside the runtime.
    pub fn listen() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let unix = match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
                signal(SignalKind::hangup()),
            ) {
                (Ok(term), Ok(int), Ok(hup)) => Some(UnixSignals { term, int, hup }),
                _ => None,
            };
            Signals { unix }
        }
        #[cfg(not(unix))]
        {
            Signals {}
        }
    }

    /// Waits for the next signal: `true` for SIGHUP (reload), `false` for a stop
    /// (SIGINT/SIGTERM).
    pub async fn next(&mut self) -> bool {
        #[cfg(unix)]
        if let Some(u) = &mut self.unix {
            return tokio::select! {
                _ = u.term.recv() => false,
                _ = u.int.recv() => false,
                _ = u.hup.recv() => true,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        false
    }

    /// Waits for a stop signal; SIGHUP is ignored.
    pub async fn stop(&mut self) {
        while self.next().await {}
    }
}
