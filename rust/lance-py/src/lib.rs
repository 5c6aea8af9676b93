//! The extension module `lance_ref._core`: a thin PyO3 layer over `lance-core`.
//!
//! Each function checks its arguments, views the NumPy input in place (any strides), releases
//! the GIL while the `lance-core` kernel runs, and returns a new C-contiguous array.

use lance_core::{LanceError, View4, offset_range, unfolded_shape};
use numpy::prelude::*;
use numpy::{Element, PyArray, PyArray2, PyArray4, PyUntypedArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

/// Mode-n unfolding X_(n) of a 4-D float32 or float64 array (specs/kernels.md#unfold): a new
/// C-contiguous array of shape (x.shape[mode], x.size // x.shape[mode]), equal to
/// np.moveaxis(x, mode, 0).reshape(x.shape[mode], -1). x may have any strides.
#[pyfunction]
fn unfold<'py>(x: &Bound<'py, PyAny>, mode: isize) -> PyResult<Bound<'py, PyAny>> {
    let py = x.py();
    let Ok(array) = x.cast::<PyUntypedArray>() else {
        let type_name = x.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "x must be a numpy.ndarray, got {type_name}"
        )));
    };
    let dtype = array.dtype();
    let is_f32 = dtype.is_equiv_to(&f32::get_dtype(py));
    if !is_f32 && !dtype.is_equiv_to(&f64::get_dtype(py)) {
        return Err(PyTypeError::new_err(format!(
            "x must have dtype float32 or float64 (native byte order), got {dtype}"
        )));
    }
    if array.ndim() != 4 {
        return Err(PyValueError::new_err(format!(
            "x must be a 4-D array, got {}-D",
            array.ndim()
        )));
    }
    let Some(mode) = usize::try_from(mode).ok().filter(|&m| m < 4) else {
        return Err(PyValueError::new_err(format!(
            "mode must satisfy 0 <= mode < 4, got {mode}"
        )));
    };
    if is_f32 {
        unfold_as::<f32>(array, mode)
    } else {
        unfold_as::<f64>(array, mode)
    }
}

fn unfold_as<'py, T>(array: &Bound<'py, PyUntypedArray>, mode: usize) -> PyResult<Bound<'py, PyAny>>
where
    T: Element + Copy + Default + Send + Sync,
{
    let py = array.py();
    let x = array.cast::<PyArray4<T>>()?.try_readonly()?;
    let shape: [usize; 4] = std::array::from_fn(|axis| x.shape()[axis]);
    let (rows, cols) = unfolded_shape(shape, mode).map_err(value_error)?;
    if rows * cols == 0 {
        return Ok(PyArray2::<T>::zeros(py, [rows, cols], false).into_any());
    }

    // NumPy strides are in bytes. A length-1 axis is never stepped along, and NumPy may give it
    // any stride, so it gets 0.
    let itemsize = size_of::<T>() as isize;
    let byte_strides = x.strides();
    let whole_elements = (0..4).all(|axis| shape[axis] == 1 || byte_strides[axis] % itemsize == 0);
    if !whole_elements || !x.data().is_aligned() {
        // E.g. a field of a structured array or a buffer at an odd address: copy it first
        // (`ndarray.copy` always allocates fresh, aligned, C-contiguous memory).
        let copy = array.call_method0("copy")?;
        return unfold_as::<T>(copy.cast()?, mode);
    }
    let strides: [isize; 4] = std::array::from_fn(|axis| {
        if shape[axis] == 1 {
            0
        } else {
            byte_strides[axis] / itemsize
        }
    });

    let (low, high) = offset_range(shape, strides).map_err(value_error)?;
    // SAFETY: x is a non-empty array, so NumPy guarantees that all its elements lie in one live
    // allocation; elements `low..=high` (relative to element [0, 0, 0, 0], which `x.data()`
    // points at) are the lowest and highest of them, so the slice covers memory inside that
    // allocation. The pointer is aligned (checked above) and the read-only borrow held in `x`
    // keeps Rust writers away until we return.
    let data =
        unsafe { std::slice::from_raw_parts(x.data().offset(low), (high - low + 1) as usize) };
    let view = View4::new(data, low.unsigned_abs(), shape, strides).map_err(value_error)?;

    let out = py
        .detach(|| {
            let mut out = vec![T::default(); rows * cols];
            lance_core::unfold(&view, mode, &mut out).map(|()| out)
        })
        .map_err(value_error)?;
    Ok(PyArray::from_vec(py, out).reshape([rows, cols])?.into_any())
}

fn value_error(err: LanceError) -> PyErr {
    PyValueError::new_err(err.to_string())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(unfold, m)?)?;
    Ok(())
}
