"""What this CPU and this build offer the kernel modules: SIMD levels and OpenMP.

Compiled once, with baseline flags, so it imports on every CPU the wheel supports.
"""

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
    #ifdef _OPENMP
    #include <omp.h>
    static int lec6_openmp(void) { return _OPENMP; }
    static int lec6_omp_procs(void) { return omp_get_num_procs(); }
    #else
    static int lec6_openmp(void) { return 0; }
    static int lec6_omp_procs(void) { return 1; }
    #endif
    """
    int lec6_cpu_avx2() nogil
    int lec6_cpu_avx512() nogil
    int lec6_openmp() nogil
    int lec6_omp_procs() nogil


def cpu_simd_levels():
    """SIMD levels this CPU (and OS) can run, from least to most capable."""
    levels = ["baseline"]
    if lec6_cpu_avx2():
        levels.append("avx2")
    if lec6_cpu_avx512():
        levels.append("avx512")
    return tuple(levels)


def openmp_version():
    """The _OPENMP date macro this build was compiled with (e.g. 201511), or 0 if serial."""
    return lec6_openmp()


def omp_num_procs():
    return lec6_omp_procs()
