// hitch/nn/init.cpp: torch.nn.init's initialisers (see init.h). Every function validates, then
// calls fill(), the one place that writes values and bumps the version.
#include <hitch/nn/init.h>

#include <cmath>
#include <limits>

#include <hitch/core/tape.h>

namespace hitch::nn::init {

namespace {

constexpr double kFloatMax = std::numeric_limits<float>::max();

// The handle must hold a tensor (an undefined one: e.g. the weight of a LayerNorm without affine
// parameters), named by who.
void check_defined(std::string_view who, const Tensor& t) {
  if (!t.defined()) throw Error(fmt::format("{}: the tensor is undefined (an empty handle)", who));
}

// Writes value(i) for every element i in order, under NoGradGuard, then bumps the version once.
template <class F>
Tensor fill(Tensor t, F value) {
  const std::int64_t n = t.numel();
  if (n == 0) return t;
  NoGradGuard no_grad;
  float* x = t.data();
  for (std::int64_t i = 0; i < n; ++i) x[i] = static_cast<float>(value());
  ++t.impl().storage->version;
  return t;
}

Tensor uniform_fill(Tensor t, double a, double b, Generator& gen) {
  return fill(std::move(t), [&] { return a + (b - a) * gen.uniform(); });
}

}  // namespace

Fans calculate_fan_in_and_fan_out(const Tensor& t, std::string_view who) {
  check_defined(who, t);
  if (t.dim() < 2)
    throw Error(fmt::format("{}: fan in and fan out need a tensor of rank >= 2, but the shape is {}", who,
                            shape_str(t.shape())));
  std::int64_t receptive = 1;
  for (std::int64_t d = 2; d < t.dim(); ++d) receptive *= t.size(d);
  return {t.size(1) * receptive, t.size(0) * receptive};
}

double calculate_gain(std::string_view nonlinearity, double param) {
  for (std::string_view one : {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                               "conv_transpose3d", "sigmoid"})
    if (nonlinearity == one) return 1.0;
  if (nonlinearity == "tanh") return 5.0 / 3.0;
  if (nonlinearity == "relu") return std::sqrt(2.0);
  if (nonlinearity == "selu") return 3.0 / 4.0;
  if (nonlinearity == "leaky_relu") {
    if (!std::isfinite(param))
      throw Error(fmt::format("calculate_gain: the negative slope of leaky_relu must be finite, got {}", param));
    return std::sqrt(2.0 / (1.0 + param * param));
  }
  throw Error(fmt::format("calculate_gain: unsupported nonlinearity \"{}\" (valid: linear, conv1d, conv2d, conv3d, "
                          "conv_transpose1d, conv_transpose2d, conv_transpose3d, sigmoid, tanh, relu, leaky_relu, selu)",
                          nonlinearity));
}

// The float range checks below are torch's (uniform_: from and to within the dtype's range and
// to - from <= its max; fill_: the value must convert without overflow): a double beyond
// FLT_MAX would be written as inf (a float conversion out of range is even undefined in C++).
Tensor uniform_(Tensor t, double a, double b, Generator& gen) {
  check_defined("init::uniform_", t);
  if (!std::isfinite(a) || !std::isfinite(b) || !(a <= b))
    throw Error(fmt::format("init::uniform_: a and b must be finite with a <= b, got a {} and b {}", a, b));
  if (a < -kFloatMax || b > kFloatMax || b - a > kFloatMax)
    throw Error(fmt::format("init::uniform_: a and b must lie in float's range with b - a <= {}, got a {} and b {}",
                            kFloatMax, a, b));
  return uniform_fill(std::move(t), a, b, gen);
}

Tensor normal_(Tensor t, double mean, double std, Generator& gen) {
  check_defined("init::normal_", t);
  if (!std::isfinite(mean) || !std::isfinite(std) || std < 0.0)
    throw Error(fmt::format("init::normal_: mean and std must be finite and std >= 0, got mean {} and std {}", mean,
                            std));
  if (std::fabs(mean) > kFloatMax || std > kFloatMax)
    throw Error(fmt::format("init::normal_: mean and std must lie in float's range (|mean| and std <= {}), got mean "
                            "{} and std {}",
                            kFloatMax, mean, std));
  return fill(std::move(t), [&] { return mean + std * gen.normal(); });
}

Tensor constant_(Tensor t, double val) {
  check_defined("init::constant_", t);
  if (!std::isfinite(val)) throw Error(fmt::format("init::constant_: val must be finite, got {}", val));
  if (std::fabs(val) > kFloatMax)
    throw Error(fmt::format("init::constant_: val {} does not fit a float (|val| <= {})", val, kFloatMax));
  return fill(std::move(t), [val] { return val; });
}

Tensor zeros_(Tensor t) {
  check_defined("init::zeros_", t);
  return constant_(std::move(t), 0.0);
}
Tensor ones_(Tensor t) {
  check_defined("init::ones_", t);
  return constant_(std::move(t), 1.0);
}

Tensor xavier_uniform_(Tensor t, double gain, Generator& gen) {
  if (!std::isfinite(gain) || gain < 0.0)
    throw Error(fmt::format("init::xavier_uniform_: gain must be finite and >= 0, got {}", gain));
  const Fans f = calculate_fan_in_and_fan_out(t, "init::xavier_uniform_");
  if (t.numel() == 0) return t;
  const double bound = gain * std::sqrt(6.0 / static_cast<double>(f.fan_in + f.fan_out));
  if (2.0 * bound > kFloatMax)
    throw Error(fmt::format("init::xavier_uniform_: gain {} gives the bound {} for fans {} and {}, but the range 2 * "
                            "bound must be at most {} (float's max)",
                            gain, bound, f.fan_in, f.fan_out, kFloatMax));
  return uniform_fill(std::move(t), -bound, bound, gen);
}

Tensor kaiming_uniform_(Tensor t, double a, std::string_view mode, std::string_view nonlinearity, Generator& gen) {
  if (mode != "fan_in" && mode != "fan_out")
    throw Error(fmt::format("init::kaiming_uniform_: mode must be \"fan_in\" or \"fan_out\", got \"{}\"", mode));
  if (!std::isfinite(a)) throw Error(fmt::format("init::kaiming_uniform_: a must be finite, got {}", a));
  const double gain = calculate_gain(nonlinearity, a);
  const Fans f = calculate_fan_in_and_fan_out(t, "init::kaiming_uniform_");
  if (t.numel() == 0) return t;
  const double fan = static_cast<double>(mode == "fan_in" ? f.fan_in : f.fan_out);
  const double bound = std::sqrt(3.0) * gain / std::sqrt(fan);
  return uniform_fill(std::move(t), -bound, bound, gen);
}

}  // namespace hitch::nn::init
