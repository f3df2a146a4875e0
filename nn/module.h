// hitch/nn/module.h: the Module base: parameter listing and train/eval, nothing else.
//
// A module lists its members by overriding members(): `m.param("weight", weight);
// m.module("bag", bag);`. parameters() is computed from that when called, so it always reflects
// the current members, and it holds each Parameter once (by identity, first-seen order) even
// when two submodules hold the same one: that is what makes a tied table get one optimizer
// state.
//
// The walk also names: every Parameter it reaches records the dotted paths under which the tree
// holds it, and from then on reports them, joined by " = " in member order, wherever hitch
// names it (errors, format_graph, anomaly reports, checkpoint messages): a model whose `emb`,
// `bag` and `head` share one table calls it "emb.weight = bag.weight = head.weight", not
// "weight" (the name nn::Embedding gave it). A walk from a submodule (model.emb.parameters())
// keeps the longer names the whole model gave (core/parameter.h, record_module_paths); a
// Parameter no walk has seen keeps the name it was made with, and so does one walked only from
// the module that holds it directly under one name (an Embedding on its own: "weight" would say
// less than the made-with name). Only the label changes: keys
// (named_parameters(), state_dict, checkpoints) are always single dotted paths. PyTorch's
// Parameters have no names of their own; its messages rarely name a Parameter at all.
//
// Modules are not copyable (a copy would have to either share or deep-copy the
// Parameters, and silently doing either surprises someone); they are movable.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <hitch/core/parameter.h>

namespace hitch::nn {

class Module {
 public:
  Module() = default;
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;
  Module(Module&&) = default;
  Module& operator=(Module&&) = default;

  // Ensures: each Parameter appears once, in first-seen order, named by its dotted paths
  // (record_module_paths, above). Throws hitch::Error if two distinct Parameters share storage
  // without allow_alias() (the from_pretrained pitfall), naming both by their paths; then no
  // name is changed.
  std::vector<Parameter> parameters() const;
  // Dotted names ("bag.weight"); a shared Parameter appears once, under its first name (its
  // other names are in Parameter::module_paths()). Names the Parameters as parameters() does.
  // remove_duplicate = false (PyTorch >= 2.0's named_parameters(remove_duplicate=False)): every
  // (dotted name, Parameter) the members reach, a tied Parameter once per name, member order.
  std::vector<std::pair<std::string, Parameter>> named_parameters(bool remove_duplicate = true) const;
  // Parameter::zero_grad on each Parameter once; set_to_none defaults to true (PyTorch >= 2.0).
  void zero_grad(bool set_to_none = true);
  // Sets requires_grad on every Parameter (each once; submodules included), PyTorch's
  // Module.requires_grad_: false freezes them (ops record nothing for them, and no optimizer
  // step moves them, even with a gradient left from before; optim/optimizer.h). Returns *this.
  Module& requires_grad_(bool on = true);

  void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  struct Members {
    virtual void param(std::string_view name, const Parameter& p) = 0;
    virtual void module(std::string_view name, const Module& m) = 0;

   protected:
    ~Members() = default;
  };
  // Lists the direct members. Every module overrides it; a leaf module lists only params.
  virtual void members(Members& m) const = 0;

 private:
  bool training_ = true;
};

// A module with one tensor in and one tensor out: what nn::Sequential chains. Linear, Dropout,
// LayerNorm, ReLU, GELU, Tanh and Sequential itself derive from it (nn/layers.h).
class TensorModule : public Module {
 public:
  virtual Tensor forward(const Tensor& x) const = 0;
  Tensor operator()(const Tensor& x) const { return forward(x); }
};

}  // namespace hitch::nn
