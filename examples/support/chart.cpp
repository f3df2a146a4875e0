// examples/support/chart.cpp: SVG line chart (see chart.h).
#include "chart.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>
#include <utility>

#include <fmt/format.h>

namespace hitch::examples {

std::vector<double> nice_ticks(double lo, double hi, int target) {
  if (!(hi > lo)) hi = lo + 1.0;
  const double raw = (hi - lo) / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return ticks;
}

static std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else if (c == '&') out += "&amp;";
    else out += c;
  }
  return out;
}

std::string line_chart_svg(const std::vector<Series>& series, const ChartOptions& o) {
  static const char* colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"};
  auto ty = [&](double v) { return o.log_y ? std::log10(std::max(v, 1e-12)) : v; };
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& s : series)
    for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      xmin = std::min(xmin, s.x[i]);
      xmax = std::max(xmax, s.x[i]);
      ymin = std::min(ymin, ty(s.y[i]));
      ymax = std::max(ymax, ty(s.y[i]));
    }
  if (!std::isfinite(xmin)) xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  if (!(xmax > xmin)) xmax = xmin + 1;
  if (!(ymax > ymin)) ymax = ymin + 1;
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad;
  ymax += pad;
  const double left = 80, right = 20, top = 40, bottom = 60;
  const double pw = o.width - left - right, ph = o.height - top - bottom;
  auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * pw; };
  auto py = [&](double y) { return top + (1.0 - (y - ymin) / (ymax - ymin)) * ph; };

  std::string svg = fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{0}\" height=\"{1}\" viewBox=\"0 0 {0} {1}\" "
      "font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
      o.width, o.height);
  svg += fmt::format("<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n", left + pw / 2, escape(o.title));
  // grid, ticks and tick labels
  for (double t : nice_ticks(xmin, xmax)) {
    const double x = px(t);
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"#e0e0e0\"/>\n", x, top, top + ph);
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{0:.1f}\" y2=\"{2:.1f}\" stroke=\"black\"/>\n", x, top + ph, top + ph + 5);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"middle\">{:g}</text>\n", x, top + ph + 18, t);
  }
  for (double t : nice_ticks(ymin, ymax)) {
    const double y = py(t);
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"#e0e0e0\"/>\n", left, y, left + pw);
    svg += fmt::format("<line x1=\"{0:.1f}\" y1=\"{1:.1f}\" x2=\"{2:.1f}\" y2=\"{1:.1f}\" stroke=\"black\"/>\n", left - 5, y, left);
    const std::string label = o.log_y ? fmt::format("{:g}", std::pow(10.0, t)) : fmt::format("{:g}", t);
    svg += fmt::format("<text x=\"{:.1f}\" y=\"{:.1f}\" text-anchor=\"end\">{}</text>\n", left - 8, y + 4, label);
  }
  // axes and axis labels
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"black\"/>\n", left, top, pw, ph);
  svg += fmt::format("<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n", left + pw / 2, o.height - 15, escape(o.x_label));
  svg += fmt::format("<text transform=\"translate(18,{}) rotate(-90)\" text-anchor=\"middle\">{}{}</text>\n", top + ph / 2,
                     escape(o.y_label), o.log_y ? " (log scale)" : "");
  // the lines
  auto color_of = [&](std::size_t k) {
    return colors[(series[k].color < 0 ? k : static_cast<std::size_t>(series[k].color)) % 6];
  };
  auto dash = [&](std::size_t k) { return series[k].dashed ? std::string(" stroke-dasharray=\"6,4\"") : std::string(); };
  for (std::size_t k = 0; k < series.size(); ++k) {
    const auto& s = series[k];
    std::string points;
    for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i)
      if (std::isfinite(s.y[i])) points += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(ty(s.y[i])));
    svg += fmt::format("<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\"{} points=\"{}\"/>\n", color_of(k), dash(k),
                       points);
  }
  // legend: inside the plot, in the corner that hides the fewest data points (top right on a
  // tie), wide enough for the longest label at about 7 px per character of the 12 px font
  std::size_t longest = 0;
  for (const auto& s : series) longest = std::max(longest, s.label.size());
  const double legend_width = 46 + 7 * static_cast<double>(longest);
  const double legend_height = 10 + 18 * static_cast<double>(series.size());
  double lx = 0, ly = 0;
  std::size_t fewest = std::numeric_limits<std::size_t>::max();
  for (const auto& [cx, cy] : {std::pair{1, 0}, std::pair{1, 1}, std::pair{0, 0}, std::pair{0, 1}}) {
    const double x0 = cx ? left + pw - legend_width - 10 : left + 10;
    const double y0 = cy ? top + ph - legend_height - 10 : top + 10;
    std::size_t hidden = 0;
    for (const auto& s : series)
      for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) {
        if (!std::isfinite(s.y[i])) continue;
        const double x = px(s.x[i]), y = py(ty(s.y[i]));
        hidden += x >= x0 && x <= x0 + legend_width && y >= y0 && y <= y0 + legend_height;
      }
    if (hidden < fewest) {
      fewest = hidden;
      lx = x0;
      ly = y0;
    }
  }
  svg += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"white\" stroke=\"#999\"/>\n", lx, ly,
                     legend_width, legend_height);
  for (std::size_t k = 0; k < series.size(); ++k) {
    const double y = ly + 16 + 18 * static_cast<double>(k);
    svg += fmt::format("<line x1=\"{}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"{}\" stroke-width=\"2\"{}/>\n", lx + 8, y - 4, lx + 30, y - 4,
                       color_of(k), dash(k));
    svg += fmt::format("<text x=\"{}\" y=\"{}\">{}</text>\n", lx + 36, y, escape(series[k].label));
  }
  return svg + "</svg>\n";
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  if (!out) throw std::runtime_error(fmt::format("cannot write {}: {}", path, std::strerror(errno)));
  out << text;
  if (!out) throw std::runtime_error(fmt::format("writing {} failed: {}", path, std::strerror(errno)));
}

std::pair<std::string, std::string> write_chart_files(const std::string& folder, const std::string& stem,
                                                      const std::vector<Series>& series, const ChartOptions& options) {
  std::filesystem::create_directories(folder);
  const std::string csv = (std::filesystem::path(folder) / (stem + ".csv")).string();
  const std::string svg = (std::filesystem::path(folder) / (stem + ".svg")).string();
  write_file(csv, series_csv(series, options));
  write_file(svg, line_chart_svg(series, options));
  return {csv, svg};
}

std::string series_csv(const std::vector<Series>& series, const ChartOptions& o) {
  std::string csv = fmt::format("series,{},{}\n", o.x_label, o.y_label);
  for (const auto& s : series)
    for (std::size_t i = 0; i < s.x.size() && i < s.y.size(); ++i) csv += fmt::format("{},{:g},{:.8g}\n", s.label, s.x[i], s.y[i]);
  return csv;
}

}  // namespace hitch::examples
