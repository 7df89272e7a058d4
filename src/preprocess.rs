//! Turning an image file into the model's input, the same way at training and prediction time.
//!
//! Every input, whatever its size, bit depth or colour model, goes through [`decode_gray`]
//! (to one channel of `f32` in `[0, 1]`), [`resize_square`] (squashed to the model's square
//! input, as the training images were) and [`normalize`] (per-image standardisation). The
//! steps and their parameters are recorded in the model card as [`Preprocessing`].

use std::io::Cursor;
use std::path::Path;

use image::{DynamicImage, ImageBuffer, ImageReader, Limits, Luma};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest width or height accepted, in pixels. Chest radiographs are at most a few thousand
/// pixels a side; anything far larger is rejected before it is decoded.
pub const MAX_SIDE: u32 = 16_384;

/// Largest allocation the decoder may make, in bytes.
pub const MAX_DECODE_BYTES: u64 = 512 * 1024 * 1024;

/// Largest image file read from disk, in bytes.
pub const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;

/// How an image becomes the model's input; stored in the model card.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preprocessing {
    /// Side of the square input, in pixels. Images are squashed (not cropped) to it.
    pub input_size: u32,
    /// Colour handling: always `"grayscale"` (luma of RGB, alpha ignored).
    pub color: String,
    /// Resampling filter used for the resize: `"triangle"` (bilinear, area-aware when shrinking).
    pub resize_filter: String,
    /// Intensity normalisation: `"per-image-standardize"` (zero mean, unit variance per image).
    pub normalization: String,
}

impl Preprocessing {
    /// The preprocessing pneumo uses for a model with a `size`×`size` input.
    pub fn new(size: u32) -> Self {
        Self {
            input_size: size,
            color: "grayscale".into(),
            resize_filter: "triangle".into(),
            normalization: "per-image-standardize".into(),
        }
    }

    /// Checks that this build of pneumo knows how to apply this preprocessing.
    pub fn check_supported(&self) -> Result<()> {
        let known = self.color == "grayscale"
            && self.resize_filter == "triangle"
            && self.normalization == "per-image-standardize"
            && (8..=1024).contains(&self.input_size);
        if known {
            Ok(())
        } else {
            Err(Error::Config(format!("unsupported preprocessing {self:?}")))
        }
    }

    /// Reads and decodes `path`, returning the normalised model input (`size * size` values).
    pub fn load_file(&self, path: &Path) -> Result<Vec<f32>> {
        let bytes = read_image_file(path)?;
        self.load_bytes(&bytes, &path.display().to_string())
    }

    /// Decodes image bytes (named `input` in errors) into the normalised model input.
    pub fn load_bytes(&self, bytes: &[u8], input: &str) -> Result<Vec<f32>> {
        let gray = decode_gray(bytes, input)?;
        let mut pixels = resize_square(&gray, self.input_size);
        normalize(&mut pixels);
        Ok(pixels)
    }

    /// Decodes and resizes `path` without normalising: what the training cache holds, since
    /// augmentation works on raw intensities before normalisation.
    pub fn load_file_unnormalized(&self, path: &Path) -> Result<Vec<f32>> {
        let bytes = read_image_file(path)?;
        let gray = decode_gray(&bytes, &path.display().to_string())?;
        Ok(resize_square(&gray, self.input_size))
    }
}

/// Reads an image file, refusing empty and oversized files with a clear error.
pub fn read_image_file(path: &Path) -> Result<Vec<u8>> {
    let input = path.display().to_string();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(Error::image(input, "not a regular file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(Error::image(
            input,
            format!(
                "file is {} bytes, more than the {MAX_FILE_BYTES} accepted",
                meta.len()
            ),
        ));
    }
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// A grayscale image with intensities in `[0, 1]`.
pub type GrayImage = ImageBuffer<Luma<f32>, Vec<f32>>;

/// Decodes JPEG or PNG bytes (8- or 16-bit; gray, RGB or RGBA) into grayscale `[0, 1]`.
///
/// The dimensions are checked against [`MAX_SIDE`] from the header, before any pixel is
/// decoded, so a hostile 60,000-pixel-wide file costs nothing.
pub fn decode_gray(bytes: &[u8], input: &str) -> Result<GrayImage> {
    if bytes.is_empty() {
        return Err(Error::image(input, "empty file"));
    }

    let mut reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| Error::image(input, format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(Error::image(
            input,
            "not a recognised image format (JPEG and PNG are read)",
        ));
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);

    let image = reader
        .decode()
        .map_err(|e| Error::image(input, format!("cannot decode: {e}")))?;
    if image.width() == 0 || image.height() == 0 {
        return Err(Error::image(input, "image has no pixels"));
    }

    Ok(to_gray_f32(image))
}

/// Converts any decoded image to one channel of `f32` in `[0, 1]`: luma of colour images,
/// alpha dropped, 16-bit precision kept.
fn to_gray_f32(image: DynamicImage) -> GrayImage {
    image.to_luma32f()
}

/// Squashes `image` to `size`×`size` (aspect ratio not kept, as for the training images) with a
/// triangle filter, returning row-major pixels.
pub fn resize_square(image: &GrayImage, size: u32) -> Vec<f32> {
    if image.width() == size && image.height() == size {
        return image.as_raw().clone();
    }
    image::imageops::resize(image, size, size, image::imageops::FilterType::Triangle).into_raw()
}

/// Standardises pixels in place to zero mean and unit variance. A flat image (no variance)
/// becomes all zeros rather than dividing by zero.
pub fn normalize(pixels: &mut [f32]) {
    if pixels.is_empty() {
        return;
    }
    let n = pixels.len() as f64;
    let mean = pixels.iter().map(|&p| p as f64).sum::<f64>() / n;
    let variance = pixels
        .iter()
        .map(|&p| (p as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = variance.sqrt().max(1e-3);
    for p in pixels.iter_mut() {
        *p = ((*p as f64 - mean) / std) as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{ImageFormat, Rgba, RgbaImage};

    fn encode(image: DynamicImage, format: ImageFormat) -> Vec<u8> {
        let mut bytes = Vec::new();
        image
            .write_to(&mut Cursor::new(&mut bytes), format)
            .unwrap();
        bytes
    }

    #[test]
    fn odd_shapes_are_squashed_to_the_square_input() {
        let wide = DynamicImage::ImageLuma8(ImageBuffer::from_fn(300, 100, |x, _| {
            Luma([(x * 255 / 299) as u8])
        }));
        let pixels = Preprocessing::new(64)
            .load_bytes(&encode(wide, ImageFormat::Png), "wide")
            .unwrap();
        assert_eq!(pixels.len(), 64 * 64);

        // The squash keeps the left-to-right ramp across the whole width.
        let row: Vec<f32> = pixels[..64].to_vec();
        assert!(row[60] > row[30] && row[30] > row[2]);
    }

    #[test]
    fn output_is_standardised() {
        let image = DynamicImage::ImageLuma8(ImageBuffer::from_fn(50, 70, |x, y| {
            Luma([(x * 3 + y) as u8])
        }));
        let pixels = Preprocessing::new(32)
            .load_bytes(&encode(image, ImageFormat::Png), "img")
            .unwrap();
        let mean = pixels.iter().sum::<f32>() / pixels.len() as f32;
        let var = pixels.iter().map(|p| (p - mean).powi(2)).sum::<f32>() / pixels.len() as f32;
        assert!(
            mean.abs() < 1e-4 && (var - 1.0).abs() < 1e-3,
            "{mean} {var}"
        );
    }

    #[test]
    fn sixteen_bit_gray_keeps_its_range() {
        let image =
            DynamicImage::ImageLuma16(ImageBuffer::from_fn(8, 8, |x, _| Luma([x as u16 * 8000])));
        let gray = decode_gray(&encode(image, ImageFormat::Png), "16-bit").unwrap();
        let value = gray.get_pixel(7, 0).0[0];
        assert!((value - 56000.0 / 65535.0).abs() < 1e-4, "{value}");
    }

    #[test]
    fn rgba_becomes_luma_ignoring_alpha() {
        let image = DynamicImage::ImageRgba8(RgbaImage::from_pixel(4, 4, Rgba([200, 200, 200, 0])));
        let gray = decode_gray(&encode(image, ImageFormat::Png), "rgba").unwrap();
        assert!((gray.get_pixel(0, 0).0[0] - 200.0 / 255.0).abs() < 0.01);
    }

    #[test]
    fn jpeg_decodes() {
        let image =
            DynamicImage::ImageLuma8(ImageBuffer::from_fn(40, 30, |x, _| Luma([x as u8 * 5])));
        let pixels = Preprocessing::new(16).load_bytes(&encode(image, ImageFormat::Jpeg), "jpeg");
        assert_eq!(pixels.unwrap().len(), 256);
    }

    #[test]
    fn hostile_inputs_get_clear_errors() {
        let empty = decode_gray(&[], "empty.png").unwrap_err().to_string();
        assert!(
            empty.contains("empty.png") && empty.contains("empty file"),
            "{empty}"
        );

        let text = decode_gray(b"hello, not an image", "notes.png")
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("notes.png") && text.contains("not a recognised image"),
            "{text}"
        );

        let good = encode(
            DynamicImage::ImageLuma8(ImageBuffer::from_pixel(64, 64, Luma([9]))),
            ImageFormat::Jpeg,
        );
        let truncated = decode_gray(&good[..good.len() / 2], "cut.jpeg")
            .unwrap_err()
            .to_string();
        assert!(
            truncated.contains("cut.jpeg") && truncated.contains("cannot decode"),
            "{truncated}"
        );

        let huge = encode(
            DynamicImage::ImageLuma8(ImageBuffer::from_pixel(60_000, 1, Luma([0]))),
            ImageFormat::Png,
        );
        let refused = decode_gray(&huge, "wide.png").unwrap_err().to_string();
        assert!(refused.contains("wide.png"), "{refused}");
    }

    #[test]
    fn missing_and_empty_files_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.jpeg");
        let err = Preprocessing::new(32)
            .load_file(&missing)
            .unwrap_err()
            .to_string();
        assert!(err.contains("absent.jpeg"), "{err}");

        let empty = dir.path().join("empty.jpeg");
        std::fs::write(&empty, b"").unwrap();
        let err = Preprocessing::new(32)
            .load_file(&empty)
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty.jpeg") && err.contains("empty"), "{err}");
    }
}
