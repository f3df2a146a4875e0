// hitch/core/anomaly.cpp: anomaly mode's thread_local state, the forward check of an op's output
// and the backward checks of gradients (see anomaly.h). The hooks are in core/tape.cpp: record()
// runs the forward check and stores the scope path, GradSink calls check_gradient_finite before
// adding, backward checks grad_output and each node's incoming gradient.
#include <hitch/core/anomaly.h>

#include <cmath>
#include <utility>
#include <vector>

#include <fmt/format.h>

#include <hitch/core/tape.h>

namespace hitch {

namespace {
thread_local bool anomaly_on = false;
thread_local bool forward_paused = false;  // backward is running
thread_local bool extra_nonfinite = false;  // an AnomalyExtraInput alive holds a NaN or Inf
thread_local std::vector<std::string> scopes;

// How a leaf reads, as format_graph prints it.
std::string leaf_str(const TensorImpl& t) {
  if (t.is_parameter) return fmt::format("Parameter '{}' {}", t.name, shape_str(t.shape));
  return fmt::format("leaf {}{}", shape_str(t.shape), t.requires_grad ? " (requires grad)" : "");
}

std::string input_str(const Node& node, std::size_t i) {
  const auto& in = node.inputs[i];
  if (!in) return fmt::format("input {}", i);
  if (in->is_parameter) return fmt::format("input {} (Parameter '{}' {})", i, in->name, shape_str(in->shape));
  if (in->grad_fn) return fmt::format("input {} ({} from node #{} {})", i, shape_str(in->shape), in->grad_fn->seq, in->grad_fn->op);
  return fmt::format("input {} (leaf {})", i, shape_str(in->shape));
}

// "[1,2]" for flat element k of shape.
std::string position_str(const Shape& shape, std::int64_t k) {
  std::vector<std::int64_t> pos(shape.size());
  for (std::size_t d = shape.size(); d-- > 0;) {
    pos[d] = shape[d] > 0 ? k % shape[d] : 0;
    k = shape[d] > 0 ? k / shape[d] : 0;
  }
  return fmt::format("[{}]", fmt::join(pos, ","));
}

// "element 3 (index [1,1])".
std::string element_str(const Shape& shape, std::size_t k) {
  return fmt::format("element {} (index {})", k, position_str(shape, static_cast<std::int64_t>(k)));
}

const char* value_str(float v) { return std::isnan(v) ? "NaN" : v > 0 ? "inf" : "-inf"; }

// Index of the first NaN or Inf in values, or values.size().
std::size_t first_nonfinite(std::span<const float> values) {
  std::size_t k = 0;
  while (k < values.size() && std::isfinite(values[k])) ++k;
  return k;
}

std::string scope_str(const std::string& scope, const char* verb) {
  return scope.empty() ? fmt::format("{} outside any RecordScope", verb) : fmt::format("{} in scope \"{}\"", verb, scope);
}

std::string shapes_str(std::span<const Tensor> inputs) {
  std::vector<std::string> shapes;
  for (const auto& t : inputs) shapes.push_back(t.defined() ? shape_str(t.shape()) : "none");
  return fmt::format("{}", fmt::join(shapes, ", "));
}
}  // namespace

bool anomaly_mode_enabled() { return anomaly_on; }
DetectAnomalyGuard::DetectAnomalyGuard(bool enabled) : previous_(anomaly_on) { anomaly_on = enabled; }
DetectAnomalyGuard::~DetectAnomalyGuard() { anomaly_on = previous_; }

RecordScope::RecordScope(std::string label) { scopes.push_back(std::move(label)); }
RecordScope::~RecordScope() { scopes.pop_back(); }
std::string record_scope_path() { return fmt::format("{}", fmt::join(scopes, " > ")); }

AnomalyExtraInput::AnomalyExtraInput(float value) {
  if (!anomaly_on || std::isfinite(value)) return;
  set_ = true;
  previous_ = std::exchange(extra_nonfinite, true);
}
AnomalyExtraInput::AnomalyExtraInput(const Tensor& values) {
  if (!anomaly_on || !values.defined() || first_nonfinite(values.values()) == static_cast<std::size_t>(values.numel()))
    return;
  set_ = true;
  previous_ = std::exchange(extra_nonfinite, true);
}
AnomalyExtraInput::~AnomalyExtraInput() {
  if (set_) extra_nonfinite = previous_;
}

detail::ForwardCheckPause::ForwardCheckPause() : previous_(std::exchange(forward_paused, true)) {}
detail::ForwardCheckPause::~ForwardCheckPause() { forward_paused = previous_; }

void check_forward(std::string_view op, std::span<const Tensor> inputs, const Tensor& out) {
  if (anomaly_on) detail::check_forward_finite(op, inputs, out, 0);
}

void detail::check_forward_finite(std::string_view op, std::span<const Tensor> inputs, const Tensor& out,
                                  std::uint64_t seq) {
  if (forward_paused) return;
  auto where = [&] {
    const std::string node = seq != 0           ? fmt::format("node #{}, not recorded", seq)
                             : !grad_enabled() ? std::string("no node (grad mode is off)")
                                               : std::string("no node (no input requires grad)");
    return fmt::format("inputs {}, output {}; {}; {}", shapes_str(inputs), shape_str(out.shape()), node,
                       scope_str(record_scope_path(), "called"));
  };
  // 1. A leaf the optimizer or a load writes (a Parameter, or a leaf requiring grad) with a NaN or
  // Inf: it enters the graph here.
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    if (!inputs[i].defined()) continue;
    const TensorImpl& t = inputs[i].impl();
    if (t.grad_fn || !(t.is_parameter || t.requires_grad)) continue;
    const std::span<const float> v = inputs[i].values();
    const std::size_t k = first_nonfinite(v);
    if (k == v.size()) continue;
    throw Error(fmt::format("{} (anomaly mode): input {}, {}, holds {} at {}, which enters the graph here; {}", op, i,
                            leaf_str(t), value_str(v[k]), element_str(t.shape, k), where()));
  }
  // 2. A finite output passes.
  const std::span<const float> y = out.values();
  const std::size_t k = first_nonfinite(y);
  if (k == y.size()) return;
  // 3. A non-finite input (or declared extra input) is not this op's doing.
  if (extra_nonfinite) return;
  for (const auto& t : inputs)
    if (t.defined() && first_nonfinite(t.values()) != static_cast<std::size_t>(t.numel())) return;
  // 4. This op made it.
  throw Error(fmt::format("{} (anomaly mode): produced {} at output {} from finite inputs; {}", op, value_str(y[k]),
                          element_str(out.shape(), k), where()));
}

void detail::check_gradient_finite(const Node& node, std::size_t input, std::span<const float> values,
                                   std::span<const std::int64_t> rows) {
  const std::size_t k = first_nonfinite(values);
  if (k == values.size()) return;
  const auto& in = node.inputs[input];
  const std::size_t row_width = rows.empty() ? 0 : values.size() / rows.size();
  const std::string element =
      row_width == 0 ? position_str(in ? in->shape : Shape{}, static_cast<std::int64_t>(k))
                     : fmt::format("[{},{}]", rows[k / row_width], k % row_width);
  std::vector<std::string> shapes;
  for (const auto& t : node.inputs) shapes.push_back(t ? shape_str(t->shape) : "none");
  throw Error(fmt::format(
      "backward (anomaly mode): node #{} ({}) produced a gradient with {} for {} at element {}; the node has inputs "
      "{} and output {} and was recorded {}",
      node.seq, node.op, value_str(values[k]), input_str(node, input), element, fmt::join(shapes, ", "),
      shape_str(node.out_shape),
      node.scope.empty() ? std::string("outside any RecordScope") : fmt::format("in scope \"{}\"", node.scope)));
}

void detail::check_grad_output_finite(const Tensor& grad_output) {
  const std::span<const float> v = grad_output.values();
  const std::size_t k = first_nonfinite(v);
  if (k == v.size()) return;
  throw Error(fmt::format("backward (anomaly mode): grad_output {} holds {} at {}", shape_str(grad_output.shape()),
                          value_str(v[k]), element_str(grad_output.shape(), k)));
}

void detail::check_incoming_gradient_finite(const Node& node, const Tensor& grad) {
  const std::span<const float> v = grad.values();
  const std::size_t k = first_nonfinite(v);
  if (k == v.size()) return;
  throw Error(fmt::format(
      "backward (anomaly mode): the gradient reaching the output of node #{} ({}) has {} at {}: every contribution "
      "to it was finite, their sum overflowed; the node has output {} and was recorded {}",
      node.seq, node.op, value_str(v[k]), element_str(node.out_shape, k), shape_str(node.out_shape),
      node.scope.empty() ? std::string("outside any RecordScope") : fmt::format("in scope \"{}\"", node.scope)));
}

}  // namespace hitch
