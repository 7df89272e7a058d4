//! The network: a small convolutional classifier sized for what a 2-core CPU can train.
//!
//! The model code is backend-free: tensors carry their device, so the same module runs on the
//! pure-Rust CPU backend, on a GPU backend, or under autodiff for training.

use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig, MaxPool2d, MaxPool2dConfig};
use burn::nn::{BatchNorm, BatchNormConfig, Dropout, DropoutConfig, Linear, LinearConfig};
use burn::nn::{PaddingConfig2d, Relu};
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// The architecture of [`PneumoNet`]; stored in the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Name of the architecture, checked when a bundle is loaded.
    pub architecture: String,
    /// Output channels of each stage. The first stage is a stride-2 stem; every later stage is
    /// a 3×3 convolution, batch norm and ReLU followed by 2×2 max pooling, except the last,
    /// which is not pooled.
    pub widths: Vec<usize>,
    /// Dropout before the final linear layer.
    pub dropout: f64,
}

/// The architecture name this build of pneumo implements.
pub const ARCHITECTURE: &str = "pneumonet-v1";

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            architecture: ARCHITECTURE.into(),
            widths: vec![16, 32, 64, 96, 128],
            dropout: 0.3,
        }
    }
}

impl NetConfig {
    /// Builds a freshly initialised network on `device`.
    pub fn init(&self, device: &Device) -> PneumoNet {
        let mut stages = Vec::with_capacity(self.widths.len());
        let mut channels_in = 1;
        for (i, &channels_out) in self.widths.iter().enumerate() {
            let stride = if i == 0 { 2 } else { 1 };
            let pooled = i > 0 && i + 1 < self.widths.len();
            stages.push(Stage {
                conv: Conv2dConfig::new([channels_in, channels_out], [3, 3])
                    .with_stride([stride, stride])
                    .with_padding(PaddingConfig2d::Explicit(1, 1, 1, 1))
                    .with_bias(false)
                    .init(device),
                norm: BatchNormConfig::new(channels_out).init(device),
                pool: MaxPool2dConfig::new([2, 2]).init(),
                pooled,
            });
            channels_in = channels_out;
        }

        PneumoNet {
            stages,
            activation: Relu::new(),
            global_pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            dropout: DropoutConfig::new(self.dropout).init(),
            head: LinearConfig::new(channels_in, 1).init(device),
        }
    }

    /// Trainable parameters of the network.
    pub fn parameter_count(&self) -> usize {
        let mut count = 0;
        let mut channels_in = 1;
        for &channels_out in &self.widths {
            count += channels_in * channels_out * 9 + 2 * channels_out;
            channels_in = channels_out;
        }
        count + channels_in + 1
    }

    /// Floating-point operations (a multiply-add counts as two) of one forward pass on a
    /// `size`×`size` image, counting convolutions and the linear head.
    pub fn forward_flops(&self, size: usize) -> u64 {
        let mut flops = 0u64;
        let mut channels_in = 1;
        let mut side = size;
        for (i, &channels_out) in self.widths.iter().enumerate() {
            if i == 0 {
                side = side.div_ceil(2);
            }
            flops += 2 * (side * side * channels_in * channels_out * 9) as u64;
            if i > 0 && i + 1 < self.widths.len() {
                side /= 2;
            }
            channels_in = channels_out;
        }
        flops + 2 * channels_in as u64
    }

    /// Checks the configuration describes a network this build can construct.
    pub fn check(&self) -> crate::Result<()> {
        if self.architecture != ARCHITECTURE {
            return Err(crate::Error::Config(format!(
                "architecture `{}` is not `{ARCHITECTURE}`, the one this build implements",
                self.architecture
            )));
        }
        if self.widths.len() < 2 || self.widths.iter().any(|&w| w == 0 || w > 4096) {
            return Err(crate::Error::Config(format!(
                "widths {:?} must be at least two stages of 1..=4096 channels",
                self.widths
            )));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(crate::Error::Config(format!(
                "dropout {} must be in [0, 1)",
                self.dropout
            )));
        }
        Ok(())
    }
}

/// One convolutional stage: convolution, batch norm, ReLU and, except at the ends, max pooling.
#[derive(Module, Debug)]
pub struct Stage {
    /// 3×3 convolution without bias (the batch norm supplies it).
    pub conv: Conv2d,
    /// Batch normalisation over channels.
    pub norm: BatchNorm,
    /// 2×2 max pooling, used when `pooled` is set.
    pub pool: MaxPool2d,
    /// Whether this stage halves the resolution at its end.
    pub pooled: bool,
}

/// The pneumonia classifier: convolutional stages, global average pooling, dropout and one
/// linear output, the logit of pneumonia.
#[derive(Module, Debug)]
pub struct PneumoNet {
    /// The convolutional stages, input first.
    pub stages: Vec<Stage>,
    /// ReLU after every batch norm.
    pub activation: Relu,
    /// Averages each channel over the image.
    pub global_pool: AdaptiveAvgPool2d,
    /// Dropout on the pooled features, active in training mode only.
    pub dropout: Dropout,
    /// The linear layer giving the logit.
    pub head: Linear,
}

impl PneumoNet {
    /// Runs the convolutional stages on `[batch, 1, size, size]` images, returning the last
    /// feature maps `[batch, channels, h, w]`.
    pub fn features(&self, images: Tensor<4>) -> Tensor<4> {
        let mut x = images;
        for stage in &self.stages {
            x = self
                .activation
                .forward(stage.norm.forward(stage.conv.forward(x)));
            if stage.pooled {
                x = stage.pool.forward(x);
            }
        }
        x
    }

    /// The pneumonia logit of each image, `[batch]`.
    pub fn forward(&self, images: Tensor<4>) -> Tensor<1> {
        let features = self.features(images);
        let pooled: Tensor<2> = self.global_pool.forward(features).flatten(1, 3);
        let logits: Tensor<2> = self.head.forward(self.dropout.forward(pooled));
        logits.flatten(0, 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_gives_one_logit_per_image() {
        let device = Device::flex();
        let config = NetConfig {
            widths: vec![4, 8, 8],
            ..NetConfig::default()
        };
        let model = config.init(&device);
        let logits = model.forward(Tensor::zeros([3, 1, 32, 32], &device));
        assert_eq!(logits.dims(), [3]);
    }

    #[test]
    fn parameter_count_matches_the_module() {
        let device = Device::flex();
        let config = NetConfig::default();
        let model = config.init(&device);

        // burn also counts batch norm's running mean and variance, which are not trained.
        let running_statistics: usize = 2 * config.widths.iter().sum::<usize>();
        assert_eq!(
            config.parameter_count() + running_statistics,
            model.num_params()
        );
    }

    #[test]
    fn flops_match_a_hand_count() {
        // Widths [4, 8, 8] at 32²: stem 16²·1·4·9·2, stage two 16²·4·8·9·2 (then pooled to 8²),
        // stage three 8²·8·8·9·2, head 2·8.
        let config = NetConfig {
            widths: vec![4, 8, 8],
            ..NetConfig::default()
        };
        let expected = 2 * (256 * 4 * 9 + 256 * 32 * 9 + 64 * 64 * 9) + 16;
        assert_eq!(config.forward_flops(32), expected as u64);
    }
}
