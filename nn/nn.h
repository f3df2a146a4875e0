// hitch/nn/nn.h: the modules.
#pragma once

#include "nn/module.h"
#include "nn/linear.h"
#include "nn/layers.h"
#include "nn/init.h"
#include "nn/state_dict.h"
#include "nn/embedding.h"
#include "nn/checkpoint.h"
#include "nn/safetensors.h"
