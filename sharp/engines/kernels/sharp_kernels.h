/* The interface of sharp_kernels.c: the structs, constants, status codes and entry points
 * that its ctypes binding, sharp/engines/fused.py, mirrors.
 *
 * This header is the one source of these declarations. fused.py checks at load time that
 * every constant, struct size and field offset and size of its ctypes mirror equals the
 * table sharp_layout_entry() exports (built from these declarations by the C compiler)
 * and refuses to run on any difference, so a change here that fused.py does not follow
 * is reported instead of corrupting memory.
 */
#ifndef SHARP_KERNELS_H
#define SHARP_KERNELS_H

#include <stdint.h>

#define MAX_LAYERS 8
#define MAX_MLP 8

/* What sharp_wake returns (fused.py maps each to a Python exception). */
typedef enum {
    SHARP_OK = 0,
    SHARP_BAD_TOKEN = 1,  /* a token id outside the vocabulary: nothing was changed */
} SharpStatus;

/* How a head reads its context (Head.context). */
enum { CONTEXT_NONE = 0, CONTEXT_FILM = 1, CONTEXT_CONCAT = 2 };

typedef struct { float *p, *m, *v; } Param;               /* a tensor and its Adam moments */
typedef struct { Param w, b; int32_t out, in; } Linear;    /* y = W x + b, W is (out, in) */
typedef struct { Param g, b; int32_t n; } Norm;           /* LayerNorm with affine g, b */
typedef struct {                                          /* one Adam parameter group */
    float *counts; int32_t n_counts;
    const double *lr;   /* read at every step: the learning rate may change mid-stream */
    double beta1, beta2, eps, weight_decay;
} Group;

/* The recall-EMA gate of one memory: RecallGate in sharp/model/gate.py. */
typedef struct { double coefficient, tau, value; } Gate;

typedef struct {
    int32_t tokens, inputs, hidden, embedding, window;
    Param project, project_b;   /* tokens: project is the (inputs, E) embedding table */
    Param w_ih, w_hh, b_ih, b_hh, recall_w, recall_b;
} Memory;

typedef struct {
    Norm norm; int32_t context; Linear ctx; Norm ctx_norm;
    int32_t layers; Linear mlp[MAX_MLP]; Group group;
} Head;

typedef struct {
    int32_t layers, vocab, window;
    int64_t strides[MAX_LAYERS];
    Memory memory[MAX_LAYERS];
    Group memory_group;
    Head heads[MAX_LAYERS];
    float *states[MAX_LAYERS];
    float *carry, *logits, *context;
} Wake;

/* The kernels allocate nothing: their scratch memory is a caller-owned workspace of at
 * least this many floats (sharp_wake for w, sharp_sleep for m), allocated once when the
 * caller binds (fused.py sizes one workspace for the wake step and every upper memory). */
int64_t sharp_wake_workspace(const Wake *w);
int64_t sharp_sleep_workspace(const Memory *m);

/* One wake step (SPEC §3 steps 2–6) on window x (W ids) and target y at step t, gated by
 * gate (its value updated); result receives (p, r, learned). */
SharpStatus sharp_wake(const Wake *w, const int64_t *x, int64_t y, int64_t t, Gate *gate,
                       double *result, float *workspace);

/* Sleep replay training of one memory (SPEC §4 step 2) on dreams (tags, ticks, inputs)
 * through the window buffer (W, inputs), gated by gate (its value updated); writes every
 * window's loss to losses (tags * ticks) and returns the number of updates. */
int64_t sharp_sleep(const Memory *m, const Group *group, const float *dreams, int64_t tags,
                    int64_t ticks, float *window, Gate *gate, float *losses, float *workspace);

/* The layout table: entry i's name ("MAX_LAYERS", "Param size", "Param.p offset",
 * "Param.p size", ...) is returned and its value written to *value; i in [0, count). */
int32_t sharp_layout_count(void);
const char *sharp_layout_entry(int32_t i, int64_t *value);

#endif
