//! The native engine against burn's autodiff on the same weights and inputs: losses,
//! gradients, AdamW updates, batch-norm running statistics and inference logits.

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::NativeTrainer;
use crate::inference::logits_of;
use crate::model::{NetConfig, PneumoNet};
use crate::training::{TrainConfig, TrainingBatch, optimization_step, weighted_bce};

const SIZE: usize = 20;
const IMAGES: usize = 3;

fn small_config() -> TrainConfig {
    TrainConfig {
        input_size: SIZE as u32,
        network: NetConfig {
            widths: vec![3, 5, 6, 4],
            dropout: 0.0,
            ..NetConfig::default()
        },
        weight_decay: 1e-2,
        seed: 11,
        ..TrainConfig::default()
    }
}

fn random_batch(seed: u64) -> TrainingBatch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    TrainingBatch {
        images: (0..IMAGES * SIZE * SIZE)
            .map(|_| rng.random_range(-2.0f32..2.0))
            .collect(),
        targets: vec![0.025, 0.975, 0.975],
        weights: vec![1.5, 0.5, 0.8],
    }
}

fn tensors(batch: &TrainingBatch, device: &Device) -> (Tensor<4>, Tensor<1>, Tensor<1>) {
    (
        Tensor::from_data(
            TensorData::new(batch.images.clone(), [IMAGES, 1, SIZE, SIZE]),
            device,
        ),
        Tensor::from_data(TensorData::new(batch.targets.clone(), [IMAGES]), device),
        Tensor::from_data(TensorData::new(batch.weights.clone(), [IMAGES]), device),
    )
}

fn values<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

fn assert_close(what: &str, native: &[f32], burn: &[f32], tolerance: f32) {
    assert_eq!(native.len(), burn.len(), "{what}: lengths");
    let scale = burn.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-6);
    for (i, (a, b)) in native.iter().zip(burn).enumerate() {
        assert!(
            (a - b).abs() <= tolerance * scale,
            "{what}[{i}]: native {a} vs burn {b} (scale {scale})"
        );
    }
}

/// Every trainable tensor of a burn model, in the native engine's parameter order.
fn burn_parameters(model: &PneumoNet) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    for (i, stage) in model.stages.iter().enumerate() {
        out.push((format!("stage {i} weight"), values(stage.conv.weight.val())));
        out.push((format!("stage {i} gamma"), values(stage.norm.gamma.val())));
        out.push((format!("stage {i} beta"), values(stage.norm.beta.val())));
    }
    out.push(("head weight".into(), values(model.head.weight.val())));
    let bias = model.head.bias.as_ref().expect("the head has a bias");
    out.push(("head bias".into(), values(bias.val())));
    out
}

#[test]
fn loss_and_gradients_match_burn_autodiff() {
    let config = small_config();
    let device = Device::flex().autodiff();
    device.seed(3);
    let model = config.network.init(&device);
    let batch = random_batch(5);
    let mut native = NativeTrainer::from_model(&model, &config).unwrap();

    let (native_loss, native_grads) = native.loss_and_gradients(&batch).unwrap();

    let (images, targets, weights) = tensors(&batch, &device);
    let loss = weighted_bce(model.forward(images), targets, weights);
    let burn_loss = values(loss.clone())[0] as f64;
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    assert!(
        (native_loss - burn_loss).abs() < 1e-5 * (1.0 + burn_loss.abs()),
        "loss: native {native_loss} vs burn {burn_loss}"
    );

    let mut burn_grads: Vec<(String, Vec<f32>)> = Vec::new();
    for (i, stage) in model.stages.iter().enumerate() {
        let weight = grads
            .get::<4>(stage.conv.weight.id)
            .expect("weight gradient");
        let gamma = grads.get::<1>(stage.norm.gamma.id).expect("gamma gradient");
        let beta = grads.get::<1>(stage.norm.beta.id).expect("beta gradient");
        burn_grads.push((format!("stage {i} weight"), values(weight)));
        burn_grads.push((format!("stage {i} gamma"), values(gamma)));
        burn_grads.push((format!("stage {i} beta"), values(beta)));
    }
    let head_weight = grads.get::<2>(model.head.weight.id).expect("head gradient");
    burn_grads.push(("head weight".into(), values(head_weight)));
    let bias = model.head.bias.as_ref().expect("bias");
    burn_grads.push((
        "head bias".into(),
        values(grads.get::<1>(bias.id).expect("bias gradient")),
    ));

    assert_eq!(native_grads.len(), burn_grads.len());
    for (native, (what, burn)) in native_grads.iter().zip(&burn_grads) {
        assert!(
            burn.iter().any(|g| g.abs() > 1e-6),
            "{what}: burn's gradient is all zero"
        );
        assert_close(what, native, burn, 2e-4);
    }
}

#[test]
fn adamw_steps_and_running_statistics_match_burn() {
    let config = small_config();
    let device = Device::flex().autodiff();
    device.seed(4);
    let mut model = config.network.init(&device);
    let mut native = NativeTrainer::from_model(&model, &config).unwrap();
    let mut optimizer = AdamWConfig::new()
        .with_weight_decay(config.weight_decay)
        .init();

    for step in 0..4 {
        let batch = random_batch(100 + step);
        let learning_rate = 0.01 * (step + 1) as f64;
        native.step(&batch, learning_rate).unwrap();
        (model, _) = optimization_step(model, &mut optimizer, batch, SIZE, learning_rate, &device);
    }

    let updated = native.to_model(&config, &Device::flex());
    for ((what, native), (_, burn)) in burn_parameters(&updated)
        .iter()
        .zip(burn_parameters(&model))
    {
        assert_close(what, native, &burn, 1e-3);
    }
    // burn keeps the newest running statistics aside until they are synchronised.
    for (i, (ours, theirs)) in updated.stages.iter().zip(&model.stages).enumerate() {
        assert_close(
            &format!("stage {i} running mean"),
            &values(ours.norm.running_mean.value()),
            &values(theirs.norm.running_mean.value_sync()),
            1e-4,
        );
        assert_close(
            &format!("stage {i} running variance"),
            &values(ours.norm.running_var.value()),
            &values(theirs.norm.running_var.value_sync()),
            1e-4,
        );
    }
    assert_eq!(native.steps(), 4);
}

#[test]
fn inference_logits_match_the_burn_model_after_training() {
    let config = small_config();
    let device = Device::flex().autodiff();
    device.seed(6);
    let model = config.network.init(&device);
    let mut native = NativeTrainer::from_model(&model, &config).unwrap();
    for step in 0..3 {
        native.step(&random_batch(200 + step), 0.05).unwrap();
    }

    let images: Vec<Vec<f32>> = random_batch(300)
        .images
        .chunks(SIZE * SIZE)
        .map(<[f32]>::to_vec)
        .collect();
    let native_logits = native.logits(&images).unwrap();
    let burn_model = native.to_model(&config, &Device::flex());
    let burn_logits = logits_of(&burn_model, &images, SIZE, &Device::flex());
    assert_close("logits", &native_logits, &burn_logits, 1e-4);

    let wrong = vec![vec![0.0; 7]];
    assert!(native.logits(&wrong).is_err());
}

#[test]
fn weights_survive_a_round_trip_through_a_burn_model() {
    let config = small_config();
    let device = Device::flex();
    let model = config.network.init(&device);
    let native = NativeTrainer::from_model(&model, &config).unwrap();
    let back = native.to_model(&config, &device);
    for ((what, a), (_, b)) in burn_parameters(&model).iter().zip(burn_parameters(&back)) {
        assert_eq!(a, &b, "{what}");
    }
    let record = back.into_record();
    assert!(config.network.init(&device).try_load_record(record).is_ok());
}

#[test]
fn optimizer_state_round_trips_and_rejects_foreign_bytes() {
    let config = small_config();
    let model = config.network.init(&Device::flex());
    let mut trained = NativeTrainer::from_model(&model, &config).unwrap();
    trained.step(&random_batch(1), 0.01).unwrap();
    let saved = trained.optimizer_state();

    let mut fresh = NativeTrainer::from_model(&model, &config).unwrap();
    fresh.load_optimizer_state(&saved).unwrap();
    assert_eq!(fresh.steps(), 1);
    assert_eq!(fresh.optimizer_state(), saved);

    // Truncated, foreign and other-network states are refused and leave the trainer as it was.
    let mut other = NativeTrainer::from_model(&model, &config).unwrap();
    assert!(
        other
            .load_optimizer_state(&saved[..saved.len() - 3])
            .is_err()
    );
    assert!(other.load_optimizer_state(b"not a state at all").is_err());
    let bigger = TrainConfig {
        network: NetConfig {
            widths: vec![3, 5, 6, 8],
            dropout: 0.0,
            ..NetConfig::default()
        },
        ..config.clone()
    };
    let bigger_model = bigger.network.init(&Device::flex());
    let mut mismatched = NativeTrainer::from_model(&bigger_model, &bigger).unwrap();
    assert!(mismatched.load_optimizer_state(&saved).is_err());
    assert_eq!(other.steps(), 0);
}

#[test]
fn dropout_masks_depend_on_the_step_and_keep_the_expected_share() {
    let config = TrainConfig {
        network: NetConfig {
            dropout: 0.3,
            ..small_config().network
        },
        ..small_config()
    };
    let model = config.network.init(&Device::flex());
    let mut native = NativeTrainer::from_model(&model, &config).unwrap();
    let first = native.dropout_mask(10_000);
    let kept = first.iter().filter(|&&m| m > 0.0).count() as f64 / 10_000.0;
    assert!((kept - 0.7).abs() < 0.02, "kept {kept}");
    assert!(
        first
            .iter()
            .all(|&m| m == 0.0 || (m - 1.0 / 0.7).abs() < 1e-6)
    );
    native.steps += 1;
    assert_ne!(first, native.dropout_mask(10_000));
}
