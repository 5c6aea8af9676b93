//! C = A B on "indexed" matrices: element (i, j) of an operand lives at `rows[i] + cols[j]` in
//! its buffer, so any strided view, unfolding or transposition of a tensor is an operand
//! without a copy. Panels are packed (BLIS style) and multiplied by the `simd` micro-kernels.

use crate::out::Out;
use crate::parallel::{for_ranges, threads_for};
use crate::simd::{Float, MicroKernel};
use crate::{Context, LanceError};

/// Depth of one packed block: A and B panels of this depth stay in the L1/L2 caches.
const DEPTH_BLOCK: usize = 256;
/// Column panels per packed block of B: its rows are copied as runs of this many panels.
const BLOCK_PANELS: usize = 8;

/// A read-only operand: element (i, j) is `data[base + rows[i] + cols[j]]`.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a, T> {
    pub data: &'a [T],
    pub base: isize,
    pub rows: &'a [isize],
    pub cols: &'a [isize],
}

/// The output: element (i, j) is `data[base + rows[i] + cols[j]]`, distinct (i, j) at distinct
/// places; `accumulate` adds the product to what the elements hold (C += A B).
pub(crate) struct Output<'a, T> {
    pub data: Out<'a, T>,
    pub base: isize,
    pub rows: &'a [isize],
    pub cols: &'a [isize],
    pub accumulate: bool,
}

/// Offsets `start + i * stride` for `i < len`.
pub(crate) fn axis(start: isize, len: usize, stride: isize) -> Vec<isize> {
    (0..len as isize).map(|i| start + i * stride).collect()
}

/// Offsets of every index of `shape` (row-major order) under `strides`, from `start`.
pub(crate) fn grid(start: isize, shape: &[usize], strides: &[isize]) -> Vec<isize> {
    let mut offsets = Vec::with_capacity(shape.iter().product());
    offsets.push(start);
    for (&len, &stride) in shape.iter().zip(strides) {
        let previous = std::mem::take(&mut offsets);
        offsets.reserve(previous.len() * len);
        for o in previous {
            offsets.extend((0..len as isize).map(|i| o + i * stride));
        }
    }
    offsets
}

/// Whether `offsets` are consecutive (`offsets[j] = offsets[0] + j`).
fn consecutive(offsets: &[isize]) -> bool {
    offsets.windows(2).all(|pair| pair[1] == pair[0] + 1)
}

/// The common difference of `offsets` if they form an arithmetic progression.
fn common_step(offsets: &[isize]) -> Option<isize> {
    let step = match offsets {
        [first, second, ..] => second - first,
        _ => 0,
    };
    offsets
        .windows(2)
        .all(|pair| pair[1] - pair[0] == step)
        .then_some(step)
}

/// Checks that every element an operand addresses lies in a buffer of `len` elements.
fn check_bounds(
    base: isize,
    rows: &[isize],
    cols: &[isize],
    len: usize,
    name: &str,
) -> Result<(), LanceError> {
    if rows.is_empty() || cols.is_empty() {
        return Ok(());
    }
    // One pass per table with plain min/max (vectorised), since tables can be long.
    let range = |t: &[isize]| {
        t.iter().fold((isize::MAX, isize::MIN), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
    };
    let ((row_low, row_high), (col_low, col_high)) = (range(rows), range(cols));
    let (low, high) = (base + row_low + col_low, base + row_high + col_high);
    if low < 0 || high as usize >= len {
        return Err(LanceError::Invalid(format!(
            "internal error: {name} addresses elements {low}..={high} of a buffer of {len}"
        )));
    }
    Ok(())
}

impl<'a, T: Copy> Operand<'a, T> {
    /// Element (i, j). Safety: the operand passed `check_bounds`, `i < rows.len()`,
    /// `j < cols.len()`.
    unsafe fn at(&self, i: usize, j: usize) -> T {
        // SAFETY: see above; the hot packing loops skip the bounds checks.
        unsafe {
            let offset = self.base + self.rows.get_unchecked(i) + self.cols.get_unchecked(j);
            *self.data.get_unchecked(offset as usize)
        }
    }

    /// The transposed operand (no copy).
    pub fn t(self) -> Self {
        Operand {
            rows: self.cols,
            cols: self.rows,
            ..self
        }
    }
}

/// The B operand of [`gemm_packed`]: a strided operand, or the transpose of a packed A (for
/// `A A^T`, whose B panels are then copied from the packed A instead of gathered again).
pub(crate) enum Right<'a, T> {
    Strided(Operand<'a, T>),
    TransposeOf(&'a PackedA<T>),
}

/// A packed whole, `[depth block][row panel][p][i]` (rows past m are zero), for the micro-kernel
/// of one instruction set; reusable across products with the same A.
pub(crate) struct PackedA<T> {
    data: Vec<T>,
    m: usize,
    k: usize,
    kernel: MicroKernel<T>,
}

impl<T: Float> PackedA<T> {
    pub fn new(ctx: &Context, a: &Operand<'_, T>) -> Result<Self, LanceError> {
        check_bounds(a.base, a.rows, a.cols, a.data.len(), "A")?;
        let kernel = T::micro_kernel(ctx.isa, a.rows.len());
        let (m, k, mr) = (a.rows.len(), a.cols.len(), kernel.mr);
        let row_panels = m.div_ceil(mr);
        let mut data = vec![T::ZERO; row_panels * mr * k];
        let dst = Out::new(&mut data);
        for_ranges(
            row_panels,
            threads_for(m * k, ctx.threads),
            1,
            |start, end| {
                for depth in (0..k).step_by(DEPTH_BLOCK) {
                    let depth_len = DEPTH_BLOCK.min(k - depth);
                    for rp in start..end {
                        let base = depth * row_panels * mr + rp * mr * depth_len;
                        for i in 0..mr.min(m - rp * mr) {
                            for p in 0..depth_len {
                                // SAFETY: each (rp, p, i) slot is written by one thread only, inside
                                // `data` (base + p * mr + i < row_panels * mr * k); a passed
                                // `check_bounds` and (rp * mr + i, depth + p) is inside it.
                                unsafe {
                                    dst.write(base + p * mr + i, a.at(rp * mr + i, depth + p))
                                };
                            }
                        }
                    }
                }
            },
        );
        Ok(PackedA { data, m, k, kernel })
    }

    /// Rows `row..row + width` of A at depths `depth..depth + len`, as a block of `A^T`:
    /// `block[p * ld + j] = A[row + j, depth + p]` (the rest of each row zero).
    fn transposed_block(
        &self,
        depth: usize,
        len: usize,
        row: usize,
        width: usize,
        ld: usize,
        block: &mut [T],
    ) {
        let mr = self.kernel.mr;
        let packed = &self.data[depth * self.m.div_ceil(mr) * mr..];
        // Rows row..row + width lie in consecutive row panels: copy each panel's share.
        let mut j = 0;
        while j < width {
            let (panel, first) = ((row + j) / mr, (row + j) % mr);
            let take = (mr - first).min(width - j);
            let source = &packed[panel * mr * len..];
            for p in 0..len {
                block[p * ld + j..p * ld + j + take]
                    .copy_from_slice(&source[p * mr + first..p * mr + first + take]);
            }
            j += take;
        }
        for p in 0..len {
            block[p * ld + width..(p + 1) * ld].fill(T::ZERO);
        }
    }
}

/// Which tiles to compute.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tiles {
    All,
    /// Only tiles that reach the upper triangle `i <= j` (for symmetric results).
    Upper,
}

/// `c = a b` for `a` (m x k), `b` (k x n), `c` (m x n): [`gemm_packed`] after packing A.
pub(crate) fn gemm<T: Float>(
    ctx: &Context,
    a: &Operand<'_, T>,
    b: &Operand<'_, T>,
    c: &mut Output<'_, T>,
    tiles: Tiles,
) -> Result<(), LanceError> {
    gemm_packed(ctx, &PackedA::new(ctx, a)?, &Right::Strided(*b), c, tiles)
}

/// `c = a b` for a packed `a` (m x k), `b` (k x n), `c` (m x n).
///
/// B is copied block by block by the thread that uses it, so B should be the larger operand (it
/// is read once). Threads split the larger of the row-panel and column-block counts. With
/// `Tiles::Upper` the tiles wholly below the diagonal are left untouched.
pub(crate) fn gemm_packed<T: Float>(
    ctx: &Context,
    a: &PackedA<T>,
    right: &Right<'_, T>,
    c: &mut Output<'_, T>,
    tiles: Tiles,
) -> Result<(), LanceError> {
    let (m, k) = (a.m, a.k);
    let (b_k, n) = match right {
        Right::Strided(b) => {
            check_bounds(b.base, b.rows, b.cols, b.data.len(), "B")?;
            (b.rows.len(), b.cols.len())
        }
        Right::TransposeOf(p) => (p.k, p.m),
    };
    if b_k != k || c.rows.len() != m || c.cols.len() != n {
        return Err(LanceError::Invalid(format!(
            "internal error: gemm shapes ({m}x{k}) ({b_k}x{n}) -> ({}x{})",
            c.rows.len(),
            c.cols.len()
        )));
    }
    check_bounds(c.base, c.rows, c.cols, c.data.len(), "C")?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    let kernel = a.kernel;
    let (mr, nr) = (kernel.mr, kernel.nr);
    let (row_panels, col_panels) = (m.div_ceil(mr), n.div_ceil(nr));
    // B is copied block by block (BLOCK_PANELS column panels, row-major, rows `ldb` apart) so
    // that its rows are read in long runs; full tiles of C with evenly spaced rows and
    // consecutive columns are written in place.
    let c_step = common_step(c.rows);
    let c_in_place = |col: usize| c.cols.len() >= col + nr && consecutive(&c.cols[col..col + nr]);
    let out = c.data;
    let c = &*c;
    let col_blocks = col_panels.div_ceil(BLOCK_PANELS);
    let by_rows = row_panels > col_blocks;
    let units = if by_rows { row_panels } else { col_blocks };
    let threads = threads_for(
        m.saturating_mul(n).saturating_mul(k.max(1)) / 8,
        ctx.threads,
    );
    for_ranges(units, threads, 1, |start, end| {
        let (rows, blocks) = if by_rows {
            (start..end, 0..col_blocks)
        } else {
            (0..row_panels, start..end)
        };
        let ldb = BLOCK_PANELS * nr;
        let mut b_block = vec![T::ZERO; DEPTH_BLOCK.min(k.max(1)) * ldb];
        let mut tile = vec![T::ZERO; mr * nr];
        // Depth blocks outermost: the packed A block stays in cache across column panels.
        for (block, depth) in (0..k.max(1)).step_by(DEPTH_BLOCK).enumerate() {
            let depth_len = DEPTH_BLOCK.min(k - depth.min(k));
            for cb in blocks.clone() {
                let first_col = cb * ldb;
                let width = ldb.min(n - first_col);
                match right {
                    Right::Strided(b) => {
                        pack_b_block(b, depth, depth_len, first_col, width, ldb, &mut b_block)
                    }
                    Right::TransposeOf(p) => {
                        p.transposed_block(depth, depth_len, first_col, width, ldb, &mut b_block)
                    }
                }
                for cp in first_col / nr..(first_col + width).div_ceil(nr) {
                    let b_ptr = b_block[cp * nr - first_col..].as_ptr();
                    let in_place = c_step.is_some() && c_in_place(cp * nr);
                    for rp in rows.clone() {
                        if tiles == Tiles::Upper && rp * mr > cp * nr + nr - 1 {
                            continue;
                        }
                        let a_panel = &a.data[depth * row_panels * mr + rp * mr * depth_len..];
                        let accumulate = block > 0 || c.accumulate;
                        // SAFETY (the unsafe calls below): the A panel holds depth_len * mr
                        // elements, the B panel depth_len rows `ldb` apart of nr elements
                        // (inside b_block); C's
                        // tile is the scratch tile, or in place mr full rows `ldc` apart of nr
                        // consecutive elements of c; tiles are disjoint between threads and c's
                        // offsets distinct; the instruction set is supported (Context::new).
                        let direct = in_place && (rp + 1) * mr <= m;
                        let (c_ptr, ldc) = if direct {
                            let first = c.base + c.rows[rp * mr] + c.cols[cp * nr];
                            (unsafe { out.at(0).offset(first) }, c_step.unwrap_or(0))
                        } else {
                            (tile.as_mut_ptr(), nr as isize)
                        };
                        let (a_ptr, ldb) = (a_panel.as_ptr(), ldb as isize);
                        unsafe {
                            (kernel.run)(
                                depth_len,
                                a_ptr,
                                b_ptr,
                                ldb,
                                c_ptr,
                                ldc,
                                accumulate && direct,
                            )
                        };
                        if !direct {
                            unsafe { store_tile(c, &tile, rp * mr, cp * nr, mr, nr, accumulate) };
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

/// `B_l` of [`gemm_batched`]: `batches` matrices (k x cols) of one buffer, element (p, j) of
/// `B_l` at `base + l * batch_stride + p * row_stride + j` (columns contiguous).
pub(crate) struct Batched<'a, T> {
    pub data: &'a [T],
    pub base: isize,
    pub batches: usize,
    pub batch_stride: isize,
    pub row_stride: isize,
    pub cols: usize,
}

/// `out[l] = a B_l` for every batch l, `out` row-major (batches, m, cols), reading each `B_l` in
/// place (no tables, no packing but for the last partial panel of each batch) and writing full
/// tiles in place. Threads split the batches. This is the products' fast path when the
/// contracted mode is followed by a contiguous run of elements (specs/kernels.md#rust).
pub(crate) fn gemm_batched<T: Float>(
    ctx: &Context,
    a: &PackedA<T>,
    b: &Batched<'_, T>,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let (m, k, n) = (a.m, a.k, b.cols);
    out.check_len(b.batches * m * n)?;
    if b.batches * m * n == 0 {
        return Ok(());
    }
    // Every element of every B_l is in the buffer (the extremes of the affine offsets).
    let reach = |len: usize, stride: isize| (len.max(1) as isize - 1) * stride;
    let corners = [
        reach(b.batches, b.batch_stride),
        reach(k, b.row_stride),
        n as isize - 1,
    ];
    let low = b.base + corners.iter().filter(|&&c| c < 0).sum::<isize>();
    let high = b.base + corners.iter().filter(|&&c| c > 0).sum::<isize>();
    if k > 0 && (low < 0 || high as usize >= b.data.len()) {
        return Err(LanceError::Invalid(
            "internal error: gemm_batched reads out of bounds".into(),
        ));
    }
    let kernel = a.kernel;
    let (mr, nr) = (kernel.mr, kernel.nr);
    let row_panels = m.div_ceil(mr);
    let threads = threads_for(b.batches.saturating_mul(m * n * k) / 8, ctx.threads);
    for_ranges(b.batches, threads, 1, |start, end| {
        let mut tail = vec![T::ZERO; k * nr];
        let mut tile = vec![T::ZERO; mr * nr];
        for l in start..end {
            let source = b.base + l as isize * b.batch_stride;
            for col in (0..n).step_by(nr) {
                let width = nr.min(n - col);
                let (b_ptr, ldb) = if width == nr || k == 0 {
                    // SAFETY: `source + col` is an element of b (bounds checked above) or, with
                    // k = 0, never read.
                    (
                        b.data.as_ptr().wrapping_offset(source + col as isize),
                        b.row_stride,
                    )
                } else {
                    for p in 0..k {
                        let from = (source + p as isize * b.row_stride + col as isize) as usize;
                        tail[p * nr..p * nr + width].copy_from_slice(&b.data[from..from + width]);
                        tail[p * nr + width..(p + 1) * nr].fill(T::ZERO);
                    }
                    (tail.as_ptr(), nr as isize)
                };
                for rp in 0..row_panels {
                    let rows = mr.min(m - rp * mr);
                    let first = (l * m + rp * mr) * n + col;
                    let direct = rows == mr && width == nr;
                    let (c_ptr, ldc) = if direct {
                        (unsafe { out.at(first) }, n as isize)
                    } else {
                        (tile.as_mut_ptr(), nr as isize)
                    };
                    for (block, depth) in (0..k.max(1)).step_by(DEPTH_BLOCK).enumerate() {
                        let depth_len = DEPTH_BLOCK.min(k - depth.min(k));
                        let a_panel =
                            a.data[depth * row_panels * mr + rp * mr * depth_len..].as_ptr();
                        let b_block = b_ptr.wrapping_offset(depth as isize * ldb);
                        // SAFETY: the A panel holds depth_len * mr elements; B's block is
                        // depth_len rows `ldb` apart of nr elements (in b, or the tail buffer);
                        // C is the scratch tile or a full tile of mr rows `n` apart inside batch
                        // l's rows of `out`, which only this thread writes; the instruction set
                        // is supported (Context::new).
                        unsafe {
                            (kernel.run)(depth_len, a_panel, b_block, ldb, c_ptr, ldc, block > 0)
                        };
                    }
                    if !direct {
                        for i in 0..rows {
                            // SAFETY: the valid part of the tile, in batch l's rows of `out`.
                            unsafe { out.copy_from(first + i * n, &tile[i * nr..i * nr + width]) };
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

/// Columns `col..col + width` of B at depths `depth..depth + len` into `block`, row-major with
/// rows `ld` apart (the rest of each row zero): runs of consecutive columns are copied as
/// slices, scattered columns one by one.
fn pack_b_block<T: Float>(
    b: &Operand<'_, T>,
    depth: usize,
    len: usize,
    col: usize,
    width: usize,
    ld: usize,
    block: &mut [T],
) {
    let cols = &b.cols[col..col + width];
    let mut runs: Vec<(usize, usize)> = Vec::new(); // (first column, length)
    for (j, &c) in cols.iter().enumerate() {
        match runs.last_mut() {
            Some((first, length)) if cols[*first] + *length as isize == c => *length += 1,
            _ => runs.push((j, 1)),
        }
    }
    let by_runs = runs.len() * 8 <= width; // runs of 8 or more on average
    for p in 0..len {
        let row = &mut block[p * ld..(p + 1) * ld];
        let offset = b.base + b.rows[depth + p];
        if by_runs {
            for &(first, length) in &runs {
                let start = (offset + cols[first]) as usize;
                row[first..first + length].copy_from_slice(&b.data[start..start + length]);
            }
        } else {
            for (value, &c) in row.iter_mut().zip(cols) {
                // SAFETY: b passed `check_bounds`, so every (row, column) offset is in `data`.
                *value = unsafe { *b.data.get_unchecked((offset + c) as usize) };
            }
        }
        row[width..].fill(T::ZERO);
    }
}

/// Writes (or adds, with `accumulate`) the valid part of a tile at (row, col) into C.
///
/// Safety: no other thread touches the tile's elements; its elements of C not yet written are
/// only written (`accumulate` reads what an earlier depth block wrote).
#[allow(clippy::too_many_arguments)]
unsafe fn store_tile<T: Float>(
    c: &Output<'_, T>,
    tile: &[T],
    row: usize,
    col: usize,
    mr: usize,
    nr: usize,
    accumulate: bool,
) {
    let rows = &c.rows[row..(row + mr).min(c.rows.len())];
    let cols = &c.cols[col..(col + nr).min(c.cols.len())];
    let contiguous = consecutive(cols);
    for (i, &r) in rows.iter().enumerate() {
        let values = &tile[i * nr..i * nr + cols.len()];
        // SAFETY: the elements are in bounds (checked by gemm) and owned by this tile.
        unsafe {
            if contiguous && !accumulate {
                c.data.copy_from((c.base + r + cols[0]) as usize, values);
                continue;
            }
            for (&value, &q) in values.iter().zip(cols) {
                let place = (c.base + r + q) as usize;
                let sum = if accumulate {
                    c.data.read(place) + value
                } else {
                    value
                };
                c.data.write(place, sum);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Isa;

    /// C = A B straight from the definition, in f64.
    pub(crate) fn naive(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        c
    }

    fn values(len: usize, seed: usize) -> Vec<f64> {
        (0..len)
            .map(|v| (((v + seed) * 7919 % 23) as f64 - 11.0) / 8.0)
            .collect()
    }

    #[test]
    fn every_path_and_thread_count_matches_the_definition() {
        // Sizes around the tile and depth-block edges; small dyadic values keep sums exact.
        for (m, k, n) in [(1, 1, 1), (5, 3, 7), (13, 257, 35), (64, 300, 9), (3, 0, 4)] {
            let (a, b) = (values(m * k, 1), values(k * n, 2));
            let want = naive(&a, &b, m, k, n);
            for isa in Isa::available() {
                for threads in [1, 3] {
                    let ctx = Context::new(isa, threads).unwrap();
                    // A given transposed in memory, to exercise non-unit strides.
                    let a_t: Vec<f64> = (0..k * m).map(|q| a[(q % m) * k + q / m]).collect();
                    let a_op = Operand {
                        data: &a_t,
                        base: 0,
                        rows: &axis(0, m, 1),
                        cols: &axis(0, k, m as isize),
                    };
                    let b_op = Operand {
                        data: &b,
                        base: 0,
                        rows: &axis(0, k, n as isize),
                        cols: &axis(0, n, 1),
                    };
                    let mut c = vec![f64::NAN; m * n];
                    let mut out = Output {
                        data: Out::new(&mut c),
                        base: 0,
                        rows: &axis(0, m, n as isize),
                        cols: &axis(0, n, 1),
                        accumulate: false,
                    };
                    gemm(&ctx, &a_op, &b_op, &mut out, Tiles::All).unwrap();
                    assert_eq!(c, want, "{isa:?} threads={threads} {m}x{k}x{n}");
                }
            }
        }
    }

    #[test]
    fn grid_enumerates_row_major() {
        assert_eq!(grid(1, &[2, 3], &[10, -1]), vec![1, 0, -1, 11, 10, 9]);
        assert_eq!(grid(5, &[], &[]), vec![5]);
    }

    #[test]
    fn out_of_bounds_operands_are_errors() {
        let data = [0.0_f32; 4];
        let a = Operand {
            data: &data,
            base: 0,
            rows: &axis(0, 2, 2),
            cols: &axis(0, 3, 1),
        };
        let b = Operand {
            data: &data,
            base: 0,
            rows: &axis(0, 3, 1),
            cols: &axis(0, 1, 1),
        };
        let mut c = [0.0_f32; 2];
        let mut out = Output {
            data: Out::new(&mut c),
            base: 0,
            rows: &axis(0, 2, 1),
            cols: &axis(0, 1, 1),
            accumulate: false,
        };
        let ctx = Context::new(Isa::Scalar, 1).unwrap();
        assert!(gemm(&ctx, &a, &b, &mut out, Tiles::All).is_err());
    }
}
