// hitch/core/tape.cpp: recording, backward and graph printing (see tape.h).
//
// The path of a gradient: backward() seeds the loss, then run_backward() walks this thread's
// node list once in reverse. Pass 1 marks the nodes the loss depends on and checks them (not
// released, saved values unchanged) before anything is written, so a refused backward changes
// no gradient. Pass 2 runs each marked node whose output received a gradient; its GradSink
// adds into the inputs: a leaf keeps its Grad, an intermediate's Grad lives until its own
// node has consumed it.
#include "core/tape.h"

#include <algorithm>

#include "core/anomaly.h"
#include "core/grad.h"

namespace hitch {

namespace {
struct Tape {
  std::vector<std::shared_ptr<Node>> nodes;  // recording order = topological order
  std::uint64_t next_seq = 1;
  std::uint64_t next_mark = 1;
  std::size_t prune_at = 1024;
  bool grad_enabled = true;
};
thread_local Tape tape;

// Drops nodes that can never run again: released ones, and those whose output is gone (no
// gradient can arrive at a tensor nobody holds).
void prune() {
  std::erase_if(tape.nodes, [](const std::shared_ptr<Node>& n) { return n->released || n->output.expired(); });
  tape.prune_at = std::max<std::size_t>(1024, 2 * tape.nodes.size());
}

std::string second_time_message(const Node& n) {
  return fmt::format(
      "backward: node #{} ({}) was already backpropagated and its saved values were freed; pass "
      "BackwardOptions{{.retain_graph = true}} to the first backward to run backward through a graph twice",
      n.seq, n.op);
}
}  // namespace

bool grad_enabled() { return tape.grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(tape.grad_enabled) { tape.grad_enabled = false; }
NoGradGuard::~NoGradGuard() { tape.grad_enabled = previous_; }
std::size_t tape_size() { return tape.nodes.size(); }

bool will_record(std::span<const Tensor> inputs) {
  if (!tape.grad_enabled) return false;
  return std::any_of(inputs.begin(), inputs.end(), [](const Tensor& t) { return t.defined() && t.requires_grad(); });
}

bool record(std::string op, std::span<const Tensor> inputs, Tensor& out, BackwardFn backward,
            std::span<const Tensor> saved) {
  if (!will_record(inputs)) return false;
  auto node = std::make_shared<Node>();
  node->op = std::move(op);
  node->seq = tape.next_seq++;
  for (const auto& t : inputs) node->inputs.push_back(t.defined() ? t.impl_ptr() : nullptr);
  node->output = out.impl_ptr();
  node->out_shape = out.shape();
  node->backward = std::move(backward);
  for (const auto& t : saved) node->saved.emplace_back(t.impl().storage, t.impl().storage->version);
  if (anomaly_mode_enabled()) node->scope = record_scope_path();
  out.impl().grad_fn = node;
  out.impl().requires_grad = true;
  tape.nodes.push_back(std::move(node));
  if (tape.nodes.size() >= tape.prune_at) prune();
  return true;
}

bool GradSink::wants(std::size_t i) const {
  return i < node_.inputs.size() && node_.inputs[i] && node_.inputs[i]->requires_grad;
}

static Grad& grad_of(TensorImpl& t) {
  if (!t.grad) t.grad = std::make_shared<Grad>(t.shape);
  return *t.grad;
}

void GradSink::add(std::size_t i, const Tensor& g) {
  if (!wants(i)) return;
  TensorImpl& target = *node_.inputs[i];
  if (g.shape() != target.shape)
    throw InternalError(fmt::format("{} backward: gradient of shape {} for input {} of shape {}", node_.op,
                                    shape_str(g.shape()), i, shape_str(target.shape)));
  if (anomaly_mode_enabled()) detail::check_gradient_finite(node_, i, g.values(), {});
  for (const auto& [id, hook] : target.grad_hooks) hook(GradContribution{.node = node_, .dense = &g, .rows = {}, .values = {}, .row_width = 0});
  grad_of(target).add(g);
}

bool GradSink::takes_lookup(std::size_t i) const {
  if (!wants(i)) return false;
  const TensorImpl& target = *node_.inputs[i];
  return target.grad_hooks.empty() && !anomaly_mode_enabled() && Grad::lookup_fits(target.shape);
}

void GradSink::add_lookup(std::size_t i, const Lookup& lookup) {
  if (!takes_lookup(i)) throw InternalError(fmt::format("{} backward: add_lookup for input {} that does not take it", node_.op, i));
  grad_of(*node_.inputs[i]).add_lookup(lookup);
}

void GradSink::add_rows(std::size_t i, std::span<const std::int64_t> rows, std::span<const float> values,
                        bool sparse) {
  if (!wants(i)) return;
  add_rows(i, RowBlock{{rows.begin(), rows.end()}, {values.begin(), values.end()}, nullptr}, sparse);
}

void GradSink::add_rows(std::size_t i, RowBlock&& block, bool sparse) {
  if (!wants(i)) return;
  TensorImpl& target = *node_.inputs[i];
  // Checks and hooks look at the values: a deferred block (RowSums) computes them here.
  if (anomaly_mode_enabled() || !target.grad_hooks.empty()) materialize(block);
  if (anomaly_mode_enabled()) detail::check_gradient_finite(node_, i, block.values, block.rows);
  Grad& grad = grad_of(target);
  for (const auto& [id, hook] : target.grad_hooks)
    hook(GradContribution{.node = node_, .dense = nullptr, .rows = block.rows, .values = block.values, .row_width = grad.row_width()});
  grad.add_rows(std::move(block), sparse && target.grad_fn == nullptr);
}

static std::vector<Node*> reached_nodes(const std::shared_ptr<Node>& root, bool check) {
  const std::uint64_t mark = tape.next_mark++;
  root->mark = mark;
  std::size_t marked = 1;
  auto it = std::lower_bound(tape.nodes.begin(), tape.nodes.end(), root->seq,
                             [](const std::shared_ptr<Node>& n, std::uint64_t seq) { return n->seq < seq; });
  if (it == tape.nodes.end() || *it != root)
    throw Error(fmt::format("backward: node #{} ({}) is not on this thread's tape: a graph must be backpropagated "
                            "on the thread that recorded it",
                            root->seq, root->op));
  std::vector<Node*> reached;
  for (auto pos = it - tape.nodes.begin(); pos >= 0; --pos) {
    Node* n = tape.nodes[static_cast<std::size_t>(pos)].get();
    if (n->mark != mark) continue;
    reached.push_back(n);
    if (check) {
      for (const auto& [storage, version] : n->saved)
        if (storage->version != version)
          throw Error(fmt::format("backward: node #{} ({}) reads a value that was modified in place after it was "
                                  "recorded (version {}, recorded at {}); an optimizer step or a max_norm lookup "
                                  "between forward and backward does this",
                                  n->seq, n->op, storage->version, version));
    }
    for (const auto& in : n->inputs) {
      if (!in || !in->requires_grad || !in->grad_fn || in->grad_fn->mark == mark) continue;
      if (check && in->grad_fn->released) throw Error(second_time_message(*in->grad_fn));
      in->grad_fn->mark = mark;
      ++marked;
    }
  }
  if (check && reached.size() != marked)
    throw Error("backward: part of this graph was recorded on another thread; a graph must be backpropagated on "
                "the thread that recorded it");
  return reached;
}

void backward(const Tensor& loss, const Tensor& grad_output, BackwardOptions options) {
  TensorImpl& root = loss.impl();
  if (!root.requires_grad)
    throw Error(fmt::format("backward: the output of shape {} does not require grad: it was made under NoGradGuard "
                            "or from tensors none of which requires grad",
                            shape_str(root.shape)));
  Tensor seed;
  if (!grad_output.defined()) {
    if (numel_of(root.shape) != 1)
      throw Error(fmt::format("backward: a gradient can be created implicitly only for a one-element output, but "
                              "the output has shape {}; pass grad_output",
                              shape_str(root.shape)));
    seed = Tensor::ones(root.shape);
  } else {
    if (grad_output.shape() != root.shape)
      throw Error(fmt::format("backward: grad_output has shape {} but the output has shape {}",
                              shape_str(grad_output.shape()), shape_str(root.shape)));
    seed = grad_output;
  }
  if (!root.grad_fn) {  // backward on a leaf: d leaf / d leaf = 1
    grad_of(root).add(seed);
    return;
  }
  if (root.grad_fn->released) throw Error(second_time_message(*root.grad_fn));
  const std::vector<Node*> reached = reached_nodes(root.grad_fn, true);

  grad_of(root).add(seed);
  NoGradGuard no_grad;  // ops used inside backward functions must not record
  try {
    for (Node* n : reached) {
      auto out = n->output.lock();
      if (!out || !out->grad || out->grad->empty()) continue;
      const Tensor g = out->grad->dense();
      out->grad.reset();  // an intermediate's gradient lives only until its node ran
      GradSink sink(*n);
      n->backward(g, sink);
    }
  } catch (...) {  // anomaly mode stopped it: drop the intermediates' partial gradients, keep the graph
    for (Node* n : reached)
      if (auto out = n->output.lock(); out && out->grad_fn) out->grad.reset();
    throw;
  }
  if (!options.retain_graph) {
    for (Node* n : reached) {
      n->released = true;
      n->backward = nullptr;
      n->inputs.clear();
      n->saved.clear();
    }
    prune();
  }
}

std::string format_graph(const Tensor& root) {
  const TensorImpl& r = root.impl();
  auto leaf_str = [](const TensorImpl& t) {
    if (t.is_parameter) return fmt::format("Parameter '{}' {}", t.name, shape_str(t.shape));
    return fmt::format("leaf {}{}", shape_str(t.shape), t.requires_grad ? " (requires grad)" : "");
  };
  if (!r.grad_fn) return leaf_str(r) + "\n";
  if (r.grad_fn->released) return fmt::format("#{} {} (released by an earlier backward)\n", r.grad_fn->seq, r.grad_fn->op);
  std::string out;
  std::vector<const TensorImpl*> params;
  for (const Node* n : reached_nodes(r.grad_fn, false)) {
    std::vector<std::string> ins;
    for (const auto& in : n->inputs) {
      if (!in) continue;
      if (in->grad_fn && in->requires_grad) {
        ins.push_back(fmt::format("#{}", in->grad_fn->seq));
      } else {
        ins.push_back(leaf_str(*in));
        if (in->is_parameter && std::find(params.begin(), params.end(), in.get()) == params.end()) params.push_back(in.get());
      }
    }
    out += fmt::format("#{} {} -> {}  <- {}\n", n->seq, n->op, shape_str(n->out_shape), fmt::join(ins, ", "));
  }
  out += "Parameters reached:";
  for (const TensorImpl* p : params) out += fmt::format(" '{}' {}", p->name, shape_str(p->shape));
  if (params.empty()) out += " none";
  return out + "\n";
}

}  // namespace hitch
