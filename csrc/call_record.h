// call_record.h — GENERATED from the call record (hebm/sampler/record.py LANGEVIN, REVERSE) and the op schema
// (hebm/sampler/backends/ops.py) by `python -m hebm.sampler.backends.ops --header`.  Do not edit:
// tests/test_call_record.py regenerates it and compares.
//
// Slots: the position of each argument of hebm::langevin / hebm::reverse_diffusion.  Fields: the
// call-record arguments a kernel reads, as X(name, slot, KIND); csrc/network.h says what each KIND
// becomes (a member of hebm::Problem, the memory guard of its shape).
#pragma once

namespace hebm {

// argument slots of hebm::langevin
enum LangevinSlot : int {
  LANGEVIN_WEIGHTS = 0,
  LANGEVIN_DIMS = 1,
  LANGEVIN_LAYOUT = 2,
  LANGEVIN_MLPS = 3,
  LANGEVIN_ACT_PARAMS = 4,
  LANGEVIN_HAS_ENERGY = 5,
  LANGEVIN_N_LEVELS = 6,
  LANGEVIN_SIGMA_MIN = 7,
  LANGEVIN_SIGMA_CLAMP = 8,
  LANGEVIN_PACK_TOKEN = 9,
  LANGEVIN_U = 10,
  LANGEVIN_N_STEPS = 11,
  LANGEVIN_STEP_SIZE = 12,
  LANGEVIN_NOISE_SCALE = 13,
  LANGEVIN_ENERGY_SCALE = 14,
  LANGEVIN_T = 15,
  LANGEVIN_U_NEXT = 16,
  LANGEVIN_ALPHA = 17,
  LANGEVIN_SIGMA = 18,
  LANGEVIN_SEED = 19,
  LANGEVIN_CHAIN_IDS = 20,
  LANGEVIN_NOISE = 21,
  LANGEVIN_STEP_OFFSET = 22,
  LANGEVIN_METROPOLIS = 23,
  LANGEVIN_UNIFORMS = 24,
  LANGEVIN_TEMPERATURES = 25,
  LANGEVIN_SWAP_EVERY = 26,
  LANGEVIN_SWAP_SCHEDULE = 27,
  LANGEVIN_SWAP_UNIFORMS = 28,
  LANGEVIN_TRACE_EVERY = 29,
  LANGEVIN_TRACE = 30,
  LANGEVIN_PRECISION = 31,
  LANGEVIN_N_ARGS = 32
};
constexpr const char* kLangevinArgNames[] = {"weights", "dims", "layout", "mlps", "act_params", "has_energy", "n_levels", "sigma_min", "sigma_clamp", "pack_token", "u", "n_steps", "step_size", "noise_scale", "energy_scale", "t", "u_next", "alpha", "sigma", "seed", "chain_ids", "noise", "step_offset", "metropolis", "uniforms", "temperatures", "swap_every", "swap_schedule", "swap_uniforms", "trace_every", "trace", "precision"};

// argument slots of hebm::reverse_diffusion
enum ReverseSlot : int {
  REVERSE_WEIGHTS = 0,
  REVERSE_DIMS = 1,
  REVERSE_LAYOUT = 2,
  REVERSE_MLPS = 3,
  REVERSE_ACT_PARAMS = 4,
  REVERSE_HAS_ENERGY = 5,
  REVERSE_N_LEVELS = 6,
  REVERSE_SIGMA_MIN = 7,
  REVERSE_SIGMA_CLAMP = 8,
  REVERSE_PACK_TOKEN = 9,
  REVERSE_U_T = 10,
  REVERSE_N_STEPS = 11,
  REVERSE_SEED = 12,
  REVERSE_CHAIN_IDS = 13,
  REVERSE_NOISE = 14,
  REVERSE_NOISE_SCALE = 15,
  REVERSE_LEVEL_T = 16,
  REVERSE_LEVEL_STEP = 17,
  REVERSE_LEVEL_ENERGY_SCALE = 18,
  REVERSE_LEVEL_ALPHA = 19,
  REVERSE_LEVEL_SIGMA = 20,
  REVERSE_RETURN_LEVELS = 21,
  REVERSE_PRECISION = 22,
  REVERSE_N_ARGS = 23
};
constexpr const char* kReverseArgNames[] = {"weights", "dims", "layout", "mlps", "act_params", "has_energy", "n_levels", "sigma_min", "sigma_clamp", "pack_token", "u_T", "n_steps", "seed", "chain_ids", "noise", "noise_scale", "level_t", "level_step", "level_energy_scale", "level_alpha", "level_sigma", "return_levels", "precision"};

// the names a CHOICE field takes (its member holds the index)
constexpr const char* kChoices_swap_schedule[] = {"deo", "even_odd"};
constexpr int kNChoices_swap_schedule = 2;

}  // namespace hebm

#define HEBM_LANGEVIN_FIELDS(X) \
  X(u, hebm::LANGEVIN_U, U) \
  X(n_steps, hebm::LANGEVIN_N_STEPS, STEPS) \
  X(step_size, hebm::LANGEVIN_STEP_SIZE, CHAIN) \
  X(noise_scale, hebm::LANGEVIN_NOISE_SCALE, CHAIN) \
  X(energy_scale, hebm::LANGEVIN_ENERGY_SCALE, CHAIN) \
  X(t, hebm::LANGEVIN_T, LEVEL) \
  X(u_next, hebm::LANGEVIN_U_NEXT, NEXT) \
  X(alpha, hebm::LANGEVIN_ALPHA, CHAIN) \
  X(sigma, hebm::LANGEVIN_SIGMA, CHAIN) \
  X(seed, hebm::LANGEVIN_SEED, SEED) \
  X(chain_ids, hebm::LANGEVIN_CHAIN_IDS, IDS) \
  X(noise, hebm::LANGEVIN_NOISE, NOISE) \
  X(step_offset, hebm::LANGEVIN_STEP_OFFSET, COUNT) \
  X(metropolis, hebm::LANGEVIN_METROPOLIS, FLAG) \
  X(uniforms, hebm::LANGEVIN_UNIFORMS, UNIF) \
  X(temperatures, hebm::LANGEVIN_TEMPERATURES, LADDER) \
  X(swap_every, hebm::LANGEVIN_SWAP_EVERY, COUNT) \
  X(swap_schedule, hebm::LANGEVIN_SWAP_SCHEDULE, CHOICE) \
  X(swap_uniforms, hebm::LANGEVIN_SWAP_UNIFORMS, ROUNDS) \
  X(trace_every, hebm::LANGEVIN_TRACE_EVERY, COUNT)

#define HEBM_REVERSE_FIELDS(X) \
  X(u_T, hebm::REVERSE_U_T, U) \
  X(n_steps, hebm::REVERSE_N_STEPS, STEPS) \
  X(seed, hebm::REVERSE_SEED, SEED) \
  X(chain_ids, hebm::REVERSE_CHAIN_IDS, IDS) \
  X(noise, hebm::REVERSE_NOISE, NOISE) \
  X(noise_scale, hebm::REVERSE_NOISE_SCALE, CHAIN)
