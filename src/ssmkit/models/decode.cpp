// Fused CPU decode of a CausalLM: one call per generated token runs the embedding, every block
// (RMSNorm, mixer, residual) and the final norm and LM head, writing into buffers the caller
// (decode.py) allocated once. States are updated in place; nothing is allocated per token.
//
// Where the time goes at B = 1: reading the weights (every matrix once per token for the whole
// batch; the matrix-vector products: decode_common.h). Element-wise work and the recurrences
// (decode_mixers.h over ops/*/step_inplace.h) are small beside the weights.
//
// Layout: row-major, PyTorch's own. A layer is described by `Layer` (decode.py writes the same
// fields through ctypes); null pointers mean an absent bias / D / norm. The matrices of the
// projections and the LM head (`Mat`) are float32, bfloat16 (the upper half of a float32) or int8
// with one float32 scale per row (weight-only storage: activations, states and sums stay float32).
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "decode_common.h"
#include "decode_mixers.h"

using namespace ssmkit::decode;  // NOLINT: this file is the one translation unit of the library

extern "C" int64_t ssmkit_decode_workspace(int64_t n_layers, const Layer* layers, int64_t Bsz,
                                           int64_t D) {
  int64_t most = 0;
  for (int64_t i = 0; i < n_layers; ++i) most = std::max(most, layer_workspace(layers[i], Bsz));
  return most + 2 * Bsz * D;  // + the normalized input and the mixer's output
}

// One token for every row: tokens (Bsz,) -> logits (Bsz, V); x (Bsz, D) holds the residual
// stream. final_w null: no final norm. Returns 0, or 1 + the row of a token outside [0, V).
extern "C" int64_t ssmkit_decode_step_f32(int64_t Bsz, int64_t D, int64_t V, int64_t n_layers,
                                          const Layer* layers, const int64_t* tokens,
                                          const Mat* embedding, double embed_scale,
                                          const float* final_w, double final_eps,
                                          const Mat* head, float* x, float* logits,
                                          float* work) {
  for (int64_t b = 0; b < Bsz; ++b)
    if (tokens[b] < 0 || tokens[b] >= V) return b + 1;
  for (int64_t b = 0; b < Bsz; ++b) embedding_row(*embedding, tokens[b], D, embed_scale, x + b * D);
  float* hn = work;          // (Bsz, D)
  float* out = hn + Bsz * D;  // (Bsz, D)
  float* scratch = out + Bsz * D;
  for (int64_t i = 0; i < n_layers; ++i) {
    const Layer& l = layers[i];
    for (int64_t b = 0; b < Bsz; ++b) rms_norm(D, x + b * D, l.norm_w, l.norm_eps, hn + b * D);
    if (l.kind == kMamba)
      mamba_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kMamba2)
      mamba2_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kGLA)
      gla_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kHGRN2)
      hgrn2_layer(l, Bsz, D, hn, out, scratch);
    else if (l.kind == kLinearAttention)
      linear_attention_layer(l, Bsz, D, hn, out, scratch);
    else
      retnet_layer(l, Bsz, D, hn, out, scratch);
    for (int64_t k = 0; k < Bsz * D; ++k) x[k] += out[k];
  }
  for (int64_t b = 0; b < Bsz; ++b) {
    if (final_w)
      rms_norm(D, x + b * D, final_w, final_eps, hn + b * D);
    else
      std::memcpy(hn + b * D, x + b * D, D * sizeof(float));
  }
  gemv(Bsz, V, D, *head, nullptr, hn, D, logits);
  return 0;
}
