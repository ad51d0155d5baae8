//! Wire types: every JSON body KeyGrid sends or receives, and the header names that carry
//! what the seed's byte-compatible bodies have no room for.
//!
//! The seed's four shapes (`HealthResponse`, `PutRequest`, `GetResponse`, `SuccessResponse`)
//! must serialise exactly as the seed's FastAPI service did: the only optional fields they
//! carry (a PUT's `lease` and `ttl`) are left out when unset, so a seed body round-trips.

use serde::{Deserialize, Serialize};

#[cfg(feature = "utoipa")]
use utoipa::ToSchema;

/// Header naming the node that produced a response.
pub const HEADER_NODE: &str = "x-keygrid-node";
/// Header carrying the request id; echoed when the client sent one, generated otherwise.
pub const HEADER_REQUEST_ID: &str = "x-request-id";
/// Header carrying the revision of a write (PUT and DELETE) or the key's mod_revision (GET).
pub const HEADER_REVISION: &str = "x-keygrid-revision";
/// Header carrying the key's create_revision on GET and PUT.
pub const HEADER_CREATE_REVISION: &str = "x-keygrid-create-revision";
/// Header carrying the key's version (writes since creation) on GET and PUT.
pub const HEADER_VERSION: &str = "x-keygrid-version";
/// Request header naming a write, so that retrying it can never apply it twice.
pub const HEADER_IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Response header on a write answered from its idempotency record: `true`.
pub const HEADER_IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// Header saying whether a GET was answered from the Redis cache: `hit` or `miss`.
pub const HEADER_CACHE: &str = "x-cache";
/// Header carrying the id of the lease a key is attached to, on GET.
pub const HEADER_LEASE: &str = "x-keygrid-lease";
/// Header carrying the milliseconds left on a leased key's lease, on GET.
pub const HEADER_TTL_REMAINING_MS: &str = "x-keygrid-ttl-remaining-ms";

/// The shortest and longest lease TTL, in seconds.
pub const MIN_LEASE_TTL_SECONDS: u64 = 1;
pub const MAX_LEASE_TTL_SECONDS: u64 = 86_400;

/// Default and largest page size of `GET /api/keys`.
pub const DEFAULT_PAGE_SIZE: u32 = 100;
pub const MAX_PAGE_SIZE: u32 = 1000;
/// The most bytes of body one page of keys or of versions holds (`GET /api/keys`,
/// `GET /api/key/history`): a page of large values ends early, with `next` to go on from.
/// A page holds at least one key, so one key larger than this alone is a page of its own.
pub const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// The detail of a 404 on `GET` or `DELETE /api/key`, exactly as the seed words it.
pub const DETAIL_KEY_NOT_FOUND: &str = "Key not found";
/// The detail of a node's 404 for a path it has no route for: a client that gets it was given
/// the wrong base URL (one ending in `/api`, say), not a missing key.
pub const DETAIL_ROUTE_NOT_FOUND: &str = "Not Found";
/// The detail of a 503 when the database cannot be reached.
pub const DETAIL_DATABASE_UNAVAILABLE: &str = "database unavailable";

/// `GET /api/health` → `{"status":"ok"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct HealthResponse {
    /// Always `ok` while the process serves HTTP.
    #[cfg_attr(feature = "utoipa", schema(example = "ok"))]
    pub status: String,
}

/// `PUT /api/key` request: `{"data":{"key":"foo","value":"bar"}}`, optionally with a lease to
/// attach the key to, or a TTL that grants a lease for this key alone (not both).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
// An unknown field is refused, not ignored: `{"data": ..., "tll": 5}` must not look as if a
// TTL was set.
#[serde(deny_unknown_fields)]
pub struct PutRequest {
    pub data: KeyValue,
    /// A live lease (from `POST /api/leases`): the key is deleted when the lease ends. A put
    /// without `lease` or `ttl` detaches the key from any lease it had.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, nullable = false))]
    pub lease: Option<i64>,
    /// Seconds: grants a lease of this TTL for this key alone (1 to 86400).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "whole::optional"
    )]
    #[cfg_attr(
        feature = "utoipa",
        schema(minimum = 1, maximum = 86400, nullable = false)
    )]
    pub ttl: Option<u64>,
}

impl PutRequest {
    /// The seed's body: a key and a value, no lease.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            data: KeyValue {
                key: key.into(),
                value: value.into(),
            },
            lease: None,
            ttl: None,
        }
    }
}

/// `POST /api/leases` request: `{"ttl": 30}`, seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseGrantRequest {
    /// Seconds, 1 to 86400.
    #[serde(deserialize_with = "whole::number")]
    #[cfg_attr(feature = "utoipa", schema(minimum = 1, maximum = 86400))]
    pub ttl: u64,
}

/// Whole numbers as JSON Schema's `integer` has them: `30` and `30.0` alike (serde's integers
/// refuse `30.0`, which a schema-valid client may send), anything fractional refused.
pub(crate) mod whole {
    use serde::de::{Deserializer, Error, Unexpected, Visitor};

    struct Whole;

    impl Visitor<'_> for Whole {
        type Value = i128;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a whole number")
        }

        fn visit_i64<E: Error>(self, value: i64) -> Result<i128, E> {
            Ok(i128::from(value))
        }

        fn visit_u64<E: Error>(self, value: u64) -> Result<i128, E> {
            Ok(i128::from(value))
        }

        fn visit_f64<E: Error>(self, value: f64) -> Result<i128, E> {
            // Past 2^63 a float is outside every range these fields take anyway.
            if value.fract() == 0.0 && value.abs() < 9.2e18 {
                Ok(value as i128)
            } else {
                Err(E::invalid_value(Unexpected::Float(value), &self))
            }
        }
    }

    pub fn number<'de, D, T>(deserializer: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        let value = deserializer.deserialize_any(Whole)?;
        T::try_from(value).map_err(|_| {
            D::Error::invalid_value(Unexpected::Other("a number out of range"), &Whole)
        })
    }

    pub fn optional<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        number(deserializer).map(Some)
    }

    /// A list of whole numbers.
    pub fn numbers<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
    where
        D: Deserializer<'de>,
        T: TryFrom<i128>,
    {
        struct One<T>(T);
        impl<'de, T: TryFrom<i128>> serde::Deserialize<'de> for One<T> {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                number(deserializer).map(One)
            }
        }
        let all: Vec<One<T>> = serde::Deserialize::deserialize(deserializer)?;
        Ok(all.into_iter().map(|One(value)| value).collect())
    }
}

/// A lease's id and TTL: the answer to a grant and to a keep-alive (the full TTL again).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct LeaseGrant {
    pub id: i64,
    /// Seconds.
    pub ttl: u64,
}

/// `POST /api/leases/keepalive` request: many leases kept alive by one request, as etcd's
/// clients keep all of theirs alive over one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LeaseKeepAliveRequest {
    /// Lease ids, 1 to 1,024 of them. An id that is no live lease is answered in `expired`.
    #[serde(deserialize_with = "whole::numbers")]
    #[cfg_attr(feature = "utoipa", schema(min_items = 1, max_items = 1024))]
    pub ids: Vec<i64>,
}

/// `POST /api/leases/keepalive` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct LeaseKeepAliveResponse {
    /// The leases kept alive, each with its full TTL again, in the order of `ids`.
    pub leases: Vec<LeaseGrant>,
    /// The ids that are no live lease (expired, revoked or never granted), in the order of
    /// `ids`: their keep-alive came too late.
    pub expired: Vec<i64>,
}

/// `GET /api/leases/{id}`: a live lease, the time it has left and the keys attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct LeaseInfo {
    pub id: i64,
    /// Seconds, as granted.
    pub ttl: u64,
    /// Milliseconds until it expires, by the database's clock.
    pub remaining_ms: i64,
    /// The live keys attached to it, in byte order (left out of `GET /api/leases`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<Vec<String>>,
}

/// `GET /api/leases`: every live lease, soonest to expire first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct LeaseListResponse {
    pub leases: Vec<LeaseInfo>,
}

/// `DELETE /api/leases/{id}`: how many keys the revoke deleted, and the last revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct LeaseRevokeResponse {
    pub deleted: u64,
    /// The revision of the last delete, or the current revision when no key was attached.
    pub revision: i64,
}

/// A key and its value, as the seed's PUT body carries them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct KeyValue {
    /// 1 to 512 characters, none of them a control character.
    #[cfg_attr(
        feature = "utoipa",
        schema(
            example = "foo",
            min_length = 1,
            max_length = 512,
            pattern = "^[^\\u0000-\\u001F\\u007F-\\u009F]*$"
        )
    )]
    pub key: String,
    /// Any UTF-8 string up to the node's `--max-value-bytes` (1 MiB by default).
    #[cfg_attr(feature = "utoipa", schema(example = "bar"))]
    pub value: String,
}

/// `PUT` and `DELETE /api/key` success: `{"status":"success"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct SuccessResponse {
    #[cfg_attr(feature = "utoipa", schema(example = "success"))]
    pub status: String,
}

impl SuccessResponse {
    pub fn success() -> Self {
        Self {
            status: "success".to_owned(),
        }
    }
}

/// `DELETE /api/keys?prefix=P` success: how many live keys the one revision deleted. With
/// nothing to delete no revision is used, and `revision` is the current one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct DeletePrefixResponse {
    #[cfg_attr(feature = "utoipa", schema(example = "success"))]
    pub status: String,
    pub deleted: u64,
    pub revision: i64,
}

impl DeletePrefixResponse {
    /// The answer to a prefix delete that deleted `deleted` keys at `revision` (the current
    /// revision when it deleted none).
    pub fn new(deleted: u64, revision: i64) -> Self {
        Self {
            status: "success".to_owned(),
            deleted,
            revision,
        }
    }
}

/// One version of a key, as `GET /api/key/history` lists it: a put or a delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct KeyVersion {
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The revision of the write that made this version.
    pub revision: i64,
    /// The key's create_revision at this version; 0 for a delete.
    pub create_revision: i64,
    /// The key's version count at this version; 0 for a delete.
    pub version: i64,
    /// The node that committed the write.
    pub node: String,
    /// Commit time, RFC 3339.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The value a put wrote, whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The lease a put attached the key to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// Why a delete happened when no client asked for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeleteReason>,
}

/// `GET /api/key/history` page: a key's versions, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct KeyHistoryResponse {
    pub key: String,
    pub history: Vec<KeyVersion>,
    /// The revision to pass as `before` for the next (older) page; `null` on the last page.
    pub next: Option<i64>,
    /// History is complete from this revision on: versions replaced at or below it have been
    /// compacted away (the one that was current at it is kept).
    pub compact_revision: i64,
}

/// `POST /api/compact` body: drop the history below `revision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CompactRequest {
    /// At most the current revision. Reads at it and above keep working; reads below it are
    /// answered 410.
    #[cfg_attr(feature = "utoipa", schema(minimum = 0))]
    pub revision: i64,
}

/// `POST /api/compact` success.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct CompactResponse {
    /// The compact revision now: the one asked for, or a higher one already reached.
    pub compact_revision: i64,
    /// Tombstones purged by this compaction.
    pub tombstones: u64,
    /// Replaced versions dropped by this compaction.
    pub versions: u64,
}

/// `GET /api/key` success: `{"data":{"value":"bar"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct GetResponse {
    pub data: ValueData,
}

/// The value wrapper inside [`GetResponse`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct ValueData {
    #[cfg_attr(feature = "utoipa", schema(example = "bar"))]
    pub value: String,
}

/// Every error body: `{"detail":"..."}`, as FastAPI's `HTTPException` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct ErrorBody {
    #[cfg_attr(feature = "utoipa", schema(example = "Key not found"))]
    pub detail: String,
}

/// One live key with its revision metadata, as `GET /api/keys` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct KeyRecord {
    pub key: String,
    /// Left out when the listing asked for `keys_only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Revision of the write that created the key (after its last delete, if any).
    pub create_revision: i64,
    /// Revision of the last write to the key.
    pub mod_revision: i64,
    /// Writes since the key was created: 1 after the first put.
    pub version: i64,
    /// The lease the key is attached to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<i64>,
    /// Milliseconds left on that lease, by the database's clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_remaining_ms: Option<i64>,
}

/// `GET /api/keys` page: keys in byte order, and the key to pass as `after` for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct KeyListResponse {
    pub keys: Vec<KeyRecord>,
    /// `null` on the last page.
    pub next: Option<String>,
}

/// `GET /api/keys?count_only=true`: how many live keys start with the prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct KeyCountResponse {
    pub count: u64,
}

/// The `format` of a snapshot's header line.
pub const SNAPSHOT_FORMAT: &str = "keygrid-snapshot";
/// The snapshot format's version; a reader refuses any other.
pub const SNAPSHOT_VERSION: u32 = 1;

/// The first line of `GET /api/snapshot`: what follows and at which revision it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapshotHeader {
    /// Always `keygrid-snapshot`.
    pub format: String,
    /// Always 1.
    pub version: u32,
    /// Every key line shows the store exactly as of this revision.
    pub revision: i64,
    /// When the snapshot was taken (RFC 3339, UTC).
    pub created_at: String,
    /// How many key lines follow. (On SQLite, whose clock moves within a transaction, a
    /// leased key that expires while the snapshot is read may be left out: then fewer do.)
    pub keys: u64,
}

/// The last line of `GET /api/snapshot`: present only when every key line was sent, so that
/// a snapshot cut short is never mistaken for a whole one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SnapshotEnd {
    /// How many key lines were sent.
    pub end: u64,
}

/// One line of a snapshot file after the header: a key (a [`KeyRecord`] with its value) or
/// the end line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SnapshotLine {
    End(SnapshotEnd),
    Key(KeyRecord),
}

impl SnapshotHeader {
    /// A snapshot's first line, refusing anything that is not a snapshot of this format.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let header: SnapshotHeader = serde_json::from_slice(line)
            .map_err(|err| format!("not a KeyGrid snapshot header: {err}"))?;
        if header.format != SNAPSHOT_FORMAT {
            return Err(format!(
                "not a KeyGrid snapshot: its format is {:?}",
                header.format
            ));
        }
        if header.version != SNAPSHOT_VERSION {
            return Err(format!(
                "snapshot format version {} is not supported (this reads version {SNAPSHOT_VERSION})",
                header.version
            ));
        }
        Ok(header)
    }
}

impl SnapshotLine {
    /// A line after the header: a key with its value, or the end line.
    pub fn parse(line: &[u8]) -> Result<Self, String> {
        let line: SnapshotLine =
            serde_json::from_slice(line).map_err(|err| format!("not a snapshot line: {err}"))?;
        if let SnapshotLine::Key(record) = &line {
            if record.value.is_none() {
                return Err(format!("snapshot line for {:?} has no value", record.key));
            }
        }
        Ok(line)
    }
}

/// What kind of change an event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Put,
    Delete,
}

/// `/api/watch?progress=...`: the data of a `progress` event, sent when nothing else was for
/// that long. Every change up to `revision` under the watched prefix has been sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct WatchProgress {
    pub revision: i64,
}

/// `/api/watch`: the data of a `compacted` event, the last of a stream that can no longer be
/// complete: history it needed was compacted away while it ran (etcd's ErrCompacted). The
/// watcher must list the keys again and watch from the current revision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct WatchCompacted {
    /// The compact revision: deletes up to it have been purged.
    pub compact_revision: i64,
    /// What happened, in words.
    pub detail: String,
}

/// A committed change, as published on Redis `keygrid:events` and streamed by `/api/watch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct ChangeEvent {
    #[serde(rename = "type")]
    pub kind: EventType,
    pub key: String,
    /// The revision of this change. Revisions strictly increase across the cluster; one that
    /// changed several keys at once (a prefix delete) carries one event per key, in key order.
    pub revision: i64,
    /// The key's version after the change; 0 for a delete.
    pub version: i64,
    /// The node that committed the change.
    pub node: String,
    /// Commit time, RFC 3339.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The new value, present on puts of at most 1 KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The size of a put's value in bytes, when `value` was left out for its size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_bytes: Option<u64>,
    /// Why a delete happened when no client asked for it: its lease expired or was revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<DeleteReason>,
    /// On Redis only, when the revision changed more than one key: how many events it has,
    /// so that a node knows when it holds them all. `/api/watch` leaves it out and marks the
    /// end of a revision with the SSE `id:` instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision_events: Option<u32>,
}

/// Why a key was deleted by its lease ending rather than by a client's delete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DeleteReason {
    /// The lease's deadline passed without a keep-alive.
    Expired,
    /// `DELETE /api/leases/{id}`.
    Revoked,
}

impl DeleteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeleteReason::Expired => "expired",
            DeleteReason::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "expired" => Some(DeleteReason::Expired),
            "revoked" => Some(DeleteReason::Revoked),
            _ => None,
        }
    }
}

/// Liveness of a node, as published every second on Redis `keygrid:nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct NodeHeartbeat {
    pub node: String,
    /// The address the node listens on.
    pub listen: String,
    /// `ok`, or `degraded` while the database or the cache cannot be reached.
    pub status: NodeHealth,
    /// The database's current revision, or the highest the node has seen while it is down.
    pub revision: i64,
    pub at: chrono::DateTime<chrono::Utc>,
}

/// A node's overall health in a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum NodeHealth {
    Ok,
    Degraded,
}

/// Redis channel suffix of change events: `<prefix>:events`, `keygrid:events` by default.
pub const EVENTS_CHANNEL_SUFFIX: &str = "events";
/// Redis channel suffix of node heartbeats: `<prefix>:nodes`, `keygrid:nodes` by default.
pub const NODES_CHANNEL_SUFFIX: &str = "nodes";
/// The default Redis prefix, giving the channels `keygrid:events` and `keygrid:nodes`.
pub const DEFAULT_REDIS_PREFIX: &str = "keygrid";
/// Largest value carried inside a change event; larger values are left out.
pub const EVENT_VALUE_MAX_BYTES: usize = 1024;

/// State of one dependency, as `/api/ready` and `/api/status` report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum DependencyState {
    /// Reachable and answering.
    Ok,
    /// Optional dependency unreachable; the node serves without it.
    Degraded,
    /// Required dependency unreachable; the node cannot serve.
    Unavailable,
    /// Not configured.
    Disabled,
}

/// `GET /api/ready`: 200 when every required dependency answers, 503 otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct ReadyResponse {
    /// `ready`, or on a 503 absent in favour of `detail`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// On a 503, which dependency failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    pub database: DependencyState,
    pub cache: DependencyState,
}

/// `GET /api/status`: who this node is and how it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct NodeStatus {
    pub node: String,
    /// The address the node listens on.
    pub listen: String,
    /// The kg-server version.
    pub version: String,
    pub uptime_seconds: u64,
    pub database: DatabaseStatus,
    pub cache: DependencyState,
    /// Where the cache is: a Redis URL (password masked), or `sentinel master NAME via
    /// HOST:PORT,...`; `null` without Redis.
    #[serde(default)]
    pub cache_endpoint: Option<String>,
    /// The cluster's current revision as the database last reported it; `null` if unreachable.
    pub revision: Option<i64>,
    pub requests: RequestCounters,
    /// Every node whose heartbeat this node has received on Redis (itself included), with the
    /// age of its last heartbeat; empty without Redis.
    #[serde(default)]
    pub peers: Vec<PeerStatus>,
}

/// A node as its last heartbeat described it, in [`NodeStatus::peers`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct PeerStatus {
    pub node: String,
    pub listen: String,
    pub status: NodeHealth,
    pub revision: i64,
    /// Milliseconds since the heartbeat was received.
    pub heartbeat_age_ms: u64,
}

/// The database part of [`NodeStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct DatabaseStatus {
    /// `postgres` or `sqlite`.
    pub kind: String,
    pub state: DependencyState,
    /// The database URL the node was given (its password masked): with a replicated
    /// PostgreSQL, the address that follows the primary (HAProxy).
    #[serde(default)]
    pub endpoint: String,
    /// Whether the node's connection reached a primary (PostgreSQL's `pg_is_in_recovery()`
    /// is false); `null` for SQLite, or when the database did not answer.
    #[serde(default)]
    pub primary: Option<bool>,
}

/// Requests this node has answered since it started, by status class.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "utoipa", derive(ToSchema))]
pub struct RequestCounters {
    pub total: u64,
    pub success: u64,
    pub client_error: u64,
    pub server_error: u64,
}

/// The longest key accepted, in characters (Unicode scalar values, as JSON Schema's
/// `maxLength` counts them, so that the OpenAPI document states the rule exactly). At most
/// 2 KiB of UTF-8, inside PostgreSQL's B-tree entry limit (~2.7 KB).
pub const MAX_KEY_CHARS: usize = 512;

/// Checks a key against the documented limits; `Err` carries the reason. The node applies it
/// to every key it is given; `kg` to a snapshot's keys before it restores any.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key must not be empty".to_owned());
    }
    let chars = key.chars().count();
    if chars > MAX_KEY_CHARS {
        return Err(format!(
            "key is {chars} characters; the limit is {MAX_KEY_CHARS}"
        ));
    }
    if let Some(bad) = key.chars().find(|c| c.is_control()) {
        return Err(format!(
            "key must not contain control characters (found U+{:04X})",
            bad as u32
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check<T: Serialize>(value: T, expected: &str) {
        assert_eq!(serde_json::to_string(&value).unwrap(), expected);
    }

    #[test]
    fn seed_shapes_serialise_byte_for_byte() {
        check(
            HealthResponse {
                status: "ok".into(),
            },
            r#"{"status":"ok"}"#,
        );
        check(SuccessResponse::success(), r#"{"status":"success"}"#);
        check(
            GetResponse {
                data: ValueData {
                    value: "bar".into(),
                },
            },
            r#"{"data":{"value":"bar"}}"#,
        );
        check(
            PutRequest::new("foo", "bar"),
            r#"{"data":{"key":"foo","value":"bar"}}"#,
        );
        check(
            ErrorBody {
                detail: DETAIL_KEY_NOT_FOUND.into(),
            },
            r#"{"detail":"Key not found"}"#,
        );
    }

    #[test]
    fn change_event_uses_type_field_and_omits_absent_value() {
        let event = ChangeEvent {
            kind: EventType::Delete,
            key: "k".into(),
            revision: 7,
            version: 0,
            node: "n1".into(),
            at: chrono::DateTime::from_timestamp(0, 0).unwrap(),
            value: None,
            value_bytes: None,
            reason: None,
            revision_events: None,
        };
        check(
            event.clone(),
            r#"{"type":"delete","key":"k","revision":7,"version":0,"node":"n1","at":"1970-01-01T00:00:00Z"}"#,
        );
        check(
            ChangeEvent {
                reason: Some(DeleteReason::Expired),
                ..event
            },
            r#"{"type":"delete","key":"k","revision":7,"version":0,"node":"n1","at":"1970-01-01T00:00:00Z","reason":"expired"}"#,
        );
    }

    #[test]
    fn lease_numbers_take_whole_floats_and_refuse_fractions() {
        let grant: LeaseGrantRequest = serde_json::from_str(r#"{"ttl": 547.0}"#).unwrap();
        assert_eq!(grant.ttl, 547);
        for bad in [
            r#"{"ttl": 1.5}"#,
            r#"{"ttl": -1}"#,
            r#"{"ttl": "5"}"#,
            r#"{"ttl": 1e30}"#,
        ] {
            assert!(
                serde_json::from_str::<LeaseGrantRequest>(bad).is_err(),
                "{bad}"
            );
        }
        let put: PutRequest =
            serde_json::from_str(r#"{"data":{"key":"k","value":"v"},"lease":7.0}"#).unwrap();
        assert_eq!((put.lease, put.ttl), (Some(7), None));
        let put: PutRequest = serde_json::from_str(r#"{"data":{"key":"k","value":"v"}}"#).unwrap();
        assert_eq!((put.lease, put.ttl), (None, None));
    }

    #[test]
    fn a_put_with_a_lease_or_ttl_carries_it_and_one_without_is_the_seeds() {
        let mut put = PutRequest::new("k", "v");
        put.ttl = Some(30);
        check(put, r#"{"data":{"key":"k","value":"v"},"ttl":30}"#);
        let mut put = PutRequest::new("k", "v");
        put.lease = Some(7);
        check(put, r#"{"data":{"key":"k","value":"v"},"lease":7}"#);
    }
}
