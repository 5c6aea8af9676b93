//! Mode-n unfolding of a 4-D array (specs/kernels.md#unfold).

use crate::{LanceError, View4};

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
pub fn unfold<T: Copy>(x: &View4<'_, T>, mode: usize, out: &mut [T]) -> Result<(), LanceError> {
    let (rows, cols) = unfolded_shape(x.shape, mode)?;
    let expected = rows * cols; // = x.numel(), which the view has checked
    if out.len() != expected {
        return Err(LanceError::BufferLength {
            expected,
            got: out.len(),
        });
    }
    if expected == 0 {
        return Ok(());
    }

    // Columns enumerate the other axes (a, b, c), c fastest: `out` is a sequence of lines of
    // length shape[c], one per (i, ia, ib). The view checked that every offset is in bounds.
    let [a, b, c] = other_axes(mode);
    let [stride_n, stride_a, stride_b, stride_c] = [mode, a, b, c].map(|axis| x.strides[axis]);
    let (len_a, len_b, len_c) = (x.shape[a], x.shape[b], x.shape[c]);
    let base = x.offset as isize;
    let line_starts = (0..rows).flat_map(|i| {
        (0..len_a).flat_map(move |ia| {
            (0..len_b).map(move |ib| {
                base + i as isize * stride_n + ia as isize * stride_a + ib as isize * stride_b
            })
        })
    });
    for (line, start) in out.chunks_exact_mut(len_c).zip(line_starts) {
        if stride_c == 1 {
            let start = start as usize;
            line.copy_from_slice(&x.data[start..start + len_c]);
        } else {
            for (k, value) in line.iter_mut().enumerate() {
                *value = x.data[(start + k as isize * stride_c) as usize];
            }
        }
    }
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
    use super::*;

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
        unfold(x, mode, &mut out).unwrap();
        out
    }

    #[test]
    fn small_example_by_hand() {
        let data: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let x = View4::c_contiguous(&data, [2, 2, 1, 2]).unwrap();
        let mut out = [0.0_f32; 8];
        unfold(&x, 1, &mut out).unwrap();
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
            unfold(&x, mode, &mut out).unwrap();
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
        assert_eq!(unfold(&x, 2, &mut []), Ok(()));
    }

    #[test]
    fn bad_mode_is_an_error() {
        let data = [0.0_f64; 6];
        let x = View4::c_contiguous(&data, [1, 2, 3, 1]).unwrap();
        let err = unfold(&x, 4, &mut [0.0; 6]).unwrap_err();
        assert_eq!(err, LanceError::InvalidMode { mode: 4, ndim: 4 });
        assert_eq!(err.to_string(), "mode must be in 0..4, got 4");
    }

    #[test]
    fn wrong_output_length_is_an_error() {
        let data = [0.0_f64; 6];
        let x = View4::c_contiguous(&data, [1, 2, 3, 1]).unwrap();
        for len in [5, 7] {
            assert_eq!(
                unfold(&x, 0, &mut vec![0.0; len]),
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
