/* The decode loop of the lab's TinyGPT sampler in C (rlscale.engine.native compiles it on first use).
 *
 * Same math as the torch decode loop in tiny_sampler.py, on the same folded weights (norm gains folded into the
 * next projection, attention scale into the query columns; the torch loop also folds RoPE's rotate_half into two
 * extra column blocks, this loop applies it to q and k, see rope()):
 *   per layer  y3 = rms(x) @ wqkv (d, 3d) = [q, k, v];  q' = q cos + rot(q) sin, k' likewise (rot = rotate_half)
 *              att_h = softmax(q'_h . K_h[pad:tc+1]) V_h[pad:tc+1];     x += att @ wo
 *              [g, u] = rms(x) @ wgu (d, 2ff);                           x += (silu(g) * u) @ wd
 *   logits = rms(x) @ head_t (d, V);   next token = argmax(logits + noise_t) (noise: T * Gumbel, or none = greedy)
 * A row ends after EOS or its token budget; ended rows are skipped (no compaction needed).
 * Optionally (save != NULL) both passes also write every row's activations in the layout of the RL update's fused
 * trunk (rlscale.models.fused), so that the on-policy update can skip its forward: per layer l, save[5l + k] holds
 * k = 0 the layer input x (d), 1 [q, k, v] after RoPE without the attention scale (3d), 2 x after attention (d),
 * 3 [g, u] (2ff), 4 silu(g) * u (ff); save[5 nL] the final x (d). Rows: see save_row in tiny_decode/tiny_prefill. One thread: the lab
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

/* Y (R, m) (+)= X (R, n) @ W (n, m), all row-major and contiguous. Column panels outside, row blocks inside, so a
 * panel of W (n x 16 floats) is reused from L1 by every row block; each output sums over p in the same order as
 * the other loop order (bitwise-identical results; no speed difference measured at the lab's sizes, where one
 * call runs at ~36 GFLOP/s on one core either way). */
static void matmul(const float *X, int R, int n, const float *W, int m, float *Y, int accumulate) {
    int mv = m / VL * VL;
    for (int j0 = 0; j0 < mv;) {
        int cc = (mv - j0) / VL >= CB ? CB : 1;
        for (int r0 = 0; r0 < R; r0 += 4) {
            int rr = R - r0 < 4 ? R - r0 : 4;
            const float *Xr = X + (size_t)r0 * n;
            float *Yr = Y + (size_t)r0 * m;
            if (rr == 4) BLOCK_ROWS(4, Xr, Yr);
            else if (rr == 3) BLOCK_ROWS(3, Xr, Yr);  /* the last rows together: one row alone waits on its FMAs */
            else if (rr == 2) BLOCK_ROWS(2, Xr, Yr);
            else BLOCK_ROWS(1, Xr, Yr);
        }
        j0 += cc * VL;
    }
    for (int r = 0; r < R; r++)  /* columns past the last multiple of VL */
        for (int j = mv; j < m; j++) {
            float s = accumulate ? Y[(size_t)r * m + j] : 0.0f;
            for (int p = 0; p < n; p++) s += X[(size_t)r * n + p] * W[(size_t)p * m + j];
            Y[(size_t)r * m + j] = s;
        }
}

/* RoPE of one head's hd values x (its columns of q or k): out = x cos + rot(x) sin with rot(x) = [-x2, x1], the
 * rotate_half of rlscale.models.tiny. The torch loop gets rot(x) from extra weight columns (rot of W's columns):
 * negating and permuting weights negates and permutes the sums exactly, so both give the same values, and this
 * spends O(hd) instead of a 2d x d matmul per token (14% of the decode's matmul FLOPs at the lab sizes). */
static inline void rope(const float *x, const float *cs, const float *sn, int hd, float *out) {
    int half = hd / 2;
    for (int j = 0; j < half; j++) out[j] = x[j] * cs[j] - x[j + half] * sn[j];
    for (int j = half; j < hd; j++) out[j] = x[j] * cs[j] + x[j - half] * sn[j];
}

/* Attention of one query over keys [s0, s1] of one head: out[:hd] = sum_s softmax_s(q . K[s]) V[s], where keys and
 * values s < P are rows of Kp, Vp (the prompt's, shared by the rows that continue it) and s >= P rows s - P of Kc,
 * Vc (the row's own completion; NULL when s1 < P). Rows of K, V and q hold hdp = hd rounded up to 8 floats, zero
 * past hd, so every product is whole 8-float vectors and the NV = hdp / 8 accumulators of the output stay in
 * registers (NV is a constant after inlining, see attend). The sum over s runs in key order whichever buffer a key
 * is in. sc: scratch of s1 + 1 floats. */
typedef float v8 __attribute__((vector_size(8 * sizeof(float))));
static inline v8 load8(const float *p) { v8 v; memcpy(&v, p, sizeof v); return v; }
#define MAX_NV 16  /* head sizes up to 128 */

static inline __attribute__((always_inline)) float score(int NV, const v8 *qv, const float *kr) {
    v8 acc = qv[0] * load8(kr);
    for (int c = 1; c < NV; c++) acc += qv[c] * load8(kr + 8 * c);
    return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

/* sc[s] = q . K[s - off] for s in [lo, hi]; returns the maximum of mx and those scores. */
static inline __attribute__((always_inline)) float scores(int NV, const v8 *qv, const float *K, int off, int lo,
                                                          int hi, float *sc, float mx) {
    for (int s = lo; s <= hi; s++) {
        sc[s] = score(NV, qv, K + (size_t)(s - off) * 8 * NV);
        mx = sc[s] > mx ? sc[s] : mx;
    }
    return mx;
}

/* o += sum over s in [lo, hi] of (sc[s] / z) V[s - off], in order of s. */
static inline __attribute__((always_inline)) void weigh(int NV, v8 *o, const float *V, int off, int lo, int hi,
                                                        const float *sc, float z) {
    for (int s = lo; s <= hi; s++) {
        const float *vr = V + (size_t)(s - off) * 8 * NV;
        float p = sc[s] / z;
        for (int c = 0; c < NV; c++) o[c] += p * load8(vr + 8 * c);
    }
}

static inline __attribute__((always_inline)) void attend_nv(int NV, const float *q, const float *Kp, const float *Vp,
                                                            int s0, int P, const float *Kc, const float *Vc, int s1,
                                                            int hd, float *sc, float *out) {
    int e = s1 < P - 1 ? s1 : P - 1, c0 = s0 > P ? s0 : P;  /* prompt keys [s0, e], own [c0, s1] */
    v8 qv[MAX_NV], o[MAX_NV];
    for (int c = 0; c < NV; c++) qv[c] = load8(q + 8 * c), o[c] = (v8){0};
    float mx = scores(NV, qv, Kc, P, c0, s1, sc, scores(NV, qv, Kp, 0, s0, e, sc, -INFINITY));
    float z = 0.0f;
    for (int s = s0; s <= s1; s++) { sc[s] = vexp(sc[s] - mx); z += sc[s]; }
    weigh(NV, o, Vp, 0, s0, e, sc, z);
    weigh(NV, o, Vc, P, c0, s1, sc, z);
    float tmp[8 * MAX_NV];
    for (int c = 0; c < NV; c++) memcpy(tmp + 8 * c, &o[c], sizeof(v8));
    memcpy(out, tmp, sizeof(float) * hd);
}

static void attend(const float *q, const float *Kp, const float *Vp, int s0, int P, const float *Kc, const float *Vc,
                   int s1, int hd, float *sc, float *out) {
    switch ((hd + 7) / 8) {
        case 1: attend_nv(1, q, Kp, Vp, s0, P, Kc, Vc, s1, hd, sc, out); break;
        case 2: attend_nv(2, q, Kp, Vp, s0, P, Kc, Vc, s1, hd, sc, out); break;
        case 3: attend_nv(3, q, Kp, Vp, s0, P, Kc, Vc, s1, hd, sc, out); break;
        case 4: attend_nv(4, q, Kp, Vp, s0, P, Kc, Vc, s1, hd, sc, out); break;
        default: attend_nv((hd + 7) / 8, q, Kp, Vp, s0, P, Kc, Vc, s1, hd, sc, out);
    }
}

/* A RoPE'd head row of hd values into hdp floats, zero-padded. */
static inline void rope_padded(const float *x, const float *cs, const float *sn, int hd, int hdp, float *out) {
    rope(x, cs, sn, hd, out);
    for (int j = hd; j < hdp; j++) out[j] = 0.0f;
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

/* One head's key and value of one position into their cache rows (hdp floats each, zero past hd). */
static inline void write_kv(const float *yr, int d, int hh, const float *cs, const float *sn, int hd, int hdp,
                            float *krow, float *vrow) {
    rope_padded(yr + d + hh * hd, cs, sn, hd, hdp, krow);
    memcpy(vrow, yr + 2 * d + hh * hd, sizeof(float) * hd);
    for (int j = hd; j < hdp; j++) vrow[j] = 0.0f;
}

#define SAVED_PER_LAYER 5

/* Row srow[i] of the saved (rows, width) activation buffer dst <- width floats of src row i, for R rows. */
static void save_rows(float *dst, const int64_t *srow, const float *src, int R, int width) {
    for (int i = 0; i < R; i++) memcpy(dst + (size_t)srow[i] * width, src + (size_t)i * width, sizeof(float) * width);
}

/* One head's saved [q, k, v] columns (of a 3d-wide row): q and k RoPE'd (q without the folded attention scale, so
 * q * qs with qs = sqrt(hd)), v as computed. */
static inline void save_qkv_head(float *row, int d, int hh, int hd, const float *q, float qs, const float *krow,
                                 const float *yr) {
    for (int j = 0; j < hd; j++) row[hh * hd + j] = q[j] * qs;
    memcpy(row + d + hh * hd, krow, sizeof(float) * hd);
    memcpy(row + 2 * d + hh * hd, yr + 2 * d + hh * hd, sizeof(float) * hd);
}

/* The rest of a layer after attention, for R rows: x += att @ wo; x += (silu(g) * u) @ wd with [g, u] = rms(x) @ wgu.
 * h (R, d), gu (R, 2ff) and a (R, ff) are scratch. sv: this layer's saved buffers (see the top) or NULL. */
static void attn_out_and_mlp(float *x, const float *att, int R, int d, int ff, const float *wo, const float *wgu,
                             const float *wd, float eps, float *h, float *gu, float *a, float *const *sv,
                             const int64_t *srow) {
    matmul(att, R, d, wo, d, x, 1);
    if (sv) save_rows(sv[2], srow, x, R, d);
    rms_rows(x, R, d, eps, h);
    matmul(h, R, d, wgu, 2 * ff, gu, 0);
    for (int i = 0; i < R; i++) {
        const float *g = gu + (size_t)i * 2 * ff, *u = g + ff;
        float *ar = a + (size_t)i * ff;
        for (int j = 0; j < ff; j++) ar[j] = g[j] / (1.0f + vexp(-g[j])) * u[j];
    }
    if (sv) {
        save_rows(sv[3], srow, gu, R, 2 * ff);
        save_rows(sv[4], srow, a, R, ff);
    }
    matmul(a, R, ff, wd, d, x, 1);
}

/*
 * Decode steps [t0, t1) of at most `steps` for B rows whose U distinct prompts were prefilled into Kp, Vp (a call
 * per window of steps, so that the sampling noise is drawn only for the rows still running: see noise).
 *   emb (V, d); head_t (d, V); per layer l: wqkv[l] (d, 3d), wo[l] (d, d), wgu[l] (d, 2ff), wd[l] (ff, d), eps[l]
 *   Kp, Vp: (nL, U, H, P, hdp), hdp = hd rounded up to 8: the prompts' keys/values (slots [pad[b], P) real), read
 *   by every row b of prompt inv[b]; K, Vc: (nL, B, H, steps, hdp) the rows' own, slot t for the token fed at
 *   step t (position P + t). The n rows of a group read one copy of its prompt's keys and values, consecutively
 *   (rows come grouped), so that copy stays in cache instead of being streamed from memory once per row.
 *   cos_d, sin_d: (B, steps, hd) RoPE tables at positions len_b + t;  pad, limit: (B,)
 *   noise: (rows, t1 - t0, V) added to the logits before the argmax, row noise_row[b] for row b, or NULL (greedy)
 *   logits_io: (B, V) in: each running row's logits for step t0 (after the prefill, or as the last call left them);
 *   out: those for step t1 of the rows still running after t1 - 1
 * Outputs: tokens (steps, B) and all_logits (steps, B, V) for the steps each row was active; end_at (B,) the number
 * of tokens kept once a row ended (EOS or limit), else left as given (-1: running; rows that ended before t0 are
 * skipped). Returns the next step to run (t1 unless every row ended or the last step ran: then all have ended).
 * save: NULL, or the 5 nL + 1 activation buffers (see the top); the token fed at step t by row b (its completion
 * position t) is saved at row t * B + b. Positions never fed (a row's last token, rows after they ended) are not
 * written.
 */
int tiny_decode(int B, int d, int H, int hd, int ff, int V, int nL, int P, int steps, int U, int t0, int t1,
                const float *emb, const float *head_t, float norm_eps, const float *const *wqkv,
                const float *const *wo, const float *const *wgu, const float *const *wd, const float *eps,
                const float *Kp, const float *Vp, const int64_t *inv, float *K, float *Vc, const float *cos_d,
                const float *sin_d, const int64_t *pad, const int64_t *limit, const float *noise,
                const int64_t *noise_row, float *logits_io, int64_t eos, int64_t *tokens, float *all_logits,
                int64_t *end_at, float *const *save) {
    int hdp = (hd + 7) / 8 * 8;  /* cache row: hd floats, zero-padded to a multiple of 8 (see attend) */
    size_t layer_stride = (size_t)B * H * steps * hdp, prompt_stride = (size_t)U * H * P * hdp;
    float *buf = malloc(sizeof(float) * ((size_t)B * (3 * d + 3 * d + 2 * ff + ff + V) + (size_t)(P + steps)));
    if (!buf) return -1;
    float *x = buf, *h = x + (size_t)B * d, *att = h + (size_t)B * d, *y3 = att + (size_t)B * d;
    float *gu = y3 + (size_t)B * 3 * d, *a = gu + (size_t)B * 2 * ff, *logits = a + (size_t)B * ff;
    float *sc = logits + (size_t)B * V;  /* attention scores of one (row, head) */
    int *rows = malloc(sizeof(int) * (size_t)B);
    int64_t *nxt = malloc(sizeof(int64_t) * (size_t)B), *srow = malloc(sizeof(int64_t) * (size_t)B);
    if (!rows || !nxt || !srow) { free(buf); free(rows); free(nxt); free(srow); return -1; }
    float qs = sqrtf((float)hd);
    int na = 0, W = t1 - t0;  /* active rows, in batch order; logits/x rows are indexed by position in `rows` */
    for (int b = 0; b < B; b++)
        if (end_at[b] < 0) {
            memcpy(logits + (size_t)na * V, logits_io + (size_t)b * V, sizeof(float) * V);
            rows[na++] = b;
        }
    int t = t0;
    for (; t < t1 && na > 0; t++) {
        /* ---- choose the next token of every active row; end rows on EOS or budget */
        int keep = 0;
        for (int i = 0; i < na; i++) {
            int b = rows[i];
            const float *lg = logits + (size_t)i * V;
            const float *nz = noise ? noise + ((size_t)noise_row[b] * W + (t - t0)) * V : NULL;
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
        for (int i = 0; i < na; i++) srow[i] = (int64_t)t * B + rows[i];
        for (int l = 0; l < nL; l++) {
            float *Kl = K + l * layer_stride, *Vl = Vc + l * layer_stride;
            const float *Kpl = Kp + l * prompt_stride, *Vpl = Vp + l * prompt_stride;
            float *const *sv = save ? save + SAVED_PER_LAYER * l : NULL;
            if (sv) save_rows(sv[0], srow, x, na, d);
            rms_rows(x, na, d, eps[l], h);
            matmul(h, na, d, wqkv[l], 3 * d, y3, 0);
            for (int i = 0; i < na; i++) {
                int b = rows[i];
                const float *yr = y3 + (size_t)i * 3 * d;
                const float *cs = cos_d + ((size_t)b * steps + t) * hd, *sn = sin_d + ((size_t)b * steps + t) * hd;
                for (int hh = 0; hh < H; hh++) {
                    float q[hdp];
                    float *Kh = Kl + ((size_t)b * H + hh) * steps * hdp, *Vh = Vl + ((size_t)b * H + hh) * steps * hdp;
                    size_t ph = ((size_t)inv[b] * H + hh) * P * hdp;
                    rope_padded(yr + hh * hd, cs, sn, hd, hdp, q);
                    write_kv(yr, d, hh, cs, sn, hd, hdp, Kh + (size_t)t * hdp, Vh + (size_t)t * hdp);
                    if (sv) save_qkv_head(sv[1] + (size_t)srow[i] * 3 * d, d, hh, hd, q, qs, Kh + (size_t)t * hdp, yr);
                    attend(q, Kpl + ph, Vpl + ph, (int)pad[b], P, Kh, Vh, tc, hd, sc, att + (size_t)i * d + hh * hd);
                }
            }
            attn_out_and_mlp(x, att, na, d, ff, wo[l], wgu[l], wd[l], eps[l], h, gu, a, sv, srow);
        }
        if (save) save_rows(save[SAVED_PER_LAYER * nL], srow, x, na, d);
        rms_rows(x, na, d, norm_eps, h);
        matmul(h, na, d, head_t, V, logits, 0);
    }
    for (int i = 0; i < na; i++)  /* the rows still running: their logits for step t, for the next call */
        memcpy(logits_io + (size_t)rows[i] * V, logits + (size_t)i * V, sizeof(float) * V);
    free(buf);
    free(rows);
    free(nxt);
    free(srow);
    return t;
}

/*
 * Prefill U distinct left-padded prompts of width P (the torch prefill's math, see tiny_sampler.py) into their
 * keys and values Kp, Vp (nL, U, H, P, hdp), which tiny_decode reads for every row of each prompt.
 *   ids (U, P) token ids; upad (U,) left padding; cos_p, sin_p (U, P, hd) RoPE tables at the prompt positions
 *   (real tokens counted from 0, pads at 0); weights as tiny_decode.
 * Real queries attend to the real keys at or before them; a pad query attends to itself (its output only reaches
 * pad positions, whose cache slots are never read). Output: logits
 * (U, V) at the last position. save: NULL or as tiny_decode, position i of prompt u at row u * P + i (pads
 * included). Returns 0, or -1 when out of memory.
 */
int tiny_prefill(int U, int d, int H, int hd, int ff, int V, int nL, int P, const int64_t *ids,
                 const int64_t *upad, const float *emb, const float *head_t, float norm_eps,
                 const float *const *wqkv, const float *const *wo, const float *const *wgu,
                 const float *const *wd, const float *eps, const float *cos_p, const float *sin_p, float *Kp,
                 float *Vp, float *logits, float *const *save) {
    int hdp = (hd + 7) / 8 * 8;
    size_t N = (size_t)U * P, kv = (size_t)U * H * P * hdp;  /* kv: one layer of Kp (U, H, P, hdp) */
    float *buf = malloc(sizeof(float) * (N * (3 * d + 3 * d + 2 * ff + ff) + (size_t)P + (size_t)U * d));
    if (!buf) return -1;
    float *x = buf, *h = x + N * d, *att = h + N * d, *y3 = att + N * d, *gu = y3 + N * 3 * d, *a = gu + N * 2 * ff;
    float *sc = a + N * ff, *last = sc + P;
    int64_t *srow = save ? malloc(sizeof(int64_t) * N) : NULL;
    if (save && !srow) { free(buf); return -1; }
    for (size_t r = 0; save && r < N; r++) srow[r] = (int64_t)r;
    float qs = sqrtf((float)hd);
    for (size_t r = 0; r < N; r++) memcpy(x + r * d, emb + (size_t)ids[r] * d, sizeof(float) * d);
    for (int l = 0; l < nL; l++) {
        float *const *sv = save ? save + SAVED_PER_LAYER * l : NULL;
        if (sv) memcpy(sv[0], x, sizeof(float) * N * d);
        rms_rows(x, (int)N, d, eps[l], h);
        matmul(h, (int)N, d, wqkv[l], 3 * d, y3, 0);
        float *kp = Kp + l * kv, *vp = Vp + l * kv;
        for (int u = 0; u < U; u++) {
            for (int hh = 0; hh < H; hh++) {
                float *Kh = kp + ((size_t)u * H + hh) * P * hdp, *Vh = vp + ((size_t)u * H + hh) * P * hdp;
                for (int i = 0; i < P; i++) {  /* RoPE'd keys and the values of this (prompt, head) */
                    const float *yr = y3 + ((size_t)u * P + i) * 3 * d;
                    const float *cs = cos_p + ((size_t)u * P + i) * hd, *sn = sin_p + ((size_t)u * P + i) * hd;
                    write_kv(yr, d, hh, cs, sn, hd, hdp, Kh + (size_t)i * hdp, Vh + (size_t)i * hdp);
                }
                int s0 = (int)upad[u];
                for (int i = 0; i < P; i++) {
                    const float *yr = y3 + ((size_t)u * P + i) * 3 * d;
                    const float *cs = cos_p + ((size_t)u * P + i) * hd, *sn = sin_p + ((size_t)u * P + i) * hd;
                    float q[hdp];
                    rope_padded(yr + hh * hd, cs, sn, hd, hdp, q);
                    if (sv) save_qkv_head(sv[1] + ((size_t)u * P + i) * 3 * d, d, hh, hd, q, qs, Kh + (size_t)i * hdp, yr);
                    attend(q, Kh, Vh, i < s0 ? i : s0, P, NULL, NULL, i, hd, sc,
                           att + ((size_t)u * P + i) * d + hh * hd);
                }  /* a pad query (i < s0) sees only itself */
            }
        }
        attn_out_and_mlp(x, att, (int)N, d, ff, wo[l], wgu[l], wd[l], eps[l], h, gu, a, sv, srow);
    }
    if (save) memcpy(save[SAVED_PER_LAYER * nL], x, sizeof(float) * N * d);
    for (int u = 0; u < U; u++) memcpy(last + (size_t)u * d, x + ((size_t)u * P + P - 1) * d, sizeof(float) * d);
    rms_rows(last, U, d, norm_eps, h);
    matmul(h, U, d, head_t, V, logits, 0);
    free(buf);
    free(srow);
    return 0;
}
