//! Where a kernel writes its result: `Out`, a possibly uninitialised buffer written through raw
//! pointers only, so callers need not zero what the kernel overwrites anyway.

use crate::LanceError;
use std::marker::PhantomData;
use std::mem::MaybeUninit;

/// `len` elements a kernel writes (each before it reads it, if ever), possibly uninitialised.
///
/// Kernels write it through raw pointers only, so the memory need not hold valid values
/// beforehand; threads of one kernel write disjoint elements. Copy, so threads can share it.
#[derive(Debug, Clone, Copy)]
pub struct Out<'a, T> {
    ptr: *mut T,
    len: usize,
    _buffer: PhantomData<&'a mut [MaybeUninit<T>]>,
}

// SAFETY: an `Out` is a unique borrow of its buffer; the kernels that share it between threads
// write disjoint elements (see each use).
unsafe impl<T: Send> Send for Out<'_, T> {}
unsafe impl<T: Send> Sync for Out<'_, T> {}

impl<'a, T: Copy> Out<'a, T> {
    /// An initialised buffer, overwritten by the kernel.
    pub fn new(buffer: &'a mut [T]) -> Self {
        Out {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    /// A possibly uninitialised buffer (e.g. `Vec::spare_capacity_mut`), fully written by the
    /// kernel when it returns `Ok`.
    pub fn uninit(buffer: &'a mut [MaybeUninit<T>]) -> Self {
        Out {
            ptr: buffer.as_mut_ptr().cast(),
            len: buffer.len(),
            _buffer: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `BufferLength` unless the buffer holds exactly `expected` elements.
    pub(crate) fn check_len(&self, expected: usize) -> Result<(), LanceError> {
        if self.len != expected {
            return Err(LanceError::BufferLength {
                expected,
                got: self.len,
            });
        }
        Ok(())
    }

    /// Pointer to element `i`. Safety: `i <= len`.
    pub(crate) unsafe fn at(&self, i: usize) -> *mut T {
        unsafe { self.ptr.add(i) }
    }

    /// Elements `start..end` as a slice to write. Safety: `start <= end <= len`, and no other
    /// thread touches these elements while the slice lives.
    #[allow(clippy::mut_from_ref)] // disjoint ranges of one buffer, as `write`
    pub(crate) unsafe fn range(&self, start: usize, end: usize) -> &'a mut [MaybeUninit<T>] {
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start).cast(), end - start) }
    }

    /// Writes `value` at `start..end`. Safety: as `range`.
    pub(crate) unsafe fn fill(&self, start: usize, end: usize, value: T) {
        unsafe { self.range(start, end) }.fill(MaybeUninit::new(value));
    }

    /// Writes `values` at `i..i + values.len()`. Safety: in bounds, and no other thread
    /// touches these elements.
    pub(crate) unsafe fn copy_from(&self, i: usize, values: &[T]) {
        unsafe { std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.add(i), values.len()) }
    }

    /// Writes `value` at `i`. Safety: as `copy_from`.
    pub(crate) unsafe fn write(&self, i: usize, value: T) {
        unsafe { self.ptr.add(i).write(value) }
    }

    /// Reads element `i`. Safety: in bounds and already written.
    pub(crate) unsafe fn read(&self, i: usize) -> T {
        unsafe { self.ptr.add(i).read() }
    }
}
