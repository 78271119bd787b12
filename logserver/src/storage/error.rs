//! The storage engine's error type. Every error names what a caller or an operator needs to act on:
//! the file and position for I/O and corruption, the valid range for an out-of-range read.

use std::path::PathBuf;

/// Errors of the storage engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error on `path`.
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes at `position` of `path` fail their checks (CRC, magic, framing). Never served.
    #[error("corrupt log file {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },
    /// `offset` is not in the log, which holds `[first, next)`.
    #[error("offset {offset} is out of range: the log holds [{first}, {next})")]
    OutOfRange { offset: u64, first: u64, next: u64 },
    /// An entry's payload exceeds the largest size the format can frame.
    #[error("entry payload of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: u64, max: u64 },
    /// Another `Log` (in this or another process) holds the directory's lock file.
    #[error("log directory is in use: {path} is locked by another process or Log")]
    Locked { path: PathBuf },
    /// A [`LogConfig`](super::LogConfig) field is unusable.
    #[error("invalid log config field `{field}`: {reason}")]
    Config { field: &'static str, reason: String },
}

/// Result with the storage [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A corruption error at `position` of `path`.
    pub(crate) fn corrupt(
        path: impl Into<PathBuf>,
        position: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corrupt {
            path: path.into(),
            position,
            reason: reason.into(),
        }
    }
}
