//! Fine-tune one conv layer with LANCE on a board, without Python.
//!
//! ```text
//! lance_step DIR --steps N --lr LR [--stride S] [--padding P] [--out FILE]
//! ```
//!
//! reads, from `DIR`, `.npy` files of one dtype (all float32 or all float64, C order):
//! `weight.npy` (O, C, kh, kw), `x.npy` (N, C, H, W), the layer's input batch,
//! `grad_output.npy` (N, O, H', W'), the gradient of the loss at the layer's output, and
//! `bases0.npy` .. `bases3.npy`, LANCE's fixed bases U_B (N, k_B), U_C (C, k_C), U_H (H, k_H),
//! U_W (W, k_W) (lance-ref's calibration writes them: `layer.compressor.factors`). It runs `N`
//! steps of [`lance_ref_core::lance_conv2d_step`] (conv forward, the core on the fixed bases,
//! the weight gradient from the core, SGD at `LR`), then writes the weight to `--out` (default
//! `DIR/weight_trained.npy`) and the last step's output to `DIR/output.npy`.
//!
//! Bad input (a missing or truncated file, a wrong dtype tag, shapes that do not fit the layer)
//! prints one line and exits with status 2.
//!
//! Build for a board: `cargo build --release --example lance_step --target aarch64-unknown-linux-gnu`
//! (`.ci/aarch64` does, and runs it under qemu).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use lance_ref_core::npy::{self, Array};
use lance_ref_core::{Context, ConvGeometry, Float, View2, View4, lance_conv2d_step};

struct Arguments {
    dir: PathBuf,
    steps: usize,
    lr: f64,
    stride: usize,
    padding: usize,
    out: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Arguments, String> {
    let dir = PathBuf::from(args.next().ok_or("missing DIR (usage: lance_step DIR --steps N --lr LR [--stride S] [--padding P] [--out FILE])")?);
    let (mut steps, mut lr, mut stride, mut padding, mut out) = (None, None, 1, 0, None);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let number = |kind: &str| format!("{flag} must be {kind}, got {value:?}");
        match flag.as_str() {
            "--steps" => steps = Some(value.parse::<usize>().map_err(|_| number("a count"))?),
            "--lr" => {
                lr = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| number("a finite number"))?,
                )
            }
            "--stride" => {
                stride = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&s| s >= 1)
                    .ok_or_else(|| number("an integer >= 1"))?
            }
            "--padding" => {
                padding = value
                    .parse::<usize>()
                    .map_err(|_| number("an integer >= 0"))?
            }
            "--out" => out = Some(PathBuf::from(value)),
            _ => {
                return Err(format!(
                    "unknown flag {flag}; expected --steps, --lr, --stride, --padding or --out"
                ));
            }
        }
    }
    Ok(Arguments {
        out: out.unwrap_or_else(|| dir.join("weight_trained.npy")),
        steps: steps.ok_or("--steps is required")?,
        lr: lr.ok_or("--lr is required")?,
        dir,
        stride,
        padding,
    })
}

/// float32 or float64, as a `.npy` array holds it.
trait Element: Float {
    const NAME: &'static str;
    fn unwrap(array: Array) -> Option<(Vec<usize>, Vec<Self>)>;
    fn wrap(shape: Vec<usize>, data: Vec<Self>) -> Array;
}

impl Element for f32 {
    const NAME: &'static str = "float32";
    fn unwrap(array: Array) -> Option<(Vec<usize>, Vec<f32>)> {
        match array {
            Array::F32 { shape, data } => Some((shape, data)),
            Array::F64 { .. } => None,
        }
    }
    fn wrap(shape: Vec<usize>, data: Vec<f32>) -> Array {
        Array::F32 { shape, data }
    }
}

impl Element for f64 {
    const NAME: &'static str = "float64";
    fn unwrap(array: Array) -> Option<(Vec<usize>, Vec<f64>)> {
        match array {
            Array::F64 { shape, data } => Some((shape, data)),
            Array::F32 { .. } => None,
        }
    }
    fn wrap(shape: Vec<usize>, data: Vec<f64>) -> Array {
        Array::F64 { shape, data }
    }
}

/// The array `name` of `dir` in `T`, with `N` dimensions.
fn load<T: Element, const N: usize>(
    dir: &Path,
    name: &str,
) -> Result<([usize; N], Vec<T>), String> {
    let path = dir.join(name);
    typed(&path, npy::read(&path).map_err(|e| e.to_string())?)
}

/// `array`, read from `path`, in `T` with `N` dimensions.
fn typed<T: Element, const N: usize>(
    path: &Path,
    array: Array,
) -> Result<([usize; N], Vec<T>), String> {
    let descr = array.descr();
    let (shape, data) = T::unwrap(array).ok_or(format!(
        "{}: dtype {descr}, but weight.npy's differs; every file must share it",
        path.display()
    ))?;
    let shape: [usize; N] = shape.try_into().map_err(|s: Vec<usize>| {
        format!("{}: shape {s:?}, expected {N} dimensions", path.display())
    })?;
    Ok((shape, data))
}

/// The steps in `T`, the dtype of `weight`, the array read from `DIR/weight.npy`.
fn run<T: Element>(arguments: &Arguments, weight: Array) -> Result<(), String> {
    let dir = &arguments.dir;
    let (w_shape, mut weight) = typed::<T, 4>(&dir.join("weight.npy"), weight)?;
    let (x_shape, x) = load::<T, 4>(dir, "x.npy")?;
    let (grad_shape, grad) = load::<T, 4>(dir, "grad_output.npy")?;
    let bases: Vec<([usize; 2], Vec<T>)> = (0..4)
        .map(|n| load::<T, 2>(dir, &format!("bases{n}.npy")))
        .collect::<Result<_, _>>()?;
    let views = |error: lance_ref_core::LanceError| error.to_string();
    let x = View4::c_contiguous(&x, x_shape).map_err(views)?;
    let grad = View4::c_contiguous(&grad, grad_shape).map_err(views)?;
    let bases: Vec<View2<'_, T>> = bases
        .iter()
        .map(|(shape, data)| View2::c_contiguous(data, *shape))
        .collect::<Result<_, _>>()
        .map_err(views)?;
    let bases: [View2<'_, T>; 4] = [bases[0], bases[1], bases[2], bases[3]];
    let geometry = ConvGeometry {
        kernel: [w_shape[2], w_shape[3]],
        stride: [arguments.stride; 2],
        padding: [arguments.padding; 2],
        dilation: [1, 1],
        groups: 1,
    };
    let ctx = Context::from_env().map_err(views)?;
    let mut output = Vec::new();
    for _ in 0..arguments.steps {
        output = lance_conv2d_step(
            &ctx,
            &x,
            &mut weight,
            w_shape,
            &bases,
            &grad,
            &geometry,
            arguments.lr,
        )
        .map_err(views)?;
    }
    npy::write(&arguments.out, &T::wrap(w_shape.to_vec(), weight)).map_err(|e| e.to_string())?;
    if arguments.steps > 0 {
        npy::write(
            &dir.join("output.npy"),
            &T::wrap(grad_shape.to_vec(), output),
        )
        .map_err(|e| e.to_string())?;
    }
    println!(
        "{} LANCE steps of a ({}) conv on {} ({}): weight written to {}",
        arguments.steps,
        w_shape.map(|d| d.to_string()).join(", "),
        ctx.isa().name(),
        T::NAME,
        arguments.out.display()
    );
    Ok(())
}

fn main() -> ExitCode {
    let outcome = parse(std::env::args().skip(1)).and_then(|arguments| {
        let weight = npy::read(&arguments.dir.join("weight.npy")).map_err(|e| e.to_string())?;
        if matches!(weight, Array::F32 { .. }) {
            run::<f32>(&arguments, weight)
        } else {
            run::<f64>(&arguments, weight)
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("lance_step: error: {message}");
            ExitCode::from(2)
        }
    }
}
