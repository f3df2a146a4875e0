// hitch/optim/optim.h: the optimizers.
#pragma once
