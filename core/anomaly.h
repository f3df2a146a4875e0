// hitch/core/anomaly.h: anomaly mode (PyTorch's detect_anomaly) and record scopes.
//
//   hitch::DetectAnomalyGuard anomaly;            // this thread, while alive
//   { hitch::RecordScope s("model.forward"); loss = model(x); }
//   backward(loss);  // throws hitch::Error at the first node whose gradient has a NaN or Inf
//
// While a DetectAnomalyGuard is alive, every gradient a backward function hands to its GradSink
// is checked before it is added; the first non-finite element stops backward with an Error
// naming the node (number and op), the input and element, the node's input shapes and where it
// was recorded: the RecordScope labels that were open when the op ran (a stack, printed as
// "model.forward > bag"). Nodes recorded while anomaly mode was off carry no scope.
//
// Cost when off: record() and GradSink test one thread_local bool; nothing else. RecordScope is
// a push and a pop on a thread_local vector, on or off.
// What a stopped backward leaves: gradients added by the nodes that ran before the bad one stay
// (as in PyTorch); the bad contribution is not added; intermediates' gradients are dropped and
// the graph is not released, so it can be inspected with format_graph. Left out on purpose: a
// check of forward values (hitch ops do not produce NaN from finite inputs except log, div and
// sqrt at their poles, which the backward check catches).
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace hitch {

struct Node;

bool anomaly_mode_enabled();

// While alive, backward on this thread checks every gradient for NaN and Inf, and ops record
// the current RecordScope path in their nodes. Nests; restores the previous mode.
class DetectAnomalyGuard {
 public:
  explicit DetectAnomalyGuard(bool enabled = true);
  ~DetectAnomalyGuard();
  DetectAnomalyGuard(const DetectAnomalyGuard&) = delete;
  DetectAnomalyGuard& operator=(const DetectAnomalyGuard&) = delete;

 private:
  bool previous_;
};

// A label for the ops recorded while it is alive (this thread); scopes nest.
class RecordScope {
 public:
  explicit RecordScope(std::string label);
  ~RecordScope();
  RecordScope(const RecordScope&) = delete;
  RecordScope& operator=(const RecordScope&) = delete;
};

// The open scopes, outermost first, joined by " > "; empty when none is open.
std::string record_scope_path();

namespace detail {
// Called by GradSink in anomaly mode, before a contribution to node's input i is added: dense
// values of the input's shape (rows empty), or rows.size() equally long rows of its dim 0.
// Throws hitch::Error naming the node when a value is NaN or Inf.
void check_gradient_finite(const Node& node, std::size_t input, std::span<const float> values,
                           std::span<const std::int64_t> rows);
}  // namespace detail

}  // namespace hitch
