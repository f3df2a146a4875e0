// Tape tests: diamond graphs, accumulation, no-grad, backward misuse.
#include <doctest/doctest.h>

#include "hitch.h"

using namespace hitch;
