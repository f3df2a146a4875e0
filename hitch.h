// hitch.h: everything in one include.
#pragma once

#include "core/anomaly.h"
#include "core/error.h"
#include "core/gradcheck.h"
#include "core/grad.h"
#include "core/parameter.h"
#include "core/tape.h"
#include "core/tensor.h"
#include "ops/ops.h"
#include "nn/nn.h"
#include "optim/optim.h"
