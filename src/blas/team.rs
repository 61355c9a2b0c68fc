//! The CPU engine's own parallel loops (attention, AdamW, the fused element-wise kernels) on the
//! threads the BLAS multiplies on, when that BLAS is oneMKL with Intel OpenMP.
//!
//! oneMKL runs each product on an OpenMP team whose workers spin for a while after it (200 ms by
//! default) so that the next product starts at once. The loops between products ran on rayon's
//! pool, whose two workers then shared the two cores with that spinning worker: three threads
//! busy on two cores for every loop of a training step. PyTorch runs its loops on the same
//! OpenMP team as its products; here, where that team is there, the loops go to it too
//! (`GOMP_parallel`, which Intel OpenMP provides), and the worker that would spin does the work.
//! Elsewhere (OpenBLAS, no BLAS, a call from inside rayon's pool) they stay on rayon.

use std::any::Any;
use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `GOMP_parallel(fn, data, num_threads, flags)`: runs `fn(data)` on a team of `num_threads`
/// threads, the caller among them, and returns when all have.
type GompParallel = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, u32, u32);

struct Team {
    parallel: GompParallel,
    _library: libloading::Library,
}

thread_local! {
    static ENABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether the loops this thread starts may use oneMKL's OpenMP team (on by default): off, they
/// stay on rayon. For benches and tests that compare the two in one process; a setting of this
/// thread's own, so that tests running side by side do not switch each other's.
pub fn set_enabled(on: bool) {
    ENABLED.with(|e| e.set(on));
}

/// Whether oneMKL's OpenMP team is there to be used (oneMKL is the BLAS, with Intel OpenMP).
pub fn available() -> bool {
    team().is_some()
}

/// Intel OpenMP as oneMKL loaded it, when the BLAS in use is oneMKL.
fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<Team>> = OnceLock::new();
    TEAM.get_or_init(|| {
        let blas = super::library::get()?;
        if !blas.name.starts_with("oneMKL") {
            return None;
        }
        // Only the Intel OpenMP oneMKL has loaded (setting its threads when it is loaded loads
        // its threading layer; the team test checks that it is found before any product): with
        // oneMKL on GNU OpenMP the loops stay on rayon rather than start a second OpenMP runtime.
        #[cfg(unix)]
        // Safety: RTLD_NOLOAD opens nothing new; it finds the library oneMKL loaded, whose
        // initialisers have run. The symbol is looked up by its name in the GNU OpenMP ABI,
        // which Intel OpenMP implements, and given that function's C signature.
        unsafe {
            let library = libloading::os::unix::Library::open(Some("libiomp5.so"), libc::RTLD_NOLOAD | libc::RTLD_LAZY).ok()?;
            let parallel = *library.get::<GompParallel>(b"GOMP_parallel\0").ok()?;
            Some(Team { parallel, _library: library.into() })
        }
        #[cfg(not(unix))]
        None
    })
    .as_ref()
}

/// Whether `for_each_task` runs on oneMKL's OpenMP team from this thread.
pub fn on_team() -> bool {
    ENABLED.with(|e| e.get()) && rayon::current_thread_index().is_none() && team().is_some()
}

/// The work of one `for_each_task` call, shared by the team's threads.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    tasks: usize,
    next: AtomicUsize,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

/// Each of the team's threads takes the next task until none is left. A panic is caught (it
/// must not unwind through OpenMP's C frames), ends the handing out, and is raised again on the
/// calling thread.
extern "C" fn run_job(data: *mut c_void) {
    // Safety: `data` is the `Job` that `for_each_task` passed, alive until GOMP_parallel returns.
    let job = unsafe { &*(data as *const Job) };
    loop {
        let task = job.next.fetch_add(1, Ordering::Relaxed);
        if task >= job.tasks {
            return;
        }
        if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (job.f)(task))) {
            job.next.store(job.tasks, Ordering::Relaxed);
            job.panic.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert(panic);
            return;
        }
    }
}

/// `f(task)` once for every task in `0..tasks`, on several threads: oneMKL's OpenMP team where
/// `on_team`, else rayon's pool. Returns when all are done.
pub fn for_each_task(tasks: usize, f: &(dyn Fn(usize) + Sync)) {
    if tasks <= 1 {
        (0..tasks).for_each(f);
        return;
    }
    if on_team() && let Some(team) = team() {
        let job = Job { f, tasks, next: AtomicUsize::new(0), panic: Mutex::new(None) };
        let threads = rayon::current_num_threads().min(tasks) as u32;
        // Safety: `run_job` reads `job` only while GOMP_parallel runs, which returns after every
        // thread of the team has returned from it.
        unsafe { (team.parallel)(run_job, &job as *const Job as *mut c_void, threads, 0) };
        if let Some(panic) = job.panic.into_inner().unwrap_or_else(|e| e.into_inner()) {
            std::panic::resume_unwind(panic);
        }
        return;
    }
    use rayon::prelude::*;
    (0..tasks).into_par_iter().for_each(f);
}

/// A slice cut into `size`-long chunks (the last may be shorter) for tasks on several threads
/// to fill, each task its own chunk (`for_each_task` runs each task once).
pub struct Chunks<'a> {
    ptr: *mut f32,
    len: usize,
    size: usize,
    _out: std::marker::PhantomData<&'a mut [f32]>,
}

// Safety: a `Chunks` hands out disjoint parts of one `&mut [f32]` (see `get`), as
// `par_chunks_mut` does.
unsafe impl Sync for Chunks<'_> {}

impl<'a> Chunks<'a> {
    pub fn new(out: &'a mut [f32], size: usize) -> Self {
        Chunks { ptr: out.as_mut_ptr(), len: out.len(), size: size.max(1), _out: std::marker::PhantomData }
    }
    pub fn count(&self) -> usize {
        self.len.div_ceil(self.size)
    }
    /// Chunk `i`.
    ///
    /// # Safety
    /// Each `i` may be taken once only while the chunks live (one task each).
    pub unsafe fn get(&self, i: usize) -> &'a mut [f32] {
        let start = i * self.size;
        assert!(start < self.len, "chunk {i} of {} values in chunks of {}", self.len, self.size);
        // Safety: start + the chunk's length ≤ len, inside the slice `new` took; chunks do not
        // overlap, and the caller takes each once.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), self.size.min(self.len - start)) }
    }
}

/// `f(c, chunk)` for the `size`-long chunks of `out`, each chunk once, on several threads
/// (`for_each_task`).
pub fn par_chunks(out: &mut [f32], size: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let chunks = Chunks::new(out, size);
    // Safety: for_each_task runs each task index once.
    for_each_task(chunks.count(), &|c| f(c, unsafe { chunks.get(c) }));
}
