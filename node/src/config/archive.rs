//! `[archive]`: the cold archive (GEO-04, ADR 0004). See docs/archive.md.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Problems;

/// Where segments are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchiveStoreKind {
    /// A directory of the local file system (`path`).
    #[default]
    Fs,
    /// An S3-compatible object store (`endpoint`, `bucket`, credentials).
    S3,
}

/// The cold archive (`[archive]`): a shard's leader seals the oldest stretch of its event log
/// into a segment object once it is older than `hot-window-seconds`, and every replica then
/// drops that stretch from RocksDB; history and event reads fetch it back on demand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArchiveConfig {
    /// How long events stay hot, in seconds; 0 (the default) keeps everything hot (no
    /// archive). Never shorter than `limits.recall-window-seconds`: a message stays hot as
    /// long as its sender may recall it.
    pub hot_window_seconds: u64,
    /// Raft log entries of hot history a shard keeps at most: when the oldest hot event is
    /// more entries than this behind the newest applied one, the oldest are sealed whatever
    /// their age. 0 (the default) = age only.
    pub hot_max_entries: u64,
    /// `fs` (default) or `s3`.
    pub store: ArchiveStoreKind,
    /// Where the store keeps its data, `JURISDICTION[/SITE]` (e.g. `de` or `de/fra-1`). With a
    /// topology file whose region lists `archive` places, it must be one of them (the node
    /// refuses to start otherwise); a strict region's archive stays in its jurisdiction.
    pub place: Option<String>,
    /// `fs`: the directory; default `archive` under `data-dir`. Every node of the region must
    /// see the same directory (one machine, or a shared file system) for cold reads to work on
    /// every node.
    pub path: Option<PathBuf>,
    /// `s3`: the endpoint, `http://host:port` (an https store is reached through a local
    /// TLS-originating proxy; the node carries no public CA roots).
    pub endpoint: Option<String>,
    /// `s3`: the bucket.
    pub bucket: Option<String>,
    /// `s3`: the signing region. Default `us-east-1`.
    pub s3_region: String,
    /// `s3`: credentials.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// The first part of every object key. Default `meridian`.
    pub prefix: String,
    /// Most events in one segment. Default 10000.
    pub segment_max_events: u64,
    /// How often a shard's leader looks for events to seal, in milliseconds. Default 10000.
    pub seal_interval_ms: u64,
    /// Memory for decoded cold blocks and segment indexes, in MiB. Default 64.
    pub cache_mib: u64,
    /// How long one request to the store may take, in milliseconds. Default 10000.
    pub timeout_ms: u64,
    /// A second store that receives a copy of every sealed segment before the manifest names
    /// it: the region's disaster-recovery copy (docs/dr.md), in one of its `dr` places. Cold
    /// reads fall back to it when the main store fails. `fs` or `s3`; unset: no copy.
    pub replica_store: Option<ArchiveStoreKind>,
    /// `fs` replica: its directory.
    pub replica_path: Option<PathBuf>,
    /// `s3` replica: `http://host:port` (the credentials, signing region and prefix are the
    /// main store's).
    pub replica_endpoint: Option<String>,
    /// `s3` replica: the bucket.
    pub replica_bucket: Option<String>,
    /// Where the replica keeps its data: one of the region's `dr` places (required with a
    /// topology file).
    pub replica_place: Option<String>,
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        Self {
            hot_window_seconds: 0,
            hot_max_entries: 0,
            store: ArchiveStoreKind::Fs,
            place: None,
            path: None,
            endpoint: None,
            bucket: None,
            s3_region: "us-east-1".into(),
            access_key_id: None,
            secret_access_key: None,
            prefix: "meridian".into(),
            segment_max_events: 10_000,
            seal_interval_ms: 10_000,
            cache_mib: 64,
            timeout_ms: 10_000,
            replica_store: None,
            replica_path: None,
            replica_endpoint: None,
            replica_bucket: None,
            replica_place: None,
        }
    }
}

impl ArchiveConfig {
    /// Whether the archive is on.
    pub fn enabled(&self) -> bool {
        self.hot_window_seconds > 0
    }

    /// Checks `place` against the region's `archive` places of the topology file.
    pub(super) fn validate_place(&self, p: &mut Problems, region: &meridian_regions::RegionSpec) {
        if !self.enabled() {
            return;
        }
        let strict = region.residency == meridian_regions::Residency::Strict;
        if self.replica_store.is_some() {
            let allowed = |place: &String| {
                if region.dr.is_empty() {
                    meridian_regions::file::place_jurisdiction(place).is_ok_and(|j| j.as_str() == region.code)
                } else {
                    region.dr.contains(place)
                }
            };
            p.check(self.replica_place.as_ref().is_some_and(allowed), "archive.replica-place", || {
                format!(
                    "{:?}: the replica goes to one of region {}'s dr places {:?} (none listed: its own jurisdiction)",
                    self.replica_place, region.code, region.dr
                )
            });
        }
        match &self.place {
            Some(place) if !region.archive.is_empty() => {
                p.check(region.archive.contains(place), "archive.place", || {
                    format!(
                        "{place} is not one of region {}'s archive places {:?} (regions.toml)",
                        region.code, region.archive
                    )
                })
            }
            Some(place) => {
                let jurisdiction = meridian_regions::file::place_jurisdiction(place);
                p.check(jurisdiction.is_ok(), "archive.place", || {
                    jurisdiction.as_ref().err().cloned().unwrap_or_default()
                });
                p.check(
                    !strict || jurisdiction.as_ref().is_ok_and(|j| j.as_str() == region.code),
                    "archive.place",
                    || {
                        format!(
                            "region {} is strict: its archive must stay in its jurisdiction, not {place}",
                            region.code
                        )
                    },
                );
            }
            None => p.check(region.archive.is_empty() && !strict, "archive.place", || {
                format!(
                    "missing: say where the archive's store is (one of region {}'s archive places {:?}; a strict \
                     region's archive must stay in its jurisdiction)",
                    region.code, region.archive
                )
            }),
        }
    }

    pub(super) fn validate(&self, p: &mut Problems, recall_window_seconds: u64) {
        p.check(
            !self.enabled() || self.hot_window_seconds >= recall_window_seconds,
            "archive.hot-window-seconds",
            || {
                format!(
                    "{} is shorter than limits.recall-window-seconds ({recall_window_seconds}): a message must stay hot \
                     while its sender may recall it",
                    self.hot_window_seconds
                )
            },
        );
        p.check((1..=1_000_000).contains(&self.segment_max_events), "archive.segment-max-events", || {
            format!("{} is out of range: use 1..=1000000 (default 10000)", self.segment_max_events)
        });
        p.check((100..=3_600_000).contains(&self.seal_interval_ms), "archive.seal-interval-ms", || {
            format!("{} is out of range: use 100..=3600000 ms (default 10000)", self.seal_interval_ms)
        });
        p.check((1..=65_536).contains(&self.cache_mib), "archive.cache-mib", || {
            format!("{} is out of range: use 1..=65536 MiB (default 64)", self.cache_mib)
        });
        p.check((100..=600_000).contains(&self.timeout_ms), "archive.timeout-ms", || {
            format!("{} is out of range: use 100..=600000 ms (default 10000)", self.timeout_ms)
        });
        p.check(!self.prefix.is_empty() && !self.prefix.contains("//"), "archive.prefix", || {
            "must be a non-empty key prefix without empty parts".into()
        });
        match self.replica_store {
            Some(ArchiveStoreKind::Fs) => p.check(self.replica_path.is_some(), "archive.replica-path", || {
                "missing: an fs replica needs its directory".into()
            }),
            Some(ArchiveStoreKind::S3) => {
                p.check(
                    self.replica_bucket.as_deref().is_some_and(|b| !b.is_empty()),
                    "archive.replica-bucket",
                    || "missing: an s3 replica needs a bucket".into(),
                );
                p.check(
                    self.replica_endpoint
                        .as_deref()
                        .is_some_and(|e| e.strip_prefix("http://").is_some_and(|r| !r.is_empty())),
                    "archive.replica-endpoint",
                    || "an s3 replica needs an endpoint http://host:port".into(),
                );
            }
            None => {}
        }
        if self.store == ArchiveStoreKind::S3 {
            p.check(self.bucket.as_deref().is_some_and(|b| !b.is_empty()), "archive.bucket", || {
                "missing: the s3 store needs a bucket".into()
            });
            let endpoint_ok = self
                .endpoint
                .as_deref()
                .is_some_and(|e| e.strip_prefix("http://").is_some_and(|rest| !rest.is_empty() && !rest.contains('@')));
            p.check(endpoint_ok, "archive.endpoint", || {
                "the s3 store needs an endpoint http://host:port (https through a local TLS proxy)".into()
            });
            p.check(
                self.access_key_id.is_some() == self.secret_access_key.is_some(),
                "archive.secret-access-key",
                || "set both access-key-id and secret-access-key, or neither".into(),
            );
        }
    }
}
