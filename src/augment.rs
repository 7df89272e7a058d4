//! Random, seeded augmentation of training images: rotation, scaling, aspect stretch,
//! translation, blur or sharpening, brightness, contrast, gamma and noise. Applied to training
//! batches only, on raw `[0, 1]` intensities before normalisation.

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How strongly each augmentation perturbs an image; zero disables it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AugmentConfig {
    /// Largest rotation, in degrees, either way.
    pub rotation_degrees: f32,
    /// Largest relative zoom, either way (0.1 means a scale in `[0.9, 1.1]`).
    pub scale: f32,
    /// Largest shift, as a fraction of the image side, along each axis.
    pub translate: f32,
    /// Largest additive brightness change, in units of full intensity.
    pub brightness: f32,
    /// Largest relative contrast change around the image mean.
    pub contrast: f32,
    /// Largest change of the gamma exponent's logarithm (0.3 means gamma in `[e^-0.3, e^0.3]`).
    pub gamma: f32,
    /// Largest stretch of one axis against the other, as the logarithm of the ratio of the two
    /// zooms (0.3 means the width grows or shrinks by up to e^0.3 = 1.35 against the height).
    /// Radiographs come in many aspect ratios and all are squashed to a square, so the squash
    /// itself varies, and in the Kermany training data it differs by class (see
    /// docs/robustness.md): without this, the shape of the squash is a shortcut to the label.
    pub aspect: f32,
    /// Largest Gaussian blur, as a standard deviation in pixels. Together with `sharpen`, an
    /// image's sharpness changes by a draw from `[-sharpen, blur]`: images shrunk from sources
    /// of different resolution differ in sharpness, and in the Kermany training data the normal
    /// images come from larger originals than the pneumonia ones (see docs/robustness.md).
    pub blur: f32,
    /// Largest sharpening, as the radius (standard deviation in pixels) of an unsharp mask of
    /// amount 1. Blur alone would leave unaugmented images at the sharp end of everything the
    /// network saw, so that sharpness itself would shift its answers.
    pub sharpen: f32,
    /// Largest standard deviation of additive Gaussian noise, in units of full intensity.
    pub noise: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            rotation_degrees: 10.0,
            scale: 0.12,
            translate: 0.08,
            brightness: 0.15,
            contrast: 0.25,
            gamma: 0.35,
            aspect: 0.3,
            blur: 1.0,
            sharpen: 1.0,
            noise: 0.02,
        }
    }
}

impl AugmentConfig {
    /// No augmentation at all.
    pub fn none() -> Self {
        Self {
            rotation_degrees: 0.0,
            scale: 0.0,
            translate: 0.0,
            brightness: 0.0,
            contrast: 0.0,
            gamma: 0.0,
            aspect: 0.0,
            blur: 0.0,
            sharpen: 0.0,
            noise: 0.0,
        }
    }

    /// Checks that every strength is a finite, non-negative number and that zoom and contrast
    /// cannot reach zero or flip the image.
    pub fn check(&self) -> Result<(), String> {
        let fields = [
            ("rotation_degrees", self.rotation_degrees),
            ("scale", self.scale),
            ("translate", self.translate),
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("gamma", self.gamma),
            ("aspect", self.aspect),
            ("blur", self.blur),
            ("sharpen", self.sharpen),
            ("noise", self.noise),
        ];
        if let Some((name, value)) = fields.iter().find(|(_, v)| !(v.is_finite() && *v >= 0.0)) {
            return Err(format!(
                "augment.{name} is {value}: it must be a finite number, 0 or more"
            ));
        }
        if self.scale >= 1.0 || self.contrast >= 1.0 {
            return Err(format!(
                "augment.scale ({}) and augment.contrast ({}) must stay below 1",
                self.scale, self.contrast
            ));
        }
        Ok(())
    }

    /// Returns an augmented copy of the `size`×`size` image `pixels`, drawing from `rng`.
    pub fn apply(&self, pixels: &[f32], size: usize, rng: &mut impl Rng) -> Vec<f32> {
        let angle = symmetric(rng, self.rotation_degrees).to_radians();
        let zoom = 1.0 + symmetric(rng, self.scale);
        let stretch = symmetric(rng, self.aspect).exp();
        let shift_x = symmetric(rng, self.translate) * size as f32;
        let shift_y = symmetric(rng, self.translate) * size as f32;
        let zoom_xy = (zoom * stretch.sqrt(), zoom / stretch.sqrt());
        let mut out = affine(pixels, size, angle, zoom_xy, shift_x, shift_y);

        let sharpness = if self.blur > 0.0 || self.sharpen > 0.0 {
            rng.random_range(-self.sharpen..=self.blur)
        } else {
            0.0
        };
        if sharpness >= 0.0 {
            gaussian_blur(&mut out, size, sharpness);
        } else {
            unsharp_mask(&mut out, size, -sharpness, 1.0);
        }

        let brightness = symmetric(rng, self.brightness);
        let contrast = 1.0 + symmetric(rng, self.contrast);
        let gamma = symmetric(rng, self.gamma).exp();
        adjust_intensity(&mut out, brightness, contrast, gamma);

        if self.noise > 0.0 {
            let noise_std = rng.random_range(0.0..=self.noise);
            for p in out.iter_mut() {
                *p = (*p + noise_std * standard_normal(rng)).clamp(0.0, 1.0);
            }
        }
        out
    }
}

/// A uniform draw in `[-limit, limit]`, or exactly 0 when the limit is 0.
fn symmetric(rng: &mut impl Rng, limit: f32) -> f32 {
    if limit > 0.0 {
        rng.random_range(-limit..=limit)
    } else {
        0.0
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut impl Rng) -> f32 {
    let u1: f32 = rng.random_range(f32::EPSILON..1.0);
    let u2: f32 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
}

/// Sharpens a `size`×`size` image in place: adds `amount` times the difference between the image
/// and its Gaussian blur of standard deviation `radius` pixels. Values may leave `[0, 1]`; the
/// intensity step that follows clamps them.
pub fn unsharp_mask(pixels: &mut [f32], size: usize, radius: f32, amount: f32) {
    let mut blurred = pixels.to_vec();
    gaussian_blur(&mut blurred, size, radius);
    for (p, b) in pixels.iter_mut().zip(&blurred) {
        *p += amount * (*p - b);
    }
}

/// Blurs a `size`×`size` image in place with a separable Gaussian of standard deviation
/// `sigma` pixels (edges clamped). A sigma below 0.2 changes nothing visible and is skipped.
pub fn gaussian_blur(pixels: &mut [f32], size: usize, sigma: f32) {
    if sigma < 0.2 {
        return;
    }
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let kernel: Vec<f32> = kernel.iter().map(|k| k / total).collect();
    let last = size as isize - 1;

    let mut rows = vec![0.0; pixels.len()];
    for y in 0..size {
        for x in 0..size {
            let mut sum = 0.0;
            for (k, weight) in kernel.iter().enumerate() {
                let sx = (x as isize + k as isize - radius).clamp(0, last) as usize;
                sum += weight * pixels[y * size + sx];
            }
            rows[y * size + x] = sum;
        }
    }
    for y in 0..size {
        for x in 0..size {
            let mut sum = 0.0;
            for (k, weight) in kernel.iter().enumerate() {
                let sy = (y as isize + k as isize - radius).clamp(0, last) as usize;
                sum += weight * rows[sy * size + x];
            }
            pixels[y * size + x] = sum;
        }
    }
}

/// Rotates by `angle` (radians) and zooms by `zoom` (horizontal, vertical) about the centre,
/// then shifts by `(shift_x, shift_y)` pixels, with bilinear sampling. Areas brought in from
/// outside the image are black, as the borders of a radiograph usually are.
pub fn affine(
    pixels: &[f32],
    size: usize,
    angle: f32,
    zoom: (f32, f32),
    shift_x: f32,
    shift_y: f32,
) -> Vec<f32> {
    if angle == 0.0 && zoom == (1.0, 1.0) && shift_x == 0.0 && shift_y == 0.0 {
        return pixels.to_vec();
    }

    // Each output pixel looks up where it came from: the inverse of the forward transform.
    let centre = (size as f32 - 1.0) / 2.0;
    let (sin, cos) = angle.sin_cos();
    let (inverse_zoom_x, inverse_zoom_y) = (1.0 / zoom.0, 1.0 / zoom.1);
    let mut out = vec![0.0; size * size];
    for y in 0..size {
        for x in 0..size {
            let dx = x as f32 - centre - shift_x;
            let dy = y as f32 - centre - shift_y;
            let source_x = (cos * dx + sin * dy) * inverse_zoom_x + centre;
            let source_y = (-sin * dx + cos * dy) * inverse_zoom_y + centre;
            out[y * size + x] = bilinear(pixels, size, source_x, source_y);
        }
    }
    out
}

/// Bilinear sample at a fractional position, 0 outside the image.
fn bilinear(pixels: &[f32], size: usize, x: f32, y: f32) -> f32 {
    // Half a pixel of slack at the border absorbs rounding in the transform.
    let limit = size as f32 - 1.0;
    if !(-0.5..=limit + 0.5).contains(&x) || !(-0.5..=limit + 0.5).contains(&y) {
        return 0.0;
    }
    let (x, y) = (x.clamp(0.0, limit), y.clamp(0.0, limit));
    let x0 = x.floor() as usize;
    let y0 = y.floor() as usize;
    let x1 = (x0 + 1).min(size - 1);
    let y1 = (y0 + 1).min(size - 1);
    let fx = x - x0 as f32;
    let fy = y - y0 as f32;
    let top = pixels[y0 * size + x0] * (1.0 - fx) + pixels[y0 * size + x1] * fx;
    let bottom = pixels[y1 * size + x0] * (1.0 - fx) + pixels[y1 * size + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Applies gamma, then contrast about the mean, then brightness, clamping to `[0, 1]`.
pub fn adjust_intensity(pixels: &mut [f32], brightness: f32, contrast: f32, gamma: f32) {
    if pixels.is_empty() {
        return;
    }
    if gamma != 1.0 {
        for p in pixels.iter_mut() {
            *p = p.clamp(0.0, 1.0).powf(gamma);
        }
    }
    let mean = pixels.iter().sum::<f32>() / pixels.len() as f32;
    for p in pixels.iter_mut() {
        *p = ((*p - mean) * contrast + mean + brightness).clamp(0.0, 1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn ramp(size: usize) -> Vec<f32> {
        (0..size * size)
            .map(|i| (i % size) as f32 / size as f32)
            .collect()
    }

    #[test]
    fn identity_transform_returns_the_image() {
        let image = ramp(16);
        assert_eq!(affine(&image, 16, 0.0, (1.0, 1.0), 0.0, 0.0), image);
    }

    #[test]
    fn shift_moves_content_by_whole_pixels() {
        let image = ramp(8);
        let shifted = affine(&image, 8, 0.0, (1.0, 1.0), 2.0, 0.0);
        for y in 0..8 {
            assert_eq!(shifted[y * 8], 0.0);
            assert_eq!(shifted[y * 8 + 1], 0.0);
            assert!((shifted[y * 8 + 5] - image[y * 8 + 3]).abs() < 1e-6);
        }
    }

    #[test]
    fn half_turn_reverses_the_image() {
        let image = ramp(9);
        let turned = affine(&image, 9, std::f32::consts::PI, (1.0, 1.0), 0.0, 0.0);
        for (i, value) in turned.iter().enumerate() {
            assert!((value - image[80 - i]).abs() < 1e-4, "pixel {i}");
        }
    }

    #[test]
    fn blur_keeps_the_mean_and_smooths_an_edge() {
        let mut image: Vec<f32> = (0..16 * 16)
            .map(|i| if i % 16 < 8 { 0.0 } else { 1.0 })
            .collect();
        let mean_before: f32 = image.iter().sum::<f32>() / 256.0;
        gaussian_blur(&mut image, 16, 1.0);
        let mean_after: f32 = image.iter().sum::<f32>() / 256.0;
        assert!((mean_before - mean_after).abs() < 1e-4);
        assert!(image[7] > 0.1 && image[7] < 0.5, "{}", image[7]);
        assert!(image[8] > 0.5 && image[8] < 0.9, "{}", image[8]);
        assert!(image[0] < 0.01 && image[15] > 0.99);
    }

    #[test]
    fn unsharp_mask_undoes_part_of_a_blur_and_keeps_the_mean() {
        let step: Vec<f32> = (0..16 * 16)
            .map(|i| if i % 16 < 8 { 0.0 } else { 1.0 })
            .collect();
        let mut blurred = step.clone();
        gaussian_blur(&mut blurred, 16, 1.0);
        let mut sharpened = blurred.clone();
        unsharp_mask(&mut sharpened, 16, 1.0, 1.0);

        // Both pixels at the edge move back towards the step they were blurred from.
        assert!(sharpened[7] < blurred[7], "{} {}", sharpened[7], blurred[7]);
        assert!(sharpened[8] > blurred[8], "{} {}", sharpened[8], blurred[8]);
        let mean = |image: &[f32]| image.iter().sum::<f32>() / image.len() as f32;
        assert!((mean(&sharpened) - mean(&blurred)).abs() < 1e-4);

        // Far from the edge nothing changes.
        assert!((sharpened[0] - blurred[0]).abs() < 1e-6);
    }

    #[test]
    fn sharpness_draws_cover_both_blur_and_sharpening() {
        let image: Vec<f32> = (0..32 * 32)
            .map(|i| if i % 32 < 16 { 0.2 } else { 0.8 })
            .collect();
        let only_sharpness = AugmentConfig {
            blur: 1.5,
            sharpen: 1.5,
            ..AugmentConfig::none()
        };
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let (mut blurred, mut sharpened) = (0, 0);
        for _ in 0..40 {
            let out = only_sharpness.apply(&image, 32, &mut rng);
            // The pixel just left of the edge rises under blur and falls under sharpening.
            let edge = out[32 * 10 + 15];
            if edge > 0.2 + 1e-3 {
                blurred += 1;
            } else if edge < 0.2 - 1e-3 {
                sharpened += 1;
            }
        }
        assert!(
            blurred >= 10 && sharpened >= 10,
            "{blurred} blurred, {sharpened} sharpened"
        );
    }

    #[test]
    fn check_refuses_strengths_that_would_break_a_draw() {
        assert!(AugmentConfig::default().check().is_ok());
        assert!(AugmentConfig::none().check().is_ok());
        for broken in [
            AugmentConfig {
                sharpen: -2.0,
                ..AugmentConfig::default()
            },
            AugmentConfig {
                blur: f32::NAN,
                ..AugmentConfig::default()
            },
            AugmentConfig {
                scale: 1.0,
                ..AugmentConfig::default()
            },
        ] {
            let message = broken.check().unwrap_err();
            assert!(message.starts_with("augment."), "{message}");
        }
    }

    #[test]
    fn intensity_changes_stay_in_range() {
        let mut pixels = ramp(16);
        adjust_intensity(&mut pixels, 0.5, 2.0, 0.5);
        assert!(pixels.iter().all(|p| (0.0..=1.0).contains(p)));
    }

    #[test]
    fn augmentation_is_reproducible_from_the_seed() {
        let image = ramp(32);
        let config = AugmentConfig::default();
        let a = config.apply(&image, 32, &mut ChaCha8Rng::seed_from_u64(3));
        let b = config.apply(&image, 32, &mut ChaCha8Rng::seed_from_u64(3));
        let c = config.apply(&image, 32, &mut ChaCha8Rng::seed_from_u64(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(
            AugmentConfig::none().apply(&image, 32, &mut ChaCha8Rng::seed_from_u64(3)),
            image
        );
    }
}
