//! Running a frozen model over images: the one path shared by `predict`, `evaluate` and
//! training's own validation.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::prelude::*;
use rayon::prelude::*;
use serde::Serialize;

use crate::bundle::{Bundle, Card};
use crate::data::is_image_file;
use crate::error::{Error, Result};
use crate::metrics::sigmoid;
use crate::model::PneumoNet;
use crate::native::NativeNetwork;

/// Images per forward pass at inference.
pub const INFERENCE_BATCH: usize = 32;

/// A loaded model in inference mode, with its card. The network runs on the native CPU engine
/// ([`NativeNetwork`]), which computes what the burn module computes, several times faster.
pub struct Classifier {
    network: NativeNetwork,
    /// The model card of the loaded bundle.
    pub card: Card,
}

/// One image's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Prediction {
    /// The image, as given.
    pub path: String,
    /// `NORMAL` or `PNEUMONIA`, at the model's stored threshold.
    pub label: String,
    /// Calibrated probability of pneumonia.
    pub probability: f32,
    /// The threshold the label was decided at.
    pub threshold: f32,
    /// True when the probability lies in the model's "uncertain — refer" band: a person
    /// should read this image.
    pub uncertain: bool,
    /// The model's identifier.
    pub model: String,
}

impl Classifier {
    /// Loads `bundle`'s network in inference mode.
    pub fn new(bundle: &Bundle) -> Result<Self> {
        let model = bundle.model(&Device::flex())?.valid();
        let card = bundle.card.clone();
        let network = NativeNetwork::from_model(
            &model,
            &card.network,
            card.preprocessing.input_size as usize,
        )?;
        Ok(Self { network, card })
    }

    /// Raw logits for preprocessed inputs (each `size * size` values, the card's input size).
    pub fn logits(&self, inputs: &[Vec<f32>]) -> Result<Vec<f32>> {
        self.network.logits(inputs)
    }

    /// Calibrated probabilities of pneumonia for preprocessed inputs.
    pub fn probabilities(&self, inputs: &[Vec<f32>]) -> Result<Vec<f32>> {
        let temperature = self.card.temperature;
        Ok(self
            .logits(inputs)?
            .into_iter()
            .map(|z| sigmoid(z / temperature))
            .collect())
    }

    /// Reads and classifies image files, decoding in parallel. Each entry is the prediction or
    /// the reason that image could not be read; one bad file does not stop the others.
    pub fn predict_files(&self, paths: &[PathBuf]) -> Vec<Result<Prediction>> {
        let mut results = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(INFERENCE_BATCH) {
            let decoded: Vec<Result<Vec<f32>>> = chunk
                .par_iter()
                .map(|p| self.card.preprocessing.load_file(p))
                .collect();
            let inputs: Vec<Vec<f32>> = decoded
                .iter()
                .filter_map(|r| r.as_ref().ok().cloned())
                .collect();
            let mut probabilities = match self.probabilities(&inputs) {
                Ok(probabilities) => probabilities.into_iter(),
                Err(e) => {
                    let reason = e.to_string();
                    results.extend(chunk.iter().map(|_| Err(Error::Training(reason.clone()))));
                    continue;
                }
            };

            for (path, decoded) in chunk.iter().zip(decoded) {
                results.push(decoded.map(|_| {
                    let probability = probabilities.next().unwrap_or(f32::NAN);
                    self.prediction(path.display().to_string(), probability)
                }));
            }
        }
        results
    }

    /// Classifies one image given as bytes (named `input` in errors).
    pub fn predict_bytes(&self, bytes: &[u8], input: &str) -> Result<Prediction> {
        let pixels = self.card.preprocessing.load_bytes(bytes, input)?;
        let probability = self.probabilities(&[pixels])?[0];
        Ok(self.prediction(input.to_string(), probability))
    }

    /// Turns a probability into a labelled prediction at the stored threshold.
    fn prediction(&self, path: String, probability: f32) -> Prediction {
        let label = if probability >= self.card.threshold {
            "PNEUMONIA"
        } else {
            "NORMAL"
        };
        Prediction {
            path,
            label: label.into(),
            probability,
            threshold: self.card.threshold,
            uncertain: self.card.uncertain_band.contains(probability),
            model: self.card.model_id.clone(),
        }
    }
}

/// Logits of `model` (already in inference mode) for preprocessed `size`×`size` inputs.
pub fn logits_of(model: &PneumoNet, inputs: &[Vec<f32>], size: usize, device: &Device) -> Vec<f32> {
    let mut logits = Vec::with_capacity(inputs.len());
    for chunk in inputs.chunks(INFERENCE_BATCH) {
        let mut flat = Vec::with_capacity(chunk.len() * size * size);
        for image in chunk {
            flat.extend_from_slice(image);
        }
        let batch =
            Tensor::<4>::from_data(TensorData::new(flat, [chunk.len(), 1, size, size]), device);
        let out = model.forward(batch).into_data();
        logits.extend(out.iter::<f32>());
    }
    logits
}

/// Expands files and folders into the image files to classify: a folder contributes every
/// image below it, sorted; a file is taken as given, whatever its name, so that a wrong file
/// gets a clear error rather than silence.
pub fn collect_inputs(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found = Vec::new();
            walk_images(path, &mut found)?;
            found.sort();
            files.extend(found);
        } else {
            files.push(path.clone());
        }
    }
    Ok(files)
}

/// Adds every image file under `dir` to `found`.
fn walk_images(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_dir() {
            walk_images(&path, found)?;
        } else if is_image_file(&path) {
            found.push(path);
        }
    }
    Ok(())
}
