//! NumPy's `.npy` files of little-endian float32 or float64 arrays in C order: what a board reads
//! a layer's weight, bases and data from, and writes the trained weight to, without Python.
//! Parsed with safe code only; every malformed file is an [`NpyError`] naming it.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"\x93NUMPY";

/// A float array read from or written to a `.npy` file: its shape and its elements in C order.
#[derive(Debug, Clone, PartialEq)]
pub enum Array {
    F32 { shape: Vec<usize>, data: Vec<f32> },
    F64 { shape: Vec<usize>, data: Vec<f64> },
}

impl Array {
    pub fn shape(&self) -> &[usize] {
        match self {
            Array::F32 { shape, .. } | Array::F64 { shape, .. } => shape,
        }
    }

    /// NumPy's dtype tag: `<f4` or `<f8`.
    pub fn descr(&self) -> &'static str {
        match self {
            Array::F32 { .. } => "<f4",
            Array::F64 { .. } => "<f8",
        }
    }
}

/// Why a `.npy` file could not be read or written.
#[derive(Debug)]
pub struct NpyError {
    pub path: PathBuf,
    pub reason: String,
}

impl fmt::Display for NpyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path.display(), self.reason)
    }
}

impl std::error::Error for NpyError {}

/// Reads the `.npy` file `path`: format 1.0, 2.0 or 3.0, dtype `<f4` or `<f8`, C order.
pub fn read(path: &Path) -> Result<Array, NpyError> {
    let fail = |reason: String| NpyError {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = fs::read(path).map_err(|e| fail(format!("cannot read it ({e})")))?;
    let (descr, shape, body) = parse(&bytes).map_err(fail)?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| fail(format!("shape {shape:?} overflows")))?;
    let width = match descr.as_str() {
        "<f4" => 4,
        "<f8" => 8,
        other => {
            return Err(fail(format!(
                "dtype tag {other:?}: expected '<f4' (float32) or '<f8' (float64)"
            )));
        }
    };
    if body.len() != count * width {
        return Err(fail(format!(
            "shape {shape:?} of {descr} needs {} data bytes, the file holds {} (truncated?)",
            count * width,
            body.len()
        )));
    }
    Ok(if width == 4 {
        let data = body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        Array::F32 {
            shape,
            data: data.collect(),
        }
    } else {
        let data = body
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
        Array::F64 {
            shape,
            data: data.collect(),
        }
    })
}

/// (descr, shape, data bytes) of a `.npy` file's bytes.
fn parse(bytes: &[u8]) -> Result<(String, Vec<usize>, &[u8]), String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        version => return Err(format!(".npy format version {version} is not 1, 2 or 3")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("the header is truncated")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let descr = quoted_value(header, "descr")?;
    if value_after(header, "fortran_order")?.starts_with("True") {
        return Err("the array is in Fortran order; save it in C order".into());
    }
    let shape = value_after(header, "shape")?;
    let inside = shape
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("the header's shape is not a tuple")?;
    let shape = inside
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<usize>()
                .map_err(|_| format!("shape entry {d:?} is not a size"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((descr, shape, &bytes[start + header_len..]))
}

/// The text after `'key':` in a header dict, leading spaces removed.
fn value_after<'h>(header: &'h str, key: &str) -> Result<&'h str, String> {
    let tag = format!("'{key}':");
    let at = header
        .find(&tag)
        .ok_or_else(|| format!("the header has no '{key}'"))?;
    Ok(header[at + tag.len()..].trim_start())
}

fn quoted_value(header: &str, key: &str) -> Result<String, String> {
    let value = value_after(header, key)?;
    let inner = value
        .strip_prefix('\'')
        .and_then(|v| v.split('\'').next())
        .ok_or_else(|| format!("the header's '{key}' is not a quoted string"))?;
    Ok(inner.to_string())
}

/// Writes `array` to `path` as a format 1.0 `.npy` file, through a temporary file renamed over
/// `path`, so that a reader never sees a partial file.
pub fn write(path: &Path, array: &Array) -> Result<(), NpyError> {
    let dims: Vec<String> = array.shape().iter().map(|d| d.to_string()).collect();
    let shape = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!(
        "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
        array.descr()
    );
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = Vec::from(MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    match array {
        Array::F32 { data, .. } => data
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
        Array::F64 { data, .. } => data
            .iter()
            .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes())),
    }
    let fail = |e: std::io::Error| NpyError {
        path: path.to_path_buf(),
        reason: format!("cannot write it ({e})"),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    fs::write(&temporary, &bytes).map_err(fail)?;
    fs::rename(&temporary, path).map_err(|e| {
        let _ = fs::remove_file(&temporary);
        fail(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lance-npy-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    #[test]
    fn arrays_round_trip_and_headers_are_aligned() {
        for (name, array) in [
            (
                "a.npy",
                Array::F32 {
                    shape: vec![2, 3],
                    data: vec![1.0, -2.5, 3.0, 0.0, 5.0, 6.0],
                },
            ),
            (
                "b.npy",
                Array::F64 {
                    shape: vec![4],
                    data: vec![0.1, 0.2, 0.3, 1e300],
                },
            ),
            (
                "c.npy",
                Array::F64 {
                    shape: vec![],
                    data: vec![7.0],
                },
            ),
        ] {
            let path = scratch(name);
            write(&path, &array).unwrap();
            let bytes = fs::read(&path).unwrap();
            let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
            assert_eq!((10 + header_len) % 64, 0);
            assert_eq!(read(&path).unwrap(), array);
        }
    }

    #[test]
    fn malformed_files_are_errors_naming_the_problem() {
        let good = scratch("good.npy");
        write(
            &good,
            &Array::F32 {
                shape: vec![3],
                data: vec![1.0, 2.0, 3.0],
            },
        )
        .unwrap();
        let bytes = fs::read(&good).unwrap();
        let header = String::from_utf8_lossy(&bytes[10..]).to_string();
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("short.npy", bytes[..bytes.len() - 2].to_vec(), "truncated"),
            (
                "text.npy",
                b"just text, no array".to_vec(),
                "no \\x93NUMPY magic",
            ),
            (
                "int.npy",
                [&bytes[..10], header.replace("<f4", "<i4").as_bytes()].concat(),
                "dtype tag \"<i4\"",
            ),
            (
                "big.npy",
                [&bytes[..10], header.replace("<f4", ">f4").as_bytes()].concat(),
                "dtype tag \">f4\"",
            ),
            (
                "fortran.npy",
                [&bytes[..10], header.replace("False", "True ").as_bytes()].concat(),
                "Fortran order",
            ),
        ];
        for (name, content, reason) in cases {
            let path = scratch(name);
            fs::write(&path, content).unwrap();
            let error = read(&path).unwrap_err();
            assert!(error.to_string().contains(reason), "{name}: {error}");
        }
        assert!(
            read(&scratch("missing.npy"))
                .unwrap_err()
                .to_string()
                .contains("cannot read it")
        );
    }
}
