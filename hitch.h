// hitch/hitch.h: everything in one include (`#include <hitch/hitch.h>`).
#pragma once

#include <hitch/core/anomaly.h>
#include <hitch/core/error.h>
#include <hitch/core/gradcheck.h>
#include <hitch/core/grad.h>
#include <hitch/core/parameter.h>
#include <hitch/core/runtime/parallel.h>
#include <hitch/core/runtime/path.h>
#include <hitch/core/tape.h>
#include <hitch/core/tensor.h>
#include <hitch/ops/ops.h>
#include <hitch/nn/nn.h>
#include <hitch/optim/optim.h>
