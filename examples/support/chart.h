// examples/support/chart.h: a small SVG line chart (axes, ticks, labels, legend) and CSV output
// for the example programs. No dependency beyond fmt.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace hitch::examples {

struct Series {
  std::string label;
  std::vector<double> x, y;
  bool dashed = false;  // drawn dashed (e.g. a held-out curve next to its training curve)
  int color = -1;       // index into the palette; -1: the series' position
};

struct ChartOptions {
  std::string title;
  std::string x_label = "step";
  std::string y_label = "loss";
  bool log_y = false;
  int width = 760, height = 440;
};

// The SVG text of a line chart of all series on shared axes.
std::string line_chart_svg(const std::vector<Series>& series, const ChartOptions& options);

// Writes text to path; throws std::runtime_error naming the path and the OS error on failure.
void write_file(const std::string& path, const std::string& text);

// CSV with a header "series,<x_label>,<y_label>" and one row per point.
std::string series_csv(const std::vector<Series>& series, const ChartOptions& options);

// Creates folder (with its parents) and writes <stem>.csv (series_csv) and <stem>.svg
// (line_chart_svg) into it. Returns the two paths, CSV first.
std::pair<std::string, std::string> write_chart_files(const std::string& folder, const std::string& stem,
                                                      const std::vector<Series>& series, const ChartOptions& options);

// "Nice" tick positions covering [lo, hi]: about `target` of them at 1, 2 or 5 times 10^k.
std::vector<double> nice_ticks(double lo, double hi, int target = 6);

}  // namespace hitch::examples
