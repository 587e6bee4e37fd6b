/* The non-matmul kernels of the lab TinyGPT's fused forward/backward (rlscale.models.fused drives them; the
 * matmuls stay in torch, whose BLAS is faster than anything hand-written at these shapes).
 *
 * The rows of one call are a packed "grouped" batch: G prompt streams of P positions (left-padded, mask pm), then
 * R completion streams of C positions, completion r continuing prompt group[r]. Row index: prompt (g, i) -> g*P+i,
 * completion (r, t) -> G*P + r*C + t. Attention masks are exactly rlscale.models.tiny's:
 *   prompt query (g, i) sees prompt keys j <= i that are real, and always itself (so a pad row is never empty);
 *   completion query (r, t) sees the real prompt keys of group[r] and completion keys s <= t of its own row.
 * Everything is fp32 and single-threaded (each trainer worker thread runs its own micro-batch); the caller passes
 * contiguous row-major buffers. No -ffast-math (see rlscale.engine.native).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../engine/_simd.h"  /* vexp */

/* out = w * (x * rstd), rstd = 1 / sqrt(mean(x^2) + eps), per row of d. */
void rms_fwd(int64_t N, int d, const float *x, const float *w, float eps, float *out, float *rstd) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * d;
        float ss = 0.f;
        for (int j = 0; j < d; j++) ss += xi[j] * xi[j];
        float r = 1.0f / sqrtf(ss / (float)d + eps);
        rstd[i] = r;
        float *oi = out + i * d;
        for (int j = 0; j < d; j++) oi[j] = w[j] * (xi[j] * r);
    }
}

/* dx += rstd * (dy - y * mean(dy * y)) with y = x * rstd, dy = dout * w;  dw += sum_rows dout * y. */
void rms_bwd(int64_t N, int d, const float *x, const float *w, const float *rstd, const float *dout, float *dx,
             float *dw) {
    for (int64_t i = 0; i < N; i++) {
        const float *xi = x + i * d, *gi = dout + i * d;
        float r = rstd[i], dot = 0.f;
        for (int j = 0; j < d; j++) {
            float y = xi[j] * r;
            dot += gi[j] * w[j] * y;
            dw[j] += gi[j] * y;
        }
        dot /= (float)d;
        float *di = dx + i * d;
        for (int j = 0; j < d; j++) di[j] += r * (gi[j] * w[j] - xi[j] * r * dot);
    }
}

/* gu rows (N, 2ff) = [g, u] -> out (N, ff) = silu(g) * u. */
void swiglu_fwd(int64_t N, int ff, const float *gu, float *out) {
    for (int64_t i = 0; i < N; i++) {
        const float *g = gu + i * 2 * ff, *u = g + ff;
        float *o = out + i * ff;
        for (int j = 0; j < ff; j++) o[j] = g[j] / (1.0f + vexp(-g[j])) * u[j];
    }
}

/* d[g, u] from dout: dg = dout * u * s * (1 + g * (1 - s)), du = dout * silu(g), s = sigmoid(g). */
void swiglu_bwd(int64_t N, int ff, const float *gu, const float *dout, float *dgu) {
    for (int64_t i = 0; i < N; i++) {
        const float *g = gu + i * 2 * ff, *u = g + ff, *go = dout + i * ff;
        float *dg = dgu + i * 2 * ff, *du = dg + ff;
        for (int j = 0; j < ff; j++) {
            float s = 1.0f / (1.0f + vexp(-g[j]));
            du[j] = go[j] * g[j] * s;
            dg[j] = go[j] * u[j] * s * (1.0f + g[j] * (1.0f - s));
        }
    }
}

/* RoPE in place on H heads of hd at column `col` of rows with stride `stride` (HF Llama layout: the two halves
 * of a head rotate together). cos/sin: tables (positions, hd); pos (N,). inverse = 1 applies the transpose (the
 * backward of the rotation). */
void rope(int64_t N, int H, int hd, float *x, int stride, int col, const int64_t *pos, const float *cos,
          const float *sin, int inverse) {
    int half = hd / 2;
    for (int64_t i = 0; i < N; i++) {
        const float *c = cos + pos[i] * hd, *s = sin + pos[i] * hd;
        for (int h = 0; h < H; h++) {
            float *v = x + i * stride + col + h * hd;
            for (int k = 0; k < half; k++) {
                float a = v[k], b = v[k + half];
                if (!inverse) {
                    v[k] = a * c[k] - b * s[k];
                    v[k + half] = b * c[k + half] + a * s[k + half];
                } else {
                    v[k] = a * c[k] + b * s[k + half];
                    v[k + half] = b * c[k + half] - a * s[k];
                }
            }
        }
    }
}

typedef float vf __attribute__((vector_size(32)));  /* 8 floats: AVX2 registers (two NEON registers) */
#define VL 8
static inline vf vload(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void vstore(float *p, vf v) { memcpy(p, &v, sizeof v); }
static inline int round8(int n) { return (n + VL - 1) / VL * VL; }

/* C (m, n) (+)= A (m, k; row stride lda) @ B (k, n; row stride ldb), C of row stride ldc; n a multiple of 8.
 * Register blocks of 4 rows x 16 columns (8 accumulators; A broadcast, B loaded once per 4 rows).
 * The attention's causal structure, per row (each array nondecreasing in the row, NULL = none): row i needs only
 * columns < ncol[i] (rounded up to 8; the others are left unwritten), and row i of A is zero at p >= kend[i] and
 * at p < kbeg[i]. A block of rows computes the columns of its last row and the terms p in [kbeg of its first,
 * kend of its last): the terms left out are exact zeros, which leave every sum as it was (it starts from +0). */
static void gemm(int m, int n, int k, const float *A, int lda, const float *B, int ldb, float *C, int ldc,
                 int accumulate, const int *ncol, const int *kend, const int *kbeg) {
    for (int i0 = 0; i0 < m; i0 += 4) {
        int mr = m - i0 < 4 ? m - i0 : 4, last = i0 + mr - 1;
        int nb = ncol && round8(ncol[last]) < n ? round8(ncol[last]) : n;
        int pe = kend ? kend[last] : k, pb = kbeg ? kbeg[i0] : 0;
        const float *a = A + (int64_t)i0 * lda;
        for (int j0 = 0; j0 < nb; j0 += 2 * VL) {
            int two = j0 + 2 * VL <= nb;
            vf c[4][2] = {{{0}, {0}}, {{0}, {0}}, {{0}, {0}}, {{0}, {0}}};
            if (mr == 4 && two) {
                vf c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0}, c30 = {0}, c31 = {0};
                for (int p = pb; p < pe; p++) {
                    const float *bp = B + (int64_t)p * ldb + j0;
                    vf b0 = vload(bp), b1 = vload(bp + VL);
                    float a0 = a[p], a1 = a[lda + p], a2 = a[2 * lda + p], a3 = a[3 * lda + p];
                    c00 += a0 * b0; c01 += a0 * b1;
                    c10 += a1 * b0; c11 += a1 * b1;
                    c20 += a2 * b0; c21 += a2 * b1;
                    c30 += a3 * b0; c31 += a3 * b1;
                }
                c[0][0] = c00; c[0][1] = c01; c[1][0] = c10; c[1][1] = c11;
                c[2][0] = c20; c[2][1] = c21; c[3][0] = c30; c[3][1] = c31;
            } else {
                for (int p = pb; p < pe; p++) {
                    const float *bp = B + (int64_t)p * ldb + j0;
                    vf b0 = vload(bp), b1 = two ? vload(bp + VL) : (vf){0};
                    for (int r = 0; r < mr; r++) {
                        float ar = a[(int64_t)r * lda + p];
                        c[r][0] += ar * b0;
                        c[r][1] += ar * b1;
                    }
                }
            }
            for (int r = 0; r < mr; r++) {
                float *cp = C + (int64_t)(i0 + r) * ldc + j0;
                for (int v = 0; v < 1 + two; v++) {
                    vf o = c[r][v];
                    if (accumulate) o += vload(cp + v * VL);
                    vstore(cp + v * VL, o);
                }
            }
        }
    }
}

/* One attention block of one head: nq queries Q (nq, hp) against nk keys K, V (nk, hp), gathered with the head
 * dimension zero-padded to hp; KT/VT (hp, nkp) transposed copies (nkp = nk rounded up to 8, zero-padded).
 * Query i sees keys j < lim[i] (increasing in i) with okf[j] = 1, and key self[i] always (self: NULL = none);
 * first[j]: the first query that may see key j (see gemm). */
typedef struct {
    int nq, nk, nkp, hd, hp;
    const float *Q, *K, *V, *KT, *VT, *okf;
    const int *lim, *self, *first;
} block_t;

/* S (nq, nkp) = the probabilities (0 where masked), Y (nq, hp) = S V. Qs: scratch (nq, hp); okr: scratch (nk). */
static void block_fwd(const block_t *b, float *S, float *Y, float *Qs, float *okr, float scale) {
    int nq = b->nq, nkp = b->nkp, hp = b->hp;
    for (int64_t i = 0; i < (int64_t)nq * hp; i++) Qs[i] = b->Q[i] * scale;
    gemm(nq, nkp, b->hd, Qs, hp, b->KT, nkp, S, nkp, 0, b->lim, NULL, NULL);
    memcpy(okr, b->okf, sizeof(float) * b->nk);
    for (int i = 0; i < nq; i++) {
        float *s = S + (int64_t)i * nkp;
        int lim = b->lim[i];
        float saved = 0.f;
        if (b->self) {  /* this row may also see itself */
            saved = okr[b->self[i]];
            okr[b->self[i]] = 1.f;
        }
        float m = -INFINITY;
        for (int j = 0; j < lim; j++) {
            float v = okr[j] > 0.f ? s[j] : -INFINITY;
            m = v > m ? v : m;
        }
        float sum = 0.f;
        for (int j = 0; j < lim; j++) {
            s[j] = vexp(s[j] - m) * okr[j];
            sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < lim; j++) s[j] *= inv;
        for (int j = lim; j < nkp; j++) s[j] = 0.f;
        if (b->self) okr[b->self[i]] = saved;
    }
    gemm(nq, hp, b->nk, S, nkp, b->V, hp, Y, hp, 0, NULL, b->lim, NULL);
}

/* XT (cols, ldt) = X (rows, cols; row stride ldx) transposed, each row of XT zero-filled from column rows to ldt. */
static void transpose(const float *X, int rows, int cols, int ldx, float *XT, int ldt) {
    for (int j = 0; j < cols; j++) {
        for (int i = 0; i < rows; i++) XT[(int64_t)j * ldt + i] = X[(int64_t)i * ldx + j];
        for (int i = rows; i < ldt; i++) XT[(int64_t)j * ldt + i] = 0.f;
    }
}

/* With dS = S * (dY V^T - rowsum(S * dY V^T)) * scale: dQ (nq, hp) = dS K, dK (nk, hp) = dS^T Q, dV = S^T dY.
 * dS: scratch (nq, nkp); T: scratch (nkp, nq) for the transposes. */
static void block_bwd(const block_t *b, const float *S, const float *dY, float *dQ, float *dK, float *dV,
                      float *dS, float *T, float scale) {
    int nq = b->nq, nk = b->nk, nkp = b->nkp, hp = b->hp;
    gemm(nq, nkp, b->hd, dY, hp, b->VT, nkp, dS, nkp, 0, b->lim, NULL, NULL);
    for (int i = 0; i < nq; i++) {
        const float *s = S + (int64_t)i * nkp;
        float *ds = dS + (int64_t)i * nkp;
        int lim = b->lim[i];
        float D = 0.f;
        for (int j = 0; j < lim; j++) D += s[j] * ds[j];
        for (int j = 0; j < lim; j++) ds[j] = s[j] * (ds[j] - D) * scale;
        for (int j = lim; j < nkp; j++) ds[j] = 0.f;
    }
    gemm(nq, hp, nk, dS, nkp, b->K, hp, dQ, hp, 0, NULL, b->lim, NULL);
    transpose(dS, nq, nk, nkp, T, nq);
    gemm(nk, hp, nq, T, nq, b->Q, hp, dK, hp, 0, NULL, NULL, b->first);
    transpose(S, nq, nk, nkp, T, nq);
    gemm(nk, hp, nq, T, nq, dY, hp, dV, hp, 0, NULL, NULL, b->first);
}

typedef struct {
    int G, P, R, C, H, hd;
    const float *qkv;
    const uint8_t *pm;
    const int64_t *group;
    const int64_t *clen;  /* (R,) live positions of each completion stream (a prefix), or NULL: all C */
} layout_t;

static void *xmalloc(size_t n) {
    void *p = calloc(n ? n : 1, 1);
    if (!p) abort();
    return p;
}

/* rows [r0, r0 + cnt) of column block col (0 q, 1 k, 2 v), head h of qkv -> dst (cnt, hp), zero-padded */
static void gather(const layout_t *L, int64_t r0, int cnt, int col, int h, int hp, float *dst) {
    int d = L->H * L->hd;
    for (int i = 0; i < cnt; i++) {
        memcpy(dst + (int64_t)i * hp, L->qkv + (r0 + i) * 3 * d + col * d + h * L->hd, sizeof(float) * L->hd);
        for (int e = L->hd; e < hp; e++) dst[(int64_t)i * hp + e] = 0.f;
    }
}

/* dqkv[rows r0.., column block col, head h] += src (cnt, hp) */
static void scatter_add(const layout_t *L, float *dqkv, int64_t r0, int cnt, int col, int h, int hp,
                        const float *src) {
    int d = L->H * L->hd;
    for (int i = 0; i < cnt; i++) {
        float *o = dqkv + (r0 + i) * 3 * d + col * d + h * L->hd;
        for (int e = 0; e < L->hd; e++) o[e] += src[(int64_t)i * hp + e];
    }
}

/* Offset of the probabilities of block (stream s, head h) in the saved buffer: prompt blocks (P, round8(P)),
 * completion blocks (C, round8(P + C)). */
static int64_t block_offset(const layout_t *L, int s, int h) {
    int64_t pb = (int64_t)L->P * round8(L->P), cb = (int64_t)L->C * round8(L->P + L->C);
    return s < L->G ? ((int64_t)s * L->H + h) * pb : (int64_t)L->G * L->H * pb + ((int64_t)(s - L->G) * L->H + h) * cb;
}

/* Runs every (stream, head) block forward (probs and y) or backward (dy -> dqkv, which the caller zeroed). */
static void attention(const layout_t *L, float *probs, float *y, const float *dy, float *dqkv, int backward) {
    int G = L->G, P = L->P, C = L->C, H = L->H, hd = L->hd, d = H * hd, hp = round8(hd);
    int nkmax = P + C, nkpmax = round8(nkmax), nqmax = P > C ? P : C;
    float scale = 1.0f / sqrtf((float)hd);
    float *Q = xmalloc(sizeof(float) * nqmax * hp), *K = xmalloc(sizeof(float) * nkmax * hp);
    float *V = xmalloc(sizeof(float) * nkmax * hp), *KT = xmalloc(sizeof(float) * nkpmax * hp);
    float *VT = xmalloc(sizeof(float) * nkpmax * hp), *Yb = xmalloc(sizeof(float) * nqmax * hp);
    float *dQ = xmalloc(sizeof(float) * nqmax * hp), *dK = xmalloc(sizeof(float) * nkmax * hp);
    float *dV = xmalloc(sizeof(float) * nkmax * hp), *dS = xmalloc(sizeof(float) * nqmax * nkpmax);
    float *Qs = xmalloc(sizeof(float) * nqmax * hp), *Tb = xmalloc(sizeof(float) * nkpmax * nqmax);
    float *okf = xmalloc(sizeof(float) * nkmax);
    int *lim = xmalloc(sizeof(int) * nqmax), *self = xmalloc(sizeof(int) * nqmax);
    int *first = xmalloc(sizeof(int) * nkmax);
    int64_t GP = (int64_t)G * P;
    for (int s = 0; s < G + L->R; s++) {
        int prompt = s < G;
        int64_t g = prompt ? s : L->group[s - G], q0 = prompt ? g * P : GP + (int64_t)(s - G) * C;
        /* a completion's positions past its live prefix neither attend (no gradient reaches them) nor are seen by
         * a live one (causal), so its block shrinks to them: the probabilities keep the block's offset, with row
         * stride round8(P + cl), the same in the forward and the backward */
        int cl = prompt || !L->clen ? C : (int)L->clen[s - G];
        if (!prompt && cl <= 0) continue;
        int nq = prompt ? P : cl, nk = prompt ? P : P + cl, nkp = round8(nk);
        for (int j = 0; j < P; j++) okf[j] = L->pm[g * P + j] ? 1.f : 0.f;
        for (int j = P; j < nk; j++) okf[j] = 1.f;
        for (int i = 0; i < nq; i++) {
            lim[i] = prompt ? i + 1 : P + i + 1;
            self[i] = i;
        }
        for (int j = 0, i = 0; j < nk; j++) {  /* the first query whose keys reach j */
            while (i < nq - 1 && lim[i] <= j) i++;
            first[j] = i;
        }
        block_t b = {nq, nk, nkp, hd, hp, Q, K, V, KT, VT, okf, lim, prompt ? self : NULL, first};
        for (int h = 0; h < H; h++) {
            float *S = probs + block_offset(L, s, h);
            gather(L, q0, nq, 0, h, hp, Q);
            gather(L, g * P, P, 1, h, hp, K);
            gather(L, g * P, P, 2, h, hp, V);
            if (!prompt) {
                gather(L, q0, cl, 1, h, hp, K + (int64_t)P * hp);
                gather(L, q0, cl, 2, h, hp, V + (int64_t)P * hp);
            }
            if (!backward) {
                transpose(K, nk, hp, hp, KT, nkp);
                block_fwd(&b, S, Yb, Qs, dS, scale);
                for (int i = 0; i < nq; i++)
                    memcpy(y + (q0 + i) * d + h * hd, Yb + (int64_t)i * hp, sizeof(float) * hd);
            } else {
                transpose(V, nk, hp, hp, VT, nkp);
                for (int i = 0; i < nq; i++) {
                    memcpy(Yb + (int64_t)i * hp, dy + (q0 + i) * d + h * hd, sizeof(float) * hd);
                    for (int e = hd; e < hp; e++) Yb[(int64_t)i * hp + e] = 0.f;
                }
                block_bwd(&b, S, Yb, dQ, dK, dV, dS, Tb, scale);
                scatter_add(L, dqkv, q0, nq, 0, h, hp, dQ);
                scatter_add(L, dqkv, g * P, P, 1, h, hp, dK);
                scatter_add(L, dqkv, g * P, P, 2, h, hp, dV);
                if (!prompt) {
                    scatter_add(L, dqkv, q0, cl, 1, h, hp, dK + (int64_t)P * hp);
                    scatter_add(L, dqkv, q0, cl, 2, h, hp, dV + (int64_t)P * hp);
                }
            }
        }
    }
    float *bufs[] = {Q, K, V, KT, VT, Yb, dQ, dK, dV, dS, Qs, Tb, okf};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) free(bufs[i]);
    free(lim);
    free(self);
    free(first);
}

/* y (N, d) = softmax(q k^T / sqrt(hd) + mask) v per head of the packed rows; qkv (N, 3d) = [q, k, v] with RoPE
 * applied; probs (G H P round8(P) + R H C round8(P + C)) keeps the probabilities for the backward. clen (R,) or
 * NULL: each completion's live prefix (rows past it are left unwritten; see attention). */
void attn_fwd(int G, int P, int R, int C, int H, int hd, const float *qkv, const uint8_t *pm, const int64_t *group,
              const int64_t *clen, float *probs, float *y) {
    layout_t L = {G, P, R, C, H, hd, qkv, pm, group, clen};
    attention(&L, probs, y, NULL, NULL, 0);
}

/* Backward of attn_fwd: dqkv (N, 3d), zeroed by the caller, gets dq (before the inverse RoPE) and dk, dv summed
 * over every query that attended each key (a prompt's keys over all of its completions). */
void attn_bwd(int G, int P, int R, int C, int H, int hd, const float *qkv, const uint8_t *pm, const int64_t *group,
              const int64_t *clen, const float *probs, const float *dy, float *dqkv) {
    layout_t L = {G, P, R, C, H, hd, qkv, pm, group, clen};
    attention(&L, (float *)probs, NULL, dy, dqkv, 1);
}
