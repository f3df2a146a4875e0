// hitch/nn/nn.h: the modules.
#pragma once

#include <hitch/nn/module.h>
#include <hitch/nn/linear.h>
#include <hitch/nn/layers.h>
#include <hitch/nn/init.h>
#include <hitch/nn/state_dict.h>
#include <hitch/nn/embedding.h>
#include <hitch/nn/checkpoint.h>
#include <hitch/nn/safetensors.h>
