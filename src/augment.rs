//! Random, seeded augmentation of training images: rotation, scaling, translation, brightness,
//! contrast and gamma. Applied to training batches only, on raw `[0, 1]` intensities before
//! normalisation.

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
    /// Largest relative stretch of one axis against the other, either way: radiographs come in
    /// many aspect ratios and all are squashed to a square, so the squash itself varies.
    pub aspect: f32,
    /// Largest Gaussian blur, as a standard deviation in pixels, drawn from `[0, blur]`: images
    /// shrunk from sources of different resolution differ in sharpness.
    pub blur: f32,
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
            aspect: 0.1,
            blur: 1.0,
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
            noise: 0.0,
        }
    }

    /// Returns an augmented copy of the `size`×`size` image `pixels`, drawing from `rng`.
    pub fn apply(&self, pixels: &[f32], size: usize, rng: &mut impl Rng) -> Vec<f32> {
        let angle = symmetric(rng, self.rotation_degrees).to_radians();
        let zoom = 1.0 + symmetric(rng, self.scale);
        let stretch = 1.0 + symmetric(rng, self.aspect);
        let shift_x = symmetric(rng, self.translate) * size as f32;
        let shift_y = symmetric(rng, self.translate) * size as f32;
        let zoom_xy = (zoom * stretch.sqrt(), zoom / stretch.sqrt());
        let mut out = affine(pixels, size, angle, zoom_xy, shift_x, shift_y);

        let sigma = if self.blur > 0.0 {
            rng.random_range(0.0..=self.blur)
        } else {
            0.0
        };
        gaussian_blur(&mut out, size, sigma);

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
