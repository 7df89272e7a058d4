//! End to end: generate a small dataset of two visually different classes, train a tiny model
//! on it through the library, then use the `pneumo` binary to predict and evaluate with the
//! bundle it wrote.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::{ImageBuffer, Luma};
use pneumo::bundle::Bundle;
use pneumo::model::NetConfig;
use pneumo::training::{TrainConfig, train};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A 40×40 "normal" image: a smooth vertical gradient with noise.
fn normal_image(rng: &mut ChaCha8Rng) -> ImageBuffer<Luma<u8>, Vec<u8>> {
    let offset: f32 = rng.random_range(0.0..40.0);
    ImageBuffer::from_fn(40, 40, |_, y| {
        let v = 60.0 + offset + y as f32 * 2.0 + rng.random_range(-10.0..10.0);
        Luma([v.clamp(0.0, 255.0) as u8])
    })
}

/// A 40×40 "pneumonia" image: the same background with a bright blob somewhere.
fn pneumonia_image(rng: &mut ChaCha8Rng) -> ImageBuffer<Luma<u8>, Vec<u8>> {
    let mut image = normal_image(rng);
    let (cx, cy) = (
        rng.random_range(10.0..30.0f32),
        rng.random_range(10.0..30.0f32),
    );
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let d2 = (x as f32 - cx).powi(2) + (y as f32 - cy).powi(2);
        if d2 < 64.0 {
            pixel.0[0] = 240;
        }
    }
    image
}

/// Writes `train/` (30 children per class, 1–2 images each) and `test/` (10 per class).
fn make_dataset(root: &Path) {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for (split, children) in [("train", 30), ("test", 10)] {
        for class in ["NORMAL", "PNEUMONIA"] {
            let dir = root.join(split).join(class);
            std::fs::create_dir_all(&dir).unwrap();
            for child in 0..children {
                for n in 0..(1 + child % 2) {
                    let (name, image) = if class == "NORMAL" {
                        (format!("IM-{child:04}-{n:04}.png"), normal_image(&mut rng))
                    } else {
                        (
                            format!("person{child}_virus_{n}.png"),
                            pneumonia_image(&mut rng),
                        )
                    };
                    image.save(dir.join(name)).unwrap();
                }
            }
        }
    }
}

fn tiny_config() -> TrainConfig {
    TrainConfig {
        input_size: 32,
        network: NetConfig {
            widths: vec![8, 16, 16],
            dropout: 0.1,
            ..NetConfig::default()
        },
        epochs: 6,
        patience: 6,
        batch_size: 16,
        learning_rate: 3e-3,
        validation_fraction: 0.3,
        ..TrainConfig::default()
    }
}

fn pneumo(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_pneumo"))
        .args(args)
        .output()
        .expect("pneumo runs")
}

#[test]
fn trains_predicts_and_evaluates_on_generated_images() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_dataset(&data);
    let run = dir.path().join("run");

    // Training learns the difference and writes a complete bundle.
    let outcome = train(&data, &run, &tiny_config(), false).unwrap();
    let card = &outcome.bundle.card;
    assert!(
        card.validation.auc > 0.9,
        "validation AUC {}",
        card.validation.auc
    );
    for file in [
        "config.json",
        "metrics.jsonl",
        "split.tsv",
        "best.bpk",
        "checkpoint/state.json",
        "training.svg",
        "training.png",
    ] {
        assert!(run.join(file).is_file(), "{file} missing");
    }
    let epochs = pneumo::training::read_metrics(&run).unwrap();
    assert_eq!(epochs.len(), card.epochs_run);

    // The threshold was also chosen on perturbed copies of every validation image, and the
    // card says how the model fared on them.
    let stressed = card
        .stressed_validation
        .as_ref()
        .expect("figures on perturbed validation copies");
    assert_eq!(
        stressed.n,
        card.validation.n * card.training.threshold_stress_copies
    );
    assert_eq!(stressed.threshold, card.threshold);
    assert!(stressed.auc > 0.5, "perturbed AUC {}", stressed.auc);

    // The bundle round-trips through disk with the same card and the same answers.
    let loaded = Bundle::load(&outcome.bundle_dir).unwrap();
    assert_eq!(&loaded.card, card);
    let model = outcome.bundle_dir.to_str().unwrap();

    // Evaluation on unseen images, through the binary.
    let output = pneumo(&[
        "evaluate",
        data.to_str().unwrap(),
        "--model",
        model,
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in [
        "auc",
        "accuracy",
        "sensitivity",
        "specificity",
        "precision",
        "f1",
        "n",
        "tp",
        "tn",
        "fp",
        "fn",
        "threshold",
    ] {
        assert!(metrics.get(key).is_some(), "evaluate --json lacks `{key}`");
    }
    assert_eq!(metrics["n"], 30);
    assert!(metrics["auc"].as_f64().unwrap() > 0.9, "{metrics}");

    // The recorded validation split evaluates to the card's own figures.
    let output = pneumo(&[
        "evaluate",
        data.to_str().unwrap(),
        "--model",
        model,
        "--split",
        "validation",
        "--json",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metrics: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!((metrics["auc"].as_f64().unwrap() - card.validation.auc).abs() < 1e-6);

    // The report: a self-contained page, the figures as JSON (the same object `--json` prints),
    // every plot as SVG and PNG.
    let report = dir.path().join("report");
    let output = pneumo(&[
        "evaluate",
        data.to_str().unwrap(),
        "--model",
        model,
        "--split",
        "validation",
        "--json",
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in [
        "auc_ci",
        "accuracy_ci",
        "sensitivity_ci",
        "specificity_ci",
        "precision_ci",
        "f1_ci",
        "auprc_ci",
    ] {
        let interval = printed[key]
            .as_array()
            .unwrap_or_else(|| panic!("no `{key}`"));
        assert!(interval[0].as_f64().unwrap() <= interval[1].as_f64().unwrap());
    }
    for key in ["auprc", "ece", "brier", "uncertain_count"] {
        assert!(printed[key].is_number(), "evaluate --json lacks `{key}`");
    }
    let written: serde_json::Value =
        serde_json::from_slice(&std::fs::read(report.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(written, printed);
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert!(!html.contains("http://") && !html.contains("https://"));
    for plot in [
        "roc",
        "precision-recall",
        "confusion",
        "reliability",
        "histogram",
    ] {
        assert!(html.contains(&format!("<figure id=\"{plot}\">")), "{plot}");
        for extension in ["svg", "png"] {
            assert!(report.join(format!("{plot}.{extension}")).is_file());
        }
    }

    // Prediction: good images answered, a corrupt one reported, exit code non-zero.
    let test_dir = data.join("test");
    let corrupt: PathBuf = dir.path().join("corrupt.png");
    std::fs::write(&corrupt, b"\x89PNG\r\n\x1a\nthis is not really a png").unwrap();
    let output = pneumo(&[
        "predict",
        "--model",
        model,
        "--json",
        test_dir.to_str().unwrap(),
        corrupt.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("corrupt.png"), "{stderr}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 30);
    for line in &lines {
        for key in [
            "path",
            "label",
            "probability",
            "threshold",
            "uncertain",
            "model",
        ] {
            assert!(line.get(key).is_some(), "predict --json lacks `{key}`");
        }
    }
    let right = lines
        .iter()
        .filter(|l| {
            let path = l["path"].as_str().unwrap();
            let truth = if path.contains("PNEUMONIA") {
                "PNEUMONIA"
            } else {
                "NORMAL"
            };
            l["label"] == truth
        })
        .count();
    assert!(right >= 25, "only {right} of 30 right");
}

#[test]
fn an_interrupted_run_resumes_from_its_last_finished_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    make_dataset(&data);
    let run = dir.path().join("run");
    let mut config = tiny_config();
    config.epochs = 8;
    config.patience = 8;
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, serde_json::to_vec(&config).unwrap()).unwrap();
    let args = [
        "train",
        data.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--config",
        config_path.to_str().unwrap(),
    ];

    // Kill the run as soon as its first checkpoint lands.
    let mut child = Command::new(env!("CARGO_BIN_EXE_pneumo"))
        .args(args)
        .spawn()
        .unwrap();
    let state_path = run.join("checkpoint/state.json");
    let epoch_at_kill = loop {
        if let Ok(text) = std::fs::read(&state_path)
            && let Ok(state) = serde_json::from_slice::<serde_json::Value>(&text)
        {
            child.kill().unwrap();
            child.wait().unwrap();
            break state["epoch"].as_u64().unwrap();
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "training ended before its first checkpoint"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    assert!(
        epoch_at_kill < 8,
        "the run finished before it could be interrupted"
    );
    assert!(!run.join("model/card.json").exists());

    // A different configuration is refused rather than silently mixed in.
    let mut other = config.clone();
    other.learning_rate = 1e-4;
    let err = train(&data, &run, &other, true)
        .err()
        .expect("mismatched resume refused");
    assert!(err.to_string().contains("configuration differs"), "{err}");

    // Resuming runs only the missing epochs; the log holds each epoch exactly once.
    let mut resume_args = args.to_vec();
    resume_args.push("--resume");
    let output = pneumo(&resume_args);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let log = std::fs::read_to_string(run.join("train.log")).unwrap();
    assert!(log.contains("resumed"), "{log}");
    let epochs: Vec<usize> = pneumo::training::read_metrics(&run)
        .unwrap()
        .iter()
        .map(|r| r.epoch)
        .collect();
    let card = Bundle::load(&run.join("model")).unwrap().card;
    assert_eq!(epochs, (1..=card.epochs_run).collect::<Vec<_>>());
    assert!(card.epochs_run > epoch_at_kill as usize);
}

#[test]
fn bad_inputs_are_reported_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();

    let output = pneumo(&[
        "evaluate",
        dir.path().join("nowhere").to_str().unwrap(),
        "--model",
        dir.path().to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));

    let output = pneumo(&[
        "predict",
        "--model",
        dir.path().join("no-model").to_str().unwrap(),
        "x.png",
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("no-model") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
