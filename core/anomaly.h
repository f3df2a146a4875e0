// hitch/core/anomaly.h: anomaly mode (PyTorch's detect_anomaly, extended to the forward) and
// record scopes.
//
//   hitch::DetectAnomalyGuard anomaly;            // this thread, while alive
//   { hitch::RecordScope s("model.forward"); loss = model(x); }  // throws at the op making a NaN/Inf
//   backward(loss);  // throws hitch::Error at the first node whose gradient has a NaN or Inf
//
// Forward (hitch goes beyond PyTorch here, whose anomaly mode checks only backward): while a
// DetectAnomalyGuard is alive, every op checks its output when it is computed (record() does it
// for every op, before it looks at whether anything requires grad, and check_forward() for the
// paths of an op that do not reach record()). The check, in this order:
//   1. an input that is a leaf and a Parameter or requires grad (a table a bad optimizer step or
//      load left with a NaN) holding a NaN or Inf is an Error at the first op that reads it,
//      naming the leaf (Parameter by its name, as format_graph prints it) and the element: that
//      is where the value enters the graph;
//   2. an output with no NaN or Inf passes;
//   3. otherwise, if some input is already non-finite (an intermediate, a plain tensor such as a
//      -inf attention mask, or a value declared with AnomalyExtraInput: a scalar operand, a
//      loss's target or class weights), the op is not blamed and nothing is thrown;
//   4. otherwise the op made a NaN or Inf from finite inputs (log or sqrt of a negative, log(0),
//      0/0, exp overflow, ...): Error naming the op, its node (the number it would get, or "no
//      node" when it records none: nothing requires grad or grad mode is off), the input and
//      output shapes, the element (flat index and multi-index) and value, and the RecordScope path.
// A throwing op records nothing (no node, tape_size() and the node numbering unchanged) and its
// inputs keep their values, except for what an op writes or draws before computing by design, as
// without anomaly mode: embedding's max_norm renormalisation and dropout's draws from the
// generator. Plain tensors that do not require grad are data: a NaN or Inf in them is trusted
// (masks), so an op reading one is not blamed (step 3). Ops run by backward are not checked
// (backward checks the gradients instead).
//
// Backward: every gradient a backward function hands to its GradSink is checked before it is
// added; the first non-finite element stops backward with an Error naming the node (number and
// op) that produced it, the input and element, the node's input shapes and where it was
// recorded: the RecordScope labels that were open when the op ran (a stack, printed as
// "model.forward > bag"). The gradient arriving at a node is checked too before the node runs, so
// a node whose incoming gradient is already non-finite is never blamed: a grad_output with a NaN
// or Inf, or finite contributions whose sum overflowed, is reported as such. Nodes recorded
// while anomaly mode was off carry no scope.
//
// Cost when off: record(), check_forward() and GradSink test one thread_local bool; nothing
// else. RecordScope is a push and a pop on a thread_local vector, on or off.
// What a stopped backward leaves: gradients added by the nodes that ran before the bad one stay
// (as in PyTorch); the bad contribution is not added; intermediates' gradients are dropped and
// the graph is not released, so it can be inspected with format_graph.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include <hitch/core/tensor.h>

namespace hitch {

struct Node;

bool anomaly_mode_enabled();

// While alive, ops on this thread check their outputs and backward checks every gradient for
// NaN and Inf (see above), and ops record the current RecordScope path in their nodes. Nests;
// restores the previous mode.
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

// Anomaly mode's forward check (steps 1-4 above) for an op's path that returns without calling
// record() (nothing requires grad): the same op name and inputs record() would get. Does nothing
// (one bool test) when anomaly mode is off. Throws hitch::Error as described above.
void check_forward(std::string_view op, std::span<const Tensor> inputs, const Tensor& out);
inline void check_forward(std::string_view op, std::initializer_list<Tensor> inputs, const Tensor& out) {
  check_forward(op, std::span<const Tensor>(inputs.begin(), inputs.size()), out);
}

// For an op whose output depends on a value that is not among the tensors it records: a scalar
// operand (add(a, s), mul(a, s), pow's exponent, clamp's bounds, masked_fill's value), a loss's
// target or class weights. While alive, a NaN or Inf in it counts as a non-finite input in the
// forward check (step 3), so the op is not blamed for what the caller passed. Does nothing when
// anomaly mode is off (one bool test); an undefined tensor is ignored.
class AnomalyExtraInput {
 public:
  explicit AnomalyExtraInput(float value);
  explicit AnomalyExtraInput(const Tensor& values);
  ~AnomalyExtraInput();
  AnomalyExtraInput(const AnomalyExtraInput&) = delete;
  AnomalyExtraInput& operator=(const AnomalyExtraInput&) = delete;

 private:
  bool set_ = false;
  bool previous_ = false;
};

namespace detail {
// record()'s forward check: seq is the number the node will get, 0 when the op records none.
void check_forward_finite(std::string_view op, std::span<const Tensor> inputs, const Tensor& out, std::uint64_t seq);
// Called by GradSink in anomaly mode, before a contribution to node's input i is added: dense
// values of the input's shape (rows empty), or rows.size() equally long rows of its dim 0.
// Throws hitch::Error naming the node when a value is NaN or Inf.
void check_gradient_finite(const Node& node, std::size_t input, std::span<const float> values,
                           std::span<const std::int64_t> rows);
// Called by backward in anomaly mode: the grad_output it was given (before anything is written),
// and the gradient that reached node's output, before the node runs.
void check_grad_output_finite(const Tensor& grad_output);
void check_incoming_gradient_finite(const Node& node, const Tensor& grad);
// While alive (backward), ops are not checked in the forward sense.
class ForwardCheckPause {
 public:
  ForwardCheckPause();
  ~ForwardCheckPause();
  ForwardCheckPause(const ForwardCheckPause&) = delete;
  ForwardCheckPause& operator=(const ForwardCheckPause&) = delete;

 private:
  bool previous_;
};
}  // namespace detail

}  // namespace hitch
