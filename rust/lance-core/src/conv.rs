//! Convolutions with one group as GEMMs whose im2col operand is never formed
//! (specs/conv.md#implicit-gemm).
//!
//! After one zero-padded copy of the input (none without padding), im2col's element
//! `((n, h', w'), (c, i, j))` is `x_pad[n, c, s h' + d i, s w' + d j]`, at offset
//! `row(n, h', w') + col(c, i, j)` with `row = n sN + s h' sH + s w' sW` and
//! `col = c sC + d i sH + d j sW`: an indexed operand of the GEMM (`gemm.rs`), whose packing
//! gathers each block of it into the caches only. The forward writes its result in NCHW directly.

use crate::gemm::{self, Operand, Output, Tiles, axis, grid};
use crate::out::Out;
use crate::taps::taps;
use crate::view::{at, copy_plane};
use crate::{Context, ConvGeometry, Float, LanceError, View4};

/// `x` zero-padded by `padding`, C-contiguous; None when there is no padding.
fn padded<T: Float>(x: &View4<'_, T>, padding: [usize; 2]) -> Option<(Vec<T>, [usize; 4])> {
    if padding == [0, 0] {
        return None;
    }
    let [n, c, h, w] = x.shape;
    let shape = [n, c, h + 2 * padding[0], w + 2 * padding[1]];
    let mut data = vec![T::ZERO; shape.iter().product()];
    let first = padding[0] * shape[3] + padding[1]; // of the plane's interior
    for (plane, target) in data.chunks_exact_mut(shape[2] * shape[3]).enumerate() {
        copy_plane(x, plane / c, plane % c, &mut target[first..], shape[3]);
    }
    Some((data, shape))
}

/// A GEMM operand with its own offset tables: element (i, j) is `data[base + rows[i] + cols[j]]`.
struct Indexed<'a, T: Clone> {
    data: std::borrow::Cow<'a, [T]>,
    base: isize,
    rows: Vec<isize>,
    cols: Vec<isize>,
}

impl<'a, T: Float> Indexed<'a, T> {
    /// `v` as a matrix: rows along axis 0, columns over axes 1, 2, 3 (row-major).
    fn matrix(v: &View4<'a, T>) -> Self {
        let [rows, a, b, c] = v.shape;
        Indexed {
            data: std::borrow::Cow::Borrowed(v.data),
            base: v.offset as isize,
            rows: axis(0, rows, v.strides[0]),
            cols: grid(0, &[a, b, c], &v.strides[1..]),
        }
    }

    /// The implicit im2col of `x` (padded as `geometry` says) for outputs `out_hw`: rows
    /// `(n, h', w')`, columns `(c, i, j)`.
    fn unfolding(x: &View4<'a, T>, geometry: &ConvGeometry, out_hw: [usize; 2]) -> Self {
        let ([n, c, _, _], [kh, kw], [sh, sw], [dh, dw]) =
            (x.shape, geometry.kernel, geometry.stride, geometry.dilation);
        let (data, base, strides) = match padded(x, geometry.padding) {
            Some((data, [_, _, hp, wp])) => {
                let strides = [(c * hp * wp) as isize, (hp * wp) as isize, wp as isize, 1];
                (std::borrow::Cow::Owned(data), 0, strides)
            }
            None => (
                std::borrow::Cow::Borrowed(x.data),
                x.offset as isize,
                x.strides,
            ),
        };
        let [s_n, s_c, s_h, s_w] = strides;
        Indexed {
            data,
            base,
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
            data: &self.data,
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
/// `out`, row-major (N, O, H', W').
pub fn conv2d<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    weight: &View4<'_, T>,
    geometry: &ConvGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [oh, ow] = output_hw(x.shape, weight.shape, geometry)?;
    let (n, o) = (x.shape[0], weight.shape[0]);
    out.check_len(n * o * oh * ow)?;
    let a = Indexed::matrix(weight);
    let unfolding = Indexed::unfolding(x, geometry, [oh, ow]);
    let plane = (oh * ow) as isize;
    let (y_rows, y_cols) = (
        axis(0, o, plane),
        grid(0, &[n, oh, ow], &[o as isize * plane, ow as isize, 1]),
    );
    let mut y = Output {
        data: out,
        base: 0,
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
}

/// `dW[o, c, i, j] = sum_{n, h', w'} dY[n, o, h', w'] x_pad[n, c, s h' + d i, s w' + d j]` into
/// `out`, row-major (O, C, kh, kw) = `w_shape`: the VJP of [`conv2d`] for W.
pub fn conv2d_weight_grad<T: Float>(
    ctx: &Context,
    grad: &View4<'_, T>,
    x: &View4<'_, T>,
    w_shape: [usize; 4],
    geometry: &ConvGeometry,
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
    let a = Indexed::matrix(&grad.swapped(0, 1)); // rows o, columns (n, h', w')
    let unfolding = Indexed::unfolding(x, geometry, [oh, ow]);
    let k = (c * kh * kw) as isize;
    let (dw_rows, dw_cols) = (axis(0, o, k), axis(0, k as usize, 1));
    let mut dw = Output {
        data: out,
        base: 0,
        rows: &dw_rows,
        cols: &dw_cols,
        accumulate: false,
    };
    gemm::gemm(ctx, &a.operand(), &unfolding.operand(), &mut dw, Tiles::All)
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
    for k in 0..out.len() {
        // SAFETY: inside `out`; the taps below add to these zeros.
        unsafe { out.write(k, T::ZERO) };
    }
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
            for (isa, threads) in [(Isa::Scalar, 1), (Isa::selected().unwrap(), 3)] {
                let ctx = Context::new(isa, threads).unwrap();
                let mut y = vec![f64::NAN; want_y.len()];
                conv2d(&ctx, &x, &w, &geo, Out::new(&mut y)).unwrap();
                assert_eq!(y, want_y, "{geo:?} {isa:?}");
                let mut dw = vec![f64::NAN; want_dw.len()];
                conv2d_weight_grad(&ctx, &g, &x, ws, &geo, Out::new(&mut dw)).unwrap();
                assert_eq!(dw, want_dw, "{geo:?} {isa:?}");
                let mut dx = vec![f64::NAN; want_dx.len()];
                conv2d_input_grad(&ctx, &g, &w, xs, &geo, Out::new(&mut dx)).unwrap();
                assert_eq!(dx, want_dx, "{geo:?} {isa:?}");
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
        assert!(conv2d(&ctx, &x, &w, &geo(2), Out::new(&mut y)).is_err());
        assert!(conv2d(&ctx, &x, &w, &geo(1), Out::new(&mut y[1..])).is_err());
        let narrow = View4::c_contiguous(&w_data[..3 * 3 * 9], [3, 3, 3, 3]).unwrap();
        assert!(conv2d(&ctx, &x, &narrow, &geo(1), Out::new(&mut y)).is_err());
        conv2d(&ctx, &x, &w, &geo(1), Out::new(&mut y)).unwrap();
        let g = View4::c_contiguous(&y[..2 * 3 * 8], [2, 3, 2, 4]).unwrap();
        let mut dw = vec![0.0f32; 3 * 4 * 9];
        assert!(
            conv2d_weight_grad(&ctx, &g, &x, [3, 4, 3, 3], &geo(1), Out::new(&mut dw)).is_err()
        );
    }
}
