//! Depthwise convolution and its two VJPs summed over the kernel taps, with no unfolding and no
//! padded copy (specs/conv.md#direct).
//!
//! Input channel `c` feeds the `M = O / C` output channels `c M .. c M + M - 1`. Each tap `(i, j)`
//! reads, for every output row that it can reach, one strided row of the input: the forward adds
//! `W[o, 0, i, j]` times that row to the output row (an axpy), the input gradient adds the output
//! gradient's row back, and the weight gradient sums the products of the two rows (a dot). The
//! rows run on the SIMD row kernels of [`crate::Float::row_kernels`] (unit steps) or their scalar
//! loop (other steps). Threads take whole planes, so they never write the same element.
//!
//! At stride 1 the rows are joined instead ([`Wide`]): each plane is copied once into a
//! zero-padded scratch, and the output (or its gradient) is held "wide", its rows as far apart as
//! the padded input's, so that a tap is one long unit-step axpy or dot over the whole plane
//! rather than one short call per row; small planes of one channel are stacked across samples,
//! so that a tap is one run over the whole stack (mobilenetv2's 2x2 maps of 960 channels at
//! batch 64: forward and both VJPs 11-12 ms against 52-54 ms one plane at a time). Threads then
//! take whole channels.

use std::ops::Range;

use crate::out::Out;
use crate::parallel::{self, for_ranges};
use crate::taps::{Tap, taps};
use crate::view::{at, copy_plane};
use crate::{Context, ConvGeometry, Float, LanceError, RowKernels, View4};

/// The output (H', W') of a depthwise convolution of an input of `x_shape` (N, C, H, W) by a
/// weight of `w_shape` (O, 1, kh, kw), after checking that they fit `geometry` with groups = C.
pub fn depthwise_output_hw(
    x_shape: [usize; 4],
    w_shape: [usize; 4],
    geometry: &ConvGeometry,
) -> Result<[usize; 2], LanceError> {
    let [_, c, h, w] = x_shape;
    if geometry.groups != c || c == 0 {
        return Err(LanceError::Invalid(format!(
            "a depthwise convolution has groups = channels ({c}), got groups {}",
            geometry.groups
        )));
    }
    if w_shape[1] != 1 || !w_shape[0].is_multiple_of(c) || w_shape[0] == 0 {
        return Err(LanceError::Invalid(format!(
            "weight must have shape (M * {c}, 1, kh, kw) for {c} channels, got {w_shape:?}"
        )));
    }
    if [w_shape[2], w_shape[3]] != geometry.kernel {
        return Err(LanceError::Invalid(format!(
            "weight's kernel {:?} differs from kernel {:?}",
            [w_shape[2], w_shape[3]],
            geometry.kernel
        )));
    }
    geometry.output_hw(c, [h, w])
}

/// What the three kernels share, checked: the shapes, the taps and the row kernels.
struct Plan<T> {
    x_shape: [usize; 4],
    out_hw: [usize; 2],
    channels_out: usize,
    multiplier: usize,
    stride: [usize; 2],
    taps: Vec<Tap>,
    rows: RowKernels<T>,
    wide: Option<Wide>,
}

/// A stride-1 plane held wide: the input plane zero-padded to `padded` (Hp, Wp), and the
/// output's rows `Wp` apart, its first W' elements valid. Output element `k` (wide) then reads
/// padded input `k + offset` for each tap, `offset = d_h i Wp + d_w j`, so a tap is one run of
/// `len = (H' - 1) Wp + W'` elements, which ends exactly at the padded plane's last element.
///
/// Planes of one channel from consecutive samples are stacked `Hp Wp` apart, in the input and
/// the output alike, so that one run of `(P - 1) Hp Wp + len` elements makes a tap for `P`
/// planes: small planes then cost one call per tap for a whole stack, not one per plane. The
/// output elements between planes are discarded (or, for gradients, zero).
struct Wide {
    padded: [usize; 2],
    padding: [usize; 2],
    /// (tap index i kw + j, offset) of every tap.
    offsets: Vec<(usize, usize)>,
    len: usize,
}

impl Wide {
    fn new(geometry: &ConvGeometry, hw: [usize; 2], out_hw: [usize; 2]) -> Option<Self> {
        if geometry.stride != [1, 1] {
            return None;
        }
        let (p, d, [kh, kw]) = (geometry.padding, geometry.dilation, geometry.kernel);
        let padded = [hw[0] + 2 * p[0], hw[1] + 2 * p[1]];
        let offsets = (0..kh)
            .flat_map(|i| (0..kw).map(move |j| (i * kw + j, d[0] * i * padded[1] + d[1] * j)))
            .collect();
        let len = (out_hw[0] - 1) * padded[1] + out_hw[1];
        Some(Wide {
            padded,
            padding: p,
            offsets,
            len,
        })
    }

    fn plane_len(&self) -> usize {
        self.padded[0] * self.padded[1]
    }

    /// How many planes of `n` samples to stack: as many as fill about [`STACK_ELEMENTS`].
    fn stack(&self, n: usize) -> usize {
        (STACK_ELEMENTS / self.plane_len()).clamp(1, n.max(1))
    }

    /// The run of a tap over a stack of `planes` planes.
    fn run(&self, planes: usize) -> usize {
        (planes - 1) * self.plane_len() + self.len
    }

    /// `buf` (P Hp Wp) = planes `[s, b]` of `v` (H, W) for the samples `s` of `samples`,
    /// zero-padded and stacked.
    fn pad_planes<T: Float>(
        &self,
        v: &View4<'_, T>,
        samples: Range<usize>,
        b: usize,
        buf: &mut [T],
    ) {
        let interior = self.padding[0] * self.padded[1] + self.padding[1];
        self.stack_planes(v, samples, b, interior, buf);
    }

    /// `buf` (P Hp Wp) = planes `[s, b]` of `v` (H', W') for the samples `s` of `samples`, held
    /// wide and stacked, zeros between rows and planes.
    fn widen_planes<T: Float>(
        &self,
        v: &View4<'_, T>,
        samples: Range<usize>,
        b: usize,
        buf: &mut [T],
    ) {
        self.stack_planes(v, samples, b, 0, buf);
    }

    /// Each plane `[s, b]` into its slot of `Hp Wp` elements of `buf`, from element `first` on,
    /// its rows `Wp` apart; zeros elsewhere.
    fn stack_planes<T: Float>(
        &self,
        v: &View4<'_, T>,
        samples: Range<usize>,
        b: usize,
        first: usize,
        buf: &mut [T],
    ) {
        for (s, slot) in samples.zip(buf.chunks_exact_mut(self.plane_len())) {
            slot.fill(T::ZERO);
            copy_plane(v, s, b, &mut slot[first..], self.padded[1]);
        }
    }
}

/// Elements of a stack of wide planes (8 KiB in float32), so that the stacked input and output
/// stay in the L1 cache: 8192 measured slower on 8x8 and 32x32 planes.
const STACK_ELEMENTS: usize = 1 << 11;

/// The samples `0..n` in consecutive stacks of `stack`.
fn stacks(n: usize, stack: usize) -> impl Iterator<Item = Range<usize>> {
    (0..n).step_by(stack).map(move |s| s..(s + stack).min(n))
}

impl<T: Float> Plan<T> {
    /// The plan for an input of `x_shape` and a weight of `w_shape`; `grad`, if given, must have
    /// the output's shape (N, O, H', W').
    fn new(
        ctx: &Context,
        x_shape: [usize; 4],
        w_shape: [usize; 4],
        geometry: &ConvGeometry,
        grad: Option<[usize; 4]>,
    ) -> Result<Self, LanceError> {
        let out_hw = depthwise_output_hw(x_shape, w_shape, geometry)?;
        let expected = [x_shape[0], w_shape[0], out_hw[0], out_hw[1]];
        if let Some(grad) = grad.filter(|&g| g != expected) {
            return Err(LanceError::Invalid(format!(
                "grad must have shape {expected:?}, got {grad:?}"
            )));
        }
        Ok(Plan {
            x_shape,
            out_hw,
            channels_out: w_shape[0],
            multiplier: w_shape[0] / x_shape[1],
            stride: geometry.stride,
            taps: taps(geometry, [x_shape[2], x_shape[3]], out_hw),
            rows: T::row_kernels(ctx.isa),
            wide: Wide::new(geometry, [x_shape[2], x_shape[3]], out_hw),
        })
    }

    /// Threads for a pass over `elements` output elements per tap.
    fn threads(&self, ctx: &Context, elements: usize) -> usize {
        parallel::threads_for(elements * self.taps.len(), ctx.threads)
    }

    /// Calls `row(tap, input, output)` for every tap and every output row it reaches, with the
    /// (row, column) of the first input element it reads and of the first output element it
    /// feeds; along the row, `tap.cols.count` inputs `stride[1]` apart meet adjacent outputs.
    fn for_each_row(&self, mut row: impl FnMut(&Tap, [usize; 2], [usize; 2])) {
        for tap in &self.taps {
            for r in 0..tap.rows.count {
                let input = [tap.rows.input + r * self.stride[0], tap.cols.input];
                row(tap, input, [tap.rows.first + r, tap.cols.first]);
            }
        }
    }
}

/// `y[n, o, h', w'] = sum_{i, j} W[o, 0, i, j] x[n, o / M, s h' + d i - p, s w' + d j - p]` into
/// `out`, row-major (N, O, H', W').
pub fn depthwise_conv2d<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    weight: &View4<'_, T>,
    geometry: &ConvGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let plan = Plan::<T>::new(ctx, x.shape, weight.shape, geometry, None)?;
    let ([n, _, _, _], [oh, ow], o) = (plan.x_shape, plan.out_hw, plan.channels_out);
    out.check_len(n * o * oh * ow)?;
    if let Some(wide) = &plan.wide {
        wide_forward(ctx, &plan, wide, x, weight, out);
        return Ok(());
    }
    let x_step = plan.stride[1] as isize * x.strides[3];
    for_ranges(n * o, plan.threads(ctx, out.len()), 1, |start, end| {
        for plane in start..end {
            let (s, oc, y) = (plane / o, plane % o, plane * oh * ow);
            // SAFETY: this thread's own plane, inside `out`.
            unsafe { out.fill(y, y + oh * ow, T::ZERO) };
            plan.for_each_row(|tap, [xr, xc], [yr, yc]| {
                let a = weight.data[at(weight, oc, 0, tap.i, tap.j) as usize];
                let from = at(x, s, oc / plan.multiplier, xr, xc);
                // SAFETY: the spans keep every read inside x (checked by its view) and every
                // write inside this thread's plane of `out`.
                unsafe {
                    let to = out.at(y + yr * ow + yc);
                    (plan.rows.axpy)(
                        tap.cols.count,
                        a,
                        x.data.as_ptr().offset(from),
                        x_step,
                        to,
                        1,
                    )
                };
            });
        }
    });
    Ok(())
}

/// `dx[n, c, s h' + d i - p, s w' + d j - p] += sum_m W[c M + m, 0, i, j] dY[n, c M + m, h', w']`
/// into `out`, row-major (N, C, H, W) = `x_shape`: the VJP of [`depthwise_conv2d`] for x.
pub fn depthwise_conv2d_input_grad<T: Float>(
    ctx: &Context,
    grad: &View4<'_, T>,
    weight: &View4<'_, T>,
    x_shape: [usize; 4],
    geometry: &ConvGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let plan = Plan::<T>::new(ctx, x_shape, weight.shape, geometry, Some(grad.shape))?;
    let [n, c, h, w] = x_shape;
    out.check_len(n * c * h * w)?;
    if let Some(wide) = &plan.wide {
        wide_input_grad(ctx, &plan, wide, grad, weight, out);
        return Ok(());
    }
    let dx_step = plan.stride[1] as isize;
    for_ranges(n * c, plan.threads(ctx, grad.numel()), 1, |start, end| {
        for plane in start..end {
            let (s, ch, dx) = (plane / c, plane % c, plane * h * w);
            // SAFETY: this thread's own plane, inside `out`.
            unsafe { out.fill(dx, dx + h * w, T::ZERO) };
            for oc in ch * plan.multiplier..(ch + 1) * plan.multiplier {
                plan.for_each_row(|tap, [xr, xc], [yr, yc]| {
                    let a = weight.data[at(weight, oc, 0, tap.i, tap.j) as usize];
                    let from = at(grad, s, oc, yr, yc);
                    // SAFETY: as in the forward; the written elements are `dx_step` apart
                    // inside this thread's plane.
                    unsafe {
                        let to = out.at(dx + xr * w + xc);
                        let g = grad.data.as_ptr().offset(from);
                        (plan.rows.axpy)(tap.cols.count, a, g, grad.strides[3], to, dx_step)
                    };
                });
            }
        }
    });
    Ok(())
}

/// `dW[o, 0, i, j] = sum_{n, h', w'} dY[n, o, h', w'] x[n, o / M, s h' + d i - p, s w' + d j - p]`
/// into `out`, row-major (O, 1, kh, kw) = `w_shape`: the VJP of [`depthwise_conv2d`] for W.
pub fn depthwise_conv2d_weight_grad<T: Float>(
    ctx: &Context,
    grad: &View4<'_, T>,
    x: &View4<'_, T>,
    w_shape: [usize; 4],
    geometry: &ConvGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let plan = Plan::<T>::new(ctx, x.shape, w_shape, geometry, Some(grad.shape))?;
    let (n, [o, _, kh, kw]) = (x.shape[0], w_shape);
    out.check_len(o * kh * kw)?;
    if let Some(wide) = &plan.wide {
        wide_weight_grad(ctx, &plan, wide, grad, x, kh * kw, out);
        return Ok(());
    }
    let x_step = plan.stride[1] as isize * x.strides[3];
    for_ranges(o, plan.threads(ctx, grad.numel()), 1, |start, end| {
        let mut totals = vec![T::ZERO; kh * kw];
        for oc in start..end {
            totals.fill(T::ZERO);
            for s in 0..n {
                plan.for_each_row(|tap, [xr, xc], [yr, yc]| {
                    let (g, v) = (
                        at(grad, s, oc, yr, yc),
                        at(x, s, oc / plan.multiplier, xr, xc),
                    );
                    // SAFETY: the spans keep both rows inside their views' data.
                    let dot = unsafe {
                        let (g, v) = (grad.data.as_ptr().offset(g), x.data.as_ptr().offset(v));
                        (plan.rows.dot)(tap.cols.count, g, grad.strides[3], v, x_step)
                    };
                    let total = &mut totals[tap.i * kw + tap.j];
                    *total = *total + dot;
                });
            }
            for (k, &total) in totals.iter().enumerate() {
                // SAFETY: this thread's own output channels, inside `out`.
                unsafe { out.write(oc * kh * kw + k, total) };
            }
        }
    });
    Ok(())
}

/// `W[oc, 0, i, j]` for the tap `t = i kw + j`.
fn tap_weight<T: Float>(weight: &View4<'_, T>, oc: usize, t: usize) -> T {
    let kw = weight.shape[3];
    weight.data[at(weight, oc, 0, t / kw, t % kw) as usize]
}

/// [`depthwise_conv2d`] at stride 1: per input channel and stack of samples, one padded copy,
/// then per output channel one axpy per tap into the wide output, whose valid columns are then
/// written out.
fn wide_forward<T: Float>(
    ctx: &Context,
    plan: &Plan<T>,
    wide: &Wide,
    x: &View4<'_, T>,
    weight: &View4<'_, T>,
    out: Out<'_, T>,
) {
    let ([n, c, _, _], [oh, ow], m) = (plan.x_shape, plan.out_hw, plan.multiplier);
    let (wp, plane, stack) = (wide.padded[1], wide.plane_len(), wide.stack(n));
    for_ranges(c, plan.threads(ctx, out.len()), 1, |start, end| {
        let (mut padded, mut result) = (vec![T::ZERO; stack * plane], vec![T::ZERO; stack * plane]);
        for ch in start..end {
            for samples in stacks(n, stack) {
                wide.pad_planes(x, samples.clone(), ch, &mut padded);
                let run = wide.run(samples.len());
                for oc in ch * m..(ch + 1) * m {
                    result[..run].fill(T::ZERO);
                    for &(t, offset) in &wide.offsets {
                        let a = tap_weight(weight, oc, t);
                        // SAFETY: offset + run <= P Hp Wp <= padded.len(), run <= result.len().
                        unsafe {
                            let from = padded.as_ptr().add(offset);
                            (plan.rows.axpy)(run, a, from, 1, result.as_mut_ptr(), 1)
                        };
                    }
                    for (q, s) in samples.clone().enumerate() {
                        let y = (s * plan.channels_out + oc) * oh * ow;
                        for r in 0..oh {
                            let row = &result[q * plane + r * wp..][..ow];
                            // SAFETY: this thread's own output planes, inside `out`.
                            unsafe { out.copy_from(y + r * ow, row) };
                        }
                    }
                }
            }
        }
    });
}

/// [`depthwise_conv2d_input_grad`] at stride 1: per input channel and stack of samples, each of
/// its output channels' gradients held wide and added back by one axpy per tap into the padded
/// planes, then cropped.
fn wide_input_grad<T: Float>(
    ctx: &Context,
    plan: &Plan<T>,
    wide: &Wide,
    grad: &View4<'_, T>,
    weight: &View4<'_, T>,
    out: Out<'_, T>,
) {
    let ([n, c, h, w], m) = (plan.x_shape, plan.multiplier);
    let ([_, wp], [ph, pw]) = (wide.padded, wide.padding);
    let (plane, stack) = (wide.plane_len(), wide.stack(n));
    for_ranges(c, plan.threads(ctx, grad.numel()), 1, |start, end| {
        let (mut padded, mut widened) =
            (vec![T::ZERO; stack * plane], vec![T::ZERO; stack * plane]);
        for ch in start..end {
            for samples in stacks(n, stack) {
                let run = wide.run(samples.len());
                padded.fill(T::ZERO);
                for oc in ch * m..(ch + 1) * m {
                    wide.widen_planes(grad, samples.clone(), oc, &mut widened);
                    for &(t, offset) in &wide.offsets {
                        let a = tap_weight(weight, oc, t);
                        // SAFETY: as in the forward, with the roles of the two buffers swapped.
                        unsafe {
                            let to = padded.as_mut_ptr().add(offset);
                            (plan.rows.axpy)(run, a, widened.as_ptr(), 1, to, 1)
                        };
                    }
                }
                for (q, s) in samples.enumerate() {
                    for r in 0..h {
                        let row = &padded[q * plane + (r + ph) * wp + pw..][..w];
                        // SAFETY: this thread's own input planes, inside `out`.
                        unsafe { out.copy_from(((s * c + ch) * h + r) * w, row) };
                    }
                }
            }
        }
    });
}

/// [`depthwise_conv2d_weight_grad`] at stride 1: per output channel and stack of samples, the
/// padded input planes and the wide output gradients (zeros between rows and planes), one dot
/// per tap.
fn wide_weight_grad<T: Float>(
    ctx: &Context,
    plan: &Plan<T>,
    wide: &Wide,
    grad: &View4<'_, T>,
    x: &View4<'_, T>,
    taps: usize,
    out: Out<'_, T>,
) {
    let ([n, _, _, _], m) = (plan.x_shape, plan.multiplier);
    let (plane, stack) = (wide.plane_len(), wide.stack(n));
    for_ranges(
        plan.channels_out,
        plan.threads(ctx, grad.numel()),
        1,
        |start, end| {
            let (mut padded, mut widened) =
                (vec![T::ZERO; stack * plane], vec![T::ZERO; stack * plane]);
            let mut totals = vec![T::ZERO; taps];
            for oc in start..end {
                totals.fill(T::ZERO);
                for samples in stacks(n, stack) {
                    let run = wide.run(samples.len());
                    wide.pad_planes(x, samples.clone(), oc / m, &mut padded);
                    wide.widen_planes(grad, samples, oc, &mut widened);
                    for &(t, offset) in &wide.offsets {
                        // SAFETY: as in the forward.
                        let dot = unsafe {
                            let from = padded.as_ptr().add(offset);
                            (plan.rows.dot)(run, widened.as_ptr(), 1, from, 1)
                        };
                        totals[t] = totals[t] + dot;
                    }
                }
                // SAFETY: this thread's own output channels, inside `out`.
                unsafe { out.copy_from(oc * taps, &totals) };
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Isa, exact_values as values};

    /// The definition: every (output, tap) pair that reads inside x, as flat indices
    /// (y, x, W) into row-major arrays of shapes (N, O, H', W'), `xs` and `ws`.
    fn terms(xs: [usize; 4], ws: [usize; 4], g: &ConvGeometry) -> Vec<[usize; 3]> {
        let ([n, c, h, wd], [o, _, kh, kw]) = (xs, ws);
        let [oh, ow] = g.output_hw(c, [h, wd]).unwrap();
        let mut terms = Vec::new();
        for s in 0..n {
            for oc in 0..o {
                for (yy, xx) in (0..oh).flat_map(|yy| (0..ow).map(move |xx| (yy, xx))) {
                    for (i, j) in (0..kh).flat_map(|i| (0..kw).map(move |j| (i, j))) {
                        let r =
                            (yy * g.stride[0] + i * g.dilation[0]) as isize - g.padding[0] as isize;
                        let q =
                            (xx * g.stride[1] + j * g.dilation[1]) as isize - g.padding[1] as isize;
                        if (0..h as isize).contains(&r) && (0..wd as isize).contains(&q) {
                            let ch = oc / (o / c);
                            terms.push([
                                ((s * o + oc) * oh + yy) * ow + xx,
                                ((s * c + ch) * h + r as usize) * wd + q as usize,
                                (oc * kh + i) * kw + j,
                            ]);
                        }
                    }
                }
            }
        }
        terms
    }

    #[test]
    fn forward_and_gradients_match_the_definition_on_every_path() {
        let geometries = [
            ([3, 3], [1, 1], [1, 1], [1, 1]),
            ([3, 2], [1, 1], [0, 2], [2, 1]), // wide: dilated, asymmetric padding
            ([2, 4], [1, 1], [1, 0], [1, 1]), // wide: padding on one axis only
            ([3, 2], [2, 1], [0, 2], [1, 2]),
            ([1, 5], [1, 3], [2, 0], [2, 1]),
        ];
        // the second input's planes are too large to stack all 5 samples at once
        let inputs = [([2, 3, 7, 19], 3), ([5, 2, 40, 60], 2)];
        for (kernel, stride, padding, dilation) in geometries {
            for (multiplier, (xs, c)) in [1, 2].into_iter().flat_map(|m| inputs.map(|i| (m, i))) {
                let ws = [c * multiplier, 1, kernel[0], kernel[1]];
                let g = ConvGeometry {
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups: c,
                };
                let [oh, ow] = depthwise_output_hw(xs, ws, &g).unwrap();
                let (x, w) = (
                    values(xs.iter().product(), 1),
                    values(ws.iter().product(), 3),
                );
                let gs = [xs[0], ws[0], oh, ow];
                let dy = values(gs.iter().product(), 5);
                let (mut want_y, mut want_dx, mut want_dw) =
                    (vec![0.0; dy.len()], vec![0.0; x.len()], vec![0.0; w.len()]);
                for [yi, xi, wi] in terms(xs, ws, &g) {
                    want_y[yi] += w[wi] * x[xi];
                    want_dx[xi] += w[wi] * dy[yi];
                    want_dw[wi] += dy[yi] * x[xi];
                }
                for isa in Isa::available() {
                    for threads in [1, 2] {
                        let ctx = Context::new(isa, threads).unwrap();
                        let xv = View4::c_contiguous(&x, xs).unwrap();
                        let wv = View4::c_contiguous(&w, ws).unwrap();
                        let gv = View4::c_contiguous(&dy, gs).unwrap();
                        let mut y = vec![f64::NAN; dy.len()];
                        depthwise_conv2d(&ctx, &xv, &wv, &g, Out::new(&mut y)).unwrap();
                        assert_eq!(y, want_y, "{} forward {kernel:?} {stride:?}", isa.name());
                        let mut dx = vec![f64::NAN; x.len()];
                        depthwise_conv2d_input_grad(&ctx, &gv, &wv, xs, &g, Out::new(&mut dx))
                            .unwrap();
                        assert_eq!(dx, want_dx, "{} dx {kernel:?} {stride:?}", isa.name());
                        let mut dw = vec![f64::NAN; w.len()];
                        depthwise_conv2d_weight_grad(&ctx, &gv, &xv, ws, &g, Out::new(&mut dw))
                            .unwrap();
                        assert_eq!(dw, want_dw, "{} dW {kernel:?} {stride:?}", isa.name());
                    }
                }
            }
        }
    }

    #[test]
    fn strided_views_read_the_same_elements() {
        // x stored channels-last and read through a transposing view.
        let (xs, ws) = ([2, 4, 5, 6], [4, 1, 3, 3]);
        let x = values(240, 2);
        let mut channels_last = vec![0.0; 240];
        for (s, ch, r, q) in (0..2).flat_map(|s| {
            (0..4).flat_map(move |ch| (0..5).flat_map(move |r| (0..6).map(move |q| (s, ch, r, q))))
        }) {
            channels_last[((s * 5 + r) * 6 + q) * 4 + ch] = x[((s * 4 + ch) * 5 + r) * 6 + q];
        }
        let view = View4::new(&channels_last, 0, xs, [120, 1, 24, 4]).unwrap();
        let w = values(36, 4);
        let g = ConvGeometry {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 4,
        };
        let ctx = Context::new(Isa::detect(), 1).unwrap();
        let mut y = vec![0.0; 240];
        depthwise_conv2d(
            &ctx,
            &view,
            &View4::c_contiguous(&w, ws).unwrap(),
            &g,
            Out::new(&mut y),
        )
        .unwrap();
        let mut want = vec![0.0; 240];
        for [yi, xi, wi] in terms(xs, ws, &g) {
            want[yi] += w[wi] * x[xi];
        }
        assert_eq!(y, want);
    }

    #[test]
    fn mismatched_arguments_are_errors() {
        let g = ConvGeometry {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 2,
        };
        let message = |x, w| depthwise_output_hw(x, w, &g).unwrap_err().to_string();
        assert!(message([1, 3, 5, 5], [3, 1, 3, 3]).contains("groups = channels (3)"));
        assert!(
            message([1, 2, 5, 5], [3, 1, 3, 3])
                .contains("weight must have shape (M * 2, 1, kh, kw)")
        );
        assert!(message([1, 2, 5, 5], [2, 2, 3, 3]).contains("weight must have shape"));
        assert!(message([1, 2, 5, 5], [2, 1, 3, 2]).contains("differs from kernel"));
        let ctx = Context::new(Isa::Scalar, 1).unwrap();
        let (x, w, dy) = (vec![0.0; 50], vec![0.0; 18], vec![0.0; 49]);
        let (xv, wv) = (
            View4::c_contiguous(&x, [1, 2, 5, 5]).unwrap(),
            View4::c_contiguous(&w, [2, 1, 3, 3]).unwrap(),
        );
        let gv = View4::c_contiguous(&dy, [1, 1, 7, 7]).unwrap();
        let mut out = vec![0.0; 50];
        let err = depthwise_conv2d_input_grad(&ctx, &gv, &wv, [1, 2, 5, 5], &g, Out::new(&mut out))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("grad must have shape [1, 2, 5, 5]")
        );
        let mut short = vec![0.0; 3];
        let err = depthwise_conv2d(&ctx, &xv, &wv, &g, Out::new(&mut short)).unwrap_err();
        assert_eq!(
            err,
            LanceError::BufferLength {
                expected: 50,
                got: 3
            }
        );
    }
}
