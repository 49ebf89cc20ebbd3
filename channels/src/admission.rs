//! Who may hold a connection to a listening source: a cap per channel and a cap per peer
//! address, shared by the MLLP listener and the HTTP sources.
//!
//! A peer already holding `max_connections_per_peer` connections is refused. When the channel
//! holds `max_connections`, the connection idle longest (nothing in flight, no byte either way
//! for the longest time) is closed to admit the newcomer, so whoever parks idle connections
//! cannot lock the others out; only when every connection is busy is the newcomer refused.
//! Refusals (these two, and the source's allow-list) are counted at once and logged at most
//! once a minute per peer address, with the count since that peer's last line, so a flood
//! cannot flood the log.
//!
//! Not here: what a connection does once admitted. The source wraps its stream in
//! [`TrackedIo`] (which records activity) and marks messages in flight with [`Ticket::busy`].

use crate::source::SourceMetrics;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::warn;

/// How often at most one peer's refusals are logged.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Peer addresses whose refusals are kept for logging. When the map is full, the entries
/// last logged a minute ago are flushed (their pending count logged) and forgotten; until
/// that makes room, a new address's refusals are counted without a line.
const REFUSAL_LOG_PEERS: usize = 4096;

/// The caps of one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Most connections open at once on the channel.
    pub max_connections: usize,
    /// Most connections open at once from one peer address.
    pub max_connections_per_peer: usize,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer address is not in `allowed_peers`.
    NotAllowed,
    /// The peer address already holds `max_connections_per_peer` connections.
    PeerCap,
    /// The channel holds `max_connections` and every one of them is busy.
    ChannelFull,
}

/// The connections of one source.
#[derive(Debug)]
pub struct Admission {
    channel: String,
    caps: Caps,
    /// Activity instants are kept as milliseconds since this moment.
    epoch: Instant,
    metrics: SourceMetrics,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    open: HashMap<u64, Open>,
    per_peer: HashMap<IpAddr, usize>,
    refusals: HashMap<IpAddr, RefusalLog>,
}

#[derive(Debug)]
struct Open {
    peer: IpAddr,
    activity: Arc<Activity>,
}

#[derive(Debug, Clone, Copy)]
struct RefusalLog {
    /// When this peer's last line was written.
    logged_at: Instant,
    /// Refusals since then.
    since: u64,
}

/// What one connection has been doing, read by [`Admission`] when it looks for the
/// connection idle longest.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last byte read or written.
    last_ms: AtomicU64,
    /// Messages (or requests) received and not yet answered.
    busy: AtomicUsize,
    /// Bytes read so far.
    read_bytes: AtomicU64,
    /// Cancelled when the connection is closed to admit another.
    evicted: CancellationToken,
}

impl Activity {
    fn new(epoch: Instant, now: Instant) -> Self {
        let activity = Activity {
            epoch,
            last_ms: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            read_bytes: AtomicU64::new(0),
            evicted: CancellationToken::new(),
        };
        activity.touch(now);
        activity
    }

    /// Records activity at `now`.
    pub fn touch(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::Relaxed);
    }

    /// Bytes read from the peer so far.
    pub fn read_bytes(&self) -> u64 {
        self.read_bytes.load(Ordering::Relaxed)
    }

    fn idle_since_ms(&self) -> Option<u64> {
        (self.busy.load(Ordering::Relaxed) == 0).then(|| self.last_ms.load(Ordering::Relaxed))
    }
}

impl Admission {
    /// The admission of one source; refusals and evictions are counted in `metrics`.
    pub fn new(channel: &str, caps: Caps, metrics: SourceMetrics) -> Arc<Self> {
        Arc::new(Admission {
            channel: channel.to_string(),
            caps,
            epoch: Instant::now(),
            metrics,
            state: Mutex::new(State::default()),
        })
    }

    /// Decides about a new connection from `peer` at `now`: a ticket to hold while it is
    /// open, or the refusal (already counted and, when due, logged). May close the
    /// connection idle longest to make room.
    ///
    /// # Errors
    ///
    /// The [`Refusal`] when the peer is at its cap, or when the channel is full of busy
    /// connections.
    pub fn admit(self: &Arc<Self>, peer: IpAddr, now: Instant) -> Result<Ticket, Refusal> {
        let mut st = self
            .state
            .lock()
            .expect("admission state is never poisoned");
        let held = st.per_peer.get(&peer).copied().unwrap_or(0);
        let refusal = if held >= self.caps.max_connections_per_peer {
            Some(Refusal::PeerCap)
        } else if st.open.len() >= self.caps.max_connections && !self.evict_one(&mut st) {
            Some(Refusal::ChannelFull)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            self.refused(&mut st, peer, refusal, now);
            return Err(refusal);
        }
        let id = st.next_id;
        st.next_id += 1;
        let activity = Arc::new(Activity::new(self.epoch, now));
        st.open.insert(
            id,
            Open {
                peer,
                activity: activity.clone(),
            },
        );
        *st.per_peer.entry(peer).or_default() += 1;
        Ok(Ticket {
            id,
            admission: self.clone(),
            activity,
        })
    }

    #[cfg(test)]
    fn open(&self) -> usize {
        self.state
            .lock()
            .expect("admission state is never poisoned")
            .open
            .len()
    }

    /// Closes the connection idle longest (its slot is free at once); false when every
    /// connection is busy. A scan, but only when the channel is full.
    fn evict_one(&self, st: &mut State) -> bool {
        let victim = st
            .open
            .iter()
            .filter_map(|(id, o)| o.activity.idle_since_ms().map(|ms| (ms, *id)))
            .min();
        let Some((_, id)) = victim else {
            return false;
        };
        if let Some(o) = st.open.remove(&id) {
            release_peer(&mut st.per_peer, o.peer);
            o.activity.evicted.cancel();
        }
        self.metrics.connections_evicted.inc();
        true
    }

    /// Counts a connection refused for `refusal` (the allow-list, checked by the source) and
    /// logs it when this peer has had no such line for a minute.
    pub fn refuse(&self, peer: IpAddr, refusal: Refusal, now: Instant) {
        let mut st = self
            .state
            .lock()
            .expect("admission state is never poisoned");
        self.refused(&mut st, peer, refusal, now);
    }

    fn refused(&self, st: &mut State, peer: IpAddr, refusal: Refusal, now: Instant) {
        self.metrics.connections_refused.inc();
        let reason = match refusal {
            Refusal::NotAllowed => "peer not in allowed_peers",
            Refusal::PeerCap => {
                self.metrics.connections_refused_per_peer.inc();
                "max_connections_per_peer reached"
            }
            Refusal::ChannelFull => "max_connections reached, every connection busy",
        };
        if st.refusals.len() >= REFUSAL_LOG_PEERS && !st.refusals.contains_key(&peer) {
            self.flush_refusal_logs(st, now);
        }
        if let Some(refused) = line_due(&mut st.refusals, peer, now) {
            warn!(channel = %self.channel, peer = %peer, refused, reason, "Connections refused (count since the last such line for this peer).");
        }
    }

    /// Logs the pending counts of peers whose last line is a minute old and forgets them, so
    /// that a flood from many addresses keeps the map bounded.
    fn flush_refusal_logs(&self, st: &mut State, now: Instant) {
        st.refusals.retain(|peer, log| {
            let due = now >= log.logged_at + REFUSAL_LOG_INTERVAL;
            if due && log.since > 0 {
                warn!(channel = %self.channel, peer = %peer, refused = log.since, "Connections refused (count since the last such line for this peer).");
            }
            !due
        });
    }

    fn release(&self, id: u64) {
        let mut st = self
            .state
            .lock()
            .expect("admission state is never poisoned");
        if let Some(o) = st.open.remove(&id) {
            release_peer(&mut st.per_peer, o.peer);
        }
    }
}

/// Notes one refusal of `peer` at `now`; returns the count to log when a line is due: at once
/// for a peer not seen in the last minute, else once a minute with the refusals since.
fn line_due(refusals: &mut HashMap<IpAddr, RefusalLog>, peer: IpAddr, now: Instant) -> Option<u64> {
    if refusals.len() >= REFUSAL_LOG_PEERS && !refusals.contains_key(&peer) {
        // Thousands of peers refused within the minute: this one is only counted.
        return None;
    }
    match refusals.entry(peer) {
        Entry::Vacant(v) => {
            v.insert(RefusalLog {
                logged_at: now,
                since: 0,
            });
            Some(1)
        }
        Entry::Occupied(mut o) => {
            let log = o.get_mut();
            log.since += 1;
            if now < log.logged_at + REFUSAL_LOG_INTERVAL {
                return None;
            }
            let refused = log.since;
            *log = RefusalLog {
                logged_at: now,
                since: 0,
            };
            Some(refused)
        }
    }
}

fn release_peer(per_peer: &mut HashMap<IpAddr, usize>, peer: IpAddr) {
    if let Some(n) = per_peer.get_mut(&peer) {
        *n -= 1;
        if *n == 0 {
            per_peer.remove(&peer);
        }
    }
}

/// An admitted connection's slot, released when dropped.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    admission: Arc<Admission>,
    activity: Arc<Activity>,
}

impl Ticket {
    /// What the connection's stream wrapper and tasks update.
    pub fn activity(&self) -> Arc<Activity> {
        self.activity.clone()
    }

    /// Completes when the connection was closed to admit another; its slot is already free.
    pub fn evicted(&self) -> WaitForCancellationFutureOwned {
        self.activity.evicted.clone().cancelled_owned()
    }

    /// Marks one message (or request) in flight until the guard is dropped: a connection
    /// with one is never chosen to make room.
    pub fn busy(&self) -> Busy {
        Busy::new(self.activity.clone())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(self.id);
    }
}

/// One message or request in flight on a connection; see [`Ticket::busy`].
#[derive(Debug)]
pub struct Busy {
    activity: Arc<Activity>,
}

impl Busy {
    /// Marks one more message in flight on the connection of `activity`.
    pub fn new(activity: Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Busy { activity }
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.activity.busy.fetch_sub(1, Ordering::Relaxed);
        self.activity.touch(Instant::now());
    }
}

/// A stream that records, in its [`Activity`], every moment bytes move either way.
#[derive(Debug)]
pub struct TrackedIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> TrackedIo<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        TrackedIo { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.activity.touch(Instant::now());
            self.activity
                .read_bytes
                .fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(Instant::now());
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch(Instant::now());
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    fn admission(max_connections: usize, max_connections_per_peer: usize) -> Arc<Admission> {
        Admission::new(
            "t",
            Caps {
                max_connections,
                max_connections_per_peer,
            },
            SourceMetrics::unregistered(),
        )
    }

    #[test]
    fn a_peer_at_its_cap_is_refused_while_others_are_admitted() {
        let a = admission(10, 2);
        let t0 = Instant::now();
        let held: Vec<Ticket> = (0..2)
            .map(|_| a.admit(ip(1), t0).expect("under the cap"))
            .collect();
        assert_eq!(a.admit(ip(1), t0).map(|_| ()), Err(Refusal::PeerCap));
        let other = a.admit(ip(2), t0).expect("another peer");
        assert_eq!(a.metrics.connections_refused_per_peer.get(), 1);
        assert_eq!(a.metrics.connections_refused.get(), 1);
        // A slot released is the peer's again.
        drop(held);
        let again = a.admit(ip(1), t0).expect("the peer's slots are free again");
        assert_eq!(a.open(), 2, "one of ip(1), one of ip(2)");
        drop((again, other));
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn a_full_channel_closes_the_connection_idle_longest_for_a_newcomer() {
        let a = admission(3, 10);
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let first = a.admit(ip(1), at(0)).expect("1");
        let second = a.admit(ip(1), at(10)).expect("2");
        let third = a.admit(ip(1), at(20)).expect("3");
        // The first talks again later; the second is now the one idle longest.
        first.activity().touch(at(500));
        let newcomer = a.admit(ip(2), at(600)).expect("room is made");
        assert!(second.activity.evicted.is_cancelled());
        assert!(!first.activity.evicted.is_cancelled());
        assert!(!third.activity.evicted.is_cancelled());
        assert_eq!(a.open(), 3, "the evicted slot is free at once");
        assert_eq!(a.metrics.connections_evicted.get(), 1);
        assert_eq!(a.metrics.connections_refused.get(), 0);
        // Dropping the evicted ticket later frees nothing twice.
        drop(second);
        assert_eq!(a.open(), 3);
        drop((first, third, newcomer));
        assert_eq!(a.open(), 0);
    }

    #[test]
    fn a_connection_with_a_message_in_flight_is_never_evicted() {
        let a = admission(2, 10);
        let t0 = Instant::now();
        let old = a.admit(ip(1), t0).expect("1");
        let busy = old.busy();
        let young = a.admit(ip(1), t0 + Duration::from_secs(1)).expect("2");
        let newcomer = a
            .admit(ip(2), t0 + Duration::from_secs(2))
            .expect("the idle one makes room");
        assert!(young.activity.evicted.is_cancelled());
        assert!(!old.activity.evicted.is_cancelled());
        // Now both are busy: the next newcomer is refused, nobody is cut.
        let _busy2 = newcomer.busy();
        assert_eq!(
            a.admit(ip(3), t0 + Duration::from_secs(3)).map(|_| ()),
            Err(Refusal::ChannelFull)
        );
        assert_eq!(a.metrics.connections_refused.get(), 1);
        assert_eq!(a.metrics.connections_refused_per_peer.get(), 0);
        drop(busy);
        assert!(a.admit(ip(3), t0 + Duration::from_secs(4)).is_ok());
        assert!(old.activity.evicted.is_cancelled());
    }

    #[test]
    fn refusals_are_logged_at_once_then_at_most_once_a_minute_with_the_count() {
        let mut logs = HashMap::new();
        let t0 = Instant::now();
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(
            line_due(&mut logs, ip(1), at(0)),
            Some(1),
            "the first at once"
        );
        for s in 1..60 {
            assert_eq!(line_due(&mut logs, ip(1), at(s)), None, "second {s}");
        }
        // Another peer has its own minute.
        assert_eq!(line_due(&mut logs, ip(2), at(30)), Some(1));
        // A minute after the last line: the 59 since, plus this one.
        assert_eq!(line_due(&mut logs, ip(1), at(60)), Some(60));
        assert_eq!(line_due(&mut logs, ip(1), at(61)), None);
        assert_eq!(line_due(&mut logs, ip(1), at(200)), Some(2));
    }

    #[test]
    fn the_refusal_log_stays_bounded_under_a_flood_from_many_addresses() {
        let a = admission(1, 1);
        let t0 = Instant::now();
        let held = a.admit(ip(1), t0).expect("one");
        let _busy = held.busy();
        for i in 0..(REFUSAL_LOG_PEERS as u32 + 500) {
            let peer = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(a.admit(peer, t0).is_err());
        }
        let st = a.state.lock().expect("lock");
        assert!(
            st.refusals.len() <= REFUSAL_LOG_PEERS,
            "{}",
            st.refusals.len()
        );
        drop(st);
        assert_eq!(
            a.metrics.connections_refused.get(),
            REFUSAL_LOG_PEERS as u64 + 500,
            "every refusal is counted"
        );
        // A minute on, the old entries make room again.
        let later = t0 + REFUSAL_LOG_INTERVAL;
        assert!(a.admit(IpAddr::from([192, 0, 2, 1]), later).is_err());
        assert_eq!(a.state.lock().expect("lock").refusals.len(), 1);
    }

    #[tokio::test]
    async fn tracked_io_records_reads_and_writes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let a = admission(1, 1);
        let t = a.admit(ip(1), a.epoch).expect("admitted");
        let (client, server) = tokio::io::duplex(64);
        let mut server = TrackedIo::new(server, t.activity());
        let mut client = client;
        let before = t.activity.last_ms.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        client.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 2];
        server.read_exact(&mut buf).await.expect("read");
        let after_read = t.activity.last_ms.load(Ordering::Relaxed);
        assert!(after_read >= before + 20, "{before} -> {after_read}");
        tokio::time::sleep(Duration::from_millis(20)).await;
        server.write_all(b"ok").await.expect("write");
        assert!(t.activity.last_ms.load(Ordering::Relaxed) >= after_read + 20);
    }
}
