// tenantwald: the configuration file (see config.h for the schema).
#include "config.h"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>

#include <toml++/toml.h>

#include "base/names.h"

namespace twd {

using tw::Status;

namespace {

void JsonStr(std::string* o, const std::string& s) {
  *o += '"';
  for (char c : s) {
    if (c == '"' || c == '\\') {
      *o += '\\';
      *o += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char b[8];
      snprintf(b, sizeof b, "\\u%04x", c);
      *o += b;
    } else {
      *o += c;
    }
  }
  *o += '"';
}

std::string Where(const toml::node& n, const std::string& origin) {
  const auto& src = n.source();
  return origin + ":" + std::to_string(src.begin.line);
}

Status Bad(const toml::node& n, const std::string& origin, const std::string& key,
           const std::string& msg) {
  return Status::InvalidArgument(Where(n, origin) + ": " + key + ": " + msg);
}

Status DurationField(const toml::node& n, const std::string& origin, const std::string& key,
                     int64_t lo, int64_t hi, std::optional<int64_t>* out) {
  auto s = n.value<std::string>();
  int64_t us;
  if (!s || !ParseDurationIn(*s, lo, hi, &us)) {
    return Bad(n, origin, key,
               "must be a duration string from " + FormatDurationLong(lo) + " to " +
                   FormatDurationLong(hi) + " (e.g. \"500ms\", \"2s\", \"5m\", \"24h\", \"7d\")");
  }
  *out = us;
  return Status::OK();
}

Status RateField(const toml::node& n, const std::string& origin, const std::string& key,
                 std::optional<int64_t>* out) {
  auto v = n.value_exact<int64_t>();
  if (!v || *v < 0 || *v > kMaxRate) {
    return Bad(n, origin, key, "must be an integer >= 0 (0 = unlimited)");
  }
  *out = *v;
  return Status::OK();
}

Status ReplicaField(const toml::node& n, const std::string& origin, const std::string& key,
                    std::optional<ReplicaTarget>* out) {
  ReplicaTarget t;
  if (auto s = n.value_exact<std::string>()) {
    t.url = *s;
  } else if (const toml::table* tab = n.as_table()) {
    for (auto&& [k, v] : *tab) {
      const std::string kk(k.str());
      auto s = v.value_exact<std::string>();
      if (kk != "url" && kk != "endpoint" && kk != "region" && kk != "credentials") {
        return Bad(v, origin, key + "." + kk,
                   "unknown key (replica takes url, endpoint, region, credentials)");
      }
      if (!s) return Bad(v, origin, key + "." + kk, "must be a string");
      if (kk == "url") t.url = *s;
      else if (kk == "endpoint") t.endpoint = *s;
      else if (kk == "region") t.region = *s;
      else t.credentials = *s;
    }
  } else {
    return Bad(n, origin, key, "must be a URL string or a table {url, endpoint, region, credentials}");
  }
  Status st = ValidateTarget(t, key);
  if (!st.ok()) return Status::InvalidArgument(Where(n, origin) + ": " + st.message());
  *out = t;
  return Status::OK();
}

Status ParseSettings(const toml::table& tab, const std::string& origin, const std::string& prefix,
                     Settings* out) {
  for (auto&& [k, v] : tab) {
    const std::string key(k.str());
    const std::string full = prefix + key;
    Status st;
    if (key == "syncInterval") {
      st = DurationField(v, origin, full, kMinSyncUs, kMaxSyncUs, &out->sync_us);
    } else if (key == "rateLimitBytesPerSecond") {
      st = RateField(v, origin, full, &out->rate_bytes);
    } else if (key == "rateLimitRequestsPerSecond") {
      st = RateField(v, origin, full, &out->rate_requests);
    } else if (key == "snapshotInterval") {
      st = DurationField(v, origin, full, kMinSnapshotUs, kMaxSnapshotUs, &out->snapshot_us);
    } else if (key == "retention") {
      st = DurationField(v, origin, full, kMinRetentionUs, kMaxRetentionUs, &out->retention_us);
    } else if (key == "replica") {
      st = ReplicaField(v, origin, full, &out->replica);
    } else {
      st = Bad(v, origin, full,
               "unknown key (settings are syncInterval, rateLimitBytesPerSecond, "
               "rateLimitRequestsPerSecond, snapshotInterval, retention, replica)");
    }
    if (!st.ok()) return st;
  }
  return Status::OK();
}

}  // namespace

std::string ReplicaTarget::Key() const {
  return url + "|" + endpoint + "|" + region + "|" + credentials;
}

std::string ReplicaTarget::ToJson() const {
  std::string o = "{\"url\":";
  JsonStr(&o, url);
  for (auto [name, v] : {std::pair<const char*, const std::string*>{"endpoint", &endpoint},
                         {"region", &region},
                         {"credentials", &credentials}}) {
    o += ",\"";
    o += name;
    o += "\":";
    if (v->empty()) o += "null";
    else JsonStr(&o, *v);
  }
  o += "}";
  return o;
}

Status ValidateTarget(const ReplicaTarget& t, const std::string& what) {
  for (const std::string* f : {&t.url, &t.endpoint, &t.region, &t.credentials}) {
    for (char c : *f) {
      if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
        return Status::InvalidArgument(what + ": control or non-ASCII character");
      }
    }
  }
  if (t.url.rfind("s3://", 0) == 0) {
    std::string rest = t.url.substr(5);
    std::string bucket = rest.substr(0, rest.find('/'));
    if (bucket.size() < 3 || bucket.size() > 63) {
      return Status::InvalidArgument(what + ": url " + t.url + ": bucket must be 3-63 characters");
    }
    for (char c : bucket) {
      if (!(islower(static_cast<unsigned char>(c)) || isdigit(static_cast<unsigned char>(c)) ||
            c == '-' || c == '.')) {
        return Status::InvalidArgument(what + ": url " + t.url +
                                       ": bucket names are [a-z0-9.-]");
      }
    }
    if (rest.find("..") != std::string::npos || rest.find('%') != std::string::npos ||
        rest.find("//") != std::string::npos) {
      return Status::InvalidArgument(what + ": url " + t.url + ": no '..', '%' or '//' in the prefix");
    }
  } else if (t.url.rfind("file:///", 0) == 0) {
    if (t.url.find("/../") != std::string::npos) {
      return Status::InvalidArgument(what + ": url " + t.url + ": no '..' components");
    }
  } else {
    return Status::InvalidArgument(what + ": url must be s3://bucket[/prefix] or file:///path, got \"" +
                                   t.url + "\"");
  }
  if (!t.endpoint.empty() && t.endpoint.rfind("http://", 0) != 0 &&
      t.endpoint.rfind("https://", 0) != 0) {
    return Status::InvalidArgument(what + ": endpoint must start with http:// or https://");
  }
  if (!t.credentials.empty()) {
    if (t.credentials.rfind("env:", 0) == 0) {
      std::string p = t.credentials.substr(4);
      if (p.empty() || p.size() > 64) {
        return Status::InvalidArgument(what + ": credentials env:PREFIX needs a prefix");
      }
      for (char c : p) {
        if (!(isupper(static_cast<unsigned char>(c)) || isdigit(static_cast<unsigned char>(c)) ||
              c == '_')) {
          return Status::InvalidArgument(what + ": credentials env:PREFIX: PREFIX is [A-Z0-9_]");
        }
      }
    } else if (t.credentials.rfind("file:/", 0) != 0) {
      return Status::InvalidArgument(
          what + ": credentials must be a reference, \"env:PREFIX\" or \"file:/absolute/path\" "
                 "(never the secret itself)");
    }
  }
  return Status::OK();
}

Status ResolveStoreOptions(const ReplicaTarget& t, const tw::StoreOptions& base,
                           tw::StoreOptions* out) {
  *out = base;
  if (!t.endpoint.empty()) out->endpoint = t.endpoint;
  if (!t.region.empty()) out->region = t.region;
  if (t.credentials.empty()) return Status::OK();
  std::string id, secret, token;
  if (t.credentials.rfind("env:", 0) == 0) {
    const std::string p = t.credentials.substr(4);
    const char* a = getenv((p + "_ACCESS_KEY_ID").c_str());
    const char* s = getenv((p + "_SECRET_ACCESS_KEY").c_str());
    const char* k = getenv((p + "_SESSION_TOKEN").c_str());
    if (!a || !*a || !s || !*s) {
      return Status::InvalidArgument("credentials " + t.credentials + ": " + p +
                                     "_ACCESS_KEY_ID and " + p +
                                     "_SECRET_ACCESS_KEY must be set in tenantwald's environment");
    }
    id = a;
    secret = s;
    if (k) token = k;
  } else {
    const std::string path = t.credentials.substr(5);
    std::ifstream f(path);
    if (!f) return Status::InvalidArgument("credentials " + t.credentials + ": cannot read the file");
    std::string line;
    while (std::getline(f, line)) {
      size_t eq = line.find('=');
      if (eq == std::string::npos || line[0] == '#' || line[0] == '[') continue;
      auto trim = [](std::string s) {
        size_t a = s.find_first_not_of(" \t\r"), b = s.find_last_not_of(" \t\r");
        return a == std::string::npos ? std::string() : s.substr(a, b - a + 1);
      };
      std::string k = trim(line.substr(0, eq)), v = trim(line.substr(eq + 1));
      if (k == "aws_access_key_id") id = v;
      else if (k == "aws_secret_access_key") secret = v;
      else if (k == "aws_session_token") token = v;
    }
    if (id.empty() || secret.empty()) {
      return Status::InvalidArgument("credentials " + t.credentials +
                                     ": the file needs aws_access_key_id and aws_secret_access_key");
    }
  }
  out->access_key_id = id;
  out->secret_access_key = secret;
  out->session_token = token;
  return Status::OK();
}

Status ParseConfig(const std::string& text, const std::string& origin, Config* out) {
  Config c;
  c.path = origin;
  toml::table root;
  try {
    root = toml::parse(text, origin);
  } catch (const toml::parse_error& e) {
    return Status::InvalidArgument(origin + ":" + std::to_string(e.source().begin.line) +
                                   ": not valid TOML: " + std::string(e.description()));
  }
  for (auto&& [k, v] : root) {
    const std::string key(k.str());
    if (key == "defaults") {
      const toml::table* t = v.as_table();
      if (!t) return Bad(v, origin, key, "must be a table ([defaults])");
      TW_RETURN_IF_ERROR(ParseSettings(*t, origin, "defaults.", &c.defaults));
    } else if (key == "tenants") {
      const toml::table* t = v.as_table();
      if (!t) return Bad(v, origin, key, "must be a table of tables ([tenants.NAME])");
      for (auto&& [tk, tv] : *t) {
        const std::string name(tk.str());
        if (!tw::ValidName(name)) {
          return Bad(tv, origin, "tenants." + name,
                     "invalid tenant name (1-64 characters of [A-Za-z0-9._-], not starting "
                     "with '.')");
        }
        const toml::table* tt = tv.as_table();
        if (!tt) return Bad(tv, origin, "tenants." + name, "must be a table");
        TW_RETURN_IF_ERROR(ParseSettings(*tt, origin, "tenants." + name + ".", &c.tenants[name]));
      }
    } else {
      return Bad(v, origin, key, "unknown top-level key (use [defaults] and [tenants.NAME])");
    }
  }
  *out = std::move(c);
  return Status::OK();
}

Status LoadConfig(const std::string& path, Config* out) {
  std::ifstream f(path, std::ios::binary);
  if (!f) return Status::IOError("cannot read config file " + path);
  std::stringstream ss;
  ss << f.rdbuf();
  if (ss.str().size() > (4u << 20)) return Status::InvalidArgument(path + ": larger than 4 MiB");
  return ParseConfig(ss.str(), path, out);
}


}  // namespace twd
