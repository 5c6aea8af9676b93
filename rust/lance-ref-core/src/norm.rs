//! Batch normalisation over axis 1 of an (N, C, H, W) input, channel by channel
//! (specs/norm.md#batch_norm): the statistics in two passes, the normalisation in one, and the
//! VJP in two, where NumPy makes a pass (and an array) per operation. The sums run on the SIMD
//! dot kernel; the elementwise passes are plain loops over the runs, which the compiler
//! vectorises ([`vectorised!`]: 8 wide on x86-64 CPUs with AVX2). The normalisation makes
//! NumPy's operations in NumPy's order (x - mean, times inv_std, times gamma, plus beta), so it
//! equals the reference exactly.
//!
//! Channel `c` reads the `N` planes `[n, c]`, each one run of `H W` elements when the plane is
//! contiguous, else `H` rows of `W`. Per-channel sums are accumulated in f64 across the runs,
//! in sample order. Every pass visits the planes in memory order, samples outermost
//! ([`in_memory_order`]). Threads take whole channels, so they never write the same element.

use std::ops::Range;

use crate::context::vectorised;
use crate::out::Out;
use crate::parallel::{self, for_ranges};
use crate::{Context, Float, LanceError, RowKernels, View4};

/// Whether every plane of `v` is one run of H W elements.
fn joined<T>(v: &View4<'_, T>) -> bool {
    let [_, _, h, w] = v.shape;
    v.strides[3] == 1 && (h == 1 || v.strides[2] == w as isize)
}

/// The runs (offset into the data, length, step) that make up plane `[n, c]` of `v`: the whole
/// plane if `whole` (the caller checked [`joined`]), else its H rows.
fn runs<T>(
    v: &View4<'_, T>,
    n: usize,
    c: usize,
    whole: bool,
) -> impl Iterator<Item = (isize, usize, isize)> {
    let [_, _, h, w] = v.shape;
    let base = v.offset as isize + n as isize * v.strides[0] + c as isize * v.strides[1];
    let (count, len) = if whole { (1, h * w) } else { (h, w) };
    let (row, step) = (v.strides[2], v.strides[3]);
    (0..count).map(move |r| (base + r as isize * row, len, step))
}

/// `(sample, channel, k)` for the channels `channels` (the k-th of them) of every sample, samples
/// outermost: the planes are then visited in memory order, which matters when they are small (a
/// channel's planes lie C H W apart, so visiting them channel by channel misses the cache at
/// every plane: 16 ns an element on 4x4 planes, against about 2 on 32x32 ones).
fn in_memory_order(
    n: usize,
    channels: Range<usize>,
) -> impl Iterator<Item = (usize, usize, usize)> {
    (0..n).flat_map(move |s| channels.clone().enumerate().map(move |(k, ch)| (s, ch, k)))
}

/// Evaluates `$body` with `$values` iterating over a run (`$len` elements of `$data` from
/// `$from`, `$step` apart): a slice's iterator for unit steps, which the compiler vectorises,
/// else strided reads.
macro_rules! with_values {
    ($data:expr, $from:expr, $len:expr, $step:expr, |$values:ident| $body:expr) => {
        if $step == 1 {
            let $values = $data[$from as usize..][..$len].iter().copied();
            $body
        } else {
            let $values = (0..$len as isize).map(|k| $data[($from + k * $step) as usize]);
            $body
        }
    };
}

/// The row kernels and a run of ones, to sum a run as a dot product with it.
struct Channel<'a, T> {
    rows: RowKernels<T>,
    ones: &'a [T],
}

impl<T: Float> Channel<'_, T> {
    /// `sum_k run[k]`, the run given by its first element and step.
    unsafe fn sum(&self, len: usize, from: *const T, step: isize) -> f64 {
        unsafe { (self.rows.dot)(len, from, step, self.ones.as_ptr(), 1).to_f64() }
    }
}

fn check_channels(what: &str, got: usize, channels: usize) -> Result<(), LanceError> {
    if got != channels {
        return Err(LanceError::Invalid(format!(
            "{what} must have {channels} values (one per channel), got {got}"
        )));
    }
    Ok(())
}

fn threads(ctx: &Context, shape: [usize; 4]) -> usize {
    parallel::threads_for(shape.iter().product::<usize>() * 2, ctx.threads)
}

/// `out` = [mean (C), biased variance (C)] of each channel of `x` over its N H W values: the
/// mean from the sum, the variance from the centred values `x - mean` (two passes).
pub fn batch_norm_stats<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [n, c, h, w] = x.shape;
    out.check_len(2 * c)?;
    if n * h * w < 2 {
        return Err(LanceError::Invalid(format!(
            "batch statistics need more than 1 value per channel, got shape {:?}",
            x.shape
        )));
    }
    let (count, whole) = ((n * h * w) as f64, joined(x));
    for_ranges(c, threads(ctx, x.shape), 1, |start, end| {
        vectorised!(ctx, {
            let ones = vec![T::ONE; h * w];
            let channel = Channel {
                rows: T::row_kernels(ctx.isa),
                ones: &ones,
            };
            let mut centred = vec![T::ZERO; h * w];
            let mut totals = vec![0.0; end - start];
            for (s, ch, k) in in_memory_order(n, start..end) {
                for (from, len, step) in runs(x, s, ch, whole) {
                    // SAFETY: the view's runs lie inside its data; `ones` holds H W >= len.
                    totals[k] += unsafe { channel.sum(len, x.data.as_ptr().offset(from), step) };
                }
            }
            let means: Vec<T> = totals
                .iter()
                .map(|&total| T::from_f64(total / count))
                .collect();
            let mut squares = vec![0.0; end - start];
            for (s, ch, k) in in_memory_order(n, start..end) {
                let minus_mean = T::from_f64(-means[k].to_f64());
                for (from, len, step) in runs(x, s, ch, whole) {
                    let run = &mut centred[..len];
                    with_values!(x.data, from, len, step, |values| {
                        for (d, v) in run.iter_mut().zip(values) {
                            *d = v + minus_mean;
                        }
                    });
                    // SAFETY: `run` is this thread's own buffer of `len` elements.
                    squares[k] +=
                        unsafe { (channel.rows.dot)(len, run.as_ptr(), 1, run.as_ptr(), 1) }
                            .to_f64();
                }
            }
            for (k, ch) in (start..end).enumerate() {
                // SAFETY: this thread's own channels, inside `out`.
                unsafe {
                    out.write(ch, means[k]);
                    out.write(c + ch, T::from_f64(squares[k] / count));
                }
            }
        })
    });
    Ok(())
}

/// The per-channel affine parameters of [`batch_norm_forward`], each of C values.
pub struct Normalisation<'a, T> {
    pub mean: &'a [T],
    pub inv_std: &'a [T],
    pub weight: Option<&'a [T]>,
    pub bias: Option<&'a [T]>,
}

/// `x_hat = (x - mean) inv_std` (into `x_hat` when given) and `y = weight x_hat + bias` (into
/// `y`), both C-contiguous of `x`'s shape; a missing weight is 1, a missing bias 0.
pub fn batch_norm_forward<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    affine: &Normalisation<'_, T>,
    x_hat: Option<Out<'_, T>>,
    y: Out<'_, T>,
) -> Result<(), LanceError> {
    let [n, c, h, w] = x.shape;
    let plane = h * w;
    for (what, values) in [
        ("mean", Some(affine.mean)),
        ("inv_std", Some(affine.inv_std)),
        ("weight", affine.weight),
        ("bias", affine.bias),
    ] {
        if let Some(values) = values {
            check_channels(what, values.len(), c)?;
        }
    }
    y.check_len(n * c * plane)?;
    if let Some(x_hat) = &x_hat {
        x_hat.check_len(n * c * plane)?;
    }
    let whole = joined(x);
    for_ranges(c, threads(ctx, x.shape), 1, |start, end| {
        vectorised!(ctx, {
            for (s, ch, _) in in_memory_order(n, start..end) {
                let minus_mean = T::from_f64(-affine.mean[ch].to_f64());
                let inv_std = affine.inv_std[ch];
                let (gamma, beta) = (affine.weight.map(|v| v[ch]), affine.bias.map(|v| v[ch]));
                // NumPy's order and roundings: (x - mean) inv_std, times gamma, plus beta
                let normalise = |v: T| (v + minus_mean) * inv_std;
                let scale_shift = |h: T| match (gamma, beta) {
                    (Some(g), Some(b)) => h * g + b,
                    (Some(g), None) => h * g,
                    _ => h,
                };
                let mut at = (s * c + ch) * plane;
                for (from, len, step) in runs(x, s, ch, whole) {
                    // SAFETY: this thread's own channels' planes, inside the outputs.
                    let ys = unsafe { y.range(at, at + len) };
                    let hats = x_hat.map(|x_hat| unsafe { x_hat.range(at, at + len) });
                    with_values!(x.data, from, len, step, |values| match hats {
                        Some(hats) => {
                            for ((v, hat), y) in values.zip(hats).zip(ys) {
                                let h = normalise(v);
                                hat.write(h);
                                y.write(scale_shift(h));
                            }
                        }
                        None => {
                            for (v, y) in values.zip(ys) {
                                y.write(scale_shift(normalise(v)));
                            }
                        }
                    });
                    at += len;
                }
            }
        })
    });
    Ok(())
}

/// The VJP of batch normalisation for the output gradient `grad`: `sums` = [dgamma (C), dbeta
/// (C)] with dgamma = sum g x_hat (0 without `x_hat`) and dbeta = sum g, and `dx` (C-contiguous)
/// = scale g in eval, or scale (g - dbeta / m - x_hat dgamma / m) with batch statistics, where
/// `scale` = gamma inv_std per channel and m = N H W.
pub fn batch_norm_backward<T: Float>(
    ctx: &Context,
    grad: &View4<'_, T>,
    x_hat: Option<&View4<'_, T>>,
    scale: &[T],
    batch_stats: bool,
    dx: Out<'_, T>,
    sums: Out<'_, T>,
) -> Result<(), LanceError> {
    let [n, c, h, w] = grad.shape;
    let plane = h * w;
    check_channels("scale", scale.len(), c)?;
    if let Some(x_hat) = x_hat.filter(|v| v.shape != grad.shape) {
        return Err(LanceError::Invalid(format!(
            "x_hat must have the gradient's shape {:?}, got {:?}",
            grad.shape, x_hat.shape
        )));
    }
    if batch_stats && x_hat.is_none() {
        return Err(LanceError::Invalid("batch statistics need x_hat".into()));
    }
    dx.check_len(n * c * plane)?;
    sums.check_len(2 * c)?;
    let count = (n * plane) as f64;
    let whole = joined(grad) && x_hat.is_none_or(joined);
    for_ranges(c, threads(ctx, grad.shape), 1, |start, end| {
        vectorised!(ctx, {
            let ones = vec![T::ONE; plane];
            let channel = Channel {
                rows: T::row_kernels(ctx.isa),
                ones: &ones,
            };
            let (mut g_sums, mut gx_sums) = (vec![0.0; end - start], vec![0.0; end - start]);
            for (s, ch, k) in in_memory_order(n, start..end) {
                let mut hats = x_hat.map(|v| runs(v, s, ch, whole)); // x_hat's runs, in step with grad's
                for (from, len, step) in runs(grad, s, ch, whole) {
                    let hat = hats.as_mut().and_then(Iterator::next);
                    // SAFETY: both views' runs lie inside their data, of equal lengths.
                    unsafe {
                        let g = grad.data.as_ptr().offset(from);
                        g_sums[k] += channel.sum(len, g, step);
                        if let (Some(v), Some((at, _, hat_step))) = (x_hat, hat) {
                            let v = v.data.as_ptr().offset(at);
                            gx_sums[k] += (channel.rows.dot)(len, g, step, v, hat_step).to_f64();
                        }
                    }
                }
            }
            // dx = factor g + shift + slope x_hat per channel
            let coefficients: Vec<(T, T, T)> = (start..end)
                .map(|ch| {
                    let (factor, k) = (scale[ch], ch - start);
                    let gamma_scale = factor.to_f64();
                    let (shift, slope) = if batch_stats {
                        (
                            -gamma_scale * g_sums[k] / count,
                            -gamma_scale * gx_sums[k] / count,
                        )
                    } else {
                        (0.0, 0.0)
                    };
                    (factor, T::from_f64(shift), T::from_f64(slope))
                })
                .collect();
            for (s, ch, k) in in_memory_order(n, start..end) {
                let (factor, shift, slope) = coefficients[k];
                let (mut at, mut hats) =
                    ((s * c + ch) * plane, x_hat.map(|v| runs(v, s, ch, whole)));
                for (from, len, step) in runs(grad, s, ch, whole) {
                    let hat = hats.as_mut().and_then(Iterator::next);
                    // SAFETY: this thread's own channels' planes, inside `dx`.
                    let dxs = unsafe { dx.range(at, at + len) };
                    match (batch_stats, x_hat, hat) {
                        (true, Some(v), Some((hat_from, _, hat_step))) => {
                            with_values!(grad.data, from, len, step, |gs| {
                                with_values!(v.data, hat_from, len, hat_step, |hs| {
                                    for ((g, h), dx) in gs.zip(hs).zip(&mut *dxs) {
                                        dx.write(factor * g + shift + slope * h);
                                    }
                                })
                            })
                        }
                        _ => with_values!(grad.data, from, len, step, |gs| {
                            for (g, dx) in gs.zip(&mut *dxs) {
                                dx.write(factor * g);
                            }
                        }),
                    }
                    at += len;
                }
            }
            for (k, ch) in (start..end).enumerate() {
                // SAFETY: this thread's own channels, inside `sums`.
                unsafe {
                    sums.write(ch, T::from_f64(gx_sums[k]));
                    sums.write(c + ch, T::from_f64(g_sums[k]));
                }
            }
        })
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    const SHAPE: [usize; 4] = [3, 2, 4, 5];

    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|v| ((v * 7 + seed) % 13) as f64 * 0.25 - 1.0)
            .collect()
    }

    /// Index of [n, c, k] (k the pixel) in a row-major (N, C, H W) array.
    fn at(n: usize, c: usize, k: usize) -> usize {
        (n * SHAPE[1] + c) * SHAPE[2] * SHAPE[3] + k
    }

    /// Per channel, the values of x: the definition's order (n, then pixel).
    fn channel(x: &[f64], c: usize) -> Vec<f64> {
        let plane = SHAPE[2] * SHAPE[3];
        (0..SHAPE[0])
            .flat_map(|n| (0..plane).map(move |k| (n, k)))
            .map(|(n, k)| x[at(n, c, k)])
            .collect()
    }

    fn close(got: &[f64], want: &[f64]) {
        for (g, w) in got.iter().zip(want) {
            assert!(
                (g - w).abs() <= 1e-12 * (1.0 + w.abs()),
                "{got:?} != {want:?}"
            );
        }
    }

    /// Every ISA and thread count, on a C-contiguous input and on one stored channels-last.
    fn each_case(mut check: impl FnMut(&Context, &View4<'_, f64>, &[f64])) {
        let x = values(SHAPE.iter().product(), 1);
        let [n, c, h, w] = SHAPE;
        let mut channels_last = vec![0.0; x.len()];
        for (s, ch, k) in
            (0..n).flat_map(|s| (0..c).flat_map(move |ch| (0..h * w).map(move |k| (s, ch, k))))
        {
            channels_last[(s * h * w + k) * c + ch] = x[at(s, ch, k)];
        }
        let strided = View4::new(
            &channels_last,
            0,
            SHAPE,
            [(h * w * c) as isize, 1, (w * c) as isize, c as isize],
        )
        .unwrap();
        for isa in Isa::available() {
            for threads in [1, 2] {
                let ctx = Context::new(isa, threads).unwrap();
                check(&ctx, &View4::c_contiguous(&x, SHAPE).unwrap(), &x);
                check(&ctx, &strided, &x);
            }
        }
    }

    #[test]
    fn statistics_normalisation_and_gradients_match_the_definition() {
        let (c, m) = (SHAPE[1], (SHAPE[0] * SHAPE[2] * SHAPE[3]) as f64);
        let (gamma, beta) = (vec![1.5, -0.5], vec![0.25, 2.0]);
        let g = values(SHAPE.iter().product(), 5);
        each_case(|ctx, x, plain| {
            let mut stats = vec![f64::NAN; 2 * c];
            batch_norm_stats(ctx, x, Out::new(&mut stats)).unwrap();
            let mean: Vec<f64> = (0..c)
                .map(|ch| channel(plain, ch).iter().sum::<f64>() / m)
                .collect();
            let var: Vec<f64> = (0..c)
                .map(|ch| {
                    channel(plain, ch)
                        .iter()
                        .map(|v| (v - mean[ch]).powi(2))
                        .sum::<f64>()
                        / m
                })
                .collect();
            close(&stats, &[mean.clone(), var.clone()].concat());

            let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + 1e-5f64).sqrt()).collect();
            let affine = Normalisation {
                mean: &mean,
                inv_std: &inv_std,
                weight: Some(&gamma),
                bias: Some(&beta),
            };
            let (mut x_hat, mut y) = (vec![f64::NAN; plain.len()], vec![f64::NAN; plain.len()]);
            batch_norm_forward(
                ctx,
                x,
                &affine,
                Some(Out::new(&mut x_hat)),
                Out::new(&mut y),
            )
            .unwrap();
            let plane = SHAPE[2] * SHAPE[3];
            let ch_of = |i: usize| (i / plane) % c;
            let want_hat: Vec<f64> = plain
                .iter()
                .enumerate()
                .map(|(i, v)| (v - mean[ch_of(i)]) * inv_std[ch_of(i)])
                .collect();
            close(&x_hat, &want_hat);
            close(
                &y,
                &want_hat
                    .iter()
                    .enumerate()
                    .map(|(i, v)| gamma[ch_of(i)] * v + beta[ch_of(i)])
                    .collect::<Vec<_>>(),
            );

            let scale: Vec<f64> = (0..c).map(|ch| gamma[ch] * inv_std[ch]).collect();
            let hat_view = View4::c_contiguous(&x_hat, SHAPE).unwrap();
            let grad = View4::c_contiguous(&g, SHAPE).unwrap();
            let dbeta: Vec<f64> = (0..c).map(|ch| channel(&g, ch).iter().sum()).collect();
            let dgamma: Vec<f64> = (0..c)
                .map(|ch| {
                    channel(&g, ch)
                        .iter()
                        .zip(channel(&want_hat, ch))
                        .map(|(a, b)| a * b)
                        .sum()
                })
                .collect();
            for batch_stats in [true, false] {
                let (mut dx, mut sums) = (vec![f64::NAN; plain.len()], vec![f64::NAN; 2 * c]);
                batch_norm_backward(
                    ctx,
                    &grad,
                    Some(&hat_view),
                    &scale,
                    batch_stats,
                    Out::new(&mut dx),
                    Out::new(&mut sums),
                )
                .unwrap();
                close(&sums, &[dgamma.clone(), dbeta.clone()].concat());
                let want_dx: Vec<f64> = g
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        let ch = ch_of(i);
                        if batch_stats {
                            scale[ch] * (v - dbeta[ch] / m - want_hat[i] * dgamma[ch] / m)
                        } else {
                            scale[ch] * v
                        }
                    })
                    .collect();
                close(&dx, &want_dx);
            }
        });
    }

    #[test]
    fn bad_arguments_are_errors() {
        let ctx = Context::new(Isa::Scalar, 1).unwrap();
        let x = vec![0.0; 2];
        let single = View4::c_contiguous(&x, [1, 2, 1, 1]).unwrap();
        let mut stats = vec![0.0; 4];
        let err = batch_norm_stats(&ctx, &single, Out::new(&mut stats)).unwrap_err();
        assert!(err.to_string().contains("more than 1 value per channel"));
        let affine = Normalisation {
            mean: &[0.0],
            inv_std: &[1.0, 1.0],
            weight: None,
            bias: None,
        };
        let mut y = vec![0.0; 2];
        let err = batch_norm_forward(&ctx, &single, &affine, None, Out::new(&mut y)).unwrap_err();
        assert!(err.to_string().contains("mean must have 2 values"));
        let (mut dx, mut sums) = (vec![0.0; 2], vec![0.0; 4]);
        let err = batch_norm_backward(
            &ctx,
            &single,
            None,
            &[1.0, 1.0],
            true,
            Out::new(&mut dx),
            Out::new(&mut sums),
        )
        .unwrap_err();
        assert!(err.to_string().contains("batch statistics need x_hat"));
    }
}
