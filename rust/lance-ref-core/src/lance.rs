//! One LANCE training step of a conv layer, in pure Rust (specs/compressed.md#lance-step): the
//! layer's input kept only as its Tucker core on fixed bases, the weight gradient formed from
//! that core without reconstructing the input (Z1..Z4), and an SGD update. With it a board
//! fine-tunes a layer without Python; `examples/lance_step.rs` runs it on `.npy` files.

use crate::context::Context;
use crate::conv::{conv2d, conv2d_weight_grad, padded_workspace_len};
use crate::error::LanceError;
use crate::im2col::ConvGeometry;
use crate::out::Out;
use crate::simd::Float;
use crate::tucker::{mode_product, projected_shape, tucker_project};
use crate::view::{View2, View4, numel};

/// dW (O, C, kh, kw) of conv2d (groups 1) at `X_hat = S x_0 U_B x_1 U_C x_2 U_H x_3 U_W`, for the
/// output gradient `grad`, without forming X_hat (specs/compressed.md#conv2d-weight-gradient):
/// `Z1 = dY x_0 U_B^T` (k_B, O, H', W'), `Z3 = S x_2 U_H x_3 U_W` (k_B, k_C, H, W), `Z4` the conv
/// weight gradient of Z1 against Z3 (O, k_C, kh, kw), and `dW = Z4 x_1 U_C`. `bases` are U_B
/// (N, k_B), U_C (C, k_C), U_H (H, k_H), U_W (W, k_W); `core` is S (k_B, k_C, k_H, k_W).
pub fn lance_conv2d_weight_grad<T: Float>(
    ctx: &Context,
    core: &View4<'_, T>,
    bases: &[View2<'_, T>; 4],
    grad: &View4<'_, T>,
    w_shape: [usize; 4],
    geometry: &ConvGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [u_b, u_c, u_h, u_w] = bases;
    for (n, u) in bases.iter().enumerate() {
        if u.shape[1] != core.shape[n] {
            return Err(LanceError::Invalid(format!(
                "bases[{n}] has shape {:?} but core.shape[{n}] is {}",
                u.shape, core.shape[n]
            )));
        }
    }
    if grad.shape[0] != u_b.shape[0] || w_shape[1] != u_c.shape[0] {
        return Err(LanceError::Invalid(format!(
            "grad (N = {}) and weight (C = {}) must fit bases[0] {:?} and bases[1] {:?}",
            grad.shape[0], w_shape[1], u_b.shape, u_c.shape
        )));
    }
    let k_b = core.shape[0];
    let z1 = product(ctx, grad, &u_b.swapped(0, 1), 0)?;
    let z1 = View4::c_contiguous(&z1, [k_b, grad.shape[1], grad.shape[2], grad.shape[3]])?;
    let z2 = product(ctx, core, u_h, 2)?;
    let z2 = View4::c_contiguous(&z2, [k_b, core.shape[1], u_h.shape[0], core.shape[3]])?;
    let z3 = product(ctx, &z2, u_w, 3)?;
    let z3 = View4::c_contiguous(&z3, [k_b, core.shape[1], u_h.shape[0], u_w.shape[0]])?;
    let z4_shape = [w_shape[0], core.shape[1], w_shape[2], w_shape[3]];
    let mut z4 = vec![T::ZERO; numel(z4_shape)?];
    let mut workspace = vec![T::ZERO; padded_workspace_len(z3.shape, geometry.padding, k_b)];
    conv2d_weight_grad(
        ctx,
        &z1,
        &z3,
        z4_shape,
        geometry,
        &mut workspace,
        Out::new(&mut z4),
    )?;
    mode_product(ctx, &View4::c_contiguous(&z4, z4_shape)?, u_c, 1, out)
}

/// `x x_mode M` as a new row-major buffer.
fn product<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    matrix: &View2<'_, T>,
    mode: usize,
) -> Result<Vec<T>, LanceError> {
    let mut shape = x.shape;
    shape[mode] = matrix.shape[0];
    let mut out = vec![T::ZERO; numel(shape)?];
    mode_product(ctx, x, matrix, mode, Out::new(&mut out))?;
    Ok(out)
}

/// One LANCE step of a conv layer (groups 1, no bias) on the batch `x` (N, C, H, W): returns the
/// layer's output `y = conv2d(x, W)` (N, O, H', W'), and updates `weight` (O, C, kh, kw,
/// row-major) by SGD, `W <- W - lr dW`, with dW formed from the core `S = x x_n U_n^T` on the
/// fixed `bases` and the output gradient `grad` (as [`lance_conv2d_weight_grad`]).
#[allow(clippy::too_many_arguments)]
pub fn lance_conv2d_step<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    weight: &mut [T],
    w_shape: [usize; 4],
    bases: &[View2<'_, T>; 4],
    grad: &View4<'_, T>,
    geometry: &ConvGeometry,
    lr: f64,
) -> Result<Vec<T>, LanceError> {
    let factors = bases.map(Some);
    let core_shape = projected_shape(x.shape, &factors)?;
    let mut core = vec![T::ZERO; numel(core_shape)?];
    tucker_project(ctx, x, &factors, Out::new(&mut core))?;
    let [oh, ow] = geometry.output_hw(x.shape[1], [x.shape[2], x.shape[3]])?;
    let mut y = vec![T::ZERO; numel([x.shape[0], w_shape[0], oh, ow])?];
    let mut workspace = vec![T::ZERO; padded_workspace_len(x.shape, geometry.padding, x.shape[0])];
    conv2d(
        ctx,
        x,
        &View4::c_contiguous(weight, w_shape)?,
        geometry,
        &mut workspace,
        Out::new(&mut y),
    )?;
    let mut dw = vec![T::ZERO; weight.len()];
    let core = View4::c_contiguous(&core, core_shape)?;
    lance_conv2d_weight_grad(
        ctx,
        &core,
        bases,
        grad,
        w_shape,
        geometry,
        Out::new(&mut dw),
    )?;
    let step = T::from_f64(-lr);
    for (w, g) in weight.iter_mut().zip(dw) {
        *w = *w + step * g; // W - lr dW, rounded as NumPy rounds it
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;
    use crate::exact_values;
    use crate::tucker::tucker_reconstruct;

    fn values<T: Float>(len: usize, seed: usize) -> Vec<T> {
        exact_values(len, seed)
            .into_iter()
            .map(T::from_f64)
            .collect()
    }

    /// On small integers every product is exact, so the Z route equals the dense weight gradient
    /// of the reconstructed input exactly, on every instruction set and with padding or stride.
    fn compressed_equals_dense<T: Float>() {
        let (n, c, h, w, o) = (5, 3, 6, 7, 4);
        let ranks = [2, 2, 3, 4];
        let sizes = [n, c, h, w];
        let bases: Vec<Vec<T>> = (0..4).map(|m| values(sizes[m] * ranks[m], m)).collect();
        let views: [View2<'_, T>; 4] =
            std::array::from_fn(|m| View2::c_contiguous(&bases[m], [sizes[m], ranks[m]]).unwrap());
        let core: Vec<T> = values(ranks.iter().product(), 9);
        let core = View4::c_contiguous(&core, ranks).unwrap();
        let mut x = vec![T::ZERO; n * c * h * w];
        let factors = views.map(Some);
        for isa in Isa::available() {
            let ctx = Context::new(isa, 2).unwrap();
            tucker_reconstruct(&ctx, &core, &factors, Out::new(&mut x)).unwrap();
            let x_hat = View4::c_contiguous(&x, sizes).unwrap();
            for (stride, padding) in [([1, 1], [1, 1]), ([2, 1], [0, 2])] {
                let geometry = ConvGeometry {
                    kernel: [3, 2],
                    stride,
                    padding,
                    dilation: [1, 1],
                    groups: 1,
                };
                let [oh, ow] = geometry.output_hw(c, [h, w]).unwrap();
                let grad: Vec<T> = values(n * o * oh * ow, 3);
                let grad = View4::c_contiguous(&grad, [n, o, oh, ow]).unwrap();
                let w_shape = [o, c, 3, 2];
                let mut dense = vec![T::ZERO; o * c * 6];
                let mut workspace = vec![T::ZERO; padded_workspace_len(sizes, padding, n)];
                conv2d_weight_grad(
                    &ctx,
                    &grad,
                    &x_hat,
                    w_shape,
                    &geometry,
                    &mut workspace,
                    Out::new(&mut dense),
                )
                .unwrap();
                let mut compressed = vec![T::ZERO; o * c * 6];
                lance_conv2d_weight_grad(
                    &ctx,
                    &core,
                    &views,
                    &grad,
                    w_shape,
                    &geometry,
                    Out::new(&mut compressed),
                )
                .unwrap();
                assert_eq!(
                    compressed, dense,
                    "{isa:?} stride {stride:?} padding {padding:?}"
                );
            }
        }
    }

    #[test]
    fn compressed_weight_grad_equals_the_dense_one_at_the_reconstruction() {
        compressed_equals_dense::<f32>();
        compressed_equals_dense::<f64>();
    }

    #[test]
    fn a_step_moves_the_weight_by_lr_times_the_gradient_and_bad_shapes_are_errors() {
        let ctx = Context::new(Isa::Scalar, 1).unwrap();
        let (n, c, h, w, o) = (2, 2, 4, 4, 3);
        let x: Vec<f64> = values(n * c * h * w, 1);
        let x = View4::c_contiguous(&x, [n, c, h, w]).unwrap();
        let identity = |size: usize| -> Vec<f64> {
            (0..size * size)
                .map(|i| if i % (size + 1) == 0 { 1.0 } else { 0.0 })
                .collect()
        };
        let eyes: Vec<Vec<f64>> = [n, c, h, w].iter().map(|&s| identity(s)).collect();
        let sizes = [n, c, h, w];
        let bases: [View2<'_, f64>; 4] =
            std::array::from_fn(|m| View2::c_contiguous(&eyes[m], [sizes[m], sizes[m]]).unwrap());
        let geometry = ConvGeometry {
            kernel: [3, 3],
            stride: [1, 1],
            padding: [1, 1],
            dilation: [1, 1],
            groups: 1,
        };
        let grad: Vec<f64> = values(n * o * h * w, 2);
        let grad = View4::c_contiguous(&grad, [n, o, h, w]).unwrap();
        let mut weight: Vec<f64> = values(o * c * 9, 4);
        let before = weight.clone();
        let step = |x: &View4<'_, f64>, weight: &mut [f64]| {
            lance_conv2d_step(&ctx, x, weight, [o, c, 3, 3], &bases, &grad, &geometry, 0.5)
        };
        let y = step(&x, &mut weight).unwrap();
        assert_eq!(y.len(), n * o * h * w);
        let mut dense = vec![0.0; o * c * 9];
        let mut workspace = vec![0.0; padded_workspace_len([n, c, h, w], [1, 1], n)];
        conv2d_weight_grad(
            &ctx,
            &grad,
            &x,
            [o, c, 3, 3],
            &geometry,
            &mut workspace,
            Out::new(&mut dense),
        )
        .unwrap();
        for ((after, was), g) in weight.iter().zip(&before).zip(&dense) {
            assert_eq!(*after, was - 0.5 * g); // identity bases: the exact gradient
        }
        let three_samples = View4::c_contiguous(&before, [o, c, 3, 3]).unwrap();
        let error = step(&three_samples, &mut weight).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("factors[0] has shape (2, 2) but mode 0 of x has size 3"),
            "{error}"
        );
    }
}
