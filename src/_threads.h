/* lec6fast's thread pool: runs a job of n chunks on the caller and up to T-1 worker threads,
 * without ever making the caller wait for a thread that has not started its share.
 *
 * Why not OpenMP: GNU OpenMP's `parallel for` joins on a barrier over the whole team, so a call
 * waits for every team thread to be scheduled.  Next to NumPy's BLAS threads, PyTorch's OpenMP
 * pool or any busy process on a small machine, a worker that cannot get a core turns a 10 us
 * update into milliseconds.  Here:
 *
 *   - A job is chunks [0, n), cut into T contiguous home ranges, one per participant (the caller
 *     is participant 0).  Each participant claims chunks from its own range first (the data it
 *     touched in the previous call of a training loop is still in its cache), then takes what is
 *     left of the others' ranges.  A claim is one compare-and-swap on the range's word
 *     (generation << 32 | next chunk), so a late worker that wakes after the chunks are gone
 *     finds nothing, and one that wakes in a later job cannot claim in it by mistake.
 *   - The caller waits only for chunks that a worker has claimed, i.e. is running: briefly
 *     spinning, then asleep on a condition variable (so a preempted worker can get its core).
 *   - Idle workers spin a bounded time after a job, yielding the core to anything else
 *     runnable, then sleep on a condition variable of their own; a job wakes only the
 *     sleeping workers it needs.  Workers beyond the thread setting sleep until it rises.
 *   - Workers run each job under the caller's floating-point mode (MXCSR on x86, FPCR on arm64):
 *     flush-to-zero set by the caller (torch.set_flush_denormal) applies to every chunk.
 *   - A worker that is preempted while it runs a chunk (by the host of a virtual machine, whose
 *     steal time the guest cannot see, or by a busier process) makes the caller wait for it.
 *     When that wait is longer than the caller would have needed to run the workers' chunks
 *     itself (plus 50 us), the job was "late": the following jobs run serially on their
 *     callers for twice that wait (at least 2 ms), a period doubled while late jobs keep
 *     coming within one period after the last one ended (at most 1 s): a passing hiccup
 *     costs one short serial period, a machine that keeps taking the workers' cores ends up
 *     serial but for a job a second, instead of a wait at every call.  Jobs that first touch
 *     fresh pages (run_touching) are never judged: their waits are page faults.
 *     Results do not change: chunks never depend on the thread count.
 *   - In a process where another library keeps an OpenMP team (PyTorch), lec6fast.torch hands
 *     the pool that runtime's GOMP_parallel and omp_get_thread_num (lec6_pool_set_team), and
 *     jobs run on the team's threads instead of the workers: after each of its parallel regions
 *     the team spins for milliseconds on the cores the workers would need (three threads on
 *     two cores: an update right after torch's backward ran slower on two threads than on
 *     one), and a spinning team thread takes the job at once.  Team thread k takes part as
 *     worker k would (home range k first, under the caller's floating-point mode, its own given
 *     back after), and the job is judged late by the same rule: a team thread that cannot get
 *     a core (or, asleep, must wake first) holds the caller at the team's closing barrier, and
 *     a late job sends the following ones to the caller alone as above.  A job of more threads
 *     than the team has (torch.set_num_threads(1), as in DataLoader workers) runs on the
 *     workers instead: the runtime would create threads for it.  A forked child uses the
 *     workers, for good: GNU libgomp cannot run a parallel region in a child whose parent had
 *     used it.
 *   - Workers are created lazily, at most LEC6_MAX_THREADS - 1; a failed creation means fewer
 *     participants, never an error.  After fork() the child forgets the parent's workers and
 *     creates its own on its first job.  While one caller runs a job, a call from another
 *     thread runs its job serially on its own thread instead of waiting.
 *
 * Results never depend on which thread runs a chunk: callers split their work into chunks whose
 * boundaries depend on the problem's size only, never on the thread count.
 *
 * This file is the interface (used by every kernel family through the lec6_pool table that
 * lec6fast._runtime exports) and, where LEC6_THREADS_IMPLEMENTATION is defined (in
 * lec6fast._runtime only, so the process has one pool), the implementation.
 */
#ifndef LEC6_THREADS_H
#define LEC6_THREADS_H

#include <stdint.h>

/* Run chunk `chunk` of a job; ctx is the caller's. */
typedef void (*lec6_chunk_fn)(void *ctx, int64_t chunk);

/* An OpenMP runtime's GOMP_parallel: body(data) on nthreads threads, the caller among them,
 * returning when all have finished (libgomp's, and LLVM libomp's compatible entry point); its
 * omp_get_thread_num (0 on the caller) and omp_get_max_threads. */
typedef void (*lec6_team_fn)(void (*body)(void *), void *data, unsigned nthreads, unsigned flags);
typedef int (*lec6_team_num_fn)(void);

typedef struct {
    /* Run chunks [0, nchunks) of fn on up to `threads` threads, the caller among them.
     * Returns the number of threads that took part (1 when it ran serially). */
    int (*run)(lec6_chunk_fn fn, void *ctx, int64_t nchunks, int threads);
    /* The thread count the kernels use (lec6fast.set_num_threads). */
    int (*num_threads)(void);
    /* As run, for a job whose chunks first touch fresh pages: a chunk's time is then the
     * memory system's (a virtual machine's host may take milliseconds to back a page), and
     * running later jobs serially would not shorten it, so its waits never count as late. */
    int (*run_touching)(lec6_chunk_fn fn, void *ctx, int64_t nchunks, int threads);
} lec6_pool;

#define LEC6_MAX_THREADS 256        /* participants of one job, the caller included */
#define LEC6_MAX_CHUNKS 0x7fffffff  /* chunk indices fit the low 32 bits of a claim word */

#ifdef LEC6_THREADS_IMPLEMENTATION

#include <string.h>

#if defined(_WIN32)
#  define LEC6_WIN32 1
#  ifndef WIN32_LEAN_AND_MEAN
#    define WIN32_LEAN_AND_MEAN
#  endif
#  include <windows.h>
#  include <process.h>
#elif defined(LEC6_NO_THREADS) || (defined(__EMSCRIPTEN__) && !defined(__EMSCRIPTEN_PTHREADS__)) \
      || defined(__wasi__)
#  undef LEC6_NO_THREADS
#  define LEC6_NO_THREADS 1
#else
#  define LEC6_PTHREADS 1
#  include <pthread.h>
#  include <sched.h>
#  include <signal.h>
#  include <time.h>
#endif

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__) || defined(_M_IX86)
#  include <immintrin.h>
#  define LEC6_PAUSE() _mm_pause()
#  if defined(__SSE__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 1)
     /* MXCSR without its six sticky exception flags: rounding, FTZ, DAZ, exception masks */
#    define LEC6_GET_FPMODE() ((uint64_t)(_mm_getcsr() & ~0x3Fu))
#    define LEC6_SET_FPMODE(m) _mm_setcsr((_mm_getcsr() & 0x3Fu) | (unsigned)(m))
#    define LEC6_FLUSH_BITS 0x8040u     /* FTZ (bit 15) and DAZ (bit 6) */
#  endif
#elif (defined(__aarch64__) || defined(__arm64__)) && (defined(__GNUC__) || defined(__clang__))
#  define LEC6_PAUSE() __asm__ __volatile__("yield")
static inline uint64_t lec6_get_fpcr(void) { uint64_t v; __asm__ __volatile__("mrs %0, fpcr" : "=r"(v)); return v; }
static inline void lec6_set_fpcr(uint64_t v) { __asm__ __volatile__("msr fpcr, %0" : : "r"(v)); }
#  define LEC6_GET_FPMODE() lec6_get_fpcr()
#  define LEC6_SET_FPMODE(m) lec6_set_fpcr(m)
#  define LEC6_FLUSH_BITS (1u << 24)    /* FZ */
#endif
#ifndef LEC6_PAUSE
#  define LEC6_PAUSE() ((void)0)
#endif
#ifndef LEC6_GET_FPMODE
#  define LEC6_GET_FPMODE() ((uint64_t)0)
#  define LEC6_SET_FPMODE(m) ((void)(m))
#endif

/* ---------------------------------------------------------------- atomics (sequentially consistent) */
#if defined(_MSC_VER) && !defined(__clang__)
#  include <intrin.h>
#  define LEC6_LOAD(p) ((uint64_t)_InterlockedOr64((volatile __int64 *)(p), 0))
#  define LEC6_STORE(p, v) ((void)_InterlockedExchange64((volatile __int64 *)(p), (__int64)(v)))
#  define LEC6_ADD(p, v) ((uint64_t)_InterlockedExchangeAdd64((volatile __int64 *)(p), (__int64)(v)) + (v))
static inline int lec6_cas(volatile uint64_t *p, uint64_t expected, uint64_t desired)
{
    return (uint64_t)_InterlockedCompareExchange64((volatile __int64 *)p, (__int64)desired,
                                                   (__int64)expected) == expected;
}
#  define LEC6_CAS(p, e, d) lec6_cas((p), (e), (d))
#  define LEC6_ALIGNED(n) __declspec(align(n))
#else
#  define LEC6_LOAD(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#  define LEC6_STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_SEQ_CST)
#  define LEC6_ADD(p, v) __atomic_add_fetch((p), (v), __ATOMIC_SEQ_CST)
static inline int lec6_cas(volatile uint64_t *p, uint64_t expected, uint64_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}
#  define LEC6_CAS(p, e, d) lec6_cas((p), (e), (d))
#  define LEC6_ALIGNED(n) __attribute__((aligned(n)))
#endif

/* One word per cache line: the words that different threads hammer must not share one. */
typedef struct { LEC6_ALIGNED(64) volatile uint64_t v; char pad[64 - sizeof(uint64_t)]; } lec6_word;

/* ---------------------------------------------------------------- the pool's state */
static struct {
    /* the current job: written by its caller before the generation is published */
    lec6_chunk_fn fn;
    void *ctx;
    uint64_t fpmode;
    int64_t nchunks;
    int parts;                          /* participants, the caller (0) included */
    lec6_word gen;                      /* job generation, bumped to publish a job */
    lec6_word claim[LEC6_MAX_THREADS];  /* range r: gen << 32 | next chunk of r */
    int64_t end[LEC6_MAX_THREADS];      /* range r: its end (exclusive) */
    lec6_word done;                     /* chunks finished in the current job */
    lec6_word busy;                     /* 1 while a caller owns the pool */
    lec6_word asleep[LEC6_MAX_THREADS]; /* worker w sleeps (or is about to) on wake[w] */
    lec6_word caller_asleep;            /* the caller sleeps until done == nchunks */
    lec6_word stop_from;                /* workers with index >= this exit (at shutdown) */
    lec6_word stats_jobs, stats_chunks_by_workers, stats_late, stats_team_jobs;
    int64_t serial_until;               /* after a late job: jobs run serially until then (ns) */
    int64_t last_end;                   /* when the last such period ended (or ends) */
    int64_t backoff_ns;                 /* its length, doubled while late jobs keep coming */
    int64_t delay_ns;                   /* tests: a worker sleeps this long in its first chunk */
    lec6_word hold;                     /* tests: workers take no chunk while this is set */
    int refuse_from;                    /* tests: creating worker >= this fails (0: never) */
    lec6_word threads;                  /* the setting: lec6fast.set_num_threads (atomic:
                                           any thread may set it while others read it) */
    int workers;                        /* worker threads alive, indices 1..workers */
    int closed;                         /* after lec6_pool_shutdown: serial for good */
    int64_t spin_ns;                    /* how long an idle worker spins before sleeping */
    int64_t hot_spin_ns;                /* of which the first part without yielding */
    lec6_team_fn team;                  /* jobs run on this OpenMP team instead (NULL: workers) */
    lec6_team_num_fn team_num;          /* a team thread's number there */
    lec6_team_num_fn team_max;          /* the team's size there (torch.set_num_threads) */
    int forked;                         /* a fork() child: never a team (its parent's is dead) */
#if defined(LEC6_PTHREADS)
    pthread_mutex_t lock;
    pthread_cond_t wake[LEC6_MAX_THREADS];  /* worker w waits on wake[w] for a job */
    pthread_cond_t finished;            /* the caller waits here for the last chunk */
    pthread_t tid[LEC6_MAX_THREADS];
#elif defined(LEC6_WIN32)
    SRWLOCK lock;
    CONDITION_VARIABLE wake[LEC6_MAX_THREADS], finished;
    HANDLE tid[LEC6_MAX_THREADS];
#endif
} lec6_p = {0};

#define LEC6_CLOSED_RANGE 0xffffffffu
#define LEC6_CALLER_SPINS 2000          /* pause instructions before a waiting caller sleeps */
#define LEC6_DEFAULT_SPIN_NS 300000     /* an idle worker spins this long, then sleeps */
#define LEC6_DEFAULT_HOT_SPIN_NS 20000  /* the first part without yielding the core */
#define LEC6_LATE_NS 50000              /* a wait beyond this (and the serial time) is late */
#define LEC6_LATE_FACTOR 2              /* serial for this many times the wait, ... */
#define LEC6_BACKOFF_MIN_NS 2000000     /* ... at least this, doubled while late jobs recur, ... */
#define LEC6_BACKOFF_MAX_NS 1000000000  /* ... at most this */

/* ---------------------------------------------------------------- platform glue */
#if defined(LEC6_PTHREADS)
static int64_t lec6_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
#  define LEC6_YIELD() sched_yield()
static void lec6_sleep_ns(int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
}
static void lec6_nap(void) { lec6_sleep_ns(100000); }
#  define LEC6_LOCK() pthread_mutex_lock(&lec6_p.lock)
#  define LEC6_UNLOCK() pthread_mutex_unlock(&lec6_p.lock)
#  define LEC6_WAIT(cv) pthread_cond_wait(&lec6_p.cv, &lec6_p.lock)
#  define LEC6_BROADCAST(cv) pthread_cond_broadcast(&lec6_p.cv)
#  define LEC6_SIGNAL(cv) pthread_cond_signal(&lec6_p.cv)
#elif defined(LEC6_WIN32)
static int64_t lec6_now_ns(void)
{
    static LARGE_INTEGER freq;
    LARGE_INTEGER t;
    if (!freq.QuadPart)
        QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&t);
    return (int64_t)((double)t.QuadPart * 1e9 / (double)freq.QuadPart);
}
#  define LEC6_YIELD() SwitchToThread()
static void lec6_sleep_ns(int64_t ns) { Sleep((DWORD)((ns + 999999) / 1000000)); }
static void lec6_nap(void) { Sleep(1); }
#  define LEC6_LOCK() AcquireSRWLockExclusive(&lec6_p.lock)
#  define LEC6_UNLOCK() ReleaseSRWLockExclusive(&lec6_p.lock)
#  define LEC6_WAIT(cv) SleepConditionVariableSRW(&lec6_p.cv, &lec6_p.lock, INFINITE, 0)
#  define LEC6_BROADCAST(cv) WakeAllConditionVariable(&lec6_p.cv)
#  define LEC6_SIGNAL(cv) WakeConditionVariable(&lec6_p.cv)
#else   /* no threads: nothing waits, so nothing is ever late */
static int64_t lec6_now_ns(void) { return 0; }
#endif

/* ---------------------------------------------------------------- claiming and running chunks */

/* Claim the next chunk of range r in job `gen`; -1 when the range is used up or the job over. */
static inline int64_t lec6_claim(int r, uint64_t gen)
{
    for (;;) {
        uint64_t w = LEC6_LOAD(&lec6_p.claim[r].v);
        int64_t next = (int64_t)(w & 0xffffffffu);
        if ((w >> 32) != gen || next >= lec6_p.end[r])
            return -1;
        if (LEC6_CAS(&lec6_p.claim[r].v, w, w + 1))
            return next;
    }
}

/* A worker finished a chunk it claimed.  The caller adds its own chunks in one go when it has
 * no more to claim, so the count reaches nchunks exactly when the job is complete; the worker
 * that completes it wakes the caller if it sleeps. */
static inline void lec6_chunk_done(void)
{
    int64_t n = lec6_p.nchunks;     /* still this job's: it cannot end before this chunk counts */
    LEC6_ADD(&lec6_p.stats_chunks_by_workers.v, 1);     /* counted before the job can end */
    if ((int64_t)LEC6_ADD(&lec6_p.done.v, 1) == n && LEC6_LOAD(&lec6_p.caller_asleep.v)) {
#if !defined(LEC6_NO_THREADS)
        LEC6_LOCK();
        LEC6_BROADCAST(finished);
        LEC6_UNLOCK();
#endif
    }
}

/* Participant `me` takes chunks of job `gen`, its home range first, then the others'.
 * The job's fn and ctx (and, for a worker, its floating-point mode) are read after the first
 * successful claim: until then they may belong to a later job, and a claim in job `gen` only
 * succeeds while that job has chunks left.  Returns the number of chunks it ran. */
static int64_t lec6_take_part(int me, uint64_t gen, int parts, uint64_t *fpmode)
{
    lec6_chunk_fn fn = NULL;
    void *ctx = NULL;
    int64_t ran = 0, c;
    int k;
    for (k = 0; k < parts; k++) {
        int r = (me + k) % parts;
        while ((c = lec6_claim(r, gen)) >= 0) {
            if (fn == NULL) {
                fn = lec6_p.fn;
                ctx = lec6_p.ctx;
                if (fpmode && lec6_p.fpmode != *fpmode) {
                    *fpmode = lec6_p.fpmode;
                    LEC6_SET_FPMODE(*fpmode);
                }
#if !defined(LEC6_NO_THREADS)
                if (me != 0 && lec6_p.delay_ns > 0)
                    lec6_sleep_ns(lec6_p.delay_ns);     /* tests: preempted in its chunk */
#endif
            }
            fn(ctx, c);
            ran++;
            if (me != 0)
                lec6_chunk_done();
        }
    }
    return ran;
}

#if !defined(LEC6_NO_THREADS)

/* ---------------------------------------------------------------- workers */

/* Wait until the generation differs from `seen` (or this worker must stop): spin for a
 * while (if `spin`), yielding the core to whatever else is runnable, then sleep. */
static void lec6_wait_for_job(uint64_t seen, int me, int spin)
{
    int64_t t0 = 0;
    int k;
    /* Hot for a few microseconds (pause only: a call of a training loop usually follows
     * within that), then yielding the core at every turn, then asleep. */
    for (k = 0; spin; k++) {
        if (LEC6_LOAD(&lec6_p.gen.v) != seen || me >= (int)LEC6_LOAD(&lec6_p.stop_from.v))
            return;
        if (k == 0)
            t0 = lec6_now_ns();
        if ((k & 63) == 63) {
            int64_t spent = lec6_now_ns() - t0;
            if (spent > lec6_p.spin_ns)
                break;
            if (spent > lec6_p.hot_spin_ns) {
                LEC6_YIELD();
                continue;
            }
        }
        LEC6_PAUSE();
    }
    /* The caller stores the generation, then reads asleep[me]; this worker stores asleep[me],
     * then reads the generation (all sequentially consistent): one of the two sees the other,
     * so a job is never missed. */
    LEC6_LOCK();
    LEC6_STORE(&lec6_p.asleep[me].v, 1);
    while (LEC6_LOAD(&lec6_p.gen.v) == seen && me < (int)LEC6_LOAD(&lec6_p.stop_from.v))
        LEC6_WAIT(wake[me]);
    LEC6_STORE(&lec6_p.asleep[me].v, 0);
    LEC6_UNLOCK();
}

static void lec6_worker(int me)
{
    uint64_t seen = LEC6_LOAD(&lec6_p.gen.v);
    uint64_t fpmode = LEC6_GET_FPMODE();
    int spin = 1;
    for (;;) {
        lec6_wait_for_job(seen, me, spin);
        spin = 0;                       /* spin again only after taking part in a job */
        if (me >= (int)LEC6_LOAD(&lec6_p.stop_from.v))
            return;
        seen = LEC6_LOAD(&lec6_p.gen.v);
        while (LEC6_LOAD(&lec6_p.hold.v))
            lec6_nap();
        /* parts may already belong to a later job: then job `seen` is over, and every claim
         * in it fails (see lec6_take_part). */
        int parts = lec6_p.parts;
        if (me >= parts)
            continue;
        lec6_take_part(me, seen & 0xffffffffu, parts, &fpmode);
        spin = 1;
    }
}

#if defined(LEC6_PTHREADS)
static void *lec6_worker_main(void *arg) { lec6_worker((int)(intptr_t)arg); return NULL; }

static int lec6_start_worker(int me)
{
    if (lec6_p.refuse_from && me >= lec6_p.refuse_from)
        return 0;
    /* Workers take no signals: Python handles them in the main thread. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int err = pthread_create(&lec6_p.tid[me], NULL, lec6_worker_main, (void *)(intptr_t)me);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return err == 0;
}

static void lec6_join_worker(int me) { pthread_join(lec6_p.tid[me], NULL); }

static void lec6_init_sync(void)
{
    pthread_mutex_init(&lec6_p.lock, NULL);
    int i;
    for (i = 0; i < LEC6_MAX_THREADS; i++) {
        pthread_cond_init(&lec6_p.wake[i], NULL);
        LEC6_STORE(&lec6_p.asleep[i].v, 0);
    }
    pthread_cond_init(&lec6_p.finished, NULL);
}

/* fork(): the child has only the thread that forked.  It forgets the parent's workers (and any
 * lock one of them held) and starts its own on its first job. */
static void lec6_after_fork_in_child(void)
{
    lec6_init_sync();
    lec6_p.workers = 0;
    lec6_p.team = NULL;             /* the parent's OpenMP team is not the child's, and */
    lec6_p.forked = 1;              /* GNU libgomp hangs in a child whose parent used it */
    LEC6_STORE(&lec6_p.busy.v, 0);
    LEC6_STORE(&lec6_p.caller_asleep.v, 0);
    LEC6_STORE(&lec6_p.stop_from.v, LEC6_MAX_THREADS);
}
#else  /* Win32 */
static unsigned __stdcall lec6_worker_main(void *arg) { lec6_worker((int)(intptr_t)arg); return 0; }

static int lec6_start_worker(int me)
{
    if (lec6_p.refuse_from && me >= lec6_p.refuse_from)
        return 0;
    uintptr_t h = _beginthreadex(NULL, 0, lec6_worker_main, (void *)(intptr_t)me, 0, NULL);
    lec6_p.tid[me] = (HANDLE)h;
    return h != 0;
}

static void lec6_join_worker(int me)
{
    WaitForSingleObject(lec6_p.tid[me], INFINITE);
    CloseHandle(lec6_p.tid[me]);
}

static void lec6_init_sync(void)
{
    InitializeSRWLock(&lec6_p.lock);
    int i;
    for (i = 0; i < LEC6_MAX_THREADS; i++)
        InitializeConditionVariable(&lec6_p.wake[i]);
    InitializeConditionVariable(&lec6_p.finished);
}
#endif

/* Stop every worker and wait for it to exit.  The caller owns the pool. */
static void lec6_stop_workers(void)
{
    int i;
    LEC6_STORE(&lec6_p.stop_from.v, 1);
    LEC6_LOCK();
    for (i = 1; i <= lec6_p.workers; i++)
        LEC6_SIGNAL(wake[i]);
    LEC6_UNLOCK();
    for (i = 1; i <= lec6_p.workers; i++)
        lec6_join_worker(i);
    lec6_p.workers = 0;
}
#endif  /* !LEC6_NO_THREADS */

/* ---------------------------------------------------------------- an OpenMP team instead of the workers */
#if defined(LEC6_PTHREADS)
typedef struct {
    uint64_t gen;                   /* the job, published as for the workers */
    int parts;
    int64_t t1, mine;               /* the caller's: when it found no chunk left, chunks it ran */
} lec6_team_job;

/* Team thread k takes part in the job as worker k would; the caller as participant 0. */
static void lec6_team_body(void *data)
{
    lec6_team_job *j = (lec6_team_job *)data;
    int me = lec6_p.team_num();
    if (me == 0) {
        j->mine = lec6_take_part(0, j->gen, j->parts, NULL);
        j->t1 = lec6_now_ns();
        LEC6_ADD(&lec6_p.done.v, (uint64_t)j->mine);
        return;
    }
    if (me >= j->parts || LEC6_LOAD(&lec6_p.hold.v))
        return;                     /* (tests: a held team thread takes no chunk) */
    uint64_t mode = LEC6_GET_FPMODE(), fpmode = mode;
    lec6_take_part(me, j->gen, j->parts, &fpmode);
    if (fpmode != mode)
        LEC6_SET_FPMODE(mode);      /* the team's thread is torch's again */
}
#endif

/* ---------------------------------------------------------------- the caller's side */

static int lec6_acquire(void)
{
    return LEC6_CAS(&lec6_p.busy.v, 0, 1);
}

static void lec6_release(void) { LEC6_STORE(&lec6_p.busy.v, 0); }

static int lec6_run_serial(lec6_chunk_fn fn, void *ctx, int64_t nchunks)
{
    int64_t c;
    for (c = 0; c < nchunks; c++)
        fn(ctx, c);
    return 1;
}

#if !defined(LEC6_NO_THREADS)
/* After the caller ran `mine` chunks in [t0, t1) and then waited for the rest until now:
 * late when that wait was longer than it would have taken to run the others' chunks itself,
 * at its own pace (the job ran slower than serially); then the following jobs run serially
 * (see the top).  Chunk times vary (a chunk that faults in a 2 MiB huge page takes 100 us,
 * its neighbours nothing), so the measure is the caller's whole share, not one chunk. */
static void lec6_judge(int judged, int64_t t0, int64_t t1, int64_t mine, int64_t nchunks)
{
    int64_t now = lec6_now_ns(), waited = now - t1;
    if (judged && mine > 0 && waited > LEC6_LATE_NS + (t1 - t0) * (nchunks - mine) / mine) {
        int64_t b = now - lec6_p.last_end < lec6_p.backoff_ns ? 2 * lec6_p.backoff_ns : 0;
        b = b < LEC6_BACKOFF_MIN_NS ? LEC6_BACKOFF_MIN_NS : b;
        b = b < LEC6_LATE_FACTOR * waited ? LEC6_LATE_FACTOR * waited : b;
        lec6_p.backoff_ns = b < LEC6_BACKOFF_MAX_NS ? b : LEC6_BACKOFF_MAX_NS;
        lec6_p.serial_until = lec6_p.last_end = now + lec6_p.backoff_ns;
        LEC6_ADD(&lec6_p.stats_late.v, 1);
    }
}

/* Only chunks that workers claimed, i.e. are running, are left: wait for them, briefly
 * spinning, then asleep so that a preempted worker can have this core. */
static void lec6_wait_done(int64_t nchunks)
{
    int k;
    for (k = 0; k < LEC6_CALLER_SPINS && (int64_t)LEC6_LOAD(&lec6_p.done.v) != nchunks; k++)
        LEC6_PAUSE();
    if ((int64_t)LEC6_LOAD(&lec6_p.done.v) != nchunks) {
        LEC6_LOCK();
        LEC6_STORE(&lec6_p.caller_asleep.v, 1);
        while ((int64_t)LEC6_LOAD(&lec6_p.done.v) != nchunks)
            LEC6_WAIT(finished);
        LEC6_STORE(&lec6_p.caller_asleep.v, 0);
        LEC6_UNLOCK();
    }
}
#endif

static int lec6_pool_job(lec6_chunk_fn fn, void *ctx, int64_t nchunks, int threads, int judged)
{
#if defined(LEC6_NO_THREADS)
    (void)threads;
    (void)judged;
    return lec6_run_serial(fn, ctx, nchunks);
#else
    int64_t parts = threads, r;
    if (parts > nchunks)
        parts = nchunks;
    if (parts > LEC6_MAX_THREADS)
        parts = LEC6_MAX_THREADS;
    if (parts <= 1 || nchunks > LEC6_MAX_CHUNKS || lec6_p.closed || !lec6_acquire())
        return lec6_run_serial(fn, ctx, nchunks);
    if (lec6_p.serial_until) {          /* a recent job was late (see the top) */
        if (lec6_now_ns() < lec6_p.serial_until)
            parts = 1;
        else
            lec6_p.serial_until = 0;
    }
    int team = 0;
#if defined(LEC6_PTHREADS)
    team = parts > 1 && lec6_p.team && parts <= lec6_p.team_max();
#endif
    if (parts > 1 && !team) {
        while (lec6_p.workers < parts - 1 && lec6_start_worker(lec6_p.workers + 1))
            lec6_p.workers++;
        if (parts > lec6_p.workers + 1)
            parts = lec6_p.workers + 1;     /* could not start them all: fewer threads */
    }
    if (parts <= 1) {
        lec6_release();
        return lec6_run_serial(fn, ctx, nchunks);
    }

    /* Publish the job.  First close every range under the new generation, so that a worker
     * still holding a word of the previous job cannot claim against the ends written next. */
    uint64_t gen = (LEC6_LOAD(&lec6_p.gen.v) + 1) & 0xffffffffu;
    for (r = 0; r < parts; r++)
        LEC6_STORE(&lec6_p.claim[r].v, gen << 32 | LEC6_CLOSED_RANGE);
    lec6_p.fn = fn;
    lec6_p.ctx = ctx;
    lec6_p.fpmode = LEC6_GET_FPMODE();
    lec6_p.nchunks = nchunks;
    lec6_p.parts = (int)parts;
    LEC6_STORE(&lec6_p.done.v, 0);
    for (r = 0; r < parts; r++)
        lec6_p.end[r] = nchunks * (r + 1) / parts;
    for (r = 0; r < parts; r++)
        LEC6_STORE(&lec6_p.claim[r].v, gen << 32 | (uint64_t)(nchunks * r / parts));
    LEC6_STORE(&lec6_p.gen.v, gen);
    int64_t t0, t1, mine;
    if (team) {
#if defined(LEC6_PTHREADS)
        lec6_team_job j = {gen, (int)parts, 0, 0};
        t0 = lec6_now_ns();
        lec6_p.team(lec6_team_body, &j, (unsigned)parts, 0);
        t1 = j.t1;
        mine = j.mine;
        lec6_wait_done(nchunks);    /* (one of lec6fast's workers, still spinning, may take part) */
        lec6_judge(judged, t0, t1, mine, nchunks);
        LEC6_ADD(&lec6_p.stats_team_jobs.v, 1);
#endif
    } else {
        for (r = 1; r < parts; r++) {
            if (LEC6_LOAD(&lec6_p.asleep[r].v)) {
                LEC6_LOCK();
                LEC6_SIGNAL(wake[r]);
                LEC6_UNLOCK();
            }
        }
        t0 = lec6_now_ns();
        mine = lec6_take_part(0, gen, (int)parts, NULL);
        if ((int64_t)LEC6_ADD(&lec6_p.done.v, (uint64_t)mine) != nchunks) {
            t1 = lec6_now_ns();
            lec6_wait_done(nchunks);
            lec6_judge(judged, t0, t1, mine, nchunks);
        }
    }
    LEC6_ADD(&lec6_p.stats_jobs.v, 1);
    lec6_release();
    return (int)parts;
#endif
}

static int lec6_pool_run(lec6_chunk_fn fn, void *ctx, int64_t nchunks, int threads)
{
    return lec6_pool_job(fn, ctx, nchunks, threads, 1);
}

static int lec6_pool_run_touching(lec6_chunk_fn fn, void *ctx, int64_t nchunks, int threads)
{
    return lec6_pool_job(fn, ctx, nchunks, threads, 0);
}

/* ---------------------------------------------------------------- settings (from Python; on a free-threaded
 * interpreter from any thread at once: the thread setting is an atomic word, the rest is set at import
 * or by the tests and benchmarks only) */

static void lec6_pool_init(int threads)
{
    LEC6_STORE(&lec6_p.threads.v, (uint64_t)(threads < 1 ? 1 : threads));
    lec6_p.spin_ns = LEC6_DEFAULT_SPIN_NS;
    lec6_p.hot_spin_ns = LEC6_DEFAULT_HOT_SPIN_NS;
    LEC6_STORE(&lec6_p.stop_from.v, LEC6_MAX_THREADS);
#if !defined(LEC6_NO_THREADS)
    lec6_init_sync();
#endif
#if defined(LEC6_PTHREADS)
    pthread_atfork(NULL, NULL, lec6_after_fork_in_child);
#endif
}

static int lec6_pool_threads(void) { return (int)LEC6_LOAD(&lec6_p.threads.v); }

/* Wait for the pool to be free (another thread's job is short), then own it. */
static void lec6_own(void)
{
    while (!lec6_acquire()) {
#if !defined(LEC6_NO_THREADS)
        LEC6_YIELD();
#endif
    }
}

/* The thread count: missing workers start with the next job that needs them; workers beyond
 * it stay asleep (no job wakes them) until the count rises again. */
static void lec6_pool_set_threads(int threads)
{
#if defined(LEC6_NO_THREADS)
    threads = 1;
#endif
    threads = threads < 1 ? 1 : (threads > LEC6_MAX_THREADS ? LEC6_MAX_THREADS : threads);
    LEC6_STORE(&lec6_p.threads.v, (uint64_t)threads);
}

/* At interpreter exit: join every worker; later calls (daemon threads) run serially. */
static void lec6_pool_shutdown(void)
{
    lec6_own();
    lec6_p.closed = 1;
#if !defined(LEC6_NO_THREADS)
    lec6_stop_workers();
#endif
    lec6_release();
}

static int lec6_pool_workers(void) { return lec6_p.workers; }

/* Run jobs on the OpenMP team of this GOMP_parallel, omp_get_thread_num and
 * omp_get_max_threads (NULL: on the workers again).  Returns whether jobs now run on a team
 * (never without POSIX threads, nor in a fork() child). */
static int lec6_pool_set_team(lec6_team_fn team, lec6_team_num_fn team_num,
                              lec6_team_num_fn team_max)
{
#if defined(LEC6_PTHREADS)
    lec6_own();                     /* not while a job runs */
    lec6_p.team = team && team_num && team_max && !lec6_p.forked ? team : NULL;
    lec6_p.team_num = team_num;
    lec6_p.team_max = team_max;
    lec6_release();
    return lec6_p.team != NULL;
#else
    (void)team;
    (void)team_num;
    (void)team_max;
    return 0;
#endif
}

static int lec6_pool_team(void) { return lec6_p.team != NULL; }
static int lec6_pool_has_threads(void)
{
#if defined(LEC6_NO_THREADS)
    return 0;
#else
    return 1;
#endif
}

/* Tests: set or clear flush-to-zero (and denormals-are-zero) on the calling thread, as
 * torch.set_flush_denormal does; returns whether it was set, or -1 where unsupported. */
static int lec6_flush_denormals(int on)
{
#ifdef LEC6_FLUSH_BITS
    uint64_t m = LEC6_GET_FPMODE();
    LEC6_SET_FPMODE(on ? (m | LEC6_FLUSH_BITS) : (m & ~(uint64_t)LEC6_FLUSH_BITS));
    return (m & LEC6_FLUSH_BITS) == LEC6_FLUSH_BITS;
#else
    (void)on;
    return -1;
#endif
}

#define LEC6_STORE_HOLD(h) LEC6_STORE(&lec6_p.hold.v, (uint64_t)((h) != 0))

static const lec6_pool lec6_pool_table = {lec6_pool_run, lec6_pool_threads,
                                           lec6_pool_run_touching};

#endif  /* LEC6_THREADS_IMPLEMENTATION */
#endif  /* LEC6_THREADS_H */
