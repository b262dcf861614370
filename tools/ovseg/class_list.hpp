// Class lists for the CLI: from a comma-separated option, a file (one name per line) or a preset.
#pragma once

#include <string>
#include <vector>

namespace ovseg::cli {

// "sky, tree ,red car" → {"sky", "tree", "red car"}. Whitespace around each name is trimmed; an
// empty entry, invalid UTF-8 or a duplicate throws Error(kInvalidArgument).
std::vector<std::string> parse_class_string(const std::string& text);

// One name per line (UTF-8, optional BOM, LF, CRLF or a lone CR). Control characters (NUL, tab
// inside a name, ...) are refused. Lines whose first non-blank character is
// '#' and blank lines are ignored; a comma belongs to the name ("road, route" is one class, as the
// datasets write their synonyms). Throws Error(kIo) for an unreadable file and
// Error(kInvalidArgument) naming the file and line for invalid UTF-8 or a duplicate.
// "-" reads the list from stdin. A class file may hold at most kMaxClassFileBytes (a regular file
// only: a FIFO, device or directory is refused before anything is read).
inline constexpr unsigned long long kMaxClassFileBytes = 64ull << 20;
std::vector<std::string> read_class_file(const std::string& path);
// The same rules applied to text already in memory; `source` names it in error messages.
std::vector<std::string> parse_class_lines(const std::string& text, const std::string& source);

// Throws Error(kInvalidArgument) if the list is empty, too long for a 16-bit label map, or
// holds a name twice (compared after trimming, ASCII case-insensitively, because the tokenizer
// lower-cases and two such names would be the same class).
void check_class_list(const std::vector<std::string>& classes, const std::string& source);

// True if `text` is well-formed UTF-8 (no overlongs, surrogates or code points above U+10FFFF).
bool is_valid_utf8(const std::string& text);

std::string trim(const std::string& s);

// "U+0000" for the first control character (C0, DEL or C1) in `name`; empty when there is none.
std::string control_character(const std::string& name);

}  // namespace ovseg::cli
