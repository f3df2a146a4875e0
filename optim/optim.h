// hitch/optim/optim.h: the optimizers, gradient clipping and LR schedules (namespace
// hitch::optim). docs/optim.md has the formulas and every difference from PyTorch 1.13.
#pragma once

#include "optim/adagrad.h"
#include "optim/adam.h"
#include "optim/clip.h"
#include "optim/lr_scheduler.h"
#include "optim/optimizer.h"
#include "optim/sgd.h"
#include "optim/sparse_adam.h"
