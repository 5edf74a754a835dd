//! The hot side of the cold archive (ADR 0004): the shard's manifest of archived segments,
//! where each conversation's archived seqs are, recall overlays, and the reads a sealer needs
//! (the oldest hot events, raw). Applying an `ArchiveSegment` command is in [`crate::shard`]
//! (it writes through the apply transaction); fetching and decoding segments is the node's.

use std::collections::BTreeMap;

use meridian_domain::records::{ArchivedSegment, ColdRange, Recall};
use meridian_domain::{ConversationId, EventOffset, Seq, TimeMs, UserId};
use meridian_proto::durable as pb;
use rocksdb::{Direction, IteratorMode, ReadOptions};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{decode_record, StorageError};
use crate::keys;
use crate::shard::ShardStore;

/// SHA-256 over a range's event-log values in order, each prefixed by its length (u64,
/// big-endian): what `ArchiveSegment.events_digest` names and every replica recomputes.
pub fn events_digest<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut h = Sha256::new();
    for v in values {
        h.update((v.len() as u64).to_be_bytes());
        h.update(v);
    }
    h.finalize().to_vec()
}

/// The smallest event-log key after `offset`'s (keys are of fixed length, so appending a zero
/// byte gives a bound that every later key reaches).
pub(crate) fn key_after(shard: meridian_domain::ShardId, offset: EventOffset) -> Vec<u8> {
    let mut k = keys::event(shard, offset);
    k.push(0);
    k
}

/// One raw event of the log: its offset and the stored record bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent {
    pub offset: EventOffset,
    pub record: Vec<u8>,
}

impl ShardStore {
    /// The shard's archive manifest, oldest segment first.
    pub fn archived_segments(&self) -> Result<Vec<ArchivedSegment>, StorageError> {
        let prefix = keys::archived_segments(self.shard());
        let mut out = Vec::new();
        for item in self.db().rocks().prefix_iterator_cf(self.db().cf(keys::CF_PROJECTIONS)?, &prefix) {
            let (k, v) = item?;
            if !k.starts_with(&prefix) {
                break;
            }
            out.push(codec::archived_segment_from_pb(decode_record("archived segment", &v)?)?);
        }
        Ok(out)
    }

    /// The newest archived segment, if any: its last offset is the hot/cold boundary.
    pub fn last_archived_segment(&self) -> Result<Option<ArchivedSegment>, StorageError> {
        let mut from = keys::archived_segments(self.shard());
        from.extend_from_slice(&[0xff; 16]);
        self.manifest_seek(&from, Direction::Reverse)
    }

    /// The archived segment that holds `offset`, if one does.
    pub fn segment_holding(&self, offset: EventOffset) -> Result<Option<ArchivedSegment>, StorageError> {
        let from = keys::archived_segment(self.shard(), offset);
        Ok(self.manifest_seek(&from, Direction::Reverse)?.filter(|s| s.first <= offset && offset <= s.last))
    }

    /// The first archived segment that starts after `offset` (for event reads that go on
    /// from one segment to the next).
    pub fn segment_after(&self, offset: EventOffset) -> Result<Option<ArchivedSegment>, StorageError> {
        let mut from = keys::archived_segment(self.shard(), offset);
        from.push(0);
        self.manifest_seek(&from, Direction::Forward)
    }

    /// The first manifest record from `from` on in `direction`, if the manifest has one there.
    fn manifest_seek(&self, from: &[u8], direction: Direction) -> Result<Option<ArchivedSegment>, StorageError> {
        let prefix = keys::archived_segments(self.shard());
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(prefix.clone());
        let mut iter = self.db().rocks().iterator_cf_opt(
            self.db().cf(keys::CF_PROJECTIONS)?,
            ro,
            IteratorMode::From(from, direction),
        );
        match iter.next() {
            Some(item) => {
                let (k, v) = item?;
                if !k.starts_with(&prefix) {
                    return Ok(None);
                }
                Ok(Some(codec::archived_segment_from_pb(decode_record("archived segment", &v)?)?))
            }
            None => Ok(None),
        }
    }

    /// The archived ranges of `conversation` that overlap `from..=to`, in seq order.
    pub fn cold_ranges(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
    ) -> Result<Vec<ColdRange>, StorageError> {
        let prefix = keys::cold_ranges(self.shard(), conversation);
        let start = keys::cold_range(self.shard(), conversation, from);
        let mut out = Vec::new();
        for item in self
            .db()
            .rocks()
            .iterator_cf(self.db().cf(keys::CF_PROJECTIONS)?, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if !k.starts_with(&prefix) || k.len() != prefix.len() + 8 {
                break;
            }
            let range = codec::cold_range_from_pb(conversation.clone(), decode_record("cold range", &v)?)?;
            if range.from > to {
                break;
            }
            out.push(range);
        }
        Ok(out)
    }

    /// Recalls of archived messages of `conversation` in `from..=to`, by seq.
    pub fn recall_overlays(
        &self,
        conversation: &ConversationId,
        from: Seq,
        to: Seq,
    ) -> Result<BTreeMap<Seq, Recall>, StorageError> {
        let start = keys::recall_overlay(self.shard(), conversation, from);
        let end = keys::recall_overlay(self.shard(), conversation, to);
        let mut out = BTreeMap::new();
        for item in self
            .db()
            .rocks()
            .iterator_cf(self.db().cf(keys::CF_PROJECTIONS)?, IteratorMode::From(&start, Direction::Forward))
        {
            let (k, v) = item?;
            if k.as_ref() > end.as_slice() || k.len() != end.len() {
                break;
            }
            let seq = Seq(u64::from_be_bytes(
                k[k.len() - 8..].try_into().map_err(|_| StorageError::corrupt("recall overlay", "short key"))?,
            ));
            let r: pb::RecallOverlayRecord = decode_record("recall overlay", &v)?;
            let by = UserId::parse(&r.by).map_err(|e| StorageError::corrupt("recall overlay", e.to_string()))?;
            out.insert(seq, Recall { by, at: TimeMs(r.at_ms) });
        }
        Ok(out)
    }

    /// Up to `limit` of the oldest hot events (past the newest archived segment), raw: what a
    /// sealer writes into the next segment.
    pub fn oldest_hot_events(&self, limit: usize) -> Result<Vec<RawEvent>, StorageError> {
        let start = match self.last_archived_segment()? {
            Some(s) => key_after(self.shard(), s.last),
            None => keys::shard_prefix(self.shard()),
        };
        let mut ro = ReadOptions::default();
        ro.set_iterate_upper_bound(keys::shard_end(self.shard()));
        let iter = self.db().rocks().iterator_cf_opt(
            self.db().cf(keys::CF_EVENT_LOG)?,
            ro,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut out = Vec::with_capacity(limit.min(4096));
        for item in iter {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let offset = keys::event_offset_of(&k).ok_or_else(|| StorageError::corrupt("event key", "too short"))?;
            out.push(RawEvent { offset, record: v.to_vec() });
        }
        Ok(out)
    }

    /// The first hot event's offset, if the shard has any hot events.
    pub fn first_hot_event(&self) -> Result<Option<EventOffset>, StorageError> {
        Ok(self.oldest_hot_events(1)?.first().map(|e| e.offset))
    }
}

/// The conversation seq ranges of a segment's events (message sends only), in conversation
/// order: what `SegmentArchived.ranges` records.
pub fn seq_ranges(events: &[meridian_domain::Event], segment: EventOffset) -> Vec<ColdRange> {
    let mut ranges: BTreeMap<ConversationId, (Seq, Seq)> = BTreeMap::new();
    for event in events {
        if let Some((conversation, message)) = meridian_domain::projector::sent_message(event) {
            let r = ranges.entry(conversation).or_insert((message.seq, message.seq));
            r.0 = r.0.min(message.seq);
            r.1 = r.1.max(message.seq);
        }
    }
    ranges.into_iter().map(|(conversation, (from, to))| ColdRange { conversation, from, to, segment }).collect()
}
