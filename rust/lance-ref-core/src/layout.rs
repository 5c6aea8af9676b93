//! Layout kernels: mode-n unfolding and folding of a 4-D array (specs/kernels.md#unfold,
//! specs/kernels.md#fold), both a copy of a strided view into row-major order.

use crate::out::Out;
use crate::parallel::{for_ranges, threads_for};
use crate::view::{c_strides, numel};
use crate::{Context, LanceError, View2, View4};

/// Shape `(I_n, prod of the other dims)` of the mode-`mode` unfolding of a 4-D array.
pub fn unfolded_shape(shape: [usize; 4], mode: usize) -> Result<(usize, usize), LanceError> {
    if mode >= 4 {
        return Err(LanceError::InvalidMode { mode, ndim: 4 });
    }
    let cols = other_axes(mode)
        .iter()
        .try_fold(1_usize, |acc, &axis| acc.checked_mul(shape[axis]))
        .ok_or(LanceError::SizeOverflow)?;
    Ok((shape[mode], cols))
}

/// Writes the mode-`mode` unfolding `X_(n)` of `x` into `out`, row-major.
///
/// `out[i * cols + j] = x[.., i, ..]` with `i` on axis `mode` and `j` the row-major index of the
/// other three axes in their original order: NumPy's
/// `np.moveaxis(x, mode, 0).reshape(x.shape[mode], -1)`. `out` must hold exactly
/// `prod(x.shape())` elements.
pub fn unfold<T: Copy + Send + Sync>(
    ctx: &Context,
    x: &View4<'_, T>,
    mode: usize,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    unfolded_shape(x.shape, mode)?;
    let [a, b, c] = other_axes(mode);
    copy_to_c_order(ctx, &moved(x, [mode, a, b, c]), out)
}

/// Writes the 4-D array of `shape` whose mode-`mode` unfolding is `m` into `out`, row-major:
/// the inverse of [`unfold`]. `m` must have shape `unfolded_shape(shape, mode)`.
pub fn fold<T: Copy + Send + Sync>(
    ctx: &Context,
    m: &View2<'_, T>,
    mode: usize,
    shape: [usize; 4],
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let (rows, cols) = unfolded_shape(shape, mode)?;
    if m.shape != [rows, cols] {
        return Err(LanceError::Invalid(format!(
            "m must have shape ({rows}, {cols}) to fold into {shape:?} along mode {mode}, got {:?}",
            m.shape
        )));
    }
    // m as a 4-D view (I_n, the other axes...), whose axes are then put back in place.
    let others = other_axes(mode);
    let other_shape = others.map(|axis| shape[axis]);
    let inner = c_strides(other_shape)?.map(|s| s * m.strides[1]);
    let unfolded = View4 {
        data: m.data,
        offset: m.offset,
        shape: [rows, other_shape[0], other_shape[1], other_shape[2]],
        strides: [m.strides[0], inner[0], inner[1], inner[2]],
    };
    let mut back = [0; 4];
    back[mode] = 0;
    for (position, &axis) in others.iter().enumerate() {
        back[axis] = position + 1;
    }
    copy_to_c_order(ctx, &moved(&unfolded, back), out)
}

/// The view with axis `order[d]` of `x` as its axis `d`.
fn moved<'a, T>(x: &View4<'a, T>, order: [usize; 4]) -> View4<'a, T> {
    View4 {
        data: x.data,
        offset: x.offset,
        shape: order.map(|axis| x.shape[axis]),
        strides: order.map(|axis| x.strides[axis]),
    }
}

/// Side of the square tiles in which a transposing copy is done, so both the lines read and
/// the lines written stay in the L1 cache.
const TILE: usize = 32;

/// `shape` and `strides` with each axis merged into the next when together they step like one
/// axis (so copies run along longer lines); merged-away axes become leading axes of size 1.
fn collapsed(shape: [usize; 4], strides: [isize; 4]) -> ([usize; 4], [isize; 4]) {
    let (mut out_shape, mut out_strides) = ([1; 4], [0; 4]);
    let mut d = 3;
    (out_shape[3], out_strides[3]) = (shape[3], strides[3]);
    for axis in (0..3).rev() {
        if out_shape[d] == 1 {
            (out_shape[d], out_strides[d]) = (shape[axis], strides[axis]);
        } else if shape[axis] == 1 {
        } else if strides[axis] == out_strides[d] * out_shape[d] as isize {
            out_shape[d] *= shape[axis];
        } else {
            d -= 1;
            (out_shape[d], out_strides[d]) = (shape[axis], strides[axis]);
        }
    }
    (out_shape, out_strides)
}

/// Copies `x` into `out` in row-major order, in TILE x TILE blocks of the last axis and the
/// input's most contiguous other axis `f` (a cache-blocked transpose when `f` beats the last
/// axis; plain line copies when it does not, with `f` the axis before last). Threads split the
/// first remaining axis.
pub(crate) fn copy_to_c_order<T: Copy + Send + Sync>(
    ctx: &Context,
    x: &View4<'_, T>,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let expected = numel(x.shape)?;
    out.check_len(expected)?;
    if expected == 0 {
        return Ok(());
    }
    let (shape, strides) = collapsed(x.shape, x.strides);
    let out_strides = c_strides(shape)?;
    let f = (0..3)
        .filter(|&d| shape[d] > 1 && strides[d].unsigned_abs() < strides[3].unsigned_abs())
        .min_by_key(|&d| strides[d].unsigned_abs())
        .unwrap_or(2);
    let [p, r] = match f {
        0 => [1, 2],
        1 => [0, 2],
        _ => [0, 1],
    };
    let tile = if f == 2 && strides[3] == 1 {
        shape[3]
    } else {
        TILE
    }; // whole lines when not transposing
    for_ranges(
        shape[p],
        threads_for(expected, ctx.threads),
        1,
        |start, end| {
            for ip in start..end {
                for ir in 0..shape[r] {
                    let mut index = [0_usize; 4];
                    (index[p], index[r]) = (ip, ir);
                    for f0 in (0..shape[f]).step_by(TILE) {
                        for j0 in (0..shape[3]).step_by(tile) {
                            let len = tile.min(shape[3] - j0);
                            index[3] = j0;
                            for fi in f0..(f0 + TILE).min(shape[f]) {
                                index[f] = fi;
                                let from = (0..4).fold(x.offset as isize, |o, d| {
                                    o + index[d] as isize * strides[d]
                                });
                                let to =
                                    (0..4).fold(0, |o, d| o + index[d] * out_strides[d] as usize);
                                // SAFETY: the view checked every input offset; `to..to + len` is
                                // inside `out`, in this thread's slice of axis p only.
                                if strides[3] == 1 {
                                    let from = from as usize;
                                    unsafe { out.copy_from(to, &x.data[from..from + len]) };
                                } else {
                                    for j in 0..len {
                                        let value =
                                            x.data[(from + j as isize * strides[3]) as usize];
                                        unsafe { out.write(to + j, value) };
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    );
    Ok(())
}

/// The three axes other than `mode`, in their original order (`mode < 4`).
fn other_axes(mode: usize) -> [usize; 3] {
    match mode {
        0 => [1, 2, 3],
        1 => [0, 2, 3],
        2 => [0, 1, 3],
        _ => [0, 1, 2],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn collapsing_merges_axes_that_step_like_one() {
        use super::collapsed;
        assert_eq!(
            collapsed([2, 3, 4, 5], [60, 20, 5, 1]),
            ([1, 1, 1, 120], [0, 0, 0, 1])
        );
        assert_eq!(
            collapsed([3, 2, 4, 5], [20, 60, 5, 1]),
            ([1, 3, 2, 20], [0, 20, 60, 1])
        );
        assert_eq!(
            collapsed([2, 1, 3, 1], [-3, 7, -1, 9]),
            ([1, 1, 1, 6], [0, 0, 0, -1])
        );
    }

    use super::*;
    use crate::Isa;

    fn ctx() -> Context {
        Context::new(Isa::Scalar, 2).unwrap()
    }

    /// The value stored at logical index `idx`: its digits spell the index.
    fn value(idx: [usize; 4]) -> f64 {
        (idx[0] * 1000 + idx[1] * 100 + idx[2] * 10 + idx[3]) as f64
    }

    fn indices(shape: [usize; 4]) -> impl Iterator<Item = [usize; 4]> {
        (0..shape[0]).flat_map(move |i| {
            (0..shape[1]).flat_map(move |j| {
                (0..shape[2]).flat_map(move |k| (0..shape[3]).map(move |l| [i, j, k, l]))
            })
        })
    }

    /// A buffer of `len` elements holding the array of `value`s at `offset` with `strides`
    /// (unused slots hold -1).
    fn store(shape: [usize; 4], strides: [isize; 4], offset: usize, len: usize) -> Vec<f64> {
        let mut data = vec![-1.0; len];
        for idx in indices(shape) {
            let pos = (0..4).fold(offset as isize, |p, d| p + idx[d] as isize * strides[d]);
            data[pos as usize] = value(idx);
        }
        data
    }

    /// `X_(mode)` straight from the definition: rows by the mode index, then the other
    /// indices in row-major order.
    fn expected(shape: [usize; 4], mode: usize) -> Vec<f64> {
        let mut rows = vec![Vec::new(); shape[mode]];
        for idx in indices(shape) {
            rows[idx[mode]].push(value(idx));
        }
        rows.concat()
    }

    fn unfolded(x: &View4<'_, f64>, mode: usize) -> Vec<f64> {
        let mut out = vec![0.0; x.numel()];
        unfold(&ctx(), x, mode, Out::new(&mut out)).unwrap();
        out
    }

    #[test]
    fn small_example_by_hand() {
        let data: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let x = View4::c_contiguous(&data, [2, 2, 1, 2]).unwrap();
        let mut out = [0.0_f32; 8];
        unfold(&ctx(), &x, 1, Out::new(&mut out)).unwrap();
        assert_eq!(out, [0.0, 1.0, 4.0, 5.0, 2.0, 3.0, 6.0, 7.0]);
        assert_eq!(unfolded_shape([2, 2, 1, 2], 1), Ok((2, 4)));
    }

    #[test]
    fn contiguous_input_all_modes() {
        let shape = [2, 3, 4, 5];
        let data = store(shape, [60, 20, 5, 1], 0, 120);
        let x = View4::c_contiguous(&data, shape).unwrap();
        for mode in 0..4 {
            assert_eq!(unfolded(&x, mode), expected(shape, mode), "mode {mode}");
        }
    }

    #[test]
    fn transposed_input() {
        // Memory order (axis 3, axis 1, axis 0, axis 2), as after a NumPy transpose.
        let shape = [3, 2, 4, 5];
        let strides = [4, 12, 1, 24];
        let data = store(shape, strides, 0, 120);
        let x = View4::new(&data, 0, shape, strides).unwrap();
        for mode in 0..4 {
            assert_eq!(unfolded(&x, mode), expected(shape, mode), "mode {mode}");
        }
    }

    #[test]
    fn sliced_and_reversed_input() {
        // Every other element on axis 3 (unit stride lost), axis 1 reversed, axes interleaved.
        let shape = [2, 3, 2, 3];
        let strides = [1, -12, 6, 2];
        let offset = 24;
        let data = store(shape, strides, offset, 40);
        let x = View4::new(&data, offset, shape, strides).unwrap();
        for mode in 0..4 {
            assert_eq!(unfolded(&x, mode), expected(shape, mode), "mode {mode}");
        }
    }

    #[test]
    fn works_for_f32_and_size_one_axes() {
        let shape = [1, 4, 1, 3];
        let data: Vec<f32> = store(shape, [12, 3, 3, 1], 0, 12)
            .into_iter()
            .map(|v| v as f32)
            .collect();
        let x = View4::c_contiguous(&data, shape).unwrap();
        for mode in 0..4 {
            let mut out = vec![0.0_f32; 12];
            unfold(&ctx(), &x, mode, Out::new(&mut out)).unwrap();
            let want: Vec<f32> = expected(shape, mode)
                .into_iter()
                .map(|v| v as f32)
                .collect();
            assert_eq!(out, want, "mode {mode}");
        }
    }

    #[test]
    fn empty_input_gives_empty_output() {
        let data: [f64; 0] = [];
        let x = View4::c_contiguous(&data, [2, 0, 3, 1]).unwrap();
        assert_eq!(unfolded_shape(x.shape(), 2), Ok((3, 0)));
        assert_eq!(unfold(&ctx(), &x, 2, Out::new(&mut [])), Ok(()));
    }

    #[test]
    fn bad_mode_is_an_error() {
        let data = [0.0_f64; 6];
        let x = View4::c_contiguous(&data, [1, 2, 3, 1]).unwrap();
        let err = unfold(&ctx(), &x, 4, Out::new(&mut [0.0; 6])).unwrap_err();
        assert_eq!(err, LanceError::InvalidMode { mode: 4, ndim: 4 });
        assert_eq!(err.to_string(), "mode must be in 0..4, got 4");
    }

    #[test]
    fn wrong_output_length_is_an_error() {
        let data = [0.0_f64; 6];
        let x = View4::c_contiguous(&data, [1, 2, 3, 1]).unwrap();
        for len in [5, 7] {
            assert_eq!(
                unfold(&ctx(), &x, 0, Out::new(&mut vec![0.0; len])),
                Err(LanceError::BufferLength {
                    expected: 6,
                    got: len
                })
            );
        }
    }

    #[test]
    fn overflowing_unfolded_shape_is_an_error() {
        assert_eq!(
            unfolded_shape([2, usize::MAX, 2, 1], 0),
            Err(LanceError::SizeOverflow)
        );
        assert_eq!(
            unfolded_shape([usize::MAX, 1, 1, 1], 0),
            Ok((usize::MAX, 1))
        );
    }
}
