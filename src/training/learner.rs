//! The thing that learns: the network and its optimiser state behind one interface, on either
//! training engine, so that the loop in [`super::train`] does not care which one runs.

use std::path::Path;

use burn::module::Module;
use burn::optim::{AdamWConfig, ModuleOptimizer};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

use super::{TrainConfig, TrainingBatch, load_weights, optimization_step, save_weights};
use crate::data::write_atomic;
use crate::error::{Error, Result};
use crate::inference::logits_of;
use crate::model::PneumoNet;
use crate::native::NativeTrainer;

/// Which code computes the training steps. Both train the same network with the same loss and
/// the same AdamW update; their dropout masks and rounding differ. The native engine is not
/// bit-reproducible across runs: its threads add floating-point partial results in varying
/// order, so two runs with one seed follow close but different paths (reductions in a fixed
/// order would make them equal).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// pneumo's own CPU kernels ([`crate::native`]): several times faster than burn's CPU
    /// backend on this network.
    #[default]
    Native,
    /// burn's autodiff on its pure-Rust CPU backend: slower, but the route to burn's other
    /// backends.
    Burn,
}

/// The network being trained and its optimiser, on one engine.
pub enum Learner {
    /// The native engine holds weights and AdamW moments itself.
    Native(NativeTrainer),
    /// burn's module and optimiser on an autodiff device.
    Burn(Box<BurnLearner>),
}

/// burn's side of a [`Learner`].
pub struct BurnLearner {
    /// The module being trained.
    model: PneumoNet,
    /// AdamW's state.
    optimizer: ModuleOptimizer,
    /// The autodiff device `model` lives on.
    device: Device,
}

impl Learner {
    /// A learner for `config` starting from `model` (freshly initialised or loaded from a
    /// checkpoint) with fresh optimiser state. `model` lives on `device`, an autodiff device.
    pub fn new(model: PneumoNet, config: &TrainConfig, device: &Device) -> Result<Self> {
        Ok(match config.engine {
            Engine::Native => Self::Native(NativeTrainer::from_model(&model, config)?),
            Engine::Burn => Self::Burn(Box::new(BurnLearner {
                model,
                optimizer: AdamWConfig::new()
                    .with_weight_decay(config.weight_decay)
                    .init(),
                device: device.clone(),
            })),
        })
    }

    /// One optimisation step on `batch` at `learning_rate`; returns the batch's mean loss.
    pub fn step(&mut self, batch: TrainingBatch, size: usize, learning_rate: f64) -> Result<f64> {
        match self {
            Self::Native(trainer) => trainer.step(&batch, learning_rate),
            Self::Burn(burn) => {
                // `optimization_step` takes the module by value; a clone (which shares the
                // tensors) holds its place for the duration of the call.
                let placeholder = burn.model.clone();
                let current = std::mem::replace(&mut burn.model, placeholder);
                let (updated, loss) = optimization_step(
                    current,
                    &mut burn.optimizer,
                    batch,
                    size,
                    learning_rate,
                    &burn.device,
                );
                burn.model = updated;
                Ok(loss)
            }
        }
    }

    /// Logits of normalised `images` in inference mode (running batch-norm statistics, no
    /// dropout), for validation after an epoch.
    pub fn logits(&self, images: &[Vec<f32>], size: usize) -> Result<Vec<f32>> {
        match self {
            Self::Native(trainer) => trainer.logits(images),
            Self::Burn(burn) => Ok(logits_of(
                &burn.model.valid(),
                images,
                size,
                &burn.device.clone().inner(),
            )),
        }
    }

    /// The current weights as a burn module in inference mode, on the plain `device`.
    pub fn inference_model(&self, config: &TrainConfig, device: &Device) -> PneumoNet {
        match self {
            Self::Native(trainer) => trainer.to_model(config, device),
            Self::Burn(burn) => burn.model.valid(),
        }
    }

    /// Writes the weights to `model_path` and the optimiser state to `optimizer_path`, each
    /// atomically.
    pub fn save(
        &self,
        config: &TrainConfig,
        model_path: &Path,
        optimizer_path: &Path,
    ) -> Result<()> {
        match self {
            Self::Native(trainer) => {
                let model = trainer.to_model(config, &Device::flex());
                save_weights(&model, model_path)?;
                write_atomic(optimizer_path, &trainer.optimizer_state())
            }
            Self::Burn(burn) => {
                // N.B. A module in training mode records its batch-norm running statistics as
                // of one update ago; `valid` brings them up to date first.
                save_weights(&burn.model.valid(), model_path)?;
                let bytes = burn.optimizer.into_bytes().map_err(|e| {
                    Error::Training(format!("cannot serialise optimiser state: {e}"))
                })?;
                write_atomic(optimizer_path, &bytes)
            }
        }
    }

    /// Restores a learner saved by [`Learner::save`] for `config`.
    pub fn load(
        config: &TrainConfig,
        device: &Device,
        model_path: &Path,
        optimizer_path: &Path,
    ) -> Result<Self> {
        let model = load_weights(config.network.init(device), model_path)?;
        let unreadable = |e: String| {
            Error::Training(format!(
                "cannot read optimiser state `{}`: {e}",
                optimizer_path.display()
            ))
        };
        match Self::new(model, config, device)? {
            Self::Native(mut trainer) => {
                let bytes = std::fs::read(optimizer_path).map_err(|e| unreadable(e.to_string()))?;
                trainer.load_optimizer_state(&bytes)?;
                Ok(Self::Native(trainer))
            }
            Self::Burn(mut burn) => {
                burn.optimizer = burn
                    .optimizer
                    .load(optimizer_path)
                    .map_err(|e| unreadable(e.to_string()))?;
                Ok(Self::Burn(burn))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NetConfig;

    const SIZE: usize = 16;

    fn config(engine: Engine) -> TrainConfig {
        TrainConfig {
            input_size: SIZE as u32,
            network: NetConfig {
                widths: vec![4, 6, 8],
                ..NetConfig::default()
            },
            engine,
            ..TrainConfig::default()
        }
    }

    /// A batch of four images whose pixels depend on `step`, two of each class.
    fn batch(step: usize) -> TrainingBatch {
        TrainingBatch {
            images: (0..4 * SIZE * SIZE)
                .map(|i| (((i * 31 + step * 17) % 97) as f32 / 48.0) - 1.0)
                .collect(),
            targets: vec![0.0, 1.0, 0.0, 1.0],
            weights: vec![1.0; 4],
        }
    }

    fn images() -> Vec<Vec<f32>> {
        batch(99)
            .images
            .chunks(SIZE * SIZE)
            .map(<[f32]>::to_vec)
            .collect()
    }

    #[test]
    fn a_saved_learner_continues_where_it_stopped_on_either_engine() {
        for engine in [Engine::Native, Engine::Burn] {
            let mut config = config(engine);
            if engine == Engine::Burn {
                // burn draws dropout masks from the device's generator, whose state a checkpoint
                // does not hold; the native engine derives them from the seed and the step.
                config.network.dropout = 0.0;
            }
            let device = Device::flex().autodiff();
            device.seed(5);
            let mut original =
                Learner::new(config.network.init(&device), &config, &device).expect("learner");
            for step in 0..3 {
                let loss = original.step(batch(step), SIZE, 1e-2).expect("step");
                assert!(loss.is_finite());
            }

            let dir = tempfile::tempdir().expect("temporary folder");
            let (model_path, optimizer_path) = (dir.path().join("m.bpk"), dir.path().join("o"));
            original
                .save(&config, &model_path, &optimizer_path)
                .expect("save");
            let mut restored =
                Learner::load(&config, &device, &model_path, &optimizer_path).expect("load");

            // The next step and the logits after it agree: weights, batch-norm state and AdamW
            // moments all came back.
            let next_original = original.step(batch(3), SIZE, 1e-2).expect("step");
            let next_restored = restored.step(batch(3), SIZE, 1e-2).expect("step");
            assert!(
                (next_original - next_restored).abs() < 1e-4,
                "{engine:?}: loss {next_original} vs {next_restored}"
            );
            let a = original.logits(&images(), SIZE).expect("logits");
            let b = restored.logits(&images(), SIZE).expect("logits");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() < 1e-3, "{engine:?}: logit {x} vs {y}");
            }

            // A learner made afresh from the same weights but without the optimiser state
            // takes a different step: the state is what made them agree.
            let model = load_weights(config.network.init(&device), &model_path).expect("weights");
            let mut fresh = Learner::new(model, &config, &device).expect("learner");
            fresh.step(batch(3), SIZE, 1e-2).expect("step");
            let c = fresh.logits(&images(), SIZE).expect("logits");
            let largest = a
                .iter()
                .zip(&c)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max);
            assert!(
                largest > 1e-3,
                "{engine:?}: optimiser state made no difference"
            );
        }
    }

    #[test]
    fn optimiser_state_of_one_engine_is_refused_by_the_other() {
        let native = config(Engine::Native);
        let device = Device::flex().autodiff();
        let learner =
            Learner::new(native.network.init(&device), &native, &device).expect("learner");
        let dir = tempfile::tempdir().expect("temporary folder");
        let (model_path, optimizer_path) = (dir.path().join("m.bpk"), dir.path().join("o"));
        learner
            .save(&native, &model_path, &optimizer_path)
            .expect("save");

        let burn = config(Engine::Burn);
        assert!(Learner::load(&burn, &device, &model_path, &optimizer_path).is_err());
    }
}
