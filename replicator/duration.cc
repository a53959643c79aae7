// tenantwald: durations (see duration.h).
#include "duration.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>

namespace twd {

bool ParseDurationIn(const std::string& s, int64_t lo, int64_t hi, int64_t* us) {
  if (s.empty() || s.size() > 32 || !isdigit(static_cast<unsigned char>(s[0]))) return false;
  size_t i = 0;
  while (i < s.size() && (isdigit(static_cast<unsigned char>(s[i])) || s[i] == '.')) ++i;
  const std::string num = s.substr(0, i), unit = s.substr(i);
  if (std::count(num.begin(), num.end(), '.') > 1 || num.back() == '.') return false;
  const double v = strtod(num.c_str(), nullptr);
  double mul;
  if (unit == "ms") mul = 1e3;
  else if (unit == "s") mul = 1e6;
  else if (unit == "m") mul = 60e6;
  else if (unit == "h") mul = 3600e6;
  else if (unit == "d") mul = 86400e6;
  else return false;
  const double r = v * mul;
  if (!(r >= double(lo)) || r > double(hi)) return false;
  *us = int64_t(r);
  return true;
}

std::string FormatDurationLong(int64_t us) {
  if (us > 0 && us % 86400000000LL == 0) return std::to_string(us / 86400000000LL) + "d";
  if (us > 0 && us % 3600000000LL == 0) return std::to_string(us / 3600000000LL) + "h";
  if (us > 0 && us % 60000000LL == 0) return std::to_string(us / 60000000LL) + "m";
  if (us % 1000000 == 0) return std::to_string(us / 1000000) + "s";
  if (us % 1000 == 0) return std::to_string(us / 1000) + "ms";
  return std::to_string(us) + "us";
}

}  // namespace twd
