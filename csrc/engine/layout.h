// Where everything of a network lives, shared by the CPU engine (engine/network.h) and the CUDA
// engine (engine/network_cuda.h): each layer's offsets in the flat parameter buffer and its rows
// in the activation workspace (layouts described in engine/network.h). Header-only, so that the
// _cuda module, which does not link the CPU library, uses the same code.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/activation_math.h"
#include "common/errors.h"

namespace fastmlp {

// The most floats a parameter buffer or a workspace row may hold: 2^60 (4 EiB, more than any
// machine addresses), so that counts, and their sizes in bytes, stay far from int64 overflow.
constexpr int64_t kMaxLayoutFloats = int64_t{1} << 60;

// count + b * c for counts and sizes >= 0, or ValueError naming layer_sizes when it would exceed
// kMaxLayoutFloats ([2^48, 2^16, 1] has 2^64 weights, which int64 arithmetic wraps to 0).
inline int64_t add_layout_floats(int64_t count, int64_t b, int64_t c, const char* what) {
  FASTMLP_CHECK(c == 0 || b <= (kMaxLayoutFloats - count) / c, "layer_sizes: ", what,
                " would exceed 2^60 floats (more than can be allocated)");
  return count + b * c;
}

// ValueError naming x when a workspace of rows x floats_per_row would exceed kMaxLayoutFloats
// (the CPU and CUDA engines' ensure_capacity).
inline void check_workspace_rows(int64_t rows, int64_t floats_per_row) {
  FASTMLP_CHECK(rows <= kMaxLayoutFloats / floats_per_row, "x: ", rows, " rows of ", floats_per_row,
                " workspace floats each would exceed 2^60 floats; pass fewer rows");
}

struct Layer {
  int64_t in = 0, out = 0;
  Activation activation = Activation::Identity;
  float alpha = 0.0f;  // fixed alpha (leaky_relu, elu); the initial slope of a PReLU layer
  float dropout = 0.0f;
  int64_t w_offset = 0, b_offset = 0;
  int64_t slope_offset = -1;  // index of the PReLU slope in the parameters, or -1
  // Per-row float offsets into the workspace (multiplied by its capacity in rows); -1 when absent.
  int64_t z_row = -1, a_row = 0, h_row = -1;
};

struct NetworkLayout {
  std::vector<Layer> layers;
  int64_t num_parameters = 0;
  int64_t macs_per_row = 0;         // sum_l D_{l-1} * D_l
  bool has_prelu = false;           // some hidden layer learns a PReLU slope
  int64_t floats_per_row = 0;       // workspace floats per batch row
  int64_t scratch_row[2] = {0, 0};  // backward ping-pong buffers, max_width floats per row each

  // sizes: D_0..D_L; activations, alphas, dropouts: one per hidden layer. ValueError naming the
  // argument when any is out of range.
  NetworkLayout(const std::vector<int64_t>& sizes, const std::vector<Activation>& activations,
                const std::vector<float>& alphas, const std::vector<float>& dropouts) {
    FASTMLP_CHECK(sizes.size() >= 2, "layer_sizes: expected at least 2 sizes (in, out), got ",
                  sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      FASTMLP_CHECK(sizes[i] >= 1, "layer_sizes: size ", i, " is ", sizes[i], ", expected >= 1");
    }
    const size_t hidden = sizes.size() - 2;
    FASTMLP_CHECK(activations.size() == hidden, "activation: expected ", hidden,
                  " entries (one per hidden layer), got ", activations.size());
    FASTMLP_CHECK(alphas.size() == hidden, "activation_alpha: expected ", hidden,
                  " entries (one per hidden layer), got ", alphas.size());
    FASTMLP_CHECK(dropouts.size() == hidden, "dropout: expected ", hidden,
                  " entries (one per hidden layer), got ", dropouts.size());

    const auto L = static_cast<int64_t>(sizes.size()) - 1;
    layers.resize(static_cast<size_t>(L));
    int64_t p = 0;
    for (int64_t l = 0; l < L; ++l) {
      Layer& layer = layers[l];
      layer.in = sizes[l];
      layer.out = sizes[l + 1];
      layer.w_offset = p;
      p = add_layout_floats(p, layer.in, layer.out, "the parameter count");
      macs_per_row += layer.in * layer.out;  // <= p: cannot overflow
      layer.b_offset = p;
      p = add_layout_floats(p, layer.out, 1, "the parameter count");
      if (l + 1 < L) {
        const int a = static_cast<int>(activations[l]);
        FASTMLP_CHECK(a >= 0 && a <= static_cast<int>(Activation::Tanh),
                      "activation: unknown kind ", a, " for hidden layer ", l);
        FASTMLP_CHECK(std::isfinite(alphas[l]), "activation_alpha: entry ", l, " is not finite");
        FASTMLP_CHECK(dropouts[l] >= 0.0f && dropouts[l] < 1.0f, "dropout: entry ", l, " is ",
                      dropouts[l], ", expected a probability in [0, 1)");
        layer.activation = activations[l];
        layer.alpha = alphas[l];
        layer.dropout = dropouts[l];
      }
    }
    // PReLU slopes go after every weight and bias so that [W_1, b_1, ...] keeps the plain layout.
    for (Layer& layer : layers) {
      if (layer.activation == Activation::Prelu) {
        layer.slope_offset = p;
        p = add_layout_floats(p, 1, 1, "the parameter count");
        has_prelu = true;
      }
    }
    num_parameters = p;

    // Workspace row layout: per layer [z (when stored)] [a] [h (when dropout)], then two backward
    // scratch buffers as wide as the widest layer output.
    int64_t row = 0, max_width = 0;
    for (int64_t l = 0; l < L; ++l) {
      Layer& layer = layers[l];
      const bool is_hidden = l + 1 < L;
      const char* what = "the workspace floats per batch row";
      if (is_hidden && layer.activation != Activation::Identity) {
        layer.z_row = row;
        row = add_layout_floats(row, layer.out, 1, what);
      }
      layer.a_row = row;
      row = add_layout_floats(row, layer.out, 1, what);
      if (is_hidden && layer.dropout > 0.0f) {
        layer.h_row = row;
        row = add_layout_floats(row, layer.out, 1, what);
      }
      max_width = std::max(max_width, layer.out);
    }
    scratch_row[0] = row;
    scratch_row[1] = row + max_width;
    floats_per_row = add_layout_floats(row, 2, max_width, "the workspace floats per batch row");
  }
};

}  // namespace fastmlp
