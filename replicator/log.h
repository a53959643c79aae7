// tenantwald: structured logging, one JSON object per line on stderr.
//
//   {"ts":"2026-11-30T08:00:00.123Z","level":"info","msg":"snapshot uploaded",
//    "tenant":"acme","db":"orders","txid":42,"bytes":8192}
//
// Fields are given as key/value pairs; values are strings or integers and
// are escaped per RFC 8259. Secrets must never be passed in. Thread-safe.
#pragma once

#include "base/json_quote.h"

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <variant>

namespace twd {

enum class Level { kDebug = 0, kInfo = 1, kWarn = 2, kError = 3 };

using LogValue = std::variant<std::string, int64_t>;
struct LogField {
  std::string key;
  LogValue value;
  LogField(std::string k, std::string v) : key(std::move(k)), value(std::move(v)) {}
  LogField(std::string k, const char* v) : key(std::move(k)), value(std::string(v)) {}
  LogField(std::string k, std::string_view v) : key(std::move(k)), value(std::string(v)) {}
  template <typename T, typename = std::enable_if_t<std::is_integral_v<T>>>
  LogField(std::string k, T v) : key(std::move(k)), value(int64_t(v)) {}
};

void SetLogLevel(Level l);
bool ParseLogLevel(std::string_view s, Level* out);
void Log(Level l, std::string_view msg, std::initializer_list<LogField> fields = {});

// Appends `s` to `out` as a JSON string literal (with quotes): lib/base/json_quote.h.
using tw::JsonQuote;
// RFC 3339 UTC with milliseconds from Unix microseconds.
std::string Rfc3339(int64_t unix_us);

}  // namespace twd
