/* The decode loop of the lab's TinyGPT sampler in C (rlscale.engine.native compiles it on first use).
 *
 * Same math as the torch decode loop in tiny_sampler.py, on the same folded weights (norm gains folded into the
 * next projection, attention scale into the query columns, RoPE's rotate_half into two extra column blocks):
 *   per layer  y5 = rms(x) @ wqkvr (d, 5d) = [q, k, v, rot(q), rot(k)];  q' = q cos + rot(q) sin, k' likewise
 *              att_h = softmax(q'_h . K_h[pad:tc+1]) V_h[pad:tc+1];     x += att @ wo
 *              [g, u] = rms(x) @ wgu (d, 2ff);                           x += (silu(g) * u) @ wd
 *   logits = rms(x) @ head_t (d, V);   next token = argmax(logits + noise_t) (noise: T * Gumbel, or none = greedy)
 * A row ends after EOS or its token budget; ended rows are skipped (no compaction needed). One thread: the lab
 * runs one process per core. The matmuls are register-blocked (4 rows x 16-64 columns of GCC vectors) because the
 * operands are tiny (d = 48..192): BLAS calls of this size are dominated by their fixed cost.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_simd.h"  /* vexp */

/* SIMD width of the build target: 16 floats with AVX-512, else 8 (AVX2 / NEON pairs / generic); CB vectors of
 * columns x 4 rows of accumulators stay in registers (16 of 32 zmm, or 8 of 16 ymm). */
#if defined(__AVX512F__)
#define VL 16
#define CB 4
#else
#define VL 8
#define CB 2
#endif
typedef float vf __attribute__((vector_size(VL * sizeof(float))));

static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }

/* Y[:RR, :VL*CC] (+)= X[:RR, :n] @ W[:n, :VL*CC] (row strides n, m, m); RR and CC are constants after inlining. */
static inline __attribute__((always_inline)) void block(int RR, int CC, const float *X, int n, const float *W,
                                                        int m, float *Y, int accumulate) {
    vf acc[4][CB];
    for (int r = 0; r < RR; r++)
        for (int c = 0; c < CC; c++)
            acc[r][c] = accumulate ? vload(Y + (size_t)r * m + VL * c) : (vf){0};
    for (int p = 0; p < n; p++) {
        vf w[CB];
        for (int c = 0; c < CC; c++) w[c] = vload(W + (size_t)p * m + VL * c);
        for (int r = 0; r < RR; r++) {
            float xv = X[(size_t)r * n + p];
            for (int c = 0; c < CC; c++) acc[r][c] += xv * w[c];
        }
    }
    for (int r = 0; r < RR; r++)
        for (int c = 0; c < CC; c++) vstore(Y + (size_t)r * m + VL * c, acc[r][c]);
}

#define BLOCK_ROWS(RR, X_, Y_)                                                   \
    do {                                                                         \
        if (cc == CB) block(RR, CB, X_, n, W + j0, m, Y_ + j0, accumulate);      \
        else block(RR, 1, X_, n, W + j0, m, Y_ + j0, accumulate);                \
    } while (0)

/* Y (R, m) (+)= X (R, n) @ W (n, m), all row-major and contiguous. */
static void matmul(const float *X, int R, int n, const float *W, int m, float *Y, int accumulate) {
    int mv = m / VL * VL;
    for (int r0 = 0; r0 < R; r0 += 4) {
        int rr = R - r0 < 4 ? R - r0 : 4;
        const float *Xr = X + (size_t)r0 * n;
        float *Yr = Y + (size_t)r0 * m;
        for (int j0 = 0; j0 < mv;) {
            int cc = (mv - j0) / VL >= CB ? CB : 1;
            if (rr == 4) BLOCK_ROWS(4, Xr, Yr);
            else
                for (int r = 0; r < rr; r++) BLOCK_ROWS(1, Xr + (size_t)r * n, Yr + (size_t)r * m);
            j0 += cc * VL;
        }
        for (int r = 0; r < rr; r++)  /* columns past the last multiple of VL */
            for (int j = mv; j < m; j++) {
                float s = accumulate ? Yr[(size_t)r * m + j] : 0.0f;
                for (int p = 0; p < n; p++) s += Xr[(size_t)r * n + p] * W[(size_t)p * m + j];
                Yr[(size_t)r * m + j] = s;
            }
    }
}

/* out = x * rsqrt(mean(x^2) + eps), per row (the gain is folded into the next projection). */
static void rms_rows(const float *x, int R, int d, float eps, float *out) {
    for (int r = 0; r < R; r++) {
        const float *xr = x + (size_t)r * d;
        float ss = 0.0f;
        for (int j = 0; j < d; j++) ss += xr[j] * xr[j];
        float s = 1.0f / sqrtf(ss / (float)d + eps);
        for (int j = 0; j < d; j++) out[(size_t)r * d + j] = xr[j] * s;
    }
}

/*
 * Decode up to `steps` tokens for B rows whose prompts were prefilled into the caches (slots [0, P)).
 *   emb (V, d); head_t (d, V); per layer l: wqkvr[l] (d, 5d), wo[l] (d, d), wgu[l] (d, 2ff), wd[l] (ff, d), eps[l]
 *   K, Vc: (nL, B, H, Tmax, hd), slots [pad[b], P) hold row b's prompt keys/values
 *   cos_d, sin_d: (B, steps, hd) RoPE tables at positions len_b + t;  pad, limit: (B,)
 *   noise: (steps, B, V) added to the logits before the argmax, or NULL (greedy);  logits0: (B, V) after prefill
 * Outputs: tokens (steps, B) and all_logits (steps, B, V) for the steps each row was active; end_at (B,) the number
 * of tokens kept once a row ended (EOS or limit), else left as given. Returns the number of steps run.
 */
int tiny_decode(int B, int d, int H, int hd, int ff, int V, int nL, int P, int steps, int Tmax,
                const float *emb, const float *head_t, float norm_eps, const float *const *wqkvr,
                const float *const *wo, const float *const *wgu, const float *const *wd, const float *eps,
                float *K, float *Vc, const float *cos_d, const float *sin_d, const int64_t *pad,
                const int64_t *limit, const float *noise, const float *logits0, int64_t eos, int64_t *tokens,
                float *all_logits, int64_t *end_at) {
    size_t layer_stride = (size_t)B * H * Tmax * hd;
    float *buf = malloc(sizeof(float) * ((size_t)B * (3 * d + 5 * d + 2 * ff + ff + V) + (size_t)(P + steps)));
    if (!buf) return -1;
    float *x = buf, *h = x + (size_t)B * d, *att = h + (size_t)B * d, *y5 = att + (size_t)B * d;
    float *gu = y5 + (size_t)B * 5 * d, *a = gu + (size_t)B * 2 * ff, *logits = a + (size_t)B * ff;
    float *sc = logits + (size_t)B * V;  /* attention scores of one (row, head) */
    int *rows = malloc(sizeof(int) * (size_t)B);
    int64_t *nxt = malloc(sizeof(int64_t) * (size_t)B);
    if (!rows || !nxt) { free(buf); free(rows); free(nxt); return -1; }
    memcpy(logits, logits0, sizeof(float) * (size_t)B * V);
    int na = B;  /* active rows, in batch order; logits/x rows are indexed by position in `rows` */
    for (int b = 0; b < B; b++) rows[b] = b;
    int t = 0;
    for (; t < steps; t++) {
        /* ---- choose the next token of every active row; end rows on EOS or budget */
        int keep = 0;
        for (int i = 0; i < na; i++) {
            int b = rows[i];
            const float *lg = logits + (size_t)i * V;
            const float *nz = noise ? noise + ((size_t)t * B + b) * V : NULL;
            int best = 0;
            float bv = nz ? lg[0] + nz[0] : lg[0];
            for (int v = 1; v < V; v++) {
                float s = nz ? lg[v] + nz[v] : lg[v];
                if (s > bv) { bv = s; best = v; }
            }
            tokens[(size_t)t * B + b] = best;
            memcpy(all_logits + ((size_t)t * B + b) * V, lg, sizeof(float) * V);
            if (best == eos || t + 1 >= limit[b]) { end_at[b] = t + 1; continue; }
            /* compact in place: the survivor's state moves to position `keep` */
            if (keep != i) {
                memcpy(logits + (size_t)keep * V, lg, sizeof(float) * V);
            }
            rows[keep] = b;
            nxt[keep] = best;
            keep++;
        }
        na = keep;
        if (na == 0 || t == steps - 1) { t++; break; }
        /* ---- one decode step for the active rows: feed nxt at cache slot tc */
        int tc = P + t;
        for (int i = 0; i < na; i++) memcpy(x + (size_t)i * d, emb + (size_t)nxt[i] * d, sizeof(float) * d);
        for (int l = 0; l < nL; l++) {
            float *Kl = K + l * layer_stride, *Vl = Vc + l * layer_stride;
            rms_rows(x, na, d, eps[l], h);
            matmul(h, na, d, wqkvr[l], 5 * d, y5, 0);
            for (int i = 0; i < na; i++) {
                int b = rows[i];
                const float *yr = y5 + (size_t)i * 5 * d;
                const float *cs = cos_d + ((size_t)b * steps + t) * hd, *sn = sin_d + ((size_t)b * steps + t) * hd;
                for (int hh = 0; hh < H; hh++) {
                    float q[hd];
                    float *kslot = Kl + (((size_t)b * H + hh) * Tmax + tc) * hd;
                    float *vslot = Vl + (((size_t)b * H + hh) * Tmax + tc) * hd;
                    for (int j = 0; j < hd; j++) {
                        int o = hh * hd + j;
                        q[j] = yr[o] * cs[j] + yr[3 * d + o] * sn[j];
                        kslot[j] = yr[d + o] * cs[j] + yr[4 * d + o] * sn[j];
                        vslot[j] = yr[2 * d + o];
                    }
                    const float *Kh = Kl + ((size_t)b * H + hh) * Tmax * hd;
                    const float *Vh = Vl + ((size_t)b * H + hh) * Tmax * hd;
                    int s0 = (int)pad[b];
                    float mx = -INFINITY;
                    for (int s = s0; s <= tc; s++) {
                        const float *kr = Kh + (size_t)s * hd;
                        float dot = 0.0f;
                        for (int j = 0; j < hd; j++) dot += q[j] * kr[j];
                        sc[s] = dot;
                        if (dot > mx) mx = dot;
                    }
                    float z = 0.0f;
                    for (int s = s0; s <= tc; s++) { sc[s] = vexp(sc[s] - mx); z += sc[s]; }
                    float *out = att + (size_t)i * d + hh * hd;
                    for (int j = 0; j < hd; j++) out[j] = 0.0f;
                    for (int s = s0; s <= tc; s++) {
                        const float *vr = Vh + (size_t)s * hd;
                        float p = sc[s] / z;
                        for (int j = 0; j < hd; j++) out[j] += p * vr[j];
                    }
                }
            }
            matmul(att, na, d, wo[l], d, x, 1);
            rms_rows(x, na, d, eps[l], h);
            matmul(h, na, d, wgu[l], 2 * ff, gu, 0);
            for (int i = 0; i < na; i++) {
                const float *g = gu + (size_t)i * 2 * ff, *u = g + ff;
                float *ar = a + (size_t)i * ff;
                for (int j = 0; j < ff; j++) ar[j] = g[j] / (1.0f + vexp(-g[j])) * u[j];
            }
            matmul(a, na, ff, wd[l], d, x, 1);
        }
        rms_rows(x, na, d, norm_eps, h);
        matmul(h, na, d, head_t, V, logits, 0);
    }
    free(buf);
    free(rows);
    free(nxt);
    return t;
}

/*
 * Prefill U distinct left-padded prompts of width P (the torch prefill's math, see tiny_sampler.py) and fill the KV
 * cache of every row b from its prompt inv[b]: slots [0, P) of K, Vc (nL, B, H, Tmax, hd).
 *   ids (U, P) token ids; upad (U,) left padding; cos_p, sin_p (U, P, hd) RoPE tables at the prompt positions
 *   (real tokens counted from 0, pads at 0); weights as tiny_decode.
 * Real queries attend to the real keys at or before them; a pad query attends to itself (its output only reaches
 * pad positions, whose cache slots are never read). Output: logits (U, V) at the last position. Returns 0, or -1
 * when out of memory.
 */
int tiny_prefill(int U, int B, int d, int H, int hd, int ff, int V, int nL, int P, int Tmax, const int64_t *ids,
                 const int64_t *upad, const int64_t *inv, const float *emb, const float *head_t, float norm_eps,
                 const float *const *wqkvr, const float *const *wo, const float *const *wgu,
                 const float *const *wd, const float *eps, const float *cos_p, const float *sin_p, float *K,
                 float *Vc, float *logits) {
    size_t N = (size_t)U * P, layer_stride = (size_t)B * H * Tmax * hd;
    size_t kv = (size_t)U * H * P * hd;
    float *buf = malloc(sizeof(float) * (N * (3 * d + 5 * d + 2 * ff + ff) + 2 * kv + (size_t)P + (size_t)U * d));
    if (!buf) return -1;
    float *x = buf, *h = x + N * d, *att = h + N * d, *y5 = att + N * d, *gu = y5 + N * 5 * d, *a = gu + N * 2 * ff;
    float *kp = a + N * ff, *vp = kp + kv, *sc = vp + kv, *last = sc + P;  /* kp, vp: (U, H, P, hd) */
    for (size_t r = 0; r < N; r++) memcpy(x + r * d, emb + (size_t)ids[r] * d, sizeof(float) * d);
    for (int l = 0; l < nL; l++) {
        rms_rows(x, (int)N, d, eps[l], h);
        matmul(h, (int)N, d, wqkvr[l], 5 * d, y5, 0);
        for (int u = 0; u < U; u++) {
            for (int hh = 0; hh < H; hh++) {
                float *Kh = kp + ((size_t)u * H + hh) * P * hd, *Vh = vp + ((size_t)u * H + hh) * P * hd;
                for (int i = 0; i < P; i++) {  /* RoPE'd keys and the values of this (prompt, head) */
                    const float *yr = y5 + ((size_t)u * P + i) * 5 * d;
                    const float *cs = cos_p + ((size_t)u * P + i) * hd, *sn = sin_p + ((size_t)u * P + i) * hd;
                    for (int j = 0; j < hd; j++) {
                        int o = hh * hd + j;
                        Kh[(size_t)i * hd + j] = yr[d + o] * cs[j] + yr[4 * d + o] * sn[j];
                        Vh[(size_t)i * hd + j] = yr[2 * d + o];
                    }
                }
                int s0 = (int)upad[u];
                for (int i = 0; i < P; i++) {
                    const float *yr = y5 + ((size_t)u * P + i) * 5 * d;
                    const float *cs = cos_p + ((size_t)u * P + i) * hd, *sn = sin_p + ((size_t)u * P + i) * hd;
                    float q[hd];
                    for (int j = 0; j < hd; j++) q[j] = yr[hh * hd + j] * cs[j] + yr[3 * d + hh * hd + j] * sn[j];
                    int lo = i < s0 ? i : s0;  /* a pad query sees only itself */
                    float mx = -INFINITY;
                    for (int s = lo; s <= i; s++) {
                        const float *kr = Kh + (size_t)s * hd;
                        float dot = 0.0f;
                        for (int j = 0; j < hd; j++) dot += q[j] * kr[j];
                        sc[s] = dot;
                        if (dot > mx) mx = dot;
                    }
                    float z = 0.0f;
                    for (int s = lo; s <= i; s++) { sc[s] = vexp(sc[s] - mx); z += sc[s]; }
                    float *out = att + ((size_t)u * P + i) * d + hh * hd;
                    for (int j = 0; j < hd; j++) out[j] = 0.0f;
                    for (int s = lo; s <= i; s++) {
                        const float *vr = Vh + (size_t)s * hd;
                        float p = sc[s] / z;
                        for (int j = 0; j < hd; j++) out[j] += p * vr[j];
                    }
                }
            }
        }
        for (int b = 0; b < B; b++)  /* every row's cache slots [0, P) from its prompt */
            for (int hh = 0; hh < H; hh++) {
                size_t src = ((size_t)inv[b] * H + hh) * P * hd;
                size_t dst = (size_t)l * layer_stride + ((size_t)b * H + hh) * Tmax * hd;
                memcpy(K + dst, kp + src, sizeof(float) * P * hd);
                memcpy(Vc + dst, vp + src, sizeof(float) * P * hd);
            }
        matmul(att, (int)N, d, wo[l], d, x, 1);
        rms_rows(x, (int)N, d, eps[l], h);
        matmul(h, (int)N, d, wgu[l], 2 * ff, gu, 0);
        for (size_t r = 0; r < N; r++) {
            const float *g = gu + r * 2 * ff, *uu = g + ff;
            float *ar = a + r * ff;
            for (int j = 0; j < ff; j++) ar[j] = g[j] / (1.0f + vexp(-g[j])) * uu[j];
        }
        matmul(a, (int)N, ff, wd[l], d, x, 1);
    }
    for (int u = 0; u < U; u++) memcpy(last + (size_t)u * d, x + ((size_t)u * P + P - 1) * d, sizeof(float) * d);
    rms_rows(last, U, d, norm_eps, h);
    matmul(h, U, d, head_t, V, logits, 0);
    free(buf);
    return 0;
}
