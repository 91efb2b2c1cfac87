/* Fused CPU kernels for SHARP's per-token hot path: one call per wake step (SPEC §3)
 * and one call per sleep target layer's replay training (SPEC §4 step 2).
 *
 * They compute what the torch engine computes (sharp/model/learner.py, sharp/model/memory.py,
 * sharp/model/heads.py), in float32, with the same Adam update as torch's fused Adam. Batch 1
 * makes every weight gradient a sum of a few outer products, so no gradient is ever
 * stored: each weight row is read once, used for the input gradient (old weights) and
 * updated by Adam in the same pass. The structs and entry points are declared in
 * sharp_kernels.h; the caller owns every buffer, the workspace included (no allocation
 * here).
 */
#include "sharp_kernels.h"

#include <math.h>
#include <stddef.h>
#include <string.h>

typedef struct { float step_size, bc2_sqrt, beta1, beta2, eps, weight_decay; } Adam;

static const float LN_EPS = 1e-5f;

/* The recall-EMA gate: fold one window's recall loss into the EMA; true if the memory
 * learns from it. The C copy of RecallGate.update (sharp/model/gate.py): keep them equal. */
static int gate_update(Gate *g, double loss)
{
    g->value = g->coefficient * g->value + (1.0 - g->coefficient) * loss;
    return g->value > g->tau;
}

/* -- small vector helpers -------------------------------------------------------- */

static inline float dot(const float *restrict a, const float *restrict b, int n)
{
    float s = 0.0f;
#pragma omp simd reduction(+ : s)
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

/* out = the sum of the k rows of x (k, n). */
static void sum_rows(const float *x, int k, int n, float *out)
{
    memcpy(out, x, sizeof(float) * n);
    for (int t = 1; t < k; t++)
        for (int j = 0; j < n; j++) out[j] += x[(size_t)t * n + j];
}

static void linear_forward(const Linear *l, const float *restrict x, float *restrict y)
{
    for (int i = 0; i < l->out; i++) y[i] = l->b.p[i] + dot(l->w.p + (size_t)i * l->in, x, l->in);
}

/* -- Adam ------------------------------------------------------------------------ */

/* Count one step for the group and return its bias-corrected constants. */
static Adam adam_begin(const Group *g)
{
    for (int i = 0; i < g->n_counts; i++) g->counts[i] += 1.0f;
    double step = g->counts[0];
    double bc1 = 1.0 - pow(g->beta1, step), bc2 = 1.0 - pow(g->beta2, step);
    Adam a = {(float)(*g->lr / bc1), (float)sqrt(bc2), (float)g->beta1, (float)g->beta2,
              (float)g->eps, (float)g->weight_decay};
    return a;
}

/* One Adam update of n elements whose gradient is gscale * x. */
static inline void adam_row(float *restrict p, float *restrict m, float *restrict v,
                            float gscale, const float *restrict x, int n, const Adam *a)
{
    const float b1 = 1.0f - a->beta1, b2 = a->beta2, c2 = 1.0f - a->beta2;
    const float step = a->step_size, bc = a->bc2_sqrt, eps = a->eps, wd = a->weight_decay;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        float g = gscale * x[j] + wd * p[j];
        m[j] += b1 * (g - m[j]);
        v[j] = v[j] * b2 + c2 * g * g;
        p[j] -= step * m[j] / (sqrtf(v[j]) / bc + eps);
    }
}

/* Adam on a dense tensor with gradient g. */
static void adam_dense(const Param *q, const float *g, int n, const Adam *a)
{
    adam_row(q->p, q->m, q->v, 1.0f, g, n, a);
}

/* Adam on a (rows, cols) weight whose gradient is sum_t outer(d[t], x[t]) over k terms
 * (d is (k, rows), x is (k, cols)); row by row, without storing the gradient. */
static void adam_outer(const Param *q, int rows, int cols, int k, const float *d,
                       const float *x, float *scratch, const Adam *a)
{
    for (int i = 0; i < rows; i++) {
        size_t o = (size_t)i * cols;
        if (k == 1) {
            adam_row(q->p + o, q->m + o, q->v + o, d[i], x, cols, a);
            continue;
        }
        memset(scratch, 0, sizeof(float) * cols);
        for (int t = 0; t < k; t++) {
            const float di = d[(size_t)t * rows + i];
            const float *restrict xt = x + (size_t)t * cols;
#pragma omp simd
            for (int j = 0; j < cols; j++) scratch[j] += di * xt[j];
        }
        adam_row(q->p + o, q->m + o, q->v + o, 1.0f, scratch, cols, a);
    }
}

/* Backward of y = W x + b given dy, with Adam applied to W and b in the same pass:
 * dx = Wᵀ dy is formed from the old weights (dx may be NULL). */
static void linear_backward(const Linear *l, const float *restrict dy, const float *restrict x,
                            float *restrict dx, const Adam *a)
{
    if (dx) memset(dx, 0, sizeof(float) * l->in);
    for (int i = 0; i < l->out; i++) {
        size_t o = (size_t)i * l->in;
        const float di = dy[i];
        if (dx) {
            const float *restrict w = l->w.p + o;
#pragma omp simd
            for (int j = 0; j < l->in; j++) dx[j] += w[j] * di;
        }
        adam_row(l->w.p + o, l->w.m + o, l->w.v + o, di, x, l->in, a);
    }
    adam_dense(&l->b, dy, l->out, a);
}

/* -- LayerNorm, GELU, losses ------------------------------------------------------- */

static void norm_forward(const Norm *nm, const float *x, float *xhat, float *rstd, float *y)
{
    const int n = nm->n;
    float mean = 0.0f, var = 0.0f;
    for (int i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (int i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    *rstd = 1.0f / sqrtf(var / n + LN_EPS);
    for (int i = 0; i < n; i++) {
        xhat[i] = (x[i] - mean) * *rstd;
        y[i] = xhat[i] * nm->g.p[i] + nm->b.p[i];
    }
}

/* LayerNorm backward with Adam on g and b; dx (may be NULL) from the old g. */
static void norm_backward(const Norm *nm, const float *dy, const float *xhat, float rstd,
                          float *dx, float *scratch, const Adam *a)
{
    const int n = nm->n;
    if (dx) {
        float mean_d = 0.0f, mean_dx = 0.0f;
        for (int i = 0; i < n; i++) {
            float d = dy[i] * nm->g.p[i];
            mean_d += d;
            mean_dx += d * xhat[i];
        }
        mean_d /= n;
        mean_dx /= n;
        for (int i = 0; i < n; i++)
            dx[i] = rstd * (dy[i] * nm->g.p[i] - mean_d - xhat[i] * mean_dx);
    }
    for (int i = 0; i < n; i++) scratch[i] = dy[i] * xhat[i];
    adam_dense(&nm->g, scratch, n, a);
    adam_dense(&nm->b, dy, n, a);
}

static inline float gelu(float x) { return 0.5f * x * (1.0f + erff(x * (float)M_SQRT1_2)); }

static inline float gelu_grad(float x)
{
    const float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
    return cdf + x * expf(-0.5f * x * x) * (float)(0.5 * M_2_SQRTPI * M_SQRT1_2);
}

/* Cross-entropy of logits z (n) against target y; writes softmax(z) - onehot to dz
 * scaled by `scale` if dz is not NULL. */
static float cross_entropy(const float *z, int n, int64_t y, float *dz, float scale)
{
    float top = z[0];
    for (int i = 1; i < n; i++) top = z[i] > top ? z[i] : top;
    float sum = 0.0f;
    for (int i = 0; i < n; i++) sum += expf(z[i] - top);
    const float lse = top + logf(sum);
    if (dz) {
        for (int i = 0; i < n; i++) dz[i] = expf(z[i] - lse) * scale;
        dz[y] -= scale;
    }
    return lse - z[y];
}

/* -- memory: window encode, recall loss, backward (SPEC §2) -------------------------- */

typedef struct {       /* what a window's forward keeps for its backward */
    float *proj;       /* (W, E) projected inputs */
    float *h;          /* (W + 1, H): the start state, then the state after each element */
    float *recall;     /* (W, inputs) */
    float *scratch;    /* backward scratch */
} Trace;

static size_t trace_floats(const Memory *m)
{
    const size_t W = m->window, E = m->embedding, H = m->hidden, I = m->inputs;
    size_t widest = H > E ? H : E;
    widest = widest > I ? widest : I;
    /* proj, h, recall, then backward: drecall, dh, da (W,H), dproj (W,E), row scratch,
       embedding gradient (tokens: inputs x E) */
    return W * E + (W + 1) * H + W * I + W * I + 2 * H + W * H + W * E + widest + I * E;
}

static Trace trace_in(const Memory *m, float *buffer)
{
    Trace t;
    t.proj = buffer;
    t.h = t.proj + (size_t)m->window * m->embedding;
    t.recall = t.h + (size_t)(m->window + 1) * m->hidden;
    t.scratch = t.recall + (size_t)m->window * m->inputs;
    return t;
}

/* One element of the encoder: h' = tanh(W_ih·p + b_ih + b_hh + W_hh·h) for the projected
 * input p. */
static void memory_cell(const Memory *m, const float *p, const float *h, float *out)
{
    for (int i = 0; i < m->hidden; i++) {
        float a = m->b_ih.p[i] + dot(m->w_ih.p + (size_t)i * m->embedding, p, m->embedding);
        a += m->b_hh.p[i];
        a += dot(m->w_hh.p + (size_t)i * m->hidden, h, m->hidden);
        out[i] = tanhf(a);
    }
}

static void memory_project(const Memory *m, const int64_t *tokens, const float *vectors,
                           int t, float *p)
{
    if (m->tokens) {
        memcpy(p, m->project.p + (size_t)tokens[t] * m->embedding, sizeof(float) * m->embedding);
        return;
    }
    const float *x = vectors + (size_t)t * m->inputs;
    for (int e = 0; e < m->embedding; e++)
        p[e] = m->project_b.p[e] + dot(m->project.p + (size_t)e * m->inputs, x, m->inputs);
}

/* Encode the window from `start` and return the recall loss (mean cross-entropy over the
 * W positions for tokens, mean squared error for vectors). */
static float memory_forward(const Memory *m, const int64_t *tokens, const float *vectors,
                            const float *start, Trace *tr)
{
    const int W = m->window, H = m->hidden, I = m->inputs, E = m->embedding;
    memcpy(tr->h, start, sizeof(float) * H);
    for (int t = 0; t < W; t++) {
        float *p = tr->proj + (size_t)t * E;
        memory_project(m, tokens, vectors, t, p);
        memory_cell(m, p, tr->h + (size_t)t * H, tr->h + (size_t)(t + 1) * H);
    }
    const float *last = tr->h + (size_t)W * H;
    for (int r = 0; r < W * I; r++)
        tr->recall[r] = m->recall_b.p[r] + dot(m->recall_w.p + (size_t)r * H, last, H);
    float loss = 0.0f;
    if (m->tokens) {
        for (int t = 0; t < W; t++) loss += cross_entropy(tr->recall + (size_t)t * I, I, tokens[t], NULL, 0);
        return loss / W;
    }
    for (int r = 0; r < W * I; r++) {
        float e = tr->recall[r] - vectors[r];
        loss += e * e;
    }
    return loss / (W * I);
}

/* Backward of the recall loss through the window and one Adam step on every parameter
 * of the memory. */
static void memory_backward(const Memory *m, const Group *group, const int64_t *tokens,
                            const float *vectors, Trace *tr)
{
    const int W = m->window, H = m->hidden, I = m->inputs, E = m->embedding;
    float *drecall = tr->scratch, *dh = drecall + (size_t)W * I, *dprev = dh + H;
    float *da = dprev + H, *dproj = da + (size_t)W * H, *row = dproj + (size_t)W * E;
    float *dtable = row + (H > E ? (H > I ? H : I) : (E > I ? E : I));
    if (m->tokens) {
        for (int t = 0; t < W; t++)
            cross_entropy(tr->recall + (size_t)t * I, I, tokens[t], drecall + (size_t)t * I, 1.0f / W);
    } else {
        const float scale = 2.0f / (W * I);
        for (int r = 0; r < W * I; r++) drecall[r] = scale * (tr->recall[r] - vectors[r]);
    }
    const Adam a = adam_begin(group);
    /* Read-outs: dh_W = Σ Rᵀ drecall from the old rows, each row then updated. */
    const float *last = tr->h + (size_t)W * H;
    memset(dh, 0, sizeof(float) * H);
    for (int r = 0; r < W * I; r++) {
        const float d = drecall[r];
        const float *restrict w = m->recall_w.p + (size_t)r * H;
#pragma omp simd
        for (int j = 0; j < H; j++) dh[j] += w[j] * d;
        adam_row(m->recall_w.p + (size_t)r * H, m->recall_w.m + (size_t)r * H,
                 m->recall_w.v + (size_t)r * H, d, last, H, &a);
    }
    adam_dense(&m->recall_b, drecall, W * I, &a);
    /* Back through time (the start state is detached). */
    for (int t = W - 1; t >= 0; t--) {
        const float *ht = tr->h + (size_t)(t + 1) * H;
        float *dat = da + (size_t)t * H;
        for (int i = 0; i < H; i++) dat[i] = dh[i] * (1.0f - ht[i] * ht[i]);
        float *dp = dproj + (size_t)t * E;
        memset(dp, 0, sizeof(float) * E);
        if (t > 0) memset(dprev, 0, sizeof(float) * H);
        for (int i = 0; i < H; i++) {
            const float d = dat[i];
            const float *restrict wi = m->w_ih.p + (size_t)i * E;
#pragma omp simd
            for (int e = 0; e < E; e++) dp[e] += wi[e] * d;
            if (t > 0) {
                const float *restrict wh = m->w_hh.p + (size_t)i * H;
#pragma omp simd
                for (int j = 0; j < H; j++) dprev[j] += wh[j] * d;
            }
        }
        memcpy(dh, dprev, sizeof(float) * H);
    }
    /* Adam on the recurrence: each gradient is a sum of W outer products. */
    adam_outer(&m->w_hh, H, H, W, da, tr->h, row, &a);
    adam_outer(&m->w_ih, H, E, W, da, tr->proj, row, &a);
    sum_rows(da, W, H, row);
    adam_dense(&m->b_ih, row, H, &a);
    adam_dense(&m->b_hh, row, H, &a);
    if (m->tokens) {
        memset(dtable, 0, sizeof(float) * I * E);
        for (int t = 0; t < W; t++) {
            float *dst = dtable + (size_t)tokens[t] * E;
            for (int e = 0; e < E; e++) dst[e] += dproj[(size_t)t * E + e];
        }
        adam_dense(&m->project, dtable, I * E, &a);
    } else {
        adam_outer(&m->project, E, I, W, dproj, vectors, row, &a);
        sum_rows(dproj, W, E, row);
        adam_dense(&m->project_b, row, E, &a);
    }
}

/* -- heads (SPEC §2) ------------------------------------------------------------------ */

typedef struct {       /* what a head's forward keeps for its backward */
    float *xhat1, *z0, *gb, *xhat2, *cat;
    float rstd1, rstd2;
    float *pre[MAX_MLP], *act[MAX_MLP];
    float *scratch;
    size_t span;
    const float *context;
} HeadTrace;

static int head_width(const Head *hd) { return hd->mlp[0].in; }

/* The size of one backward scratch vector: the widest vector the backward passes on. */
static size_t head_span(const Head *hd)
{
    size_t span = 2 * (size_t)head_width(hd);
    for (int i = 0; i < hd->layers; i++) {
        span = span > (size_t)hd->mlp[i].in ? span : (size_t)hd->mlp[i].in;
        span = span > (size_t)hd->mlp[i].out ? span : (size_t)hd->mlp[i].out;
    }
    return span;
}

static size_t head_floats(const Head *hd)
{
    size_t n = 2 * (size_t)hd->norm.n + 4 * (size_t)head_width(hd) + 3 * head_span(hd);
    for (int i = 0; i < hd->layers; i++) n += 2 * (size_t)hd->mlp[i].in;
    return n;
}

static HeadTrace head_trace_in(const Head *hd, float *buffer)
{
    HeadTrace t;
    const size_t H = hd->norm.n, width = head_width(hd);
    t.xhat1 = buffer;
    t.z0 = t.xhat1 + H;
    t.gb = t.z0 + H;                 /* film: tanh(γ, β) (2H) */
    t.xhat2 = t.gb + 2 * width;
    t.cat = t.xhat2 + width;         /* film: pre-norm modulated z; concat: [z0, ctx] */
    float *p = t.cat + width;
    for (int i = 0; i < hd->layers; i++) {
        t.pre[i] = p;
        t.act[i] = p + hd->mlp[i].in;
        p += 2 * (size_t)hd->mlp[i].in;
    }
    t.scratch = p;
    t.span = head_span(hd);
    return t;
}

/* Head forward from state h and context c (NULL: none) into out. */
static void head_forward(const Head *hd, const float *h, const float *c, HeadTrace *t,
                         float *out)
{
    const int H = hd->norm.n;
    norm_forward(&hd->norm, h, t->xhat1, &t->rstd1, t->z0);
    t->context = hd->context != CONTEXT_NONE ? c : NULL;
    float *z = t->pre[0];
    if (hd->context == CONTEXT_FILM && c) {
        linear_forward(&hd->ctx, c, t->gb);
        for (int i = 0; i < 2 * H; i++) t->gb[i] = tanhf(t->gb[i]);
        for (int i = 0; i < H; i++) t->cat[i] = (1.0f + t->gb[i]) * t->z0[i] + t->gb[H + i];
        norm_forward(&hd->ctx_norm, t->cat, t->xhat2, &t->rstd2, z);
    } else if (hd->context == CONTEXT_CONCAT && c) {
        memcpy(t->cat, t->z0, sizeof(float) * H);
        linear_forward(&hd->ctx, c, t->cat + H);
        norm_forward(&hd->ctx_norm, t->cat, t->xhat2, &t->rstd2, z);
    } else {
        memcpy(z, t->z0, sizeof(float) * H);
    }
    const int last = hd->layers - 1;
    for (int i = 0; i <= last; i++) {
        const int n = hd->mlp[i].in;
        if (i < last)
            for (int j = 0; j < n; j++) t->act[i][j] = gelu(t->pre[i][j]);
        else
            memcpy(t->act[i], t->pre[i], sizeof(float) * n);
        linear_forward(&hd->mlp[i], t->act[i], i < last ? t->pre[i + 1] : out);
    }
}

/* Head backward from dout with Adam on all its parameters; writes the gradient of the
 * context into dcontext (if the head read one and dcontext is not NULL). */
static void head_backward(const Head *hd, const float *dout, HeadTrace *t, float *dcontext)
{
    const Adam a = adam_begin(&hd->group);
    const int H = hd->norm.n, last = hd->layers - 1;
    float *d = t->scratch, *dn = d + t->span, *tmp = dn + t->span;
    int n = hd->mlp[last].out;
    memcpy(d, dout, sizeof(float) * n);
    for (int i = last; i >= 0; i--) {
        const Linear *l = &hd->mlp[i];
        linear_backward(l, d, t->act[i], dn, &a);
        n = l->in;
        if (i < last)
            for (int j = 0; j < n; j++) d[j] = dn[j] * gelu_grad(t->pre[i][j]);
        else
            memcpy(d, dn, sizeof(float) * n);
    }
    /* d is now the gradient of the normalised, modulated state z. */
    if (t->context && hd->context == CONTEXT_FILM) {
        norm_backward(&hd->ctx_norm, d, t->xhat2, t->rstd2, dn, tmp, &a);
        float *du = d;                /* d is free again: reuse it for (dγ, dβ) */
        float *dz0 = tmp;
        for (int i = 0; i < H; i++) {
            const float g = t->gb[i], b = t->gb[H + i];
            dz0[i] = dn[i] * (1.0f + g);
            du[i] = dn[i] * t->z0[i] * (1.0f - g * g);
            du[H + i] = dn[i] * (1.0f - b * b);
        }
        linear_backward(&hd->ctx, du, t->context, dcontext, &a);
        norm_backward(&hd->norm, dz0, t->xhat1, t->rstd1, NULL, dn, &a);
    } else if (t->context && hd->context == CONTEXT_CONCAT) {
        norm_backward(&hd->ctx_norm, d, t->xhat2, t->rstd2, dn, tmp, &a);
        linear_backward(&hd->ctx, dn + H, t->context, dcontext, &a);
        norm_backward(&hd->norm, dn, t->xhat1, t->rstd1, NULL, tmp, &a);
    } else {
        norm_backward(&hd->norm, d, t->xhat1, t->rstd1, NULL, dn, &a);
    }
}

/* -- entry points (declared in sharp_kernels.h) ------------------------------------- */

static int valid(const int64_t *ids, int n, int64_t vocab)
{
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) return 0;
    return 1;
}

/* The widest vector a wake step passes between layers: V, and every H and E. */
static size_t wake_widest(const Wake *w)
{
    size_t widest = w->vocab;
    for (int l = 0; l < w->layers; l++) {
        widest = widest > (size_t)w->memory[l].hidden ? widest : (size_t)w->memory[l].hidden;
        widest = widest > (size_t)w->memory[l].embedding ? widest : (size_t)w->memory[l].embedding;
    }
    return widest;
}

int64_t sharp_wake_workspace(const Wake *w)
{
    const size_t widest = wake_widest(w);
    size_t floats = trace_floats(&w->memory[0]) + 4 * widest;
    for (int l = 0; l < w->layers; l++) floats += head_floats(&w->heads[l]) + widest;
    return (int64_t)floats;
}

SharpStatus sharp_wake(const Wake *w, const int64_t *x, int64_t y, int64_t t, Gate *gate,
                       double *result, float *workspace)
{
    if (!valid(x, w->window, w->vocab) || !valid(&y, 1, w->vocab)) return SHARP_BAD_TOKEN;
    const Memory *m0 = &w->memory[0];
    const size_t widest = wake_widest(w);
    Trace tr = trace_in(m0, workspace);
    float *next = workspace + trace_floats(m0), *proj = next + widest;
    float *da = proj + widest, *db = da + widest, *p = db + widest;

    /* 2. Encode x from the carried window state; recall loss r; carry = after-first. */
    const float r = memory_forward(m0, x, NULL, w->carry, &tr);
    memcpy(w->carry, tr.h + m0->hidden, sizeof(float) * m0->hidden);
    /* 3. The recall-EMA gate: memory 0 learns only while its recall is poor. */
    const int learned = gate_update(gate, (double)r);
    if (learned) memory_backward(m0, &w->memory_group, x, NULL, &tr);
    /* 4. Bottom-up, no grad: layer l advances when its stride divides t. */
    for (int l = 0; l < w->layers; l++) {
        if (t % w->strides[l]) break;
        const Memory *m = &w->memory[l];
        memory_project(m, &x[w->window - 1], l ? w->states[l - 1] : NULL, 0, proj);
        memory_cell(m, proj, w->states[l], next);
        memcpy(w->states[l], next, sizeof(float) * m->hidden);
    }
    /* 5. Top-down through the heads: head l's output is head l-1's context. */
    HeadTrace traces[MAX_LAYERS];
    const float *context = NULL;
    for (int l = w->layers - 1; l >= 0; l--) {
        traces[l] = head_trace_in(&w->heads[l], p);
        p += head_floats(&w->heads[l]);
        float *out = l ? p : w->logits;
        p += widest;
        head_forward(&w->heads[l], w->states[l], context, &traces[l], out);
        context = out;
    }
    if (w->layers > 1) memcpy(w->context, traces[0].context, sizeof(float) * m0->hidden);
    /* 6. Prediction loss, credit-assigned to the heads only (states carry no grad). */
    const float loss = cross_entropy(w->logits, w->vocab, y, da, 1.0f);
    for (int l = 0; l < w->layers; l++) {
        float *dout = l % 2 ? db : da, *dcontext = l + 1 < w->layers ? (l % 2 ? da : db) : NULL;
        head_backward(&w->heads[l], dout, &traces[l], dcontext);
    }
    result[0] = loss;
    result[1] = r;
    result[2] = learned;
    return SHARP_OK;
}

int64_t sharp_sleep_workspace(const Memory *m) { return (int64_t)(trace_floats(m) + m->hidden); }

/* For each of `tags` dreams of `ticks` vectors: slide the window buffer (kept across
 * tags), encode from a carry that starts at zero for each tag, learn while the gate is
 * open. */
int64_t sharp_sleep(const Memory *m, const Group *group, const float *dreams, int64_t tags,
                    int64_t ticks, float *window, Gate *gate, float *losses, float *workspace)
{
    const int H = m->hidden, I = m->inputs, W = m->window;
    Trace tr = trace_in(m, workspace);
    float *carry = workspace + trace_floats(m);
    int64_t updates = 0;
    for (int64_t tag = 0; tag < tags; tag++) {
        memset(carry, 0, sizeof(float) * H);
        for (int64_t s = 0; s < ticks; s++) {
            memmove(window, window + I, sizeof(float) * (size_t)(W - 1) * I);
            memcpy(window + (size_t)(W - 1) * I, dreams + (size_t)(tag * ticks + s) * I,
                   sizeof(float) * I);
            const float loss = memory_forward(m, NULL, window, carry, &tr);
            memcpy(carry, tr.h + H, sizeof(float) * H);
            *losses++ = loss;
            if (gate_update(gate, (double)loss)) {
                memory_backward(m, group, NULL, window, &tr);
                updates++;
            }
        }
    }
    return updates;
}

/* -- the layout table (checked against the ctypes mirror by sharp/engines/fused.py) -- */

#define CONSTANT(c) {#c, c}
#define SIZE(T) {#T " size", sizeof(T)}
#define FIELD(T, f) {#T "." #f " offset", offsetof(T, f)}, {#T "." #f " size", sizeof(((T *)0)->f)}

static const struct { const char *name; int64_t value; } LAYOUT[] = {
    CONSTANT(MAX_LAYERS), CONSTANT(MAX_MLP),
    CONSTANT(CONTEXT_NONE), CONSTANT(CONTEXT_FILM), CONSTANT(CONTEXT_CONCAT),
    CONSTANT(SHARP_OK), CONSTANT(SHARP_BAD_TOKEN),
    SIZE(SharpStatus),
    SIZE(Param), FIELD(Param, p), FIELD(Param, m), FIELD(Param, v),
    SIZE(Linear), FIELD(Linear, w), FIELD(Linear, b), FIELD(Linear, out), FIELD(Linear, in),
    SIZE(Norm), FIELD(Norm, g), FIELD(Norm, b), FIELD(Norm, n),
    SIZE(Group), FIELD(Group, counts), FIELD(Group, n_counts), FIELD(Group, lr),
    FIELD(Group, beta1), FIELD(Group, beta2), FIELD(Group, eps), FIELD(Group, weight_decay),
    SIZE(Gate), FIELD(Gate, coefficient), FIELD(Gate, tau), FIELD(Gate, value),
    SIZE(Memory), FIELD(Memory, tokens), FIELD(Memory, inputs), FIELD(Memory, hidden),
    FIELD(Memory, embedding), FIELD(Memory, window), FIELD(Memory, project),
    FIELD(Memory, project_b), FIELD(Memory, w_ih), FIELD(Memory, w_hh), FIELD(Memory, b_ih),
    FIELD(Memory, b_hh), FIELD(Memory, recall_w), FIELD(Memory, recall_b),
    SIZE(Head), FIELD(Head, norm), FIELD(Head, context), FIELD(Head, ctx),
    FIELD(Head, ctx_norm), FIELD(Head, layers), FIELD(Head, mlp), FIELD(Head, group),
    SIZE(Wake), FIELD(Wake, layers), FIELD(Wake, vocab), FIELD(Wake, window),
    FIELD(Wake, strides), FIELD(Wake, memory), FIELD(Wake, memory_group), FIELD(Wake, heads),
    FIELD(Wake, states), FIELD(Wake, carry), FIELD(Wake, logits), FIELD(Wake, context),
};

int32_t sharp_layout_count(void) { return (int32_t)(sizeof LAYOUT / sizeof LAYOUT[0]); }

const char *sharp_layout_entry(int32_t i, int64_t *value)
{
    if (i < 0 || i >= sharp_layout_count()) return NULL;
    *value = LAYOUT[i].value;
    return LAYOUT[i].name;
}
