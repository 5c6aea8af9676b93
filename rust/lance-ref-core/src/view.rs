use crate::LanceError;

/// A read-only strided view of an `N`-D array ([`View4`] for activations, [`View2`] for
/// matrices).
///
/// Element `[i_0, ..., i_{N-1}]` is `data[offset + sum_d i_d * strides[d]]`. Strides count
/// elements (not bytes) and may be zero or negative, so NumPy views (transposed, sliced with
/// steps, reversed) map onto a view without copying. The constructor checks once that every
/// element lies inside `data`; kernels can then index freely.
#[derive(Debug, Clone, Copy)]
pub struct View<'a, T, const N: usize> {
    pub(crate) data: &'a [T],
    pub(crate) offset: usize,
    pub(crate) shape: [usize; N],
    pub(crate) strides: [isize; N],
}

/// A 4-D view, e.g. an activation (B, C, H, W).
pub type View4<'a, T> = View<'a, T, 4>;
/// A 2-D view, e.g. a factor matrix (I_n, k_n).
pub type View2<'a, T> = View<'a, T, 2>;

impl<'a, T, const N: usize> View<'a, T, N> {
    /// A view of `data` whose element `[0, ..., 0]` is `data[offset]`.
    ///
    /// Fails if the element count overflows or any element falls outside `data`. An empty view
    /// (a zero in `shape`) reads nothing and is always valid.
    pub fn new(
        data: &'a [T],
        offset: usize,
        shape: [usize; N],
        strides: [isize; N],
    ) -> Result<Self, LanceError> {
        if numel(shape)? > 0 {
            let (low, high) = offset_range(shape, strides)?;
            let base = isize::try_from(offset).map_err(|_| LanceError::SizeOverflow)?;
            let lowest = base.checked_add(low).ok_or(LanceError::SizeOverflow)?;
            let highest = base.checked_add(high).ok_or(LanceError::SizeOverflow)?;
            if lowest < 0 || highest as usize >= data.len() {
                return Err(LanceError::OutOfBounds {
                    lowest,
                    highest,
                    len: data.len(),
                });
            }
        }
        Ok(Self {
            data,
            offset,
            shape,
            strides,
        })
    }

    /// A C-contiguous (row-major) view; `data` must hold exactly `prod(shape)` elements.
    pub fn c_contiguous(data: &'a [T], shape: [usize; N]) -> Result<Self, LanceError> {
        let expected = numel(shape)?;
        if data.len() != expected {
            return Err(LanceError::BufferLength {
                expected,
                got: data.len(),
            });
        }
        Self::new(data, 0, shape, c_strides(shape)?)
    }

    pub fn shape(&self) -> [usize; N] {
        self.shape
    }

    pub fn strides(&self) -> [isize; N] {
        self.strides
    }

    /// Number of elements, `prod(shape)` (checked by the constructor).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The same elements with axes `a` and `b` swapped (no copy).
    pub fn swapped(mut self, a: usize, b: usize) -> Self {
        self.shape.swap(a, b);
        self.strides.swap(a, b);
        self
    }
}

impl<'a, T> View4<'a, T> {
    /// Samples `range` (along axis 0) of this view, no copy; `range` must lie inside the shape.
    pub(crate) fn samples(mut self, range: std::ops::Range<usize>) -> Self {
        debug_assert!(range.start <= range.end && range.end <= self.shape[0]);
        if !range.is_empty() {
            self.offset = at(&self, range.start, 0, 0, 0) as usize;
        }
        self.shape[0] = range.len();
        self
    }
}

/// Offset of element `[a, b, r, col]` of `v` (inside its data when the index is inside its shape).
pub(crate) fn at<T>(v: &View4<'_, T>, a: usize, b: usize, r: usize, col: usize) -> isize {
    v.offset as isize
        + a as isize * v.strides[0]
        + b as isize * v.strides[1]
        + r as isize * v.strides[2]
        + col as isize * v.strides[3]
}

/// Plane `[a, b]` of `v` into `buf`, its rows `row_step` apart.
pub(crate) fn copy_plane<T: Copy>(
    v: &View4<'_, T>,
    a: usize,
    b: usize,
    buf: &mut [T],
    row_step: usize,
) {
    let [_, _, h, w] = v.shape;
    for r in 0..h {
        let (from, to) = (at(v, a, b, r, 0), &mut buf[r * row_step..r * row_step + w]);
        if v.strides[3] == 1 {
            to.copy_from_slice(&v.data[from as usize..from as usize + w]);
        } else {
            for (q, value) in to.iter_mut().enumerate() {
                *value = v.data[(from + q as isize * v.strides[3]) as usize];
            }
        }
    }
}

/// Row-major strides (in elements) of `shape`, or `SizeOverflow`.
pub fn c_strides<const N: usize>(shape: [usize; N]) -> Result<[isize; N], LanceError> {
    let mut strides = [0; N];
    let mut step = 1_usize;
    for axis in (0..N).rev() {
        strides[axis] = isize::try_from(step).map_err(|_| LanceError::SizeOverflow)?;
        step = step
            .checked_mul(shape[axis])
            .ok_or(LanceError::SizeOverflow)?;
    }
    Ok(strides)
}

/// `prod(shape)`, or `SizeOverflow`.
pub fn numel<const N: usize>(shape: [usize; N]) -> Result<usize, LanceError> {
    shape
        .iter()
        .try_fold(1_usize, |acc, &dim| acc.checked_mul(dim))
        .ok_or(LanceError::SizeOverflow)
}

/// The lowest and highest element offsets, relative to element `[0, ..., 0]`, that a non-empty
/// array with this shape and these strides reaches (`low <= 0 <= high`).
pub fn offset_range<const N: usize>(
    shape: [usize; N],
    strides: [isize; N],
) -> Result<(isize, isize), LanceError> {
    let mut low = 0_isize;
    let mut high = 0_isize;
    for (&dim, &stride) in shape.iter().zip(&strides) {
        let last = isize::try_from(dim.saturating_sub(1)).map_err(|_| LanceError::SizeOverflow)?;
        let reach = last.checked_mul(stride).ok_or(LanceError::SizeOverflow)?;
        if reach < 0 {
            low = low.checked_add(reach).ok_or(LanceError::SizeOverflow)?;
        } else {
            high = high.checked_add(reach).ok_or(LanceError::SizeOverflow)?;
        }
    }
    Ok((low, high))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_strides_are_row_major() {
        let data = [0.0_f32; 120];
        let view = View4::c_contiguous(&data, [2, 3, 4, 5]).unwrap();
        assert_eq!(view.strides(), [60, 20, 5, 1]);
        assert_eq!(view.numel(), 120);
    }

    #[test]
    fn negative_strides_reach_below_the_first_element() {
        assert_eq!(offset_range([2, 3, 1, 4], [-12, 4, 7, -1]), Ok((-15, 8)));
        let data = [0.0_f64; 24];
        // A fully reversed 2x3x1x4 array: element [0,0,0,0] is the last one in memory.
        assert!(View4::new(&data, 23, [2, 3, 1, 4], [-12, -4, -4, -1]).is_ok());
        assert_eq!(
            View4::new(&data, 22, [2, 3, 1, 4], [-12, -4, -4, -1]).unwrap_err(),
            LanceError::OutOfBounds {
                lowest: -1,
                highest: 22,
                len: 24
            }
        );
    }

    #[test]
    fn views_past_the_end_are_rejected() {
        let data = [0.0_f32; 10];
        assert_eq!(
            View4::new(&data, 1, [1, 1, 2, 5], [0, 0, 5, 1]).unwrap_err(),
            LanceError::OutOfBounds {
                lowest: 1,
                highest: 10,
                len: 10
            }
        );
        assert_eq!(
            View4::c_contiguous(&data, [1, 1, 3, 4]).unwrap_err(),
            LanceError::BufferLength {
                expected: 12,
                got: 10
            }
        );
    }

    #[test]
    fn empty_views_are_valid_anywhere() {
        let data: [f32; 0] = [];
        assert!(View4::new(&data, 99, [3, 0, 2, 2], [-5, 1, 1, 1]).is_ok());
        assert!(View4::c_contiguous(&data, [3, 0, 2, 2]).is_ok());
    }

    #[test]
    fn overflowing_sizes_and_strides_are_errors() {
        let data = [0.0_f32; 4];
        assert_eq!(numel([usize::MAX, 2, 1, 1]), Err(LanceError::SizeOverflow));
        assert_eq!(
            View4::new(&data, 0, [usize::MAX, 2, 1, 1], [1, 1, 1, 1]).unwrap_err(),
            LanceError::SizeOverflow
        );
        assert_eq!(
            View4::new(&data, 0, [3, 1, 1, 1], [isize::MAX, 1, 1, 1]).unwrap_err(),
            LanceError::SizeOverflow
        );
        assert_eq!(
            View4::new(&data, 0, [2, 2, 1, 1], [isize::MAX, isize::MAX, 1, 1]).unwrap_err(),
            LanceError::SizeOverflow
        );
        assert_eq!(
            View4::new(&data, usize::MAX, [1, 1, 1, 1], [1, 1, 1, 1]).unwrap_err(),
            LanceError::SizeOverflow
        );
    }
}
