// Uses the installed package: one Parameter read twice, one backward, checks the summed gradient.
#include <hitch/hitch.h>

int main() {
  hitch::Parameter w("w", hitch::Tensor({2}, {1.0f, 2.0f}));
  hitch::Tensor y = hitch::sum(hitch::mul(w, w));  // d/dw sum(w*w) = 2w
  hitch::backward(y);
  const hitch::Tensor g = w.grad();
  const bool ok = g.at({0}) == 2.0f && g.at({1}) == 4.0f;
  fmt::print("consumer: grad = {} ({})\n", g, ok ? "ok" : "WRONG");
  return ok ? 0 : 1;
}
