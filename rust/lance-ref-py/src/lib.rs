//! The extension module `lance_ref._core`: a thin PyO3 layer over `lance-ref-core`.
//!
//! Each function checks its arguments (a `TypeError` for a wrong dtype, a `ValueError` naming the
//! argument for a wrong shape), views the NumPy inputs in place (any strides), releases the GIL
//! while the `lance-ref-core` kernel runs, and returns a new C-contiguous array.

use lance_ref_core::{
    Context, ConvGeometry, Float, Isa, LanceError, Out, PoolGeometry, TapIndex, View, View2, View4,
};
use numpy::prelude::*;
use numpy::{Element, PyArrayDyn, PyReadonlyArrayDyn, PyReadwriteArrayDyn, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyInt, PySequence};
use std::mem::MaybeUninit;

fn value_error(err: LanceError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

/// The float type of the array argument `name`: `true` for float32, `false` for float64.
fn is_f32(x: &Bound<'_, PyAny>, name: &str) -> PyResult<bool> {
    let py = x.py();
    let Ok(array) = x.cast::<PyUntypedArray>() else {
        let type_name = x.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "{name} must be a numpy.ndarray, got {type_name}"
        )));
    };
    let dtype = array.dtype();
    if dtype.is_equiv_to(&f32::get_dtype(py)) {
        Ok(true)
    } else if dtype.is_equiv_to(&f64::get_dtype(py)) {
        Ok(false)
    } else {
        Err(PyTypeError::new_err(format!(
            "{name} must have dtype float32 or float64 (native byte order), got {dtype}"
        )))
    }
}

/// `x` as a read-only array of `T` with `ndim` dimensions. Arrays whose strides are not whole
/// elements or whose data is misaligned (fields of structured arrays) are copied first.
fn readonly<'py, T: Element>(
    x: &Bound<'py, PyAny>,
    name: &str,
    ndim: usize,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let Ok(array) = x.cast::<PyArrayDyn<T>>() else {
        let dtype = x
            .cast::<PyUntypedArray>()
            .map(|a| a.dtype().to_string())
            .unwrap_or_default();
        return Err(PyTypeError::new_err(format!(
            "{name} has dtype {dtype} but the first array argument has {}; all arrays must share one dtype",
            std::any::type_name::<T>()
                .replace("f32", "float32")
                .replace("f64", "float64")
        )));
    };
    if array.ndim() != ndim {
        return Err(PyValueError::new_err(format!(
            "{name} must be a {ndim}-D array, got shape {:?}",
            array.shape()
        )));
    }
    let itemsize = size_of::<T>() as isize;
    let whole = array
        .shape()
        .iter()
        .zip(array.strides())
        .all(|(&n, &s)| n == 1 || s % itemsize == 0);
    if !whole || !array.data().is_aligned() {
        return readonly(&x.call_method0("copy")?, name, ndim);
    }
    Ok(array.try_readonly()?)
}

/// A strided view of a read-only array (`ndim` = N).
fn view<'a, T: Element, const N: usize>(
    array: &'a PyReadonlyArrayDyn<'_, T>,
) -> PyResult<View<'a, T, N>> {
    let shape: [usize; N] = std::array::from_fn(|d| array.shape()[d]);
    let itemsize = size_of::<T>() as isize;
    // A length-1 axis is never stepped along and NumPy may give it any stride: use 0.
    let strides: [isize; N] = std::array::from_fn(|d| {
        if shape[d] == 1 {
            0
        } else {
            array.strides()[d] / itemsize
        }
    });
    if lance_ref_core::numel(shape).map_err(value_error)? == 0 {
        return View::new(&[], 0, shape, strides).map_err(value_error);
    }
    let (low, high) = lance_ref_core::offset_range(shape, strides).map_err(value_error)?;
    // SAFETY: the array is non-empty, so NumPy guarantees all its elements lie in one live
    // allocation; `low..=high` (relative to element [0, ..], where `data()` points) are the
    // lowest and highest of them. The pointer is aligned (checked in `readonly`) and the
    // read-only borrow keeps Rust writers away while the view lives.
    let data =
        unsafe { std::slice::from_raw_parts(array.data().offset(low), (high - low + 1) as usize) };
    View::new(data, low.unsigned_abs(), shape, strides).map_err(value_error)
}

/// Runs `kernel` on a fresh array of `shape` without the GIL and returns the array.
///
/// The array comes from `numpy.empty`, uninitialised: every kernel writes its whole result
/// (through `lance_ref_core::Out`, raw writes only), so zeroing it first would only cost a pass over
/// memory. NumPy's allocator also gives large arrays huge pages and reuses freed ones; a failed
/// allocation is a `MemoryError`, a shape whose size overflows a `ValueError`.
fn run<'py, T: Float + Element>(
    py: Python<'py>,
    shape: &[usize],
    kernel: impl FnOnce(&Context, Out<'_, T>) -> Result<(), LanceError> + Send,
) -> PyResult<Bound<'py, PyAny>> {
    let [array] = run_outputs::<T, 1>(py, [shape], |ctx, [out]| kernel(ctx, out))?;
    Ok(array)
}

/// [`run`] for a kernel with `K` results, of `shapes`.
fn run_outputs<'py, T: Float + Element, const K: usize>(
    py: Python<'py>,
    shapes: [&[usize]; K],
    kernel: impl FnOnce(&Context, [Out<'_, T>; K]) -> Result<(), LanceError> + Send,
) -> PyResult<[Bound<'py, PyAny>; K]> {
    let ctx = Context::from_env().map_err(value_error)?;
    let arrays = shapes
        .iter()
        .map(|shape| empty::<T>(py, shape))
        .collect::<PyResult<Vec<_>>>()?;
    {
        // held so that nothing else borrows the arrays while the kernel writes them
        let mut writables = arrays
            .iter()
            .map(|a| a.try_readwrite())
            .collect::<Result<Vec<_>, _>>()?;
        let mut outs = writables.iter_mut().map(out_of);
        let outs: [Out<'_, T>; K] = std::array::from_fn(|_| outs.next().expect("one per shape"));
        py.detach(|| kernel(&ctx, outs)).map_err(value_error)?;
    }
    let mut arrays = arrays.into_iter().map(Bound::into_any);
    Ok(std::array::from_fn(|_| {
        arrays.next().expect("one array per shape")
    }))
}

/// A fresh C-contiguous array of `shape` (NumPy's `empty`, uninitialised): a `ValueError` if its
/// size overflows, a `MemoryError` if it cannot be allocated.
fn empty<'py, E: Element>(py: Python<'py>, shape: &[usize]) -> PyResult<Bound<'py, PyArrayDyn<E>>> {
    let fits = shape
        .iter()
        .try_fold(size_of::<E>(), |bytes, &dim| bytes.checked_mul(dim))
        .is_some_and(|bytes| bytes <= isize::MAX as usize);
    if !fits {
        return Err(PyValueError::new_err(format!(
            "the result's shape {shape:?} overflows the address space"
        )));
    }
    Ok(py
        .import("numpy")?
        .call_method1("empty", (shape.to_vec(), E::get_dtype(py)))?
        .cast_into::<PyArrayDyn<E>>()?)
}

/// Where a kernel writes a fresh array from [`empty`], borrowed exclusively by `writable`.
fn out_of<'a, E: Element + Copy>(writable: &'a mut PyReadwriteArrayDyn<'_, E>) -> Out<'a, E> {
    // SAFETY: a fresh C-contiguous array (NumPy's `empty`) whose exclusive borrow outlives the
    // `Out`; viewed as MaybeUninit, no value is read.
    let buffer = unsafe {
        std::slice::from_raw_parts_mut(
            writable
                .as_array_mut()
                .as_mut_ptr()
                .cast::<MaybeUninit<E>>(),
            writable.len(),
        )
    };
    Out::uninit(buffer)
}

/// The C values of the 1-D array `x` (one per channel), copied.
fn channel_values<T: Float + Element>(
    x: &Bound<'_, PyAny>,
    name: &str,
    channels: usize,
) -> PyResult<Vec<T>> {
    let array = readonly::<T>(x, name, 1)?;
    let values: Vec<T> = array.as_array().iter().copied().collect();
    if values.len() != channels {
        return Err(PyValueError::new_err(format!(
            "{name} must have {channels} values (one per channel), got {}",
            values.len()
        )));
    }
    Ok(values)
}

/// The C values of an optional 1-D array argument (None stays None).
fn optional_channel_values<T: Float + Element>(
    x: &Bound<'_, PyAny>,
    name: &str,
    channels: usize,
) -> PyResult<Option<Vec<T>>> {
    if x.is_none() {
        Ok(None)
    } else {
        channel_values(x, name, channels).map(Some)
    }
}

/// The Python int `value` if it lies in `low..=high`; a `ValueError` naming `name` otherwise
/// (also for ints too large for 64 bits, which PyO3 alone reports as `OverflowError`).
fn int_in(value: &Bound<'_, PyAny>, name: &str, low: i64, high: i64) -> PyResult<i64> {
    let bounds = || format!("{name} must be an int in {low}..={high}, got {value}");
    match value.extract::<i64>() {
        Ok(v) if (low..=high).contains(&v) => Ok(v),
        Ok(_) => Err(PyValueError::new_err(bounds())),
        Err(_) if value.is_instance_of::<PyInt>() => Err(PyValueError::new_err(bounds())),
        Err(err) => Err(err),
    }
}

fn check_mode(mode: &Bound<'_, PyAny>, ndim: usize) -> PyResult<usize> {
    let outside =
        || PyValueError::new_err(format!("mode must satisfy 0 <= mode < {ndim}, got {mode}"));
    let value = int_in(mode, "mode", 0, ndim as i64 - 1).map_err(|err| {
        if err.is_instance_of::<PyValueError>(mode.py()) {
            outside()
        } else {
            err
        }
    })?;
    Ok(value as usize)
}

/// A sequence of `N` ints, each at least `low` (`name[i]` in errors).
fn ints<const N: usize>(value: &Bound<'_, PyAny>, name: &str, low: i64) -> PyResult<[usize; N]> {
    let sequence = value.cast::<PySequence>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name} must be a sequence of {N} ints, got {value}"
        ))
    })?;
    if sequence.len()? != N {
        return Err(PyValueError::new_err(format!(
            "{name} must hold {N} ints, got {value}"
        )));
    }
    let mut out = [0; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = int_in(
            &sequence.get_item(i)?,
            &format!("{name}[{i}]"),
            low,
            i64::MAX,
        )? as usize;
    }
    Ok(out)
}

/// Calls `$body` with `T` bound to f32 or f64, after the dtype of the array `$first`.
macro_rules! by_dtype {
    ($first:expr, $name:expr, |$t:ident| $body:expr) => {{
        if is_f32($first, $name)? {
            type $t = f32;
            $body
        } else {
            type $t = f64;
            $body
        }
    }};
}

/// Mode-n unfolding X_(n) of a 4-D array (specs/kernels.md#unfold):
/// np.moveaxis(x, mode, 0).reshape(x.shape[mode], -1).
#[pyfunction]
fn unfold<'py>(x: &Bound<'py, PyAny>, mode: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let array = readonly::<T>(x, "x", 4)?;
        let mode = check_mode(mode, 4)?;
        let x = view::<T, 4>(&array)?;
        let (rows, cols) = lance_ref_core::unfolded_shape(x.shape(), mode).map_err(value_error)?;
        run::<T>(py, &[rows, cols], |ctx, out| {
            lance_ref_core::unfold(ctx, &x, mode, out)
        })
    })
}

/// The inverse of `unfold`: the 4-D array of `shape` whose mode-`mode` unfolding is `m`
/// (specs/kernels.md#fold).
#[pyfunction]
fn fold<'py>(
    m: &Bound<'py, PyAny>,
    mode: &Bound<'py, PyAny>,
    shape: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = m.py();
    by_dtype!(m, "m", |T| {
        let array = readonly::<T>(m, "m", 2)?;
        let mode = check_mode(mode, 4)?;
        let shape = ints::<4>(shape, "shape", 0)?;
        let m = view::<T, 2>(&array)?;
        run::<T>(py, &shape, |ctx, out| {
            lance_ref_core::fold(ctx, &m, mode, shape, out)
        })
    })
}

/// x x_n M for M of shape (J, I_n) (specs/kernels.md#mode_product).
#[pyfunction]
fn mode_product<'py>(
    x: &Bound<'py, PyAny>,
    matrix: &Bound<'py, PyAny>,
    mode: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let (x_array, m_array) = (
            readonly::<T>(x, "x", 4)?,
            readonly::<T>(matrix, "matrix", 2)?,
        );
        let mode = check_mode(mode, 4)?;
        let (x, m) = (view::<T, 4>(&x_array)?, view::<T, 2>(&m_array)?);
        let mut shape = x.shape();
        shape[mode] = m.shape()[0];
        run::<T>(py, &shape, |ctx, out| {
            lance_ref_core::mode_product(ctx, &x, &m, mode, out)
        })
    })
}

/// The factor arrays of `factors` (a sequence of 4 entries, each None or a 2-D array).
fn factor_arrays<'py, T: Element>(
    factors: &Bound<'py, PyAny>,
) -> PyResult<Vec<Option<PyReadonlyArrayDyn<'py, T>>>> {
    let sequence = factors.cast::<PySequence>().map_err(|_| {
        PyTypeError::new_err("factors must be a sequence of 4 entries (None or 2-D arrays)")
    })?;
    if sequence.len()? != 4 {
        return Err(PyValueError::new_err(format!(
            "factors must hold one entry per mode of a 4-D tensor (4), got {}",
            sequence.len()?
        )));
    }
    (0..4)
        .map(|n| {
            let item = sequence.get_item(n)?;
            if item.is_none() {
                return Ok(None);
            }
            let name = format!("factors[{n}]");
            is_f32(&item, &name)?;
            readonly::<T>(&item, &name, 2).map(Some)
        })
        .collect()
}

fn factor_views<'a, T: Float + Element>(
    arrays: &'a [Option<PyReadonlyArrayDyn<'_, T>>],
) -> PyResult<[Option<View2<'a, T>>; 4]> {
    let mut views = [None; 4];
    for (slot, array) in views.iter_mut().zip(arrays) {
        if let Some(array) = array {
            *slot = Some(view::<T, 2>(array)?);
        }
    }
    Ok(views)
}

/// Tucker core x x_n U_n^T over the modes with a factor (specs/kernels.md#tucker_project).
#[pyfunction]
fn tucker_project<'py>(
    x: &Bound<'py, PyAny>,
    factors: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let (x_array, u_arrays) = (readonly::<T>(x, "x", 4)?, factor_arrays::<T>(factors)?);
        let (x, u) = (view::<T, 4>(&x_array)?, factor_views(&u_arrays)?);
        let shape = lance_ref_core::projected_shape(x.shape(), &u).map_err(value_error)?;
        run::<T>(py, &shape, |ctx, out| {
            lance_ref_core::tucker_project(ctx, &x, &u, out)
        })
    })
}

/// X_hat = core x_n U_n over the modes with a factor (specs/kernels.md#tucker_reconstruct).
#[pyfunction]
fn tucker_reconstruct<'py>(
    core: &Bound<'py, PyAny>,
    factors: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = core.py();
    by_dtype!(core, "core", |T| {
        let (c_array, u_arrays) = (
            readonly::<T>(core, "core", 4)?,
            factor_arrays::<T>(factors)?,
        );
        let (core, u) = (view::<T, 4>(&c_array)?, factor_views(&u_arrays)?);
        let shape = lance_ref_core::reconstructed_shape(core.shape(), &u).map_err(value_error)?;
        run::<T>(py, &shape, |ctx, out| {
            lance_ref_core::tucker_reconstruct(ctx, &core, &u, out)
        })
    })
}

/// Gram matrix X_(n) X_(n)^T of the mode-n unfolding, exactly symmetric (specs/kernels.md#gram).
#[pyfunction]
fn gram<'py>(x: &Bound<'py, PyAny>, mode: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let array = readonly::<T>(x, "x", 4)?;
        let mode = check_mode(mode, 4)?;
        let x = view::<T, 4>(&array)?;
        let size = x.shape()[mode];
        run::<T>(py, &[size, size], |ctx, out| {
            lance_ref_core::gram(ctx, &x, mode, out)
        })
    })
}

/// im2col of a conv input (N, C, H, W): shape (G, N*H'*W', kh*kw*C/G), columns in (i, j, c)
/// order, zero padding (specs/conv.md#im2col).
#[pyfunction]
fn im2col<'py>(
    x: &Bound<'py, PyAny>,
    kernel: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
    groups: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let array = readonly::<T>(x, "x", 4)?;
        let x = view::<T, 4>(&array)?;
        let geometry = ConvGeometry {
            kernel: ints(kernel, "kernel", 1)?,
            stride: ints(stride, "stride", 1)?,
            padding: ints(padding, "padding", 0)?,
            dilation: ints(dilation, "dilation", 1)?,
            groups: int_in(groups, "groups", 1, i64::MAX)? as usize,
        };
        let shape = geometry.im2col_shape(x.shape()).map_err(value_error)?;
        run::<T>(py, &shape, |ctx, out| {
            lance_ref_core::im2col(ctx, &x, &geometry, out)
        })
    })
}

/// The Python argument `groups`, a positive int.
fn groups_of(groups: &Bound<'_, PyAny>) -> PyResult<usize> {
    Ok(int_in(groups, "groups", 1, i64::MAX)? as usize)
}

/// A `ConvGeometry` from the Python arguments (pairs of ints) and `groups`.
fn conv_geometry(
    kernel: [usize; 2],
    stride: &Bound<'_, PyAny>,
    padding: &Bound<'_, PyAny>,
    dilation: &Bound<'_, PyAny>,
    groups: usize,
) -> PyResult<ConvGeometry> {
    Ok(ConvGeometry {
        kernel,
        stride: ints(stride, "stride", 1)?,
        padding: ints(padding, "padding", 0)?,
        dilation: ints(dilation, "dilation", 1)?,
        groups,
    })
}

/// A depthwise convolution (groups = channels) summed over its kernel taps, shape (N, O, H', W')
/// (specs/conv.md#direct); other groupings are a ValueError (the NumPy reference takes them).
#[pyfunction]
fn direct_conv2d<'py>(
    x: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
    groups: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let (x_array, w_array) = (
            readonly::<T>(x, "x", 4)?,
            readonly::<T>(weight, "weight", 4)?,
        );
        let (x, w) = (view::<T, 4>(&x_array)?, view::<T, 4>(&w_array)?);
        let [o, _, kh, kw] = w.shape();
        let geometry = conv_geometry([kh, kw], stride, padding, dilation, groups_of(groups)?)?;
        let [oh, ow] = lance_ref_core::depthwise_output_hw(x.shape(), w.shape(), &geometry)
            .map_err(value_error)?;
        run::<T>(py, &[x.shape()[0], o, oh, ow], |ctx, out| {
            lance_ref_core::depthwise_conv2d(ctx, &x, &w, &geometry, out)
        })
    })
}

/// The VJP of `direct_conv2d` for x, shape (N, C, H, W) with (H, W) = `input_hw`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn direct_conv2d_input_grad<'py>(
    grad: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    input_hw: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
    groups: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = grad.py();
    by_dtype!(grad, "grad", |T| {
        let (g_array, w_array) = (
            readonly::<T>(grad, "grad", 4)?,
            readonly::<T>(weight, "weight", 4)?,
        );
        let (g, w) = (view::<T, 4>(&g_array)?, view::<T, 4>(&w_array)?);
        let [_, _, kh, kw] = w.shape();
        let geometry = conv_geometry([kh, kw], stride, padding, dilation, groups_of(groups)?)?;
        let [h, wd] = ints::<2>(input_hw, "input_hw", 1)?;
        let x_shape = [g.shape()[0], geometry.groups, h, wd];
        run::<T>(py, &x_shape, |ctx, out| {
            lance_ref_core::depthwise_conv2d_input_grad(ctx, &g, &w, x_shape, &geometry, out)
        })
    })
}

/// The VJP of `direct_conv2d` for the weight, shape (O, 1, kh, kw) with (kh, kw) = `kernel`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn direct_conv2d_weight_grad<'py>(
    grad: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    kernel: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
    groups: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = grad.py();
    by_dtype!(grad, "grad", |T| {
        let (g_array, x_array) = (readonly::<T>(grad, "grad", 4)?, readonly::<T>(x, "x", 4)?);
        let (g, x) = (view::<T, 4>(&g_array)?, view::<T, 4>(&x_array)?);
        let geometry = conv_geometry(
            ints(kernel, "kernel", 1)?,
            stride,
            padding,
            dilation,
            groups_of(groups)?,
        )?;
        let w_shape = [g.shape()[1], 1, geometry.kernel[0], geometry.kernel[1]];
        run::<T>(py, &w_shape, |ctx, out| {
            lance_ref_core::depthwise_conv2d_weight_grad(ctx, &g, &x, w_shape, &geometry, out)
        })
    })
}

/// `f` on the workspace of the implicit-GEMM convolutions for input shape `x_shape`: as many
/// zero-padded samples as fit `workspace_bytes` (one at least, the batch at most), in a NumPy
/// array, so that the memory it takes is seen where Python measures a step's memory
/// (tracemalloc).
fn with_padded_workspace<'py, T: Element, R>(
    py: Python<'py>,
    x_shape: [usize; 4],
    padding: [usize; 2],
    workspace_bytes: usize,
    f: impl FnOnce(&mut [T]) -> PyResult<R>,
) -> PyResult<R> {
    let sample = lance_ref_core::padded_workspace_len(x_shape, padding, 1).max(1);
    let samples =
        (workspace_bytes / sample.saturating_mul(size_of::<T>())).clamp(1, x_shape[0].max(1));
    let len = lance_ref_core::padded_workspace_len(x_shape, padding, samples);
    let workspace = empty::<T>(py, &[len])?;
    let mut writable = workspace.try_readwrite()?;
    f(writable.as_slice_mut()?)
}

/// A groups = 1 convolution as one GEMM on the implicit im2col, shape (N, O, H', W')
/// (specs/conv.md#implicit-gemm), padding as many samples at a time as fit `workspace_bytes`.
#[pyfunction]
fn conv2d<'py>(
    x: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
    workspace_bytes: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let (x_array, w_array) = (
            readonly::<T>(x, "x", 4)?,
            readonly::<T>(weight, "weight", 4)?,
        );
        let (x, w) = (view::<T, 4>(&x_array)?, view::<T, 4>(&w_array)?);
        let [o, _, kh, kw] = w.shape();
        let geometry = conv_geometry([kh, kw], stride, padding, dilation, 1)?;
        let [oh, ow] = geometry
            .output_hw(x.shape()[1], [x.shape()[2], x.shape()[3]])
            .map_err(value_error)?;
        with_padded_workspace(
            py,
            x.shape(),
            geometry.padding,
            workspace_bytes,
            |workspace| {
                run::<T>(py, &[x.shape()[0], o, oh, ow], |ctx, out| {
                    lance_ref_core::conv2d(ctx, &x, &w, &geometry, workspace, out)
                })
            },
        )
    })
}

/// The VJP of `conv2d` for x, shape (N, C, H, W) with (H, W) = `input_hw`: one GEMM per kernel
/// tap, added where it lands.
#[pyfunction]
fn conv2d_input_grad<'py>(
    grad: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    input_hw: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = grad.py();
    by_dtype!(grad, "grad", |T| {
        let (g_array, w_array) = (
            readonly::<T>(grad, "grad", 4)?,
            readonly::<T>(weight, "weight", 4)?,
        );
        let (g, w) = (view::<T, 4>(&g_array)?, view::<T, 4>(&w_array)?);
        let [_, c, kh, kw] = w.shape();
        let geometry = conv_geometry([kh, kw], stride, padding, dilation, 1)?;
        let [h, wd] = ints::<2>(input_hw, "input_hw", 1)?;
        let x_shape = [g.shape()[0], c, h, wd];
        run::<T>(py, &x_shape, |ctx, out| {
            lance_ref_core::conv2d_input_grad(ctx, &g, &w, x_shape, &geometry, out)
        })
    })
}

/// The VJP of `conv2d` for the weight, shape (O, C, kh, kw) with (kh, kw) = `kernel`; padding
/// as in `conv2d`.
#[pyfunction]
fn conv2d_weight_grad<'py>(
    grad: &Bound<'py, PyAny>,
    x: &Bound<'py, PyAny>,
    kernel: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
    workspace_bytes: usize,
) -> PyResult<Bound<'py, PyAny>> {
    let py = grad.py();
    by_dtype!(grad, "grad", |T| {
        let (g_array, x_array) = (readonly::<T>(grad, "grad", 4)?, readonly::<T>(x, "x", 4)?);
        let (g, x) = (view::<T, 4>(&g_array)?, view::<T, 4>(&x_array)?);
        let geometry = conv_geometry(ints(kernel, "kernel", 1)?, stride, padding, dilation, 1)?;
        let w_shape = [
            g.shape()[1],
            x.shape()[1],
            geometry.kernel[0],
            geometry.kernel[1],
        ];
        with_padded_workspace(
            py,
            x.shape(),
            geometry.padding,
            workspace_bytes,
            |workspace| {
                run::<T>(py, &w_shape, |ctx, out| {
                    lance_ref_core::conv2d_weight_grad(
                        ctx, &g, &x, w_shape, &geometry, workspace, out,
                    )
                })
            },
        )
    })
}

/// A `PoolGeometry` from the Python arguments (pairs of ints), read as a convolution's windows.
fn pool_geometry(
    kernel: &Bound<'_, PyAny>,
    stride: &Bound<'_, PyAny>,
    padding: &Bound<'_, PyAny>,
    dilation: &Bound<'_, PyAny>,
    out_hw: [usize; 2],
) -> PyResult<PoolGeometry> {
    let windows = conv_geometry(ints(kernel, "kernel", 1)?, stride, padding, dilation, 1)?;
    Ok(PoolGeometry {
        kernel: windows.kernel,
        stride: windows.stride,
        padding: windows.padding,
        dilation: windows.dilation,
        out_hw,
    })
}

/// Max pooling of `x` (N, C, H, W) over the windows of the geometry, whose output size `out_hw`
/// the caller gives (ceil mode): (the maxima (N, C, H', W'), each window's winning tap
/// `i kw + j`, uint8 for at most 256 taps, else uint16) (specs/pool.md#max_pool2d).
#[pyfunction]
fn max_pool2d<'py>(
    x: &Bound<'py, PyAny>,
    kernel: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
    out_hw: &Bound<'py, PyAny>,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let array = readonly::<T>(x, "x", 4)?;
        let x = view::<T, 4>(&array)?;
        let out_hw = ints(out_hw, "out_hw", 1)?;
        let geometry = pool_geometry(kernel, stride, padding, dilation, out_hw)?;
        if geometry.kernel[0] * geometry.kernel[1] <= 1 << 8 {
            pooled::<T, u8>(py, &x, &geometry)
        } else {
            pooled::<T, u16>(py, &x, &geometry)
        }
    })
}

/// [`max_pool2d`] with winning taps of type `I`.
fn pooled<'py, T: Float + Element, I: TapIndex + Element>(
    py: Python<'py>,
    x: &View4<'_, T>,
    geometry: &PoolGeometry,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let [n, c, _, _] = x.shape();
    let shape = [n, c, geometry.out_hw[0], geometry.out_hw[1]];
    let taps = empty::<I>(py, &shape)?;
    let best = {
        let mut writable = taps.try_readwrite()?;
        let taps = out_of(&mut writable);
        run::<T>(py, &shape, |ctx, best| {
            lance_ref_core::max_pool2d(ctx, x, geometry, best, taps)
        })?
    };
    Ok((best, taps.into_any()))
}

/// The VJP of `max_pool2d` for x, shape (N, C, H, W) with (H, W) = `input_hw`, from the output
/// gradient and the winning taps that `max_pool2d` returned (uint8 or uint16).
#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn max_pool2d_backward<'py>(
    grad: &Bound<'py, PyAny>,
    taps: &Bound<'py, PyAny>,
    input_hw: &Bound<'py, PyAny>,
    kernel: &Bound<'py, PyAny>,
    stride: &Bound<'py, PyAny>,
    padding: &Bound<'py, PyAny>,
    dilation: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = grad.py();
    by_dtype!(grad, "grad", |T| {
        let g_array = readonly::<T>(grad, "grad", 4)?;
        let g = view::<T, 4>(&g_array)?;
        let [n, c, oh, ow] = g.shape();
        let geometry = pool_geometry(kernel, stride, padding, dilation, [oh, ow])?;
        let [h, w] = ints::<2>(input_hw, "input_hw", 1)?;
        if taps.cast::<PyArrayDyn<u8>>().is_ok() {
            unpooled::<T, u8>(py, &g, taps, [n, c, h, w], &geometry)
        } else if taps.cast::<PyArrayDyn<u16>>().is_ok() {
            unpooled::<T, u16>(py, &g, taps, [n, c, h, w], &geometry)
        } else {
            Err(PyTypeError::new_err(format!(
                "taps must be a uint8 or uint16 numpy.ndarray, got {}",
                taps.get_type().name()?
            )))
        }
    })
}

/// [`max_pool2d_backward`] with winning taps of type `I`.
fn unpooled<'py, T: Float + Element, I: TapIndex + Element>(
    py: Python<'py>,
    grad: &View4<'_, T>,
    taps: &Bound<'py, PyAny>,
    x_shape: [usize; 4],
    geometry: &PoolGeometry,
) -> PyResult<Bound<'py, PyAny>> {
    let t_array = readonly::<I>(taps, "taps", 4)?;
    let taps = view::<I, 4>(&t_array)?;
    run::<T>(py, &x_shape, |ctx, out| {
        lance_ref_core::max_pool2d_backward(ctx, grad, &taps, x_shape, geometry, out)
    })
}

/// Per-channel [mean; biased variance] of a 4-D array, shape (2, C) (specs/norm.md#batch_norm).
#[pyfunction]
fn batch_norm_stats<'py>(x: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let array = readonly::<T>(x, "x", 4)?;
        let x = view::<T, 4>(&array)?;
        run::<T>(py, &[2, x.shape()[1]], |ctx, out| {
            lance_ref_core::batch_norm_stats(ctx, &x, out)
        })
    })
}

/// (x_hat or None, y) of batch normalisation: x_hat = (x - mean) inv_std, y = weight x_hat + bias
/// (weight, bias: arrays or None); x_hat is returned when `keep_x_hat`.
#[pyfunction]
fn batch_norm_forward<'py>(
    x: &Bound<'py, PyAny>,
    mean: &Bound<'py, PyAny>,
    inv_std: &Bound<'py, PyAny>,
    weight: &Bound<'py, PyAny>,
    bias: &Bound<'py, PyAny>,
    keep_x_hat: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let array = readonly::<T>(x, "x", 4)?;
        let x = view::<T, 4>(&array)?;
        let c = x.shape()[1];
        let (mean, inv_std) = (
            channel_values::<T>(mean, "mean", c)?,
            channel_values::<T>(inv_std, "inv_std", c)?,
        );
        let (weight, bias) = (
            optional_channel_values::<T>(weight, "weight", c)?,
            optional_channel_values::<T>(bias, "bias", c)?,
        );
        let affine = lance_ref_core::Normalisation {
            mean: &mean,
            inv_std: &inv_std,
            weight: weight.as_deref(),
            bias: bias.as_deref(),
        };
        let shape = x.shape();
        if keep_x_hat {
            let [x_hat, y] = run_outputs::<T, 2>(py, [&shape, &shape], |ctx, [x_hat, y]| {
                lance_ref_core::batch_norm_forward(ctx, &x, &affine, Some(x_hat), y)
            })?;
            Ok((x_hat, y))
        } else {
            let y = run::<T>(py, &shape, |ctx, y| {
                lance_ref_core::batch_norm_forward(ctx, &x, &affine, None, y)
            })?;
            Ok((py.None().into_bound(py), y))
        }
    })
}

/// (dx, [dgamma; dbeta] of shape (2, C)) of batch normalisation for the output gradient `grad`,
/// with x_hat (or None) and the per-channel scale gamma inv_std; `batch_stats` as in training.
#[pyfunction]
fn batch_norm_backward<'py>(
    grad: &Bound<'py, PyAny>,
    x_hat: &Bound<'py, PyAny>,
    scale: &Bound<'py, PyAny>,
    batch_stats: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = grad.py();
    by_dtype!(grad, "grad", |T| {
        let g_array = readonly::<T>(grad, "grad", 4)?;
        let g = view::<T, 4>(&g_array)?;
        let c = g.shape()[1];
        let hat_array = if x_hat.is_none() {
            None
        } else {
            Some(readonly::<T>(x_hat, "x_hat", 4)?)
        };
        let hat = hat_array.as_ref().map(view::<T, 4>).transpose()?;
        let scale = channel_values::<T>(scale, "scale", c)?;
        let shape = g.shape();
        let [dx, sums] = run_outputs::<T, 2>(py, [&shape, &[2, c]], |ctx, [dx, sums]| {
            lance_ref_core::batch_norm_backward(
                ctx,
                &g,
                hat.as_ref(),
                &scale,
                batch_stats,
                dx,
                sums,
            )
        })?;
        Ok((dx, sums))
    })
}

/// `x` (any shape) as a C-contiguous read-only array of `T`, copied first if it is not one.
fn contiguous<'py, T: Element>(
    x: &Bound<'py, PyAny>,
    name: &str,
) -> PyResult<PyReadonlyArrayDyn<'py, T>> {
    let ndim = x.cast::<PyUntypedArray>()?.ndim();
    let array = readonly::<T>(x, name, ndim)?;
    if array.is_c_contiguous() {
        return Ok(array);
    }
    let copy = x
        .py()
        .import("numpy")?
        .call_method1("ascontiguousarray", (x,))?;
    readonly::<T>(&copy, name, ndim)
}

/// (y, packed mask or None) with y = clip(x, low, high) (a bound may be None) and the mask
/// [low < x < high] packed as np.packbits(mask, axis=None) when `keep_mask`
/// (specs/activation.md#masks).
#[pyfunction]
fn clamp<'py>(
    x: &Bound<'py, PyAny>,
    low: Option<f64>,
    high: Option<f64>,
    keep_mask: bool,
) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyAny>)> {
    let py = x.py();
    by_dtype!(x, "x", |T| {
        let array = contiguous::<T>(x, "x")?;
        let x = array.as_slice()?;
        let (low, high) = (low.map(T::from_f64), high.map(T::from_f64));
        if !keep_mask {
            let y = run::<T>(py, array.shape(), |ctx, y| {
                lance_ref_core::clamp(ctx, x, low, high, y, None)
            })?;
            return Ok((y, py.None().into_bound(py)));
        }
        let mask = empty::<u8>(py, &[lance_ref_core::mask_len(x.len())])?;
        let y = {
            let mut writable = mask.try_readwrite()?;
            let mask = out_of(&mut writable);
            run::<T>(py, array.shape(), |ctx, y| {
                lance_ref_core::clamp(ctx, x, low, high, y, Some(mask))
            })?
        };
        Ok((y, mask.into_any()))
    })
}

/// grad * the packed mask (np.unpackbits of `mask`, uint8 of ceil(grad.size / 8) bytes): the VJP
/// of an op that saved its mask (specs/activation.md#masks).
#[pyfunction]
fn masked<'py>(grad: &Bound<'py, PyAny>, mask: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let py = grad.py();
    by_dtype!(grad, "grad", |T| {
        let g_array = contiguous::<T>(grad, "grad")?;
        let Ok(mask) = mask.cast::<PyArrayDyn<u8>>() else {
            return Err(PyTypeError::new_err(format!(
                "mask must be a uint8 numpy.ndarray, got {}",
                mask.get_type().name()?
            )));
        };
        let m_array = contiguous::<u8>(mask.as_any(), "mask")?;
        let (g, m) = (g_array.as_slice()?, m_array.as_slice()?);
        run::<T>(py, g_array.shape(), |ctx, dx| {
            lance_ref_core::masked(ctx, g, m, dx)
        })
    })
}

/// The SIMD instruction set the kernels run on ("scalar", "avx2", "avx512" or "neon").
#[pyfunction]
fn simd_isa() -> PyResult<&'static str> {
    Ok(Isa::selected().map_err(value_error)?.name())
}

/// Every instruction set this CPU supports, scalar first.
#[pyfunction]
fn available_isas() -> Vec<&'static str> {
    Isa::available().iter().map(Isa::name).collect()
}

/// The number of threads the kernels use.
#[pyfunction]
fn num_threads() -> usize {
    lance_ref_core::num_threads()
}

/// Sets the number of threads the kernels use (1 pins them to the calling thread).
#[pyfunction]
fn set_num_threads(threads: usize) -> PyResult<()> {
    lance_ref_core::set_num_threads(threads).map_err(value_error)
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(unfold, m)?)?;
    m.add_function(wrap_pyfunction!(fold, m)?)?;
    m.add_function(wrap_pyfunction!(mode_product, m)?)?;
    m.add_function(wrap_pyfunction!(tucker_project, m)?)?;
    m.add_function(wrap_pyfunction!(tucker_reconstruct, m)?)?;
    m.add_function(wrap_pyfunction!(gram, m)?)?;
    m.add_function(wrap_pyfunction!(im2col, m)?)?;
    m.add_function(wrap_pyfunction!(direct_conv2d, m)?)?;
    m.add_function(wrap_pyfunction!(direct_conv2d_input_grad, m)?)?;
    m.add_function(wrap_pyfunction!(direct_conv2d_weight_grad, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d_input_grad, m)?)?;
    m.add_function(wrap_pyfunction!(conv2d_weight_grad, m)?)?;
    m.add_function(wrap_pyfunction!(max_pool2d, m)?)?;
    m.add_function(wrap_pyfunction!(max_pool2d_backward, m)?)?;
    m.add_function(wrap_pyfunction!(batch_norm_stats, m)?)?;
    m.add_function(wrap_pyfunction!(batch_norm_forward, m)?)?;
    m.add_function(wrap_pyfunction!(batch_norm_backward, m)?)?;
    m.add_function(wrap_pyfunction!(clamp, m)?)?;
    m.add_function(wrap_pyfunction!(masked, m)?)?;
    m.add_function(wrap_pyfunction!(simd_isa, m)?)?;
    m.add_function(wrap_pyfunction!(available_isas, m)?)?;
    m.add_function(wrap_pyfunction!(num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    Ok(())
}
