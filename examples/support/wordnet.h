// examples/support/wordnet.h: reading WordNet 3.0's data files (Debian: wordnet-base, in
// /usr/share/wordnet) for the example programs: each synset's lexicographer file (its supersense,
// 45 classes) and its gloss, and the tokenizer the examples share.
//
// Each data line reads `synset_offset lex_filenum ss_type w_cnt word lex_id ... | gloss`
// (wndb(5)); the license header lines start with two spaces and are skipped.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace hitch::examples {

// The lexicographer files, by lex_filenum (wndb(5), lexnames(5)).
extern const std::array<const char*, 45> kLexnames;
inline constexpr std::int64_t kLexClasses = 45;

struct Synset {
  int label = 0;      // lex_filenum, in [0, 45)
  std::string gloss;  // the text after " | "
};

// Lowercased runs of letters and digits.
std::vector<std::string> tokenize(const std::string& text);

// The synsets of data.noun, data.verb, data.adj and data.adv in dir, in file order. Throws
// std::runtime_error naming the file and line of anything that is not a data line.
std::vector<Synset> read_wordnet(const std::filesystem::path& dir);

// Where to look: flag (--data), else $WNSEARCHDIR (WordNet's own variable), else Debian's
// /usr/share/wordnet. Returns an empty path, after printing to stderr (prefixed with program) how
// to get the data, if the four files are not there.
std::filesystem::path find_wordnet(const std::string& flag, const std::string& program);

}  // namespace hitch::examples
