//! [`HistoryWriter`]: appends records to a JSON Lines file; [`read_history`] reads them back.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use super::Record;

/// Why a history could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The file could not be created or opened.
    #[error("open history {path}: {source}")]
    Open {
        /// The history file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line could not be written.
    #[error("append to history {path}: {source}")]
    Write {
        /// The history file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A record could not be encoded (never expected: every field is plain data).
    #[error("encode history record: {source}")]
    Encode {
        /// The underlying error.
        source: serde_json::Error,
    },
    /// The file could not be read.
    #[error("read history {path} line {line}: {source}")]
    Read {
        /// The history file.
        path: PathBuf,
        /// The 1-based line being read.
        line: usize,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line is not a valid record.
    #[error("parse history {path} line {line}: {source}")]
    Parse {
        /// The history file.
        path: PathBuf,
        /// The 1-based line that failed.
        line: usize,
        /// The underlying error.
        source: serde_json::Error,
    },
}

/// Appends [`Record`]s to a history file, one JSON object per line.
///
/// Cloning is cheap (an `Arc`): hand one clone to every workload task. Each record is encoded
/// outside the lock and written with a single `write_all` of the whole line under a
/// `std::sync::Mutex`, so lines from concurrent tasks never interleave. The lock is never held
/// across an `.await` (this type has no async methods) and a write of one short line to an
/// unbuffered file is a single syscall, so it is safe to call from tokio tasks. Lines reach
/// the OS as soon as `append` returns — a harness that crashes loses nothing it recorded — but
/// are not fsynced: the history need not survive a machine crash.
#[derive(Debug, Clone)]
pub struct HistoryWriter {
    path: Arc<PathBuf>,
    file: Arc<Mutex<File>>,
}

impl HistoryWriter {
    /// Creates (or truncates) the history file at `path`.
    pub fn create(path: impl AsRef<Path>) -> Result<Self, HistoryError> {
        let path = path.as_ref().to_path_buf();
        let file = File::create(&path).map_err(|source| HistoryError::Open { path: path.clone(), source })?;
        Ok(Self { path: Arc::new(path), file: Arc::new(Mutex::new(file)) })
    }

    /// Opens the history file at `path` for appending, creating it if needed (e.g. to add the
    /// final reads of a run whose workload wrote the file in another process).
    pub fn open_append(path: impl AsRef<Path>) -> Result<Self, HistoryError> {
        let path = path.as_ref().to_path_buf();
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| HistoryError::Open { path: path.clone(), source })?;
        Ok(Self { path: Arc::new(path), file: Arc::new(Mutex::new(file)) })
    }

    /// The file this writer appends to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record as one line.
    pub fn append(&self, record: &Record) -> Result<(), HistoryError> {
        let mut line = serde_json::to_vec(record).map_err(|source| HistoryError::Encode { source })?;
        line.push(b'\n');
        // A panic elsewhere while holding the lock cannot leave half a line: the line is
        // written by one `write_all`, so the file is still usable.
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(&line)
            .and_then(|()| file.flush())
            .map_err(|source| HistoryError::Write { path: self.path.to_path_buf(), source })
    }
}

/// Reads every record of a history file. Blank lines are skipped; any other line that is not
/// a valid record is an error naming its line number (a checker must not judge half a history).
pub fn read_history(path: impl AsRef<Path>) -> Result<Vec<Record>, HistoryError> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|source| HistoryError::Open { path: path.to_path_buf(), source })?;
    let mut records = Vec::new();
    for (index, line) in BufReader::new(file).lines().enumerate() {
        let line_no = index + 1;
        let line = line.map_err(|source| HistoryError::Read { path: path.to_path_buf(), line: line_no, source })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = serde_json::from_str(&line).map_err(|source| HistoryError::Parse {
            path: path.to_path_buf(),
            line: line_no,
            source,
        })?;
        records.push(record);
    }
    Ok(records)
}
