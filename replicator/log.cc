// tenantwald: JSON-lines logging (see log.h).
#include "log.h"

#include <cstdio>
#include <ctime>
#include <mutex>

#include "walring/ring.h"

namespace twd {

namespace {
Level g_level = Level::kInfo;
std::mutex g_mu;
const char* Name(Level l) {
  switch (l) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarn: return "warn";
    case Level::kError: return "error";
  }
  return "info";
}
}  // namespace

void SetLogLevel(Level l) { g_level = l; }

bool ParseLogLevel(std::string_view s, Level* out) {
  for (Level l : {Level::kDebug, Level::kInfo, Level::kWarn, Level::kError}) {
    if (s == Name(l)) { *out = l; return true; }
  }
  return false;
}

std::string Rfc3339(int64_t us) {
  time_t t = time_t(us / 1000000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[40];
  size_t n = strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(buf + n, sizeof buf - n, ".%03dZ", int((us / 1000) % 1000));
  return buf;
}

void Log(Level l, std::string_view msg, std::initializer_list<LogField> fields) {
  if (l < g_level) return;
  std::string line = "{\"ts\":";
  JsonQuote(&line, Rfc3339(tw::ring::NowMicros()));
  line += ",\"level\":\"";
  line += Name(l);
  line += "\",\"msg\":";
  JsonQuote(&line, msg);
  for (const LogField& f : fields) {
    line.push_back(',');
    JsonQuote(&line, f.key);
    line.push_back(':');
    if (auto* s = std::get_if<std::string>(&f.value)) JsonQuote(&line, *s);
    else line += std::to_string(std::get<int64_t>(f.value));
  }
  line += "}\n";
  std::lock_guard<std::mutex> lk(g_mu);
  fwrite(line.data(), 1, line.size(), stderr);
  fflush(stderr);
}

}  // namespace twd
