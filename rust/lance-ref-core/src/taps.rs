//! Kernel taps: for each tap `(i, j)` of a convolution, the outputs whose window it reads inside
//! the input (specs/conv.md#direct), so that kernels sum over the taps with no padded copy.

use crate::ConvGeometry;

/// Along one axis, the outputs that one kernel tap reaches inside the input: outputs
/// `first..first + count`, reading input `input + stride * k` for output `first + k`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span {
    pub(crate) first: usize,
    pub(crate) count: usize,
    pub(crate) input: usize,
}

/// The outputs `o < out` whose tap `index` reads `stride * o + dilation * index - padding` inside
/// `0..size`, or None if none does.
fn tap_span(
    size: usize,
    out: usize,
    stride: usize,
    padding: usize,
    dilation: usize,
    index: usize,
) -> Option<Span> {
    let (size, out, stride) = (size as isize, out as isize, stride as isize);
    let offset = (dilation * index) as isize - padding as isize;
    let first = (-offset.div_euclid(stride)).max(0); // ceil(-offset / stride)
    let last = (out - 1).min((size - 1 - offset).div_euclid(stride));
    (last >= first).then(|| Span {
        first: first as usize,
        count: (last - first + 1) as usize,
        input: (stride * first + offset) as usize,
    })
}

/// A kernel tap `(i, j)` with its row and column spans.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tap {
    pub(crate) i: usize,
    pub(crate) j: usize,
    pub(crate) rows: Span,
    pub(crate) cols: Span,
}

/// Every tap of `geometry` that reads inside an input of spatial size `hw` for outputs `out_hw`.
pub(crate) fn taps(geometry: &ConvGeometry, hw: [usize; 2], out_hw: [usize; 2]) -> Vec<Tap> {
    let mut taps = Vec::new();
    for i in 0..geometry.kernel[0] {
        for j in 0..geometry.kernel[1] {
            let span = |d: usize, index: usize| {
                tap_span(
                    hw[d],
                    out_hw[d],
                    geometry.stride[d],
                    geometry.padding[d],
                    geometry.dilation[d],
                    index,
                )
            };
            if let (Some(rows), Some(cols)) = (span(0, i), span(1, j)) {
                taps.push(Tap { i, j, rows, cols });
            }
        }
    }
    taps
}
