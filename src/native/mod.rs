//! The native CPU engine: forward pass, backward pass and AdamW for [`PneumoNet`], written
//! directly on `f32` buffers instead of going through burn's autodiff graph.
//!
//! burn's pure-Rust backend computes a convolution's input and weight gradients through generic
//! transposed convolutions and keeps one core idle for much of a step. This engine knows the
//! network's shape (3×3 convolutions with padding 1, batch norm, ReLU, 2×2 max pooling, global
//! average pooling, dropout, one linear logit), so it can lay every convolution out as one
//! im2col buffer and three matrix products per image (output, weight gradient, input gradient),
//! keep the im2col buffers from the forward pass for the backward pass, and spread images over
//! threads. The arithmetic is the same as the burn model's: the same batch-norm statistics
//! (biased variance, momentum 0.1, epsilon 1e-5), the same loss, the same AdamW update; the
//! tests compare gradients and updates with burn's on random inputs.
//!
//! Weights move between the two as a [`PneumoNet`]: [`NativeTrainer::from_model`] reads one,
//! [`NativeTrainer::to_model`] writes one, so bundles, checkpoints and inference are unchanged.

pub mod kernels;

use burn::module::{Param, RunningState};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::model::{NetConfig, PneumoNet};
use crate::training::{TrainConfig, TrainingBatch};
use kernels::{ConvGeometry, MatrixView, channel_moments, col2im, im2col, matmul, max_pool};

/// Batch-norm momentum of burn's `BatchNorm` default: running = 0.9·running + 0.1·batch.
const NORM_MOMENTUM: f64 = 0.1;
/// Batch-norm epsilon of burn's `BatchNorm` default.
const NORM_EPSILON: f64 = 1e-5;
/// AdamW settings of burn's `AdamWConfig` defaults, which the burn engine uses.
const BETA_1: f32 = 0.9;
const BETA_2: f32 = 0.999;
const ADAM_EPSILON: f32 = 1e-5;
/// First bytes of a saved optimiser state.
const STATE_MAGIC: &[u8; 16] = b"pneumo-adamw-v1\n";

/// One convolutional stage's weights and batch-norm state.
#[derive(Debug, Clone)]
struct Stage {
    /// Geometry of the convolution at the training input size.
    geometry: ConvGeometry,
    /// Output channels.
    channels_out: usize,
    /// Whether 2×2 max pooling follows.
    pooled: bool,
    /// Convolution weight, `channels_out × (channels_in·9)` row-major (burn's `[o, i, 3, 3]`).
    weight: Vec<f32>,
    /// Batch-norm scale.
    gamma: Vec<f32>,
    /// Batch-norm shift.
    beta: Vec<f32>,
    /// Batch-norm running mean, for inference.
    running_mean: Vec<f32>,
    /// Batch-norm running (biased) variance, for inference.
    running_var: Vec<f32>,
}

/// What a stage's forward pass keeps for its backward pass.
struct StageCache {
    /// im2col buffers of every image, `images × patch_len × pixels_out`.
    columns: Vec<f32>,
    /// Batch-normalised convolution output before scale and shift.
    normalized: Vec<f32>,
    /// Output of the ReLU, before pooling.
    activated: Vec<f32>,
    /// Winning tap of every pooled pixel (empty when the stage is not pooled).
    winners: Vec<u8>,
    /// `1 / sqrt(batch variance + epsilon)` per channel.
    inverse_std: Vec<f32>,
}

/// Gradients of one stage's trainable parameters.
struct StageGradients {
    weight: Vec<f32>,
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// AdamW moments of one parameter tensor.
#[derive(Debug, Clone)]
struct Moments {
    first: Vec<f32>,
    second: Vec<f32>,
}

impl Moments {
    fn zeros(len: usize) -> Self {
        Self {
            first: vec![0.0; len],
            second: vec![0.0; len],
        }
    }
}

/// The network's weights and batch-norm state as plain buffers, with the inference-mode forward
/// pass (running statistics, no dropout): what `predict` and `evaluate` run.
#[derive(Debug, Clone)]
pub struct NativeNetwork {
    /// The convolutional stages, input first.
    stages: Vec<Stage>,
    /// Linear head weight, one per feature.
    head_weight: Vec<f32>,
    /// Linear head bias.
    head_bias: Vec<f32>,
    /// Side of the square input.
    input_size: usize,
}

/// Trains a [`PneumoNet`] on the CPU with hand-written kernels; see the module documentation.
#[derive(Debug, Clone)]
pub struct NativeTrainer {
    /// The weights being trained.
    network: NativeNetwork,
    /// AdamW moments, in [`NativeTrainer::parameters_mut`] order.
    moments: Vec<Moments>,
    /// Optimisation steps taken so far (AdamW's time).
    steps: u64,
    /// Dropout probability on the pooled features.
    dropout: f64,
    /// AdamW decoupled weight decay.
    weight_decay: f64,
    /// Seed of the dropout masks.
    seed: u64,
}

impl NativeNetwork {
    /// Takes the weights and batch-norm state of `model`, built from `network` for square
    /// inputs of side `input_size`.
    pub fn from_model(model: &PneumoNet, network: &NetConfig, input_size: usize) -> Result<Self> {
        let widths = &network.widths;
        if model.stages.len() != widths.len() {
            return Err(Error::Training(format!(
                "the model has {} stages, its configuration {}",
                model.stages.len(),
                widths.len()
            )));
        }

        let mut stages = Vec::with_capacity(widths.len());
        let (mut channels_in, mut side) = (1, input_size);
        for (stage, &channels_out) in model.stages.iter().zip(widths) {
            let geometry = ConvGeometry {
                channels_in,
                height_in: side,
                width_in: side,
                stride: stage.conv.stride[0],
            };
            let read = |tensor: Tensor<1>, what: &str| read_values(tensor, channels_out, what);
            stages.push(Stage {
                geometry,
                channels_out,
                pooled: stage.pooled,
                weight: read_values(
                    stage.conv.weight.val(),
                    channels_out * channels_in * 9,
                    "convolution weight",
                )?,
                gamma: read(stage.norm.gamma.val(), "batch-norm scale")?,
                beta: read(stage.norm.beta.val(), "batch-norm shift")?,
                running_mean: read(stage.norm.running_mean.value(), "running mean")?,
                running_var: read(stage.norm.running_var.value(), "running variance")?,
            });
            side = geometry.height_out();
            if stage.pooled {
                side /= 2;
            }
            if side == 0 {
                return Err(Error::Config(format!(
                    "input size {input_size} is too small for {} stages",
                    widths.len()
                )));
            }
            channels_in = channels_out;
        }

        let head_weight = read_values(model.head.weight.val(), channels_in, "head weight")?;
        let head_bias = match &model.head.bias {
            Some(bias) => read_values(bias.val(), 1, "head bias")?,
            None => vec![0.0],
        };

        Ok(Self {
            stages,
            head_weight,
            head_bias,
            input_size,
        })
    }

    /// The same network as a burn module on `device`, built from `network` (the one this
    /// network was read with) and filled with its weights and batch-norm state.
    pub fn to_model(&self, network: &NetConfig, device: &Device) -> PneumoNet {
        let mut model = network.init(device);
        let vector = |values: &[f32]| {
            Tensor::<1>::from_data(TensorData::new(values.to_vec(), [values.len()]), device)
        };

        for (target, stage) in model.stages.iter_mut().zip(&self.stages) {
            let shape = [stage.channels_out, stage.geometry.channels_in, 3, 3];
            let weight =
                Tensor::<4>::from_data(TensorData::new(stage.weight.clone(), shape), device);
            target.conv.weight = target.conv.weight.clone().map(|_| weight);
            target.norm.gamma = target.norm.gamma.clone().map(|_| vector(&stage.gamma));
            target.norm.beta = target.norm.beta.clone().map(|_| vector(&stage.beta));
            target.norm.running_mean = RunningState::new(vector(&stage.running_mean));
            target.norm.running_var = RunningState::new(vector(&stage.running_var));
        }
        let features = self.head_weight.len();
        let head_weight = Tensor::<2>::from_data(
            TensorData::new(self.head_weight.clone(), [features, 1]),
            device,
        );
        model.head.weight = model.head.weight.clone().map(|_| head_weight);
        let bias = vector(&self.head_bias);
        model.head.bias = Some(match model.head.bias.take() {
            Some(existing) => existing.map(|_| bias),
            None => Param::from_tensor(bias),
        });
        model
    }

    /// Logits of `images` (each `input_size²` normalised pixels) in inference mode: running
    /// batch-norm statistics, no dropout. Images are spread over threads.
    pub fn logits(&self, images: &[Vec<f32>]) -> Result<Vec<f32>> {
        let expected = self.input_size * self.input_size;
        if let Some(bad) = images.iter().find(|image| image.len() != expected) {
            return Err(Error::Training(format!(
                "an image has {} pixels, the network takes {expected}",
                bad.len()
            )));
        }
        Ok(images
            .par_iter()
            .map(|image| self.infer_one(image))
            .collect())
    }

    /// Side of the square input the network was read for.
    pub fn input_size(&self) -> usize {
        self.input_size
    }

    /// The logit of one image in inference mode.
    fn infer_one(&self, image: &[f32]) -> f32 {
        let mut activations = image.to_vec();
        let mut columns = Vec::new();
        for stage in &self.stages {
            activations = stage.forward_inference(&activations, &mut columns);
        }
        let pixels = self
            .stages
            .last()
            .map_or(activations.len(), |s| s.geometry.pixels_out());
        let features = activations
            .chunks(pixels)
            .map(|plane| plane.iter().sum::<f32>() / pixels as f32);
        features
            .zip(&self.head_weight)
            .map(|(x, w)| x * w)
            .sum::<f32>()
            + self.head_bias[0]
    }
}

impl NativeTrainer {
    /// Takes the weights and batch-norm state of `model`, built from `config.network`, with
    /// fresh optimiser state.
    pub fn from_model(model: &PneumoNet, config: &TrainConfig) -> Result<Self> {
        let network =
            NativeNetwork::from_model(model, &config.network, config.input_size as usize)?;
        let mut trainer = Self {
            network,
            moments: Vec::new(),
            steps: 0,
            dropout: config.network.dropout,
            weight_decay: f64::from(config.weight_decay),
            seed: config.seed,
        };
        trainer.moments = trainer
            .parameters_mut()
            .iter()
            .map(|p| Moments::zeros(p.len()))
            .collect();
        Ok(trainer)
    }

    /// The same network as a burn module on `device`, built from `config` (the one this
    /// trainer was made with) and filled with the current weights and batch-norm state.
    pub fn to_model(&self, config: &TrainConfig, device: &Device) -> PneumoNet {
        self.network.to_model(&config.network, device)
    }

    /// The weights as they are now.
    pub fn network(&self) -> &NativeNetwork {
        &self.network
    }

    /// Optimisation steps taken so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// One optimisation step on `batch`: forward pass in training mode (batch statistics,
    /// dropout), weighted binary cross-entropy, backward pass and an AdamW update at
    /// `learning_rate`. Returns the batch's mean loss (not finite if training diverged).
    pub fn step(&mut self, batch: &TrainingBatch, learning_rate: f64) -> Result<f64> {
        let (loss, gradients) = self.loss_and_gradients(batch)?;
        self.apply_adamw(&gradients, learning_rate);
        Ok(loss)
    }

    /// Logits of `images` in inference mode; see [`NativeNetwork::logits`].
    pub fn logits(&self, images: &[Vec<f32>]) -> Result<Vec<f32>> {
        self.network.logits(images)
    }

    /// The optimiser state (AdamW moments and step count) as bytes, for checkpoints.
    pub fn optimizer_state(&self) -> Vec<u8> {
        let floats: usize = self.moments.iter().map(|m| 2 * m.first.len()).sum();
        let mut bytes =
            Vec::with_capacity(STATE_MAGIC.len() + 16 + 8 * self.moments.len() + 4 * floats);
        bytes.extend_from_slice(STATE_MAGIC);
        bytes.extend_from_slice(&self.steps.to_le_bytes());
        bytes.extend_from_slice(&(self.moments.len() as u64).to_le_bytes());
        for moments in &self.moments {
            bytes.extend_from_slice(&(moments.first.len() as u64).to_le_bytes());
            for value in moments.first.iter().chain(&moments.second) {
                bytes.extend_from_slice(&value.to_le_bytes());
            }
        }
        bytes
    }

    /// Restores an optimiser state written by [`NativeTrainer::optimizer_state`] for the same
    /// network. On error the trainer is unchanged.
    pub fn load_optimizer_state(&mut self, bytes: &[u8]) -> Result<()> {
        let corrupt = |reason: &str| Error::Training(format!("optimiser state: {reason}"));
        let mut reader = ByteReader { bytes, at: 0 };
        if reader.take(STATE_MAGIC.len()) != Some(STATE_MAGIC.as_slice()) {
            return Err(corrupt("not a native-engine optimiser state"));
        }
        let steps = reader.u64().ok_or_else(|| corrupt("truncated"))?;
        let count = reader.u64().ok_or_else(|| corrupt("truncated"))?;
        if count != self.moments.len() as u64 {
            return Err(corrupt("it belongs to a different network"));
        }

        let mut restored = Vec::with_capacity(self.moments.len());
        for current in &self.moments {
            let len = reader.u64().ok_or_else(|| corrupt("truncated"))?;
            if len != current.first.len() as u64 {
                return Err(corrupt("it belongs to a different network"));
            }
            let first = reader
                .floats(current.first.len())
                .ok_or_else(|| corrupt("truncated"))?;
            let second = reader
                .floats(current.first.len())
                .ok_or_else(|| corrupt("truncated"))?;
            restored.push(Moments { first, second });
        }
        if reader.at != bytes.len() {
            return Err(corrupt("trailing bytes"));
        }

        self.moments = restored;
        self.steps = steps;
        Ok(())
    }

    /// Trainable parameters in a fixed order: per stage weight, scale, shift; then the head's
    /// weight and bias.
    fn parameters_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut parameters = Vec::with_capacity(3 * self.network.stages.len() + 2);
        for stage in &mut self.network.stages {
            parameters.push(&mut stage.weight);
            parameters.push(&mut stage.gamma);
            parameters.push(&mut stage.beta);
        }
        parameters.push(&mut self.network.head_weight);
        parameters.push(&mut self.network.head_bias);
        parameters
    }

    /// Forward and backward pass: the batch's mean loss and the gradient of every trainable
    /// parameter, in [`NativeTrainer::parameters_mut`] order. Updates the batch-norm running
    /// statistics, as a training-mode forward pass does.
    fn loss_and_gradients(&mut self, batch: &TrainingBatch) -> Result<(f64, Vec<Vec<f32>>)> {
        let images = batch.targets.len();
        let pixels = self.network.input_size * self.network.input_size;
        if images == 0 || batch.images.len() != images * pixels || batch.weights.len() != images {
            return Err(Error::Training(format!(
                "a batch of {images} targets, {} weights and {} pixels does not fit {pixels}-pixel images",
                batch.weights.len(),
                batch.images.len()
            )));
        }

        // Forward through the stages.
        let mut caches = Vec::with_capacity(self.network.stages.len());
        let mut activations = batch.images.clone();
        for stage in &mut self.network.stages {
            let (output, cache) = stage.forward_train(&activations, images);
            caches.push(cache);
            activations = output;
        }

        // Global average pooling, dropout and the linear head.
        let last = self
            .network
            .stages
            .last()
            .map(|s| (s.channels_out, s.geometry.pixels_out()));
        let (features, pixels_last) = last.unwrap_or((1, pixels));
        let pooled: Vec<f32> = activations
            .chunks(pixels_last)
            .map(|plane| plane.iter().sum::<f32>() / pixels_last as f32)
            .collect();
        let keep = self.dropout_mask(images * features);
        let dropped: Vec<f32> = pooled.iter().zip(&keep).map(|(v, k)| v * k).collect();
        let logits: Vec<f32> = dropped
            .chunks(features)
            .map(|row| {
                row.iter()
                    .zip(&self.network.head_weight)
                    .map(|(x, w)| x * w)
                    .sum::<f32>()
                    + self.network.head_bias[0]
            })
            .collect();

        // Weighted binary cross-entropy, (1 − t)·z − log σ(z), and its gradient w·(σ(z) − t)/n.
        let mut loss = 0.0f64;
        let mut logit_grads = Vec::with_capacity(images);
        for ((&z, &target), &weight) in logits.iter().zip(&batch.targets).zip(&batch.weights) {
            let log_sigmoid = -((-z).max(0.0) + (-z.abs()).exp().ln_1p());
            loss += (weight * ((1.0 - target) * z - log_sigmoid)) as f64;
            let probability = 1.0 / (1.0 + (-z).exp());
            logit_grads.push(weight * (probability - target) / images as f32);
        }
        loss /= images as f64;

        // Backward through the head, dropout and average pooling.
        let mut head_weight_grad = vec![0.0f32; features];
        for (row, &g) in dropped.chunks(features).zip(&logit_grads) {
            for (grad, x) in head_weight_grad.iter_mut().zip(row) {
                *grad += g * x;
            }
        }
        let head_bias_grad = vec![logit_grads.iter().sum::<f32>()];
        let mut upstream = vec![0.0f32; images * features * pixels_last];
        for (index, plane) in upstream.chunks_mut(pixels_last).enumerate() {
            let (image, feature) = (index / features, index % features);
            let grad = logit_grads[image] * self.network.head_weight[feature] * keep[index];
            plane.fill(grad / pixels_last as f32);
        }

        // Backward through the stages; the first needs no input gradient.
        let mut stage_grads = Vec::with_capacity(self.network.stages.len());
        for (index, (stage, cache)) in self.network.stages.iter().zip(caches).enumerate().rev() {
            let (input_grad, grads) = stage.backward(upstream, cache, images, index > 0);
            stage_grads.push(grads);
            upstream = input_grad.unwrap_or_default();
        }
        stage_grads.reverse();

        let mut gradients = Vec::with_capacity(3 * stage_grads.len() + 2);
        for grads in stage_grads {
            gradients.push(grads.weight);
            gradients.push(grads.gamma);
            gradients.push(grads.beta);
        }
        gradients.push(head_weight_grad);
        gradients.push(head_bias_grad);
        Ok((loss, gradients))
    }

    /// Dropout multipliers for `len` features: 0 with the dropout probability, otherwise
    /// `1 / (1 − p)`. Drawn from the seed and the step, so a resumed run draws the same masks.
    fn dropout_mask(&self, len: usize) -> Vec<f32> {
        if self.dropout <= 0.0 {
            return vec![1.0; len];
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x6472_6f70_6f75_7400 ^ self.steps);
        let scale = (1.0 / (1.0 - self.dropout)) as f32;
        (0..len)
            .map(|_| {
                if rng.random::<f64>() < self.dropout {
                    0.0
                } else {
                    scale
                }
            })
            .collect()
    }

    /// AdamW with decoupled weight decay, as burn's `AdamW`: decay the weights by
    /// `lr·weight_decay`, then subtract `lr · m̂ / (sqrt(v̂) + ε)`.
    fn apply_adamw(&mut self, gradients: &[Vec<f32>], learning_rate: f64) {
        self.steps += 1;
        let time = self.steps.min(i32::MAX as u64) as i32;
        let first_correction = 1.0 - BETA_1.powi(time);
        let second_correction = 1.0 - BETA_2.powi(time);
        let decay = (1.0 - learning_rate * self.weight_decay) as f32;
        let rate = learning_rate as f32;

        let mut moments = std::mem::take(&mut self.moments);
        for ((parameter, grad), moment) in self
            .parameters_mut()
            .into_iter()
            .zip(gradients)
            .zip(&mut moments)
        {
            for (((p, &g), m), v) in parameter
                .iter_mut()
                .zip(grad)
                .zip(&mut moment.first)
                .zip(&mut moment.second)
            {
                *m = BETA_1 * *m + (1.0 - BETA_1) * g;
                *v = BETA_2 * *v + (1.0 - BETA_2) * g * g;
                let update =
                    (*m / first_correction) / ((*v / second_correction).sqrt() + ADAM_EPSILON);
                *p = *p * decay - rate * update;
            }
        }
        self.moments = moments;
    }
}

impl Stage {
    /// Convolution, batch norm on batch statistics (updating the running ones), ReLU and
    /// pooling for `images` images. Returns the stage output and what the backward pass needs.
    fn forward_train(&mut self, input: &[f32], images: usize) -> (Vec<f32>, StageCache) {
        let geometry = self.geometry;
        let (patch, pixels) = (geometry.patch_len(), geometry.pixels_out());
        let channels = self.channels_out;
        let weight = MatrixView::new(&self.weight, channels, patch);

        // Convolution: im2col, then weight × columns, one image per task.
        let mut columns = vec![0.0f32; images * patch * pixels];
        let mut normalized = vec![0.0f32; images * channels * pixels];
        columns
            .par_chunks_mut(patch * pixels)
            .zip(normalized.par_chunks_mut(channels * pixels))
            .zip(input.par_chunks(geometry.channels_in * geometry.pixels_in()))
            .for_each(|((image_columns, output), image)| {
                im2col(image, &geometry, image_columns);
                matmul(
                    output,
                    weight,
                    MatrixView::new(image_columns, patch, pixels),
                    false,
                );
            });

        // Batch statistics, and the running ones.
        let moments: Vec<(f64, f64)> = (0..channels)
            .into_par_iter()
            .map(|channel| channel_moments(&normalized, channels, pixels, channel))
            .collect();
        let mut inverse_std = Vec::with_capacity(channels);
        for (channel, &(mean, variance)) in moments.iter().enumerate() {
            let running_mean = &mut self.running_mean[channel];
            *running_mean =
                ((1.0 - NORM_MOMENTUM) * *running_mean as f64 + NORM_MOMENTUM * mean) as f32;
            let running_var = &mut self.running_var[channel];
            *running_var =
                ((1.0 - NORM_MOMENTUM) * *running_var as f64 + NORM_MOMENTUM * variance) as f32;
            inverse_std.push((1.0 / (variance + NORM_EPSILON).sqrt()) as f32);
        }

        // Normalise in place, then scale, shift and ReLU.
        let mut activated = vec![0.0f32; normalized.len()];
        normalized
            .par_chunks_mut(pixels)
            .zip(activated.par_chunks_mut(pixels))
            .enumerate()
            .for_each(|(plane, (values, out))| {
                let channel = plane % channels;
                let (mean, inv) = (moments[channel].0 as f32, inverse_std[channel]);
                let (gamma, beta) = (self.gamma[channel], self.beta[channel]);
                for (value, out) in values.iter_mut().zip(out.iter_mut()) {
                    *value = (*value - mean) * inv;
                    *out = (gamma * *value + beta).max(0.0);
                }
            });

        // Pooling.
        let (output, winners) = if self.pooled {
            let (height, width) = (geometry.height_out(), geometry.width_out());
            let pooled_pixels = (height / 2) * (width / 2);
            let mut pooled = vec![0.0f32; images * channels * pooled_pixels];
            let mut winners = vec![0u8; pooled.len()];
            activated
                .par_chunks(pixels)
                .zip(pooled.par_chunks_mut(pooled_pixels))
                .zip(winners.par_chunks_mut(pooled_pixels))
                .for_each(|((plane, out), won)| max_pool(plane, height, width, out, won));
            (pooled, winners)
        } else {
            (activated.clone(), Vec::new())
        };

        let cache = StageCache {
            columns,
            normalized,
            activated,
            winners,
            inverse_std,
        };
        (output, cache)
    }

    /// The backward pass of [`Stage::forward_train`]: from the gradient of the stage output,
    /// the gradients of the weights and, if `input_grad`, of the stage input.
    fn backward(
        &self,
        output_grad: Vec<f32>,
        cache: StageCache,
        images: usize,
        input_grad: bool,
    ) -> (Option<Vec<f32>>, StageGradients) {
        let geometry = self.geometry;
        let (patch, pixels) = (geometry.patch_len(), geometry.pixels_out());
        let channels = self.channels_out;

        // Through the pooling and the ReLU.
        let mut grad = if self.pooled {
            let (height, width) = (geometry.height_out(), geometry.width_out());
            let pooled_pixels = (height / 2) * (width / 2);
            let mut grad = vec![0.0f32; images * channels * pixels];
            grad.par_chunks_mut(pixels)
                .zip(output_grad.par_chunks(pooled_pixels))
                .zip(cache.winners.par_chunks(pooled_pixels))
                .for_each(|((plane, pooled), won)| {
                    kernels::max_pool_backward(pooled, won, height, width, plane)
                });
            grad
        } else {
            output_grad
        };
        grad.par_iter_mut()
            .zip(cache.activated.par_iter())
            .for_each(|(g, &a)| {
                if a <= 0.0 {
                    *g = 0.0;
                }
            });

        // Batch-norm scale and shift gradients, per channel.
        let sums: Vec<(f64, f64)> = (0..channels)
            .into_par_iter()
            .map(|channel| {
                let (mut grad_sum, mut grad_dot) = (0.0f64, 0.0f64);
                for image in 0..images {
                    let offset = (image * channels + channel) * pixels;
                    let (g, x) = (
                        &grad[offset..offset + pixels],
                        &cache.normalized[offset..offset + pixels],
                    );
                    grad_sum += g.iter().sum::<f32>() as f64;
                    grad_dot += g.iter().zip(x).map(|(g, x)| g * x).sum::<f32>() as f64;
                }
                (grad_sum, grad_dot)
            })
            .collect();
        let beta_grad: Vec<f32> = sums.iter().map(|s| s.0 as f32).collect();
        let gamma_grad: Vec<f32> = sums.iter().map(|s| s.1 as f32).collect();

        // Gradient of the convolution output: γ·σ⁻¹/N · (N·g − Σg − x̂·Σ(g·x̂)).
        let count = (images * pixels) as f32;
        grad.par_chunks_mut(pixels)
            .zip(cache.normalized.par_chunks(pixels))
            .enumerate()
            .for_each(|(plane, (g, x))| {
                let channel = plane % channels;
                let scale = self.gamma[channel] * cache.inverse_std[channel] / count;
                let (sum, dot) = (beta_grad[channel], gamma_grad[channel]);
                for (g, &x) in g.iter_mut().zip(x) {
                    *g = scale * (count * *g - sum - x * dot);
                }
            });

        // Weight gradient: Σ over images of output_grad × columnsᵀ.
        let weight_grad = grad
            .par_chunks(channels * pixels)
            .zip(cache.columns.par_chunks(patch * pixels))
            .fold(
                || vec![0.0f32; channels * patch],
                |mut sum, (g, columns)| {
                    matmul(
                        &mut sum,
                        MatrixView::new(g, channels, pixels),
                        MatrixView::new(columns, patch, pixels).t(),
                        true,
                    );
                    sum
                },
            )
            .reduce(
                || vec![0.0f32; channels * patch],
                |mut a, b| {
                    a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                    a
                },
            );

        // Input gradient: col2im(weightᵀ × output_grad), one image per task.
        let input = input_grad.then(|| {
            let image_len = geometry.channels_in * geometry.pixels_in();
            let mut input_grad = vec![0.0f32; images * image_len];
            let weight = MatrixView::new(&self.weight, channels, patch).t();
            input_grad
                .par_chunks_mut(image_len)
                .zip(grad.par_chunks(channels * pixels))
                .for_each_init(
                    || vec![0.0f32; patch * pixels],
                    |columns_grad, (image_grad, g)| {
                        matmul(
                            columns_grad,
                            weight,
                            MatrixView::new(g, channels, pixels),
                            false,
                        );
                        col2im(columns_grad, &geometry, image_grad);
                    },
                );
            input_grad
        });

        let grads = StageGradients {
            weight: weight_grad,
            gamma: gamma_grad,
            beta: beta_grad,
        };
        (input, grads)
    }

    /// Convolution, batch norm on the running statistics, ReLU and pooling of one image;
    /// `columns` is scratch space.
    fn forward_inference(&self, image: &[f32], columns: &mut Vec<f32>) -> Vec<f32> {
        let geometry = self.geometry;
        let (patch, pixels, channels) = (
            geometry.patch_len(),
            geometry.pixels_out(),
            self.channels_out,
        );
        columns.resize(patch * pixels, 0.0);
        im2col(image, &geometry, columns);
        let mut output = vec![0.0f32; channels * pixels];
        matmul(
            &mut output,
            MatrixView::new(&self.weight, channels, patch),
            MatrixView::new(columns, patch, pixels),
            false,
        );

        for (channel, plane) in output.chunks_mut(pixels).enumerate() {
            let inverse_std = 1.0 / (self.running_var[channel] as f64 + NORM_EPSILON).sqrt();
            let scale = (self.gamma[channel] as f64 * inverse_std) as f32;
            let shift = self.beta[channel] - self.running_mean[channel] * scale;
            for value in plane.iter_mut() {
                *value = (scale * *value + shift).max(0.0);
            }
        }

        if !self.pooled {
            return output;
        }
        let (height, width) = (geometry.height_out(), geometry.width_out());
        let pooled_pixels = (height / 2) * (width / 2);
        let mut pooled = vec![0.0f32; channels * pooled_pixels];
        let mut winners = vec![0u8; pooled.len()];
        for ((plane, out), won) in output
            .chunks(pixels)
            .zip(pooled.chunks_mut(pooled_pixels))
            .zip(winners.chunks_mut(pooled_pixels))
        {
            max_pool(plane, height, width, out, won);
        }
        pooled
    }
}

/// The values of a burn tensor, checked to hold `len` of them.
fn read_values<const D: usize>(tensor: Tensor<D>, len: usize, what: &str) -> Result<Vec<f32>> {
    let values = tensor
        .into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::Training(format!("cannot read the {what}: {e:?}")))?;
    if values.len() != len {
        return Err(Error::Training(format!(
            "the {what} holds {} values, the network needs {len}",
            values.len()
        )));
    }
    Ok(values)
}

/// Little-endian reader over a byte slice.
struct ByteReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> ByteReader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let slice = self.bytes.get(self.at..self.at.checked_add(len)?)?;
        self.at += len;
        Some(slice)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    fn floats(&mut self, count: usize) -> Option<Vec<f32>> {
        let bytes = self.take(count.checked_mul(4)?)?;
        Some(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests;
