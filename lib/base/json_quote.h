// tenantwal: appending a JSON string literal, shared by every writer of JSON
// (tenantwald's log and API, the authority document in lib/store).
//
// RFC 8259, section 7: '"' and '\' are escaped, control characters
// (U+0000..U+001F) become \n, \r, \t or \u00XX; every other byte is copied as
// is (callers pass UTF-8). Header-only; no state, thread-safe.
#pragma once

#include <cstdio>
#include <string>
#include <string_view>

namespace tw {

/// Appends `s` to `*out` as a JSON string literal, quotes included.
inline void JsonQuote(std::string* out, std::string_view s) {
  out->push_back('"');
  for (unsigned char c : s) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\r': out->append("\\r"); break;
      case '\t': out->append("\\t"); break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out->append(buf);
        } else {
          out->push_back(char(c));
        }
    }
  }
  out->push_back('"');
}

}  // namespace tw
