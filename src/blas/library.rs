//! A BLAS library found at run time, for the CPU engine's matrix products (native builds only).
//!
//! The binary does not link one: it looks for a BLAS the first time a product asks, and when
//! none is installed the products stay on burn flex's own (the gemm crate). So one binary runs
//! everywhere, and a machine with a BLAS multiplies faster. Two are looked for:
//! - OpenBLAS (Debian/Ubuntu `libopenblas0-pthread`, Homebrew `openblas`);
//! - Intel's oneMKL (`libmkl_rt`, from `scripts/get-mkl`, a Python environment's `pip install mkl`,
//!   or a system install). On this project's Intel Xeon it trained 15–22% faster than OpenBLAS
//!   (benches/README.md, "oneMKL on an Intel CPU"), so it is tried first on Intel CPUs and after
//!   OpenBLAS elsewhere. It is taken only with its threading libraries beside it: a oneMKL that
//!   cannot load a part it needs ends the process.
//!
//! `TINYTUNE_BLAS` chooses: unset, the usual names are tried; `off`, none is used; `openblas` or
//! `mkl`, only that kind; a path, that library is loaded (and a warning says so when it cannot
//! be).

use std::sync::OnceLock;

/// `cblas_sgemm(layout, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`.
type Sgemm = unsafe extern "C" fn(i32, i32, i32, i32, i32, i32, f32, *const f32, i32, *const f32, i32, f32, *mut f32, i32);

const ROW_MAJOR: i32 = 101;
const NO_TRANS: i32 = 111;
const TRANS: i32 = 112;

/// OpenBLAS by the names its packages install.
const OPENBLAS: &[&str] =
    &["libopenblas.so.0", "libopenblas.so", "libopenblas.dylib", "/opt/homebrew/opt/openblas/lib/libopenblas.dylib", "/usr/local/opt/openblas/lib/libopenblas.dylib", "libopenblas.dll"];

/// oneMKL's single dynamic library, by name (a system install, or one on `LD_LIBRARY_PATH`).
const MKL: &[&str] = &["libmkl_rt.so.3", "libmkl_rt.so.2", "libmkl_rt.so"];

/// What oneMKL's `libmkl_rt` loads for a product with its default (Intel OpenMP) threads, from
/// its own folder, besides the kernels for the CPU it finds: without them it prints "FATAL
/// ERROR" and exits. Checked before oneMKL is taken.
const MKL_PARTS: &[&str] = &["libmkl_core.so", "libmkl_intel_lp64.so", "libmkl_intel_thread.so", "libmkl_def.so", "libmkl_mc3.so", "libmkl_avx2.so", "libmkl_avx512.so"];

/// The libraries tried, in order, when `TINYTUNE_BLAS` names a kind or nothing: oneMKL from the
/// folders it is installed into by `scripts/get-mkl` and by pip or conda, then by name; and
/// OpenBLAS by name. oneMKL first on an Intel CPU.
fn candidates(kind: Option<&str>) -> Vec<String> {
    let home = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/tinytune/mkl/lib"));
    let prefixes = ["VIRTUAL_ENV", "CONDA_PREFIX"].into_iter().filter_map(|v| std::env::var_os(v)).map(|p| std::path::PathBuf::from(p).join("lib"));
    let mut mkl: Vec<String> = home.into_iter().chain(prefixes).map(|d| d.join("libmkl_rt.so.3")).filter(|p| p.is_file()).map(|p| p.display().to_string()).collect();
    mkl.extend(MKL.iter().map(|s| s.to_string()));
    let openblas = OPENBLAS.iter().map(|s| s.to_string());
    match kind {
        Some("mkl") => mkl,
        Some("openblas") => openblas.collect(),
        _ if intel_cpu() => mkl.into_iter().chain(openblas).collect(),
        _ => openblas.chain(mkl).collect(),
    }
}

/// Whether the CPU is Intel's (CPUID's vendor string), where oneMKL is the faster library.
fn intel_cpu() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        let id = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx].iter().flat_map(|r| r.to_le_bytes()).collect();
        vendor == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

pub struct Blas {
    sgemm: Sgemm,
    /// What the library says it is (OpenBLAS's build configuration, oneMKL's version), else the
    /// name it was found by.
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
        Some(kind @ ("mkl" | "openblas")) => {
            let found = candidates(Some(kind)).iter().find_map(|name| load(name).ok());
            if found.is_none() {
                eprintln!("warning: TINYTUNE_BLAS={kind}: no usable {kind} library was found; matrix products use the built-in GEMM");
            }
            found
        }
        Some(path) if !path.is_empty() => {
            let found = load(path);
            if let Err(e) = &found {
                eprintln!("warning: TINYTUNE_BLAS={path}: {e}; matrix products use the built-in GEMM (TINYTUNE_BLAS takes off, mkl, openblas or a library's path)");
            }
            found.ok()
        }
        _ => candidates(None).iter().find_map(|name| load(name).ok()),
    })
    .as_ref()
}

/// One line for logs and `--help`-style reports: which GEMM the CPU engine's products use.
pub fn describe() -> String {
    match get() {
        Some(b) => format!("BLAS: {}", b.name),
        None if switched_off() => "BLAS: off (TINYTUNE_BLAS), the built-in GEMM".to_string(),
        None => "BLAS: none found, the built-in GEMM (install OpenBLAS, e.g. Debian's libopenblas0-pthread, or on an Intel CPU oneMKL with scripts/get-mkl, for faster CPU training)".to_string(),
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
        if let Ok(set) = library.get::<unsafe extern "C" fn(*const i32)>(b"MKL_Set_Num_Threads\0") {
            mkl_complete(sgemm as *const std::ffi::c_void)?;
            set(&(rayon::current_num_threads() as i32));
            let mut version = [0u8; 198];
            if let Ok(get) = library.get::<unsafe extern "C" fn(*mut std::ffi::c_char, i32)>(b"MKL_Get_Version_String\0") {
                get(version.as_mut_ptr().cast(), version.len() as i32);
            }
            // "Intel(R) oneAPI Math Kernel Library Version 2026.2-Product Build ..." → "oneMKL 2026.2".
            let version = std::ffi::CStr::from_bytes_until_nul(&version).map(|v| v.to_string_lossy().to_string()).unwrap_or_default();
            let number = version.split("Version ").nth(1).and_then(|v| v.split(['-', ' ']).next()).filter(|v| !v.is_empty());
            let name = number.map_or_else(|| name.to_string(), |v| format!("oneMKL {v}"));
            return Ok(Blas { sgemm, name, _library: library });
        }
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

/// Whether the oneMKL whose `cblas_sgemm` is at `symbol` has the parts it loads beside it
/// (`MKL_PARTS`, any `.so.N`, and Intel OpenMP's `libiomp5.so` there or on the loader's path).
#[cfg(unix)]
fn mkl_complete(symbol: *const std::ffi::c_void) -> Result<(), String> {
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // Safety: dladdr only reads the loader's tables and fills `info`; the name it returns lives as
    // long as the library, which stays loaded while this runs.
    let found = unsafe { libc::dladdr(symbol, &mut info) } != 0 && !info.dli_fname.is_null();
    let file = if found { std::path::PathBuf::from(unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_string_lossy().to_string()) } else { return Err("oneMKL: its folder could not be found".into()) };
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let names: Vec<String> = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).collect();
    let has = |part: &str| names.iter().any(|n| n == part || n.strip_prefix(part).is_some_and(|v| v.starts_with('.')));
    let mut missing: Vec<&str> = MKL_PARTS.iter().copied().filter(|p| !has(p)).collect();
    // Safety: loading Intel OpenMP runs its initialisers, which set up its thread pool only.
    if !has("libiomp5.so") && unsafe { libloading::Library::new("libiomp5.so") }.is_err() {
        missing.push("libiomp5.so");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(format!("{} lacks {} beside it (scripts/get-mkl installs a complete one)", file.display(), missing.join(", ")))
    }
}

/// Elsewhere oneMKL is taken as it is (only a path in `TINYTUNE_BLAS` can name it there).
#[cfg(not(unix))]
fn mkl_complete(_symbol: *const std::ffi::c_void) -> Result<(), String> {
    Ok(())
}
