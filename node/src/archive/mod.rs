//! The cold archive (GEO-04, ADR 0004, docs/archive.md): segment objects in an object store
//! (a local directory or an S3-compatible bucket), sealed by each shard's leader
//! ([`sealer`]), read back by history and event reads that cross the hot/cold line.
//!
//! Reads go through one cache of segment indexes and decoded blocks (LRU by bytes); concurrent
//! fetches of one block or index share one request. A store that cannot be reached makes a
//! cold read fail `ARCHIVE_UNAVAILABLE` (retryable) and delays sealing; hot reads and writes
//! never wait on it.

pub mod admin;
pub mod http;
pub mod sealer;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use meridian_domain::records::{ArchivedSegment, Recall};
use meridian_domain::{ConversationId, EventOffset, Message, Seq};
use meridian_proto::durable as pb;
use meridian_storage::segment::{self, SegmentError};
use meridian_storage::{codec, LoggedEvent, ShardStore};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutMode, PutOptions, PutPayload};
use prost::Message as _;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::config::{ArchiveConfig, ArchiveStoreKind};

/// Counters and gauges for `/metrics`.
#[derive(Debug)]
pub struct ArchiveMetrics {
    pub segments_sealed: AtomicU64,
    pub bytes_sealed: AtomicU64,
    pub seal_failures: AtomicU64,
    pub cold_reads: AtomicU64,
    pub cold_read_failures: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Per shard led here: seconds by which the oldest hot event is past the hot window (0:
    /// sealing keeps up).
    pub lag_seconds: Mutex<BTreeMap<u32, u64>>,
}

pub static METRICS: ArchiveMetrics = ArchiveMetrics {
    segments_sealed: AtomicU64::new(0),
    bytes_sealed: AtomicU64::new(0),
    seal_failures: AtomicU64::new(0),
    cold_reads: AtomicU64::new(0),
    cold_read_failures: AtomicU64::new(0),
    cache_hits: AtomicU64::new(0),
    cache_misses: AtomicU64::new(0),
    lag_seconds: Mutex::new(BTreeMap::new()),
};

/// Why the archive could not serve.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ArchiveError {
    /// The store did not answer, or answered an error: retry later.
    #[error("the archive store is unavailable: {0}")]
    Unavailable(String),
    /// An object failed its checksums or does not decode.
    #[error("an archived segment is damaged: {0}")]
    Corrupt(String),
    /// This node has no `[archive]` but the shard has archived history.
    #[error("this node has no [archive] configured, and the history asked for is archived")]
    NotConfigured,
}

impl From<SegmentError> for ArchiveError {
    fn from(e: SegmentError) -> Self {
        ArchiveError::Corrupt(e.to_string())
    }
}

fn unavailable(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Unavailable(e.to_string())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Index(String),
    Block(String, u64),
}

#[derive(Debug)]
enum Cached {
    Index(pb::SegmentIndex),
    Block(Vec<LoggedEvent>),
}

type Shared = Arc<Cached>;
type Flight = Arc<OnceCell<Result<Shared, ArchiveError>>>;

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<CacheKey, (Shared, u64, u64)>,
    bytes: u64,
    tick: u64,
}

/// The archive of one region, as this node reaches it.
#[derive(Debug)]
pub struct Archive {
    store: Arc<dyn ObjectStore>,
    /// The disaster-recovery copy (`replica-*`): every sealed segment is written here too
    /// before the manifest names it; reads fall back to it.
    replica: Option<Arc<dyn ObjectStore>>,
    /// `{prefix}/{region}`: every key of this region starts with it.
    root: String,
    region: String,
    pub config: ArchiveConfig,
    timeout: Duration,
    cache: Mutex<CacheInner>,
    capacity: u64,
    flights: Mutex<HashMap<CacheKey, Flight>>,
}

impl Archive {
    /// The archive `config` describes, or `None` when it is off.
    pub fn open(config: &ArchiveConfig, data_dir: &Path, region: &str) -> anyhow::Result<Option<Arc<Archive>>> {
        if !config.enabled() {
            return Ok(None);
        }
        let main = StoreSpec {
            kind: config.store,
            dir: config.path.clone().unwrap_or_else(|| data_dir.join("archive")),
            endpoint: config.endpoint.clone().unwrap_or_default(),
            bucket: config.bucket.clone().unwrap_or_default(),
        };
        let store = build_store(&main, config)?;
        let replica = match config.replica_store {
            Some(kind) => Some(build_store(
                &StoreSpec {
                    kind,
                    dir: config.replica_path.clone().unwrap_or_else(|| data_dir.join("archive-replica")),
                    endpoint: config.replica_endpoint.clone().unwrap_or_default(),
                    bucket: config.replica_bucket.clone().unwrap_or_default(),
                },
                config,
            )?),
            None => None,
        };
        Ok(Some(Arc::new(Archive {
            store,
            replica,
            root: format!("{}/{region}", config.prefix.trim_matches('/')),
            region: region.to_owned(),
            config: config.clone(),
            timeout: Duration::from_millis(config.timeout_ms),
            cache: Mutex::new(CacheInner::default()),
            capacity: config.cache_mib.saturating_mul(1024 * 1024),
            flights: Mutex::new(HashMap::new()),
        })))
    }
}

/// One object store as the config names it.
struct StoreSpec {
    kind: ArchiveStoreKind,
    dir: std::path::PathBuf,
    endpoint: String,
    bucket: String,
}

fn build_store(spec: &StoreSpec, config: &ArchiveConfig) -> anyhow::Result<Arc<dyn ObjectStore>> {
    {
        let store: Arc<dyn ObjectStore> = match spec.kind {
            ArchiveStoreKind::Fs => {
                let dir = &spec.dir;
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("archive: cannot create {}: {e}", dir.display()))?;
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir)?)
            }
            ArchiveStoreKind::S3 => {
                let retry = object_store::RetryConfig {
                    max_retries: 2,
                    retry_timeout: Duration::from_millis(config.timeout_ms),
                    ..Default::default()
                };
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_endpoint(spec.endpoint.clone())
                    .with_bucket_name(spec.bucket.clone())
                    .with_region(config.s3_region.clone())
                    .with_allow_http(true)
                    .with_virtual_hosted_style_request(false)
                    .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch)
                    .with_retry(retry)
                    .with_http_connector(http::PlainHttp);
                if let (Some(id), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
                    b = b.with_access_key_id(id).with_secret_access_key(secret);
                } else {
                    b = b.with_skip_signature(true);
                }
                Arc::new(b.build()?)
            }
        };
        Ok(store)
    }
}

impl Archive {
    pub fn region(&self) -> &str {
        &self.region
    }

    /// Where this region's objects live in the store.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// The key of a segment of `shard` covering `first..=last`, written at `epoch`.
    pub fn segment_key(&self, epoch: u32, shard: u32, first: EventOffset, last: EventOffset) -> String {
        let o = |o: EventOffset| format!("{:020}.{:010}.{:05}", o.log_index, o.command, o.event);
        format!("{}/{epoch}/{shard}/{}-{}.seg", self.root, o(first), o(last))
    }

    async fn timed<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> Result<T, ArchiveError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(unavailable(format!("{what}: {e}"))),
            Err(_) => Err(unavailable(format!("{what}: no answer within {} ms", self.timeout.as_millis()))),
        }
    }

    /// Writes a segment unless its key exists; returns the stored object's digest and size
    /// (a repeat seal of the same range by a new leader finds the first leader's object).
    pub async fn put_segment(&self, key: &str, bytes: Vec<u8>) -> Result<(Vec<u8>, u64), ArchiveError> {
        let path = ObjectPath::from(key);
        let digest = Sha256::digest(&bytes).to_vec();
        let size = bytes.len() as u64;
        let bytes = Bytes::from(bytes);
        let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
        let put =
            tokio::time::timeout(self.timeout, self.store.put_opts(&path, PutPayload::from(bytes.clone()), opts)).await;
        let (stored, digest, size) = match put {
            Ok(Ok(_)) => (bytes, digest, size),
            Ok(Err(object_store::Error::AlreadyExists { .. })) => {
                let existing = self
                    .timed("read an existing segment", async { self.store.get(&path).await?.bytes().await })
                    .await?;
                segment::read_header(&existing)?;
                let (digest, size) = (Sha256::digest(&existing).to_vec(), existing.len() as u64);
                (existing, digest, size)
            }
            Ok(Err(e)) => return Err(unavailable(format!("write {key}: {e}"))),
            Err(_) => {
                return Err(unavailable(format!("write {key}: no answer within {} ms", self.timeout.as_millis())))
            }
        };
        // The disaster-recovery copy first, the manifest after: a segment the manifest names
        // is in both stores.
        if let Some(replica) = &self.replica {
            let opts = PutOptions { mode: PutMode::Create, ..Default::default() };
            match tokio::time::timeout(self.timeout, replica.put_opts(&path, PutPayload::from(stored), opts)).await {
                Ok(Ok(_)) | Ok(Err(object_store::Error::AlreadyExists { .. })) => {}
                Ok(Err(e)) => return Err(unavailable(format!("copy {key} to the replica: {e}"))),
                Err(_) => return Err(unavailable(format!("copy {key} to the replica: no answer in time"))),
            }
        }
        Ok((digest, size))
    }

    /// Reads from the main store, else from the replica when there is one.
    async fn read_either(
        &self,
        what: &str,
        key: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<Bytes, ArchiveError> {
        let path = ObjectPath::from(key);
        let read = |store: Arc<dyn ObjectStore>| {
            let (path, range) = (path.clone(), range.clone());
            async move {
                match range {
                    Some(r) => store.get_range(&path, r).await,
                    None => store.get(&path).await?.bytes().await,
                }
            }
        };
        match self.timed(what, read(self.store.clone())).await {
            Ok(bytes) => Ok(bytes),
            Err(main) => match &self.replica {
                Some(replica) => {
                    tracing::warn!(key, error = %main, "the archive's main store failed; reading its replica");
                    self.timed(what, read(replica.clone())).await.map_err(|_| main)
                }
                None => Err(main),
            },
        }
    }

    async fn get_range(&self, key: &str, range: std::ops::Range<u64>) -> Result<Bytes, ArchiveError> {
        self.read_either("read a segment", key, Some(range)).await
    }

    /// The whole object.
    pub async fn get_object(&self, key: &str) -> Result<Bytes, ArchiveError> {
        self.read_either("read a segment", key, None).await
    }

    /// Every object under this region's root: (key, last modified).
    pub async fn list(&self) -> Result<Vec<(String, chrono::DateTime<chrono::Utc>)>, ArchiveError> {
        use futures::TryStreamExt as _;
        let root = ObjectPath::from(self.root.as_str());
        let metas: Vec<object_store::ObjectMeta> =
            self.timed("list the archive", self.store.list(Some(&root)).try_collect()).await?;
        Ok(metas.into_iter().map(|m| (m.location.to_string(), m.last_modified)).collect())
    }

    pub async fn delete(&self, key: &str) -> Result<(), ArchiveError> {
        let path = ObjectPath::from(key);
        self.timed("delete an object", self.store.delete(&path)).await
    }

    // ------------------------------------------------------------ cache

    async fn cached(
        &self,
        key: CacheKey,
        fetch: impl std::future::Future<Output = Result<(Cached, u64), ArchiveError>>,
    ) -> Result<Shared, ArchiveError> {
        if let Some(v) = self.cache_get(&key) {
            METRICS.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(v);
        }
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            flights.entry(key.clone()).or_default().clone()
        };
        let mut fetched_here = false;
        let result = flight
            .get_or_init(|| async {
                fetched_here = true;
                METRICS.cache_misses.fetch_add(1, Ordering::Relaxed);
                let (value, size) = fetch.await?;
                let value = Arc::new(value);
                self.cache_put(key.clone(), value.clone(), size);
                Ok(value)
            })
            .await
            .clone();
        if fetched_here {
            self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&key);
        } else if result.is_ok() {
            METRICS.cache_hits.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    fn cache_get(&self, key: &CacheKey) -> Option<Shared> {
        let mut c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.tick += 1;
        let tick = c.tick;
        c.entries.get_mut(key).map(|e| {
            e.2 = tick;
            e.0.clone()
        })
    }

    fn cache_put(&self, key: CacheKey, value: Shared, size: u64) {
        let mut c = self.cache.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        c.tick += 1;
        let tick = c.tick;
        if let Some(old) = c.entries.insert(key, (value, size, tick)) {
            c.bytes = c.bytes.saturating_sub(old.1);
        }
        c.bytes += size;
        while c.bytes > self.capacity && c.entries.len() > 1 {
            let Some(oldest) = c.entries.iter().min_by_key(|(_, e)| e.2).map(|(k, _)| k.clone()) else { break };
            if let Some(e) = c.entries.remove(&oldest) {
                c.bytes = c.bytes.saturating_sub(e.1);
            }
        }
    }

    /// A segment's index (its footer), cached.
    async fn index(&self, s: &ArchivedSegment) -> Result<Shared, ArchiveError> {
        self.cached(CacheKey::Index(s.key.clone()), async {
            let trailer = segment::FOOTER_TRAILER as u64;
            if s.bytes < trailer {
                return Err(ArchiveError::Corrupt(format!("{} is {} bytes", s.key, s.bytes)));
            }
            let tail = self.get_range(&s.key, s.bytes - trailer..s.bytes).await?;
            let len = u64::from(u32::from_le_bytes(
                tail.get(..4)
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| ArchiveError::Corrupt("short tail".into()))?,
            ));
            let start =
                s.bytes.checked_sub(trailer + len).ok_or_else(|| ArchiveError::Corrupt("index length".into()))?;
            let footer = self.get_range(&s.key, start..s.bytes).await?;
            let index = segment::read_index(&footer)?;
            let size = footer.len() as u64 * 2;
            Ok((Cached::Index(index), size))
        })
        .await
    }

    /// The decoded events of one block, cached.
    async fn block(&self, s: &ArchivedSegment, b: &pb::SegmentBlock) -> Result<Shared, ArchiveError> {
        let (offset, length) = (b.offset, u64::from(b.length));
        self.cached(CacheKey::Block(s.key.clone(), offset), async move {
            let frame = self.get_range(&s.key, offset..offset + length).await?;
            let mut events = Vec::new();
            for e in segment::read_block(&frame)? {
                let record: pb::EventRecord =
                    pb::EventRecord::decode(e.record.as_slice()).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                let epoch = record.epoch.max(1);
                let event = codec::event_from_pb(record).map_err(|e| ArchiveError::Corrupt(e.to_string()))?;
                events.push(LoggedEvent { offset: e.offset, epoch, event });
            }
            Ok((Cached::Block(events), length * 4))
        })
        .await
    }

    // ------------------------------------------------------------ reads

    /// Messages `from..=to` of `conversation` that segment `s` holds, as sent.
    async fn segment_messages(
        &self,
        s: &ArchivedSegment,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<Message>, ArchiveError> {
        let index = self.index(s).await?;
        let Cached::Index(index) = &*index else { return Err(ArchiveError::Corrupt("cache".into())) };
        let mut out = Vec::new();
        for b in segment::blocks_for_seqs(index, conversation.as_str(), from.0, to.0) {
            let block = self.block(s, b).await?;
            let Cached::Block(events) = &*block else { return Err(ArchiveError::Corrupt("cache".into())) };
            for logged in events {
                if let Some((c, m)) = meridian_domain::projector::sent_message(&logged.event) {
                    if &c == conversation && from <= m.seq && m.seq <= to {
                        out.push(m);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Every event of segment `s` from `from` on (all blocks), in log order.
    pub async fn segment_events(
        &self,
        s: &ArchivedSegment,
        from: EventOffset,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, ArchiveError> {
        let index = self.index(s).await?;
        let Cached::Index(index) = &*index else { return Err(ArchiveError::Corrupt("cache".into())) };
        let mut out = Vec::new();
        let Some(first) = segment::block_from_offset(index, from) else { return Ok(out) };
        for b in &index.blocks[first..] {
            let block = self.block(s, b).await?;
            let Cached::Block(events) = &*block else { return Err(ArchiveError::Corrupt("cache".into())) };
            for logged in events.iter().filter(|e| e.offset >= from) {
                if out.len() >= limit {
                    return Ok(out);
                }
                out.push(logged.clone());
            }
        }
        Ok(out)
    }

    /// Re-reads a whole segment: its digest against the manifest's, its index, and every
    /// block's checksum. Returns the events it holds.
    pub async fn verify_segment(&self, s: &ArchivedSegment) -> Result<u64, ArchiveError> {
        let bytes = self.get_object(&s.key).await?;
        if Sha256::digest(&bytes).as_slice() != s.digest.as_slice() {
            return Err(ArchiveError::Corrupt(format!("{}: the digest differs from the manifest's", s.key)));
        }
        let header = segment::read_header(&bytes)?;
        if header.region != self.region {
            return Err(ArchiveError::Corrupt(format!("{}: written by region {}", s.key, header.region)));
        }
        let index = segment::read_index(&bytes)?;
        let mut events = 0u64;
        for b in &index.blocks {
            let start = usize::try_from(b.offset).unwrap_or(usize::MAX);
            let end = start.saturating_add(b.length as usize);
            let frame =
                bytes.get(start..end).ok_or_else(|| ArchiveError::Corrupt(format!("{}: block past the end", s.key)))?;
            events += segment::read_block(frame)?.len() as u64;
        }
        if events != s.events {
            return Err(ArchiveError::Corrupt(format!("{}: {events} events, the manifest says {}", s.key, s.events)));
        }
        Ok(events)
    }
}

/// History through the archive: `hot` is the page the shard's hot records gave for `start`,
/// `limit` and the direction; read hot first, so a segment archived meanwhile is found by the
/// cold ranges read after. Hot records win over the segment's copies (recall tombstones, the
/// latest message); recalls of archived messages are laid over them.
pub async fn history_page(
    archive: Option<&Archive>,
    store: &ShardStore,
    conversation: &ConversationId,
    (start, limit, forward): (Seq, usize, bool),
    hot: Vec<Message>,
) -> Result<Vec<Message>, ArchiveError> {
    let limit_seqs = u64::try_from(limit).unwrap_or(u64::MAX).max(1);
    let (lo, hi) = if forward {
        (start, Seq(start.0.saturating_add(limit_seqs - 1)))
    } else {
        (Seq(start.0.saturating_sub(limit_seqs - 1).max(1)), start)
    };
    let ranges = store.cold_ranges(conversation, lo, hi).map_err(unavailable)?;
    if ranges.is_empty() {
        return Ok(hot);
    }
    let archive = archive.ok_or(ArchiveError::NotConfigured)?;
    METRICS.cold_reads.fetch_add(1, Ordering::Relaxed);
    let mut merged: BTreeMap<Seq, Message> = BTreeMap::new();
    for range in &ranges {
        let segment = store
            .segment_holding(range.segment)
            .map_err(unavailable)?
            .ok_or_else(|| ArchiveError::Corrupt(format!("no manifest record for segment {}", range.segment)))?;
        let from = range.from.max(lo);
        let to = range.to.min(hi);
        let messages = match archive.segment_messages(&segment, conversation, from, to).await {
            Ok(m) => m,
            Err(e) => {
                METRICS.cold_read_failures.fetch_add(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        merged.extend(messages.into_iter().map(|m| (m.seq, m)));
    }
    let overlays: BTreeMap<Seq, Recall> = store.recall_overlays(conversation, lo, hi).map_err(unavailable)?;
    for (seq, recall) in overlays {
        if let Some(m) = merged.get_mut(&seq) {
            m.elements.clear();
            m.recalled = Some(recall);
        }
    }
    merged.extend(hot.into_iter().map(|m| (m.seq, m)));
    let page: Vec<Message> = if forward {
        merged.into_values().filter(|m| m.seq >= start).take(limit).collect()
    } else {
        merged.into_values().rev().filter(|m| m.seq <= start).take(limit).collect()
    };
    Ok(page)
}

/// Up to `limit` events of the shard's log from `from` on, archived ones included.
pub async fn events_from(
    archive: Option<&Archive>,
    store: &ShardStore,
    mut from: EventOffset,
    limit: usize,
) -> Result<Vec<LoggedEvent>, ArchiveError> {
    let mut out = Vec::new();
    let cold = |from: EventOffset| -> Result<Option<ArchivedSegment>, ArchiveError> {
        Ok(match store.segment_holding(from).map_err(unavailable)? {
            Some(s) => Some(s),
            None => store.segment_after(from).map_err(unavailable)?,
        })
    };
    while out.len() < limit {
        match cold(from)? {
            Some(segment) => {
                let archive = archive.ok_or(ArchiveError::NotConfigured)?;
                METRICS.cold_reads.fetch_add(1, Ordering::Relaxed);
                let events = archive.segment_events(&segment, from, limit - out.len()).await.inspect_err(|_| {
                    METRICS.cold_read_failures.fetch_add(1, Ordering::Relaxed);
                })?;
                out.extend(events);
                from = segment.last.next();
            }
            None => {
                let hot = store.events(from, limit - out.len()).map_err(unavailable)?;
                // A segment archived between the two reads would be skipped by the hot read:
                // look again, and read it cold if so.
                if cold(from)?.is_some() {
                    continue;
                }
                out.extend(hot);
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_domain::element::Element;
    use meridian_domain::{Event, MessageId, TimeMs, UserId};

    fn user(s: &str) -> UserId {
        UserId::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// A segment of `n` one-to-one messages (event i at log index i), written to `archive`.
    async fn write_segment(archive: &Archive, n: u64) -> ArchivedSegment {
        let conversation = ConversationId::c2c(&user("alice"), &user("bob"));
        let mut writer = segment::SegmentWriter::new("local", 1, 0, 0);
        for i in 1..=n {
            let event = Event::MessageSent {
                conversation: conversation.clone(),
                seq: Seq(i),
                message_id: MessageId::from_stored(format!("m{i}")),
                sender: user("alice"),
                recipient: user("bob"),
                // About 300 bytes an event: several blocks.
                elements: vec![Element::Text { text: format!("message {i} {}", "x".repeat(280)) }],
                request_id: None,
                at: TimeMs(i as i64),
            };
            let record = codec::event_to_pb(&event, 1).encode_to_vec();
            let offset = EventOffset { log_index: i, command: 0, event: 0 };
            writer.push(offset, &record, Some((conversation.as_str(), i))).unwrap_or_else(|e| panic!("{e}"));
        }
        let bytes = writer.finish().unwrap_or_else(|e| panic!("{e}"));
        let first = EventOffset { log_index: 1, command: 0, event: 0 };
        let last = EventOffset { log_index: n, command: 0, event: 0 };
        let key = archive.segment_key(1, 0, first, last);
        let (digest, size) = archive.put_segment(&key, bytes.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        // A second seal of the same range finds the object and keeps it.
        assert_eq!(archive.put_segment(&key, bytes).await.unwrap_or_else(|e| panic!("{e}")), (digest.clone(), size));
        ArchivedSegment { key, first, last, digest, bytes: size, events: n, sealed_at: TimeMs(0) }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reads_of_one_block_fetch_it_once_and_verify_finds_damage() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let config =
            ArchiveConfig { hot_window_seconds: 1, path: Some(dir.path().to_path_buf()), ..Default::default() };
        let archive = Archive::open(&config, dir.path(), "local")
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("on"));
        let segment = write_segment(&archive, 2_000).await;
        let conversation = ConversationId::c2c(&user("alice"), &user("bob"));

        let misses = METRICS.cache_misses.load(Ordering::Relaxed);
        let reads = (0..16).map(|_| archive.segment_messages(&segment, &conversation, Seq(1_000), Seq(1_010)));
        for messages in futures::future::join_all(reads).await {
            let seqs: Vec<u64> = messages.unwrap_or_else(|e| panic!("{e}")).iter().map(|m| m.seq.0).collect();
            assert_eq!(seqs, (1_000..=1_010).collect::<Vec<_>>());
        }
        // The index and the one or two blocks that hold seqs 1000..=1010: fetched once each,
        // however many reads wanted them at the same time.
        let fetched = METRICS.cache_misses.load(Ordering::Relaxed) - misses;
        assert!((2..=3).contains(&fetched), "{fetched} fetches for 16 concurrent reads");

        let events = archive.segment_events(&segment, EventOffset { log_index: 1_990, command: 0, event: 0 }, 100);
        let offsets: Vec<u64> =
            events.await.unwrap_or_else(|e| panic!("{e}")).iter().map(|e| e.offset.log_index).collect();
        assert_eq!(offsets, (1_990..=2_000).collect::<Vec<_>>());
        assert_eq!(archive.verify_segment(&segment).await.unwrap_or_else(|e| panic!("{e}")), 2_000);

        // One flipped byte: verify names the damage.
        let file = dir.path().join(&segment.key);
        let mut bytes = std::fs::read(&file).unwrap_or_else(|e| panic!("{e}"));
        let at = bytes.len() / 3;
        bytes[at] ^= 1;
        std::fs::write(&file, bytes).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(archive.verify_segment(&segment).await, Err(ArchiveError::Corrupt(_))));
    }
}
