//! The numeric kernels of the native engine, on plain `f32` slices in NCHW order: 3×3
//! convolution as im2col plus a matrix product, its inverse (col2im) for the input gradient,
//! batch-norm statistics, 2×2 max pooling and a safe front for the `gemm` crate.
//!
//! Every kernel works on one image (or one channel) at a time so that the caller can spread
//! images over threads; none of them allocates except where it says so.

/// Geometry of a 3×3 convolution with padding 1 on one image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input channels.
    pub channels_in: usize,
    /// Input height.
    pub height_in: usize,
    /// Input width.
    pub width_in: usize,
    /// Stride in both directions.
    pub stride: usize,
}

impl ConvGeometry {
    /// Output height: `(height + 2 - 3) / stride + 1`.
    pub fn height_out(&self) -> usize {
        (self.height_in - 1) / self.stride + 1
    }

    /// Output width.
    pub fn width_out(&self) -> usize {
        (self.width_in - 1) / self.stride + 1
    }

    /// Output pixels per channel.
    pub fn pixels_out(&self) -> usize {
        self.height_out() * self.width_out()
    }

    /// Input pixels per channel.
    pub fn pixels_in(&self) -> usize {
        self.height_in * self.width_in
    }

    /// Rows of the im2col matrix: one per input channel and kernel position.
    pub fn patch_len(&self) -> usize {
        self.channels_in * 9
    }

    /// The output columns `ox` whose input column `ox·stride + kx − 1` lies inside the image.
    fn valid_columns(&self, kx: usize) -> std::ops::Range<usize> {
        let width_out = self.width_out();
        let first = if kx == 0 {
            1usize.div_ceil(self.stride)
        } else {
            0
        };
        // ox·stride + kx − 1 ≤ width_in − 1  ⇔  ox ≤ (width_in − kx) / stride
        let last = if self.width_in + 1 > kx {
            ((self.width_in - kx) / self.stride + 1).min(width_out)
        } else {
            0
        };
        first..last.max(first)
    }
}

/// Fills `columns` (`patch_len × pixels_out`, row-major) with the patches of `image`
/// (`channels_in × height_in × width_in`): row `(c·3 + ky)·3 + kx`, column `oy·width_out + ox`
/// holds the input pixel under kernel tap `(ky, kx)` of output pixel `(oy, ox)`, or 0 in the
/// padding.
pub fn im2col(image: &[f32], geometry: &ConvGeometry, columns: &mut [f32]) {
    let (height_in, width_in, stride) = (geometry.height_in, geometry.width_in, geometry.stride);
    let (height_out, width_out) = (geometry.height_out(), geometry.width_out());
    let pixels_out = height_out * width_out;
    assert_eq!(image.len(), geometry.channels_in * height_in * width_in);
    assert_eq!(columns.len(), geometry.patch_len() * pixels_out);

    for channel in 0..geometry.channels_in {
        let plane = &image[channel * height_in * width_in..][..height_in * width_in];
        for ky in 0..3 {
            for kx in 0..3 {
                let row = (channel * 3 + ky) * 3 + kx;
                let destination = &mut columns[row * pixels_out..][..pixels_out];
                let valid = geometry.valid_columns(kx);
                for oy in 0..height_out {
                    let line = &mut destination[oy * width_out..][..width_out];
                    let iy = (oy * stride + ky) as isize - 1;
                    if iy < 0 || iy >= height_in as isize {
                        line.fill(0.0);
                        continue;
                    }
                    let source = &plane[iy as usize * width_in..][..width_in];
                    line[..valid.start].fill(0.0);
                    line[valid.end..].fill(0.0);
                    if stride == 1 {
                        let offset = valid.start + kx - 1;
                        line[valid.clone()].copy_from_slice(&source[offset..offset + valid.len()]);
                    } else {
                        for ox in valid.clone() {
                            line[ox] = source[ox * stride + kx - 1];
                        }
                    }
                }
            }
        }
    }
}

/// The adjoint of [`im2col`]: adds every entry of `columns` back onto the input pixel it was
/// taken from. `image` is overwritten, not accumulated into.
pub fn col2im(columns: &[f32], geometry: &ConvGeometry, image: &mut [f32]) {
    let (height_in, width_in, stride) = (geometry.height_in, geometry.width_in, geometry.stride);
    let (height_out, width_out) = (geometry.height_out(), geometry.width_out());
    let pixels_out = height_out * width_out;
    assert_eq!(image.len(), geometry.channels_in * height_in * width_in);
    assert_eq!(columns.len(), geometry.patch_len() * pixels_out);

    image.fill(0.0);
    for channel in 0..geometry.channels_in {
        let plane = &mut image[channel * height_in * width_in..][..height_in * width_in];
        for ky in 0..3 {
            for kx in 0..3 {
                let row = (channel * 3 + ky) * 3 + kx;
                let source = &columns[row * pixels_out..][..pixels_out];
                let valid = geometry.valid_columns(kx);
                for oy in 0..height_out {
                    let iy = (oy * stride + ky) as isize - 1;
                    if iy < 0 || iy >= height_in as isize {
                        continue;
                    }
                    let line = &source[oy * width_out..][..width_out];
                    let destination = &mut plane[iy as usize * width_in..][..width_in];
                    if stride == 1 {
                        let offset = valid.start + kx - 1;
                        for (d, s) in destination[offset..offset + valid.len()]
                            .iter_mut()
                            .zip(&line[valid.clone()])
                        {
                            *d += s;
                        }
                    } else {
                        for ox in valid.clone() {
                            destination[ox * stride + kx - 1] += line[ox];
                        }
                    }
                }
            }
        }
    }
}

/// A read-only matrix view: element `(row, column)` is `data[row·row_stride + column·column_stride]`.
#[derive(Clone, Copy)]
pub struct MatrixView<'a> {
    data: &'a [f32],
    rows: usize,
    columns: usize,
    row_stride: usize,
    column_stride: usize,
}

impl<'a> MatrixView<'a> {
    /// A `rows × columns` row-major matrix.
    pub fn new(data: &'a [f32], rows: usize, columns: usize) -> Self {
        assert_eq!(
            data.len(),
            rows * columns,
            "matrix data does not match its shape"
        );
        Self {
            data,
            rows,
            columns,
            row_stride: columns,
            column_stride: 1,
        }
    }

    /// The transpose, without copying.
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.columns,
            columns: self.rows,
            row_stride: self.column_stride,
            column_stride: self.row_stride,
        }
    }
}

/// `out = a · b` (or `out += a · b` when `accumulate`), `out` row-major `a.rows × b.columns`,
/// computed on the calling thread.
pub fn matmul(out: &mut [f32], a: MatrixView<'_>, b: MatrixView<'_>, accumulate: bool) {
    assert_eq!(a.columns, b.rows, "inner dimensions differ");
    assert_eq!(
        out.len(),
        a.rows * b.columns,
        "output does not match the product"
    );
    let (m, n, k) = (a.rows, b.columns, a.columns);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out.fill(0.0);
        }
        return;
    }

    // SAFETY: the shapes were checked above and every view's largest offset,
    // (rows − 1)·row_stride + (columns − 1)·column_stride, lies inside its slice because each
    // view is either a row-major matrix built by `MatrixView::new` (which checks the length) or
    // its transpose. `out` is exclusively borrowed and does not alias `a` or `b`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.column_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.column_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// 2×2 max pooling with stride 2 (a trailing odd row or column is dropped) of one
/// `height × width` plane. Writes the maxima into `pooled` and, in `winners`, which of the four
/// taps won (`dy·2 + dx`; the first of equal values).
pub fn max_pool(
    plane: &[f32],
    height: usize,
    width: usize,
    pooled: &mut [f32],
    winners: &mut [u8],
) {
    let (height_out, width_out) = (height / 2, width / 2);
    assert_eq!(plane.len(), height * width);
    assert_eq!(pooled.len(), height_out * width_out);
    assert_eq!(winners.len(), pooled.len());

    for oy in 0..height_out {
        let top = &plane[2 * oy * width..][..width];
        let bottom = &plane[(2 * oy + 1) * width..][..width];
        for ox in 0..width_out {
            let taps = [
                top[2 * ox],
                top[2 * ox + 1],
                bottom[2 * ox],
                bottom[2 * ox + 1],
            ];
            let mut best = 0;
            for (tap, &value) in taps.iter().enumerate().skip(1) {
                if value > taps[best] {
                    best = tap;
                }
            }
            pooled[oy * width_out + ox] = taps[best];
            winners[oy * width_out + ox] = best as u8;
        }
    }
}

/// The gradient of [`max_pool`]: routes each pooled gradient to the tap that won; every other
/// input pixel (including a dropped odd row or column) gets 0. `plane_grad` is overwritten.
pub fn max_pool_backward(
    pooled_grad: &[f32],
    winners: &[u8],
    height: usize,
    width: usize,
    plane_grad: &mut [f32],
) {
    let width_out = width / 2;
    assert_eq!(plane_grad.len(), height * width);
    assert_eq!(pooled_grad.len(), (height / 2) * width_out);
    assert_eq!(winners.len(), pooled_grad.len());

    plane_grad.fill(0.0);
    for (index, (&grad, &winner)) in pooled_grad.iter().zip(winners).enumerate() {
        let (oy, ox) = (index / width_out, index % width_out);
        let (dy, dx) = (winner as usize / 2, winner as usize % 2);
        plane_grad[(2 * oy + dy) * width + 2 * ox + dx] = grad;
    }
}

/// Mean and biased variance of channel `channel` over every image of `values`
/// (`images × channels × pixels`), accumulated in `f64`.
pub fn channel_moments(
    values: &[f32],
    channels: usize,
    pixels: usize,
    channel: usize,
) -> (f64, f64) {
    let images = values.len() / (channels * pixels);
    let mut sum = 0.0f64;
    let mut sum_squares = 0.0f64;
    for image in 0..images {
        let plane = &values[(image * channels + channel) * pixels..][..pixels];
        let (mut s, mut ss) = (0.0f32, 0.0f32);
        for chunk in plane.chunks(256) {
            let (mut cs, mut css) = (0.0f32, 0.0f32);
            for &v in chunk {
                cs += v;
                css += v * v;
            }
            s += cs;
            ss += css;
        }
        sum += s as f64;
        sum_squares += ss as f64;
    }
    let count = (images * pixels) as f64;
    let mean = sum / count;
    let variance = (sum_squares / count - mean * mean).max(0.0);
    (mean, variance)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(len: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    /// Direct 3×3 convolution with padding 1, the textbook loop.
    fn direct_conv(
        image: &[f32],
        weight: &[f32],
        channels_out: usize,
        geometry: &ConvGeometry,
    ) -> Vec<f32> {
        let (h, w, s) = (geometry.height_in, geometry.width_in, geometry.stride);
        let (ho, wo) = (geometry.height_out(), geometry.width_out());
        let mut out = vec![0.0; channels_out * ho * wo];
        for o in 0..channels_out {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut acc = 0.0;
                    for c in 0..geometry.channels_in {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy * s + ky) as isize - 1;
                                let ix = (ox * s + kx) as isize - 1;
                                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                                    acc += image[(c * h + iy as usize) * w + ix as usize]
                                        * weight
                                            [((o * geometry.channels_in + c) * 3 + ky) * 3 + kx];
                                }
                            }
                        }
                    }
                    out[(o * ho + oy) * wo + ox] = acc;
                }
            }
        }
        out
    }

    fn close(a: &[f32], b: &[f32], tolerance: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!(
                (x - y).abs() <= tolerance * (1.0 + y.abs()),
                "entry {i}: {x} vs {y}"
            );
        }
    }

    #[test]
    fn im2col_and_matmul_match_a_direct_convolution_for_odd_shapes_and_strides() {
        for (channels_in, height, width, stride) in [
            (1, 7, 5, 1),
            (3, 6, 9, 2),
            (2, 5, 5, 2),
            (4, 1, 3, 1),
            (2, 2, 1, 2),
        ] {
            let geometry = ConvGeometry {
                channels_in,
                height_in: height,
                width_in: width,
                stride,
            };
            let channels_out = 3;
            let image = random(channels_in * height * width, 1);
            let weight = random(channels_out * channels_in * 9, 2);
            let mut columns = vec![f32::NAN; geometry.patch_len() * geometry.pixels_out()];
            im2col(&image, &geometry, &mut columns);
            let mut out = vec![f32::NAN; channels_out * geometry.pixels_out()];
            matmul(
                &mut out,
                MatrixView::new(&weight, channels_out, geometry.patch_len()),
                MatrixView::new(&columns, geometry.patch_len(), geometry.pixels_out()),
                false,
            );
            close(
                &out,
                &direct_conv(&image, &weight, channels_out, &geometry),
                1e-5,
            );
        }
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), y> = <x, col2im(y)> for random x and y: the input gradient is right.
        for (channels_in, height, width, stride) in [(2, 6, 7, 1), (3, 9, 8, 2), (1, 3, 3, 2)] {
            let geometry = ConvGeometry {
                channels_in,
                height_in: height,
                width_in: width,
                stride,
            };
            let x = random(channels_in * height * width, 3);
            let y = random(geometry.patch_len() * geometry.pixels_out(), 4);
            let mut columns = vec![0.0; y.len()];
            im2col(&x, &geometry, &mut columns);
            let mut back = vec![f32::NAN; x.len()];
            col2im(&y, &geometry, &mut back);
            let left: f64 = columns.iter().zip(&y).map(|(a, b)| (a * b) as f64).sum();
            let right: f64 = x.iter().zip(&back).map(|(a, b)| (a * b) as f64).sum();
            assert!(
                (left - right).abs() < 1e-4 * (1.0 + left.abs()),
                "{left} vs {right}"
            );
        }
    }

    #[test]
    fn matmul_handles_transposed_views_and_accumulation() {
        let a = random(3 * 4, 5);
        let b = random(5 * 4, 6);
        // out = a · bᵀ (3×5), then out += a · bᵀ again.
        let mut out = vec![f32::NAN; 15];
        matmul(
            &mut out,
            MatrixView::new(&a, 3, 4),
            MatrixView::new(&b, 5, 4).t(),
            false,
        );
        let mut expected = vec![0.0; 15];
        for i in 0..3 {
            for j in 0..5 {
                expected[i * 5 + j] = (0..4).map(|k| a[i * 4 + k] * b[j * 4 + k]).sum();
            }
        }
        close(&out, &expected, 1e-5);
        matmul(
            &mut out,
            MatrixView::new(&a, 3, 4),
            MatrixView::new(&b, 5, 4).t(),
            true,
        );
        let doubled: Vec<f32> = expected.iter().map(|v| 2.0 * v).collect();
        close(&out, &doubled, 1e-5);
    }

    #[test]
    fn max_pool_keeps_the_maximum_and_routes_its_gradient_back() {
        // A 3×5 plane: the odd last row and column are dropped.
        let plane = [
            1.0, 5.0, 2.0, 2.0, 9.0, //
            3.0, 4.0, 7.0, 1.0, 9.0, //
            9.0, 9.0, 9.0, 9.0, 9.0,
        ];
        let mut pooled = [0.0; 2];
        let mut winners = [0; 2];
        max_pool(&plane, 3, 5, &mut pooled, &mut winners);
        assert_eq!(pooled, [5.0, 7.0]);
        assert_eq!(winners, [1, 2]);

        let mut grad = [f32::NAN; 15];
        max_pool_backward(&[0.5, -2.0], &winners, 3, 5, &mut grad);
        let mut expected = [0.0; 15];
        expected[1] = 0.5;
        expected[5 + 2] = -2.0;
        assert_eq!(grad, expected);
    }

    #[test]
    fn channel_moments_are_the_population_mean_and_variance() {
        // Two images, two channels, three pixels: channel 1 holds 1, 2, 3 and 4, 5, 6.
        let values = [0.0, 0.0, 0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 4.0, 5.0, 6.0];
        let (mean, variance) = channel_moments(&values, 2, 3, 1);
        assert!((mean - 3.5).abs() < 1e-12);
        assert!((variance - 17.5 / 6.0).abs() < 1e-9);
    }
}
