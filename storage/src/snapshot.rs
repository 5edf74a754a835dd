//! Shard snapshots as streams: built, sent and installed with bounded memory, whatever the
//! size of the shard.
//!
//! The format (version 1, unchanged since snapshots were built whole in memory):
//! `MRSN`, the version (u32 BE), the applied state as a frame, then one record per key of the
//! state column families — the column family's index in [`STATE_CFS`] (one byte), the key
//! without its shard prefix and the value, each a frame (u32 BE length, bytes) — then
//! [`FRAME_END`] and a SHA-256 of everything before it.
//!
//! A node keeps its newest snapshot in a [file](SnapshotFileHeader) beside the database: a
//! header naming the snapshot (`SnapshotMetaRecord`, a frame), then the snapshot as above.
//!
//! Building reads one RocksDB snapshot with iterators and writes through a digest
//! ([`SnapshotView::write_to`]). Installing ([`ShardStore::import_snapshot_from`]) reads the
//! stream twice: once to check the digest (a corrupt snapshot changes nothing), once to
//! write it. A snapshot up to [`ATOMIC_IMPORT_BYTES`] goes in as one WriteBatch; a larger one
//! in batches of about [`IMPORT_BATCH_BYTES`], the applied state last and synced. Until that
//! last batch the shard's applied state still names the old index while its data is partly
//! replaced: a node that stops in between must import the same snapshot again before it
//! serves the shard (the state machine does, on open, when its snapshot file is ahead of the
//! applied state), and local reads of the shard are refused while an install runs.

use std::io::{BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use meridian_proto::durable as pb;
use prost::Message as _;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};
use sha2::{Digest, Sha256};

use crate::db::Db;
use crate::error::{decode_record, StorageError};
use crate::keys::{self, STATE_CFS};
use crate::shard::ShardStore;

pub(crate) const SNAPSHOT_MAGIC: &[u8; 4] = b"MRSN";
const SNAPSHOT_VERSION: u32 = 1;
pub(crate) const FRAME_END: u8 = 0xff;
const DIGEST_LEN: u64 = 32;
/// The longest key or value a snapshot may hold (far above any record Meridian writes).
const MAX_FRAME: usize = 64 << 20;
/// A snapshot up to this size is installed in one WriteBatch (atomic for readers too).
pub const ATOMIC_IMPORT_BYTES: u64 = 64 << 20;
/// Above [`ATOMIC_IMPORT_BYTES`], the size of each batch an install writes.
pub const IMPORT_BATCH_BYTES: usize = 4 << 20;

/// When an install writes in batches, and how large they are.
#[derive(Debug, Clone, Copy)]
pub struct ImportLimits {
    /// A snapshot up to this many bytes goes in as one WriteBatch.
    pub atomic_bytes: u64,
    /// Above that, the size of each batch.
    pub batch_bytes: usize,
}

impl Default for ImportLimits {
    fn default() -> Self {
        Self { atomic_bytes: ATOMIC_IMPORT_BYTES, batch_bytes: IMPORT_BATCH_BYTES }
    }
}

fn corrupt(detail: impl Into<String>) -> StorageError {
    StorageError::corrupt("snapshot", detail.into())
}

/// One shard's state at one point in time, ready to be written out as a snapshot.
pub struct SnapshotView<'a> {
    db: &'a Db,
    shard: meridian_domain::ShardId,
    snap: rocksdb::Snapshot<'a>,
    applied: pb::AppliedState,
}

impl ShardStore {
    /// The shard's state as of now, for a snapshot. Syncs the WAL first, so that the state a
    /// snapshot describes is on disk before Raft purges the log it replaces.
    pub fn snapshot_view(&self) -> Result<SnapshotView<'_>, StorageError> {
        let db = self.db();
        db.sync_now()?;
        let snap = db.rocks().snapshot();
        let mut ro = ReadOptions::default();
        ro.set_snapshot(&snap);
        let applied = match db.rocks().get_cf_opt(
            db.cf(keys::CF_RAFT_META)?,
            keys::meta(self.shard(), keys::META_APPLIED),
            &ro,
        )? {
            Some(v) => decode_record("applied state", &v)?,
            None => pb::AppliedState::default(),
        };
        Ok(SnapshotView { db, shard: self.shard(), snap, applied })
    }

    /// Replaces the shard's state with the snapshot that starts at `start` in `r` and runs to
    /// its end. Checks the whole snapshot before it writes anything; see the module docs for
    /// what an interrupted install leaves.
    pub fn import_snapshot_from<R: Read + Seek>(
        &self,
        r: &mut R,
        start: u64,
    ) -> Result<pb::AppliedState, StorageError> {
        self.import_snapshot_with(r, start, ImportLimits::default())
    }

    /// [`Self::import_snapshot_from`] with other limits (tests of the batched path).
    pub fn import_snapshot_with<R: Read + Seek>(
        &self,
        r: &mut R,
        start: u64,
        limits: ImportLimits,
    ) -> Result<pb::AppliedState, StorageError> {
        let len = verify(r, start)?;
        r.seek(SeekFrom::Start(start))?;
        let body = BufReader::with_capacity(1 << 20, r.by_ref().take(len - DIGEST_LEN));
        let (applied, mut records) = Records::open(body)?;
        let db = self.db();
        let atomic = len <= limits.atomic_bytes;
        let mut batch = WriteBatch::default();
        for cf in STATE_CFS {
            batch.delete_range_cf(db.cf(cf)?, keys::shard_prefix(self.shard()), keys::shard_end(self.shard()));
        }
        while let Some((cf, k, v)) = records.next_record()? {
            let mut key = keys::shard_prefix(self.shard());
            key.extend_from_slice(&k);
            batch.put_cf(db.cf(cf)?, key, v);
            if !atomic && batch.size_in_bytes() >= limits.batch_bytes {
                db.write_unsynced(std::mem::take(&mut batch))?;
            }
        }
        batch.put_cf(db.cf(keys::CF_RAFT_META)?, keys::meta(self.shard(), keys::META_APPLIED), applied.encode_to_vec());
        db.write_synced(batch)?;
        Ok(applied)
    }

    /// [`Self::import_snapshot_from`] over a snapshot in memory.
    pub fn import_snapshot(&self, data: &[u8]) -> Result<pb::AppliedState, StorageError> {
        self.import_snapshot_from(&mut std::io::Cursor::new(data), 0)
    }

    /// The whole snapshot of the shard in memory (tests and tools; nodes stream it to files).
    pub fn export_snapshot(&self) -> Result<(pb::AppliedState, Vec<u8>), StorageError> {
        let view = self.snapshot_view()?;
        let mut out = Vec::new();
        view.write_to(&mut out)?;
        Ok((view.applied, out))
    }
}

impl SnapshotView<'_> {
    /// The applied state the snapshot carries (its last log id and membership).
    pub fn applied(&self) -> &pb::AppliedState {
        &self.applied
    }

    /// Writes the snapshot to `w` as it reads it; returns the bytes written.
    pub fn write_to<W: Write>(&self, w: W) -> Result<u64, StorageError> {
        let mut out = Digesting { inner: BufWriter::with_capacity(1 << 20, w), hash: Sha256::new(), bytes: 0 };
        out.write_all(SNAPSHOT_MAGIC)?;
        out.write_all(&SNAPSHOT_VERSION.to_be_bytes())?;
        write_frame(&mut out, &self.applied.encode_to_vec())?;
        for (i, cf) in STATE_CFS.iter().enumerate() {
            let mut ro = ReadOptions::default();
            ro.set_snapshot(&self.snap);
            ro.set_iterate_upper_bound(keys::shard_end(self.shard));
            let from = keys::shard_prefix(self.shard);
            for item in
                self.db.rocks().iterator_cf_opt(self.db.cf(cf)?, ro, IteratorMode::From(&from, Direction::Forward))
            {
                let (k, v) = item?;
                out.write_all(&[u8::try_from(i).unwrap_or(FRAME_END)])?;
                // Keys are stored without the shard prefix; the importer adds its own.
                write_frame(&mut out, &k[4..])?;
                write_frame(&mut out, &v)?;
            }
        }
        out.write_all(&[FRAME_END])?;
        let digest = std::mem::take(&mut out.hash).finalize();
        let Digesting { mut inner, bytes, .. } = out;
        inner.write_all(&digest)?;
        inner.flush()?;
        Ok(bytes + DIGEST_LEN)
    }
}

/// Checks the snapshot from `start` to the end of `r` against its digest; returns its length.
pub fn verify<R: Read + Seek>(r: &mut R, start: u64) -> Result<u64, StorageError> {
    copy_verified(r, start, std::io::sink())
}

/// Copies the snapshot from `start` to the end of `r` into `w` as it checks it against its
/// digest (one read for both); returns its length. On a mismatch `w` holds a bad copy: the
/// caller discards it.
pub fn copy_verified<R: Read + Seek, W: Write>(r: &mut R, start: u64, w: W) -> Result<u64, StorageError> {
    let end = r.seek(SeekFrom::End(0))?;
    let len = end.checked_sub(start).ok_or_else(|| corrupt("starts past its end"))?;
    if len < 4 + 4 + DIGEST_LEN {
        return Err(corrupt("too short to be a Meridian shard snapshot"));
    }
    r.seek(SeekFrom::Start(start))?;
    let mut body = r.by_ref().take(len - DIGEST_LEN);
    let mut magic = [0u8; 4];
    body.read_exact(&mut magic)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(corrupt("not a Meridian shard snapshot"));
    }
    let mut out = Digesting { inner: w, hash: Sha256::new(), bytes: 0 };
    out.write_all(&magic)?;
    std::io::copy(&mut body, &mut out)?;
    let mut digest = [0u8; DIGEST_LEN as usize];
    r.read_exact(&mut digest)?;
    if std::mem::take(&mut out.hash).finalize().as_slice() != digest {
        return Err(corrupt("checksum mismatch"));
    }
    out.inner.write_all(&digest)?;
    out.inner.flush()?;
    Ok(len)
}

/// One key of a snapshot: its column family, its key without the shard prefix, its value.
pub type Record = (&'static str, Vec<u8>, Vec<u8>);

/// The records of a snapshot body (without its digest), read one at a time.
pub struct Records<R> {
    r: R,
    done: bool,
}

impl<R: BufRead> Records<R> {
    /// Reads the preamble: magic, version and the applied state.
    pub fn open(mut r: R) -> Result<(pb::AppliedState, Self), StorageError> {
        let mut head = [0u8; 8];
        r.read_exact(&mut head).map_err(|_| corrupt("truncated"))?;
        if &head[..4] != SNAPSHOT_MAGIC {
            return Err(corrupt("not a Meridian shard snapshot"));
        }
        let version = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if version != SNAPSHOT_VERSION {
            return Err(corrupt(format!("unsupported snapshot version {version}")));
        }
        let applied = decode_record("snapshot applied state", &read_frame(&mut r)?)?;
        Ok((applied, Self { r, done: false }))
    }

    /// The next record: its column family, its key without the shard prefix, its value.
    pub fn next_record(&mut self) -> Result<Option<Record>, StorageError> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.r.read_exact(&mut tag).map_err(|_| corrupt("truncated"))?;
        if tag[0] == FRAME_END {
            self.done = true;
            return Ok(None);
        }
        let cf = STATE_CFS.get(usize::from(tag[0])).ok_or_else(|| corrupt("unknown column family"))?;
        let k = read_frame(&mut self.r)?;
        let v = read_frame(&mut self.r)?;
        Ok(Some((cf, k, v)))
    }
}

/// The header of a node's snapshot file: the snapshot's name, then its data from the offset
/// this returns. `write` and `read` are each other's inverse.
pub struct SnapshotFileHeader;

impl SnapshotFileHeader {
    /// The header bytes for `meta`.
    pub fn encode(meta: &pb::SnapshotMetaRecord) -> Vec<u8> {
        let meta = meta.encode_to_vec();
        let mut out = Vec::with_capacity(4 + meta.len());
        out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&meta);
        out
    }

    /// Reads the header at the start of `r`: the record and where the snapshot data starts.
    pub fn read<R: Read>(r: &mut R) -> Result<(pb::SnapshotMetaRecord, u64), StorageError> {
        let meta = read_frame(r).map_err(|_| corrupt("snapshot file header unreadable"))?;
        let record = pb::SnapshotMetaRecord::decode(meta.as_slice())
            .map_err(|e| corrupt(format!("snapshot file header: {e}")))?;
        Ok((record, 4 + meta.len() as u64))
    }
}

fn write_frame<W: Write>(w: &mut W, bytes: &[u8]) -> std::io::Result<()> {
    w.write_all(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_be_bytes())?;
    w.write_all(bytes)
}

fn read_frame<R: Read>(r: &mut R) -> Result<Vec<u8>, StorageError> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len).map_err(|_| corrupt("truncated"))?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(corrupt(format!("a frame of {len} bytes")));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).map_err(|_| corrupt("truncated"))?;
    Ok(buf)
}

/// A writer that hashes and counts what passes through it.
struct Digesting<W> {
    inner: W,
    hash: Sha256,
    bytes: u64,
}

impl<W: Write> Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_longer_than_the_cap_is_refused_before_it_is_allocated() {
        let mut data = Vec::new();
        data.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(read_frame(&mut data.as_slice()).is_err());
    }

    #[test]
    fn the_file_header_reads_back_what_it_wrote() {
        let meta = pb::SnapshotMetaRecord { version: 1, snapshot_id: "3-17-0".into(), ..Default::default() };
        let mut file = SnapshotFileHeader::encode(&meta);
        file.extend_from_slice(b"MRSN");
        let (read, start) = SnapshotFileHeader::read(&mut file.as_slice()).unwrap();
        assert_eq!(read, meta);
        assert_eq!(&file[start as usize..], b"MRSN");
    }
}
