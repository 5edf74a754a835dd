//! Sealing: each shard's leader, every `seal-interval-ms`, takes the oldest hot events older
//! than the hot window (at most `segment-max-events`, never past the webhook cursor: the
//! after-callbacks read the hot log), writes them as one segment object, and proposes
//! `ArchiveSegment`. Every replica then checks the range against the digest, records the
//! segment in its manifest and drops the range. A leader change mid-way leaves at most an
//! object no manifest names (removed by `meridian archive gc`); a store outage only delays
//! sealing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use meridian_domain::records::ArchivedSegment;
use meridian_domain::{Command, ShardId, TimeMs};
use meridian_proto::durable as pb;
use meridian_raft::RaftNode;
use meridian_storage::archive::{events_digest, RawEvent};
use meridian_storage::codec;
use meridian_storage::segment::SegmentWriter;
use prost::Message as _;

use super::{Archive, ArchiveError, METRICS};

/// What sealing must leave hot besides the window.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// `limits.recall-window-seconds`: the size rule never seals a message its sender may
    /// still recall.
    pub recall_window_ms: i64,
    /// The webhooks send from the hot log (after-callbacks or push are on): never seal past
    /// their cursor.
    pub hooks_read_the_log: bool,
}

/// Starts one sealer per shard when the archive is on.
pub fn start(archive: Arc<Archive>, node: Arc<RaftNode>, bounds: Bounds) {
    for shard in node.shards() {
        tokio::spawn(run(archive.clone(), node.clone(), shard.id, bounds));
    }
}

async fn run(archive: Arc<Archive>, node: Arc<RaftNode>, shard: ShardId, bounds: Bounds) {
    let interval = Duration::from_millis(archive.config.seal_interval_ms);
    loop {
        tokio::time::sleep(interval).await;
        if !node.is_leader(shard) {
            METRICS.lag_seconds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&shard.0);
            continue;
        }
        // Seal as long as there is a full window's worth, then wait for the next interval.
        loop {
            match seal_once(&archive, &node, shard, bounds).await {
                Ok(Sealed::Segment { full: true }) => continue,
                Ok(_) => break,
                Err(e) => {
                    METRICS.seal_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(shard = shard.0, error = %e, "archive: sealing failed; retrying at the next interval");
                    break;
                }
            }
        }
    }
}

#[derive(Debug)]
enum Sealed {
    Nothing,
    /// A segment was archived; `full`: it was as large as a segment may be (more may wait).
    Segment {
        full: bool,
    },
}

#[derive(Debug, thiserror::Error)]
enum SealError {
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("{0}")]
    Other(String),
}

fn other(e: impl std::fmt::Display) -> SealError {
    SealError::Other(e.to_string())
}

async fn seal_once(archive: &Archive, node: &RaftNode, shard: ShardId, bounds: Bounds) -> Result<Sealed, SealError> {
    // Everything committed is applied here first: a new leader does not seal again what its
    // predecessor's last segment already took.
    node.read_barrier(shard).await.map_err(other)?;
    let store = node.store(shard).map_err(other)?;
    let max = usize::try_from(archive.config.segment_max_events).unwrap_or(usize::MAX);
    let candidates = store.oldest_hot_events(max).map_err(other)?;
    let set_lag = |lag: u64| {
        METRICS.lag_seconds.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(shard.0, lag);
    };
    if candidates.is_empty() {
        set_lag(0);
        return Ok(Sealed::Nothing);
    }
    let now = chrono::Utc::now().timestamp_millis();
    let window_ms = i64::try_from(archive.config.hot_window_seconds.saturating_mul(1000)).unwrap_or(i64::MAX);
    let cutoff = TimeMs(now.saturating_sub(window_ms));
    let hooks_cursor = if bounds.hooks_read_the_log { store.hooks_cursor().map_err(other)? } else { None };
    let recall_cutoff = TimeMs(now.saturating_sub(bounds.recall_window_ms));
    // The size rule: past `hot-max-entries` entries of hot history, age does not matter.
    let applied = store.applied_state().map_err(other)?.last_applied.map_or(0, |l| l.index);
    let max_entries = archive.config.hot_max_entries;
    let oversized = |offset: meridian_domain::EventOffset| {
        max_entries > 0 && applied.saturating_sub(offset.log_index) > max_entries
    };
    let decode = |raw: &RawEvent| -> Result<(u32, meridian_domain::Event), SealError> {
        let record = pb::EventRecord::decode(raw.record.as_slice()).map_err(other)?;
        let epoch = record.epoch.max(1);
        Ok((epoch, codec::event_from_pb(record).map_err(other)?))
    };
    let mut decoded = Vec::with_capacity(candidates.len());
    // The range ends at the last event known to be older than the window: events that carry
    // no time of their own go with the timed ones around them.
    let mut end = None;
    let mut oldest = None;
    for (i, raw) in candidates.iter().enumerate() {
        if hooks_cursor.is_some_and(|c| raw.offset >= c) {
            break;
        }
        let (epoch, event) = decode(raw)?;
        let time = event.time();
        oldest = oldest.or(time);
        if oversized(raw.offset) && time.is_none_or(|t| t <= recall_cutoff) {
            end = Some(i);
        } else if let Some(t) = time {
            if t > cutoff {
                break;
            }
            end = Some(i);
        }
        decoded.push((epoch, event));
    }
    // How far the oldest hot event is past the window (0: sealing keeps up). Read on past
    // where the range stopped only when nothing before it carried a time.
    if oldest.is_none() {
        oldest = candidates[decoded.len()..].iter().find_map(|raw| decode(raw).ok()?.1.time());
    }
    set_lag(oldest.map_or(0, |t| u64::try_from((cutoff.0 - t.0) / 1000).unwrap_or(0)));
    let Some(end) = end else { return Ok(Sealed::Nothing) };
    let range: &[RawEvent] = &candidates[..=end];
    let (Some(first), Some(last)) = (range.first(), range.last()) else { return Ok(Sealed::Nothing) };
    let epoch = decoded.first().map_or(1, |(e, _)| *e);
    let mut writer = SegmentWriter::new(archive.region(), epoch, shard.0, now);
    for (raw, (_, event)) in range.iter().zip(&decoded) {
        let message = meridian_domain::projector::sent_message(event);
        let message = message.as_ref().map(|(c, m)| (c.as_str(), m.seq.0));
        writer.push(raw.offset, &raw.record, message).map_err(other)?;
    }
    let bytes = writer.finish().map_err(other)?;
    let key = archive.segment_key(epoch, shard.0, first.offset, last.offset);
    let (digest, size) = archive.put_segment(&key, bytes).await?;
    let segment = ArchivedSegment {
        key: key.clone(),
        first: first.offset,
        last: last.offset,
        digest,
        bytes: size,
        events: range.len() as u64,
        sealed_at: TimeMs(now),
    };
    let digest = events_digest(range.iter().map(|r| r.record.as_slice()));
    let results =
        node.propose(shard, &[Command::ArchiveSegment { segment, events_digest: digest }]).await.map_err(other)?;
    match results.into_iter().next() {
        Some(Ok(_)) => {
            METRICS.segments_sealed.fetch_add(1, Ordering::Relaxed);
            METRICS.bytes_sealed.fetch_add(size, Ordering::Relaxed);
            tracing::info!(shard = shard.0, key, events = range.len(), bytes = size, "archive: sealed a segment");
            Ok(Sealed::Segment { full: range.len() == max })
        }
        Some(Err(rejection)) => Err(other(format!("the shard refused the segment {key}: {rejection}"))),
        None => Err(other("no result for the archive command")),
    }
}
