// hitch/core/tape.cpp: recording, backward and graph printing (see tape.h).
//
// The path of a gradient: backward() seeds the loss, then collects the nodes it reaches (a
// walk over inputs with an explicit stack, checking each node: recorded on this thread, not
// released, saved values unchanged) before anything is written, so a refused backward changes
// no gradient. It then runs them newest first; each GradSink adds into the inputs: a leaf keeps
// its Grad, an intermediate's Grad lives until its own node has consumed it.
#include <hitch/core/tape.h>

#include <algorithm>
#include <atomic>

#include <hitch/core/anomaly.h>
#include <hitch/core/grad.h>

namespace hitch {

struct TapeCounter {
  std::atomic<std::size_t> live{0};
};

namespace {
std::atomic<std::uint64_t> next_tape_id{1};

struct Tape {
  std::uint64_t id = next_tape_id.fetch_add(1);  // per thread, never reused
  std::uint64_t next_seq = 1;
  std::uint64_t next_mark = 1;
  bool grad_enabled = true;
  std::shared_ptr<TapeCounter> counter = std::make_shared<TapeCounter>();
};
thread_local Tape tape;

// Takes a node out of tape_size()'s count (once: when released or destroyed unreleased).
void uncount(Node& n) {
  if (n.counter) n.counter->live.fetch_sub(1, std::memory_order_relaxed);
  n.counter.reset();
}

std::string second_time_message(const Node& n) {
  return fmt::format(
      "backward: node #{} ({}) was already backpropagated and its saved values were freed; pass "
      "BackwardOptions{{.retain_graph = true}} to the first backward to run backward through a graph twice",
      n.seq, n.op);
}
}  // namespace

// A chain y = f(f(f(x))) is owned link by link: y's impl holds its node, the node holds its
// input's impl, which holds the node before it... Destroying the head the ordinary way recurses
// once per link and overflows the stack on a long chain. Instead, a node whose input dies with it
// hands that input's node to the outermost destructor running on this thread, which frees them
// in a loop: the depth stays constant whatever the graph's length. The list lives on that
// destructor's stack; the thread_local is a plain pointer, so it is usable even while the thread's
// other thread_locals are being destroyed (a graph freed at thread or program exit).
namespace {
thread_local std::vector<std::shared_ptr<Node>>* pending_nodes = nullptr;
}

Node::~Node() {
  uncount(*this);
  std::vector<std::shared_ptr<Node>> local;
  const bool outermost = pending_nodes == nullptr;
  if (outermost) pending_nodes = &local;
  for (auto& in : inputs) {
    if (!in || in.use_count() != 1 || !in->grad_fn) continue;  // someone else still holds that input
    try {
      pending_nodes->push_back(std::move(in->grad_fn));
    } catch (...) {  // no memory for the list: that link is freed by recursion, as before
    }
  }
  inputs.clear();
  backward = nullptr;
  if (!outermost) return;
  while (!local.empty()) {
    std::shared_ptr<Node> next = std::move(local.back());
    local.pop_back();
    next.reset();  // may push its own inputs' nodes onto local
  }
  pending_nodes = nullptr;
}

bool grad_enabled() { return tape.grad_enabled; }
NoGradGuard::NoGradGuard() : previous_(tape.grad_enabled) { tape.grad_enabled = false; }
NoGradGuard::~NoGradGuard() { tape.grad_enabled = previous_; }
std::size_t tape_size() { return tape.counter->live.load(std::memory_order_relaxed); }

bool will_record(std::span<const Tensor> inputs) {
  if (!tape.grad_enabled) return false;
  return std::any_of(inputs.begin(), inputs.end(), [](const Tensor& t) { return t.defined() && t.requires_grad(); });
}

bool record(std::string op, std::span<const Tensor> inputs, Tensor& out, BackwardFn backward,
            std::span<const Tensor> saved) {
  // A shard of a table split over processes holds this rank's rows only: an op other than the
  // lookups (which never pass it here, ops/sharding.h) would silently compute on part of a table.
  for (std::size_t i = 0; i < inputs.size(); ++i)
    if (inputs[i].defined() && inputs[i].impl().sharding)
      throw Error(fmt::format("{}: input {} ('{}') is a shard of a table split over processes (dist::shard_rows): it "
                              "holds this rank's rows only, so only embedding and embedding_bag may read it (a tied "
                              "output projection or any other op on a sharded table is not supported)",
                              op, i, inputs[i].impl().name));
  const bool records = will_record(inputs);
  // Anomaly mode checks every op's output, recorded or not, before anything is recorded.
  if (anomaly_mode_enabled()) detail::check_forward_finite(op, inputs, out, records ? tape.next_seq : 0);
  if (!records) return false;
  auto node = std::make_shared<Node>();
  node->op = std::move(op);
  node->seq = tape.next_seq++;
  node->tape = tape.id;
  for (const auto& t : inputs) node->inputs.push_back(t.defined() ? t.impl_ptr() : nullptr);
  node->output = out.impl_ptr();
  node->out_shape = out.shape();
  node->backward = std::move(backward);
  for (const auto& t : saved) node->saved.emplace_back(t.impl().storage, t.impl().storage->version);
  if (anomaly_mode_enabled()) node->scope = record_scope_path();
  node->counter = tape.counter;
  tape.counter->live.fetch_add(1, std::memory_order_relaxed);
  out.impl().grad_fn = std::move(node);
  out.impl().requires_grad = true;
  return true;
}

bool GradSink::wants(std::size_t i) const {
  return i < node_.inputs.size() && node_.inputs[i] && node_.inputs[i]->requires_grad;
}

// Runs target's grad hooks on one contribution. The hooks are those registered when it arrived:
// a hook may add or remove hooks (itself included) while it runs; one added is first called for
// the next contribution, one removed is not called again once remove_grad_hook has returned.
static void run_grad_hooks(const TensorImpl& target, const GradContribution& c) {
  if (target.grad_hooks.empty()) return;
  const auto hooks = target.grad_hooks;  // a copy: the list may change under the calls
  for (const auto& [id, hook] : hooks) {
    const auto& now = target.grad_hooks;
    if (std::any_of(now.begin(), now.end(), [id = id](const auto& h) { return h.first == id; })) hook(c);
  }
}

static Grad& grad_of(TensorImpl& t) {
  if (!t.grad) t.grad = std::make_shared<Grad>(t.shape);
  return *t.grad;
}

// A leaf's gradient that the contribution just added turned dense remembers the node (one
// string copy per gradient, not per contribution): SparseAdam's refusal names it.
static void note_dense_origin(Grad& grad, bool was_dense, const TensorImpl& target, const Node& node) {
  if (!was_dense && grad.is_dense() && target.grad_fn == nullptr) grad.set_dense_origin(node.op, node.seq);
}

void GradSink::add(std::size_t i, const Tensor& g) {
  if (!wants(i)) return;
  TensorImpl& target = *node_.inputs[i];
  if (g.shape() != target.shape)
    throw InternalError(fmt::format("{} backward: gradient of shape {} for input {} of shape {}", node_.op,
                                    shape_str(g.shape()), i, shape_str(target.shape)));
  if (anomaly_mode_enabled()) detail::check_gradient_finite(node_, i, g.values(), {});
  run_grad_hooks(target, GradContribution{.node = node_, .dense = &g, .rows = {}, .values = {}, .row_width = 0});
  Grad& grad = grad_of(target);
  const bool was_dense = grad.is_dense();
  grad.add(g);
  note_dense_origin(grad, was_dense, target, node_);
}

bool GradSink::takes_lookup(std::size_t i) const {
  if (!wants(i)) return false;
  const TensorImpl& target = *node_.inputs[i];
  return target.grad_hooks.empty() && !anomaly_mode_enabled() && !reference_kernels() && lookup_fits(target.shape);
}

void GradSink::add_lookup(std::size_t i, const Lookup& lookup) {
  if (!takes_lookup(i)) throw InternalError(fmt::format("{} backward: add_lookup for input {} that does not take it", node_.op, i));
  Grad& grad = grad_of(*node_.inputs[i]);
  const bool was_dense = grad.is_dense();
  if (grad.row_width() != 0 && lookup.width != static_cast<std::size_t>(grad.row_width()))
    throw InternalError(fmt::format("{} backward: a lookup of width {} for a gradient of shape {}", node_.op,
                                    lookup.width, shape_str(grad.shape())));
  hitch::add_lookup(grad.dense_data(), static_cast<std::size_t>(grad.shape()[0]), lookup.width, lookup);
  note_dense_origin(grad, was_dense, *node_.inputs[i], node_);
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
  run_grad_hooks(target, GradContribution{.node = node_, .dense = nullptr, .rows = block.rows, .values = block.values,
                                          .row_width = grad.row_width()});
  const bool was_dense = grad.is_dense();
  grad.add_rows(std::move(block), sparse && target.grad_fn == nullptr);
  note_dense_origin(grad, was_dense, target, node_);
}

// The nodes root depends on, newest first (each once). Nothing is written but this thread's own
// nodes' marks, and only after their thread was checked, so a call from the wrong thread
// changes nothing. With check, also refuses released nodes and saved values written since.
static std::vector<std::shared_ptr<Node>> reached_nodes(const std::string_view who, const std::shared_ptr<Node>& root,
                                                        bool check) {
  if (root->tape != tape.id)
    throw Error(fmt::format("{}: node #{} ({}) is not on this thread's tape: a graph must be backpropagated on the "
                            "thread that recorded it",
                            who, root->seq, root->op));
  const std::uint64_t mark = tape.next_mark++;
  std::vector<std::shared_ptr<Node>> reached{root};
  root->mark = mark;
  for (std::size_t i = 0; i < reached.size(); ++i) {  // reached doubles as the walk's work list
    const Node& n = *reached[i];
    if (check) {
      for (const auto& [storage, version] : n.saved)
        if (storage->version != version)
          throw Error(fmt::format("backward: node #{} ({}) reads a value that was modified in place after it was "
                                  "recorded (version {}, recorded at {}); an optimizer step or a max_norm lookup "
                                  "between forward and backward does this",
                                  n.seq, n.op, storage->version, version));
    }
    for (const auto& in : n.inputs) {
      if (!in || !in->requires_grad || !in->grad_fn) continue;
      const std::shared_ptr<Node>& p = in->grad_fn;
      if (p->tape != tape.id)
        throw Error(fmt::format("{}: part of this graph was recorded on another thread; a graph must be "
                                "backpropagated on the thread that recorded it",
                                who));
      if (p->mark == mark) continue;
      if (check && p->released) throw Error(second_time_message(*p));
      p->mark = mark;
      reached.push_back(p);
    }
  }
  // Recording order is a topological order: newest first, every node runs after all its users.
  std::sort(reached.begin(), reached.end(), [](const auto& x, const auto& y) { return x->seq > y->seq; });
  return reached;
}

// The leaves this backward reaches that carry an in-backward optimizer (optim/in_backward.h), and
// their hooks, each once.
struct InBackwardSet {
  std::vector<std::shared_ptr<TensorImpl>> leaves;
  std::vector<std::shared_ptr<InBackwardHook>> hooks;
  void add(const std::shared_ptr<TensorImpl>& t) {
    if (!t || t->grad_fn || !t->requires_grad || !t->in_backward) return;
    if (std::find(leaves.begin(), leaves.end(), t) != leaves.end()) return;
    leaves.push_back(t);
    if (std::find(hooks.begin(), hooks.end(), t->in_backward) == hooks.end()) hooks.push_back(t->in_backward);
  }
  // After every node ran: all hooks prepare, then all apply; if one refuses, the hooked leaves'
  // gradients (none before this backward: each apply drops them) are dropped and it rethrows.
  void run() {
    try {
      for (const auto& h : hooks) h->prepare();
    } catch (...) {
      drop();
      throw;
    }
    for (const auto& h : hooks) h->apply();
  }
  void drop() {
    for (const auto& t : leaves) t->grad.reset();
  }
};

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
    if (anomaly_mode_enabled()) detail::check_grad_output_finite(grad_output);
  }
  if (!root.grad_fn) {  // backward on a leaf: d leaf / d leaf = 1
    InBackwardSet hooked;
    hooked.add(loss.impl_ptr());
    for (const auto& h : hooked.hooks) h->before();
    grad_of(root).add(seed);
    hooked.run();
    return;
  }
  if (root.grad_fn->released) throw Error(second_time_message(*root.grad_fn));
  const std::vector<std::shared_ptr<Node>> reached = reached_nodes("backward", root.grad_fn, true);
  InBackwardSet hooked;
  for (const auto& n : reached)
    for (const auto& in : n->inputs) hooked.add(in);
  for (const auto& h : hooked.hooks) h->before();  // may refuse: nothing has run yet

  grad_of(root).add(seed);
  NoGradGuard no_grad;  // ops used inside backward functions must not record
  detail::ForwardCheckPause no_forward_check;  // nor be checked as forward ops (anomaly mode)
  try {
    for (const auto& n : reached) {
      auto out = n->output.lock();
      if (!out || !out->grad || out->grad->empty()) continue;
      const Tensor g = out->grad->dense();
      if (anomaly_mode_enabled()) detail::check_incoming_gradient_finite(*n, g);
      out->grad.reset();  // an intermediate's gradient lives only until its node ran
      GradSink sink(*n);
      n->backward(g, sink);
    }
  } catch (...) {  // anomaly mode stopped it: drop the intermediates' partial gradients, keep the graph
    for (const auto& n : reached)
      if (auto out = n->output.lock(); out && out->grad_fn) out->grad.reset();
    hooked.drop();
    throw;
  }
  hooked.run();  // the in-backward updates; a refusal keeps the graph, as a refused backward does
  if (!options.retain_graph) {
    for (const auto& n : reached) {  // reached keeps every node alive until the loop ends
      n->released = true;
      uncount(*n);
      n->backward = nullptr;
      n->inputs.clear();
      n->saved.clear();
    }
  }
}

namespace {
std::string leaf_str(const TensorImpl& t) {
  if (t.is_parameter) return fmt::format("Parameter '{}' {}", t.name, shape_str(t.shape));
  return fmt::format("leaf {}{}", shape_str(t.shape), t.requires_grad ? " (requires grad)" : "");
}

// A DOT string literal: quotes and backslashes escaped, line breaks as \n.
std::string dot_quote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out + "\"";
}

std::string graph_text(const TensorImpl& r) {
  if (!r.grad_fn) return leaf_str(r) + "\n";
  if (r.grad_fn->released) return fmt::format("#{} {} (released by an earlier backward)\n", r.grad_fn->seq, r.grad_fn->op);
  std::string out;
  std::vector<const TensorImpl*> params;
  for (const auto& n : reached_nodes("format_graph", r.grad_fn, false)) {
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

std::string graph_dot(const TensorImpl& r) {
  std::string out = "digraph hitch {\n  node [fontname=\"Helvetica\", fontsize=11];\n";
  std::vector<const TensorImpl*> leaves;  // identity -> l<position + 1>, in the order first met
  auto leaf_id = [&](const TensorImpl& t) {
    auto it = std::find(leaves.begin(), leaves.end(), &t);
    if (it != leaves.end()) return fmt::format("l{}", it - leaves.begin() + 1);
    leaves.push_back(&t);
    const std::string id = fmt::format("l{}", leaves.size());
    if (t.is_parameter)
      out += fmt::format("  {} [shape=box, style=filled, fillcolor=lightblue, label={}];\n", id,
                         dot_quote(fmt::format("{}\n{}", t.name, shape_str(t.shape))));
    else
      out += fmt::format("  {} [shape=box, style=dashed, label={}];\n", id,
                         dot_quote(fmt::format("leaf {}{}", shape_str(t.shape),
                                               t.requires_grad ? "\n(requires grad)" : "")));
    return id;
  };
  if (!r.grad_fn) {
    leaf_id(r);
  } else if (r.grad_fn->released) {
    const Node& n = *r.grad_fn;
    out += fmt::format("  n{} [label={}];\n", n.seq,
                       dot_quote(fmt::format("#{} {}\n(released by an earlier backward)", n.seq, n.op)));
  } else {
    for (const auto& n : reached_nodes("format_graph", r.grad_fn, false)) {
      out += fmt::format("  n{} [label={}];\n", n->seq,
                         dot_quote(fmt::format("#{} {}\n{}", n->seq, n->op, shape_str(n->out_shape))));
      for (const auto& in : n->inputs) {
        if (!in) continue;
        const std::string to = in->grad_fn && in->requires_grad ? fmt::format("n{}", in->grad_fn->seq) : leaf_id(*in);
        out += fmt::format("  n{} -> {};\n", n->seq, to);
      }
    }
  }
  return out + "}\n";
}
}  // namespace

std::string format_graph(const Tensor& root, GraphFormat format) {
  const TensorImpl& r = root.impl();
  return format == GraphFormat::dot ? graph_dot(r) : graph_text(r);
}

}  // namespace hitch
