// hitch/core/anomaly.cpp: anomaly mode's thread_local state and the gradient check (see
// anomaly.h). The hooks are in core/tape.cpp: record() stores the scope path, GradSink calls
// check_gradient_finite before adding.
#include "core/anomaly.h"

#include <cmath>
#include <vector>

#include <fmt/format.h>

#include "core/tape.h"

namespace hitch {

namespace {
thread_local bool anomaly_on = false;
thread_local std::vector<std::string> scopes;

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
}  // namespace

bool anomaly_mode_enabled() { return anomaly_on; }
DetectAnomalyGuard::DetectAnomalyGuard(bool enabled) : previous_(anomaly_on) { anomaly_on = enabled; }
DetectAnomalyGuard::~DetectAnomalyGuard() { anomaly_on = previous_; }

RecordScope::RecordScope(std::string label) { scopes.push_back(std::move(label)); }
RecordScope::~RecordScope() { scopes.pop_back(); }
std::string record_scope_path() { return fmt::format("{}", fmt::join(scopes, " > ")); }

void detail::check_gradient_finite(const Node& node, std::size_t input, std::span<const float> values,
                                   std::span<const std::int64_t> rows) {
  std::size_t k = 0;
  while (k < values.size() && std::isfinite(values[k])) ++k;
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
      node.seq, node.op, std::isnan(values[k]) ? "NaN" : values[k] > 0 ? "inf" : "-inf", input_str(node, input),
      element, fmt::join(shapes, ", "), shape_str(node.out_shape),
      node.scope.empty() ? std::string("outside any RecordScope")
                         : fmt::format("in scope \"{}\"", node.scope)));
}

}  // namespace hitch
