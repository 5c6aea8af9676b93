//! Convolutions with one group as GEMMs whose im2col operand is never formed
//! (specs/conv.md#implicit-gemm).
//!
//! After a zero-padded copy of a chunk of samples (none without padding), im2col's element
//! `((n, h', w'), (c, i, j))` is `x_pad[n, c, s h' + d i, s w' + d j]`, at offset
//! `row(n, h', w') + col(c, i, j)` with `row = n sN + s h' sH + s w' sW` and
//! `col = c sC + d i sH + d j sW`: an indexed operand of the GEMM (`gemm.rs`), whose packing
//! gathers each block of it into the caches only. The forward writes its result in NCHW directly.

use std::ops::Range;

use crate::gemm::{self, Operand, Output, Tiles, axis, grid};
use crate::out::Out;
use crate::parallel::{for_ranges, threads_for};
use crate::simd::{Correlation, OUTPUTS, TAPS};
use crate::taps::taps;
use crate::view::{at, copy_plane};
use crate::{Context, ConvGeometry, Float, LanceError, View4};

/// [`conv2d_weight_grad`] correlates planes directly up to this many input times output
/// channels (measured on AVX2: beyond, the GEMM is faster) and for output widths that are a
/// multiple of this one, every instruction set's vector width, so that no row ends in a
/// partial vector (specs/conv.md#correlated-weight-gradient).
const CORRELATE_MAX_CHANNELS: usize = 64 * 64;
const CORRELATE_WIDTH: usize = 16;
/// Bytes of the planes that one correlation call reads (about an L1 data cache).
const CORRELATE_BLOCK_BYTES: usize = 32 << 10;

/// The workspace, in elements, that [`conv2d`] and [`conv2d_weight_grad`] need to zero-pad
/// `samples` samples of an input of shape `x_shape` at a time: 0 without padding.
pub fn padded_workspace_len(x_shape: [usize; 4], padding: [usize; 2], samples: usize) -> usize {
    if padding == [0, 0] {
        return 0;
    }
    let [_, c, h, w] = x_shape;
    let padded = |size: usize, pad: usize| size.saturating_add(pad.saturating_mul(2));
    [c, padded(h, padding[0]), padded(w, padding[1])]
        .into_iter()
        .fold(samples, usize::saturating_mul) // too large to allocate when saturated
}

/// Calls `f(samples, x_pad)` over consecutive chunks of the samples of `x`, with `x_pad` those
/// samples zero-padded by `padding` in `workspace` (as many samples at a time as it holds), or
/// once with `x` itself when there is no padding (or no sample).
fn over_padded_chunks<T: Float>(
    x: &View4<'_, T>,
    padding: [usize; 2],
    workspace: &mut [T],
    mut f: impl FnMut(Range<usize>, &View4<'_, T>) -> Result<(), LanceError>,
) -> Result<(), LanceError> {
    let [n, c, h, w] = x.shape;
    if padding == [0, 0] || n == 0 {
        return f(0..n, x);
    }
    let sample = padded_workspace_len(x.shape, padding, 1);
    let chunk = (workspace.len() / sample).min(n);
    if chunk == 0 {
        return Err(LanceError::Invalid(format!(
            "the workspace must hold one zero-padded sample ({sample} elements), got {}",
            workspace.len()
        )));
    }
    let [hp, wp] = [h + 2 * padding[0], w + 2 * padding[1]];
    let first = padding[0] * wp + padding[1]; // of a plane's interior
    workspace.fill(T::ZERO); // the borders stay zero; each chunk overwrites the interiors
    for start in (0..n).step_by(chunk) {
        let samples = start..(start + chunk).min(n);
        let padded = &mut workspace[..samples.len() * sample];
        for (plane, target) in padded.chunks_exact_mut(hp * wp).enumerate() {
            copy_plane(x, start + plane / c, plane % c, &mut target[first..], wp);
        }
        let x_pad = View4::c_contiguous(padded, [samples.len(), c, hp, wp])?;
        f(samples, &x_pad)?;
    }
    Ok(())
}

/// A GEMM operand with its own offset tables: element (i, j) is `data[base + rows[i] + cols[j]]`.
struct Indexed<'a, T> {
    data: &'a [T],
    base: isize,
    rows: Vec<isize>,
    cols: Vec<isize>,
}

impl<'a, T: Float> Indexed<'a, T> {
    /// `v` as a matrix: rows along axis 0, columns over axes 1, 2, 3 (row-major).
    fn matrix(v: &View4<'a, T>) -> Self {
        let [rows, a, b, c] = v.shape;
        Indexed {
            data: v.data,
            base: v.offset as isize,
            rows: axis(0, rows, v.strides[0]),
            cols: grid(0, &[a, b, c], &v.strides[1..]),
        }
    }

    /// The implicit im2col of `x_pad` (already padded) for outputs `out_hw` of `geometry`'s
    /// windows: rows `(n, h', w')`, columns `(c, i, j)`.
    fn unfolding(x_pad: &View4<'a, T>, geometry: &ConvGeometry, out_hw: [usize; 2]) -> Self {
        let ([n, c, _, _], [kh, kw], [sh, sw], [dh, dw]) = (
            x_pad.shape,
            geometry.kernel,
            geometry.stride,
            geometry.dilation,
        );
        let [s_n, s_c, s_h, s_w] = x_pad.strides;
        Indexed {
            data: x_pad.data,
            base: x_pad.offset as isize,
            rows: grid(
                0,
                &[n, out_hw[0], out_hw[1]],
                &[s_n, sh as isize * s_h, sw as isize * s_w],
            ),
            cols: grid(
                0,
                &[c, kh, kw],
                &[s_c, dh as isize * s_h, dw as isize * s_w],
            ),
        }
    }

    fn operand(&self) -> Operand<'_, T> {
        Operand {
            data: self.data,
            base: self.base,
            rows: &self.rows,
            cols: &self.cols,
        }
    }
}

/// Checks a groups = 1 geometry against `x_shape` and `w_shape` (O, C, kh, kw): (H', W').
fn output_hw(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> Result<[usize; 2], LanceError> {
    if geometry.groups != 1 {
        return Err(LanceError::Invalid(format!(
            "this kernel takes groups = 1, got groups {}",
            geometry.groups
        )));
    }
    if w_shape[1] != x_shape[1] || [w_shape[2], w_shape[3]] != geometry.kernel {
        return Err(LanceError::Invalid(format!(
            "weight must have shape (O, {}, {}, {}), got {w_shape:?}",
            x_shape[1], geometry.kernel[0], geometry.kernel[1]
        )));
    }
    geometry.output_hw(x_shape[1], [x_shape[2], x_shape[3]])
}

/// `y[n, o, h', w'] = sum_{c, i, j} W[o, c, i, j] x_pad[n, c, s h' + d i, s w' + d j]` into
/// `out`, row-major (N, O, H', W'); `workspace` holds the zero-padded chunks of x (see
/// [`padded_workspace_len`]; any values, overwritten).
pub fn conv2d<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    weight: &View4<'_, T>,
    geometry: &ConvGeometry,
    workspace: &mut [T],
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [oh, ow] = output_hw(x.shape, weight.shape, geometry)?;
    let (n, o) = (x.shape[0], weight.shape[0]);
    out.check_len(n * o * oh * ow)?;
    let a = Indexed::matrix(weight);
    let plane = (oh * ow) as isize;
    let y_rows = axis(0, o, plane);
    over_padded_chunks(x, geometry.padding, workspace, |samples, x_pad| {
        let unfolding = Indexed::unfolding(x_pad, geometry, [oh, ow]);
        let y_cols = grid(
            0,
            &[samples.len(), oh, ow],
            &[o as isize * plane, ow as isize, 1],
        );
        let mut y = Output {
            data: out,
            base: samples.start as isize * o as isize * plane,
            rows: &y_rows,
            cols: &y_cols,
            accumulate: false,
        };
        gemm::gemm(
            ctx,
            &a.operand(),
            &unfolding.operand().t(),
            &mut y,
            Tiles::All,
        )
    })
}

/// `dW[o, c, i, j] = sum_{n, h', w'} dY[n, o, h', w'] x_pad[n, c, s h' + d i, s w' + d j]` into
/// `out`, row-major (O, C, kh, kw) = `w_shape`: the VJP of [`conv2d`] for W, summed over the
/// chunks of samples that `workspace` pads.
pub fn conv2d_weight_grad<T: Float>(
    ctx: &Context,
    grad: &View4<'_, T>,
    x: &View4<'_, T>,
    w_shape: [usize; 4],
    geometry: &ConvGeometry,
    workspace: &mut [T],
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [oh, ow] = output_hw(x.shape, w_shape, geometry)?;
    let (n, [o, c, kh, kw]) = (x.shape[0], w_shape);
    if grad.shape != [n, o, oh, ow] {
        return Err(LanceError::Invalid(format!(
            "grad must have shape {:?}, got {:?}",
            [n, o, oh, ow],
            grad.shape
        )));
    }
    out.check_len(o * c * kh * kw)?;
    if correlates(grad, x, w_shape, geometry) {
        // SAFETY: all of `out`, before any thread; the samples' sums are added to these zeros.
        unsafe { out.fill(0, out.len(), T::ZERO) };
        return over_padded_chunks(x, geometry.padding, workspace, |samples, x_pad| {
            correlated_weight_grad(ctx, &grad.samples(samples), x_pad, out);
            Ok(())
        });
    }
    let k = (c * kh * kw) as isize;
    let (dw_rows, dw_cols) = (axis(0, o, k), axis(0, k as usize, 1));
    over_padded_chunks(x, geometry.padding, workspace, |samples, x_pad| {
        // rows o, columns (n, h', w') of these samples
        let a = Indexed::matrix(&grad.samples(samples.clone()).swapped(0, 1));
        let unfolding = Indexed::unfolding(x_pad, geometry, [oh, ow]);
        let mut dw = Output {
            data: out,
            base: 0,
            rows: &dw_rows,
            cols: &dw_cols,
            accumulate: samples.start > 0,
        };
        gemm::gemm(ctx, &a.operand(), &unfolding.operand(), &mut dw, Tiles::All)
    })
}

/// Whether [`conv2d_weight_grad`] correlates planes directly ([`correlated_weight_grad`]):
/// stride 1, dilation 1, kernel rows of [`TAPS`] taps, at least [`OUTPUTS`] output channels,
/// rows of unit step, whole vectors per row and few channels, where the GEMM would spend more
/// time gathering its unfolding (kh kw times the size of x) than multiplying.
fn correlates<T: Float>(
    grad: &View4<'_, T>,
    x: &View4<'_, T>,
    w_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> bool {
    let [o, c, _, kw] = w_shape;
    geometry.stride == [1, 1]
        && geometry.dilation == [1, 1]
        && kw == TAPS
        && o >= OUTPUTS
        && grad.strides[3] == 1
        && (x.strides[3] == 1 || geometry.padding != [0, 0])
        && grad.shape[3].is_multiple_of(CORRELATE_WIDTH)
        && c * o <= CORRELATE_MAX_CHANNELS
}

/// `dW += sum_{n, h', w'} dY[n, o, h', w'] x_pad[n, c, h' + i, w' + j]` for the samples of
/// `x_pad` (already padded; `grad` holds the same samples), one kernel row of [`OUTPUTS`]
/// output channels over a block of samples at a time by `RowKernels::correlate`
/// (specs/conv.md#correlated-weight-gradient). Threads split the input channels.
fn correlated_weight_grad<T: Float>(
    ctx: &Context,
    grad: &View4<'_, T>,
    x_pad: &View4<'_, T>,
    out: Out<'_, T>,
) {
    let ([n, o, oh, ow], [_, c, hp, wp]) = (grad.shape, x_pad.shape);
    let kh = hp - oh + 1;
    // samples whose planes of one call (OUTPUTS of dY, one of x) fill about 32 KiB (L1)
    let sample_block =
        (CORRELATE_BLOCK_BYTES / size_of::<T>() / (OUTPUTS * oh * ow + hp * wp)).max(1);
    let correlate = T::row_kernels(ctx.isa).correlate;
    let [g_plane, g_step, g_row, _] = grad.strides;
    let [x_plane, _, x_row, _] = x_pad.strides;
    let work = n * o * c * kh * TAPS * oh * ow / 8;
    for_ranges(c, threads_for(work, ctx.threads), 1, |start, end| {
        let mut sums = [T::ZERO; OUTPUTS * TAPS];
        for first_sample in (0..n).step_by(sample_block) {
            let planes = sample_block.min(n - first_sample);
            let extents = Correlation {
                planes,
                rows: oh,
                len: ow,
                g_step,
                g_plane,
                g_row,
                x_plane,
                x_row,
            };
            for channel in start..end {
                // blocks of OUTPUTS channels; the last one ends at o, adding only its new ones
                for block in (0..o).step_by(OUTPUTS) {
                    let first = block.min(o - OUTPUTS);
                    for i in 0..kh {
                        // SAFETY: `planes` samples from `first_sample`, OUTPUTS planes of grad from
                        // `first` and rows i..i + oh of x_pad's planes, each ow + TAPS - 1 wide
                        // (stride 1): inside both views.
                        unsafe {
                            correlate(
                                &extents,
                                grad.data
                                    .as_ptr()
                                    .offset(at(grad, first_sample, first, 0, 0)),
                                x_pad
                                    .data
                                    .as_ptr()
                                    .offset(at(x_pad, first_sample, channel, i, 0)),
                                &mut sums,
                            )
                        };
                        for k in block - first..OUTPUTS {
                            for (j, &sum) in sums[k * TAPS..(k + 1) * TAPS].iter().enumerate() {
                                let to = (((first + k) * c + channel) * kh + i) * TAPS + j;
                                // SAFETY: inside `out` (o c kh kw elements); this thread owns
                                // its input channels' elements.
                                unsafe { out.write(to, out.read(to) + sum) };
                            }
                        }
                    }
                }
            }
        }
    });
}

/// `dx[n, c, s h' + d i - p, s w' + d j - p] += sum_o W[o, c, i, j] dY[n, o, h', w']` into `out`,
/// row-major `x_shape` (N, C, H, W): the VJP of [`conv2d`] for x, one GEMM per kernel tap over
/// the outputs whose tap reads inside x, each added into dx where it lands (so no padded copy
/// and no col2im). Stride-1 convolutions do better as [`conv2d`] of dY by the flipped kernel
/// (specs/conv.md#stride-1-backward).
pub fn conv2d_input_grad<T: Float>(
    ctx: &Context,
    grad: &View4<'_, T>,
    weight: &View4<'_, T>,
    x_shape: [usize; 4],
    geometry: &ConvGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [oh, ow] = output_hw(x_shape, weight.shape, geometry)?;
    let ([n, c, h, w], o) = (x_shape, weight.shape[0]);
    if grad.shape != [n, o, oh, ow] {
        return Err(LanceError::Invalid(format!(
            "grad must have shape {:?}, got {:?}",
            [n, o, oh, ow],
            grad.shape
        )));
    }
    out.check_len(n * c * h * w)?;
    // SAFETY: all of `out`, before any thread; the taps below add to these zeros.
    unsafe { out.fill(0, out.len(), T::ZERO) };
    let [g_n, g_o, g_h, g_w] = grad.strides;
    let (plane, stride) = ((h * w) as isize, geometry.stride.map(|s| s as isize));
    // the same for every tap: W's tap (i, j) transposed (C x O), dY's and dx's rows
    let (w_rows, w_cols) = (axis(0, c, weight.strides[1]), axis(0, o, weight.strides[0]));
    let (g_rows, dx_rows) = (axis(0, o, g_o), axis(0, c, plane));
    for tap in taps(geometry, [h, w], [oh, ow]) {
        let a = Operand {
            data: weight.data,
            base: at(weight, 0, 0, tap.i, tap.j),
            rows: &w_rows,
            cols: &w_cols,
        };
        let (spans, first) = (
            [n, tap.rows.count, tap.cols.count],
            [tap.rows.first, tap.cols.first],
        );
        let g_cols = grid(0, &spans, &[g_n, g_h, g_w]);
        let b = Operand {
            data: grad.data,
            base: at(grad, 0, 0, first[0], first[1]),
            rows: &g_rows,
            cols: &g_cols,
        };
        let dx_cols = grid(
            0,
            &spans,
            &[c as isize * plane, stride[0] * w as isize, stride[1]],
        );
        let mut dx = Output {
            data: out,
            base: (tap.rows.input * w + tap.cols.input) as isize,
            rows: &dx_rows,
            cols: &dx_cols,
            accumulate: true,
        };
        gemm::gemm(ctx, &a, &b, &mut dx, Tiles::All)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Isa, exact_values as values};

    /// The definition, term by term: y (N, O, H', W'), and dW (O, C, kh, kw) and dx for dY = `g`.
    fn naive(
        x: &[f64],
        xs: [usize; 4],
        w: &[f64],
        ws: [usize; 4],
        g: &[f64],
        geo: &ConvGeometry,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let ([n, c, h, wd], [o, _, kh, kw]) = (xs, ws);
        let [oh, ow] = geo.output_hw(c, [h, wd]).unwrap();
        let (mut y, mut dw, mut dx) = (
            vec![0.0; n * o * oh * ow],
            vec![0.0; w.len()],
            vec![0.0; x.len()],
        );
        for s in 0..n {
            for oc in 0..o {
                for (yr, yc) in (0..oh).flat_map(|r| (0..ow).map(move |q| (r, q))) {
                    let out = ((s * o + oc) * oh + yr) * ow + yc;
                    for (ch, i, j) in (0..c)
                        .flat_map(|ch| (0..kh).flat_map(move |i| (0..kw).map(move |j| (ch, i, j))))
                    {
                        let r = (yr * geo.stride[0] + i * geo.dilation[0]) as isize
                            - geo.padding[0] as isize;
                        let q = (yc * geo.stride[1] + j * geo.dilation[1]) as isize
                            - geo.padding[1] as isize;
                        if (0..h as isize).contains(&r) && (0..wd as isize).contains(&q) {
                            let (xi, wi) = (
                                ((s * c + ch) * h + r as usize) * wd + q as usize,
                                ((oc * c + ch) * kh + i) * kw + j,
                            );
                            y[out] += w[wi] * x[xi];
                            dw[wi] += g[out] * x[xi];
                            dx[xi] += w[wi] * g[out];
                        }
                    }
                }
            }
        }
        (y, dw, dx)
    }

    #[test]
    fn forward_and_gradients_match_the_definition_on_strided_views() {
        let geometries = [
            ([3, 3], [1, 1], [1, 1], [1, 1]),
            ([3, 2], [2, 1], [0, 2], [1, 2]),
            ([1, 5], [1, 3], [2, 0], [2, 1]),
            ([2, 2], [2, 2], [0, 0], [1, 1]),
        ];
        let (xs, o) = ([2, 3, 7, 9], 4);
        let numel = xs.iter().product::<usize>();
        let stored = values(2 * numel, 1);
        let dense: Vec<f64> = stored.iter().step_by(2).copied().collect();
        // every other element: strides (2 C H W, 2 H W, 2 W, 2)
        let x = View4::new(&stored, 0, xs, [2 * 189, 2 * 63, 2 * 9, 2]).unwrap();
        for (kernel, stride, padding, dilation) in geometries {
            let geo = ConvGeometry {
                kernel,
                stride,
                padding,
                dilation,
                groups: 1,
            };
            let ws = [o, 3, kernel[0], kernel[1]];
            let w_data = values(ws.iter().product(), 3);
            let w = View4::c_contiguous(&w_data, ws).unwrap();
            let [oh, ow] = geo.output_hw(3, [7, 9]).unwrap();
            let g_data = values(2 * o * oh * ow, 5);
            let g = View4::c_contiguous(&g_data, [2, o, oh, ow]).unwrap();
            let (want_y, want_dw, want_dx) = naive(&dense, xs, &w_data, ws, &g_data, &geo);
            // one sample padded at a time, then the whole batch at once
            for (isa, threads, samples) in [(Isa::Scalar, 1, 1), (Isa::selected().unwrap(), 3, 2)] {
                let ctx = Context::new(isa, threads).unwrap();
                let mut workspace = vec![f64::NAN; padded_workspace_len(xs, padding, samples)];
                let mut y = vec![f64::NAN; want_y.len()];
                conv2d(&ctx, &x, &w, &geo, &mut workspace, Out::new(&mut y)).unwrap();
                assert_eq!(y, want_y, "{geo:?} {isa:?}");
                let mut dw = vec![f64::NAN; want_dw.len()];
                conv2d_weight_grad(&ctx, &g, &x, ws, &geo, &mut workspace, Out::new(&mut dw))
                    .unwrap();
                assert_eq!(dw, want_dw, "{geo:?} {isa:?}");
                let mut dx = vec![f64::NAN; want_dx.len()];
                conv2d_input_grad(&ctx, &g, &w, xs, &geo, Out::new(&mut dx)).unwrap();
                assert_eq!(dx, want_dx, "{geo:?} {isa:?}");
            }
        }
    }

    #[test]
    fn correlated_weight_gradient_matches_the_definition() {
        // rows of whole vectors, few channels, a partial block of output channels (6 = 4 + 2)
        let o = 6;
        for (kernel, padding, width) in [
            ([3, 3], [1, 1], 32),
            ([2, 3], [0, 0], 18),
            ([1, 3], [2, 1], 16),
        ] {
            let xs = [3, 2, 4, width];
            let x_data = values(xs.iter().product(), 1);
            let x = View4::c_contiguous(&x_data, xs).unwrap();
            let geo = ConvGeometry {
                kernel,
                stride: [1, 1],
                padding,
                dilation: [1, 1],
                groups: 1,
            };
            let ws = [o, 2, kernel[0], kernel[1]];
            let [oh, ow] = geo.output_hw(2, [4, width]).unwrap();
            let g_data = values(3 * o * oh * ow, 5);
            let g = View4::c_contiguous(&g_data, [3, o, oh, ow]).unwrap();
            assert!(correlates(&g, &x, ws, &geo), "{geo:?}");
            let w_data = values(ws.iter().product(), 3);
            let want_dw = naive(&x_data, xs, &w_data, ws, &g_data, &geo).1;
            for (isa, threads, samples) in [(Isa::Scalar, 1, 1), (Isa::selected().unwrap(), 2, 2)] {
                let ctx = Context::new(isa, threads).unwrap();
                let mut workspace = vec![f64::NAN; padded_workspace_len(xs, padding, samples)];
                let mut dw = vec![f64::NAN; want_dw.len()];
                conv2d_weight_grad(&ctx, &g, &x, ws, &geo, &mut workspace, Out::new(&mut dw))
                    .unwrap();
                assert_eq!(dw, want_dw, "{geo:?} {isa:?}");
            }
        }
    }

    #[test]
    fn groups_shapes_and_sizes_that_do_not_fit_are_errors() {
        let ctx = Context::new(Isa::Scalar, 1).unwrap();
        let data = vec![0.0f32; 2 * 4 * 5 * 5];
        let x = View4::c_contiguous(&data, [2, 4, 5, 5]).unwrap();
        let w_data = vec![0.0f32; 3 * 4 * 9];
        let w = View4::c_contiguous(&w_data, [3, 4, 3, 3]).unwrap();
        let geo = |groups| ConvGeometry {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [0, 0],
            dilation: [1, 1],
            groups,
        };
        let mut y = vec![0.0f32; 2 * 3 * 9];
        let ws = &mut [];
        assert!(conv2d(&ctx, &x, &w, &geo(2), ws, Out::new(&mut y)).is_err());
        assert!(conv2d(&ctx, &x, &w, &geo(1), ws, Out::new(&mut y[1..])).is_err());
        let narrow = View4::c_contiguous(&w_data[..3 * 3 * 9], [3, 3, 3, 3]).unwrap();
        assert!(conv2d(&ctx, &x, &narrow, &geo(1), ws, Out::new(&mut y)).is_err());
        conv2d(&ctx, &x, &w, &geo(1), ws, Out::new(&mut y)).unwrap();
        let g = View4::c_contiguous(&y[..2 * 3 * 8], [2, 3, 2, 4]).unwrap();
        let mut dw = vec![0.0f32; 3 * 4 * 9];
        let shape = [3, 4, 3, 3];
        assert!(conv2d_weight_grad(&ctx, &g, &x, shape, &geo(1), ws, Out::new(&mut dw)).is_err());
        // padding needs a workspace of one padded sample at least
        let padded = ConvGeometry {
            padding: [1, 1],
            ..geo(1)
        };
        let short = &mut vec![0.0f32; padded_workspace_len([2, 4, 5, 5], [1, 1], 1) - 1];
        let mut y = vec![0.0f32; 2 * 3 * 25];
        assert!(conv2d(&ctx, &x, &w, &padded, short, Out::new(&mut y)).is_err());
    }
}
