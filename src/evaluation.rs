//! Evaluating a frozen bundle over a split of a dataset, once, at its stored threshold.

use std::path::{Path, PathBuf};

use crate::data::{self, Label};
use crate::error::{Error, Result};
use crate::inference::Classifier;
use crate::metrics::Metrics;

/// Which images to evaluate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SplitChoice {
    /// `DIR/test/`: the official test split.
    Test,
    /// `DIR/val/`: the official (tiny) validation folder.
    Val,
    /// `DIR/train/`: the whole official training folder (mostly seen in training).
    Train,
    /// The child-grouped validation split recorded in the model's card.
    Validation,
}

/// One evaluated image: its truth and the model's probability.
#[derive(Debug, Clone)]
pub struct Scored {
    /// The image.
    pub path: PathBuf,
    /// Its true class.
    pub label: Label,
    /// Calibrated probability of pneumonia.
    pub probability: f32,
}

/// Lists the labelled images of `split` under `root`.
pub fn images_of(
    root: &Path,
    split: SplitChoice,
    classifier: &Classifier,
) -> Result<Vec<(PathBuf, Label)>> {
    data::check_root(root)?;
    let folder = match split {
        SplitChoice::Test => "test",
        SplitChoice::Val => "val",
        SplitChoice::Train => "train",
        SplitChoice::Validation => return validation_images(root, classifier),
    };
    let samples = data::discover_split(root, folder)?;
    if samples.is_empty() {
        return Err(Error::Dataset {
            path: root.join(folder),
            reason: "holds no NORMAL/ or PNEUMONIA/ images".into(),
        });
    }
    Ok(samples.into_iter().map(|s| (s.path, s.label)).collect())
}

/// The card's validation list, resolved under `root`; every listed image must exist.
fn validation_images(root: &Path, classifier: &Classifier) -> Result<Vec<(PathBuf, Label)>> {
    let files = &classifier.card.data.validation_files;
    let mut images = Vec::with_capacity(files.len());
    for name in files {
        let label = match name.split('/').nth(1) {
            Some("NORMAL") => Label::Normal,
            Some("PNEUMONIA") => Label::Pneumonia,
            _ => {
                return Err(Error::Bundle {
                    path: classifier.card.model_id.clone(),
                    reason: format!("validation entry `{name}` names no class folder"),
                });
            }
        };
        let path = root.join(name);
        if !path.is_file() {
            return Err(Error::Dataset {
                path: root.to_path_buf(),
                reason: format!("validation image `{name}` recorded in the card is missing"),
            });
        }
        images.push((path, label));
    }
    Ok(images)
}

/// Runs the classifier once over `images`. Any unreadable image is an error: figures over a
/// silently smaller set would be wrong.
pub fn score(classifier: &Classifier, images: &[(PathBuf, Label)]) -> Result<Vec<Scored>> {
    let paths: Vec<PathBuf> = images.iter().map(|(p, _)| p.clone()).collect();
    let predictions = classifier.predict_files(&paths);
    images
        .iter()
        .zip(predictions)
        .map(|((path, label), prediction)| {
            Ok(Scored {
                path: path.clone(),
                label: *label,
                probability: prediction?.probability,
            })
        })
        .collect()
}

/// The headline metrics of scored images at the classifier's stored threshold.
pub fn metrics_of(classifier: &Classifier, scored: &[Scored]) -> Result<Metrics> {
    let probabilities: Vec<f32> = scored.iter().map(|s| s.probability).collect();
    let truth: Vec<bool> = scored.iter().map(|s| s.label == Label::Pneumonia).collect();
    Metrics::compute(&probabilities, &truth, classifier.card.threshold)
}
