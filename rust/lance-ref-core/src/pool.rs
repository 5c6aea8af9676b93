//! Max pooling and its VJP over (N, C, H, W), plane by plane (specs/pool.md#max_pool2d), in one
//! pass where NumPy makes several per tap.
//!
//! The forward scans each window's taps in row-major order, `t = i kw + j`; a tap wins if it is
//! greater than the best so far or NaN, as torch. Taps outside the input (padding, or the extra
//! windows of ceil mode) never win, as if they held -inf. The forward keeps each window's winning
//! tap, in the smallest unsigned type that holds it ([`TapIndex`]: u8 or u16), and the backward
//! adds each output gradient to its winner's input element. Threads take whole planes.
//!
//! Windows that lie inside the input are swept a row of outputs at a time, tap by tap, with
//! branch-free selects: a strided loop that the compiler vectorises (a 2x2 stride-2 pooling of
//! (128, 32, 28, 28) float32 went from about 30 to 10-13 ms on one core). The windows that
//! touch the padding go one by one.

use crate::out::Out;
use crate::parallel::{for_ranges, threads_for};
use crate::view::at;
use crate::{Context, Float, LanceError, View4};
use std::hint::select_unpredictable;
use std::sync::atomic::{AtomicBool, Ordering};

/// The window of a pooling: kernel, stride, padding and dilation per spatial axis, and the output
/// size, which ceil mode may make one larger than the windows that fit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub out_hw: [usize; 2],
}

impl PoolGeometry {
    /// Checks the geometry against an input of spatial size `hw`: positive kernel, stride,
    /// dilation and output; every window starts before the input's end (torch's ceil-mode rule).
    fn check(&self, hw: [usize; 2]) -> Result<(), LanceError> {
        for (name, value) in [
            ("kernel", self.kernel),
            ("stride", self.stride),
            ("dilation", self.dilation),
            ("out_hw", self.out_hw),
        ] {
            if value.contains(&0) {
                return Err(LanceError::Invalid(format!(
                    "{name} must be at least 1, got {value:?}"
                )));
            }
        }
        for d in 0..2 {
            let last_start = (self.out_hw[d] - 1)
                .checked_mul(self.stride[d])
                .ok_or(LanceError::SizeOverflow)?;
            if last_start >= hw[d].saturating_add(self.padding[d]) {
                return Err(LanceError::Invalid(format!(
                    "out_hw {:?} has windows past the end of the input {hw:?} (padding {:?}, stride {:?})",
                    self.out_hw, self.padding, self.stride
                )));
            }
        }
        Ok(())
    }
}

/// The index type of a window's winning tap: u8 or u16.
pub trait TapIndex: Copy + Send + Sync + 'static {
    /// `t` in this type, if it fits.
    fn from_tap(t: usize) -> Option<Self>;
    fn tap(self) -> usize;
    /// `a` if `pick` else `b`, by masking bits (see [`Float::select`]).
    fn select(pick: bool, a: Self, b: Self) -> Self;
}

macro_rules! tap_index {
    ($($t:ty),*) => {$(
        impl TapIndex for $t {
            fn from_tap(t: usize) -> Option<Self> {
                <$t>::try_from(t).ok()
            }
            fn tap(self) -> usize {
                self.into()
            }
            #[inline(always)]
            fn select(pick: bool, a: Self, b: Self) -> Self {
                let mask = if pick { !0 } else { 0 };
                (a & mask) | (b & !mask)
            }
        }
    )*};
}

tap_index!(u8, u16);

/// The kernel's taps as `I`, or an error naming the type if the last one does not fit.
fn tap_indices<I: TapIndex>(kernel: [usize; 2]) -> Result<Vec<I>, LanceError> {
    (0..kernel[0] * kernel[1])
        .map(|t| I::from_tap(t))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| {
            LanceError::Invalid(format!(
                "a kernel of {kernel:?} has more taps than {} can index",
                std::any::type_name::<I>()
            ))
        })
}

/// Where the taps of a window read in the input.
struct Window {
    /// (row, column) of tap `t = i kw + j` relative to its window's first element
    offsets: Vec<[usize; 2]>,
    /// the dilated kernel's extent
    span: [usize; 2],
    stride: [usize; 2],
    padding: [usize; 2],
    hw: [usize; 2],
}

impl Window {
    fn new(geometry: &PoolGeometry, hw: [usize; 2]) -> Window {
        let [kh, kw] = geometry.kernel;
        let d = geometry.dilation;
        Window {
            offsets: (0..kh * kw)
                .map(|t| [t / kw * d[0], t % kw * d[1]])
                .collect(),
            span: [(kh - 1) * d[0] + 1, (kw - 1) * d[1] + 1],
            stride: geometry.stride,
            padding: geometry.padding,
            hw,
        }
    }

    /// The input element (row, column) in padded coordinates of tap `t` of output `(yr, yc)`.
    fn padded(&self, yr: usize, yc: usize, t: usize) -> [usize; 2] {
        let [dr, dc] = self.offsets[t];
        [yr * self.stride[0] + dr, yc * self.stride[1] + dc]
    }

    /// Whether the windows of output row `yr` lie inside the input's rows.
    fn rows_inside(&self, yr: usize) -> bool {
        let top = yr * self.stride[0];
        top >= self.padding[0] && top + self.span[0] <= self.padding[0] + self.hw[0]
    }

    /// The output columns `c0..c1` (of `ow`) whose windows lie inside the input's columns.
    fn inside_columns(&self, ow: usize) -> [usize; 2] {
        let (pw, s) = (self.padding[1], self.stride[1]);
        let c0 = pw.div_ceil(s).min(ow);
        let c1 = match (pw + self.hw[1]).checked_sub(self.span[1]) {
            Some(last_left) => (last_left / s + 1).min(ow),
            None => 0,
        };
        [c0, c1.max(c0)]
    }

    /// The (tap, input element) pairs of output `(yr, yc)`'s window that lie inside the input,
    /// in tap order (for windows at the padded edges; the others are swept a row at a time).
    fn taps(&self, yr: usize, yc: usize) -> impl Iterator<Item = (usize, [usize; 2])> + '_ {
        let [h, w] = self.hw;
        let [ph, pw] = self.padding;
        (0..self.offsets.len()).filter_map(move |t| {
            let [r, q] = self.padded(yr, yc, t);
            ((ph..ph + h).contains(&r) && (pw..pw + w).contains(&q)).then(|| (t, [r - ph, q - pw]))
        })
    }
}

/// `best[n, c, h', w'] = max_{i, j} x[n, c, s h' + d i - p, s w' + d j - p]` and `taps` = the
/// index `i kw + j` of the first maximum (or the last NaN), both row-major (N, C, H', W').
pub fn max_pool2d<T: Float, I: TapIndex>(
    ctx: &Context,
    x: &View4<'_, T>,
    geometry: &PoolGeometry,
    best: Out<'_, T>,
    taps_out: Out<'_, I>,
) -> Result<(), LanceError> {
    let [n, c, h, w] = x.shape;
    geometry.check([h, w])?;
    let indices = tap_indices::<I>(geometry.kernel)?;
    let [oh, ow] = geometry.out_hw;
    let plane_len = oh * ow;
    best.check_len(n * c * plane_len)?;
    taps_out.check_len(n * c * plane_len)?;
    let window = Window::new(geometry, [h, w]);
    let floor = T::from_f64(f64::NEG_INFINITY); // the maximum of no tap
    let threads = threads_for(best.len() * indices.len(), ctx.threads);
    let [c0, c1] = window.inside_columns(ow);
    for_ranges(n * c, threads, 1, |start, end| {
        let (mut values, mut winners) = (vec![T::ZERO; ow], vec![indices[0]; ow]);
        for plane in start..end {
            let (s, ch) = (plane / c, plane % c);
            for yr in 0..oh {
                // The windows that lie inside the input are swept tap by tap along the row, a
                // strided loop the compiler vectorises; the others, at the padded edges, one by one.
                let [c0, c1] = if window.rows_inside(yr) {
                    [c0, c1]
                } else {
                    [0, 0]
                };
                for yc in (0..c0).chain(c1..ow) {
                    let (mut top, mut top_tap) = (&floor, indices[0]);
                    for (t, [r, q]) in window.taps(yr, yc) {
                        let v = &x.data[at(x, s, ch, r, q) as usize];
                        let wins = beats(v, top);
                        // a conditional move of the reference, not a branch on the floats:
                        // on random data a branch is mispredicted about every other tap
                        top = select_unpredictable(wins, v, top);
                        top_tap = select_unpredictable(wins, indices[t], top_tap);
                    }
                    (values[yc], winners[yc]) = (*top, top_tap);
                }
                let (tops, top_taps) = (&mut values[c0..c1], &mut winners[c0..c1]);
                tops.fill(floor);
                top_taps.fill(indices[0]);
                for (t, &index) in indices.iter().enumerate().filter(|_| c0 < c1) {
                    let [r, q] = window.padded(yr, c0, t);
                    let [ph, pw] = window.padding;
                    let first = at(x, s, ch, r - ph, q - pw);
                    match window.stride[1] as isize * x.strides[3] {
                        // constant steps, so that the compiler vectorises their loads
                        1 => sweep(x.data, first, 1, tops, top_taps, index),
                        2 => sweep(x.data, first, 2, tops, top_taps, index),
                        step => sweep(x.data, first, step, tops, top_taps, index),
                    }
                }
                let y = plane * plane_len + yr * ow;
                // SAFETY: this thread's own plane, inside both outputs.
                unsafe {
                    best.copy_from(y, &values);
                    taps_out.copy_from(y, &winners);
                }
            }
        }
    });
    Ok(())
}

/// Whether tap value `v` takes the window from the best so far, `top`: it is greater, or NaN
/// (as in torch). Without a branch, so that the callers' selects stay conditional moves.
#[inline(always)]
fn beats<T: Float>(v: &T, top: &T) -> bool {
    #[allow(clippy::eq_op)] // v != v: NaN
    let nan = v != v;
    (v > top) | nan
}

/// One tap of a row of windows: `tops[k]`, `top_taps[k]` become `data[first + k step]`, `index`
/// where that element wins (it is greater, or NaN).
#[inline(always)]
fn sweep<T: Float, I: TapIndex>(
    data: &[T],
    first: isize,
    step: isize,
    tops: &mut [T],
    top_taps: &mut [I],
    index: I,
) {
    let update = |(top, top_tap): (&mut T, &mut I), v: T| {
        let wins = beats(&v, top);
        *top = T::select(wins, v, *top);
        *top_tap = I::select(wins, index, *top_tap);
    };
    let outputs = tops.iter_mut().zip(top_taps);
    if step > 0 {
        // an iterator over the row, so that no bounds check stops the compiler vectorising
        let row = data[first as usize..].iter().step_by(step as usize);
        outputs.zip(row).for_each(|(out, &v)| update(out, v));
    } else {
        let row = (0..).map(|k: isize| data[(first + k * step) as usize]);
        outputs.zip(row).for_each(|(out, v)| update(out, v));
    }
}

/// `dx[n, c, s h' + d i - p, s w' + d j - p] += dY[n, c, h', w']` for the winning tap `(i, j)` of
/// each window (`taps`, as [`max_pool2d`] gives them) into `out`, row-major `x_shape`: the VJP of
/// [`max_pool2d`]. Each input element sums its windows' gradients in tap order, as the NumPy
/// reference does, so the two agree exactly.
pub fn max_pool2d_backward<T: Float, I: TapIndex>(
    ctx: &Context,
    grad: &View4<'_, T>,
    taps: &View4<'_, I>,
    x_shape: [usize; 4],
    geometry: &PoolGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [n, c, h, w] = x_shape;
    geometry.check([h, w])?;
    let [oh, ow] = geometry.out_hw;
    for (name, shape) in [("grad", grad.shape), ("taps", taps.shape)] {
        if shape != [n, c, oh, ow] {
            return Err(LanceError::Invalid(format!(
                "{name} must have shape {:?}, got {shape:?}",
                [n, c, oh, ow]
            )));
        }
    }
    out.check_len(n * c * h * w)?;
    let [kh, kw] = geometry.kernel;
    let window = Window::new(geometry, [h, w]);
    let corrupt = AtomicBool::new(false);
    for_ranges(
        n * c,
        threads_for(grad.numel(), ctx.threads),
        1,
        |start, end| {
            let mut dx = vec![T::ZERO; h * w];
            for plane in start..end {
                let (s, ch) = (plane / c, plane % c);
                dx.fill(T::ZERO);
                // Backwards through the outputs: an input element's windows then come in increasing
                // order of the tap that reads it, the order in which the reference adds them.
                for yr in (0..oh).rev() {
                    let (g_row, t_row) = (at(grad, s, ch, yr, 0), at(taps, s, ch, yr, 0));
                    for yc in (0..ow).rev() {
                        let t = taps.data[(t_row + yc as isize * taps.strides[3]) as usize].tap();
                        if t >= kh * kw {
                            corrupt.store(true, Ordering::Relaxed);
                            return;
                        }
                        let [r, q] = window.padded(yr, yc, t);
                        let [ph, pw] = window.padding;
                        if (ph..ph + h).contains(&r) && (pw..pw + w).contains(&q) {
                            let at = (r - ph) * w + q - pw;
                            let g = grad.data[(g_row + yc as isize * grad.strides[3]) as usize];
                            dx[at] = dx[at] + g;
                        }
                    }
                }
                // SAFETY: this thread's own plane, inside `out`.
                unsafe { out.copy_from(plane * h * w, &dx) };
            }
        },
    );
    if corrupt.into_inner() {
        return Err(LanceError::Invalid(format!(
            "taps must index the {} taps of a {kh}x{kw} kernel; found a larger value",
            kh * kw
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    /// The definition, element by element: each window's first maximum (or last NaN) over its
    /// taps inside x, -inf and tap 0 when it has none.
    fn windows(x: &[f64], xs: [usize; 4], g: &PoolGeometry) -> (Vec<f64>, Vec<usize>) {
        let ([n, c, h, w], [oh, ow], [kh, kw]) = (xs, g.out_hw, g.kernel);
        let (mut best, mut winner) = (vec![], vec![]);
        for plane in 0..n * c {
            for (yr, yc) in (0..oh).flat_map(|r| (0..ow).map(move |q| (r, q))) {
                let (mut b, mut t) = (f64::NEG_INFINITY, 0);
                for tap in 0..kh * kw {
                    let r = (yr * g.stride[0] + tap / kw * g.dilation[0]) as isize
                        - g.padding[0] as isize;
                    let q = (yc * g.stride[1] + tap % kw * g.dilation[1]) as isize
                        - g.padding[1] as isize;
                    if (0..h as isize).contains(&r) && (0..w as isize).contains(&q) {
                        let v = x[(plane * h + r as usize) * w + q as usize];
                        if v > b || v.is_nan() {
                            (b, t) = (v, tap);
                        }
                    }
                }
                best.push(b);
                winner.push(t);
            }
        }
        (best, winner)
    }

    /// A geometry from [kernel, stride, padding, dilation, out_hw].
    fn geometry([kernel, stride, padding, dilation, out_hw]: [[usize; 2]; 5]) -> PoolGeometry {
        PoolGeometry {
            kernel,
            stride,
            padding,
            dilation,
            out_hw,
        }
    }

    const GEOMETRIES: [[[usize; 2]; 5]; 5] = [
        [[2, 2], [2, 2], [0, 0], [1, 1], [3, 4]],
        [[3, 3], [2, 2], [1, 1], [1, 1], [4, 5]], // ceil mode: the last column of windows overhangs
        [[3, 2], [1, 1], [1, 0], [1, 1], [7, 8]], // overlapping windows
        [[2, 3], [1, 2], [0, 1], [2, 1], [5, 5]],
        [[3, 3], [3, 3], [1, 1], [2, 2], [3, 4]],
    ];

    #[test]
    fn forward_and_backward_match_the_definition_on_strided_input_and_every_thread_count() {
        let xs = [2, 3, 7, 9];
        let numel = xs.iter().product::<usize>();
        // repeated values (ties go to the first tap), a NaN, and -inf
        let mut data: Vec<f64> = (0..2 * numel).map(|v| ((v * 7) % 5) as f64).collect();
        data[2 * 17] = f64::NAN;
        data[2 * 40] = f64::NEG_INFINITY;
        // every other element: a view with strides (2 C H W, 2 H W, 2 W, 2)
        let strides = [2 * 3 * 63, 2 * 63, 2 * 9, 2];
        let x = View4::new(&data, 0, xs, strides).unwrap();
        let dense: Vec<f64> = data.iter().step_by(2).copied().collect();
        for shape in GEOMETRIES {
            let [kernel, stride, padding, dilation, out_hw] = shape;
            let g = geometry(shape);
            let (best, winner) = windows(&dense, xs, &g);
            let outputs = 2 * 3 * out_hw[0] * out_hw[1];
            let grad_data: Vec<f64> = (0..outputs).map(|v| 0.25 + v as f64).collect();
            let grad = View4::c_contiguous(&grad_data, [2, 3, out_hw[0], out_hw[1]]).unwrap();
            let mut expected_dx = vec![0.0; numel];
            // the reference's order: tap by tap
            for tap in 0..kernel[0] * kernel[1] {
                for (o, &t) in winner.iter().enumerate() {
                    let (plane, yr, yc) = (
                        o / (out_hw[0] * out_hw[1]),
                        o / out_hw[1] % out_hw[0],
                        o % out_hw[1],
                    );
                    let r = (yr * stride[0] + t / kernel[1] * dilation[0]) as isize
                        - padding[0] as isize;
                    let q = (yc * stride[1] + t % kernel[1] * dilation[1]) as isize
                        - padding[1] as isize;
                    if t == tap && (0..7).contains(&r) && (0..9).contains(&q) {
                        expected_dx[(plane * 7 + r as usize) * 9 + q as usize] += grad_data[o];
                    }
                }
            }
            for threads in [1, 3] {
                let ctx = Context::new(Isa::Scalar, threads).unwrap();
                let (mut got, mut taps) = (vec![0.0; outputs], vec![0u8; outputs]);
                max_pool2d(&ctx, &x, &g, Out::new(&mut got), Out::new(&mut taps)).unwrap();
                let same = |a: f64, b: f64| a == b || (a.is_nan() && b.is_nan());
                assert!(got.iter().zip(&best).all(|(&a, &b)| same(a, b)), "{g:?}");
                assert!(
                    taps.iter().zip(&winner).all(|(&a, &b)| a as usize == b),
                    "{g:?}"
                );
                let tap_view = View4::c_contiguous(&taps, [2, 3, out_hw[0], out_hw[1]]).unwrap();
                let mut dx = vec![f64::NAN; numel];
                max_pool2d_backward(&ctx, &grad, &tap_view, xs, &g, Out::new(&mut dx)).unwrap();
                assert_eq!(dx, expected_dx, "{g:?}");
            }
        }
    }

    #[test]
    fn bad_geometry_sizes_and_taps_are_errors() {
        let ctx = Context::new(Isa::Scalar, 1).unwrap();
        let data = vec![0.0f32; 16];
        let x = View4::c_contiguous(&data, [1, 1, 4, 4]).unwrap();
        let (mut best, mut taps) = (vec![0.0f32; 4], vec![0u8; 4]);
        let mut run =
            |g: PoolGeometry| max_pool2d(&ctx, &x, &g, Out::new(&mut best), Out::new(&mut taps));
        assert!(run(geometry([[0, 2], [2, 2], [0, 0], [1, 1], [2, 2]])).is_err());
        assert!(run(geometry([[2, 2], [2, 2], [0, 0], [1, 1], [3, 2]])).is_err()); // past the end
        assert!(run(geometry([[2, 2], [2, 2], [0, 0], [1, 1], [1, 2]])).is_err()); // buffer length
        let mut wide = vec![0u8; 1];
        let g = geometry([[17, 16], [1, 1], [0, 0], [1, 1], [1, 1]]);
        let big = vec![0.0f32; 17 * 16];
        let x = View4::c_contiguous(&big, [1, 1, 17, 16]).unwrap();
        assert!(max_pool2d(&ctx, &x, &g, Out::new(&mut best[..1]), Out::new(&mut wide)).is_err()); // 272 taps in u8
        let grad = View4::c_contiguous(&data[..4], [1, 1, 2, 2]).unwrap();
        let corrupt = [0u8, 1, 9, 0];
        let taps = View4::c_contiguous(&corrupt, [1, 1, 2, 2]).unwrap();
        let g = geometry([[2, 2], [2, 2], [0, 0], [1, 1], [2, 2]]);
        let mut dx = vec![0.0f32; 16];
        assert!(
            max_pool2d_backward(&ctx, &grad, &taps, [1, 1, 4, 4], &g, Out::new(&mut dx)).is_err()
        );
    }
}
