// network.h — how the compiled ops read their arguments: host code (ATen), shared by the CPU
// extension (csrc/ops.cpp) and the CUDA extension (csrc/cuda/langevin_cuda.cpp).
//
// The ops are registered as boxed kernels: they take their arguments from the dispatcher's stack
// by slot (csrc/call_record.h, generated from the call record in hebm/sampler/record.py and the schema in
// hebm/sampler/backends/ops.py), so no C++ signature restates the argument list.  What is checked here is
// only what guards the kernels' memory — shapes, dtypes, devices, the layout's slots and widths,
// and t (it indexes the bias tables); the argument rules are hebm/sampler/checks.py's, applied before any
// backend runs.
#pragma once

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <cstring>
#include <optional>
#include <string>
#include <vector>

#include "call_record.h"
#include "hebm_kernel.h"

namespace hebm {

static_assert(int(REVERSE_WEIGHTS) == int(LANGEVIN_WEIGHTS) && int(REVERSE_PACK_TOKEN) == int(LANGEVIN_PACK_TOKEN),
              "both ops begin with the same network arguments");

// The schema the op was called with is the one csrc/call_record.h was generated from: the same
// argument names in the same slots (a stale header would read arguments from the wrong slots).
inline void check_schema(const c10::OperatorHandle& op, const char* const* names, size_t n) {
  const auto& args = op.schema().arguments();
  bool same = args.size() == n;
  for (size_t i = 0; same && i < n; ++i) same = args[i].name() == names[i];
  TORCH_CHECK(same, "hebm: the op schema of ", op.schema().name(),
              " differs from csrc/call_record.h; rebuild the extension from a tree whose header "
              "`python -m hebm.sampler.backends.ops --header` wrote");
}

// The network: slot tensors (contiguous) and tables, checked against each other and against u.
struct NetworkArgs {
  std::vector<at::Tensor> slots;
  std::vector<int64_t> dims, offsets, layout, mlps;
  std::vector<double> act_params;
  bool has_energy = false;
  int64_t n_levels = 1, token = 0, D = 0, n_layers = 0, n_mlps = 0;
  double sigma_min = 0, sigma_clamp = 0;

  // Per Linear layer, where its numbers are (the pointers stay valid while `slots` lives).
  template <typename T>
  std::vector<LayerRef<T>> layer_refs() const {
    std::vector<LayerRef<T>> out(n_layers);
    for (int64_t l = 0; l < n_layers; ++l) {
      const int64_t* row = layout.data() + l * LAY_NCOLS;
      LayerRef<T>& r = out[l];
      r.in = row[LAY_IN];
      r.out = row[LAY_OUT];
      r.brows = row[LAY_BROWS];
      r.W = slots[row[LAY_W]].data_ptr<T>();
      r.bias = row[LAY_B] >= 0 ? slots[row[LAY_B]].data_ptr<T>() : nullptr;
      if (row[LAY_LV] >= 0) {
        const at::Tensor& lv = slots[row[LAY_LV]];
        r.level = lv.data_ptr<T>() + row[LAY_LVCOL];
        r.level_ld = lv.size(1);
      }
    }
    return out;
  }
};

// A table of the network: an int64 tensor on the host (one argument, where an int[] of the same
// numbers costs a conversion per element at the op boundary).
inline std::vector<int64_t> host_ints(const c10::IValue& v, const char* name) {
  const at::Tensor& t = v.toTensor();
  TORCH_CHECK(t.scalar_type() == at::kLong && t.device().is_cpu() && t.dim() == 1 && t.is_contiguous(), "hebm: ", name,
              " must be a flat int64 CPU tensor, got ", t.scalar_type(), " ", t.sizes(), " on ", t.device());
  const int64_t* p = t.data_ptr<int64_t>();
  return std::vector<int64_t>(p, p + t.numel());
}

inline NetworkArgs read_network(c10::ArrayRef<c10::IValue> a, const at::Tensor& u) {
  NetworkArgs n;
  for (const at::Tensor& t : a[LANGEVIN_WEIGHTS].toTensorList()) n.slots.push_back(t);
  n.dims = host_ints(a[LANGEVIN_DIMS], "dims");
  n.layout = host_ints(a[LANGEVIN_LAYOUT], "layout");
  n.mlps = host_ints(a[LANGEVIN_MLPS], "mlps");
  n.act_params = a[LANGEVIN_ACT_PARAMS].toDoubleVector();
  n.has_energy = a[LANGEVIN_HAS_ENERGY].toBool();
  n.n_levels = a[LANGEVIN_N_LEVELS].toInt();
  n.sigma_min = a[LANGEVIN_SIGMA_MIN].toDouble();
  n.sigma_clamp = a[LANGEVIN_SIGMA_CLAMP].toDouble();
  n.token = a[LANGEVIN_PACK_TOKEN].toInt();

  constexpr int64_t kMaxWidth = int64_t(1) << 20;
  const int64_t L = static_cast<int64_t>(n.dims.size());
  TORCH_CHECK(L >= 1, "hebm: dims must not be empty");
  for (int64_t i = 0; i < L; ++i) {
    TORCH_CHECK(n.dims[i] >= 1 && n.dims[i] < kMaxWidth, "hebm: layer size dims[", i, "] = ", n.dims[i],
                " is out of range");
    n.offsets.push_back(n.D);
    n.D += n.dims[i];
  }
  TORCH_CHECK(n.n_levels >= 1, "hebm: n_levels must be >= 1");
  TORCH_CHECK(n.sigma_clamp >= 0, "hebm: sigma_clamp must be >= 0 (0: no clamp)");
  TORCH_CHECK(n.layout.size() % LAY_NCOLS == 0, "hebm: layout must be an [n_layers, ", int(LAY_NCOLS), "] table, flattened");
  TORCH_CHECK(n.mlps.size() % MLP_NCOLS == 0, "hebm: mlps must be an [n_mlps, 3] table, flattened");
  n.n_layers = static_cast<int64_t>(n.layout.size()) / LAY_NCOLS;
  n.n_mlps = static_cast<int64_t>(n.mlps.size()) / MLP_NCOLS;
  const int64_t want = (L - 1) + (n.has_energy ? L : 0);
  TORCH_CHECK(n.n_mlps == want, "hebm: expected ", want, " networks (L-1 conditionals", n.has_energy ? " + L energies" : "",
              "), got ", n.n_mlps);
  TORCH_CHECK(static_cast<int64_t>(n.act_params.size()) == n.n_mlps, "hebm: act_params must have one entry per network");

  // every slot tensor: u's dtype and device, contiguous
  const int64_t n_slots = static_cast<int64_t>(n.slots.size());
  for (int64_t s = 0; s < n_slots; ++s) {
    at::Tensor& t = n.slots[s];
    TORCH_CHECK(t.scalar_type() == u.scalar_type() && t.device() == u.device(), "hebm: weights[", s, "] must be ",
                u.scalar_type(), " on ", u.device(), " like u, got ", t.scalar_type(), " on ", t.device());
    if (!t.is_contiguous()) t = t.contiguous();
  }
  // (the messages are built only on failure: TORCH_CHECK evaluates them then)
  auto slot = [&](int64_t s, int64_t m, int64_t j) -> const at::Tensor& {
    TORCH_CHECK(s >= 0 && s < n_slots, "hebm: network ", m, " layer ", j, " names slot ", s, " of ", n_slots);
    return n.slots[s];
  };
  int64_t next_layer = 0;
  for (int64_t m = 0; m < n.n_mlps; ++m) {
    const int64_t first = n.mlps[m * MLP_NCOLS + MLP_FIRST], nl = n.mlps[m * MLP_NCOLS + MLP_NLAYERS];
    const int64_t act = n.mlps[m * MLP_NCOLS + MLP_ACT];
    TORCH_CHECK(first == next_layer && nl >= 1 && first + nl <= n.n_layers, "hebm: network ", m, " has a bad layer range");
    TORCH_CHECK(act >= ACT_RELU && act <= ACT_SOFTPLUS, "hebm: unknown activation code ", act, " of network ", m);
    next_layer = first + nl;
    const bool cond = m < L - 1;
    const int64_t i = cond ? m : m - (L - 1);
    const int64_t want_in = cond ? n.dims[i + 1] : n.dims[i], want_out = cond ? 2 * n.dims[i] : 1;
    int64_t prev_out = want_in;
    for (int64_t j = 0; j < nl; ++j) {
      const int64_t* row = n.layout.data() + (first + j) * LAY_NCOLS;
      const int64_t in = row[LAY_IN], out = row[LAY_OUT], brows = row[LAY_BROWS];
      TORCH_CHECK(in == prev_out && out >= 1 && out < kMaxWidth, "hebm: network ", m, " layer ", j, ": widths do not chain");
      const at::Tensor& W = slot(row[LAY_W], m, j);
      TORCH_CHECK(W.dim() == 2 && W.size(0) == out && W.size(1) == in, "hebm: network ", m, " layer ", j,
                  ": W must be [", out, ", ", in, "], got ", W.sizes());
      if (row[LAY_B] >= 0) {
        const at::Tensor& b = slot(row[LAY_B], m, j);
        TORCH_CHECK(b.dim() == 1 && b.size(0) == out, "hebm: network ", m, " layer ", j, ": the bias must be [", out,
                    "], got ", b.sizes());
      }
      TORCH_CHECK(brows == 1 || brows == n.n_levels, "hebm: network ", m, " layer ", j,
                  ": bias table rows must be 1 or n_levels");
      TORCH_CHECK(j < nl - 1 || brows == 1, "hebm: network ", m, " layer ", j, ": an output layer takes one bias row");
      if (row[LAY_LV] >= 0) {
        const at::Tensor& lv = slot(row[LAY_LV], m, j);
        TORCH_CHECK(brows == n.n_levels && lv.dim() == 2 && lv.size(0) == n.n_levels && row[LAY_LVCOL] >= 0 &&
                        row[LAY_LVCOL] + out <= lv.size(1),
                    "hebm: network ", m, " layer ", j, ": its level rows must be columns ", row[LAY_LVCOL], "..",
                    row[LAY_LVCOL] + out - 1, " of an [n_levels = ", n.n_levels, ", …] table, got ", lv.sizes());
      } else {
        TORCH_CHECK(brows == 1, "hebm: network ", m, " layer ", j, ": a bias table of n_levels rows needs level rows");
      }
      prev_out = out;
    }
    TORCH_CHECK(prev_out == want_out, "hebm: network ", m, " must output ", want_out, " values, got ", prev_out);
  }
  TORCH_CHECK(next_layer == n.n_layers, "hebm: layout has layers no network uses");
  return n;
}

// The call's fields, read from their slots with the guard of their kind's shape: [B] for a
// per-chain field, [B, D] for a state, [K, B, D] / [K, B] for per-step noise / uniforms.
// Contiguous copies (where a tensor was not) live as long as the reader.
struct CallReader {
  c10::ArrayRef<c10::IValue> a;
  at::Tensor u;
  int64_t B = 0, D = 0, K = 0, steps_per_count = 1, n_levels = 1;
  std::vector<at::Tensor> keep;

  CallReader(c10::ArrayRef<c10::IValue> args, int u_slot, const char* u_name) : a(args) {
    u = a[u_slot].toTensor();
    TORCH_CHECK(u.dim() == 2, "hebm: ", u_name, " must be [B, D], got ", u.sizes());
    TORCH_CHECK(u.scalar_type() == at::kFloat || u.scalar_type() == at::kDouble, "hebm: ", u_name,
                " must be float32 or float64, got ", u.scalar_type());
    B = u.size(0);
    D = u.size(1);
  }

  const at::Tensor& hold(const at::Tensor& t, at::ScalarType dt, const char* name) {
    TORCH_CHECK(t.scalar_type() == dt && t.device() == u.device(), "hebm: ", name, " must be ", dt, " on ", u.device(),
                ", got ", t.scalar_type(), " on ", t.device());
    keep.push_back(t.is_contiguous() ? t : t.contiguous());
    return keep.back();
  }
  std::optional<at::Tensor> opt(int slot) const { return a[slot].toOptional<at::Tensor>(); }

  template <typename T>
  const T* chain(int slot, const char* name) {  // [B], or None
    const auto t = opt(slot);
    if (!t.has_value()) return nullptr;
    TORCH_CHECK(t->dim() == 1 && t->size(0) == B, "hebm: ", name, " must be [B] = [", B, "], got ", t->sizes());
    return hold(*t, u.scalar_type(), name).template data_ptr<T>();
  }
  template <typename T>
  const T* state(int slot, const char* name) {  // [B, D], or None
    const auto t = opt(slot);
    if (!t.has_value()) return nullptr;
    TORCH_CHECK(t->sizes() == u.sizes(), "hebm: ", name, " must be [B, D] = ", u.sizes(), ", got ", t->sizes());
    return hold(*t, u.scalar_type(), name).template data_ptr<T>();
  }
  template <typename T>
  const T* per_step(int slot, const char* name, bool with_d) {  // [K, B, D] or [K, B], or None
    const auto t = opt(slot);
    if (!t.has_value()) return nullptr;
    const bool ok = with_d ? (t->dim() == 3 && t->size(0) == K && t->size(1) == B && t->size(2) == D)
                           : (t->dim() == 2 && t->size(0) == K && t->size(1) == B);
    TORCH_CHECK(ok, "hebm: ", name, " must be [K, B", with_d ? ", D" : "", "] = [", K, ", ", B, with_d ? ", " : "",
                with_d ? std::to_string(D) : "", "], got ", t->sizes());
    return hold(*t, u.scalar_type(), name).template data_ptr<T>();
  }
  const int64_t* ints(int slot, const char* name, int64_t lo, int64_t hi) {  // [B] in [lo, hi), or None
    const auto t = opt(slot);
    if (!t.has_value()) return nullptr;
    TORCH_CHECK(t->dim() == 1 && t->size(0) == B, "hebm: ", name, " must be [B] = [", B, "], got ", t->sizes());
    const at::Tensor& x = hold(*t, at::kLong, name);
    if (hi > lo && x.device().is_cpu()) {  // (a GPU kernel clamps instead: no host read on its path)
      const int64_t* p = x.data_ptr<int64_t>();
      bool ok = true;
      for (int64_t i = 0; i < B; ++i) ok &= p[i] >= lo && p[i] < hi;
      TORCH_CHECK_VALUE(ok, "hebm: ", name, " must lie in [", lo, ", ", hi, ")");
    }
    return x.data_ptr<int64_t>();
  }
  template <typename T>
  const T* ladder(int slot, const char* name, int64_t& R) {  // [R] with R dividing B, or None
    const auto t = opt(slot);
    R = 0;
    if (!t.has_value()) return nullptr;
    TORCH_CHECK(t->dim() == 1 && t->size(0) >= 1 && B % t->size(0) == 0, "hebm: ", name,
                " must be [R] with R dividing B = ", B, ", got ", t->sizes());
    R = t->size(0);
    return hold(*t, u.scalar_type(), name).template data_ptr<T>();
  }
  template <typename T>
  const T* rounds(int slot, const char* name, int64_t step_offset, int64_t every) {  // [n_rounds, B], or None
    const auto t = opt(slot);
    if (!t.has_value()) return nullptr;
    TORCH_CHECK(every >= 1, "hebm: swap_every must be >= 1, got ", every);
    const int64_t n = (step_offset + K) / every - step_offset / every;
    TORCH_CHECK(t->dim() == 2 && t->size(0) == n && t->size(1) == B, "hebm: ", name, " must be [n_rounds, B] = [", n,
                ", ", B, "], got ", t->sizes());
    return hold(*t, u.scalar_type(), name).template data_ptr<T>();
  }
  int choice(int slot, const char* name, const char* const* names, int n) const {
    const std::string s(a[slot].toStringView());
    for (int i = 0; i < n; ++i)
      if (s == names[i]) return i;
    TORCH_CHECK_VALUE(false, "hebm: ", name, " = '", s, "' is not one of the names it takes");
    return 0;
  }
  int64_t steps(int slot, const char* name) {  // K per record step (a reverse diffusion: per level)
    const int64_t v = count(slot, name);
    K = v * steps_per_count;
    return v;
  }
  int64_t count(int slot, const char* name) {
    const int64_t v = a[slot].toInt();
    TORCH_CHECK(v >= 0, "hebm: ", name, " must be >= 0, got ", v);
    return v;
  }
  void seed(int slot, uint32_t& key0, uint32_t& key1) const {  // the key of seed s: (s mod 2³², ⌊s/2³²⌋)
    const auto s = a[slot].toOptional<int64_t>();
    const uint64_t bits = s.has_value() ? static_cast<uint64_t>(*s) : 0;
    key0 = static_cast<uint32_t>(bits);
    key1 = static_cast<uint32_t>(bits >> 32);
  }
};

// Reading one field into its member of hebm::Problem (or hebm::cuda::KArgs), by kind; the
// member types are HEBM_MEMBER_<KIND> (csrc/hebm_kernel.h).  n_steps comes before the per-step
// fields in both records, so K is known when noise and uniforms are read.
#define HEBM_FILL_U(P, c, name, slot)
#define HEBM_FILL_STEPS(P, c, name, slot) P.name = c.steps(slot, #name);
#define HEBM_FILL_COUNT(P, c, name, slot) P.name = c.count(slot, #name);
#define HEBM_FILL_CHAIN(P, c, name, slot) P.name = c.template chain<T>(slot, #name);
#define HEBM_FILL_LEVEL(P, c, name, slot) P.name = c.ints(slot, #name, 0, c.n_levels);
#define HEBM_FILL_NEXT(P, c, name, slot) P.name = c.template state<T>(slot, #name);
#define HEBM_FILL_SEED(P, c, name, slot) c.seed(slot, P.key0, P.key1);
#define HEBM_FILL_IDS(P, c, name, slot) P.name = c.ints(slot, #name, 0, 0);
#define HEBM_FILL_NOISE(P, c, name, slot) P.name = c.template per_step<T>(slot, #name, true);
#define HEBM_FILL_FLAG(P, c, name, slot) P.name = c.a[slot].toBool();
#define HEBM_FILL_UNIF(P, c, name, slot) P.name = c.template per_step<T>(slot, #name, false);
#define HEBM_FILL_LADDER(P, c, name, slot) P.name = c.template ladder<T>(slot, #name, P.name##_n);
#define HEBM_FILL_CHOICE(P, c, name, slot) P.name = c.choice(slot, #name, hebm::kChoices_##name, hebm::kNChoices_##name);
#define HEBM_FILL_ROUNDS(P, c, name, slot) P.name = c.template rounds<T>(slot, #name, P.step_offset, P.swap_every);

}  // namespace hebm
