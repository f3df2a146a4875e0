// hitch/core/tape.h: the reverse-mode tape.
//
// Every differentiable op computes its output and then calls record(): that makes a Node
// holding the op's inputs and backward function, numbered in this thread's recording order
// (a topological order: an op's inputs were made before it), and hangs it on the output as
// its grad_fn. The graph is owned by the tensors: a node lives while its output can still be
// reached, from a tensor somebody holds or through a later node's inputs, so a dropped forward
// pass frees itself, whatever is dropped and in which order, and a long chain is released by a
// loop, never by recursion (~Node).
//
// backward(loss) collects the nodes reachable from loss, sorts them by number and walks them
// once, newest first: a node runs when its output received a gradient, and its backward
// function adds (+=, never =) into its inputs' gradients through a GradSink. A tensor read
// twice therefore gets the sum, and a leaf (a Parameter) keeps accumulating across backward
// calls until zero_grad(). Its cost depends on the graph it walks, not on what else is alive.
//
// Leaves that carry an optimizer applied in backward (TensorImpl::in_backward, optim/in_backward.h)
// are stepped once every node has run: the tie's paths are summed first, one backward is one step.
// After a backward without retain_graph the nodes it ran release their saved values and inputs;
// running backward through them again is an error. Left out on purpose: higher-order gradients,
// graphs spanning threads (a graph is backpropagated on the thread that recorded it).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include <hitch/core/grad.h>
#include <hitch/core/tensor.h>

namespace hitch {

class GradSink;
struct TapeCounter;  // tape.cpp: the count behind tape_size()
using BackwardFn = std::function<void(const Tensor& grad_out, GradSink& sink)>;

struct Node {
  Node() = default;
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node();  // releases a chain of inputs iteratively (see tape.cpp)

  std::string op;
  std::uint64_t seq = 0;    // position in recording order, per thread
  std::uint64_t tape = 0;   // which thread's tape recorded it (ids are never reused)
  std::vector<std::shared_ptr<TensorImpl>> inputs;
  std::weak_ptr<TensorImpl> output;
  Shape out_shape;
  BackwardFn backward;
  // Storages whose values backward reads, with their versions when recorded.
  std::vector<std::pair<std::shared_ptr<Storage>, std::uint64_t>> saved;
  bool released = false;   // set by a backward without retain_graph: inputs and saved are gone
  std::uint64_t mark = 0;  // stamp of the last backward that reached it (written by its own thread only)
  std::shared_ptr<TapeCounter> counter;  // counts this node while it could run
  std::string scope;  // RecordScope path, stored only when recorded in anomaly mode (core/anomaly.h)
};

// One contribution arriving at a leaf during backward, as a grad hook sees it: from which node
// (op name and number), dense (dense != nullptr) or as rows (rows / values, row_width floats
// per row). Seen before it is added; a hook must not keep the pointers.
struct GradContribution {
  const Node& node;
  const Tensor* dense = nullptr;
  std::span<const std::int64_t> rows;
  std::span<const float> values;
  std::int64_t row_width = 0;
};

// What a backward function writes into: input i's gradient, by addition only.
class GradSink {
 public:
  GradSink(const Node& node) : node_(node) {}
  bool wants(std::size_t i) const;  // input i requires a gradient
  void add(std::size_t i, const Tensor& g);  // g has input i's shape
  // Row contributions to an input's dim 0 (embedding tables): values holds rows.size() rows.
  // sparse = true (PyTorch's sparse=True) keeps a leaf's gradient row-sparse unless it is
  // already dense; otherwise the rows are scattered into a dense gradient.
  void add_rows(std::size_t i, std::span<const std::int64_t> rows, std::span<const float> values, bool sparse);
  // The same for a block the op built (embedding ops: sorted unique rows); kept without a copy.
  void add_rows(std::size_t i, RowBlock&& block, bool sparse);
  // Embedding ops with a dense gradient: whether add_lookup() may take input i's gradient (it
  // is wanted, small enough for Grad::add_lookup, and no grad hook or anomaly check wants the
  // rows as a block), and the lookup itself: the same bits as grouping rows and add_rows().
  bool takes_lookup(std::size_t i) const;
  void add_lookup(std::size_t i, const Lookup& lookup);

 private:
  const Node& node_;
};

bool grad_enabled();

// While alive, ops on this thread record nothing and their outputs do not require grad.
class NoGradGuard {
 public:
  NoGradGuard();
  ~NoGradGuard();
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Called by ops after computing out. Does nothing (and leaves out a leaf without grad) when
// grad mode is off or no input requires grad; otherwise out requires grad and gets a node.
// saved lists the tensors whose values backward reads: backward refuses to run if one of
// them was written in place in between (an optimizer step, max_norm renormalisation).
// Returns whether a node was recorded.
bool record(std::string op, std::span<const Tensor> inputs, Tensor& out, BackwardFn backward,
            std::span<const Tensor> saved = {});
inline bool record(std::string op, std::initializer_list<Tensor> inputs, Tensor& out, BackwardFn backward,
                   std::initializer_list<Tensor> saved = {}) {
  return record(std::move(op), std::span<const Tensor>(inputs.begin(), inputs.size()), out, std::move(backward),
                std::span<const Tensor>(saved.begin(), saved.size()));
}
// True when an op on these inputs would record (grad mode on and some input requires grad):
// lets an op skip preparing what only backward needs.
bool will_record(std::span<const Tensor> inputs);
inline bool will_record(std::initializer_list<Tensor> inputs) {
  return will_record(std::span<const Tensor>(inputs.begin(), inputs.size()));
}

struct BackwardOptions {
  bool retain_graph = false;
};

// Requires: loss requires grad; grad_output undefined only if loss has one element, otherwise
// of loss's shape. Ensures: every leaf reached has grad += d loss / d leaf (times grad_output).
void backward(const Tensor& loss, const Tensor& grad_output = {}, BackwardOptions options = {});

enum class GraphFormat { text, dot };

// The recorded graph behind root (a teaching aid), as
// - text: one node per line, from root back to the leaves: `#3 mul -> [2,8]  <- #1, #2` (op
//   number, name, output shape, inputs: other nodes by number, leaves as `Parameter 'name' [N,D]`
//   or `leaf [N,D]`), then `Parameters reached:`;
// - dot: a Graphviz digraph (render with `dot -Tsvg`; hitch itself needs no Graphviz). Op nodes
//   `n<number>` labelled "#number op\n[shape]"; each leaf is ONE node (`l1`, `l2`, ... in the
//   order first met), so a tied Parameter is one box labelled with its names (Parameter::name(),
//   "emb.weight = head.weight") and its shape, with one edge per read. Edges point the way
//   gradients flow, from an op to its inputs (root at the top), one per input slot (`a * a`
//   gives two). The nearest PyTorch tool is torchviz's make_dot (not part of PyTorch), whose
//   edges point the other way and which names Parameters only from a dict you pass it.
// Both are deterministic: the same graph gives the same bytes (node numbers count per thread).
// Throws hitch::Error if root's graph was recorded on another thread.
std::string format_graph(const Tensor& root, GraphFormat format = GraphFormat::text);

// Number of nodes recorded on this thread that could still run: not released by a backward and
// not freed because nothing can reach their output any more (for tests of the tape's bookkeeping).
std::size_t tape_size();

}  // namespace hitch
