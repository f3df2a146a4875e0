// hitch/nn/init.h: torch.nn.init's initialisers, writing a tensor's values in place.
//
//   nn::init::xavier_uniform_(lin.weight, 1.0, gen);   // a Parameter converts to its Tensor
//
// Formulas are torch.nn.init's (torch/nn/init.py, PyTorch 1.13), with its fan computation
// (_calculate_fan_in_and_fan_out): for a tensor of rank >= 2, fan_in = size(1) * r and
// fan_out = size(0) * r, r = the product of the sizes after the first two (1 for rank 2).
// Random ones draw from gen in element order (gen.uniform() / gen.normal(), one per element),
// so a seed gives the same values on every platform.
//
// Every call checks its arguments first (finite, in range; rank >= 2 where a fan is needed) and
// then writes all values under NoGradGuard and bumps the storage version once, so a backward
// that saved the old values is refused by the tape (core/tape.h), as PyTorch's version counter
// does. A tensor with no elements is left alone (nothing drawn, version unchanged), as torch.
// Each returns t (the same handle). Left out: normal forms of xavier/kaiming, trunc_normal_,
// orthogonal_, sparse_, eye_, dirac_.
#pragma once

#include <string_view>

#include <hitch/core/tensor.h>

namespace hitch::nn::init {

// The fans of a tensor of rank >= 2 (hitch::Error naming who and the shape otherwise).
struct Fans {
  std::int64_t fan_in = 0, fan_out = 0;
};
Fans calculate_fan_in_and_fan_out(const Tensor& t, std::string_view who = "calculate_fan_in_and_fan_out");
// torch.nn.init.calculate_gain: linear, conv1d/2d/3d, conv_transpose1d/2d/3d, sigmoid -> 1;
// tanh -> 5/3; relu -> sqrt(2); leaky_relu -> sqrt(2 / (1 + param^2)) (param finite);
// selu -> 3/4. Anything else is a hitch::Error listing these.
double calculate_gain(std::string_view nonlinearity, double param = 0.01);

// U(a, b): a + (b - a) u. Requires a, b finite, a <= b.
Tensor uniform_(Tensor t, double a = 0.0, double b = 1.0, Generator& gen = default_generator());
// N(mean, std^2): mean + std n. Requires mean, std finite, std >= 0.
Tensor normal_(Tensor t, double mean = 0.0, double std = 1.0, Generator& gen = default_generator());
// Every value val (finite).
Tensor constant_(Tensor t, double val);
Tensor zeros_(Tensor t);
Tensor ones_(Tensor t);
// Glorot & Bengio 2010: U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out)). gain finite, >= 0.
Tensor xavier_uniform_(Tensor t, double gain = 1.0, Generator& gen = default_generator());
// He et al. 2015: U(-b, b), b = sqrt(3) * calculate_gain(nonlinearity, a) / sqrt(fan), fan the
// fan_in or fan_out (mode). a is leaky_relu's negative slope (finite; torch's default 0).
Tensor kaiming_uniform_(Tensor t, double a = 0.0, std::string_view mode = "fan_in",
                        std::string_view nonlinearity = "leaky_relu", Generator& gen = default_generator());

}  // namespace hitch::nn::init
