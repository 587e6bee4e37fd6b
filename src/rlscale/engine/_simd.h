/* Shared by the package's C kernels (the sampler's decode loop, the fused trunk): a vectorisable exp.
 *
 * exp(x) for x <= 88 (Cephes' expf: range reduction by ln 2 in two parts, degree-6 polynomial, 2^n by exponent
 * bits; within 2 ulp of libm's expf). Written branch-free so that GCC vectorises the loops that call it (libm's
 * expf is a scalar call). Results below 2^-126 are flushed to 2^-126 (callers multiply masked entries by 0, and a
 * softmax's sum always holds its maximum's exp(0) = 1). */
#ifndef RLSCALE_SIMD_H
#define RLSCALE_SIMD_H
#include <stdint.h>
#include <string.h>

static inline float vexp(float x) {
    x = x < -87.33654f ? -87.33654f : x;
    x = x > 88.3762626647949f ? 88.3762626647949f : x;
    float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
    float r = x - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float y = ((((1.9875691500e-4f * r + 1.3981999507e-3f) * r + 8.3334519073e-3f) * r + 4.1665795894e-2f) * r +
               1.6666665459e-1f) * r + 5.0000001201e-1f;
    y = y * r * r + r + 1.0f;
    int32_t e = ((int32_t)n + 127) << 23;
    float sc;
    memcpy(&sc, &e, sizeof sc);
    return y * sc;
}

#endif
