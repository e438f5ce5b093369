/*
 * SHA-256 of two 4096-byte messages at once, with the x86 SHA extensions.
 *
 * fs-verity hashes every 4 KiB block of a file on its own: a file is thousands of independent
 * SHA-256 computations of exactly 4096 bytes. One SHA-256 stream cannot use the SHA unit fully:
 * every sha256rnds2 (two rounds) needs the result of the one before, so a stream runs at the
 * instruction's latency (OpenSSL's SHA-NI code: about 1.6 GB/s on the 2-core AMD EPYC this was
 * measured on). Two independent streams, their instructions interleaved, fill the gaps.
 *
 * Written from the instruction definitions (Intel SDM, SHA256RNDS2 / SHA256MSG1 / SHA256MSG2)
 * and FIPS 180-4. The state of a stream is kept as the instructions want it: one register
 * holding A, B, E, F and one holding C, D, G, H (highest lane first). The message schedule is
 * computed four words at a time:
 *   W[t..t+3] = msg2(msg1(W[t-16..t-13], W[t-12..t-9]) + W[t-7..t-4], W[t-4..t-1]).
 *
 * Used only where the CPU has the extensions (CPUID), and only after a self-test against the
 * OpenSSL SHA-256 that verity.c uses otherwise (sha256x2_ready()).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cfs.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>

#define SHA_TARGET __attribute__((target("sha,sse4.1,ssse3")))

static const uint32_t K256[64] = {
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

/* H(0) of FIPS 180-4 §5.3.3. */
#define H0_A 0x6a09e667u
#define H0_B 0xbb67ae85u
#define H0_C 0x3c6ef372u
#define H0_D 0xa54ff53au
#define H0_E 0x510e527fu
#define H0_F 0x9b05688cu
#define H0_G 0x1f83d9abu
#define H0_H 0x5be0cd19u

/* The last block of every 4096-byte message: 0x80, zeros, the length in bits (32768) big-endian. */
static const unsigned char PAD4K[64] = {0x80, [62] = 0x80, [63] = 0x00};

/* One 64-byte block of each of two streams (state s0 = ABEF, s1 = CDGH per stream). */
SHA_TARGET static inline void blocks2(__m128i s0[2], __m128i s1[2], const unsigned char *p0, const unsigned char *p1) {
  const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
  __m128i a0 = s0[0], c0 = s1[0], a1 = s0[1], c1 = s1[1];
  __m128i m0[4], m1[4];
  for (int k = 0; k < 4; k++) {
    m0[k] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p0 + 16 * k)), bswap);
    m1[k] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p1 + 16 * k)), bswap);
  }
#pragma GCC unroll 16
  for (int k = 0; k < 16; k++) {
    if (k >= 4) {
      /* m[k % 4] holds W of group k-4; groups k-3, k-2, k-1 are the next three. */
      m0[k & 3] = _mm_sha256msg2_epu32(
        _mm_add_epi32(_mm_sha256msg1_epu32(m0[k & 3], m0[(k + 1) & 3]), _mm_alignr_epi8(m0[(k + 3) & 3], m0[(k + 2) & 3], 4)), m0[(k + 3) & 3]);
      m1[k & 3] = _mm_sha256msg2_epu32(
        _mm_add_epi32(_mm_sha256msg1_epu32(m1[k & 3], m1[(k + 1) & 3]), _mm_alignr_epi8(m1[(k + 3) & 3], m1[(k + 2) & 3], 4)), m1[(k + 3) & 3]);
    }
    const __m128i kk = _mm_loadu_si128((const __m128i *)&K256[4 * k]);
    const __m128i w0 = _mm_add_epi32(m0[k & 3], kk);
    const __m128i w1 = _mm_add_epi32(m1[k & 3], kk);
    /* Two rounds with the low two words, two with the high two; ABEF and CDGH trade places twice. */
    c0 = _mm_sha256rnds2_epu32(c0, a0, w0);
    c1 = _mm_sha256rnds2_epu32(c1, a1, w1);
    a0 = _mm_sha256rnds2_epu32(a0, c0, _mm_shuffle_epi32(w0, 0x0e));
    a1 = _mm_sha256rnds2_epu32(a1, c1, _mm_shuffle_epi32(w1, 0x0e));
  }
  s0[0] = _mm_add_epi32(s0[0], a0);
  s1[0] = _mm_add_epi32(s1[0], c0);
  s0[1] = _mm_add_epi32(s0[1], a1);
  s1[1] = _mm_add_epi32(s1[1], c1);
}

SHA_TARGET static void store_digest(__m128i abef, __m128i cdgh, unsigned char *out) {
  uint32_t w[8] = {
    (uint32_t)_mm_extract_epi32(abef, 3), (uint32_t)_mm_extract_epi32(abef, 2), /* A, B */
    (uint32_t)_mm_extract_epi32(cdgh, 3), (uint32_t)_mm_extract_epi32(cdgh, 2), /* C, D */
    (uint32_t)_mm_extract_epi32(abef, 1), (uint32_t)_mm_extract_epi32(abef, 0), /* E, F */
    (uint32_t)_mm_extract_epi32(cdgh, 1), (uint32_t)_mm_extract_epi32(cdgh, 0), /* G, H */
  };
  for (int i = 0; i < 8; i++) {
    uint32_t be = __builtin_bswap32(w[i]);
    memcpy(out + 4 * i, &be, 4);
  }
}

SHA_TARGET static void sha256x2_4k_impl(const unsigned char *a, const unsigned char *b, unsigned char *da, unsigned char *db) {
  __m128i s0[2], s1[2];
  s0[0] = s0[1] = _mm_set_epi32((int)H0_A, (int)H0_B, (int)H0_E, (int)H0_F);
  s1[0] = s1[1] = _mm_set_epi32((int)H0_C, (int)H0_D, (int)H0_G, (int)H0_H);
  for (int i = 0; i < VERITY_BLOCK; i += 64) blocks2(s0, s1, a + i, b + i);
  blocks2(s0, s1, PAD4K, PAD4K);
  store_digest(s0[0], s1[0], da);
  store_digest(s0[1], s1[1], db);
}

static int cpu_has_sha(void) {
  unsigned int a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
  if (!(c & (1u << 9)) || !(c & (1u << 19))) return 0; /* SSSE3, SSE4.1 */
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
  return (b & (1u << 29)) != 0; /* SHA */
}

void sha256x2_4k(const unsigned char *a, const unsigned char *b, unsigned char *da, unsigned char *db) {
  sha256x2_4k_impl(a, b, da, db);
}

static pthread_once_t x2_once = PTHREAD_ONCE_INIT;
static int x2_ok;

/* The CPU has the extensions and the result agrees with the given SHA-256 on test blocks. */
static void x2_check(void) {
  if (getenv("CFS_NO_SHA_X2") || !cpu_has_sha() || !sha_load()) return;
  static unsigned char blk[2][VERITY_BLOCK];
  uint32_t x = 0x12345678u;
  for (int t = 0; t < 2; t++)
    for (int i = 0; i < VERITY_BLOCK; i++) {
      x = x * 1103515245u + 12345u;
      blk[t][i] = (unsigned char)(x >> 24);
    }
  unsigned char got[2][32], want[2][32];
  sha256x2_4k_impl(blk[0], blk[1], got[0], got[1]);
  for (int t = 0; t < 2; t++) {
    _Alignas(16) unsigned char ctx[512];
    sha_impls[1].init(ctx);
    sha_impls[1].update(ctx, blk[t], VERITY_BLOCK);
    sha_impls[1].final(want[t], ctx);
  }
  x2_ok = memcmp(got, want, sizeof got) == 0;
}

int sha256x2_ready(void) {
  pthread_once(&x2_once, x2_check);
  return x2_ok;
}

#else

void sha256x2_4k(const unsigned char *a, const unsigned char *b, unsigned char *da, unsigned char *db) {
  (void)a, (void)b, (void)da, (void)db;
  abort(); /* never called: sha256x2_ready() is 0 */
}

int sha256x2_ready(void) {
  return 0;
}

#endif
