//! Every metric the engine exports: names, help texts and label sets, in one place.
//!
//! Names are `switchboard_` + snake_case + base unit, `_total` on counters. Labels come from
//! closed sets: channel names from config, message types restricted by [`message_type_label`],
//! ACK codes, reasons from [`transforms::hl7v2::validate::ErrorCode::reason_label`]. No label
//! ever holds patient data or free text. `dashboards/` uses only the names listed here.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// `switchboard_messages_received_total{channel, message_type}`.
pub const MESSAGES_RECEIVED: &str = "switchboard_messages_received_total";
/// `switchboard_acks_sent_total{channel, code}`: answers by MSA-1 code.
pub const ACKS_SENT: &str = "switchboard_acks_sent_total";
/// `switchboard_messages_rejected_total{channel, reason}`: NAKs by reason.
pub const MESSAGES_REJECTED: &str = "switchboard_messages_rejected_total";
/// `switchboard_duplicates_total{channel}`: resends answered from the store.
pub const DUPLICATES: &str = "switchboard_duplicates_total";
/// `switchboard_ingest_duration_seconds{channel}`: receipt to answer handed to the connection.
pub const INGEST_DURATION: &str = "switchboard_ingest_duration_seconds";
/// `switchboard_store_commit_duration_seconds`: one group-commit flush.
pub const STORE_COMMIT_DURATION: &str = "switchboard_store_commit_duration_seconds";
/// `switchboard_store_commit_batch_size`: messages covered by one flush.
pub const STORE_COMMIT_BATCH: &str = "switchboard_store_commit_batch_size";
/// `switchboard_store_errors_total{operation}`: failed store writes or flushes.
pub const STORE_ERRORS: &str = "switchboard_store_errors_total";
/// `switchboard_store_fsyncs_total`: group commits made durable with an fdatasync.
pub const STORE_FSYNCS: &str = "switchboard_store_fsyncs_total";
/// `switchboard_store_fsync_enabled`: 1 when answers wait for an fsync, 0 for
/// `durability = "os"`.
pub const STORE_FSYNC_ENABLED: &str = "switchboard_store_fsync_enabled";
/// `switchboard_control_id_reused_total{channel}`: a sender key seen before with a different
/// body (a reset counter): stored as a new message, not answered as a resend.
pub const CONTROL_ID_REUSED: &str = "switchboard_control_id_reused_total";
/// `switchboard_store_size_bytes`: size of the store on disk.
pub const STORE_SIZE: &str = "switchboard_store_size_bytes";
/// `switchboard_mllp_connections_opened_total{channel}`.
pub const MLLP_OPENED: &str = "switchboard_mllp_connections_opened_total";
/// `switchboard_mllp_connections_closed_total{channel}`.
pub const MLLP_CLOSED: &str = "switchboard_mllp_connections_closed_total";
/// `switchboard_mllp_connections_refused_total{channel}`: over the cap or not allowed.
pub const MLLP_REFUSED: &str = "switchboard_mllp_connections_refused_total";
/// `switchboard_connections_refused_per_peer_total{channel}`: connections to a source (MLLP
/// or HTTP) refused because their peer address held `max_connections_per_peer`; also counted
/// in [`MLLP_REFUSED`].
pub const CONNECTIONS_REFUSED_PER_PEER: &str = "switchboard_connections_refused_per_peer_total";
/// `switchboard_connections_evicted_total{channel}`: idle connections to a source (MLLP or
/// HTTP) closed to admit a new one when the source held `max_connections`.
pub const CONNECTIONS_EVICTED: &str = "switchboard_connections_evicted_total";
/// `switchboard_mllp_junk_bytes_total{channel}`: bytes skipped outside frames.
pub const MLLP_JUNK: &str = "switchboard_mllp_junk_bytes_total";
/// `switchboard_mllp_timeouts_total{channel}`: connections cut by a timeout.
pub const MLLP_TIMEOUTS: &str = "switchboard_mllp_timeouts_total";
/// `switchboard_http_auth_failures_total{channel}`: HTTP source requests refused for missing
/// or wrong credentials, signature or timestamp.
pub const HTTP_AUTH_FAILURES: &str = "switchboard_http_auth_failures_total";
/// `switchboard_channel_last_message_timestamp_seconds{channel}`.
pub const CHANNEL_LAST_MESSAGE: &str = "switchboard_channel_last_message_timestamp_seconds";
/// `switchboard_channel_paused{channel}`: 1 while an operator has the channel paused
/// (`POST /api/channels/{name}/pause`), else 0.
pub const CHANNEL_PAUSED: &str = "switchboard_channel_paused";
/// `switchboard_messages_processed_total{channel, message_type, outcome}`: routed or filtered.
pub const MESSAGES_PROCESSED: &str = "switchboard_messages_processed_total";
/// `switchboard_deliveries_total{channel, destination, outcome}`: attempts by outcome
/// (`delivered`, `retried`, `dead_letter`).
pub const DELIVERIES: &str = "switchboard_deliveries_total";
/// `switchboard_delivery_duration_seconds{channel, destination}`: one attempt.
pub const DELIVERY_DURATION: &str = "switchboard_delivery_duration_seconds";
/// `switchboard_outbox_depth{channel, destination}`: deliveries waiting.
pub const OUTBOX_DEPTH: &str = "switchboard_outbox_depth";
/// `switchboard_outbox_oldest_age_seconds{channel, destination}`: age of the oldest waiting.
pub const OUTBOX_OLDEST_AGE: &str = "switchboard_outbox_oldest_age_seconds";
/// `switchboard_dead_letters_total{channel, destination}`: deliveries given up.
pub const DEAD_LETTERS: &str = "switchboard_dead_letters_total";
/// `switchboard_dead_letters_outstanding{channel, destination}`: dead letters still waiting for
/// a retry or discard (read from the store when the destination starts, after each new dead
/// letter, and every [`DEAD_LETTERS_REFRESH_SECS`] seconds, so retries and discards show).
pub const DEAD_LETTERS_OUTSTANDING: &str = "switchboard_dead_letters_outstanding";
/// How often a destination re-reads its [`DEAD_LETTERS_OUTSTANDING`] from the store.
pub const DEAD_LETTERS_REFRESH_SECS: u64 = 10;
/// `switchboard_appointment_slots_closed_total{channel, destination}`: old slots closed
/// before a rescheduled appointment was sent (see `store::ledger`).
pub const APPOINTMENT_SLOTS_CLOSED: &str = "switchboard_appointment_slots_closed_total";
/// `switchboard_appointment_unknown_reschedules_total{channel, destination}`: reschedules
/// (SIU^S13) of an appointment the ledger never saw, sent to a destination that keys
/// appointments by slot: the old slot could not be closed and may remain there (see
/// `docs/ASSUMPTIONS.md`).
pub const APPOINTMENT_UNKNOWN_RESCHEDULES: &str =
    "switchboard_appointment_unknown_reschedules_total";
/// `switchboard_destination_up{channel, destination}`: 0 while the circuit breaker is open.
pub const DESTINATION_UP: &str = "switchboard_destination_up";
/// `switchboard_store_purged_messages_total`: messages removed by retention.
pub const STORE_PURGED: &str = "switchboard_store_purged_messages_total";
/// `switchboard_retention_removed_total{channel}`: messages removed by retention, by channel.
pub const RETENTION_REMOVED: &str = "switchboard_retention_removed_total";
/// `switchboard_store_reserve_refusals_total{path}`: store writes refused because less than
/// `min_free_disk_bytes` was free, by write path ([`STORE_WRITE_PATHS`]).
pub const STORE_RESERVE_REFUSALS: &str = "switchboard_store_reserve_refusals_total";
/// `switchboard_build_info{version, config_version}`: always 1.
pub const BUILD_INFO: &str = "switchboard_build_info";
/// `switchboard_store_disk_available_bytes`: free bytes (for an unprivileged user) on the
/// filesystem holding `data_dir`, read when `/metrics` is scraped.
pub const STORE_DISK_AVAILABLE: &str = "switchboard_store_disk_available_bytes";
/// `switchboard_tls_handshake_failures_total{channel, reason}`: TLS handshakes a source
/// refused; reasons in [`channels::tls::HandshakeFailure::REASONS`].
pub const TLS_HANDSHAKE_FAILURES: &str = "switchboard_tls_handshake_failures_total";
/// `switchboard_tls_cert_expiry_timestamp_seconds{channel, endpoint, role}`: notAfter of each
/// configured certificate; `endpoint` is `source` or a destination name, `role` one of
/// `server`, `client_ca`, `client`, `ca` ([`channels::tls::CertExpiry`]). Only served when
/// some channel uses TLS.
pub const TLS_CERT_EXPIRY: &str = "switchboard_tls_cert_expiry_timestamp_seconds";

/// `switchboard_dicom_associations_total{channel, outcome}`: DICOM associations asked of a
/// `dicom_worklist` or `dicom_store` source, by outcome ([`DICOM_ASSOCIATION_OUTCOMES`]).
/// Served once a DICOM source starts.
pub const DICOM_ASSOCIATIONS: &str = "switchboard_dicom_associations_total";
/// `switchboard_dicom_worklist_items{worklist}`: scheduled procedure steps in each modality
/// worklist. Served once a DICOM worklist source or worklist destination starts.
pub const DICOM_WORKLIST_ITEMS: &str = "switchboard_dicom_worklist_items";
/// `switchboard_dicom_stored_instances_total{channel}`: objects a `dicom_store` source wrote
/// (fsynced). Served once a DICOM storage source starts.
pub const DICOM_STORED_INSTANCES: &str = "switchboard_dicom_stored_instances_total";
/// The `outcome` label values of [`DICOM_ASSOCIATIONS`]; each starts at 0 with its channel:
/// `accepted`, `rejected` (A-ASSOCIATE-RJ: AE title not allowed), `refused` (peer address
/// not allowed, or `max_associations` reached) and `failed` (the negotiation broke).
pub const DICOM_ASSOCIATION_OUTCOMES: &[&str] = &["accepted", "rejected", "refused", "failed"];

/// Families served only when the configuration uses the feature behind them.
pub const CONDITIONAL: &[&str] = &[
    TLS_CERT_EXPIRY,
    DICOM_ASSOCIATIONS,
    DICOM_WORKLIST_ITEMS,
    DICOM_STORED_INSTANCES,
    CLUSTER_NODES_UP,
    CLUSTER_OWNED_PARTITIONS,
    CLUSTER_PUBLISH_DURATION,
    CLUSTER_PUBLISH_FAILURES,
    CLUSTER_CONSUMER_LAG,
    CLUSTER_STREAM_MESSAGES,
    CLUSTER_PARTITIONS_ACQUIRED,
    CLUSTER_NOTICES_SENT,
    CLUSTER_NOTICES_APPLIED,
    CLUSTER_UNOPENED,
];
/// `switchboard_sftp_files_picked_total{channel}`: files an SFTP source took (stable, matching).
pub const SFTP_FILES_PICKED: &str = "switchboard_sftp_files_picked_total";
/// `switchboard_sftp_files_failed_total{channel}`: files moved to the error folder.
pub const SFTP_FILES_FAILED: &str = "switchboard_sftp_files_failed_total";
/// `switchboard_sftp_poll_errors_total{channel}`: failed connections, listings and moves.
pub const SFTP_POLL_ERRORS: &str = "switchboard_sftp_poll_errors_total";

/// `switchboard_config_reloads_total{outcome}`: reloads by SIGHUP or `POST /api/reload`;
/// `ok`, `refused` (the new configuration has problems; the running one stays) or `failed`
/// (valid, but a channel could not be restarted).
pub const CONFIG_RELOADS: &str = "switchboard_config_reloads_total";

/// The `outcome` label values of [`CONFIG_RELOADS`]; each starts at 0.
pub const RELOAD_OUTCOMES: &[&str] = &["ok", "refused", "failed"];
/// `switchboard_latrexa_bookings_received_total{channel, source}`: Latrexa online booking
/// revisions taken, `source` = `hub` or `poll`.
pub const LATREXA_BOOKINGS_RECEIVED: &str = "switchboard_latrexa_bookings_received_total";
/// `switchboard_latrexa_bookings_confirmed_total{channel}`: bookings written in the HIS and
/// confirmed at Latrexa.
pub const LATREXA_BOOKINGS_CONFIRMED: &str = "switchboard_latrexa_bookings_confirmed_total";
/// `switchboard_latrexa_bookings_rejected_total{channel}`: bookings refused by the HIS and
/// rejected at Latrexa.
pub const LATREXA_BOOKINGS_REJECTED: &str = "switchboard_latrexa_bookings_rejected_total";
/// `switchboard_latrexa_hub_connected{channel}`: 1 while the Latrexa SignalR hub is connected,
/// 0 while the channel polls.
pub const LATREXA_HUB_CONNECTED: &str = "switchboard_latrexa_hub_connected";
/// `switchboard_latrexa_heartbeats_total{channel, outcome}`: heartbeats, `outcome` = `sent` or
/// `failed`.
pub const LATREXA_HEARTBEATS: &str = "switchboard_latrexa_heartbeats_total";

/// The `outcome` label values of [`DELIVERIES`]; each starts at 0 with its destination.
pub const DELIVERY_OUTCOMES: &[&str] = &["delivered", "retried", "dead_letter"];

/// The `code` label values of [`ACKS_SENT`] on an HL7 source; each starts at 0 with its
/// channel (HTTP sources label answers with their status code, which appear as sent).
pub const HL7_ACK_CODES: &[&str] = &["AA", "AE", "AR", "CA", "CE", "CR"];

/// The `reason` label values of [`MESSAGES_REJECTED`]: every HL7 error code's label and the
/// HTTP sources' two; each starts at 0 with its channel.
pub fn reject_reasons() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = transforms::hl7v2::validate::ErrorCode::ALL
        .iter()
        .map(|c| c.reason_label())
        .collect();
    v.extend_from_slice(crate::ingest_http::REASON_LABELS);
    v
}

/// `switchboard_cluster_nodes_up`: nodes of the cluster with a live heartbeat, as this node
/// sees them (cluster mode only, as every `switchboard_cluster_*` family).
pub const CLUSTER_NODES_UP: &str = "switchboard_cluster_nodes_up";
/// `switchboard_cluster_owned_partitions`: delivery partitions this node holds the lease of.
pub const CLUSTER_OWNED_PARTITIONS: &str = "switchboard_cluster_owned_partitions";
/// `switchboard_cluster_publish_duration_seconds`: from publishing a message to the stream
/// to its acknowledgement (what the cluster adds to an answer).
pub const CLUSTER_PUBLISH_DURATION: &str = "switchboard_cluster_publish_duration_seconds";
/// `switchboard_cluster_publish_failures_total`: messages the stream did not acknowledge
/// (answered AR/CR 207 or HTTP 503).
pub const CLUSTER_PUBLISH_FAILURES: &str = "switchboard_cluster_publish_failures_total";
/// `switchboard_cluster_consumer_lag_messages`: stream messages of this node's partitions
/// not yet delivered and acknowledged.
pub const CLUSTER_CONSUMER_LAG: &str = "switchboard_cluster_consumer_lag_messages";
/// `switchboard_cluster_stream_messages`: messages the work stream holds.
pub const CLUSTER_STREAM_MESSAGES: &str = "switchboard_cluster_stream_messages";
/// `switchboard_cluster_partitions_acquired_total`: partition leases this node took (at
/// start, from a dead node, or after a rebalance).
pub const CLUSTER_PARTITIONS_ACQUIRED: &str = "switchboard_cluster_partitions_acquired_total";
/// `switchboard_cluster_notices_sent_total`: completion notices this node, as a partition's
/// owner, sent to the nodes that received the messages it finished.
pub const CLUSTER_NOTICES_SENT: &str = "switchboard_cluster_notices_sent_total";
/// `switchboard_cluster_notices_applied_total`: completion notices this node wrote on the
/// records of messages it received.
pub const CLUSTER_NOTICES_APPLIED: &str = "switchboard_cluster_notices_applied_total";
/// `switchboard_cluster_unopened_messages_total`: work and notices this node could not open
/// with its `[encryption]` keys (sealed under a key it lacks): left in the stream, nothing
/// delivered. Anything above 0 needs an operator.
pub const CLUSTER_UNOPENED: &str = "switchboard_cluster_unopened_messages_total";

/// The families only a node with `[cluster]` exports (part of [`exported_names`], and of
/// [`CONDITIONAL`]).
pub fn cluster_names() -> Vec<&'static str> {
    vec![
        CLUSTER_NODES_UP,
        CLUSTER_OWNED_PARTITIONS,
        CLUSTER_PUBLISH_DURATION,
        CLUSTER_PUBLISH_FAILURES,
        CLUSTER_CONSUMER_LAG,
        CLUSTER_STREAM_MESSAGES,
        CLUSTER_PARTITIONS_ACQUIRED,
        CLUSTER_NOTICES_SENT,
        CLUSTER_NOTICES_APPLIED,
        CLUSTER_UNOPENED,
    ]
}

/// Families that appear with their first event, not at start: a zero would be a lie
/// (`switchboard_channel_last_message_timestamp_seconds` = 0 reads as "1970").
pub const FIRST_EVENT: &[&str] = &[CHANNEL_LAST_MESSAGE];

/// The `operation` label values of [`STORE_ERRORS`]; each starts at 0 so alerts see the series.
pub const STORE_OPERATIONS: &[&str] = &["write", "flush"];

/// The `path` label values of [`STORE_RESERVE_REFUSALS`] (`crate::store::space::WritePath`);
/// each starts at 0.
pub const STORE_WRITE_PATHS: &[&str] = &[
    "ingest", "delivery", "booking", "operator", "status", "audit",
];

/// Namespace of the process collector (Linux only): none, so the families have the standard
/// `process_*` names every Prometheus client library exports (and dashboards expect).
pub const PROCESS_NAMESPACE: &str = "";

/// The families the prometheus crate's process collector exports under [`PROCESS_NAMESPACE`]
/// (see its `process_collector.rs`): CPU, file descriptors, memory, start time, threads.
pub const PROCESS_METRICS: &[&str] = &[
    "process_cpu_seconds_total",
    "process_open_fds",
    "process_max_fds",
    "process_virtual_memory_bytes",
    "process_resident_memory_bytes",
    "process_start_time_seconds",
    "process_threads",
];

/// Every metric family `/metrics` exports, by family name (histograms without their
/// `_bucket`, `_sum` and `_count` suffixes). `dashboards/` may use only these names; the
/// end-to-end tests check this list against a running engine in both directions.
pub fn exported_names() -> Vec<&'static str> {
    let mut names = vec![
        MESSAGES_RECEIVED,
        ACKS_SENT,
        MESSAGES_REJECTED,
        DUPLICATES,
        INGEST_DURATION,
        STORE_COMMIT_DURATION,
        STORE_COMMIT_BATCH,
        STORE_ERRORS,
        STORE_FSYNCS,
        STORE_FSYNC_ENABLED,
        CONTROL_ID_REUSED,
        STORE_SIZE,
        STORE_DISK_AVAILABLE,
        MLLP_OPENED,
        MLLP_CLOSED,
        MLLP_REFUSED,
        CONNECTIONS_REFUSED_PER_PEER,
        CONNECTIONS_EVICTED,
        MLLP_JUNK,
        MLLP_TIMEOUTS,
        HTTP_AUTH_FAILURES,
        CHANNEL_LAST_MESSAGE,
        CHANNEL_PAUSED,
        MESSAGES_PROCESSED,
        DELIVERIES,
        DELIVERY_DURATION,
        OUTBOX_DEPTH,
        OUTBOX_OLDEST_AGE,
        DEAD_LETTERS,
        DEAD_LETTERS_OUTSTANDING,
        APPOINTMENT_SLOTS_CLOSED,
        APPOINTMENT_UNKNOWN_RESCHEDULES,
        DESTINATION_UP,
        STORE_PURGED,
        RETENTION_REMOVED,
        STORE_RESERVE_REFUSALS,
        BUILD_INFO,
        TLS_HANDSHAKE_FAILURES,
        TLS_CERT_EXPIRY,
        SFTP_FILES_PICKED,
        SFTP_FILES_FAILED,
        SFTP_POLL_ERRORS,
        CONFIG_RELOADS,
        LATREXA_BOOKINGS_RECEIVED,
        LATREXA_BOOKINGS_CONFIRMED,
        LATREXA_BOOKINGS_REJECTED,
        LATREXA_HUB_CONNECTED,
        LATREXA_HEARTBEATS,
        DICOM_ASSOCIATIONS,
        DICOM_WORKLIST_ITEMS,
        DICOM_STORED_INSTANCES,
    ];
    if cfg!(target_os = "linux") {
        names.extend_from_slice(PROCESS_METRICS);
    }
    names.extend(cluster_names());
    names
}

/// Free bytes for an unprivileged user on the filesystem holding `path`; `None` when it
/// cannot be read (or on a platform without `statvfs`).
pub fn disk_available_bytes(path: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::fs::statvfs(path)
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// HL7 message codes that may appear in the `message_type` label; anything else is `other`.
const KNOWN_CODES: &[&str] = &[
    "ACK", "ADT", "BAR", "DFT", "MDM", "MFN", "OML", "ORL", "ORM", "ORR", "ORU", "OUL", "QBP",
    "QRY", "RDE", "RDS", "RSP", "SIU", "SRM", "VXU",
];

/// The `message_type` label for `code` and `trigger`: `ADT_A04`, or `other`.
pub fn message_type_label(code: &str, trigger: &str) -> String {
    let trigger_ok = trigger.len() == 3
        && trigger.as_bytes()[0].is_ascii_uppercase()
        && trigger.as_bytes()[1..].iter().all(u8::is_ascii_digit);
    match (KNOWN_CODES.contains(&code), trigger_ok, trigger.is_empty()) {
        (true, true, _) => format!("{code}_{trigger}"),
        (true, false, true) => code.to_string(),
        _ => "other".into(),
    }
}

/// Creates metric families and registers them in one registry: the one place where a
/// family is made, so that [`Metrics::new`] and the cluster's metrics read as lists.
#[derive(Default)]
pub(crate) struct Registrar {
    /// The registry every family goes into.
    pub(crate) registry: Registry,
}

impl Registrar {
    /// Registers a collector.
    ///
    /// # Panics
    ///
    /// When a family of the same name is already registered: names are constants.
    pub(crate) fn register<C: prometheus::core::Collector + 'static>(&self, c: C) {
        self.registry
            .register(Box::new(c))
            .expect("metric registered once");
    }

    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.register(c.clone());
        c
    }

    /// A counter family with `labels`.
    pub(crate) fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// A counter without labels.
    pub(crate) fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("valid metric"))
    }

    /// A gauge family with `labels`.
    pub(crate) fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.add(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    /// A gauge without labels.
    pub(crate) fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("valid metric"))
    }

    /// A histogram without labels.
    pub(crate) fn histogram(
        &self,
        name: &str,
        help: &str,
        buckets: prometheus::Result<Vec<f64>>,
    ) -> Histogram {
        let opts = HistogramOpts::new(name, help).buckets(buckets.expect("valid buckets"));
        self.add(Histogram::with_opts(opts).expect("valid metric"))
    }

    /// A histogram family with `labels`.
    pub(crate) fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        buckets: prometheus::Result<Vec<f64>>,
        labels: &[&str],
    ) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets.expect("valid buckets"));
        self.add(HistogramVec::new(opts, labels).expect("valid metric"))
    }
}

/// The engine's metrics, registered in their own registry.
#[derive(Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    /// See [`MESSAGES_RECEIVED`].
    pub received: IntCounterVec,
    /// See [`ACKS_SENT`].
    pub acks: IntCounterVec,
    /// See [`MESSAGES_REJECTED`].
    pub rejected: IntCounterVec,
    /// See [`DUPLICATES`].
    pub duplicates: IntCounterVec,
    /// See [`INGEST_DURATION`].
    pub ingest_duration: HistogramVec,
    /// See [`STORE_COMMIT_DURATION`].
    pub commit_duration: Histogram,
    /// See [`STORE_COMMIT_BATCH`].
    pub commit_batch: Histogram,
    /// See [`STORE_ERRORS`].
    pub store_errors: IntCounterVec,
    /// See [`STORE_FSYNCS`].
    pub store_fsyncs: IntCounter,
    /// See [`STORE_FSYNC_ENABLED`].
    pub store_fsync_enabled: IntGauge,
    /// See [`CONTROL_ID_REUSED`].
    pub control_id_reused: IntCounterVec,
    /// See [`STORE_SIZE`].
    pub store_size: IntGauge,
    /// See [`STORE_DISK_AVAILABLE`].
    pub store_disk_available: IntGauge,
    /// See [`MLLP_OPENED`].
    pub mllp_opened: IntCounterVec,
    /// See [`MLLP_CLOSED`].
    pub mllp_closed: IntCounterVec,
    /// See [`MLLP_REFUSED`].
    pub mllp_refused: IntCounterVec,
    /// See [`CONNECTIONS_REFUSED_PER_PEER`].
    pub connections_refused_per_peer: IntCounterVec,
    /// See [`CONNECTIONS_EVICTED`].
    pub connections_evicted: IntCounterVec,
    /// See [`MLLP_JUNK`].
    pub mllp_junk: IntCounterVec,
    /// See [`MLLP_TIMEOUTS`].
    pub mllp_timeouts: IntCounterVec,
    /// See [`HTTP_AUTH_FAILURES`].
    pub http_auth_failures: IntCounterVec,
    /// See [`CHANNEL_LAST_MESSAGE`].
    pub last_message: IntGaugeVec,
    /// See [`CHANNEL_PAUSED`].
    pub channel_paused: IntGaugeVec,
    /// See [`MESSAGES_PROCESSED`].
    pub processed: IntCounterVec,
    /// See [`DELIVERIES`].
    pub deliveries: IntCounterVec,
    /// See [`DELIVERY_DURATION`].
    pub delivery_duration: HistogramVec,
    /// See [`OUTBOX_DEPTH`].
    pub outbox_depth: IntGaugeVec,
    /// See [`OUTBOX_OLDEST_AGE`].
    pub outbox_oldest_age: IntGaugeVec,
    /// See [`DEAD_LETTERS`].
    pub dead_letters: IntCounterVec,
    /// See [`DEAD_LETTERS_OUTSTANDING`].
    pub dead_letters_outstanding: IntGaugeVec,
    /// See [`APPOINTMENT_SLOTS_CLOSED`].
    pub slots_closed: IntCounterVec,
    /// See [`APPOINTMENT_UNKNOWN_RESCHEDULES`].
    pub unknown_reschedules: IntCounterVec,
    /// See [`DESTINATION_UP`].
    pub destination_up: IntGaugeVec,
    /// See [`STORE_PURGED`].
    pub purged: IntGauge,
    /// See [`RETENTION_REMOVED`].
    pub retention_removed: IntCounterVec,
    /// See [`STORE_RESERVE_REFUSALS`].
    pub store_reserve_refusals: IntCounterVec,
    /// See [`TLS_HANDSHAKE_FAILURES`].
    pub tls_handshake_failures: IntCounterVec,
    /// See [`TLS_CERT_EXPIRY`].
    pub tls_cert_expiry: IntGaugeVec,
    /// See [`SFTP_FILES_PICKED`].
    pub sftp_files_picked: IntCounterVec,
    /// See [`SFTP_FILES_FAILED`].
    pub sftp_files_failed: IntCounterVec,
    /// See [`SFTP_POLL_ERRORS`].
    pub sftp_poll_errors: IntCounterVec,
    /// See [`BUILD_INFO`].
    pub build_info: IntGaugeVec,
    /// See [`CONFIG_RELOADS`].
    pub reloads: IntCounterVec,
    /// Latrexa booking revisions taken, by channel and source.
    pub latrexa_received: IntCounterVec,
    /// Latrexa bookings confirmed, by channel.
    pub latrexa_confirmed: IntCounterVec,
    /// Latrexa bookings rejected, by channel.
    pub latrexa_rejected: IntCounterVec,
    /// Latrexa hub connected (1) or not (0), by channel.
    pub latrexa_hub_connected: IntGaugeVec,
    /// Latrexa heartbeats, by channel and outcome.
    pub latrexa_heartbeats: IntCounterVec,
    /// See [`DICOM_ASSOCIATIONS`].
    pub dicom_associations: IntCounterVec,
    /// See [`DICOM_WORKLIST_ITEMS`].
    pub dicom_worklist_items: IntGaugeVec,
    /// See [`DICOM_STORED_INSTANCES`].
    pub dicom_stored_instances: IntCounterVec,
}

impl Metrics {
    /// Creates and registers every metric.
    ///
    /// # Panics
    ///
    /// Never in practice: names and label sets are constants checked by the tests.
    pub fn new(config_version: &str) -> Metrics {
        let r = Registrar::default();
        let counter = |name: &str, help: &str, labels: &[&str]| r.counter_vec(name, help, labels);
        let per_destination =
            |name: &str, help: &str| r.gauge_vec(name, help, &["channel", "destination"]);
        let m = Metrics {
            registry: r.registry.clone(),
            received: counter(
                MESSAGES_RECEIVED,
                "Messages received, by channel and message type.",
                &["channel", "message_type"],
            ),
            acks: counter(
                ACKS_SENT,
                "Acknowledgments sent, by MSA-1 code.",
                &["channel", "code"],
            ),
            rejected: counter(
                MESSAGES_REJECTED,
                "Messages answered negatively, by reason.",
                &["channel", "reason"],
            ),
            duplicates: counter(
                DUPLICATES,
                "Resent messages answered with the first answer.",
                &["channel"],
            ),
            store_errors: counter(STORE_ERRORS, "Failed store operations.", &["operation"]),
            mllp_opened: counter(MLLP_OPENED, "MLLP connections accepted.", &["channel"]),
            mllp_closed: counter(MLLP_CLOSED, "MLLP connections closed.", &["channel"]),
            mllp_refused: counter(
                MLLP_REFUSED,
                "Source connections refused (a cap or the allow-list).",
                &["channel"],
            ),
            connections_refused_per_peer: counter(
                CONNECTIONS_REFUSED_PER_PEER,
                "Source connections refused because their peer address held max_connections_per_peer.",
                &["channel"],
            ),
            connections_evicted: counter(
                CONNECTIONS_EVICTED,
                "Idle source connections closed to admit a new one at max_connections.",
                &["channel"],
            ),
            mllp_junk: counter(
                MLLP_JUNK,
                "Bytes skipped outside MLLP frames.",
                &["channel"],
            ),
            mllp_timeouts: counter(
                MLLP_TIMEOUTS,
                "MLLP connections cut by a timeout.",
                &["channel"],
            ),
            http_auth_failures: counter(
                HTTP_AUTH_FAILURES,
                "HTTP source requests refused for credentials, signature or timestamp.",
                &["channel"],
            ),
            ingest_duration: r.histogram_vec(
                INGEST_DURATION,
                "Seconds from receipt to answer.",
                exponential_buckets(0.00005, 2.0, 18),
                &["channel"],
            ),
            commit_duration: r.histogram(
                STORE_COMMIT_DURATION,
                "Seconds one group-commit flush took.",
                exponential_buckets(0.00005, 2.0, 18),
            ),
            commit_batch: r.histogram(
                STORE_COMMIT_BATCH,
                "Messages covered by one group-commit flush.",
                exponential_buckets(1.0, 2.0, 12),
            ),
            store_fsyncs: r.counter(
                STORE_FSYNCS,
                "Group commits made durable with an fdatasync of the store's files.",
            ),
            store_fsync_enabled: r.gauge(
                STORE_FSYNC_ENABLED,
                "1 when answers wait for an fsync; 0 with durability = \"os\".",
            ),
            control_id_reused: counter(
                CONTROL_ID_REUSED,
                "Sender keys seen again with a different body, stored as new messages.",
                &["channel"],
            ),
            store_size: r.gauge(STORE_SIZE, "Bytes the store takes on disk."),
            store_disk_available: r.gauge(
                STORE_DISK_AVAILABLE,
                "Free bytes on the filesystem of the data folder.",
            ),
            last_message: r.gauge_vec(
                CHANNEL_LAST_MESSAGE,
                "Unix time of the last message received.",
                &["channel"],
            ),
            channel_paused: r.gauge_vec(
                CHANNEL_PAUSED,
                "1 while an operator has the channel paused, else 0.",
                &["channel"],
            ),
            processed: counter(
                MESSAGES_PROCESSED,
                "Messages routed or filtered.",
                &["channel", "message_type", "outcome"],
            ),
            deliveries: counter(
                DELIVERIES,
                "Delivery attempts by outcome.",
                &["channel", "destination", "outcome"],
            ),
            dead_letters: counter(
                DEAD_LETTERS,
                "Deliveries given up and put in the dead letters.",
                &["channel", "destination"],
            ),
            slots_closed: counter(
                APPOINTMENT_SLOTS_CLOSED,
                "Old appointment slots closed before a rescheduled appointment was sent.",
                &["channel", "destination"],
            ),
            unknown_reschedules: counter(
                APPOINTMENT_UNKNOWN_RESCHEDULES,
                "Reschedules of appointments the ledger never saw: the old slot may remain.",
                &["channel", "destination"],
            ),
            delivery_duration: r.histogram_vec(
                DELIVERY_DURATION,
                "Seconds one delivery attempt took.",
                exponential_buckets(0.0005, 2.0, 16),
                &["channel", "destination"],
            ),
            outbox_depth: per_destination(OUTBOX_DEPTH, "Deliveries waiting in the outbox."),
            outbox_oldest_age: per_destination(
                OUTBOX_OLDEST_AGE,
                "Age in seconds of the oldest delivery waiting.",
            ),
            dead_letters_outstanding: per_destination(
                DEAD_LETTERS_OUTSTANDING,
                "Dead letters waiting for a retry or discard.",
            ),
            destination_up: per_destination(
                DESTINATION_UP,
                "1 when the destination takes deliveries, 0 while its circuit breaker is open.",
            ),
            // A counter in meaning; a gauge type because retention adds whole batches at once.
            purged: r.gauge(STORE_PURGED, "Messages removed by retention since start."),
            retention_removed: counter(
                RETENTION_REMOVED,
                "Messages removed by retention, by channel.",
                &["channel"],
            ),
            store_reserve_refusals: counter(
                STORE_RESERVE_REFUSALS,
                "Store writes refused because free disk space was under min_free_disk_bytes, by write path.",
                &["path"],
            ),
            build_info: r.gauge_vec(
                BUILD_INFO,
                "Build and configuration version; always 1.",
                &["version", "config_version"],
            ),
            tls_handshake_failures: counter(
                TLS_HANDSHAKE_FAILURES,
                "TLS handshakes refused by a source, by reason.",
                &["channel", "reason"],
            ),
            tls_cert_expiry: r.gauge_vec(
                TLS_CERT_EXPIRY,
                "Unix time at which a configured TLS certificate expires (notAfter).",
                &["channel", "endpoint", "role"],
            ),
            sftp_files_picked: counter(
                SFTP_FILES_PICKED,
                "Files an SFTP source took for processing.",
                &["channel"],
            ),
            sftp_files_failed: counter(
                SFTP_FILES_FAILED,
                "Files an SFTP source moved to its error folder.",
                &["channel"],
            ),
            sftp_poll_errors: counter(
                SFTP_POLL_ERRORS,
                "Failed SFTP connections, listings and moves.",
                &["channel"],
            ),
            dicom_associations: counter(
                DICOM_ASSOCIATIONS,
                "DICOM associations asked of a DICOM source, by outcome.",
                &["channel", "outcome"],
            ),
            dicom_stored_instances: counter(
                DICOM_STORED_INSTANCES,
                "DICOM objects a storage source wrote to its folder (fsynced).",
                &["channel"],
            ),
            dicom_worklist_items: r.gauge_vec(
                DICOM_WORKLIST_ITEMS,
                "Scheduled procedure steps in each modality worklist.",
                &["worklist"],
            ),
            reloads: counter(
                CONFIG_RELOADS,
                "Configuration reloads, by outcome.",
                &["outcome"],
            ),
            latrexa_received: counter(
                LATREXA_BOOKINGS_RECEIVED,
                "Latrexa online booking revisions taken, by source (hub or poll).",
                &["channel", "source"],
            ),
            latrexa_confirmed: counter(
                LATREXA_BOOKINGS_CONFIRMED,
                "Latrexa bookings written in the HIS and confirmed at Latrexa.",
                &["channel"],
            ),
            latrexa_rejected: counter(
                LATREXA_BOOKINGS_REJECTED,
                "Latrexa bookings refused by the HIS and rejected at Latrexa.",
                &["channel"],
            ),
            latrexa_heartbeats: counter(
                LATREXA_HEARTBEATS,
                "Latrexa heartbeats, by outcome (sent or failed).",
                &["channel", "outcome"],
            ),
            latrexa_hub_connected: r.gauge_vec(
                LATREXA_HUB_CONNECTED,
                "1 while the Latrexa SignalR hub is connected, 0 while the channel polls.",
                &["channel"],
            ),
        };
        for op in STORE_OPERATIONS {
            m.store_errors.with_label_values(&[op]);
        }
        for path in STORE_WRITE_PATHS {
            m.store_reserve_refusals.with_label_values(&[path]);
        }
        m.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), config_version])
            .set(1);
        for outcome in RELOAD_OUTCOMES {
            m.reloads.with_label_values(&[outcome]);
        }
        #[cfg(target_os = "linux")]
        r.register(prometheus::process_collector::ProcessCollector::new(
            std::process::id() as i32,
            PROCESS_NAMESPACE,
        ));
        m
    }

    /// The metrics of one DICOM source; its association outcomes (and, for a storage
    /// source, its stored instances) start at 0.
    pub fn dicom(&self, channel: &str) -> channels::dicom::DicomMetrics {
        for outcome in DICOM_ASSOCIATION_OUTCOMES {
            self.dicom_associations
                .with_label_values(&[channel, outcome]);
        }
        channels::dicom::DicomMetrics {
            associations: self.dicom_associations.clone(),
            stored_instances: self.dicom_stored_instances.with_label_values(&[channel]),
        }
    }

    /// The metrics of one SFTP source.
    pub fn sftp(&self, channel: &str) -> channels::sftp::SftpMetrics {
        channels::sftp::SftpMetrics {
            files_picked: self.sftp_files_picked.with_label_values(&[channel]),
            files_failed: self.sftp_files_failed.with_label_values(&[channel]),
            poll_errors: self.sftp_poll_errors.with_label_values(&[channel]),
        }
    }

    /// Points [`BUILD_INFO`] at a new configuration version (after a reload).
    pub fn set_config_version(&self, old: &str, new: &str) {
        let _ = self
            .build_info
            .remove_label_values(&[env!("CARGO_PKG_VERSION"), old]);
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), new])
            .set(1);
    }

    /// Creates the series of a channel that starts, at 0, so dashboards and alerts see 0
    /// rather than no data: answers (`hl7_answers`: an HL7 source), rejections by reason,
    /// resends, the ingest time histogram, retention, and what routing did. The message type
    /// label of the zero series is `other`.
    pub fn channel_started(&self, channel: &str, hl7_answers: bool) {
        if hl7_answers {
            for code in HL7_ACK_CODES {
                self.acks.with_label_values(&[channel, code]);
            }
        }
        for reason in reject_reasons() {
            self.rejected.with_label_values(&[channel, reason]);
        }
        self.received.with_label_values(&[channel, "other"]);
        for outcome in ["routed", "filtered"] {
            self.processed
                .with_label_values(&[channel, "other", outcome]);
        }
        self.duplicates.with_label_values(&[channel]);
        self.ingest_duration.with_label_values(&[channel]);
        self.retention_removed.with_label_values(&[channel]);
        self.channel_paused.with_label_values(&[channel]);
    }

    /// Creates the series of a destination that starts, at 0 (see [`Metrics::channel_started`]).
    pub fn destination_started(&self, channel: &str, destination: &str) {
        let labels = [channel, destination];
        for outcome in DELIVERY_OUTCOMES {
            self.deliveries
                .with_label_values(&[channel, destination, outcome]);
        }
        self.dead_letters.with_label_values(&labels);
        self.slots_closed.with_label_values(&labels);
        self.unknown_reschedules.with_label_values(&labels);
        self.delivery_duration.with_label_values(&labels);
        self.dead_letters_outstanding.with_label_values(&labels);
    }

    /// The source metrics of one channel.
    pub fn source(&self, channel: &str) -> channels::source::SourceMetrics {
        // Starts at 0 with the channel, so an alert on it sees the series.
        self.control_id_reused.with_label_values(&[channel]);
        channels::source::SourceMetrics {
            connections_opened: self.mllp_opened.with_label_values(&[channel]),
            connections_closed: self.mllp_closed.with_label_values(&[channel]),
            connections_refused: self.mllp_refused.with_label_values(&[channel]),
            connections_refused_per_peer: self
                .connections_refused_per_peer
                .with_label_values(&[channel]),
            connections_evicted: self.connections_evicted.with_label_values(&[channel]),
            junk_bytes: self.mllp_junk.with_label_values(&[channel]),
            timeouts: self.mllp_timeouts.with_label_values(&[channel]),
            auth_failures: self.http_auth_failures.with_label_values(&[channel]),
            tls_handshake_failures: channels::tls::HandshakeFailures::new(|reason| {
                self.tls_handshake_failures
                    .with_label_values(&[channel, reason])
            }),
        }
    }

    /// Sets [`TLS_CERT_EXPIRY`] for every certificate given (channel, endpoint, expiry), and
    /// forgets the others; called at start and after every reload that applied, so a channel
    /// added by a reload has its expiry and a removed one loses it.
    pub fn record_tls_expiry<'a>(
        &self,
        certificates: impl IntoIterator<Item = (&'a str, String, channels::tls::CertExpiry)>,
    ) {
        self.tls_cert_expiry.reset();
        for (channel, endpoint, e) in certificates {
            self.tls_cert_expiry
                .with_label_values(&[channel, endpoint.as_str(), e.role])
                .set(e.not_after);
        }
    }

    /// Sets [`STORE_DISK_AVAILABLE`] from the filesystem holding `data_dir`; leaves it as it
    /// was when that cannot be read.
    pub fn refresh_disk_available(&self, data_dir: &std::path::Path) {
        if let Some(free) = disk_available_bytes(data_dir) {
            self.store_disk_available
                .set(i64::try_from(free).unwrap_or(i64::MAX));
        }
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let encoder = TextEncoder::new();
        if encoder.encode(&self.registry.gather(), &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_type_labels_are_a_closed_set() {
        assert_eq!(message_type_label("ADT", "A04"), "ADT_A04");
        assert_eq!(message_type_label("ADT", ""), "ADT");
        assert_eq!(message_type_label("ZZZ", "A04"), "other");
        assert_eq!(message_type_label("ADT", "JOHN"), "other");
        assert_eq!(message_type_label("ADT", "a04"), "other");
    }

    /// Family names from the `# TYPE` lines of an exposition.
    fn families(text: &str) -> std::collections::BTreeSet<&str> {
        text.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect()
    }

    #[test]
    fn every_metric_renders() {
        let m = Metrics::new("abc");
        m.received.with_label_values(&["c", "ADT_A04"]).inc();
        m.acks.with_label_values(&["c", "AA"]).inc();
        m.rejected.with_label_values(&["c", "data_type"]).inc();
        m.duplicates.with_label_values(&["c"]).inc();
        m.control_id_reused.with_label_values(&["c"]).inc();
        m.ingest_duration.with_label_values(&["c"]).observe(0.001);
        m.store_errors.with_label_values(&["flush"]).inc();
        let _ = m.source("c");
        let _ = m.sftp("c");
        m.last_message.with_label_values(&["c"]).set(1);
        m.channel_paused.with_label_values(&["c"]).set(0);
        m.processed
            .with_label_values(&["c", "ADT_A04", "routed"])
            .inc();
        m.deliveries
            .with_label_values(&["c", "d", "delivered"])
            .inc();
        m.delivery_duration
            .with_label_values(&["c", "d"])
            .observe(0.1);
        m.outbox_depth.with_label_values(&["c", "d"]).set(0);
        m.outbox_oldest_age.with_label_values(&["c", "d"]).set(0);
        m.dead_letters.with_label_values(&["c", "d"]).inc();
        m.dead_letters_outstanding
            .with_label_values(&["c", "d"])
            .set(1);
        m.slots_closed.with_label_values(&["c", "d"]).inc();
        m.unknown_reschedules.with_label_values(&["c", "d"]).inc();
        m.destination_up.with_label_values(&["c", "d"]).set(1);
        m.retention_removed.with_label_values(&["c"]).inc();
        m.tls_cert_expiry
            .with_label_values(&["c", "source", "server"])
            .set(1);
        m.latrexa_received.with_label_values(&["c", "hub"]).inc();
        m.latrexa_confirmed.with_label_values(&["c"]).inc();
        m.latrexa_rejected.with_label_values(&["c"]).inc();
        m.latrexa_hub_connected.with_label_values(&["c"]).set(1);
        m.latrexa_heartbeats.with_label_values(&["c", "sent"]).inc();
        let _ = m.dicom("c");
        m.dicom_worklist_items.with_label_values(&["w"]).set(1);
        let _ = crate::cluster::ClusterMetrics::register(&m);
        let text = m.render();
        let rendered = families(&text);
        let listed: std::collections::BTreeSet<&str> = exported_names().into_iter().collect();
        assert_eq!(rendered, listed, "exported_names() and the registry differ");
        assert_eq!(listed.len(), exported_names().len(), "no name listed twice");
    }

    #[test]
    fn a_started_channel_and_destination_serve_their_families_at_zero() {
        let m = Metrics::new("abc");
        let _ = m.source("c");
        let _ = m.sftp("c");
        let _ = m.latrexa_received.with_label_values(&["c", "hub"]);
        let _ = m.latrexa_confirmed.with_label_values(&["c"]);
        let _ = m.latrexa_rejected.with_label_values(&["c"]);
        let _ = m.latrexa_hub_connected.with_label_values(&["c"]);
        let _ = m.latrexa_heartbeats.with_label_values(&["c", "sent"]);
        m.channel_started("c", true);
        m.destination_started("c", "d");
        // What the delivery worker sets itself when it starts.
        let _ = m.destination_up.with_label_values(&["c", "d"]);
        let _ = m.outbox_depth.with_label_values(&["c", "d"]);
        let _ = m.outbox_oldest_age.with_label_values(&["c", "d"]);
        let text = m.render();
        let rendered = families(&text);
        let missing: Vec<&str> = exported_names()
            .into_iter()
            .filter(|n| !rendered.contains(n))
            .filter(|n| !CONDITIONAL.contains(n) && !FIRST_EVENT.contains(n))
            .collect();
        assert!(missing.is_empty(), "not served from the start: {missing:?}");
        for reason in reject_reasons() {
            let line = format!(
                "switchboard_messages_rejected_total{{channel=\"c\",reason=\"{reason}\"}} 0"
            );
            assert!(text.lines().any(|l| l == line), "{line}");
        }
        for outcome in DELIVERY_OUTCOMES {
            let line = format!(
                "switchboard_deliveries_total{{channel=\"c\",destination=\"d\",outcome=\"{outcome}\"}} 0"
            );
            assert!(text.lines().any(|l| l == line), "{line}");
        }
        let labels: std::collections::BTreeSet<&str> = reject_reasons().into_iter().collect();
        assert_eq!(
            labels.len(),
            reject_reasons().len(),
            "reason labels are distinct"
        );
    }

    #[test]
    fn store_errors_start_at_zero_for_every_operation() {
        let text = Metrics::new("abc").render();
        for op in STORE_OPERATIONS {
            assert!(
                text.contains(&format!("{STORE_ERRORS}{{operation=\"{op}\"}} 0")),
                "{op}: {text}"
            );
        }
    }

    #[test]
    fn reserve_refusals_start_at_zero_for_every_path() {
        let text = Metrics::new("abc").render();
        for path in STORE_WRITE_PATHS {
            assert!(
                text.contains(&format!("{STORE_RESERVE_REFUSALS}{{path=\"{path}\"}} 0")),
                "{path}: {text}"
            );
        }
    }

    #[test]
    fn disk_available_is_read_from_the_data_folder() {
        let dir = tempfile::tempdir().expect("tempdir");
        let free = disk_available_bytes(dir.path()).expect("statvfs works on a tempdir");
        assert!(free > 0);
        assert_eq!(disk_available_bytes(&dir.path().join("missing")), None);
        let m = Metrics::new("abc");
        m.refresh_disk_available(dir.path());
        assert!(m.store_disk_available.get() > 0);
    }
}
