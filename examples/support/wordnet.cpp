// examples/support/wordnet.cpp: see wordnet.h.
#include "wordnet.h"

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace hitch::examples {

namespace fs = std::filesystem;
using i64 = std::int64_t;

const std::array<const char*, 45> kLexnames = {
    "adj.all",         "adj.pert",          "adv.all",          "noun.Tops",        "noun.act",
    "noun.animal",     "noun.artifact",     "noun.attribute",   "noun.body",        "noun.cognition",
    "noun.communication", "noun.event",     "noun.feeling",     "noun.food",        "noun.group",
    "noun.location",   "noun.motive",       "noun.object",      "noun.person",      "noun.phenomenon",
    "noun.plant",      "noun.possession",   "noun.process",     "noun.quantity",    "noun.relation",
    "noun.shape",      "noun.state",        "noun.substance",   "noun.time",        "verb.body",
    "verb.change",     "verb.cognition",    "verb.communication", "verb.competition", "verb.consumption",
    "verb.contact",    "verb.creation",     "verb.emotion",     "verb.motion",      "verb.perception",
    "verb.possession", "verb.social",       "verb.stative",     "verb.weather",     "adj.ppl"};
constexpr std::array<const char*, 4> kFiles = {"data.noun", "data.verb", "data.adj", "data.adv"};

// Lowercased runs of letters and digits.
std::vector<std::string> tokenize(const std::string& text) {
  std::vector<std::string> words;
  std::string w;
  for (char ch : text) {
    const auto u = static_cast<unsigned char>(ch);
    if (std::isalnum(u)) {
      w += static_cast<char>(std::tolower(u));
    } else if (!w.empty()) {
      words.push_back(std::move(w));
      w.clear();
    }
  }
  if (!w.empty()) words.push_back(std::move(w));
  return words;
}

std::vector<Synset> read_wordnet(const fs::path& dir) {
  std::vector<Synset> synsets;
  for (const char* name : kFiles) {
    const fs::path path = dir / name;
    std::ifstream in(path);
    if (!in) throw std::runtime_error(fmt::format("cannot open {}", path.string()));
    std::string line;
    for (i64 number = 1; std::getline(in, line); ++number) {
      if (line.empty() || line.rfind("  ", 0) == 0) continue;  // the license header
      const auto bar = line.find(" | ");
      const auto first = line.find(' ');
      const auto second = first == std::string::npos ? first : line.find(' ', first + 1);
      const std::string lex = first == std::string::npos ? "" : line.substr(first + 1, second - first - 1);
      if (bar == std::string::npos || lex.size() != 2 || !std::isdigit(static_cast<unsigned char>(lex[0])) ||
          !std::isdigit(static_cast<unsigned char>(lex[1])) || std::stoi(lex) >= kLexClasses)
        throw std::runtime_error(fmt::format(
            "{}:{}: not a WordNet data line (expected 'offset lex_filenum ss_type ... | gloss' with lex_filenum in "
            "00..44): '{:.60}'",
            path.string(), number, line));
      synsets.push_back({std::stoi(lex), line.substr(bar + 3)});
    }
  }
  return synsets;
}

fs::path find_wordnet(const std::string& flag, const std::string& program) {
  const char* env = std::getenv("WNSEARCHDIR");
  const fs::path dir = !flag.empty() ? fs::path(flag) : env && *env ? fs::path(env) : fs::path("/usr/share/wordnet");
  std::vector<std::string> missing;
  for (const char* name : kFiles)
    if (!fs::is_regular_file(dir / name)) missing.push_back(name);
  if (missing.empty()) return dir;
  fmt::print(stderr,
             "{}: WordNet 3.0 data not found: {} missing in {}\n"
             "Install it (Debian/Ubuntu):  sudo apt-get install wordnet-base\n"
             "or point --data (or $WNSEARCHDIR) at a folder holding data.noun, data.verb, data.adj and data.adv.\n",
             program, fmt::join(missing, ", "), dir.string());
  return {};
}

}  // namespace hitch::examples
