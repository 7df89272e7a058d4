//! Finding the images of a dataset laid out as in Kermany et al. (2018), labelling them from
//! their folder, naming the child each one belongs to, and splitting by child.
//!
//! The layout is `ROOT/{train,val,test}/{NORMAL,PNEUMONIA}/*.{jpeg,jpg,png}`; any split may be
//! missing. A child often has several images, and an honest validation split keeps all of a
//! child's images on one side: [`split_by_child`] does that, stratified by class and
//! reproducible from a seed.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// The two classes, in the order of the model's output (0 = normal, 1 = pneumonia).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Label {
    /// No pneumonia.
    Normal,
    /// Bacterial or viral pneumonia.
    Pneumonia,
}

impl Label {
    /// The folder name that holds images of this class.
    pub fn folder(self) -> &'static str {
        match self {
            Label::Normal => "NORMAL",
            Label::Pneumonia => "PNEUMONIA",
        }
    }

    /// 1.0 for pneumonia, 0.0 for normal: the target of the model's single logit.
    pub fn target(self) -> f32 {
        match self {
            Label::Normal => 0.0,
            Label::Pneumonia => 1.0,
        }
    }

    /// Both classes, normal first.
    pub const ALL: [Label; 2] = [Label::Normal, Label::Pneumonia];
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

/// The official split folders of the dataset.
pub const SPLITS: [&str; 3] = ["train", "val", "test"];

/// One labelled image found on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    /// Where the image is.
    pub path: PathBuf,
    /// Its class, taken from the folder it is in.
    pub label: Label,
    /// The child it belongs to, qualified by the split folder (child numbers restart in each).
    pub child: String,
    /// The official split folder it came from (`train`, `val` or `test`).
    pub split: String,
}

/// Extracts the child identifier from a file name, or `None` if the name follows no known
/// pattern.
///
/// Pneumonia files are named `person<N>_<bacteria|virus>_<k>.jpeg`, giving `person<N>`.
/// Normal files are named `IM-<N>-<k>.jpeg` or `NORMAL2-IM-<N>-<k>.jpeg`; both give `IM-<N>`,
/// since the `NORMAL2-` prefix marks a later batch of the same numbering and merging is the
/// safe side for a split that must not leak.
pub fn child_of(file_name: &str) -> Option<String> {
    let stem = file_name
        .rsplit_once('.')
        .map_or(file_name, |(stem, _)| stem);

    if let Some(rest) = stem.strip_prefix("person") {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        let after = &rest[digits.len()..];
        if !digits.is_empty() && after.starts_with('_') {
            return Some(format!("person{}", digits.trim_start_matches('0')));
        }
        return None;
    }

    let rest = stem.strip_prefix("NORMAL2-").unwrap_or(stem);
    let rest = rest.strip_prefix("IM-")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() || !rest[digits.len()..].starts_with('-') {
        return None;
    }
    Some(format!("IM-{}", digits.trim_start_matches('0')))
}

/// True for file names pneumo reads as images.
pub fn is_image_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

/// Lists the images of one split folder (`ROOT/<split>/{NORMAL,PNEUMONIA}`), sorted by path.
///
/// Returns an empty list when the split folder does not exist. An image whose name follows no
/// child pattern is its own child (keyed by its file name), so it can never leak.
pub fn discover_split(root: &Path, split: &str) -> Result<Vec<Sample>> {
    let mut samples = Vec::new();

    for label in Label::ALL {
        let dir = root.join(split).join(label.folder());
        if !dir.is_dir() {
            continue;
        }
        let entries = std::fs::read_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if !path.is_file() || !is_image_file(&path) {
                continue;
            }
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            let child = child_of(&name).unwrap_or_else(|| format!("file:{name}"));
            samples.push(Sample {
                path,
                label,
                child: format!("{split}/{child}"),
                split: split.to_string(),
            });
        }
    }

    samples.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(samples)
}

/// Checks that `root` looks like a dataset: it exists and holds at least one split folder.
pub fn check_root(root: &Path) -> Result<()> {
    if !root.is_dir() {
        return Err(Error::Dataset {
            path: root.to_path_buf(),
            reason: "not a folder".into(),
        });
    }
    if !SPLITS.iter().any(|s| root.join(s).is_dir()) {
        return Err(Error::Dataset {
            path: root.to_path_buf(),
            reason: "holds none of the split folders train/, val/, test/".into(),
        });
    }
    Ok(())
}

/// The outcome of [`split_by_child`]: which images train the model and which validate it.
#[derive(Debug, Clone)]
pub struct TrainValidation {
    /// Images the model learns from.
    pub train: Vec<Sample>,
    /// Images used for model selection, the threshold and calibration; never trained on.
    pub validation: Vec<Sample>,
}

/// Carves a validation split out of `train` by child, stratified by class.
///
/// Children are grouped by their majority class, shuffled with `seed`, and assigned to
/// validation until each class holds about `fraction` of that class's images. The official
/// `val` images (if any) join the validation side. No child ends up on both sides.
pub fn split_by_child(
    train: &[Sample],
    official_val: &[Sample],
    fraction: f64,
    seed: u64,
) -> Result<TrainValidation> {
    if !(0.0..1.0).contains(&fraction) {
        return Err(Error::Config(format!(
            "validation fraction must be in [0, 1), got {fraction}"
        )));
    }

    let mut by_child: BTreeMap<&str, Vec<&Sample>> = BTreeMap::new();
    for sample in train {
        by_child.entry(&sample.child).or_default().push(sample);
    }

    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut validation_children: BTreeSet<&str> = BTreeSet::new();
    for label in Label::ALL {
        let mut children: Vec<(&str, usize)> = by_child
            .iter()
            .filter(|(_, images)| majority_label(images) == label)
            .map(|(child, images)| (*child, images.len()))
            .collect();
        children.shuffle(&mut rng);

        let class_total: usize = children.iter().map(|(_, n)| n).sum();
        let wanted = (class_total as f64 * fraction).round() as usize;
        let mut taken = 0;
        for (child, count) in children {
            if taken >= wanted {
                break;
            }
            validation_children.insert(child);
            taken += count;
        }
    }

    let (validation, train): (Vec<Sample>, Vec<Sample>) = train
        .iter()
        .cloned()
        .partition(|s| validation_children.contains(s.child.as_str()));
    let mut validation = validation;
    validation.extend(official_val.iter().cloned());

    Ok(TrainValidation { train, validation })
}

/// The class most of a child's images have (pneumonia on a tie).
fn majority_label(images: &[&Sample]) -> Label {
    let pneumonia = images
        .iter()
        .filter(|s| s.label == Label::Pneumonia)
        .count();
    if pneumonia * 2 >= images.len() {
        Label::Pneumonia
    } else {
        Label::Normal
    }
}

/// A SHA-256 over the sorted list of `(split, class, file name)` lines: a fingerprint of which
/// images a model saw, stable across machines and dataset locations.
pub fn manifest_hash(samples: &[Sample]) -> String {
    let mut lines: Vec<String> = samples
        .iter()
        .map(|s| {
            let name = s
                .path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            format!("{}\t{}\t{}", s.split, s.label, name)
        })
        .collect();
    lines.sort();

    let mut hasher = Sha256::new();
    for line in lines {
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    format!("{:x}", hasher.finalize())
}

/// Counts images per class: `(normal, pneumonia)`.
pub fn class_counts(samples: &[Sample]) -> (usize, usize) {
    let pneumonia = samples
        .iter()
        .filter(|s| s.label == Label::Pneumonia)
        .count();
    (samples.len() - pneumonia, pneumonia)
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, flushed, then renamed, so a
/// reader never sees a half-written file and a crash leaves the old content in place.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;

    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir = dir.unwrap_or_else(|| Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;

    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
    file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
    file.sync_all().map_err(|e| Error::io(&tmp, e))?;
    drop(file);

    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_comes_from_pneumonia_file_names() {
        assert_eq!(
            child_of("person12_bacteria_47.jpeg").as_deref(),
            Some("person12")
        );
        assert_eq!(child_of("person3_virus_9.jpeg").as_deref(), Some("person3"));
        assert_eq!(
            child_of("person447_virus_921_1.jpeg").as_deref(),
            Some("person447")
        );
    }

    #[test]
    fn child_comes_from_normal_file_names_with_or_without_batch_prefix() {
        assert_eq!(child_of("IM-0115-0001.jpeg").as_deref(), Some("IM-115"));
        assert_eq!(
            child_of("NORMAL2-IM-0115-0002.jpeg").as_deref(),
            Some("IM-115")
        );
        assert_eq!(child_of("IM-1427-0001.png").as_deref(), Some("IM-1427"));
    }

    #[test]
    fn unknown_names_have_no_child() {
        assert_eq!(child_of("scan.jpeg"), None);
        assert_eq!(child_of("person_x_1.jpeg"), None);
        assert_eq!(child_of("IM-abc-1.jpeg"), None);
        assert_eq!(child_of("personal.jpeg"), None);
    }

    fn sample(child: &str, n: usize, label: Label) -> Sample {
        Sample {
            path: PathBuf::from(format!("train/{}/{child}_{n}.jpeg", label.folder())),
            label,
            child: format!("train/{child}"),
            split: "train".into(),
        }
    }

    fn toy_train() -> Vec<Sample> {
        let mut samples = Vec::new();
        for c in 0..40 {
            for n in 0..(1 + c % 3) {
                samples.push(sample(&format!("IM-{c}"), n, Label::Normal));
            }
        }
        for c in 0..90 {
            for n in 0..(1 + c % 4) {
                samples.push(sample(&format!("person{c}"), n, Label::Pneumonia));
            }
        }
        samples
    }

    #[test]
    fn grouped_split_never_puts_a_child_on_both_sides() {
        let train = toy_train();
        let split = split_by_child(&train, &[], 0.2, 7).unwrap();

        let train_children: BTreeSet<_> = split.train.iter().map(|s| &s.child).collect();
        let val_children: BTreeSet<_> = split.validation.iter().map(|s| &s.child).collect();
        assert!(train_children.is_disjoint(&val_children));
        assert_eq!(split.train.len() + split.validation.len(), train.len());
    }

    #[test]
    fn grouped_split_is_stratified_and_near_the_fraction() {
        let train = toy_train();
        let (normal, pneumonia) = class_counts(&train);
        let split = split_by_child(&train, &[], 0.2, 7).unwrap();
        let (val_normal, val_pneumonia) = class_counts(&split.validation);

        let normal_share = val_normal as f64 / normal as f64;
        let pneumonia_share = val_pneumonia as f64 / pneumonia as f64;
        assert!(
            (normal_share - 0.2).abs() < 0.06,
            "normal share {normal_share}"
        );
        assert!(
            (pneumonia_share - 0.2).abs() < 0.06,
            "pneumonia share {pneumonia_share}"
        );
    }

    #[test]
    fn grouped_split_is_reproducible_from_its_seed() {
        let train = toy_train();
        let a = split_by_child(&train, &[], 0.2, 11).unwrap();
        let b = split_by_child(&train, &[], 0.2, 11).unwrap();
        let c = split_by_child(&train, &[], 0.2, 12).unwrap();
        assert_eq!(a.validation, b.validation);
        assert_ne!(a.validation, c.validation);
    }

    #[test]
    fn official_val_joins_validation() {
        let train = toy_train();
        let val = vec![Sample {
            split: "val".into(),
            child: "val/person1".into(),
            ..sample("person1", 0, Label::Pneumonia)
        }];
        let split = split_by_child(&train, &val, 0.1, 1).unwrap();
        assert!(split.validation.contains(&val[0]));
    }

    #[test]
    fn manifest_hash_ignores_order_and_location() {
        let train = toy_train();
        let mut shuffled = train.clone();
        shuffled.reverse();
        for s in &mut shuffled {
            s.path = Path::new("/elsewhere").join(&s.path);
        }
        assert_eq!(manifest_hash(&train), manifest_hash(&shuffled));
        assert_ne!(manifest_hash(&train), manifest_hash(&train[1..]));
    }

    #[test]
    fn discovery_reads_the_layout_and_skips_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let normal = dir.path().join("train/NORMAL");
        let pneumonia = dir.path().join("train/PNEUMONIA");
        std::fs::create_dir_all(&normal).unwrap();
        std::fs::create_dir_all(&pneumonia).unwrap();
        std::fs::write(normal.join("IM-0001-0001.jpeg"), b"x").unwrap();
        std::fs::write(normal.join("notes.txt"), b"x").unwrap();
        std::fs::write(pneumonia.join("person5_virus_1.PNG"), b"x").unwrap();

        let samples = discover_split(dir.path(), "train").unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].label, Label::Normal);
        assert_eq!(samples[0].child, "train/IM-1");
        assert_eq!(samples[1].child, "train/person5");
        assert!(discover_split(dir.path(), "test").unwrap().is_empty());
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
