//! Storage failures. Every one of them is fatal for the replica that meets it: the node stops
//! rather than diverge.

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("decode {what}: {source}")]
    Decode { what: &'static str, source: prost::DecodeError },
    #[error("corrupt {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("the write-ahead log sync thread has stopped")]
    SyncStopped,
}

impl StorageError {
    pub fn corrupt(what: &'static str, detail: impl Into<String>) -> Self {
        StorageError::Corrupt { what, detail: detail.into() }
    }
}

/// Decodes a durable record, naming it in the error.
pub fn decode<M: prost::Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M, StorageError> {
    M::decode(bytes).map_err(|source| StorageError::Decode { what, source })
}
