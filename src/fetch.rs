//! Downloading a dataset from its official home and unpacking it into the layout pneumo reads,
//! `DEST/{train,val,test}/{NORMAL,PNEUMONIA}/`.
//!
//! Two sources are known ([`Remote::kermany`], [`Remote::pneumoniamnist`]); their addresses and
//! checksums, and where those were found, are in `docs/data.md`. [`fetch`]:
//!
//! 1. refuses a destination that already holds something, before any byte is downloaded;
//! 2. downloads into `ARCHIVE.part` with a progress bar, resuming an interrupted transfer with
//!    an HTTP `Range` request (also across runs), retrying a broken connection a few times;
//! 3. checks the published checksum (and size, where one is published). On a mismatch the
//!    bytes are moved aside to `ARCHIVE.part.mismatch-<found>`, nothing else is touched, and
//!    the error names both checksums;
//! 4. unpacks into a hidden staging folder beside `DEST` and renames it into place, so an
//!    interrupted unpack never leaves a half-filled dataset.
//!
//! Proxies are taken from `ALL_PROXY` / `HTTPS_PROXY` / `HTTP_PROXY` and `NO_PROXY`, as curl
//! does; loopback addresses always go direct. TLS is rustls with the Mozilla root
//! certificates compiled in, so no system library is needed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use image::{GrayImage, ImageFormat};
use indicatif::{ProgressBar, ProgressStyle};
use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::data::{self, Label, SPLITS, write_atomic};
use crate::error::{ChecksumMismatch, Error, Result};
use crate::preprocess::MAX_FILE_BYTES;

/// Where Mendeley Data serves the files of Kermany et al., doi:10.17632/rscbjbr9sj.2.
pub const KERMANY_BASE_URL: &str =
    "https://data.mendeley.com/public-files/datasets/rscbjbr9sj/files";

/// The path of `ChestXRay2017.zip` below [`KERMANY_BASE_URL`].
pub const KERMANY_FILE_PATH: &str = "f12eaf6d-6023-432f-acc9-80c9d7393433/file_downloaded";

/// Size of `ChestXRay2017.zip` in bytes (not published by Mendeley; see `docs/data.md`).
pub const KERMANY_SIZE: u64 = 1_235_512_464;

/// SHA-256 of `ChestXRay2017.zip` (not published by Mendeley; see `docs/data.md`).
pub const KERMANY_SHA256: &str = "13efc055629733dbab07877f8b3c9f81097840dbcdaa326a8542322c2281ce36";

/// The Zenodo record of MedMNIST v2 (MedMNIST+ sizes included), which holds PneumoniaMNIST.
pub const ZENODO_BASE_URL: &str = "https://zenodo.org/records/10519652/files";

/// Image sides PneumoniaMNIST is published at, with the MD5 of each `.npz` as listed in
/// MedMNIST's `medmnist/info.py` (version 3.0.2).
pub const PNEUMONIAMNIST_MD5: [(u32, &str); 4] = [
    (28, "28209eda62fecd6e6a2d98b1501bb15f"),
    (64, "8f4eceb4ccffa70c672198ea285246c6"),
    (128, "05b46931834c231683c68f40c47b2971"),
    (224, "d6a3c71de1b945ea11211b03746c1fe1"),
];

/// Environment variable that replaces the base address of every source (for mirrors and tests).
pub const BASE_URL_ENV: &str = "PNEUMO_FETCH_BASE_URL";

/// Name of the provenance file written into a fetched dataset.
pub const SOURCE_FILE: &str = "SOURCE.json";

/// How many times a broken transfer is resumed within one run before giving up.
const ATTEMPTS: u32 = 4;

/// Bytes read from the network or disk at a time.
const CHUNK: usize = 256 * 1024;

/// A published checksum of a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", content = "hex")]
pub enum Checksum {
    /// MD5, lowercase hex.
    #[serde(rename = "MD5")]
    Md5(String),
    /// SHA-256, lowercase hex.
    #[serde(rename = "SHA-256")]
    Sha256(String),
}

impl Checksum {
    /// `MD5` or `SHA-256`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Checksum::Md5(_) => "MD5",
            Checksum::Sha256(_) => "SHA-256",
        }
    }

    /// The expected value, lowercase hex.
    pub fn hex(&self) -> &str {
        match self {
            Checksum::Md5(hex) | Checksum::Sha256(hex) => hex,
        }
    }
}

/// What a downloaded file holds, and so how it is unpacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArchiveKind {
    /// A zip with `.../{train,val,test}/{NORMAL,PNEUMONIA}/*.jpeg` inside (Kermany et al.).
    LayoutZip,
    /// A MedMNIST `.npz`: `{train,val,test}_{images,labels}.npy`, label 1 = pneumonia.
    MedMnistNpz,
}

/// One file to download: where from, what to call it, how to check it, how to unpack it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Remote {
    /// Short name of the source, e.g. `kermany` or `pneumoniamnist-64`.
    pub source: String,
    /// The address to download.
    pub url: String,
    /// File name the download is saved under.
    pub file_name: String,
    /// The published checksum.
    pub checksum: Checksum,
    /// The expected size in bytes, where known.
    pub size: Option<u64>,
    /// How to unpack it.
    pub kind: ArchiveKind,
}

impl Remote {
    /// `ChestXRay2017.zip` of Kermany et al. (Mendeley Data), from `base_url` or
    /// [`KERMANY_BASE_URL`].
    pub fn kermany(base_url: Option<&str>) -> Self {
        let base = base_url.unwrap_or(KERMANY_BASE_URL).trim_end_matches('/');
        Self {
            source: "kermany".into(),
            url: format!("{base}/{KERMANY_FILE_PATH}"),
            file_name: "ChestXRay2017.zip".into(),
            checksum: Checksum::Sha256(KERMANY_SHA256.into()),
            size: Some(KERMANY_SIZE),
            kind: ArchiveKind::LayoutZip,
        }
    }

    /// PneumoniaMNIST at `size`×`size` pixels (28, 64, 128 or 224), from `base_url` or
    /// [`ZENODO_BASE_URL`].
    pub fn pneumoniamnist(size: u32, base_url: Option<&str>) -> Result<Self> {
        let (_, md5) = PNEUMONIAMNIST_MD5
            .iter()
            .find(|(side, _)| *side == size)
            .ok_or_else(|| {
                Error::Config(format!(
                    "PneumoniaMNIST comes in sizes 28, 64, 128 and 224, not {size}"
                ))
            })?;
        let file_name = if size == 28 {
            "pneumoniamnist.npz".to_string()
        } else {
            format!("pneumoniamnist_{size}.npz")
        };
        let base = base_url.unwrap_or(ZENODO_BASE_URL).trim_end_matches('/');
        Ok(Self {
            source: format!("pneumoniamnist-{size}"),
            url: format!("{base}/{file_name}?download=1"),
            file_name,
            checksum: Checksum::Md5(md5.to_string()),
            size: None,
            kind: ArchiveKind::MedMnistNpz,
        })
    }
}

/// What [`fetch`] did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FetchReport {
    /// The source fetched.
    pub source: String,
    /// The address it came from.
    pub url: String,
    /// The downloaded file, kept after unpacking.
    pub archive: PathBuf,
    /// Bytes of the archive.
    pub archive_bytes: u64,
    /// SHA-256 of the archive, computed here.
    pub sha256: String,
    /// The checksum it was verified against.
    pub verified_against: Checksum,
    /// False when a complete, verified archive was already on disk.
    pub downloaded: bool,
    /// Bytes already present from an earlier, interrupted download.
    pub resumed_from: u64,
    /// The dataset folder written.
    pub dest: PathBuf,
    /// Images written per split and class: `(split, normal, pneumonia)`.
    pub images: Vec<(String, usize, usize)>,
}

/// Downloads `remote` into `archive_dir`, verifies it, and unpacks it into `dest`.
///
/// `dest` must not exist or be an empty folder. A complete archive already in `archive_dir`
/// is verified and reused; a `.part` file is resumed.
pub fn fetch(remote: &Remote, dest: &Path, archive_dir: &Path) -> Result<FetchReport> {
    check_destination(dest)?;
    if archive_dir.starts_with(dest) {
        return Err(Error::Config(format!(
            "the archive folder `{}` must not be inside the dataset folder `{}`",
            archive_dir.display(),
            dest.display()
        )));
    }
    std::fs::create_dir_all(archive_dir).map_err(|e| Error::io(archive_dir, e))?;
    let archive = archive_dir.join(&remote.file_name);

    let (downloaded, resumed_from, digests) = if archive.is_file() {
        info!(archive = %archive.display(), "archive already present; verifying it");
        let digests = verify_existing(remote, &archive)?;
        (false, 0, digests)
    } else {
        let part = part_path(&archive);
        let resumed_from = download(remote, &part)?;
        let digests = verify_part(remote, &part)?;
        std::fs::rename(&part, &archive).map_err(|e| Error::io(&archive, e))?;
        (true, resumed_from, digests)
    };

    let archive_bytes = std::fs::metadata(&archive)
        .map_err(|e| Error::io(&archive, e))?
        .len();
    let staging = staging_path(dest);
    if staging.exists() {
        // Left by an interrupted unpack of ours: the name is reserved for it.
        std::fs::remove_dir_all(&staging).map_err(|e| Error::io(&staging, e))?;
    }
    let unpacked = match remote.kind {
        ArchiveKind::LayoutZip => unpack_layout_zip(&archive, &staging),
        ArchiveKind::MedMnistNpz => unpack_npz(&archive, &staging),
    };
    if let Err(e) = unpacked {
        // Only our own staging folder is removed; the archive stays for another try.
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }

    let report = FetchReport {
        source: remote.source.clone(),
        url: remote.url.clone(),
        archive: archive.clone(),
        archive_bytes,
        sha256: digests.sha256,
        verified_against: remote.checksum.clone(),
        downloaded,
        resumed_from,
        dest: dest.to_path_buf(),
        images: count_images(&staging)?,
    };
    let provenance =
        serde_json::to_vec_pretty(&report).map_err(|e| Error::Config(e.to_string()))?;
    write_atomic(&staging.join(SOURCE_FILE), &provenance)?;

    if dest.is_dir() {
        // Checked empty above; `remove_dir` refuses a folder that is not.
        std::fs::remove_dir(dest).map_err(|e| Error::io(dest, e))?;
    }
    std::fs::rename(&staging, dest).map_err(|e| Error::io(dest, e))?;
    info!(dest = %dest.display(), "dataset unpacked");
    Ok(report)
}

/// Refuses a destination that exists and is anything but an empty folder.
fn check_destination(dest: &Path) -> Result<()> {
    if !dest.exists() {
        return Ok(());
    }
    let empty = dest.is_dir()
        && std::fs::read_dir(dest)
            .map_err(|e| Error::io(dest, e))?
            .next()
            .is_none();
    if empty {
        Ok(())
    } else {
        Err(Error::Dataset {
            path: dest.to_path_buf(),
            reason: "already exists and is not an empty folder; nothing was downloaded. \
                     Choose another destination or move it away"
                .into(),
        })
    }
}

/// `ARCHIVE.part`.
fn part_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".part");
    PathBuf::from(name)
}

/// `.DEST.unpacking` beside `DEST`.
fn staging_path(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    dest.with_file_name(format!(".{name}.unpacking"))
}

/// Downloads `remote.url` into `part`, resuming what is already there. Returns the number of
/// bytes that were there before this run.
fn download(remote: &Remote, part: &Path) -> Result<u64> {
    let agent = http_agent(&remote.url);
    let resumed_from = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
    if resumed_from > 0 {
        info!(bytes = resumed_from, "resuming an earlier download");
    }

    let bar = ProgressBar::new(remote.size.unwrap_or(0));
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{wide_bar}] {bytes}/{total_bytes} · {bytes_per_sec} · ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message(format!("downloading {}", remote.file_name));

    let started = Instant::now();
    let mut attempt = 1;
    loop {
        match download_once(&agent, remote, part, &bar) {
            Ok(()) => break,
            Err(Attempt::Fatal(e)) => {
                bar.abandon();
                return Err(e);
            }
            Err(Attempt::Retry(reason)) if attempt < ATTEMPTS => {
                warn!(attempt, %reason, "download failed; trying again");
                std::thread::sleep(Duration::from_millis(250 * u64::from(attempt)));
                attempt += 1;
            }
            Err(Attempt::Retry(reason)) => {
                bar.abandon();
                let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);
                let advice = if have > 0 {
                    format!(
                        "{have} bytes are kept in `{}`: run the same command again to resume",
                        part.display()
                    )
                } else {
                    "check the network, or the proxy in HTTPS_PROXY / HTTP_PROXY".to_string()
                };
                return Err(Error::Download {
                    url: remote.url.clone(),
                    reason: format!("{reason} ({ATTEMPTS} attempts); {advice}"),
                });
            }
        }
    }

    bar.finish_and_clear();
    info!(
        file = %remote.file_name,
        seconds = started.elapsed().as_secs_f64(),
        "download complete"
    );
    Ok(resumed_from)
}

/// Why one attempt at a download stopped.
enum Attempt {
    /// Not worth retrying (an HTTP error status, a local file error).
    Fatal(Error),
    /// The connection failed or broke off: resume.
    Retry(String),
}

/// One HTTP request for the rest of the file, appended to `part`.
fn download_once(
    agent: &ureq::Agent,
    remote: &Remote,
    part: &Path,
    bar: &ProgressBar,
) -> std::result::Result<(), Attempt> {
    let fatal = |reason: String| {
        Attempt::Fatal(Error::Download {
            url: remote.url.clone(),
            reason,
        })
    };
    let have = std::fs::metadata(part).map(|m| m.len()).unwrap_or(0);

    let mut request = agent.get(&remote.url);
    if have > 0 {
        request = request.header("Range", format!("bytes={have}-"));
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(e) => return Err(Attempt::Retry(format!("request failed: {e}"))),
    };

    // Where this response's body starts in the file, and how long the file is.
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (start, total) = match status {
        206 => match header("content-range")
            .as_deref()
            .and_then(parse_content_range)
        {
            Some((start, total)) if start == have => (start, total),
            // A range we did not ask for: start again from the beginning.
            _ => {
                truncate(part).map_err(Attempt::Fatal)?;
                return Err(Attempt::Retry("server sent an unexpected range".into()));
            }
        },
        200 => {
            let length = header("content-length").and_then(|v| v.parse::<u64>().ok());
            (0, length)
        }
        416 if have > 0 && remote.size == Some(have) => return Ok(()),
        416 if have > 0 => {
            // The partial file does not fit the remote one (changed or corrupt): start over.
            truncate(part).map_err(Attempt::Fatal)?;
            return Err(Attempt::Retry(
                "server refused to resume; starting over".into(),
            ));
        }
        _ => {
            let reason = response.status().canonical_reason().unwrap_or("");
            return Err(fatal(format!("server answered HTTP {status} {reason}")));
        }
    };

    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(part)
        .map_err(|e| Attempt::Fatal(Error::io(part, e)))?;
    file.set_len(start)
        .and_then(|_| file.seek(std::io::SeekFrom::Start(start)).map(|_| ()))
        .map_err(|e| Attempt::Fatal(Error::io(part, e)))?;
    let mut file = BufWriter::with_capacity(CHUNK, file);

    if let Some(total) = total.or(remote.size) {
        bar.set_length(total);
    }
    bar.set_position(start);

    let mut body = response.into_body().into_reader();
    let mut buffer = vec![0u8; CHUNK];
    let mut written = start;
    let broke = loop {
        match body.read(&mut buffer) {
            Ok(0) => break None,
            Ok(n) => {
                file.write_all(&buffer[..n])
                    .map_err(|e| Attempt::Fatal(Error::io(part, e)))?;
                written += n as u64;
                bar.set_position(written);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => break Some(e.to_string()),
        }
    };
    file.flush()
        .and_then(|_| file.get_ref().sync_all())
        .map_err(|e| Attempt::Fatal(Error::io(part, e)))?;

    if let Some(reason) = broke {
        return Err(Attempt::Retry(format!(
            "connection broke off after {written} bytes: {reason}"
        )));
    }
    match total {
        Some(total) if written < total => Err(Attempt::Retry(format!(
            "connection closed after {written} of {total} bytes"
        ))),
        _ => Ok(()),
    }
}

/// Empties `part` so the next attempt starts from the beginning.
fn truncate(part: &Path) -> Result<()> {
    File::create(part)
        .map(|_| ())
        .map_err(|e| Error::io(part, e))
}

/// `(first byte, total length)` of a `Content-Range: bytes FIRST-LAST/TOTAL` header; the total
/// may be `*` (unknown).
fn parse_content_range(value: &str) -> Option<(u64, Option<u64>)> {
    let range = value.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = range.split_once('/')?;
    let (first, _) = span.split_once('-')?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    Some((first.trim().parse().ok()?, total))
}

/// An HTTP agent: redirects followed, error statuses returned as responses, proxy from the
/// environment except for loopback addresses.
fn http_agent(url: &str) -> ureq::Agent {
    let loopback = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(is_loopback))
        .unwrap_or(false);
    let proxy = if loopback {
        None
    } else {
        ureq::Proxy::try_from_env()
    };

    let config = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(proxy)
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(120)))
        .user_agent(format!("pneumo/{}", env!("CARGO_PKG_VERSION")))
        .build();
    ureq::Agent::new_with_config(config)
}

/// True for `localhost` and loopback IP addresses.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// The checksums of a file, computed in one pass.
struct Digests {
    /// SHA-256, hex.
    sha256: String,
    /// MD5, hex.
    md5: String,
}

/// Hashes `path` with SHA-256 and MD5, with a progress bar for large files.
fn digest_file(path: &Path) -> Result<Digests> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let length = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let bar = ProgressBar::new(length);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg} [{wide_bar}] {bytes}/{total_bytes} · {bytes_per_sec} · ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message("verifying checksum");

    let mut reader = BufReader::with_capacity(CHUNK, file);
    let mut sha256 = Sha256::new();
    let mut md5 = Md5::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = reader.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        sha256.update(&buffer[..n]);
        md5.update(&buffer[..n]);
        bar.inc(n as u64);
    }
    bar.finish_and_clear();

    Ok(Digests {
        sha256: hex(&sha256.finalize()),
        md5: hex(&md5.finalize()),
    })
}

/// Lowercase hex of bytes.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of `digests` for the algorithm of `checksum`.
fn found_for<'a>(checksum: &Checksum, digests: &'a Digests) -> &'a str {
    match checksum {
        Checksum::Md5(_) => &digests.md5,
        Checksum::Sha256(_) => &digests.sha256,
    }
}

/// Checks a freshly downloaded `part`. On a mismatch the file is moved aside (never deleted)
/// so the next run starts afresh, and the error names both checksums.
fn verify_part(remote: &Remote, part: &Path) -> Result<Digests> {
    let digests = digest_file(part)?;
    let found = found_for(&remote.checksum, &digests);
    if found.eq_ignore_ascii_case(remote.checksum.hex()) {
        return Ok(digests);
    }

    let mut aside = part.as_os_str().to_owned();
    aside.push(format!(".mismatch-{}", &found[..found.len().min(12)]));
    let aside = PathBuf::from(aside);
    std::fs::rename(part, &aside).map_err(|e| Error::io(&aside, e))?;
    Err(mismatch(remote, found, &aside))
}

/// Checks an archive that was already on disk; it is left where it is either way.
fn verify_existing(remote: &Remote, archive: &Path) -> Result<Digests> {
    let digests = digest_file(archive)?;
    let found = found_for(&remote.checksum, &digests);
    if found.eq_ignore_ascii_case(remote.checksum.hex()) {
        Ok(digests)
    } else {
        Err(mismatch(remote, found, archive))
    }
}

/// The error for a checksum mismatch.
fn mismatch(remote: &Remote, found: &str, kept: &Path) -> Error {
    Error::ChecksumMismatch(Box::new(ChecksumMismatch {
        url: remote.url.clone(),
        file: remote.file_name.clone(),
        algorithm: remote.checksum.algorithm().into(),
        expected: remote.checksum.hex().to_string(),
        found: found.to_string(),
        kept: kept.to_path_buf(),
    }))
}

/// Images per split and class under a dataset folder: `(split, normal, pneumonia)`.
fn count_images(root: &Path) -> Result<Vec<(String, usize, usize)>> {
    let mut counts = Vec::new();
    for split in SPLITS {
        let samples = data::discover_split(root, split)?;
        if !samples.is_empty() {
            let (normal, pneumonia) = data::class_counts(&samples);
            counts.push((split.to_string(), normal, pneumonia));
        }
    }
    Ok(counts)
}

/// A progress bar over a count of items.
fn item_bar(length: u64, message: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} · {per_sec} · ETA {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message(message.to_string());
    bar
}

/// Opens a zip archive, with errors that name it.
fn open_zip(archive: &Path) -> Result<zip::ZipArchive<BufReader<File>>> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    zip::ZipArchive::new(BufReader::new(file)).map_err(|e| Error::Archive {
        path: archive.to_path_buf(),
        reason: format!("not a readable zip: {e}"),
    })
}

/// Unpacks every `.../{split}/{CLASS}/{image}` entry of a zip into `out/{split}/{CLASS}/`.
///
/// Entries are matched on their last three path components, so the zip's top folder
/// (`chest_xray/` for Kermany et al.) does not matter. macOS metadata (`__MACOSX/`, `._*`) and
/// anything else is skipped; an image name seen twice (some copies nest the dataset twice)
/// keeps its first copy. Output paths are built from the validated components only, so no
/// entry can write outside `out`.
pub fn unpack_layout_zip(archive: &Path, out: &Path) -> Result<()> {
    let mut zip = open_zip(archive)?;
    let broken = |reason: String| Error::Archive {
        path: archive.to_path_buf(),
        reason,
    };

    let bar = item_bar(zip.len() as u64, "unpacking");
    let (mut written, mut skipped, mut repeated) = (0usize, 0usize, 0usize);
    for index in 0..zip.len() {
        bar.inc(1);
        let mut entry = zip
            .by_index(index)
            .map_err(|e| broken(format!("entry {index}: {e}")))?;
        let Some(target) = layout_target(&entry.enclosed_name(), entry.is_dir()) else {
            skipped += 1;
            continue;
        };
        let path = out.join(&target);
        if path.exists() {
            repeated += 1;
            continue;
        }

        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        }
        let mut file = BufWriter::new(File::create(&path).map_err(|e| Error::io(&path, e))?);
        let copied = std::io::copy(&mut (&mut entry).take(MAX_FILE_BYTES + 1), &mut file)
            .map_err(|e| broken(format!("`{}`: {e}", target.display())))?;
        if copied > MAX_FILE_BYTES {
            return Err(broken(format!(
                "`{}` unpacks to more than {MAX_FILE_BYTES} bytes",
                target.display()
            )));
        }
        file.flush().map_err(|e| Error::io(&path, e))?;
        written += 1;
    }
    bar.finish_and_clear();

    info!(written, skipped, repeated, "zip unpacked");
    if written == 0 {
        return Err(broken(
            "holds no `{train,val,test}/{NORMAL,PNEUMONIA}/` images".into(),
        ));
    }
    Ok(())
}

/// `split/CLASS/file` for a zip entry that is an image in the dataset layout, else `None`.
fn layout_target(enclosed: &Option<PathBuf>, is_dir: bool) -> Option<PathBuf> {
    if is_dir {
        return None;
    }
    let parts: Vec<String> = enclosed
        .as_ref()?
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.len() < 3 || parts.iter().any(|p| p == "__MACOSX") {
        return None;
    }

    let [split, class, file] = &parts[parts.len() - 3..] else {
        return None;
    };
    let known_split = SPLITS.contains(&split.as_str());
    let known_class = Label::ALL.iter().any(|l| l.folder() == class);
    let plain_image = !file.starts_with('.') && data::is_image_file(Path::new(file));
    (known_split && known_class && plain_image).then(|| Path::new(split).join(class).join(file))
}

/// The parsed header of a `.npy` array.
#[derive(Debug, Clone, PartialEq)]
struct NpyHeader {
    /// Data type, e.g. `|u1` or `<i8`.
    descr: String,
    /// True if stored column-major.
    fortran_order: bool,
    /// Dimensions.
    shape: Vec<usize>,
}

impl NpyHeader {
    /// Number of elements.
    fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// Reads the magic, version and header dictionary of a `.npy` stream, leaving `reader` at the
/// first data byte.
fn read_npy_header(reader: &mut impl Read) -> std::result::Result<NpyHeader, String> {
    let mut preamble = [0u8; 8];
    reader
        .read_exact(&mut preamble)
        .map_err(|e| format!("too short for a .npy header: {e}"))?;
    if &preamble[..6] != b"\x93NUMPY" {
        return Err("not a .npy array (bad magic)".into());
    }

    let header_length = match preamble[6] {
        1 => {
            let mut length = [0u8; 2];
            reader.read_exact(&mut length).map_err(|e| e.to_string())?;
            u16::from_le_bytes(length) as usize
        }
        2 | 3 => {
            let mut length = [0u8; 4];
            reader.read_exact(&mut length).map_err(|e| e.to_string())?;
            u32::from_le_bytes(length) as usize
        }
        version => return Err(format!(".npy format version {version} is not supported")),
    };
    if header_length > 1 << 20 {
        return Err(format!(
            ".npy header of {header_length} bytes is implausible"
        ));
    }
    let mut text = vec![0u8; header_length];
    reader.read_exact(&mut text).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&text);

    parse_npy_dict(&text)
}

/// Parses the Python dictionary literal of a `.npy` header.
fn parse_npy_dict(text: &str) -> std::result::Result<NpyHeader, String> {
    let after = |key: &str| -> std::result::Result<&str, String> {
        let at = text
            .find(&format!("'{key}'"))
            .ok_or_else(|| format!(".npy header has no `{key}`: {text}"))?;
        let rest = &text[at + key.len() + 2..];
        let colon = rest
            .find(':')
            .ok_or_else(|| format!(".npy header: no value for `{key}`"))?;
        Ok(rest[colon + 1..].trim_start())
    };

    let descr = after("descr")?;
    let quote = descr
        .chars()
        .next()
        .filter(|c| *c == '\'' || *c == '"')
        .ok_or_else(|| format!(".npy header: `descr` is not a string: {text}"))?;
    let descr = descr[1..]
        .split(quote)
        .next()
        .unwrap_or_default()
        .to_string();

    let fortran_order = after("fortran_order")?.starts_with("True");

    let shape = after("shape")?;
    let inside = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or_else(|| format!(".npy header: `shape` is not a tuple: {text}"))?;
    let shape = inside
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.trim_end_matches('L').parse::<usize>())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| format!(".npy header: bad `shape` ({e}): {text}"))?;

    Ok(NpyHeader {
        descr,
        fortran_order,
        shape,
    })
}

/// Reads a whole label array (any integer type of 1, 2, 4 or 8 bytes, little-endian) as
/// classes: 0 = normal, 1 = pneumonia.
fn read_labels(reader: &mut impl Read) -> std::result::Result<Vec<Label>, String> {
    let header = read_npy_header(reader)?;
    let width = match header.descr.trim_start_matches(['<', '|', '=']) {
        "u1" | "i1" | "b1" => 1,
        "u2" | "i2" => 2,
        "u4" | "i4" => 4,
        "u8" | "i8" => 8,
        other => return Err(format!("labels of type `{other}` are not supported")),
    };
    if header.descr.starts_with('>') {
        return Err("big-endian labels are not supported".into());
    }
    let count = header.shape.first().copied().unwrap_or(0);
    if header.elements() != count {
        return Err(format!(
            "labels have shape {:?}; one label per image was expected",
            header.shape
        ));
    }

    let mut bytes = vec![0u8; count * width];
    reader
        .read_exact(&mut bytes)
        .map_err(|e| format!("labels end early: {e}"))?;
    bytes
        .chunks_exact(width)
        .enumerate()
        .map(|(index, raw)| {
            let mut wide = [0u8; 8];
            wide[..width].copy_from_slice(raw);
            match u64::from_le_bytes(wide) {
                0 => Ok(Label::Normal),
                1 => Ok(Label::Pneumonia),
                other => Err(format!("label {index} is {other}; only 0 and 1 are known")),
            }
        })
        .collect()
}

/// Unpacks a MedMNIST `.npz` into `out/{train,val,test}/{NORMAL,PNEUMONIA}/`, one PNG per image
/// named `pmnist-<split>-<index>.png` (the arrays say nothing about which child an image is
/// of, and the names claim nothing either).
pub fn unpack_npz(archive: &Path, out: &Path) -> Result<()> {
    let mut zip = open_zip(archive)?;
    let broken = |reason: String| Error::Archive {
        path: archive.to_path_buf(),
        reason,
    };

    let mut written = 0;
    for split in SPLITS {
        let labels_name = format!("{split}_labels.npy");
        let images_name = format!("{split}_images.npy");
        let labels = {
            let entry = zip
                .by_name(&labels_name)
                .map_err(|e| broken(format!("`{labels_name}`: {e}")))?;
            read_labels(&mut BufReader::new(entry))
                .map_err(|e| broken(format!("`{labels_name}`: {e}")))?
        };

        let entry = zip
            .by_name(&images_name)
            .map_err(|e| broken(format!("`{images_name}`: {e}")))?;
        let mut images = BufReader::with_capacity(CHUNK, entry);
        let header =
            read_npy_header(&mut images).map_err(|e| broken(format!("`{images_name}`: {e}")))?;
        let (height, width) = image_shape(&header, labels.len())
            .map_err(|e| broken(format!("`{images_name}`: {e}")))?;

        for label in Label::ALL {
            let dir = out.join(split).join(label.folder());
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        }
        let bar = item_bar(labels.len() as u64, &format!("writing {split} images"));
        let mut pixels = vec![0u8; height * width];
        for (index, label) in labels.iter().enumerate() {
            images
                .read_exact(&mut pixels)
                .map_err(|e| broken(format!("`{images_name}` ends at image {index}: {e}")))?;
            let image = GrayImage::from_raw(width as u32, height as u32, pixels.clone())
                .ok_or_else(|| broken(format!("`{images_name}`: image {index} has no pixels")))?;
            let path = out
                .join(split)
                .join(label.folder())
                .join(format!("pmnist-{split}-{index:06}.png"));
            image
                .save_with_format(&path, ImageFormat::Png)
                .map_err(|e| Error::image(path.display().to_string(), e.to_string()))?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        written += labels.len();
    }

    info!(written, "npz unpacked");
    Ok(())
}

/// `(height, width)` of a stack of 8-bit grayscale images with `count` images.
fn image_shape(header: &NpyHeader, count: usize) -> std::result::Result<(usize, usize), String> {
    if !matches!(header.descr.as_str(), "|u1" | "<u1" | "u1" | "=u1") {
        return Err(format!(
            "images of type `{}`; 8-bit unsigned was expected",
            header.descr
        ));
    }
    if header.fortran_order {
        return Err("column-major (Fortran-order) images are not supported".into());
    }
    let (n, height, width) = match header.shape.as_slice() {
        [n, h, w] | [n, h, w, 1] => (*n, *h, *w),
        other => {
            return Err(format!(
                "shape {other:?}; (images, height, width) of grayscale was expected"
            ));
        }
    };
    if n != count {
        return Err(format!("{n} images but {count} labels"));
    }
    if height == 0 || width == 0 || height > 4096 || width > 4096 {
        return Err(format!("implausible image size {width}x{height}"));
    }
    Ok((height, width))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, Cursor};
    use std::net::{TcpListener, TcpStream};
    use std::sync::{Arc, Mutex};

    /// How the test server answers.
    #[derive(Clone)]
    struct Script {
        /// The file served.
        body: Vec<u8>,
        /// Status for every request instead of the file (e.g. 404, 500).
        status: Option<u16>,
        /// On the first request only, close the connection after this many body bytes.
        cut_first_at: Option<usize>,
    }

    /// What the test server was asked: `(path, Range header)` per request.
    type Log = Arc<Mutex<Vec<(String, Option<String>)>>>;

    /// A one-file HTTP/1.1 server on a loopback port that honours `Range: bytes=N-`. It serves
    /// at most `max_requests` requests and then stops, so it never outlives its test for long.
    fn serve(script: Script, max_requests: usize) -> (String, Log) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}/files", listener.local_addr().unwrap());
        let log: Log = Arc::default();
        let seen = log.clone();

        std::thread::spawn(move || {
            for (number, stream) in listener.incoming().take(max_requests).enumerate() {
                let Ok(stream) = stream else { continue };
                let _ = answer(stream, &script, number == 0, &seen);
            }
        });
        (base, log)
    }

    /// Reads one request and writes the scripted answer.
    fn answer(
        mut stream: TcpStream,
        script: &Script,
        first: bool,
        log: &Log,
    ) -> std::io::Result<()> {
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut reader = std::io::BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("")
            .to_string();
        let mut range = None;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line)?;
            if line.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("range")
            {
                range = Some(value.trim().to_string());
            }
        }
        log.lock().unwrap().push((path, range.clone()));

        if let Some(status) = script.status {
            let head = format!(
                "HTTP/1.1 {status} Oops\r\nContent-Length: 4\r\nConnection: close\r\n\r\noops"
            );
            return stream.write_all(head.as_bytes());
        }

        let total = script.body.len();
        let start = range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.trim_end_matches('-').parse::<usize>().ok());
        let (head, body) = match start {
            Some(start) if start >= total => (
                format!(
                    "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{total}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                ),
                &script.body[0..0],
            ),
            Some(start) => (
                format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {start}-{}/{total}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    total - 1,
                    total - start
                ),
                &script.body[start..],
            ),
            None => (
                format!("HTTP/1.1 200 OK\r\nContent-Length: {total}\r\nConnection: close\r\n\r\n"),
                &script.body[..],
            ),
        };
        stream.write_all(head.as_bytes())?;
        match script.cut_first_at {
            Some(cut) if first => {
                stream.write_all(&body[..cut.min(body.len())])?;
                stream.flush()?;
                stream.shutdown(std::net::Shutdown::Both)
            }
            _ => stream.write_all(body),
        }
    }

    /// A PNG of a horizontal ramp, `seed` setting its offset.
    fn png(seed: u8) -> Vec<u8> {
        let image =
            GrayImage::from_fn(24, 20, |x, _| image::Luma([seed.wrapping_add(x as u8 * 9)]));
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    /// A zip in the Kermany layout, with the clutter real copies have.
    fn kermany_zip() -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        let mut add = |name: &str, bytes: &[u8]| {
            zip.start_file(name, options).unwrap();
            zip.write_all(bytes).unwrap();
        };
        add("chest_xray/train/NORMAL/IM-0001-0001.jpeg", &png(1));
        add("chest_xray/train/PNEUMONIA/person1_virus_1.jpeg", &png(2));
        add(
            "chest_xray/train/PNEUMONIA/person2_bacteria_3.jpeg",
            &png(3),
        );
        add("chest_xray/test/NORMAL/IM-0009-0001.jpeg", &png(4));
        add("chest_xray/test/PNEUMONIA/person9_virus_9.jpeg", &png(5));
        add(
            "__MACOSX/chest_xray/train/NORMAL/._IM-0001-0001.jpeg",
            b"resource fork",
        );
        add("chest_xray/train/NORMAL/.DS_Store", b"finder");
        add("chest_xray/README.txt", b"hello");
        add("../escape/train/NORMAL/evil.jpeg", &png(6));
        zip.finish().unwrap().into_inner()
    }

    /// A `.npy` array of bytes with the given dtype and shape.
    fn npy(descr: &str, shape: &[usize], data: &[u8]) -> Vec<u8> {
        let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
        let shape = if dims.len() == 1 {
            format!("({},)", dims[0])
        } else {
            format!("({})", dims.join(", "))
        };
        let mut dict =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((dict.len() as u16).to_le_bytes());
        bytes.extend(dict.as_bytes());
        bytes.extend(data);
        bytes
    }

    /// A small MedMNIST-style `.npz`: 3 train, 2 val, 2 test images of 8×6.
    fn medmnist_npz() -> Vec<u8> {
        let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
        let options = zip::write::SimpleFileOptions::default();
        for (split, labels) in [
            ("train", vec![0u8, 1, 1]),
            ("val", vec![1, 0]),
            ("test", vec![0, 0]),
        ] {
            let n = labels.len();
            let pixels: Vec<u8> = (0..n * 8 * 6).map(|i| (i * 7 % 251) as u8).collect();
            zip.start_file(format!("{split}_images.npy"), options)
                .unwrap();
            zip.write_all(&npy("|u1", &[n, 8, 6], &pixels)).unwrap();
            zip.start_file(format!("{split}_labels.npy"), options)
                .unwrap();
            zip.write_all(&npy("|u1", &[n, 1], &labels)).unwrap();
        }
        zip.finish().unwrap().into_inner()
    }

    fn remote(base: &str, body: &[u8], kind: ArchiveKind) -> Remote {
        Remote {
            source: "test".into(),
            url: format!("{base}/archive"),
            file_name: "archive.bin".into(),
            checksum: Checksum::Sha256(hex(&Sha256::digest(body))),
            size: Some(body.len() as u64),
            kind,
        }
    }

    fn files_under(dir: &Path) -> Vec<String> {
        let mut found = Vec::new();
        for split in SPLITS {
            for label in Label::ALL {
                if let Ok(entries) = std::fs::read_dir(dir.join(split).join(label.folder())) {
                    for entry in entries {
                        found.push(format!(
                            "{split}/{}/{}",
                            label.folder(),
                            entry.unwrap().file_name().to_string_lossy()
                        ));
                    }
                }
            }
        }
        found.sort();
        found
    }

    #[test]
    fn kermany_zip_downloads_verifies_and_unpacks_into_the_layout() {
        let body = kermany_zip();
        let (base, log) = serve(
            Script {
                body: body.clone(),
                status: None,
                cut_first_at: None,
            },
            4,
        );
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("chest_xray");

        let report = fetch(
            &remote(&base, &body, ArchiveKind::LayoutZip),
            &dest,
            work.path(),
        )
        .unwrap();

        assert_eq!(
            files_under(&dest),
            vec![
                "test/NORMAL/IM-0009-0001.jpeg",
                "test/PNEUMONIA/person9_virus_9.jpeg",
                "train/NORMAL/IM-0001-0001.jpeg",
                "train/PNEUMONIA/person1_virus_1.jpeg",
                "train/PNEUMONIA/person2_bacteria_3.jpeg",
            ]
        );
        assert_eq!(
            std::fs::read(dest.join("train/NORMAL/IM-0001-0001.jpeg")).unwrap(),
            png(1)
        );
        assert!(report.downloaded);
        assert_eq!(
            report.images,
            vec![("train".into(), 1, 2), ("test".into(), 1, 1)]
        );
        assert_eq!(
            std::fs::read(work.path().join("archive.bin")).unwrap(),
            body
        );
        assert!(dest.join(SOURCE_FILE).is_file());
        assert!(!work.path().join("escape").exists());
        assert_eq!(log.lock().unwrap().len(), 1);
        assert_eq!(log.lock().unwrap()[0], ("/files/archive".to_string(), None));
    }

    #[test]
    fn medmnist_npz_becomes_pngs_without_child_names() {
        let body = medmnist_npz();
        let (base, _) = serve(
            Script {
                body: body.clone(),
                status: None,
                cut_first_at: None,
            },
            4,
        );
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("pmnist");

        let mut source = remote(&base, &body, ArchiveKind::MedMnistNpz);
        source.checksum = Checksum::Md5(hex(&Md5::digest(&body)));
        source.size = None;
        let report = fetch(&source, &dest, work.path()).unwrap();

        assert_eq!(
            files_under(&dest),
            vec![
                "test/NORMAL/pmnist-test-000000.png",
                "test/NORMAL/pmnist-test-000001.png",
                "train/NORMAL/pmnist-train-000000.png",
                "train/PNEUMONIA/pmnist-train-000001.png",
                "train/PNEUMONIA/pmnist-train-000002.png",
                "val/NORMAL/pmnist-val-000001.png",
                "val/PNEUMONIA/pmnist-val-000000.png",
            ]
        );
        assert_eq!(report.images[0], ("train".into(), 1, 2));

        // The second training image is the second 8x6 block of the array.
        let image = image::open(dest.join("train/PNEUMONIA/pmnist-train-000001.png"))
            .unwrap()
            .to_luma8();
        assert_eq!(image.dimensions(), (6, 8));
        assert_eq!(image.as_raw()[0], (48 * 7 % 251) as u8);
        assert_eq!(data::child_of("pmnist-train-000001.png"), None);
    }

    #[test]
    fn a_connection_cut_mid_body_is_resumed_with_a_range_request() {
        let body = kermany_zip();
        let cut = body.len() / 3;
        let (base, log) = serve(
            Script {
                body: body.clone(),
                status: None,
                cut_first_at: Some(cut),
            },
            4,
        );
        let work = tempfile::tempdir().unwrap();

        let report = fetch(
            &remote(&base, &body, ArchiveKind::LayoutZip),
            &work.path().join("d"),
            work.path(),
        )
        .unwrap();

        let requests = log.lock().unwrap().clone();
        assert_eq!(requests.len(), 2, "{requests:?}");
        assert_eq!(requests[0].1, None);
        assert_eq!(
            requests[1].1.as_deref(),
            Some(format!("bytes={cut}-").as_str())
        );
        assert_eq!(std::fs::read(&report.archive).unwrap(), body);
        assert_eq!(files_under(&work.path().join("d")).len(), 5);
    }

    #[test]
    fn a_partial_file_from_an_earlier_run_is_resumed() {
        let body = kermany_zip();
        let (base, log) = serve(
            Script {
                body: body.clone(),
                status: None,
                cut_first_at: None,
            },
            4,
        );
        let work = tempfile::tempdir().unwrap();
        let have = body.len() / 2;
        std::fs::write(work.path().join("archive.bin.part"), &body[..have]).unwrap();

        let report = fetch(
            &remote(&base, &body, ArchiveKind::LayoutZip),
            &work.path().join("d"),
            work.path(),
        )
        .unwrap();

        assert_eq!(report.resumed_from, have as u64);
        assert_eq!(
            log.lock().unwrap()[0].1.as_deref(),
            Some(format!("bytes={have}-").as_str())
        );
        assert_eq!(std::fs::read(&report.archive).unwrap(), body);
        assert!(!work.path().join("archive.bin.part").exists());
    }

    #[test]
    fn a_checksum_mismatch_keeps_the_bytes_aside_and_touches_nothing_else() {
        let body = kermany_zip();
        let (base, _) = serve(
            Script {
                body: body.clone(),
                status: None,
                cut_first_at: None,
            },
            4,
        );
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("chest_xray");
        std::fs::create_dir(&dest).unwrap();
        std::fs::write(work.path().join("notes.txt"), b"mine").unwrap();

        let mut source = remote(&base, &body, ArchiveKind::LayoutZip);
        source.checksum = Checksum::Sha256("0".repeat(64));
        let err = fetch(&source, &dest, work.path()).unwrap_err();

        let message = err.to_string();
        let found = hex(&Sha256::digest(&body));
        assert!(message.contains(&"0".repeat(64)), "{message}");
        assert!(message.contains(&found), "{message}");
        assert!(
            message.contains("SHA-256") && message.contains("/files/archive"),
            "{message}"
        );
        let aside = work
            .path()
            .join(format!("archive.bin.part.mismatch-{}", &found[..12]));
        assert_eq!(std::fs::read(&aside).unwrap(), body);
        assert!(message.contains(&aside.display().to_string()), "{message}");

        assert_eq!(
            std::fs::read(work.path().join("notes.txt")).unwrap(),
            b"mine"
        );
        assert!(dest.is_dir() && std::fs::read_dir(&dest).unwrap().next().is_none());
        assert!(!work.path().join("archive.bin").exists());
        assert!(!work.path().join(".chest_xray.unpacking").exists());
    }

    #[test]
    fn an_existing_archive_with_the_wrong_checksum_is_left_alone() {
        let work = tempfile::tempdir().unwrap();
        std::fs::write(work.path().join("archive.bin"), b"someone's file").unwrap();
        let source = remote("http://127.0.0.1:9", b"other bytes", ArchiveKind::LayoutZip);

        let err = fetch(&source, &work.path().join("d"), work.path())
            .unwrap_err()
            .to_string();

        assert!(err.contains("was expected"), "{err}");
        assert_eq!(
            std::fs::read(work.path().join("archive.bin")).unwrap(),
            b"someone's file"
        );
    }

    #[test]
    fn server_errors_name_the_url_and_status() {
        for status in [404, 500] {
            let (base, _) = serve(
                Script {
                    body: Vec::new(),
                    status: Some(status),
                    cut_first_at: None,
                },
                4,
            );
            let work = tempfile::tempdir().unwrap();
            let source = remote(&base, b"x", ArchiveKind::LayoutZip);

            let err = fetch(&source, &work.path().join("d"), work.path())
                .unwrap_err()
                .to_string();

            assert!(err.contains(&source.url), "{err}");
            assert!(err.contains(&format!("HTTP {status}")), "{err}");
            assert!(!work.path().join("d").exists());
        }
    }

    #[test]
    fn a_destination_with_content_is_refused_before_downloading() {
        let work = tempfile::tempdir().unwrap();
        let dest = work.path().join("data");
        std::fs::create_dir_all(dest.join("train")).unwrap();
        let source = remote("http://127.0.0.1:9", b"x", ArchiveKind::LayoutZip);

        let err = fetch(&source, &dest, work.path()).unwrap_err().to_string();

        assert!(err.contains("not an empty folder"), "{err}");
        assert!(dest.join("train").is_dir());
        assert!(!work.path().join("archive.bin.part").exists());

        let empty = work.path().join("empty");
        let err = fetch(&source, &empty, &empty.join("downloads"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not be inside"), "{err}");
    }

    #[test]
    fn npy_headers_parse() {
        let header =
            parse_npy_dict("{'descr': '|u1', 'fortran_order': False, 'shape': (4708, 28, 28), }")
                .unwrap();
        assert_eq!(header.descr, "|u1");
        assert!(!header.fortran_order);
        assert_eq!(header.shape, vec![4708, 28, 28]);

        let labels = npy(
            "<i8",
            &[3, 1],
            &[
                1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
        assert_eq!(
            read_labels(&mut Cursor::new(labels)).unwrap(),
            vec![Label::Pneumonia, Label::Normal, Label::Pneumonia]
        );
        let bad = npy("|u1", &[2], &[0, 7]);
        assert!(
            read_labels(&mut Cursor::new(bad))
                .unwrap_err()
                .contains("is 7")
        );
        assert!(read_npy_header(&mut Cursor::new(b"PK\x03\x04....".to_vec())).is_err());
    }

    #[test]
    fn content_range_and_sources() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, None)));
        assert_eq!(parse_content_range("items 1-2/3"), None);

        let mnist = Remote::pneumoniamnist(64, Some("http://mirror.example/x/")).unwrap();
        assert_eq!(
            mnist.url,
            "http://mirror.example/x/pneumoniamnist_64.npz?download=1"
        );
        assert_eq!(
            mnist.checksum,
            Checksum::Md5("8f4eceb4ccffa70c672198ea285246c6".into())
        );
        assert_eq!(
            Remote::pneumoniamnist(28, None).unwrap().file_name,
            "pneumoniamnist.npz"
        );
        assert!(Remote::pneumoniamnist(32, None).is_err());
        assert!(
            Remote::kermany(None)
                .url
                .starts_with("https://data.mendeley.com/")
        );
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("LOCALHOST"));
        assert!(!is_loopback("zenodo.org"));
    }
}
