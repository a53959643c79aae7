// tenantwald: durations, the one grammar for flags, the config file and the
// API ("500ms", "2s", "5m", "24h", "7d": a decimal number and a unit).
#pragma once

#include <cstdint>
#include <string>

namespace twd {

// Parses a decimal number and a unit (ms, s, m, h, d) into microseconds
// within [lo, hi]. False if malformed (no unit, an exponent, two dots) or out
// of range.
bool ParseDurationIn(const std::string& s, int64_t lo, int64_t hi, int64_t* us);
// The inverse, using the largest exact unit ("7d", "36h", "1500ms").
std::string FormatDurationLong(int64_t us);

}  // namespace twd
