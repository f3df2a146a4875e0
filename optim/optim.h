// hitch/optim/optim.h: the optimizers, gradient clipping and LR schedules (namespace
// hitch::optim). docs/optim.md has the formulas and every difference from PyTorch 1.13.
#pragma once

#include <hitch/optim/adagrad.h>
#include <hitch/optim/adam.h>
#include <hitch/optim/clip.h>
#include <hitch/optim/in_backward.h>
#include <hitch/optim/lr_scheduler.h>
#include <hitch/optim/optimizer.h>
#include <hitch/optim/sgd.h>
#include <hitch/optim/sparse_adam.h>
