/* Philox4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy as 1, 2, 3",
 * SC'11), the counter-based generator behind dropout on most GPUs.  Output is a pure function of
 * (counter, key), so any element's draw can be computed independently: the masks are the same for
 * every thread count, chunking and SIMD level.
 *
 * lec6_philox_group(u, group, key, nonce) fills u[0..255] with the 4 output words of the
 * LEC6_PHILOX_BLOCKS = 64 blocks whose counters are
 *     (lo32(group*64 + b), hi32(group*64 + b), nonce[0], nonce[1]),  b = 0..63,
 * word w of block b going to u[64*w + b] (an SoA layout, so the vector code stores whole vectors).
 * lec6_keep_bits(u, last, bits) packs the 256 tests u[i] <= last into bits[0..31], bit i % 8 of
 * byte i / 8; lec6_unpack_bits(bits, w) undoes it for the backward, w[i] = 0 where bit i is set
 * and 0xFFFFFFFF where it is clear, so that w[i] <= 0 tells a kept unit as u[i] <= last did.
 *
 * The arithmetic is exact integer math, so the AVX-512, AVX2, SSE2 and scalar versions below give
 * identical words; which one is compiled depends on the flags of the module's SIMD level.
 */
#ifndef LEC6_PHILOX_H
#define LEC6_PHILOX_H

#include <stdint.h>
#include <string.h>

#define LEC6_PHILOX_BLOCKS 64
#define LEC6_PHILOX_DRAWS (4 * LEC6_PHILOX_BLOCKS)
#define LEC6_PHILOX_MASK_BYTES (LEC6_PHILOX_DRAWS / 8)
#define LEC6_PHILOX_M0 0xD2511F53u
#define LEC6_PHILOX_M1 0xCD9E8D57u
#define LEC6_PHILOX_W0 0x9E3779B9u
#define LEC6_PHILOX_W1 0xBB67AE85u

/* One block, the textbook way: used by the fallback and by the known-answer tests. */
static inline void lec6_philox4x32_10(uint32_t c[4], const uint32_t key[2])
{
    uint32_t k0 = key[0], k1 = key[1];
    for (int r = 0; r < 10; r++) {
        uint64_t p0 = (uint64_t)LEC6_PHILOX_M0 * c[0];
        uint64_t p1 = (uint64_t)LEC6_PHILOX_M1 * c[2];
        uint32_t y0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0;
        uint32_t y2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1;
        c[1] = (uint32_t)p1;
        c[3] = (uint32_t)p0;
        c[0] = y0;
        c[2] = y2;
        k0 += LEC6_PHILOX_W0;
        k1 += LEC6_PHILOX_W1;
    }
}

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__SSE2__) || defined(__AVX2__) || defined(__AVX512F__))
#include <immintrin.h>

#if defined(__AVX512F__)
#define LEC6_VBYTES 64
typedef __m512i lec6_vi;
#define LEC6_MUL_EPU32(a, b) _mm512_mul_epu32((a), (b))
#define LEC6_HI_BLEND(even, odd) _mm512_mask_blend_epi32(0xAAAA, (even), (odd))
#elif defined(__AVX2__)
#define LEC6_VBYTES 32
typedef __m256i lec6_vi;
#define LEC6_MUL_EPU32(a, b) _mm256_mul_epu32((a), (b))
#define LEC6_HI_BLEND(even, odd) _mm256_blend_epi32((even), (odd), 0xAA)
#else
#define LEC6_VBYTES 16
typedef __m128i lec6_vi;
#define LEC6_MUL_EPU32(a, b) _mm_mul_epu32((a), (b))
#endif

#define LEC6_LANES (LEC6_VBYTES / 4)
typedef uint32_t lec6_u32v __attribute__((vector_size(LEC6_VBYTES)));
typedef uint64_t lec6_u64v __attribute__((vector_size(LEC6_VBYTES)));

/* hi and lo 32-bit halves of a * m in every lane (mul_epu32 multiplies the even lanes). */
static inline void lec6_mulhilo(lec6_u32v a, uint32_t m, lec6_u32v *hi, lec6_u32v *lo)
{
    const lec6_u64v mv = (lec6_u64v){0} + (uint64_t)m;
    lec6_u64v even = (lec6_u64v)LEC6_MUL_EPU32((lec6_vi)a, (lec6_vi)mv);
    lec6_u64v odd = (lec6_u64v)LEC6_MUL_EPU32((lec6_vi)((lec6_u64v)a >> 32), (lec6_vi)mv);
#ifdef LEC6_HI_BLEND
    *hi = (lec6_u32v)LEC6_HI_BLEND((lec6_vi)(even >> 32), (lec6_vi)odd);
    *lo = a * m;
#else  /* SSE2 has neither a dword blend nor a 32-bit low multiply */
    const lec6_u64v low = (lec6_u64v){0} + 0xFFFFFFFFull;
    *hi = (lec6_u32v)((even >> 32) | (odd & ~low));
    *lo = (lec6_u32v)((even & low) | (odd << 32));
#endif
}

#define LEC6_SETS (LEC6_PHILOX_BLOCKS / LEC6_LANES)

/* All the group's vectors go through each round together: a round is a chain of about
 * seven dependent instructions, and the independent vectors fill that latency. */
static inline void lec6_philox_group(uint32_t *u, uint64_t group, const uint32_t key[2],
                                     const uint32_t nonce[2])
{
    const uint64_t first = group * LEC6_PHILOX_BLOCKS;
    lec6_u32v c0[LEC6_SETS], c1[LEC6_SETS], c2[LEC6_SETS], c3[LEC6_SETS];
    uint32_t k0 = key[0], k1 = key[1];
    for (int s = 0; s < LEC6_SETS; s++) {
        for (int b = 0; b < LEC6_LANES; b++)
            c0[s][b] = (uint32_t)(first + s * LEC6_LANES + b);
        c1[s] = (lec6_u32v){0} + (uint32_t)(first >> 32);  /* first is a multiple of 64: no carry */
        c2[s] = (lec6_u32v){0} + nonce[0];
        c3[s] = (lec6_u32v){0} + nonce[1];
    }
    for (int r = 0; r < 10; r++) {
        for (int s = 0; s < LEC6_SETS; s++) {
            lec6_u32v h0, l0, h1, l1;
            lec6_mulhilo(c0[s], LEC6_PHILOX_M0, &h0, &l0);
            lec6_mulhilo(c2[s], LEC6_PHILOX_M1, &h1, &l1);
            c0[s] = h1 ^ c1[s] ^ k0;
            c2[s] = h0 ^ c3[s] ^ k1;
            c1[s] = l1;
            c3[s] = l0;
        }
        k0 += LEC6_PHILOX_W0;
        k1 += LEC6_PHILOX_W1;
    }
    for (int s = 0; s < LEC6_SETS; s++) {
        memcpy(u + s * LEC6_LANES, &c0[s], LEC6_VBYTES);
        memcpy(u + LEC6_PHILOX_BLOCKS + s * LEC6_LANES, &c1[s], LEC6_VBYTES);
        memcpy(u + 2 * LEC6_PHILOX_BLOCKS + s * LEC6_LANES, &c2[s], LEC6_VBYTES);
        memcpy(u + 3 * LEC6_PHILOX_BLOCKS + s * LEC6_LANES, &c3[s], LEC6_VBYTES);
    }
}

/* One compare and one movemask per vector (AVX2 has no unsigned compare: u <= last is
 * max(u, last) == last; SSE2 has no max_epu32 either: flip the sign bits and compare signed). */
static inline void lec6_keep_bits(const uint32_t *u, uint32_t last, uint8_t *bits)
{
#if defined(__AVX512F__)
    const __m512i l = _mm512_set1_epi32((int)last);
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i += 16) {
        __mmask16 k = _mm512_cmple_epu32_mask(_mm512_loadu_si512((const void *)(u + i)), l);
        bits[i / 8] = (uint8_t)k;
        bits[i / 8 + 1] = (uint8_t)(k >> 8);
    }
#elif defined(__AVX2__)
    const __m256i l = _mm256_set1_epi32((int)last);
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(u + i));
        __m256i le = _mm256_cmpeq_epi32(_mm256_max_epu32(v, l), l);
        bits[i / 8] = (uint8_t)_mm256_movemask_ps(_mm256_castsi256_ps(le));
    }
#else
    const __m128i sign = _mm_set1_epi32((int)0x80000000u);
    const __m128i l = _mm_xor_si128(_mm_set1_epi32((int)last), sign);
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i += 8) {
        __m128i a = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(u + i)), sign);
        __m128i b = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(u + i + 4)), sign);
        int gt = _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(a, l)))
               | _mm_movemask_ps(_mm_castsi128_ps(_mm_cmpgt_epi32(b, l))) << 4;
        bits[i / 8] = (uint8_t)~gt;
    }
#endif
}

static inline void lec6_unpack_bits(const uint8_t *bits, uint32_t *w)
{
#if defined(__AVX512F__)
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i += 16) {
        __mmask16 k = (__mmask16)(bits[i / 8] | (unsigned)bits[i / 8 + 1] << 8);
        _mm512_storeu_si512((void *)(w + i), _mm512_maskz_set1_epi32((__mmask16)~k, -1));
    }
#elif defined(__AVX2__)
    const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i += 8) {
        __m256i b = _mm256_and_si256(_mm256_set1_epi32(bits[i / 8]), sel);
        _mm256_storeu_si256((__m256i *)(w + i), _mm256_cmpeq_epi32(b, _mm256_setzero_si256()));
    }
#else
    const __m128i lo = _mm_setr_epi32(1, 2, 4, 8), hi = _mm_setr_epi32(16, 32, 64, 128);
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i += 8) {
        __m128i b = _mm_set1_epi32(bits[i / 8]);
        _mm_storeu_si128((__m128i *)(w + i), _mm_cmpeq_epi32(_mm_and_si128(b, lo), _mm_setzero_si128()));
        _mm_storeu_si128((__m128i *)(w + i + 4), _mm_cmpeq_epi32(_mm_and_si128(b, hi), _mm_setzero_si128()));
    }
#endif
}

#else  /* other compilers and CPUs: the same words, one block at a time */

static inline void lec6_philox_group(uint32_t *u, uint64_t group, const uint32_t key[2],
                                     const uint32_t nonce[2])
{
    for (int b = 0; b < LEC6_PHILOX_BLOCKS; b++) {
        uint64_t ctr = group * LEC6_PHILOX_BLOCKS + b;
        uint32_t c[4] = {(uint32_t)ctr, (uint32_t)(ctr >> 32), nonce[0], nonce[1]};
        lec6_philox4x32_10(c, key);
        for (int w = 0; w < 4; w++)
            u[LEC6_PHILOX_BLOCKS * w + b] = c[w];
    }
}

static inline void lec6_keep_bits(const uint32_t *u, uint32_t last, uint8_t *bits)
{
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i += 8) {
        unsigned b = 0;
        for (int j = 0; j < 8; j++)
            b |= (unsigned)(u[i + j] <= last) << j;
        bits[i / 8] = (uint8_t)b;
    }
}

static inline void lec6_unpack_bits(const uint8_t *bits, uint32_t *w)
{
    for (int i = 0; i < LEC6_PHILOX_DRAWS; i++)
        w[i] = (bits[i / 8] >> (i % 8)) & 1 ? 0u : 0xFFFFFFFFu;
}

#endif
#endif
