//! The im2col unfolding of a conv input (specs/conv.md#im2col), the engine's conv layout.

use crate::out::Out;
use crate::parallel::{self, for_ranges};
use crate::{Context, LanceError, View4};

/// A 2-D convolution's window geometry; each field is (height, width).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub padding: [usize; 2],
    pub dilation: [usize; 2],
    pub groups: usize,
}

impl ConvGeometry {
    /// (H', W') for an input of spatial size `hw`, after checking every field.
    pub fn output_hw(&self, channels: usize, hw: [usize; 2]) -> Result<[usize; 2], LanceError> {
        for (name, value, minimum) in [
            ("kernel", self.kernel, 1),
            ("stride", self.stride, 1),
            ("dilation", self.dilation, 1),
        ] {
            if value.iter().any(|&v| v < minimum) {
                return Err(LanceError::Invalid(format!(
                    "{name} must be at least {minimum}, got {value:?}"
                )));
            }
        }
        if self.groups == 0 || !channels.is_multiple_of(self.groups) {
            return Err(LanceError::Invalid(format!(
                "groups must divide the {channels} input channels, got {}",
                self.groups
            )));
        }
        let mut out = [0; 2];
        for d in 0..2 {
            let span = self.dilation[d]
                .checked_mul(self.kernel[d] - 1)
                .ok_or(LanceError::SizeOverflow)?
                + 1;
            let padded = hw[d]
                .checked_add(2 * self.padding[d])
                .ok_or(LanceError::SizeOverflow)?;
            if padded < span {
                return Err(LanceError::Invalid(format!(
                    "the padded input ({padded}) is smaller than the dilated kernel ({span}) along axis {}",
                    d + 2
                )));
            }
            out[d] = (padded - span) / self.stride[d] + 1;
        }
        Ok(out)
    }

    /// The im2col shape (G, N*H'*W', kh*kw*C/G) for an input of `shape` (N, C, H, W).
    pub fn im2col_shape(&self, shape: [usize; 4]) -> Result<[usize; 3], LanceError> {
        let [oh, ow] = self.output_hw(shape[1], [shape[2], shape[3]])?;
        let rows = [shape[0], oh, ow]
            .iter()
            .try_fold(1_usize, |a, &b| a.checked_mul(b));
        let cols = [self.kernel[0], self.kernel[1], shape[1] / self.groups]
            .iter()
            .try_fold(1_usize, |a, &b| a.checked_mul(b));
        match (rows, cols) {
            (Some(rows), Some(cols))
                if rows
                    .checked_mul(cols)
                    .and_then(|e| e.checked_mul(self.groups))
                    .is_some() =>
            {
                Ok([self.groups, rows, cols])
            }
            _ => Err(LanceError::SizeOverflow),
        }
    }
}

/// Writes `cols[g, (n, h', w'), (i, j, c)] = x_pad[n, g*C/G + c, s*h' + d*i, s*w' + d*j]`
/// (zero outside x) into `out`, row-major of shape `geometry.im2col_shape(x.shape())`.
pub fn im2col<T: Copy + Default + Send + Sync>(
    ctx: &Context,
    x: &View4<'_, T>,
    geometry: &ConvGeometry,
    out: Out<'_, T>,
) -> Result<(), LanceError> {
    let [groups, rows, cols] = geometry.im2col_shape(x.shape)?;
    let expected = groups * rows * cols;
    out.check_len(expected)?;
    if expected == 0 {
        return Ok(());
    }
    let [n, c, h, w] = x.shape;
    let [oh, ow] = geometry.output_hw(c, [h, w])?;
    let ([kh, kw], [sh, sw], [ph, pw], [dh, dw]) = (
        geometry.kernel,
        geometry.stride,
        geometry.padding,
        geometry.dilation,
    );
    let (padded_h, padded_w) = (h + 2 * ph, w + 2 * pw);
    let channels = c / groups;
    // With unit width dilation and one group, the taps j of a row i are one contiguous run.
    let run = if dw == 1 && groups == 1 {
        kw * c
    } else {
        channels
    };
    let threads = parallel::threads_for(expected, ctx.threads);
    for_ranges(n, threads, 1, |start, end| {
        // One sample, zero-padded and channels-last: every tap's channels are contiguous.
        let mut sample = vec![T::default(); padded_h * padded_w * c];
        for s in start..end {
            // An input of width 0 leaves only padding (and `w - 1` below would underflow).
            let channels_to_copy = if w == 0 { 0 } else { c };
            for ch in 0..channels_to_copy {
                for hh in 0..h {
                    let from = x.offset as isize
                        + s as isize * x.strides[0]
                        + ch as isize * x.strides[1]
                        + hh as isize * x.strides[2];
                    let row = ((hh + ph) * padded_w + pw) * c + ch;
                    let line = &mut sample[row..row + (w - 1) * c + 1];
                    for ww in 0..w {
                        // SAFETY: the view checked that every element offset is inside its data.
                        line[ww * c] = unsafe {
                            *x.data
                                .get_unchecked((from + ww as isize * x.strides[3]) as usize)
                        };
                    }
                }
            }
            for g in 0..groups {
                for y in 0..oh {
                    for z in 0..ow {
                        let row_start = (g * rows + (s * oh + y) * ow + z) * cols;
                        for i in 0..kh {
                            for j in (0..kw).step_by(run / channels) {
                                let from = ((y * sh + i * dh) * padded_w + z * sw + j * dw) * c
                                    + g * channels;
                                // SAFETY: rows of different samples are disjoint, so each thread
                                // writes only its own samples' rows, inside `out`.
                                let to = row_start + (i * kw + j) * channels;
                                unsafe { out.copy_from(to, &sample[from..from + run]) };
                            }
                        }
                    }
                }
            }
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Isa;

    #[test]
    fn matches_the_definition_with_padding_stride_dilation_and_groups() {
        let shape = [2, 4, 5, 6];
        let x: Vec<f32> = (0..240).map(|v| v as f32).collect();
        let view = View4::c_contiguous(&x, shape).unwrap();
        let geometry = ConvGeometry {
            kernel: [2, 3],
            stride: [2, 1],
            padding: [1, 2],
            dilation: [2, 1],
            groups: 2,
        };
        let [groups, rows, cols] = geometry.im2col_shape(shape).unwrap();
        let [oh, ow] = geometry.output_hw(4, [5, 6]).unwrap();
        assert_eq!([oh, ow], [3, 8]);
        for threads in [1, 2] {
            let ctx = Context::new(Isa::Scalar, threads).unwrap();
            let mut out = vec![-1.0; groups * rows * cols];
            im2col(&ctx, &view, &geometry, Out::new(&mut out)).unwrap();
            for g in 0..2 {
                for s in 0..2 {
                    for y in 0..oh {
                        for z in 0..ow {
                            for i in 0..2 {
                                for j in 0..3 {
                                    for ch in 0..2 {
                                        let (hh, ww) =
                                            ((y * 2 + i * 2) as isize - 1, (z + j) as isize - 2);
                                        let want = if (0..5).contains(&hh) && (0..6).contains(&ww) {
                                            x[((s * 4 + g * 2 + ch) * 5 + hh as usize) * 6
                                                + ww as usize]
                                        } else {
                                            0.0
                                        };
                                        let row = s * oh * ow + y * ow + z;
                                        assert_eq!(
                                            out[(g * rows + row) * cols + (i * 3 + j) * 2 + ch],
                                            want
                                        );
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_geometry_is_an_error() {
        let g = ConvGeometry {
            kernel: [3, 3],
            stride: [1, 0],
            padding: [0, 0],
            dilation: [1, 1],
            groups: 1,
        };
        assert!(
            g.output_hw(1, [4, 4])
                .unwrap_err()
                .to_string()
                .starts_with("stride must be at least 1")
        );
        let g = ConvGeometry {
            stride: [1, 1],
            groups: 3,
            ..g
        };
        assert!(
            g.output_hw(4, [4, 4])
                .unwrap_err()
                .to_string()
                .contains("groups must divide")
        );
        let g = ConvGeometry {
            groups: 1,
            kernel: [5, 1],
            ..g
        };
        assert!(
            g.output_hw(4, [4, 4])
                .unwrap_err()
                .to_string()
                .contains("smaller than the dilated kernel")
        );
    }
}
