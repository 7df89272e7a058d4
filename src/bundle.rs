//! Model bundles: the trained weights and the model card that says what they are.
//!
//! A bundle is a folder holding `weights.bpk` (burn's burnpack record of [`PneumoNet`]) and
//! `card.json` ([`Card`]). The default bundle is compiled into the binary when
//! `models/default/` exists at build time, so `predict` works with no `--model`.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::Device;
use burn::store::ModuleRecord;
use burn::tensor::Bytes;
use serde::{Deserialize, Serialize};

use crate::data::write_atomic;
use crate::error::{Error, Result};
use crate::metrics::{Metrics, ThresholdRule, UncertainBand};
use crate::model::{NetConfig, PneumoNet};
use crate::preprocess::Preprocessing;
use crate::training::TrainConfig;

/// Version of the card layout; a bundle with another version is refused.
pub const CARD_FORMAT: u32 = 1;

/// File name of the weights inside a bundle.
pub const WEIGHTS_FILE: &str = "weights.bpk";

/// File name of the model card inside a bundle.
pub const CARD_FILE: &str = "card.json";

/// The model card: everything needed to use a model correctly and to trace how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Card {
    /// Layout version of this card ([`CARD_FORMAT`]).
    pub format: u32,
    /// Short identifier of the model, reported with every prediction.
    pub model_id: String,
    /// Version of pneumo that trained the model.
    pub pneumo_version: String,
    /// When training finished, in seconds since the Unix epoch.
    pub created_unix: u64,
    /// The network's architecture.
    pub network: NetConfig,
    /// Trainable parameters.
    pub parameters: usize,
    /// Forward-pass floating-point operations per image.
    pub forward_flops: u64,
    /// How an image becomes the network's input.
    pub preprocessing: Preprocessing,
    /// Class names in output order; the output probability is that of the second.
    pub classes: Vec<String>,
    /// Probability of pneumonia at or above which an image is called pneumonia.
    pub threshold: f32,
    /// How the threshold was chosen.
    pub threshold_rule: ThresholdRule,
    /// Temperature dividing the logit before the sigmoid (calibration fitted on validation).
    pub temperature: f32,
    /// Calibrated probabilities inside this band are flagged "uncertain — refer".
    pub uncertain_band: UncertainBand,
    /// The full training configuration, seed included.
    pub training: TrainConfig,
    /// What the model was trained and validated on.
    pub data: DataRecord,
    /// The epoch (1-based) whose weights were kept, and how many ran.
    pub best_epoch: usize,
    /// Epochs that ran before training stopped.
    pub epochs_run: usize,
    /// Figures on the validation split at the stored threshold.
    pub validation: Metrics,
    /// Figures at the stored threshold on perturbed copies of the validation images (see
    /// [`crate::training::TrainConfig::threshold_stress_copies`]): how the model holds up when image statistics
    /// change. Absent when no copies were made.
    #[serde(default)]
    pub stressed_validation: Option<Metrics>,
}

/// Where a model's data came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataRecord {
    /// SHA-256 of the sorted training file list (see [`crate::data::manifest_hash`]).
    pub train_manifest_sha256: String,
    /// SHA-256 of the sorted validation file list.
    pub validation_manifest_sha256: String,
    /// Training images: `[normal, pneumonia]`.
    pub train_counts: [usize; 2],
    /// Validation images: `[normal, pneumonia]`.
    pub validation_counts: [usize; 2],
    /// Validation images as `split/CLASS/file`, relative to the dataset root, so the split can
    /// be evaluated again (`evaluate --split validation`).
    pub validation_files: Vec<String>,
}

/// A model ready to run: its card and its weights.
pub struct Bundle {
    /// The model card.
    pub card: Card,
    /// The weights, as a burnpack record.
    record: Bytes,
    /// Where the bundle came from, for messages.
    pub source: String,
}

impl Bundle {
    /// Creates a bundle from a trained network and its card.
    pub fn from_model(model: PneumoNet, card: Card) -> Result<Self> {
        let record = model
            .into_record()
            .into_bytes()
            .map_err(|e| Error::Bundle {
                path: card.model_id.clone(),
                reason: format!("cannot serialise weights: {e}"),
            })?;
        Ok(Self {
            card,
            record,
            source: "<memory>".into(),
        })
    }

    /// Writes the bundle into `dir` (created if needed), each file atomically.
    pub fn save(&self, dir: &Path) -> Result<()> {
        let card = serde_json::to_vec_pretty(&self.card).map_err(|e| Error::Bundle {
            path: dir.display().to_string(),
            reason: format!("cannot serialise card: {e}"),
        })?;
        write_atomic(&dir.join(WEIGHTS_FILE), &self.record)?;
        write_atomic(&dir.join(CARD_FILE), &card)
    }

    /// Reads a bundle folder and checks that its card matches this build of pneumo.
    pub fn load(dir: &Path) -> Result<Self> {
        let source = dir.display().to_string();
        let bundle_error = |reason: String| Error::Bundle {
            path: source.clone(),
            reason,
        };
        if !dir.is_dir() {
            return Err(bundle_error("not a folder".into()));
        }

        let card_path = dir.join(CARD_FILE);
        let card_text = std::fs::read(&card_path).map_err(|e| Error::io(&card_path, e))?;
        let weights_path = dir.join(WEIGHTS_FILE);
        let weights = std::fs::read(&weights_path).map_err(|e| Error::io(&weights_path, e))?;
        Self::from_parts(&card_text, weights, source)
    }

    /// Builds a bundle from a card's JSON text and the weights' bytes.
    pub fn from_parts(card_json: &[u8], weights: Vec<u8>, source: String) -> Result<Self> {
        let card: Card = serde_json::from_slice(card_json).map_err(|e| Error::Bundle {
            path: source.clone(),
            reason: format!("{CARD_FILE} is not a valid model card: {e}"),
        })?;
        check_card(&card).map_err(|reason| Error::Bundle {
            path: source.clone(),
            reason,
        })?;
        Ok(Self {
            card,
            record: Bytes::from_bytes_vec(weights),
            source,
        })
    }

    /// The model compiled into this binary, if the build had one.
    pub fn builtin() -> Result<Self> {
        builtin::load()
    }

    /// Loads `path` if given, the built-in model otherwise.
    pub fn load_or_builtin(path: Option<&Path>) -> Result<Self> {
        match path {
            Some(dir) => Self::load(dir),
            None => Self::builtin(),
        }
    }

    /// Builds the network described by the card on `device` and loads the weights into it.
    pub fn model(&self, device: &Device) -> Result<PneumoNet> {
        let record = ModuleRecord::from_bytes(self.record.clone()).map_err(|e| Error::Bundle {
            path: self.source.clone(),
            reason: format!("{WEIGHTS_FILE} cannot be read: {e}"),
        })?;
        self.card
            .network
            .init(device)
            .try_load_record(record)
            .map_err(|e| Error::Bundle {
                path: self.source.clone(),
                reason: format!("{WEIGHTS_FILE} does not fit the card's network: {e}"),
            })
    }
}

/// Checks that a card describes a model this build can run, saying what does not match.
fn check_card(card: &Card) -> std::result::Result<(), String> {
    if card.format != CARD_FORMAT {
        return Err(format!(
            "card format {} is not {CARD_FORMAT}, the one this build reads",
            card.format
        ));
    }
    card.network.check().map_err(|e| e.to_string())?;
    card.preprocessing
        .check_supported()
        .map_err(|e| e.to_string())?;
    if card.classes != ["NORMAL", "PNEUMONIA"] {
        return Err(format!(
            "classes {:?} are not [NORMAL, PNEUMONIA]",
            card.classes
        ));
    }
    if !(card.threshold > 0.0 && card.threshold < 1.0) {
        return Err(format!("threshold {} is not in (0, 1)", card.threshold));
    }
    let band = &card.uncertain_band;
    if !(band.low <= card.threshold && card.threshold <= band.high) {
        return Err(format!(
            "uncertain band [{}, {}] does not contain the threshold {}",
            band.low, band.high, card.threshold
        ));
    }
    if !(card.temperature > 0.0 && card.temperature.is_finite()) {
        return Err(format!("temperature {} is not positive", card.temperature));
    }
    Ok(())
}

/// The bundle folder that `pneumo train` writes inside a run folder.
pub fn bundle_dir(run_dir: &Path) -> PathBuf {
    run_dir.join("model")
}

#[cfg(has_default_model)]
mod builtin {
    //! The default model, compiled in from `models/default/`.

    use super::*;

    const CARD: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/default/card.json"
    ));
    const WEIGHTS: &[u8] = include_bytes!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/default/weights.bpk"
    ));

    /// Loads the compiled-in bundle.
    pub fn load() -> Result<Bundle> {
        Bundle::from_parts(CARD, WEIGHTS.to_vec(), "<built-in>".into())
    }
}

#[cfg(not(has_default_model))]
mod builtin {
    //! This build has no compiled-in model: `models/default/` was absent when it was built.

    use super::*;

    /// Always fails, naming the missing folder.
    pub fn load() -> Result<Bundle> {
        Err(Error::Bundle {
            path: "<built-in>".into(),
            reason: "this build has no default model (models/default/ was missing when it was \
                     built); pass --model DIR"
                .into(),
        })
    }
}
