"""What this CPU and this build offer the kernel modules: SIMD levels and the thread pool.

Compiled once, with baseline flags, so it imports on every CPU the wheel supports.  The pool
(src/_threads.h) lives here only, so the process has one; every kernel module runs its jobs
through the table that POOL, a capsule, points to.
"""

from libc.stdint cimport int64_t
from libc.stdlib cimport calloc, free
from cpython.pycapsule cimport PyCapsule_New

cdef extern from *:
    """
    #if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
    /* __builtin_cpu_supports also checks that the OS saves the wide registers (XGETBV). */
    static int lec6_cpu_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            && __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
    }
    static int lec6_cpu_avx512(void) {
        return lec6_cpu_avx2() && __builtin_cpu_supports("avx512f")
            && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")
            && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512cd");
    }
    #else
    static int lec6_cpu_avx2(void) { return 0; }
    static int lec6_cpu_avx512(void) { return 0; }
    #endif
    #define LEC6_THREADS_IMPLEMENTATION
    #include "_threads.h"
    """
    int lec6_cpu_avx2() nogil
    int lec6_cpu_avx512() nogil
    ctypedef void (*lec6_chunk_fn)(void* ctx, int64_t chunk) noexcept nogil
    ctypedef struct lec6_pool:
        int (*run)(lec6_chunk_fn fn, void* ctx, int64_t nchunks, int threads) noexcept nogil
        int (*run_touching)(lec6_chunk_fn fn, void* ctx, int64_t nchunks, int threads) noexcept nogil
    const lec6_pool lec6_pool_table
    enum: LEC6_MAX_THREADS
    enum: LEC6_BACKOFF_MAX_NS
    void lec6_pool_init(int threads)
    int lec6_pool_threads()
    void lec6_pool_set_threads(int threads)
    void lec6_pool_shutdown() nogil
    int lec6_pool_workers()
    int lec6_pool_has_threads()
    int64_t lec6_pool_stat_jobs "LEC6_LOAD(&lec6_p.stats_jobs.v)"
    int64_t lec6_pool_stat_worker_chunks "LEC6_LOAD(&lec6_p.stats_chunks_by_workers.v)"
    int64_t lec6_pool_stat_late "LEC6_LOAD(&lec6_p.stats_late.v)"
    long long lec6_delay_ns "lec6_p.delay_ns"
    long long lec6_serial_until "lec6_p.serial_until"
    long long lec6_last_end "lec6_p.last_end"
    long long lec6_backoff_ns "lec6_p.backoff_ns"
    long long lec6_now_ns()
    void lec6_pool_set_hold "LEC6_STORE_HOLD"(int hold)
    long long lec6_spin_ns "lec6_p.spin_ns"
    long long lec6_hot_spin_ns "lec6_p.hot_spin_ns"
    int lec6_flush_denormals(int on)
    int lec6_refuse_from "lec6_p.refuse_from"
    ctypedef void (*lec6_team_fn)(void (*body)(void*), void* data, unsigned nthreads, unsigned flags)
    ctypedef int (*lec6_team_num_fn)()
    int lec6_pool_set_team(lec6_team_fn team, lec6_team_num_fn team_num,
                           lec6_team_num_fn team_max) nogil
    int64_t lec6_pool_stat_team_jobs "LEC6_LOAD(&lec6_p.stats_team_jobs.v)"
    int lec6_pool_team()


def cpu_simd_levels():
    """SIMD levels this CPU (and OS) can run, from least to most capable."""
    levels = ["baseline"]
    if lec6_cpu_avx2():
        levels.append("avx2")
    if lec6_cpu_avx512():
        levels.append("avx512")
    return tuple(levels)


# ---------------------------------------------------------------- the thread pool

MAX_THREADS = LEC6_MAX_THREADS              # the pool's ceiling, whatever the machine
SERIAL_PERIOD_MAX = LEC6_BACKOFF_MAX_NS / 1e9   # seconds: the longest serial period (late jobs)
HAS_THREADS = bool(lec6_pool_has_threads())  # False: a build for a platform without threads

lec6_pool_init(1)
POOL = PyCapsule_New(<void*>&lec6_pool_table, "lec6fast._runtime.POOL", NULL)


def set_threads(int n):
    """Threads every kernel uses (1..MAX_THREADS, checked by lec6fast._dispatch); workers
    beyond n sleep until it rises, missing ones start on the next large call that needs them."""
    lec6_pool_set_threads(n)


def get_threads():
    return lec6_pool_threads()


def shutdown():
    """Join the workers (at interpreter exit); later calls run serially."""
    with nogil:
        lec6_pool_shutdown()


def pool_stats():
    """{'workers': alive, 'jobs': jobs run on several threads, 'worker_chunks': chunks the
    workers (or team threads) ran, 'late': jobs whose caller waited for workers' chunks longer
    than running them itself would have taken (each sends the next jobs of a few milliseconds
    to their callers alone), 'team': whether jobs run on an OpenMP team (see _set_team),
    'team_jobs': the jobs that ran there}: for the tests and `lec6fast config`."""
    return {"workers": lec6_pool_workers(), "jobs": lec6_pool_stat_jobs,
            "worker_chunks": lec6_pool_stat_worker_chunks, "late": lec6_pool_stat_late,
            "team": bool(lec6_pool_team()), "team_jobs": lec6_pool_stat_team_jobs}


def _set_team(size_t gomp_parallel, size_t omp_get_thread_num, size_t omp_get_max_threads):
    """lec6fast.torch: run every job on the OpenMP team of the runtime whose GOMP_parallel,
    omp_get_thread_num and omp_get_max_threads are at these addresses (the one torch has
    loaded), instead of the pool's workers (but for jobs of more threads than the team has);
    0 goes back to the workers.  Returns whether jobs run on a team (never in a build
    without POSIX threads, nor in a fork() child of a process that had imported lec6fast).
    Nothing here can check that the addresses are those functions'."""
    cdef int on
    with nogil:
        on = lec6_pool_set_team(<lec6_team_fn>gomp_parallel,
                                <lec6_team_num_fn>omp_get_thread_num,
                                <lec6_team_num_fn>omp_get_max_threads)
    return bool(on)


def _hold_workers(bint hold):
    """Tests only: while held, the workers take no chunk (as if they could not get a core);
    every job must still complete, on its caller."""
    lec6_pool_set_hold(hold)


def _flush_denormals(bint on):
    """Tests only: set (or clear) flush-to-zero and denormals-are-zero on the calling thread,
    as torch.set_flush_denormal does.  Returns the previous setting, or None where this CPU
    has no such mode here."""
    cdef int was = lec6_flush_denormals(on)
    return None if was < 0 else bool(was)


def _refuse_workers_from(int n):
    """Tests only: creating worker n (1-based) or a later one fails, as when the system has no
    more threads to give; 0 lifts it."""
    global lec6_refuse_from
    lec6_refuse_from = max(n, 0)


def _set_spin_us(double us, hot_us=None):
    """Benchmarks and tests only: how long an idle worker spins before it sleeps, and for how
    much of that it does not yield its core."""
    global lec6_spin_ns, lec6_hot_spin_ns
    lec6_spin_ns = <long long>(us * 1000)
    if hot_us is not None:
        lec6_hot_spin_ns = <long long>(hot_us * 1000)


def _get_spin_us():
    """(spin, hot spin) in microseconds."""
    return lec6_spin_ns / 1000.0, lec6_hot_spin_ns / 1000.0


def _delay_workers(double us):
    """Tests only: a worker sleeps `us` microseconds inside the first chunk it takes of each
    job, as a worker preempted mid-chunk would (0 lifts it)."""
    global lec6_delay_ns
    lec6_delay_ns = <long long>(us * 1000)


def _forget_late():
    """Tests only: end the serial period that a late job started, and forget its length."""
    global lec6_serial_until, lec6_last_end, lec6_backoff_ns
    lec6_serial_until = 0
    lec6_last_end = 0
    lec6_backoff_ns = 0


def _now_ns():
    """Tests only: the pool's clock (monotonic nanoseconds)."""
    return lec6_now_ns()


def _serial_until_ns():
    """Tests only: on the pool's clock, when the serial period of the last late job ends (0:
    none is running)."""
    return lec6_serial_until


cdef void _test_chunk(void* ctx, int64_t c) noexcept nogil:
    cdef volatile double acc = 0.0      # some microseconds of work (no clock: a build
    cdef int i                          # without threads has none)
    for i in range(5000):
        acc = acc + i
    (<int64_t*>ctx)[c] += 1


def _test_job(int64_t nchunks, bint touching=False):
    """Tests only: a job of nchunks chunks (about 20 us of work each) on the pool, through run
    (or run_touching), with the thread setting; returns how many times each chunk ran."""
    cdef int64_t* ran = <int64_t*>calloc(max(nchunks, 1), sizeof(int64_t))
    if ran == NULL:
        raise MemoryError()
    cdef int nt = lec6_pool_threads()
    try:
        with nogil:
            if touching:
                lec6_pool_table.run_touching(_test_chunk, ran, nchunks, nt)
            else:
                lec6_pool_table.run(_test_chunk, ran, nchunks, nt)
        return [ran[i] for i in range(nchunks)]
    finally:
        free(ran)
