//! Mode products, the Tucker projection and reconstruction, and the Gram matrix of an unfolding
//! (specs/kernels.md#mode_product, #tucker_project, #tucker_reconstruct, #gram), each one or a
//! chain of GEMMs on strided views, so no input is copied whole.

use crate::gemm::{
    Batched, Operand, Output, PackedA, Right, Tiles, axis, gemm, gemm_batched, gemm_packed, grid,
};
use crate::out::Out;
use crate::simd::Float;
use crate::view::{c_strides, numel};
use crate::{Context, LanceError, View2, View4};

/// The shape of `x x_mode M` for M with `rows` rows: `shape` with axis `mode` set to `rows`.
fn with_mode(shape: [usize; 4], mode: usize, rows: usize) -> [usize; 4] {
    let mut shape = shape;
    shape[mode] = rows;
    shape
}

/// The three axes other than `mode`, in order.
fn others(mode: usize) -> [usize; 3] {
    let mut axes = [0; 3];
    for (slot, axis) in axes.iter_mut().zip((0..4).filter(|&a| a != mode)) {
        *slot = axis;
    }
    axes
}

/// `(L, stride of L, R)` when the axes before `mode` step like one axis of L elements and the
/// axes after it form one contiguous run of R: then `x x_mode M` is a batch of L products
/// `M (J x I) X_l (I x R)`.
fn batched_layout<T>(x: &View4<'_, T>, mode: usize) -> Option<(usize, isize, usize)> {
    let mut run = 1_isize;
    for d in (mode + 1..4).rev() {
        if x.shape[d] != 1 && x.strides[d] != run {
            return None;
        }
        run *= x.shape[d] as isize;
    }
    let (mut stride, mut next) = (0, None);
    for d in (0..mode).rev().filter(|&d| x.shape[d] != 1) {
        match next {
            Some(expected) if x.strides[d] != expected => return None,
            Some(expected) => next = Some(expected * x.shape[d] as isize),
            None => (stride, next) = (x.strides[d], Some(x.strides[d] * x.shape[d] as isize)),
        }
    }
    Some((x.shape[..mode].iter().product(), stride, run as usize))
}

/// `out = x x_mode m` (row-major), unchecked: a batch of products read in place when the
/// layout allows (`batched_layout`, a run of at least one panel), else one GEMM over the
/// unfolding.
fn product<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    m: &View2<'_, T>,
    mode: usize,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let panel = T::micro_kernel(ctx.isa, m.shape[0]).nr;
    if let Some((batches, batch_stride, cols)) = batched_layout(x, mode)
        && cols >= panel
    {
        let packed = PackedA::new(ctx, &matrix_operand(m, &matrix_tables(m)))?;
        let b = Batched {
            data: x.data,
            base: x.offset as isize,
            batches,
            batch_stride,
            row_stride: x.strides[mode],
            cols,
        };
        return gemm_batched(ctx, &packed, &b, out);
    }
    general_product(ctx, x, m, mode, out)
}

/// `out = x x_mode m` (row-major), unchecked: `out_(mode) = M X_(mode)` as one GEMM, transposed
/// when M has more rows than X_(mode) has columns (the packed operand is the smaller one).
fn general_product<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    m: &View2<'_, T>,
    mode: usize,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let out_shape = with_mode(x.shape, mode, m.shape[0]);
    let out_strides = c_strides(out_shape)?;
    let rest = others(mode);
    let rest_shape = rest.map(|a| x.shape[a]);
    let m_tables = matrix_tables(m);
    let x_tables = [
        axis(0, x.shape[mode], x.strides[mode]),
        grid(0, &rest_shape, &rest.map(|a| x.strides[a])),
    ];
    let out_tables = [
        axis(0, m.shape[0], out_strides[mode]),
        grid(0, &rest_shape, &rest.map(|a| out_strides[a])),
    ];
    let a = matrix_operand(m, &m_tables);
    let b = Operand {
        data: x.data,
        base: x.offset as isize,
        rows: &x_tables[0],
        cols: &x_tables[1],
    };
    let [out_rows, out_cols] = &out_tables;
    let (a, b, rows, cols) = if a.rows.len() <= b.cols.len() {
        (a, b, out_rows, out_cols)
    } else {
        (b.t(), a.t(), out_cols, out_rows)
    };
    gemm(
        ctx,
        &a,
        &b,
        &mut Output {
            data: out,
            base: 0,
            rows,
            cols,
            accumulate: false,
        },
        Tiles::All,
    )
}

/// The offset tables (rows, columns) of a matrix view.
fn matrix_tables<T>(m: &View2<'_, T>) -> [Vec<isize>; 2] {
    [
        axis(0, m.shape[0], m.strides[0]),
        axis(0, m.shape[1], m.strides[1]),
    ]
}

/// A matrix view as a GEMM operand over its `matrix_tables`.
fn matrix_operand<'a, T>(m: &View2<'a, T>, tables: &'a [Vec<isize>; 2]) -> Operand<'a, T> {
    Operand {
        data: m.data,
        base: m.offset as isize,
        rows: &tables[0],
        cols: &tables[1],
    }
}

/// Writes `x x_mode M` (row-major) into `out`: for M of shape (J, I_mode), axis `mode` of the
/// result has size J, `out[.., j, ..] = sum_i M[j, i] x[.., i, ..]`.
pub fn mode_product<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    matrix: &View2<'_, T>,
    mode: usize,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    if mode >= 4 {
        return Err(LanceError::InvalidMode { mode, ndim: 4 });
    }
    if matrix.shape[1] != x.shape[mode] {
        return Err(LanceError::Invalid(format!(
            "matrix has shape {:?} but mode {mode} of x has size {}",
            matrix.shape, x.shape[mode]
        )));
    }
    out.check_len(numel(with_mode(x.shape, mode, matrix.shape[0]))?)?;
    product(ctx, x, matrix, mode, out)
}

/// Which side of a factor (I_n, k_n) faces the tensor: I_n for a projection, k_n for a
/// reconstruction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Project,
    Reconstruct,
}

/// The modes with a factor, in the order the chain takes them, after checking each factor
/// against `shape`: the mode that shrinks the tensor most first (projection), or grows it
/// least first (reconstruction), ties in mode order, as the NumPy reference.
fn chain_order<T>(
    shape: [usize; 4],
    factors: &[Option<View2<'_, T>>; 4],
    side: Side,
    name: &str,
) -> Result<Vec<usize>, LanceError> {
    let mut modes = Vec::new();
    for (n, factor) in factors.iter().enumerate() {
        let Some(u) = factor else { continue };
        let [size, rank] = u.shape;
        if !(1..=size).contains(&rank) {
            return Err(LanceError::Invalid(format!(
                "factors[{n}] has shape ({size}, {rank}): its rank {rank} must be in 1..{size} (its mode size)"
            )));
        }
        let facing = if side == Side::Project { size } else { rank };
        if facing != shape[n] {
            return Err(LanceError::Invalid(format!(
                "factors[{n}] has shape ({size}, {rank}) but mode {n} of {name} has size {}",
                shape[n]
            )));
        }
        modes.push(n);
    }
    let ratio = |n: usize| {
        let [size, rank] = factors[n].as_ref().map_or([1, 1], |u| u.shape);
        if side == Side::Project {
            rank as f64 / size as f64
        } else {
            size as f64 / rank as f64
        }
    };
    modes.sort_by(|&p, &q| ratio(p).total_cmp(&ratio(q)));
    Ok(modes)
}

/// Applies `matrix(n)` along each mode of `order` in turn, the last product into `out`.
fn chain<'a, T: Float + 'a>(
    ctx: &Context,
    x: &View4<'_, T>,
    order: &[usize],
    matrix: impl Fn(usize) -> View2<'a, T>,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let Some((&last, first)) = order.split_last() else {
        return crate::layout::copy_to_c_order(ctx, x, out);
    };
    let mut previous: Option<(Vec<T>, [usize; 4])> = None;
    for &n in first {
        let next = {
            let input = match &previous {
                None => *x,
                Some((data, shape)) => View4::c_contiguous(data, *shape)?,
            };
            let m = matrix(n);
            let shape = with_mode(input.shape, n, m.shape[0]);
            let len = numel(shape)?;
            let mut data = Vec::with_capacity(len);
            product(
                ctx,
                &input,
                &m,
                n,
                Out::uninit(&mut data.spare_capacity_mut()[..len]),
            )?;
            // SAFETY: the product returned Ok, so it wrote all `len` elements.
            unsafe { data.set_len(len) };
            (data, shape)
        };
        previous = Some(next);
    }
    let input = match &previous {
        None => *x,
        Some((data, shape)) => View4::c_contiguous(data, *shape)?,
    };
    product(ctx, &input, &matrix(last), last, out)
}

fn core_shape<T>(shape: [usize; 4], factors: &[Option<View2<'_, T>>; 4], side: Side) -> [usize; 4] {
    std::array::from_fn(|n| match (&factors[n], side) {
        (None, _) => shape[n],
        (Some(u), Side::Project) => u.shape[1],
        (Some(u), Side::Reconstruct) => u.shape[0],
    })
}

/// The shape of `tucker_project(x, factors)` for `x` of `shape`, after checking the factors.
pub fn projected_shape<T>(
    shape: [usize; 4],
    factors: &[Option<View2<'_, T>>; 4],
) -> Result<[usize; 4], LanceError> {
    chain_order(shape, factors, Side::Project, "x")?;
    Ok(core_shape(shape, factors, Side::Project))
}

/// The shape of `tucker_reconstruct(core, factors)` for `core` of `shape`, after checking the
/// factors.
pub fn reconstructed_shape<T>(
    shape: [usize; 4],
    factors: &[Option<View2<'_, T>>; 4],
) -> Result<[usize; 4], LanceError> {
    chain_order(shape, factors, Side::Reconstruct, "core")?;
    Ok(core_shape(shape, factors, Side::Reconstruct))
}

/// Writes the Tucker core `S = x x_n U_n^T` over every mode n with a factor U_n (I_n, k_n)
/// into `out` (row-major, shape: k_n for those modes, I_n for the others).
pub fn tucker_project<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    factors: &[Option<View2<'_, T>>; 4],
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    tucker_chain(ctx, x, factors, Side::Project, out)
}

/// Writes `X_hat = core x_n U_n` over every mode n with a factor U_n (I_n, k_n) into `out`.
pub fn tucker_reconstruct<T: Float>(
    ctx: &Context,
    core: &View4<'_, T>,
    factors: &[Option<View2<'_, T>>; 4],
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    tucker_chain(ctx, core, factors, Side::Reconstruct, out)
}

/// The products by every factor (transposed for a projection), in `chain_order`.
fn tucker_chain<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    factors: &[Option<View2<'_, T>>; 4],
    side: Side,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let order = chain_order(
        x.shape,
        factors,
        side,
        if side == Side::Project { "x" } else { "core" },
    )?;
    out.check_len(numel(core_shape(x.shape, factors, side))?)?;
    let matrix = |n: usize| {
        let u = factors[n].expect("chain_order lists only modes with a factor");
        if side == Side::Project {
            u.swapped(0, 1)
        } else {
            u
        }
    };
    chain(ctx, x, &order, matrix, out)
}

/// Writes the Gram matrix `X_(mode) X_(mode)^T` (I_mode x I_mode, row-major, exactly
/// symmetric) into `out`: the upper triangle by GEMM tiles, mirrored into the lower one.
pub fn gram<T: Float>(
    ctx: &Context,
    x: &View4<'_, T>,
    mode: usize,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    if mode >= 4 {
        return Err(LanceError::InvalidMode { mode, ndim: 4 });
    }
    let size = x.shape[mode];
    out.check_len(size.checked_mul(size).ok_or(LanceError::SizeOverflow)?)?;
    let rest = others(mode);
    let rows = axis(0, size, x.strides[mode]);
    let cols = grid(0, &rest.map(|a| x.shape[a]), &rest.map(|a| x.strides[a]));
    let unfolding = Operand {
        data: x.data,
        base: x.offset as isize,
        rows: &rows,
        cols: &cols,
    };
    let (out_rows, out_cols) = (axis(0, size, size as isize), axis(0, size, 1));
    let mut c = Output {
        data: out,
        base: 0,
        rows: &out_rows,
        cols: &out_cols,
        accumulate: false,
    };
    let packed = PackedA::new(ctx, &unfolding)?;
    gemm_packed(
        ctx,
        &packed,
        &Right::TransposeOf(&packed),
        &mut c,
        Tiles::Upper,
    )?;
    for i in 0..size {
        for j in 0..i {
            // SAFETY: both in bounds (checked above); the upper triangle is written by the tiles.
            unsafe { out.write(i * size + j, out.read(j * size + i)) };
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    /// Values whose products and sums are exact in f32 and f64 (so every path agrees exactly).
    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|v| (((v + seed) * 7919 % 17) as f64 - 8.0) / 4.0)
            .collect()
    }

    fn at(shape: [usize; 4], idx: [usize; 4]) -> usize {
        ((idx[0] * shape[1] + idx[1]) * shape[2] + idx[2]) * shape[3] + idx[3]
    }

    fn indices(shape: [usize; 4]) -> impl Iterator<Item = [usize; 4]> {
        (0..shape.iter().product::<usize>()).map(move |mut q| {
            let mut idx = [0; 4];
            for d in (0..4).rev() {
                idx[d] = q % shape[d];
                q /= shape[d];
            }
            idx
        })
    }

    /// x x_mode M from the definition.
    fn naive_product(
        x: &[f64],
        shape: [usize; 4],
        m: &[f64],
        rows: usize,
        mode: usize,
    ) -> Vec<f64> {
        let out_shape = with_mode(shape, mode, rows);
        let mut out = vec![0.0; out_shape.iter().product()];
        for idx in indices(out_shape) {
            out[at(out_shape, idx)] = (0..shape[mode])
                .map(|i| {
                    let mut src = idx;
                    src[mode] = i;
                    m[idx[mode] * shape[mode] + i] * x[at(shape, src)]
                })
                .sum();
        }
        out
    }

    fn contexts() -> Vec<Context> {
        Isa::available()
            .into_iter()
            .flat_map(|isa| [1, 2].map(|t| Context::new(isa, t).unwrap()))
            .collect()
    }

    #[test]
    fn mode_products_match_the_definition_on_every_path() {
        // The second shape takes more than one depth block on mode 1 (batched, in place).
        for shape in [[3, 5, 2, 7], [2, 300, 1, 40]] {
            check_mode_products(shape);
        }
    }

    fn check_mode_products(shape: [usize; 4]) {
        let x = values(shape.iter().product(), 3);
        let view = View4::c_contiguous(&x, shape).unwrap();
        for mode in 0..4 {
            for rows in [1, 4, 40] {
                let m = values(rows * shape[mode], 5);
                let mv = View2::c_contiguous(&m, [rows, shape[mode]]).unwrap();
                let want = naive_product(&x, shape, &m, rows, mode);
                for ctx in contexts() {
                    let mut out = vec![0.0; want.len()];
                    mode_product(&ctx, &view, &mv, mode, Out::new(&mut out)).unwrap();
                    assert_eq!(out, want, "{ctx:?} mode {mode} rows {rows}");
                }
            }
        }
    }

    #[test]
    fn projection_then_reconstruction_is_the_chain_of_products() {
        let shape = [4, 6, 3, 5];
        let x = values(360, 1);
        let factor_data: Vec<Vec<f64>> = [(4, 2), (6, 6), (3, 1), (5, 3)]
            .iter()
            .enumerate()
            .map(|(n, &(i, k))| values(i * k, n))
            .collect();
        let ranks = [2, 6, 1, 3];
        let factor = |n: usize| View2::c_contiguous(&factor_data[n], [shape[n], ranks[n]]).unwrap();
        let factors = [Some(factor(0)), None, Some(factor(2)), Some(factor(3))];
        // The chain by the definition, one mode at a time (any order gives the same exact sums).
        let mut want = x.clone();
        let mut current = shape;
        for n in [0, 2, 3] {
            let u_t: Vec<f64> = (0..ranks[n] * shape[n])
                .map(|q| factor_data[n][(q % shape[n]) * ranks[n] + q / shape[n]])
                .collect();
            want = naive_product(&want, current, &u_t, ranks[n], n);
            current[n] = ranks[n];
        }
        let mut back = want.clone();
        let mut back_shape = current;
        for n in [0, 2, 3] {
            back = naive_product(&back, back_shape, &factor_data[n], shape[n], n);
            back_shape[n] = shape[n];
        }
        let view = View4::c_contiguous(&x, shape).unwrap();
        for ctx in contexts() {
            let mut core = vec![0.0; want.len()];
            tucker_project(&ctx, &view, &factors, Out::new(&mut core)).unwrap();
            assert_eq!(core, want, "{ctx:?}");
            let core_view = View4::c_contiguous(&core, current).unwrap();
            let mut x_hat = vec![0.0; 360];
            tucker_reconstruct(&ctx, &core_view, &factors, Out::new(&mut x_hat)).unwrap();
            assert_eq!(x_hat, back, "{ctx:?}");
        }
    }

    #[test]
    fn gram_is_symmetric_and_matches_the_definition() {
        let shape = [5, 9, 3, 4];
        let x = values(540, 2);
        let view = View4::c_contiguous(&x, shape).unwrap();
        for mode in 0..4 {
            let size = shape[mode];
            let mut want = vec![0.0; size * size];
            for a in indices(shape) {
                for r in 0..size {
                    let mut b = a;
                    b[mode] = r;
                    want[a[mode] * size + r] += x[at(shape, a)] * x[at(shape, b)];
                }
            }
            for ctx in contexts() {
                let mut g = vec![f64::NAN; size * size];
                gram(&ctx, &view, mode, Out::new(&mut g)).unwrap();
                assert_eq!(g, want, "{ctx:?} mode {mode}");
            }
        }
    }

    #[test]
    fn bad_factors_are_errors_that_name_them() {
        let x = vec![0.0_f32; 24];
        let view = View4::c_contiguous(&x, [2, 3, 4, 1]).unwrap();
        let u = vec![0.0_f32; 12];
        let ctx = Context::new(Isa::Scalar, 1).unwrap();
        let wide = View2::c_contiguous(&u, [3, 4]).unwrap();
        let err = tucker_project(
            &ctx,
            &view,
            &[None, Some(wide), None, None],
            Out::new(&mut [0.0; 24]),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("factors[1] has shape (3, 4): its rank 4 must be in 1..3"),
            "{err}"
        );
        let tall = View2::c_contiguous(&u, [4, 3]).unwrap();
        let err = tucker_project(
            &ctx,
            &view,
            &[Some(tall), None, None, None],
            Out::new(&mut [0.0; 24]),
        )
        .unwrap_err();
        assert!(err.to_string().contains("mode 0 of x has size 2"), "{err}");
        assert!(mode_product(&ctx, &view, &tall, 1, Out::new(&mut [0.0; 24])).is_err());
        assert_eq!(
            gram(&ctx, &view, 4, Out::new(&mut [])),
            Err(LanceError::InvalidMode { mode: 4, ndim: 4 })
        );
    }
}
