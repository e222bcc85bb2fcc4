/* The peephole layer's per-step element-wise work, fused (training on CPU).
 *
 * peephole.py runs a time step as ~20 small torch kernels (forward) and ~8 (backward);
 * at batch 64 and hidden 128 their launches cost more than their arithmetic. These two functions
 * do the same work in one pass over the step's rows; the matmuls stay in torch (oneDNN).
 * Built at run time by peephole_kernel.py (cc -O3 -march=native); see there.
 *
 * Layout (all row-major, contiguous): gates in the internal order (o, i, f, 2 z_g), blocks of H
 * per row; J (B, 4H); K, R, c, h, dh, dc (B, H); peep (3, H) rows (W_co, W_ci, W_cf); gp (B, 3, H)
 * and gb (B, 4H) accumulate the peephole and bias gradients per row (summed over rows by torch).
 * A "bf16" flag means the array holds bfloat16 (uint16) values, else float32.
 */

#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float from_bf16(uint16_t v) {
    uint32_t u = (uint32_t)v << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t to_bf16(float f) { /* round to nearest even, as torch does */
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40u); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static inline float load(const void *p, int bf16, long i) {
    return bf16 ? from_bf16(((const uint16_t *)p)[i]) : ((const float *)p)[i];
}

/* e^x for |x| <= 87: 2^n e^r with n = round(x / ln 2), |r| <= ln(2) / 2 (Cody-Waite), e^r by
 * its Taylor polynomial to r^6 (relative error < 2e-7, about 1 ulp). Written so that gcc
 * vectorises it: libm's expf is exact but cost most of a step. */
static inline float exp_small(float x) {
    const float n = floorf(x * 1.44269504f + 0.5f);
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n, n in [-126, 126] */
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* 1 / (1 + e^-x), with x clamped to +-87 (where the sigmoid is 0 or 1 to fp32 precision). */
static inline float sigmoid(float x) {
    x = x < -87.0f ? -87.0f : (x > 87.0f ? 87.0f : x);
    return 1.0f / (1.0f + exp_small(-x));
}

/* One training step forward:
 *   a = xp_t + b + hw;  a[o, i, f] += W_c{o,i,f} * c_{t-1};  s = sigmoid(a);  g = 2 s_g - 1
 *   c_t = s_f c_{t-1} + s_i g;  tanh(c_t) = 2 sigmoid(2 c_t) - 1;  h_t = s_o tanh(c_t)
 * and J, K, R as documented in peephole._recurrence. xp may share memory with J (each row is
 * read whole before J's row is written); `scratch` holds 4H floats. h_mm (bf16) may be NULL. */
void peephole_forward_step(int B, int H, const void *xp, int xp_bf16, const float *bias,
                           const void *hw, int hw_bf16, const float *c_prev, const float *peep,
                           float *J, float *K, float *R, float *c_next, float *h_next,
                           uint16_t *h_mm, float *scratch) {
    const int H4 = 4 * H;
    const float *w_co = peep, *w_ci = peep + H, *w_cf = peep + 2 * H;
    for (int b = 0; b < B; b++) {
        float *a = scratch;
        const long row = (long)b * H4;
        for (int j = 0; j < H4; j++) a[j] = load(xp, xp_bf16, row + j) + bias[j] + load(hw, hw_bf16, row + j);
        const float *cp = c_prev + (long)b * H;
        float *Jr = J + row, *Kr = K + (long)b * H, *Rr = R + (long)b * H;
        float *cn = c_next + (long)b * H, *hn = h_next + (long)b * H;
#pragma GCC ivdep
        for (int h = 0; h < H; h++) {
            const float c0 = cp[h];
            const float s_o = sigmoid(a[h] + w_co[h] * c0);
            const float s_i = sigmoid(a[H + h] + w_ci[h] * c0);
            const float s_f = sigmoid(a[2 * H + h] + w_cf[h] * c0);
            const float s_g = sigmoid(a[3 * H + h]);
            const float g = 2.0f * s_g - 1.0f;
            const float c = s_f * c0 + s_i * g;
            const float tc = 2.0f * sigmoid(2.0f * c) - 1.0f;
            const float hh = s_o * tc;
            const float J_i = s_i * (1.0f - s_i) * g, J_f = s_f * (1.0f - s_f) * c0;
            Jr[h] = s_o * (1.0f - s_o) * tc;
            Jr[H + h] = J_i;
            Jr[2 * H + h] = J_f;
            Jr[3 * H + h] = 2.0f * s_i * s_g * (1.0f - s_g);
            Kr[h] = s_o - hh * tc;
            Rr[h] = s_f + J_i * w_ci[h] + J_f * w_cf[h];
            cn[h] = c;
            hn[h] = hh;
        }
        if (h_mm)
            for (int h = 0; h < H; h++) h_mm[(long)b * H + h] = to_bf16(hn[h]);
    }
}

/* One step back, writing dA_t over J_t (in place):
 *   dh_t = grad_h_t + dh_mm            (dh_mm = dA_{t+1} W_hh; NULL at the last step)
 *   dc_t = dh_t K_t + dc_{t+1} R_{t+1} + dA_o,{t+1} W_co   (the last two: not at the last step)
 *   dA_o = J_o dh_t;  dA_{i,f,g} = J_{i,f,g} dc_t;  gp[o, i, f] += dA_{o,i,f} c_{t-1};  gb += dA_t
 * dc_next, R_next, dA_next may be NULL together (the last step); dA_mm (bf16) may be NULL.
 * grad_h's rows are grad_h_row_stride floats apart (it is often a transposed view); `scratch`
 * holds H floats. */
void peephole_backward_step(int B, int H, const float *grad_h, long grad_h_row_stride,
                            const void *dh_mm, int dh_bf16, const float *dc_next,
                            const float *R_next, const float *dA_next, const float *w_co,
                            const float *K, const float *c_prev, float *JdA, float *gp, float *gb,
                            float *dc_out, uint16_t *dA_mm, float *scratch) {
    const int H4 = 4 * H;
    float *dh = scratch; /* H floats */
    for (int b = 0; b < B; b++) {
        const long r = (long)b * H, row = (long)b * H4;
        const float *gh = grad_h + (long)b * grad_h_row_stride, *Kr = K + r, *c0 = c_prev + r;
        float *Jr = JdA + row, *g3 = gp + (long)b * 3 * H, *dc = dc_out + r;
        /* Branches outside the loops, so that each loop vectorises. */
        if (!dh_mm) {
            for (int h = 0; h < H; h++) dh[h] = gh[h];
        } else if (dh_bf16) {
            const uint16_t *m = (const uint16_t *)dh_mm + r;
            for (int h = 0; h < H; h++) dh[h] = gh[h] + from_bf16(m[h]);
        } else {
            const float *m = (const float *)dh_mm + r;
            for (int h = 0; h < H; h++) dh[h] = gh[h] + m[h];
        }
        if (dc_next) {
            const float *dn = dc_next + r, *Rn = R_next + r, *An = dA_next + row;
            for (int h = 0; h < H; h++) dc[h] = dh[h] * Kr[h] + dn[h] * Rn[h] + An[h] * w_co[h];
        } else {
            for (int h = 0; h < H; h++) dc[h] = dh[h] * Kr[h];
        }
#pragma GCC ivdep
        for (int h = 0; h < H; h++) {
            const float dA_o = Jr[h] * dh[h], dA_i = Jr[H + h] * dc[h];
            const float dA_f = Jr[2 * H + h] * dc[h];
            Jr[h] = dA_o;
            Jr[H + h] = dA_i;
            Jr[2 * H + h] = dA_f;
            Jr[3 * H + h] *= dc[h];
            g3[h] += dA_o * c0[h];
            g3[H + h] += dA_i * c0[h];
            g3[2 * H + h] += dA_f * c0[h];
        }
        float *gbr = gb + row;
        for (int j = 0; j < H4; j++) gbr[j] += Jr[j];
        if (dA_mm)
            for (int j = 0; j < H4; j++) dA_mm[row + j] = to_bf16(Jr[j]);
    }
}
