//! A shard's snapshot as openraft reads and writes it: a file, from an offset.
//!
//! A node's snapshot file starts with a header naming the snapshot
//! ([`meridian_storage::snapshot::SnapshotFileHeader`]); openraft sees only what follows it,
//! position 0 being the first byte of the snapshot. It reads the snapshot in chunks to send it
//! and writes a received one chunk by chunk, so neither side holds a snapshot in memory.

use std::io::SeekFrom;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    /// Where the snapshot starts in the file.
    base: u64,
}

impl SnapshotFile {
    /// The snapshot that starts at `base` in `file`, positioned at its start.
    pub async fn at(mut file: tokio::fs::File, base: u64) -> std::io::Result<Self> {
        use tokio::io::AsyncSeekExt as _;
        file.seek(SeekFrom::Start(base)).await?;
        Ok(Self { file, base })
    }

    /// The file, with everything written to it handed to the OS, and where the snapshot starts.
    pub async fn into_std(mut self) -> std::io::Result<(std::fs::File, u64)> {
        use tokio::io::AsyncWriteExt as _;
        self.file.flush().await?;
        Ok((self.file.into_std().await, self.base))
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.file).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(mut self: Pin<&mut Self>, position: SeekFrom) -> std::io::Result<()> {
        let position = match position {
            SeekFrom::Start(n) => SeekFrom::Start(
                n.checked_add(self.base)
                    .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek past the end"))?,
            ),
            relative => relative,
        };
        Pin::new(&mut self.file).start_seek(position)
    }

    fn poll_complete(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        let base = self.base;
        Pin::new(&mut self.file).poll_complete(cx).map(|r| {
            r.and_then(|at| {
                at.checked_sub(base).ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the snapshot's start")
                })
            })
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};

    use super::*;

    #[tokio::test]
    async fn positions_count_from_the_snapshot_s_start_not_the_file_s() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, b"HEADERsnapshot").unwrap();
        let file = tokio::fs::OpenOptions::new().read(true).write(true).open(&path).await.unwrap();
        let mut s = SnapshotFile::at(file, 6).await.unwrap();
        assert_eq!(s.seek(SeekFrom::End(0)).await.unwrap(), 8, "the length is the snapshot's");
        assert_eq!(s.seek(SeekFrom::Start(4)).await.unwrap(), 4);
        let mut tail = String::new();
        s.read_to_string(&mut tail).await.unwrap();
        assert_eq!(tail, "shot");
        s.seek(SeekFrom::Start(0)).await.unwrap();
        s.write_all(b"S").await.unwrap();
        let (_, base) = s.into_std().await.unwrap();
        assert_eq!(base, 6);
        assert_eq!(std::fs::read(&path).unwrap(), b"HEADERSnapshot", "writes land after the header");
    }
}
