//! Archive segments (docs/adr/0004-archive-segments.md): a contiguous range of one shard's
//! event log as one immutable object, and reading it back a block at a time.
//!
//! ```text
//! header   "MRDNSEG1" | format version u32 | length u32 | SegmentHeader
//! blocks   compressed length u32 | raw length u32 | crc32c u32 | LZ4 block
//! footer   SegmentIndex | index length u32 | index crc32c u32 | "MRDNIDX1"
//! ```
//!
//! A block holds up to [`BLOCK_TARGET`] bytes of `varint length | SegmentEntry` before
//! compression and never splits an event. The index names every block's byte range, offset
//! range and the conversation seqs inside, so a history page fetches only the blocks it needs
//! and an event read from an offset finds its block by binary search. All integers are
//! little-endian.

use std::collections::BTreeMap;

use meridian_domain::EventOffset;
use meridian_proto::durable as pb;
use prost::Message as _;

/// The first bytes of every segment.
pub const HEAD_MAGIC: &[u8; 8] = b"MRDNSEG1";
/// The last bytes of every segment.
pub const FOOT_MAGIC: &[u8; 8] = b"MRDNIDX1";
/// The layout this code writes; a reader refuses a newer one.
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of entries a block gathers before it is compressed and closed.
pub const BLOCK_TARGET: usize = 64 * 1024;
/// Bytes at the end of a segment after its index: index length, index crc32c, magic.
pub const FOOTER_TRAILER: usize = 4 + 4 + 8;
/// Largest raw block a reader accepts (an event is at most a few MB; a corrupt length must
/// not make the reader allocate gigabytes).
const MAX_RAW_BLOCK: usize = 64 * 1024 * 1024;

/// Why a segment (or a part of one) does not read back.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("not a segment: {0}")]
    NotASegment(String),
    #[error("segment format {0} is newer than this node reads ({FORMAT_VERSION}): upgrade the node")]
    NewerFormat(u32),
    #[error("segment corrupt: {0}")]
    Corrupt(String),
    #[error("events must be added in log order: {0} after {1}")]
    OutOfOrder(String, String),
    #[error("a segment holds at least one event")]
    Empty,
}

/// One event read back from a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEvent {
    pub offset: EventOffset,
    /// The event log's record bytes (`EventRecord`), decoded by the event log's own codec.
    pub record: Vec<u8>,
}

/// Builds one segment from events added in log order.
#[derive(Debug)]
pub struct SegmentWriter {
    header: pb::SegmentHeader,
    body: Vec<u8>,
    blocks: Vec<pb::SegmentBlock>,
    raw: Vec<u8>,
    open: Option<OpenBlock>,
    last: Option<EventOffset>,
}

#[derive(Debug)]
struct OpenBlock {
    first: EventOffset,
    last: EventOffset,
    seqs: BTreeMap<String, (u64, u64)>,
}

impl SegmentWriter {
    /// A writer for a segment of `shard` of `region` at `epoch`.
    pub fn new(region: &str, epoch: u32, shard: u32, sealed_at_ms: i64) -> SegmentWriter {
        SegmentWriter {
            header: pb::SegmentHeader { region: region.to_owned(), epoch, shard, sealed_at_ms, ..Default::default() },
            body: Vec::new(),
            blocks: Vec::new(),
            raw: Vec::new(),
            open: None,
            last: None,
        }
    }

    /// Adds the event at `offset` (after every event added so far). `message`: the
    /// conversation and seq of the message it records, if it records one, for the index.
    pub fn push(
        &mut self,
        offset: EventOffset,
        record: &[u8],
        message: Option<(&str, u64)>,
    ) -> Result<(), SegmentError> {
        if let Some(last) = self.last {
            if offset <= last {
                return Err(SegmentError::OutOfOrder(offset.to_string(), last.to_string()));
            }
        }
        let entry = pb::SegmentEntry {
            log_index: offset.log_index,
            command: offset.command,
            event: u32::from(offset.event),
            record: record.to_vec(),
        };
        if !self.raw.is_empty() && self.raw.len() + entry.encoded_len() + 10 > BLOCK_TARGET {
            self.close_block();
        }
        entry.encode_length_delimited(&mut self.raw).map_err(|e| SegmentError::Corrupt(e.to_string()))?;
        let open = self.open.get_or_insert_with(|| OpenBlock { first: offset, last: offset, seqs: BTreeMap::new() });
        open.last = offset;
        if let Some((conversation, seq)) = message {
            let range = open.seqs.entry(conversation.to_owned()).or_insert((seq, seq));
            range.0 = range.0.min(seq);
            range.1 = range.1.max(seq);
        }
        if self.header.events == 0 {
            (self.header.first_index, self.header.first_command, self.header.first_event) =
                (offset.log_index, offset.command, u32::from(offset.event));
        }
        (self.header.last_index, self.header.last_command, self.header.last_event) =
            (offset.log_index, offset.command, u32::from(offset.event));
        self.header.events += 1;
        self.last = Some(offset);
        Ok(())
    }

    /// Records the keyed hash of a subject whose data the segment holds (residency audit).
    pub fn add_subject_hash(&mut self, hash: String) {
        if !self.header.subject_hashes.contains(&hash) {
            self.header.subject_hashes.push(hash);
        }
    }

    fn close_block(&mut self) {
        let Some(open) = self.open.take() else { return };
        let compressed = lz4_flex::block::compress(&self.raw);
        let raw_len = self.raw.len();
        self.raw.clear();
        let mut frame = Vec::with_capacity(12 + compressed.len());
        frame.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
        frame.extend_from_slice(&(raw_len as u32).to_le_bytes());
        frame.extend_from_slice(&crc32c::crc32c(&compressed).to_le_bytes());
        frame.extend_from_slice(&compressed);
        self.blocks.push(pb::SegmentBlock {
            offset: 0, // set in `finish`, once the header's length is known
            length: frame.len() as u32,
            first_index: open.first.log_index,
            first_command: open.first.command,
            first_event: u32::from(open.first.event),
            last_index: open.last.log_index,
            last_command: open.last.command,
            last_event: u32::from(open.last.event),
            seqs: open
                .seqs
                .into_iter()
                .map(|(conversation_id, (seq_from, seq_to))| pb::SegmentSeqRange { conversation_id, seq_from, seq_to })
                .collect(),
        });
        self.body.extend_from_slice(&frame);
    }

    /// The whole object.
    pub fn finish(mut self) -> Result<Vec<u8>, SegmentError> {
        if self.header.events == 0 {
            return Err(SegmentError::Empty);
        }
        self.close_block();
        let header = self.header.encode_to_vec();
        let start = (HEAD_MAGIC.len() + 8 + header.len()) as u64;
        let mut at = start;
        for block in &mut self.blocks {
            block.offset = at;
            at += u64::from(block.length);
        }
        let index = pb::SegmentIndex { blocks: self.blocks }.encode_to_vec();
        let mut out = Vec::with_capacity(at as usize + index.len() + FOOTER_TRAILER);
        out.extend_from_slice(HEAD_MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&self.body);
        out.extend_from_slice(&index);
        out.extend_from_slice(&(index.len() as u32).to_le_bytes());
        out.extend_from_slice(&crc32c::crc32c(&index).to_le_bytes());
        out.extend_from_slice(FOOT_MAGIC);
        Ok(out)
    }
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, SegmentError> {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| SegmentError::Corrupt(format!("truncated at byte {at}")))
}

/// The header, from the segment's first bytes (at least `12 + header length`).
pub fn read_header(head: &[u8]) -> Result<pb::SegmentHeader, SegmentError> {
    if head.get(..8) != Some(HEAD_MAGIC.as_slice()) {
        return Err(SegmentError::NotASegment("the first bytes are not MRDNSEG1".into()));
    }
    let version = u32_at(head, 8)?;
    if version > FORMAT_VERSION {
        return Err(SegmentError::NewerFormat(version));
    }
    let len = u32_at(head, 12)? as usize;
    let bytes = head.get(16..16 + len).ok_or_else(|| SegmentError::Corrupt("truncated header".into()))?;
    pb::SegmentHeader::decode(bytes).map_err(|e| SegmentError::Corrupt(format!("header: {e}")))
}

/// The index, from the segment's last bytes (the whole footer: read the last
/// [`FOOTER_TRAILER`] bytes first for the index length, or simply a generous tail).
pub fn read_index(tail: &[u8]) -> Result<pb::SegmentIndex, SegmentError> {
    let n = tail.len();
    if n < FOOTER_TRAILER || &tail[n - 8..] != FOOT_MAGIC.as_slice() {
        return Err(SegmentError::NotASegment("the last bytes are not MRDNIDX1".into()));
    }
    let len = u32_at(tail, n - 16)? as usize;
    let crc = u32_at(tail, n - 12)?;
    let start = (n - FOOTER_TRAILER)
        .checked_sub(len)
        .ok_or_else(|| SegmentError::Corrupt(format!("the index ({len} bytes) is longer than the tail read")))?;
    let bytes = &tail[start..n - FOOTER_TRAILER];
    if crc32c::crc32c(bytes) != crc {
        return Err(SegmentError::Corrupt("the index checksum does not match".into()));
    }
    pb::SegmentIndex::decode(bytes).map_err(|e| SegmentError::Corrupt(format!("index: {e}")))
}

/// The events of one block (its `length` bytes from its `offset`), checksum verified.
pub fn read_block(frame: &[u8]) -> Result<Vec<SegmentEvent>, SegmentError> {
    let compressed_len = u32_at(frame, 0)? as usize;
    let raw_len = u32_at(frame, 4)? as usize;
    let crc = u32_at(frame, 8)?;
    let compressed =
        frame.get(12..12 + compressed_len).ok_or_else(|| SegmentError::Corrupt("truncated block".into()))?;
    if crc32c::crc32c(compressed) != crc {
        return Err(SegmentError::Corrupt("a block checksum does not match".into()));
    }
    if raw_len > MAX_RAW_BLOCK {
        return Err(SegmentError::Corrupt(format!("a block claims {raw_len} bytes")));
    }
    let raw = lz4_flex::block::decompress(compressed, raw_len).map_err(|e| SegmentError::Corrupt(e.to_string()))?;
    let mut events = Vec::new();
    let mut rest = raw.as_slice();
    while !rest.is_empty() {
        let entry = pb::SegmentEntry::decode_length_delimited(&mut rest)
            .map_err(|e| SegmentError::Corrupt(format!("entry: {e}")))?;
        let event = u16::try_from(entry.event).map_err(|_| SegmentError::Corrupt("event position".into()))?;
        events.push(SegmentEvent {
            offset: EventOffset { log_index: entry.log_index, command: entry.command, event },
            record: entry.record,
        });
    }
    Ok(events)
}

/// The blocks that hold seqs `from..=to` of `conversation`, in order.
pub fn blocks_for_seqs<'i>(
    index: &'i pb::SegmentIndex,
    conversation: &str,
    from: u64,
    to: u64,
) -> Vec<&'i pb::SegmentBlock> {
    index
        .blocks
        .iter()
        .filter(|b| b.seqs.iter().any(|r| r.conversation_id == conversation && r.seq_from <= to && r.seq_to >= from))
        .collect()
}

/// The position of the first block with events at or after `offset`, if any.
pub fn block_from_offset(index: &pb::SegmentIndex, offset: EventOffset) -> Option<usize> {
    let last_of = |b: &pb::SegmentBlock| (b.last_index, b.last_command, b.last_event);
    let key = (offset.log_index, offset.command, u32::from(offset.event));
    let i = index.blocks.partition_point(|b| last_of(b) < key);
    (i < index.blocks.len()).then_some(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(i: u64) -> EventOffset {
        EventOffset { log_index: i, command: 0, event: 0 }
    }

    /// 5,000 events of 100 bytes; event i is message seq i/2+1 of `c2c:a:b` when even.
    fn segment() -> Vec<u8> {
        let mut w = SegmentWriter::new("sg", 1, 3, 1_700_000_000_000);
        for i in 1..=5_000u64 {
            let record = vec![(i % 251) as u8; 100];
            let message = (i % 2 == 0).then_some(("c2c:a:b", i / 2));
            w.push(at(i), &record, message).expect("in order");
        }
        w.add_subject_hash("h1".into());
        w.finish().expect("non-empty")
    }

    fn block<'a>(bytes: &'a [u8], b: &pb::SegmentBlock) -> &'a [u8] {
        &bytes[b.offset as usize..(b.offset + u64::from(b.length)) as usize]
    }

    #[test]
    fn every_event_reads_back_in_order_block_by_block() {
        let bytes = segment();
        let header = read_header(&bytes).expect("header");
        assert_eq!((header.region.as_str(), header.shard, header.events), ("sg", 3, 5_000));
        assert_eq!((header.first_index, header.last_index), (1, 5_000));
        let index = read_index(&bytes).expect("index");
        assert!(index.blocks.len() >= 7, "500 KB of entries make several blocks: {}", index.blocks.len());
        let mut all = vec![];
        for b in &index.blocks {
            all.extend(read_block(block(&bytes, b)).expect("block"));
        }
        assert_eq!(all.len(), 5_000);
        for (i, e) in all.iter().enumerate() {
            let n = i as u64 + 1;
            assert_eq!((e.offset, e.record.len(), e.record[0]), (at(n), 100, (n % 251) as u8));
        }
        // Compression works on these repetitive records.
        assert!(bytes.len() < 5_000 * 100 / 4, "{} bytes", bytes.len());
    }

    #[test]
    fn a_seq_range_reads_only_its_blocks_and_an_offset_finds_its_block() {
        let bytes = segment();
        let index = read_index(&bytes).expect("index");
        let found = blocks_for_seqs(&index, "c2c:a:b", 1_000, 1_010);
        assert_eq!(found.len(), 1, "11 seqs of 100-byte events sit in one or two blocks");
        let events = read_block(block(&bytes, found[0])).expect("block");
        assert!(events.iter().any(|e| e.offset == at(2_000)), "seq 1000 is event 2000");
        assert!(blocks_for_seqs(&index, "c2c:a:c", 1, 10).is_empty());
        assert!(blocks_for_seqs(&index, "c2c:a:b", 2_501, 3_000).is_empty());
        let i = block_from_offset(&index, at(4_321)).expect("inside");
        let b = &index.blocks[i];
        assert!(b.first_index <= 4_321 && 4_321 <= b.last_index);
        assert_eq!(block_from_offset(&index, at(1)), Some(0));
        assert_eq!(block_from_offset(&index, at(5_001)), None);
    }

    #[test]
    fn damage_is_refused_with_a_reason() {
        let bytes = segment();
        let index = read_index(&bytes).expect("index");
        let b = &index.blocks[2];
        let mut flipped = block(&bytes, b).to_vec();
        flipped[40] ^= 0x01;
        assert_eq!(read_block(&flipped), Err(SegmentError::Corrupt("a block checksum does not match".into())));
        let mut tail = bytes.clone();
        let n = tail.len();
        tail[n - 20] ^= 0x01;
        assert!(matches!(read_index(&tail), Err(SegmentError::Corrupt(_))));
        assert!(matches!(read_index(&bytes[..n - 3]), Err(SegmentError::NotASegment(_))));
        let mut newer = bytes.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(read_header(&newer), Err(SegmentError::NewerFormat(2)));
        assert!(matches!(read_header(b"not a segment at all"), Err(SegmentError::NotASegment(_))));
        assert!(read_block(&[0xff; 8]).is_err());
    }

    #[test]
    fn events_go_in_log_order_and_a_segment_is_never_empty() {
        let mut w = SegmentWriter::new("sg", 1, 0, 0);
        w.push(at(5), b"x", None).expect("first");
        assert!(matches!(w.push(at(5), b"y", None), Err(SegmentError::OutOfOrder(..))));
        assert!(matches!(w.push(at(4), b"y", None), Err(SegmentError::OutOfOrder(..))));
        w.push(EventOffset { log_index: 5, command: 0, event: 1 }, b"z", None).expect("next event of the entry");
        assert_eq!(SegmentWriter::new("sg", 1, 0, 0).finish(), Err(SegmentError::Empty));
    }
}
