//! A BLAS library found at run time, for the CPU engine's matrix products (native builds only).
//!
//! The binary does not link one: it looks for OpenBLAS the first time a product asks, and when
//! none is installed the products stay on burn flex's own (the gemm crate). So one binary runs
//! everywhere, and a machine with OpenBLAS (Debian/Ubuntu `libopenblas0-pthread`, Homebrew
//! `openblas`) multiplies faster.
//!
//! `TINYTUNE_BLAS` chooses: unset, the usual names are tried; `off`, none is used; a path, that
//! library is loaded (and a warning says so when it cannot be).

use std::sync::OnceLock;

/// `cblas_sgemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`.
type Sgemm = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *const f32, i32, f32, *mut f32, i32);

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// The libraries tried, in order, when `TINYTUNE_BLAS` names none.
const CANDIDATES: &[&str] =
    &["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "/opt/homebrew/opt/openblas/lib/libopenblas.dylib", "/usr/local/opt/openblas/lib/libopenblas.dylib", "libopenblas.dll"];

pub struct Blas {
    sgemm: Sgemm,
    /// What the library says it is (OpenBLAS's build configuration), else the name it was found by.
    pub name: String,
    _library: libloading::Library,
}

/// One operand in row-major storage: `rows × cols` logical values, element `(i, j)` at
/// `data[i·ld + j]`, or at `data[j·ld + i]` when `transposed`.
pub struct Operand<'a> {
    pub data: &'a [f32],
    pub rows: usize,
    pub cols: usize,
    pub ld: usize,
    pub transposed: bool,
}

impl Operand<'_> {
    /// Whether every element the BLAS reads lies inside `data`, and the sizes fit its `int`s.
    fn fits(&self) -> bool {
        let (r, c) = if self.transposed { (self.cols, self.rows) } else { (self.rows, self.cols) };
        let last = if r == 0 || c == 0 { 0 } else { (r - 1) * self.ld + c };
        self.ld >= c.max(1) && last <= self.data.len() && [self.rows, self.cols, self.ld].iter().all(|&n| n <= i32::MAX as usize)
    }
}

impl Blas {
    /// `a · b` as `m × n` row-major values: `a` is `m × k`, `b` is `k × n`.
    pub fn matmul(&self, a: &Operand, b: &Operand) -> Vec<f32> {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        assert!(b.rows == k, "matmul: {m}×{k} by {}×{n}", b.rows);
        assert!(a.fits() && b.fits() && m * n <= i32::MAX as usize, "matmul: an operand's stride or size does not fit its storage");
        let mut out = Vec::<f32>::with_capacity(m * n);
        if m == 0 || n == 0 {
            return out;
        }
        let flag = |o: &Operand| if o.transposed { TRANS } else { NO_TRANS };
        // Safety: `fits` checked that every element read lies inside its slice and that the
        // sizes fit an i32; `out` has room for m·n values, which the call writes, every one:
        // with beta 0 BLAS sets C to the product without reading it (zeros when k is 0). The
        // library keeps no pointer after the call.
        unsafe {
            (self.sgemm)(ROW_MAJOR, flag(a), flag(b), m as i32, n as i32, k as i32, 1.0, a.data.as_ptr(), a.ld as i32, b.data.as_ptr(), b.ld as i32, 0.0, out.as_mut_ptr(), n as i32);
            out.set_len(m * n);
        }
        out
    }

    /// `c += a · b`, `c` being `m × n` row-major values: the product added in place, with no
    /// separate pass to zero an output or to add.
    pub fn matmul_add(&self, a: &Operand, b: &Operand, c: &mut [f32]) {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        assert!(b.rows == k && c.len() == m * n, "matmul_add: {m}×{k} by {}×{n} into {} values", b.rows, c.len());
        assert!(a.fits() && b.fits() && m * n <= i32::MAX as usize, "matmul_add: an operand's stride or size does not fit its storage");
        if m == 0 || n == 0 {
            return;
        }
        let flag = |o: &Operand| if o.transposed { TRANS } else { NO_TRANS };
        // Safety: as for `matmul`; `c` holds exactly m·n initialised values, read and written.
        unsafe {
            (self.sgemm)(ROW_MAJOR, flag(a), flag(b), m as i32, n as i32, k as i32, 1.0, a.data.as_ptr(), a.ld as i32, b.data.as_ptr(), b.ld as i32, 1.0, c.as_mut_ptr(), n as i32);
        }
    }
}

/// The BLAS this process uses, found the first time it is asked for.
pub fn get() -> Option<&'static Blas> {
    static BLAS: OnceLock<Option<Blas>> = OnceLock::new();
    BLAS.get_or_init(|| match std::env::var("TINYTUNE_BLAS").ok().as_deref() {
        _ if switched_off() => None,
        Some(path) if !path.is_empty() => {
            let found = load(path);
            if let Err(e) = &found {
                eprintln!("warning: TINYTUNE_BLAS={path}: {e}; matrix products use the built-in GEMM");
            }
            found.ok()
        }
        _ => CANDIDATES.iter().find_map(|name| load(name).ok()),
    })
    .as_ref()
}

/// One line for logs and `--help`-style reports: which GEMM the CPU engine's products use.
pub fn describe() -> String {
    match get() {
        Some(b) => format!("BLAS: {}", b.name),
        None if switched_off() => "BLAS: off (TINYTUNE_BLAS), the built-in GEMM".to_string(),
        None => "BLAS: none found, the built-in GEMM (install OpenBLAS, e.g. Debian's libopenblas0-pthread, for faster CPU training)".to_string(),
    }
}

fn switched_off() -> bool {
    matches!(std::env::var("TINYTUNE_BLAS").ok().as_deref(), Some("off" | "0" | "none"))
}

fn load(name: &str) -> Result<Blas, String> {
    // Safety: loading a library runs its initialisers. These are BLAS builds, whose
    // initialisers set up their thread pools and nothing the process relies on.
    let library = unsafe { libloading::Library::new(name) }.map_err(|e| e.to_string())?;
    // Safety: the symbols are looked up by their CBLAS / OpenBLAS names and given those
    // functions' C signatures.
    unsafe {
        let sgemm = *library.get::<Sgemm>(b"cblas_sgemm\0").map_err(|e| format!("{name} has no cblas_sgemm: {e}"))?;
        // Its threads should match the rest of the engine's (rayon's pool: one per core unless
        // RAYON_NUM_THREADS says otherwise).
        if let Ok(set) = library.get::<unsafe extern "C" fn(i32)>(b"openblas_set_num_threads\0") {
            set(rayon::current_num_threads() as i32);
        }
        let config = library.get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"openblas_get_config\0").ok().map(|f| f());
        let name = match config {
            Some(p) if !p.is_null() => std::ffi::CStr::from_ptr(p).to_string_lossy().trim().to_string(),
            _ => name.to_string(),
        };
        Ok(Blas { sgemm, name, _library: library })
    }
}
