//! A dataset audit: what is in a folder laid out as `{train,val,test}/{NORMAL,PNEUMONIA}`, and
//! what in it could make an evaluation dishonest.
//!
//! [`audit`] reads every image once (in parallel) and reports:
//!
//! - images per split and class, and children per split;
//! - child identifiers found in more than one split. Child numbers restart in each split folder
//!   of the Kermany et al. dataset, so `person12` in `train/` and `person12` in `test/` are the
//!   same identifier in two splits, possibly but not certainly the same child;
//! - exact duplicates (identical file bytes, by SHA-256);
//! - near-duplicates, by a 256-bit DCT perceptual hash ([`PerceptualHash`]) compared with the
//!   Hamming distance ([`AuditConfig::max_distance`], 16 by default);
//! - image sizes (min / median / max), colour modes and file formats, read from the headers;
//! - files that cannot be read or decoded, with the reason.
//!
//! ```no_run
//! # fn main() -> pneumo::Result<()> {
//! let report = pneumo::audit::audit("data/chest_xray".as_ref(), &Default::default())?;
//! print!("{}", report.render_table());
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Cursor;
use std::path::Path;
use std::time::Instant;

use image::{ColorType, ImageDecoder, ImageFormat, ImageReader, Limits};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::info;

use crate::data::{self, Label, SPLITS, Sample};
use crate::error::{Error, Result};
use crate::preprocess::{self, GrayImage, MAX_DECODE_BYTES, MAX_SIDE};
use crate::training::relative_name;

/// Side of the square thumbnail the perceptual hash is computed from.
const HASH_THUMBNAIL: u32 = 64;

/// Side of the block of lowest DCT frequencies whose signs (against their median) form the hash.
const HASH_BLOCK: usize = 16;

/// Bits in a [`PerceptualHash`].
pub const HASH_BITS: u32 = (HASH_BLOCK * HASH_BLOCK) as u32;

/// What the perceptual hash is, for reports.
pub const HASH_DESCRIPTION: &str = "256-bit DCT perceptual hash: grayscale squashed to 64x64 \
(triangle filter), 2-D DCT-II, the 16x16 lowest frequencies, one bit per coefficient above \
their median";

/// Shown wherever identifiers shared between splits are listed.
pub const SHARED_IDENTIFIER_NOTE: &str = "child numbers restart in each split folder of this \
dataset, so the same identifier in two splits is possibly the same child, not certainly";

/// Settings of an audit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditConfig {
    /// Largest Hamming distance (of 256 bits) between perceptual hashes that counts as a
    /// near-duplicate. Default 16. Measured on the 5,232 Kermany training and validation
    /// images: a JPEG re-encode at quality 60, a brightness or contrast change, or a halving
    /// and re-enlarging of an image moved its hash by at most 8 bits, while the closest two
    /// different radiographs were 34 bits apart. 16 sits between the two with a margin on
    /// both sides (`docs/data.md` has the numbers).
    pub max_distance: u32,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self { max_distance: 16 }
    }
}

/// Everything [`audit`] found; serialises to the `--json` output.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditReport {
    /// The dataset folder audited.
    pub root: String,
    /// Image files found (readable or not).
    pub images: usize,
    /// Counts per official split folder, in the order train, val, test.
    pub splits: Vec<SplitCounts>,
    /// Child identifiers that occur in more than one split folder.
    pub shared_identifiers: SharedIdentifiers,
    /// Groups of files with identical bytes.
    pub exact_duplicates: Vec<DuplicateGroup>,
    /// Pairs of different files whose perceptual hashes are close.
    pub near_duplicates: NearDuplicates,
    /// Width and height over the images whose header could be read; `None` if there were none.
    pub sizes: Option<SizeStats>,
    /// Images per colour mode of the file as stored (before any conversion).
    pub modes: BTreeMap<String, usize>,
    /// Images per file format, as detected from the content (not the extension).
    pub formats: BTreeMap<String, usize>,
    /// Files that could not be read or decoded.
    pub unreadable: Vec<Unreadable>,
}

/// Image, class and child counts of one split folder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitCounts {
    /// `train`, `val` or `test`.
    pub split: String,
    /// Whether the split folder exists.
    pub present: bool,
    /// Images under `NORMAL/`.
    pub normal: usize,
    /// Images under `PNEUMONIA/`.
    pub pneumonia: usize,
    /// Distinct children (by file-name identifier).
    pub children: usize,
    /// Most images any one child has in this split.
    pub max_images_per_child: usize,
}

/// Identifiers found in more than one split, with the caveat that goes with them.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedIdentifiers {
    /// Why a shared identifier is only possibly the same child.
    pub note: String,
    /// Each shared identifier and the splits it is in, sorted by identifier.
    pub identifiers: Vec<SharedIdentifier>,
}

/// A child identifier seen in several split folders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SharedIdentifier {
    /// The identifier as taken from file names, e.g. `person12` or `IM-115`.
    pub identifier: String,
    /// The split folders it occurs in.
    pub splits: Vec<String>,
}

/// Files whose bytes are identical.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DuplicateGroup {
    /// SHA-256 of the bytes, in hex.
    pub sha256: String,
    /// The files, as `split/CLASS/file`.
    pub images: Vec<String>,
    /// True if the files are in more than one split folder.
    pub across_splits: bool,
    /// True if the files carry different labels.
    pub labels_differ: bool,
}

/// The near-duplicate search and what it found.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NearDuplicates {
    /// How images were hashed.
    pub hash: String,
    /// Largest Hamming distance counted as a near-duplicate.
    pub max_distance: u32,
    /// How many pairs are of each [`PairRelation`].
    pub by_relation: BTreeMap<PairRelation, usize>,
    /// Pairs whose two images carry different labels.
    pub labels_differ: usize,
    /// Every pair, closest first. Byte-identical pairs are left out (they are exact duplicates).
    pub pairs: Vec<NearPair>,
    /// The two closest images whose bytes differ, whatever their distance: how far the
    /// threshold is from the nearest pair it did not flag (or how deep it reaches).
    pub closest: Option<NearPair>,
}

/// Two images whose perceptual hashes are within the threshold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearPair {
    /// One image, as `split/CLASS/file`.
    pub a: String,
    /// The other image.
    pub b: String,
    /// Hamming distance between their hashes, of 256 bits.
    pub distance: u32,
    /// Where the two images sit relative to each other.
    pub relation: PairRelation,
    /// True if the two images carry different labels.
    pub labels_differ: bool,
}

/// Where two images of a pair sit relative to each other, from least to most worrying for an
/// honest evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PairRelation {
    /// Same split folder, same child identifier: a child imaged twice, or one image saved twice.
    SameChild,
    /// Same split folder, different child identifiers: a split by child would not keep them
    /// apart.
    SameSplitDifferentChildren,
    /// Different split folders: a leak between the official splits.
    AcrossSplits,
}

impl PairRelation {
    /// Words for the table.
    fn describe(self) -> &'static str {
        match self {
            PairRelation::SameChild => "same split, same child",
            PairRelation::SameSplitDifferentChildren => "same split, different children",
            PairRelation::AcrossSplits => "across splits",
        }
    }
}

/// Minimum, median and maximum of width and height.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SizeStats {
    /// Width in pixels.
    pub width: MinMedianMax,
    /// Height in pixels.
    pub height: MinMedianMax,
}

/// Three order statistics of a list of pixel counts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MinMedianMax {
    /// Smallest value.
    pub min: u32,
    /// Median (the lower middle value for an even count).
    pub median: u32,
    /// Largest value.
    pub max: u32,
}

impl MinMedianMax {
    /// The statistics of `values`, or `None` if there are none.
    fn of(mut values: Vec<u32>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable();
        Some(Self {
            min: values[0],
            median: values[(values.len() - 1) / 2],
            max: values[values.len() - 1],
        })
    }
}

/// A file that could not be audited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unreadable {
    /// The file, as `split/CLASS/file`.
    pub image: String,
    /// Why it could not be read or decoded.
    pub reason: String,
}

/// What reading one file told us.
struct Examined {
    /// SHA-256 of the file bytes; `None` if the file could not be read.
    sha256: Option<[u8; 32]>,
    /// What the header said; `None` if the header could not be read.
    header: Option<Header>,
    /// The perceptual hash, or why the image could not be decoded.
    hash: std::result::Result<PerceptualHash, String>,
}

/// What an image header says, before any pixel is decoded.
struct Header {
    /// Detected file format.
    format: String,
    /// Colour mode as stored.
    mode: String,
    /// Width in pixels.
    width: u32,
    /// Height in pixels.
    height: u32,
}

/// Audits the dataset at `root`: see the module documentation for what is reported.
pub fn audit(root: &Path, config: &AuditConfig) -> Result<AuditReport> {
    data::check_root(root)?;
    let started = Instant::now();

    let mut samples = Vec::new();
    let mut splits = Vec::new();
    for split in SPLITS {
        let found = data::discover_split(root, split)?;
        splits.push(split_counts(split, root.join(split).is_dir(), &found));
        samples.extend(found);
    }

    let examined = examine_all(&samples);
    let names: Vec<String> = samples.iter().map(relative_name).collect();

    let report = AuditReport {
        root: root.display().to_string(),
        images: samples.len(),
        splits,
        shared_identifiers: SharedIdentifiers {
            note: SHARED_IDENTIFIER_NOTE.into(),
            identifiers: shared_identifiers(&samples),
        },
        exact_duplicates: exact_duplicates(&samples, &names, &examined),
        near_duplicates: near_duplicates(&samples, &names, &examined, config.max_distance),
        sizes: size_stats(&examined),
        modes: tally(
            examined
                .iter()
                .filter_map(|e| e.header.as_ref().map(|h| &h.mode)),
        ),
        formats: tally(
            examined
                .iter()
                .filter_map(|e| e.header.as_ref().map(|h| &h.format)),
        ),
        unreadable: names
            .iter()
            .zip(&examined)
            .filter_map(|(name, e)| {
                e.hash.as_ref().err().map(|reason| Unreadable {
                    image: name.clone(),
                    reason: reason.clone(),
                })
            })
            .collect(),
    };

    info!(
        images = report.images,
        seconds = started.elapsed().as_secs_f64(),
        "dataset audited"
    );
    Ok(report)
}

/// Counts of one split folder's samples.
fn split_counts(split: &str, present: bool, samples: &[Sample]) -> SplitCounts {
    let (normal, pneumonia) = data::class_counts(samples);

    let mut per_child: HashMap<&str, usize> = HashMap::new();
    for sample in samples {
        *per_child.entry(&sample.child).or_default() += 1;
    }

    SplitCounts {
        split: split.into(),
        present,
        normal,
        pneumonia,
        children: per_child.len(),
        max_images_per_child: per_child.values().copied().max().unwrap_or(0),
    }
}

/// Reads, hashes and decodes every sample in parallel, with a progress bar.
fn examine_all(samples: &[Sample]) -> Vec<Examined> {
    let bar = ProgressBar::new(samples.len() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} · {per_sec} · ETA {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message("auditing images");

    let examined = samples
        .par_iter()
        .map(|sample| {
            let result = examine(&sample.path);
            bar.inc(1);
            result
        })
        .collect();

    bar.finish_and_clear();
    examined
}

/// Reads one file: its SHA-256, its header, and its perceptual hash.
fn examine(path: &Path) -> Examined {
    let input = path.display().to_string();
    let bytes = match preprocess::read_image_file(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            return Examined {
                sha256: None,
                header: None,
                hash: Err(reason_of(&e)),
            };
        }
    };

    let sha256 = Sha256::digest(&bytes).into();
    let header = read_header(&bytes);
    let hash = preprocess::decode_gray(&bytes, &input)
        .map(|gray| PerceptualHash::of(&gray))
        .map_err(|e| reason_of(&e));

    Examined {
        sha256: Some(sha256),
        header,
        hash,
    }
}

/// The reason part of an error, without the file name (the report names the file itself).
fn reason_of(error: &Error) -> String {
    match error {
        Error::Image { reason, .. } => reason.clone(),
        Error::Io { source, .. } => source.to_string(),
        other => other.to_string(),
    }
}

/// Format, colour mode and size from the header alone; `None` if the header is unreadable.
fn read_header(bytes: &[u8]) -> Option<Header> {
    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .ok()?;
    let format = reader.format()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);

    let decoder = reader.into_decoder().ok()?;
    let (width, height) = decoder.dimensions();
    Some(Header {
        format: format_name(format),
        mode: mode_name(decoder.color_type()),
        width,
        height,
    })
}

/// A short name for an image format.
fn format_name(format: ImageFormat) -> String {
    match format {
        ImageFormat::Jpeg => "JPEG".into(),
        ImageFormat::Png => "PNG".into(),
        other => format!("{other:?}"),
    }
}

/// Words for a colour mode.
fn mode_name(color: ColorType) -> String {
    match color {
        ColorType::L8 => "gray 8-bit".into(),
        ColorType::La8 => "gray+alpha 8-bit".into(),
        ColorType::Rgb8 => "RGB 8-bit".into(),
        ColorType::Rgba8 => "RGBA 8-bit".into(),
        ColorType::L16 => "gray 16-bit".into(),
        ColorType::La16 => "gray+alpha 16-bit".into(),
        ColorType::Rgb16 => "RGB 16-bit".into(),
        ColorType::Rgba16 => "RGBA 16-bit".into(),
        ColorType::Rgb32F => "RGB float".into(),
        ColorType::Rgba32F => "RGBA float".into(),
        other => format!("{other:?}"),
    }
}

/// A 256-bit DCT perceptual hash of a grayscale image: close hashes mean images that look
/// alike.
///
/// The image is squashed to 64×64 (so aspect ratio and resolution do not matter), transformed
/// with a 2-D DCT-II, and the 16×16 lowest-frequency coefficients are compared with their
/// median: bit `16v + u` is set when coefficient `(u, v)` is above it. JPEG noise, mild blur
/// and a global brightness or contrast change barely move it. Exactly half the bits are set,
/// so the distance between two hashes is always even.
///
/// N.B. The common 64-bit form (8×8 coefficients of a 32×32 thumbnail) is too coarse for
/// chest radiographs, which all share one layout: on the Kermany images it put hundreds of
/// pairs of different children within 4 bits of each other. The finer 16×16 block separates
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PerceptualHash(pub [u64; 4]);

impl PerceptualHash {
    /// The hash of `image`.
    pub fn of(image: &GrayImage) -> Self {
        let size = HASH_THUMBNAIL as usize;
        let pixels = preprocess::resize_square(image, HASH_THUMBNAIL);

        // cosines[k][x] = cos((2x + 1) k π / 2N), the DCT-II basis for the frequencies kept.
        let cosines: Vec<Vec<f64>> = (0..HASH_BLOCK)
            .map(|k| {
                (0..size)
                    .map(|x| {
                        let angle = (2 * x + 1) as f64 * k as f64 * std::f64::consts::PI;
                        (angle / (2 * size) as f64).cos()
                    })
                    .collect()
            })
            .collect();

        // Rows first (each row's low horizontal frequencies), then columns.
        let mut rows = vec![[0.0f64; HASH_BLOCK]; size];
        for (y, row) in rows.iter_mut().enumerate() {
            let line = &pixels[y * size..(y + 1) * size];
            for (u, value) in row.iter_mut().enumerate() {
                *value = line
                    .iter()
                    .zip(&cosines[u])
                    .map(|(&p, c)| p as f64 * c)
                    .sum();
            }
        }
        let mut coefficients = [0.0f64; HASH_BLOCK * HASH_BLOCK];
        for v in 0..HASH_BLOCK {
            for u in 0..HASH_BLOCK {
                coefficients[v * HASH_BLOCK + u] =
                    (0..size).map(|y| cosines[v][y] * rows[y][u]).sum();
            }
        }

        let mut sorted = coefficients;
        sorted.sort_by(f64::total_cmp);
        let half = sorted.len() / 2;
        let median = (sorted[half - 1] + sorted[half]) / 2.0;

        let mut words = [0u64; 4];
        for (bit, coefficient) in coefficients.iter().enumerate() {
            if *coefficient > median {
                words[bit / 64] |= 1 << (bit % 64);
            }
        }
        Self(words)
    }

    /// Number of bits in which two hashes differ (0 to 256).
    pub fn distance(&self, other: &Self) -> u32 {
        self.0
            .iter()
            .zip(&other.0)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }
}

/// Every pair `(i, j, distance)` with `i < j` whose hashes are at most `max_distance` apart.
/// `None` entries (undecodable images) take part in no pair.
///
/// A plain all-pairs scan: for 6,000 images that is 18 million comparisons of four words
/// each, about a second, so no index is needed at this dataset's size.
pub fn close_pairs(
    hashes: &[Option<PerceptualHash>],
    max_distance: u32,
) -> Vec<(usize, usize, u32)> {
    (0..hashes.len())
        .into_par_iter()
        .flat_map_iter(|i| {
            let first = hashes[i];
            hashes[i + 1..]
                .iter()
                .enumerate()
                .filter_map(move |(offset, second)| {
                    let distance = first?.distance(second.as_ref()?);
                    (distance <= max_distance).then_some((i, i + 1 + offset, distance))
                })
        })
        .collect()
}

/// Identifiers (child names without their split prefix) present in more than one split.
fn shared_identifiers(samples: &[Sample]) -> Vec<SharedIdentifier> {
    let mut splits_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for sample in samples {
        let identifier = sample
            .child
            .split_once('/')
            .map_or(sample.child.as_str(), |(_, id)| id);
        splits_of
            .entry(identifier)
            .or_default()
            .insert(&sample.split);
    }

    splits_of
        .into_iter()
        .filter(|(_, splits)| splits.len() > 1)
        .map(|(identifier, splits)| SharedIdentifier {
            identifier: identifier.into(),
            splits: SPLITS
                .iter()
                .filter(|s| splits.contains(*s))
                .map(|s| s.to_string())
                .collect(),
        })
        .collect()
}

/// Groups of files with the same SHA-256, largest group first.
fn exact_duplicates(
    samples: &[Sample],
    names: &[String],
    examined: &[Examined],
) -> Vec<DuplicateGroup> {
    let mut by_hash: BTreeMap<[u8; 32], Vec<usize>> = BTreeMap::new();
    for (index, e) in examined.iter().enumerate() {
        if let Some(sha) = e.sha256 {
            by_hash.entry(sha).or_default().push(index);
        }
    }

    let mut groups: Vec<DuplicateGroup> = by_hash
        .into_iter()
        .filter(|(_, members)| members.len() > 1)
        .map(|(sha, members)| {
            let splits: BTreeSet<&str> = members.iter().map(|&i| &*samples[i].split).collect();
            let labels: BTreeSet<Label> = members.iter().map(|&i| samples[i].label).collect();
            DuplicateGroup {
                sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
                images: members.iter().map(|&i| names[i].clone()).collect(),
                across_splits: splits.len() > 1,
                labels_differ: labels.len() > 1,
            }
        })
        .collect();
    groups.sort_by(|a, b| {
        b.images
            .len()
            .cmp(&a.images.len())
            .then(a.images.cmp(&b.images))
    });
    groups
}

/// Near-duplicate pairs, classified; byte-identical pairs are left to [`exact_duplicates`].
fn near_duplicates(
    samples: &[Sample],
    names: &[String],
    examined: &[Examined],
    max_distance: u32,
) -> NearDuplicates {
    let hashes: Vec<Option<PerceptualHash>> = examined
        .iter()
        .map(|e| e.hash.as_ref().ok().copied())
        .collect();

    let describe = |i: usize, j: usize, distance: u32| {
        let (a, b) = (&samples[i], &samples[j]);
        let relation = if a.split != b.split {
            PairRelation::AcrossSplits
        } else if a.child != b.child {
            PairRelation::SameSplitDifferentChildren
        } else {
            PairRelation::SameChild
        };
        NearPair {
            a: names[i].clone(),
            b: names[j].clone(),
            distance,
            relation,
            labels_differ: a.label != b.label,
        }
    };
    let bytes_differ = |i: usize, j: usize| examined[i].sha256 != examined[j].sha256;

    let mut pairs: Vec<NearPair> = close_pairs(&hashes, max_distance)
        .into_iter()
        .filter(|&(i, j, _)| bytes_differ(i, j))
        .map(|(i, j, distance)| describe(i, j, distance))
        .collect();
    pairs.sort_by(|x, y| {
        x.distance
            .cmp(&y.distance)
            .then_with(|| y.relation.cmp(&x.relation))
            .then_with(|| x.a.cmp(&y.a))
            .then_with(|| x.b.cmp(&y.b))
    });

    let mut by_relation = BTreeMap::new();
    for pair in &pairs {
        *by_relation.entry(pair.relation).or_default() += 1;
    }

    NearDuplicates {
        hash: HASH_DESCRIPTION.into(),
        max_distance,
        by_relation,
        labels_differ: pairs.iter().filter(|p| p.labels_differ).count(),
        pairs,
        closest: closest_pair(&hashes, bytes_differ).map(|(i, j, d)| describe(i, j, d)),
    }
}

/// The pair `(i, j, distance)` with the smallest distance among those `eligible` accepts
/// (ties go to the first in index order); `None` if there is no such pair.
fn closest_pair(
    hashes: &[Option<PerceptualHash>],
    eligible: impl Fn(usize, usize) -> bool + Sync,
) -> Option<(usize, usize, u32)> {
    (0..hashes.len())
        .into_par_iter()
        .filter_map(|i| {
            let first = hashes[i]?;
            hashes[i + 1..]
                .iter()
                .enumerate()
                .filter_map(|(offset, second)| {
                    let j = i + 1 + offset;
                    let distance = first.distance(second.as_ref()?);
                    eligible(i, j).then_some((distance, i, j))
                })
                .min()
        })
        .min()
        .map(|(distance, i, j)| (i, j, distance))
}

/// Width and height statistics over every readable header.
fn size_stats(examined: &[Examined]) -> Option<SizeStats> {
    let headers: Vec<&Header> = examined.iter().filter_map(|e| e.header.as_ref()).collect();
    Some(SizeStats {
        width: MinMedianMax::of(headers.iter().map(|h| h.width).collect())?,
        height: MinMedianMax::of(headers.iter().map(|h| h.height).collect())?,
    })
}

/// Counts how often each string occurs.
fn tally<'a>(values: impl Iterator<Item = &'a String>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for value in values {
        *counts.entry(value.clone()).or_default() += 1;
    }
    counts
}

/// Most examples of one kind printed in the table (the JSON lists them all).
const TABLE_EXAMPLES: usize = 10;

impl AuditReport {
    /// The report as a plain-text table for a terminal or a README.
    pub fn render_table(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail, so the results of `writeln!` are ignored.
        let _ = self.write_table(&mut out);
        out
    }

    /// Writes the table into `out`.
    fn write_table(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "Dataset audit of {} ({} image files)",
            self.root, self.images
        )?;
        writeln!(out)?;
        self.write_counts(out)?;
        self.write_shared_identifiers(out)?;
        self.write_exact_duplicates(out)?;
        self.write_near_duplicates(out)?;
        self.write_image_properties(out)?;
        self.write_unreadable(out)
    }

    /// Images, classes and children per split.
    fn write_counts(&self, out: &mut String) -> std::fmt::Result {
        writeln!(
            out,
            "{:<6} {:>7} {:>10} {:>7} {:>9} {:>16}",
            "split", "NORMAL", "PNEUMONIA", "images", "children", "most per child"
        )?;
        for s in &self.splits {
            if !s.present {
                writeln!(out, "{:<6} (folder absent)", s.split)?;
                continue;
            }
            writeln!(
                out,
                "{:<6} {:>7} {:>10} {:>7} {:>9} {:>16}",
                s.split,
                s.normal,
                s.pneumonia,
                s.normal + s.pneumonia,
                s.children,
                s.max_images_per_child
            )?;
        }
        writeln!(out)
    }

    /// Identifiers seen in more than one split, with the caveat.
    fn write_shared_identifiers(&self, out: &mut String) -> std::fmt::Result {
        let shared = &self.shared_identifiers.identifiers;
        writeln!(
            out,
            "Child identifiers in more than one split: {}",
            shared.len()
        )?;
        writeln!(out, "  note: {}", self.shared_identifiers.note)?;
        if !shared.is_empty() {
            let listed: Vec<String> = shared
                .iter()
                .take(TABLE_EXAMPLES)
                .map(|s| format!("{} ({})", s.identifier, s.splits.join(", ")))
                .collect();
            writeln!(out, "  e.g. {}", listed.join("; "))?;
        }
        writeln!(out)
    }

    /// Byte-identical files.
    fn write_exact_duplicates(&self, out: &mut String) -> std::fmt::Result {
        let groups = &self.exact_duplicates;
        let files: usize = groups.iter().map(|g| g.images.len()).sum();
        writeln!(
            out,
            "Exact duplicates (same SHA-256 of the file bytes): {} groups, {} files",
            groups.len(),
            files
        )?;
        let across = groups.iter().filter(|g| g.across_splits).count();
        let conflicting = groups.iter().filter(|g| g.labels_differ).count();
        if !groups.is_empty() {
            writeln!(
                out,
                "  groups across splits: {across}; groups with different labels: {conflicting}"
            )?;
        }
        for group in groups.iter().take(TABLE_EXAMPLES) {
            writeln!(out, "  {}", group.images.join("  =  "))?;
        }
        writeln!(out)
    }

    /// Perceptually close pairs.
    fn write_near_duplicates(&self, out: &mut String) -> std::fmt::Result {
        let near = &self.near_duplicates;
        writeln!(
            out,
            "Near-duplicates (perceptual hash within {} of {HASH_BITS} bits, byte-identical pairs left \
             out): {} pairs",
            near.max_distance,
            near.pairs.len()
        )?;
        writeln!(out, "  hash: {}", near.hash)?;
        if let Some(closest) = &near.closest {
            writeln!(
                out,
                "  closest two different files: d={}, {}  ~  {}",
                closest.distance, closest.a, closest.b
            )?;
        }
        for relation in [
            PairRelation::SameChild,
            PairRelation::SameSplitDifferentChildren,
            PairRelation::AcrossSplits,
        ] {
            writeln!(
                out,
                "  {:<32} {:>6}",
                relation.describe(),
                near.by_relation.get(&relation).copied().unwrap_or(0)
            )?;
        }
        writeln!(
            out,
            "  {:<32} {:>6}",
            "with different labels", near.labels_differ
        )?;
        for pair in near.pairs.iter().take(TABLE_EXAMPLES) {
            writeln!(
                out,
                "  d={:<2} {}  ~  {}  ({}{})",
                pair.distance,
                pair.a,
                pair.b,
                pair.relation.describe(),
                if pair.labels_differ {
                    ", labels differ"
                } else {
                    ""
                }
            )?;
        }
        writeln!(out)
    }

    /// Sizes, modes and formats.
    fn write_image_properties(&self, out: &mut String) -> std::fmt::Result {
        match &self.sizes {
            Some(sizes) => {
                writeln!(
                    out,
                    "{:<14} {:>6} {:>7} {:>6}",
                    "size (pixels)", "min", "median", "max"
                )?;
                for (what, stats) in [("width", sizes.width), ("height", sizes.height)] {
                    writeln!(
                        out,
                        "{:<14} {:>6} {:>7} {:>6}",
                        what, stats.min, stats.median, stats.max
                    )?;
                }
            }
            None => writeln!(out, "size (pixels): no readable image")?,
        }
        let join = |counts: &BTreeMap<String, usize>| {
            counts
                .iter()
                .map(|(name, n)| format!("{name}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(out, "modes:   {}", join(&self.modes))?;
        writeln!(out, "formats: {}", join(&self.formats))?;
        writeln!(out)
    }

    /// Files that could not be read.
    fn write_unreadable(&self, out: &mut String) -> std::fmt::Result {
        writeln!(out, "Unreadable files: {}", self.unreadable.len())?;
        for file in &self.unreadable {
            writeln!(out, "  {}: {}", file.image, file.reason)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, ImageBuffer, Luma, Rgb, RgbImage};

    /// A synthetic "radiograph": a texture of waves that depends on `seed`.
    fn pattern(seed: u32, width: u32, height: u32) -> image::GrayImage {
        // Waves of 2 to 9 cycles per image in seed-dependent directions and phases: texture
        // at the scales the hash looks at, as the ribs and lung markings of a radiograph are.
        let waves: Vec<(f32, f32, f32)> = (0..5)
            .map(|k| {
                let h = seed.wrapping_mul(2_654_435_761).wrapping_add(k * 40_503);
                let cycles = 2.0 + (h % 8) as f32;
                let angle = ((h / 8) % 360) as f32 * std::f32::consts::PI / 180.0;
                let phase = ((h / 2880) % 100) as f32 / 100.0 * std::f32::consts::TAU;
                (cycles * angle.cos(), cycles * angle.sin(), phase)
            })
            .collect();
        ImageBuffer::from_fn(width, height, |x, y| {
            let (fx, fy) = (x as f32 / width as f32, y as f32 / height as f32);
            let value: f32 = waves
                .iter()
                .map(|(kx, ky, phase)| (std::f32::consts::TAU * (kx * fx + ky * fy) + phase).sin())
                .sum();
            Luma([(128.0 + 20.0 * value) as u8])
        })
    }

    fn to_f32(image: &image::GrayImage) -> GrayImage {
        DynamicImage::ImageLuma8(image.clone()).to_luma32f()
    }

    fn save(root: &Path, relative: &str, image: DynamicImage) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        image.save(&path).unwrap();
    }

    #[test]
    fn hash_survives_reencoding_resizing_and_brightness() {
        let original = pattern(3, 224, 224);
        let reference = PerceptualHash::of(&to_f32(&original));

        let brighter = ImageBuffer::from_fn(224, 224, |x, y| {
            Luma([original.get_pixel(x, y).0[0].saturating_add(20)])
        });
        let larger =
            image::imageops::resize(&original, 500, 430, image::imageops::FilterType::Triangle);
        let mut jpeg = Vec::new();
        DynamicImage::ImageLuma8(original.clone())
            .write_to(&mut Cursor::new(&mut jpeg), ImageFormat::Jpeg)
            .unwrap();
        let reencoded = preprocess::decode_gray(&jpeg, "jpeg").unwrap();

        for (what, variant) in [
            ("brighter", to_f32(&brighter)),
            ("larger", to_f32(&larger)),
            ("re-encoded", reencoded),
        ] {
            let distance = reference.distance(&PerceptualHash::of(&variant));
            assert!(distance <= 8, "{what}: distance {distance}");
        }
    }

    #[test]
    fn different_images_are_far_apart() {
        let hashes: Vec<PerceptualHash> = (0..20)
            .map(|s| PerceptualHash::of(&to_f32(&pattern(s, 64, 64))))
            .collect();
        for i in 0..hashes.len() {
            for j in i + 1..hashes.len() {
                let distance = hashes[i].distance(&hashes[j]);
                let threshold = AuditConfig::default().max_distance;
                assert!(
                    distance > threshold,
                    "patterns {i} and {j}: distance {distance}"
                );
            }
        }
    }

    #[test]
    fn close_pairs_finds_exactly_the_pairs_within_the_threshold() {
        let hash = |low: u64, high: u64| Some(PerceptualHash([low, 0, 0, high]));
        let hashes = [
            hash(0, 0),
            hash(0b11, 1 << 63),
            None,
            hash(0b1111_1111, 0),
            hash(1, 0),
        ];
        let pairs = close_pairs(&hashes, 3);
        assert_eq!(pairs, vec![(0, 1, 3), (0, 4, 1), (1, 4, 2)]);
    }

    #[test]
    fn order_statistics() {
        let stats = MinMedianMax::of(vec![5, 1, 9, 3]).unwrap();
        assert_eq!((stats.min, stats.median, stats.max), (1, 3, 9));
        assert!(MinMedianMax::of(vec![]).is_none());
    }

    /// A small dataset with one of everything the audit looks for.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let gray = |seed| DynamicImage::ImageLuma8(pattern(seed, 96, 80));

        // train: two children per class; person1 has two images.
        save(root, "train/NORMAL/IM-0001-0001.png", gray(1));
        save(root, "train/NORMAL/IM-0002-0001.png", gray(2));
        save(root, "train/PNEUMONIA/person1_bacteria_1.png", gray(3));
        save(root, "train/PNEUMONIA/person1_bacteria_2.png", gray(4));
        save(root, "train/PNEUMONIA/person2_virus_3.png", gray(5));
        // An exact copy of a training image under another name, in the same split.
        std::fs::copy(
            root.join("train/NORMAL/IM-0001-0001.png"),
            root.join("train/NORMAL/IM-0003-0001.png"),
        )
        .unwrap();
        // A 16-bit PNG and an RGB JPEG.
        save(
            root,
            "train/NORMAL/IM-0004-0001.png",
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(40, 50, |x, y| {
                Luma([(x * 1000 + y * 300) as u16])
            })),
        );
        save(
            root,
            "train/PNEUMONIA/person3_virus_4.jpeg",
            DynamicImage::ImageRgb8(RgbImage::from_fn(120, 60, |x, _| Rgb([x as u8, 9, 200]))),
        );
        // test: person2 again (same identifier, another split), and a brightened re-encode of
        // a training image: a near-duplicate across splits, under the other label.
        save(root, "test/PNEUMONIA/person2_virus_9.png", gray(6));
        let near = pattern(2, 96, 80);
        let near = ImageBuffer::from_fn(96, 80, |x, y| {
            Luma([near.get_pixel(x, y).0[0].saturating_add(12)])
        });
        save(
            root,
            "test/PNEUMONIA/person7_virus_1.jpeg",
            DynamicImage::ImageLuma8(near),
        );
        // A broken file.
        std::fs::write(
            root.join("test/PNEUMONIA/person8_virus_1.jpeg"),
            b"not a jpeg",
        )
        .unwrap();
        dir
    }

    #[test]
    fn audit_reports_counts_leaks_duplicates_and_unreadable_files() {
        let dir = fixture();
        let report = audit(dir.path(), &AuditConfig::default()).unwrap();

        assert_eq!(report.images, 11);
        let train = &report.splits[0];
        assert_eq!((train.normal, train.pneumonia, train.children), (4, 4, 7));
        assert_eq!(train.max_images_per_child, 2);
        assert!(!report.splits[1].present);
        assert_eq!(
            (report.splits[2].pneumonia, report.splits[2].children),
            (3, 3)
        );

        assert_eq!(
            report.shared_identifiers.identifiers,
            vec![SharedIdentifier {
                identifier: "person2".into(),
                splits: vec!["train".into(), "test".into()],
            }]
        );

        assert_eq!(report.exact_duplicates.len(), 1);
        assert_eq!(
            report.exact_duplicates[0].images,
            vec![
                "train/NORMAL/IM-0001-0001.png",
                "train/NORMAL/IM-0003-0001.png"
            ]
        );
        assert!(!report.exact_duplicates[0].across_splits);

        let near = &report.near_duplicates.pairs;
        assert_eq!(near.len(), 1, "{near:?}");
        assert_eq!(near[0].a, "train/NORMAL/IM-0002-0001.png");
        assert_eq!(near[0].b, "test/PNEUMONIA/person7_virus_1.jpeg");
        assert_eq!(near[0].relation, PairRelation::AcrossSplits);
        assert!(near[0].labels_differ);
        assert_eq!(report.near_duplicates.closest.as_ref(), Some(&near[0]));

        assert_eq!(report.modes.get("gray 8-bit"), Some(&8));
        assert_eq!(report.modes.get("gray 16-bit"), Some(&1));
        assert_eq!(report.modes.get("RGB 8-bit"), Some(&1));
        assert_eq!(report.formats.get("JPEG"), Some(&2));
        let sizes = report.sizes.as_ref().unwrap();
        assert_eq!((sizes.width.min, sizes.width.max), (40, 120));

        assert_eq!(report.unreadable.len(), 1);
        assert_eq!(
            report.unreadable[0].image,
            "test/PNEUMONIA/person8_virus_1.jpeg"
        );
        assert!(
            report.unreadable[0]
                .reason
                .contains("not a recognised image")
        );
    }

    #[test]
    fn table_and_json_say_what_was_found() {
        let dir = fixture();
        let report = audit(dir.path(), &AuditConfig::default()).unwrap();

        let table = report.render_table();
        assert!(table.contains("possibly the same child"), "{table}");
        assert!(table.contains("person2 (train, test)"), "{table}");
        assert!(table.contains("val    (folder absent)"), "{table}");
        assert!(table.contains("Unreadable files: 1"), "{table}");
        assert!(table.contains("across splits"), "{table}");

        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["near_duplicates"]["by_relation"]["across_splits"], 1);
        assert_eq!(
            json["exact_duplicates"][0]["images"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn a_folder_without_splits_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = audit(dir.path(), &AuditConfig::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("none of the split folders"), "{err}");
    }
}
