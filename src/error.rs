//! The library's error type: every failure names the input it concerns and why it failed.

use std::path::PathBuf;

/// Everything that can go wrong inside the pneumo library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or folder could not be read or written.
    #[error("`{path}`: {source}")]
    Io {
        /// The file or folder concerned.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },

    /// An image could not be decoded or is not acceptable as input.
    #[error("`{input}`: {reason}")]
    Image {
        /// The image concerned (a path, or a description such as "upload").
        input: String,
        /// Why it was rejected.
        reason: String,
    },

    /// A dataset folder does not have the expected layout or content.
    #[error("dataset `{path}`: {reason}")]
    Dataset {
        /// The dataset root or sub-folder concerned.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },

    /// A model bundle is missing, malformed, or does not match this build of pneumo.
    #[error("model bundle `{path}`: {reason}")]
    Bundle {
        /// The bundle folder, or `<built-in>` for the compiled-in default.
        path: String,
        /// What was wrong with it.
        reason: String,
    },

    /// Metrics cannot be computed from the given scores and labels.
    #[error("metrics: {0}")]
    Metrics(String),

    /// A configuration value is out of range or inconsistent.
    #[error("configuration: {0}")]
    Config(String),

    /// A plot could not be drawn or encoded.
    #[error("plot `{name}`: {reason}")]
    Plot {
        /// The plot concerned.
        name: String,
        /// What went wrong.
        reason: String,
    },

    /// Training stopped because of an unrecoverable condition.
    #[error("training: {0}")]
    Training(String),

    /// A download failed: the server could not be reached, answered with an error, or the
    /// transfer broke off.
    #[error("download of `{url}`: {reason}")]
    Download {
        /// The address requested.
        url: String,
        /// What went wrong.
        reason: String,
    },

    /// A downloaded file does not have the published checksum.
    #[error(transparent)]
    ChecksumMismatch(Box<ChecksumMismatch>),

    /// A downloaded archive cannot be unpacked into the dataset layout.
    #[error("archive `{path}`: {reason}")]
    Archive {
        /// The archive.
        path: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// The details of [`Error::ChecksumMismatch`].
#[derive(Debug, thiserror::Error)]
#[error(
    "`{file}` from `{url}` has {algorithm} {found}, but {expected} was expected; the file was \
     kept, unused, at `{kept}`"
)]
pub struct ChecksumMismatch {
    /// The address it came from.
    pub url: String,
    /// The file name of the download.
    pub file: String,
    /// `MD5` or `SHA-256`.
    pub algorithm: String,
    /// The published checksum.
    pub expected: String,
    /// The checksum of the bytes received.
    pub found: String,
    /// Where the mismatching bytes are now.
    pub kept: PathBuf,
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// An image error for `input` with a human-readable reason.
    pub fn image(input: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Image {
            input: input.into(),
            reason: reason.into(),
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
