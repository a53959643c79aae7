// tenantwal CLI: helpers shared by the subcommands (see cmd.h).
#include <time.h>

#include <cstdio>
#include <iostream>

#include "base/names.h"
#include "cmd.h"

namespace tw {
namespace cli {

void AddReplicaFlags(CLI::App* cmd, ReplicaFlags* f) {
  cmd->add_option("--replica", f->url, "Replica URL: s3://bucket[/prefix] or file:///abs/path")
      ->required();
  cmd->add_option("--endpoint", f->endpoint,
                  "S3 endpoint URL (default: AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else AWS)");
  cmd->add_option("--region", f->region, "S3 region (default: AWS_REGION, AWS_DEFAULT_REGION)");
  cmd->add_option("--ca-file", f->ca_file, "PEM CA bundle for TLS to the endpoint");
}

Status OpenReplica(const ReplicaFlags& f, std::unique_ptr<ObjectStore>* out) {
  StoreOptions o = StoreOptions::FromEnv();
  if (!f.endpoint.empty()) o.endpoint = f.endpoint;
  if (!f.region.empty()) o.region = f.region;
  if (!f.ca_file.empty()) o.ca_file = f.ca_file;
  return OpenObjectStore(f.url, o, out).Prefix("replica " + f.url);
}

int Fail(std::string_view cmd, const Status& s) {
  std::string msg = s.code() == Status::kInvalidArgument ? s.message() : s.ToString();
  std::cerr << "tenantwal: " << cmd << ": " << msg << std::endl;
  return 1;
}

void Warn(std::string_view cmd, std::string_view message) {
  std::cerr << "tenantwal: " << cmd << ": warning: " << message << std::endl;
}

Status CheckName(std::string_view flag, const std::string& name) {
  if (ValidName(name)) return Status::OK();
  return Status::InvalidArgument(std::string(flag) + " '" + name +
                                 "' is not a valid name (1-64 of [A-Za-z0-9._-], not starting "
                                 "with '.')");
}

std::string Rfc3339(int64_t us) {
  if (us == 0) return "-";
  int64_t sec = us / 1000000, frac = us % 1000000;
  if (frac < 0) {
    frac += 1000000;
    sec -= 1;
  }
  time_t t = static_cast<time_t>(sec);
  struct tm tm;
  if (gmtime_r(&t, &tm) == nullptr) return "-";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ", tm.tm_year + 1900,
                tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                static_cast<int>(frac));
  return buf;
}

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\u%04x", static_cast<unsigned char>(c));
          out += buf;
        } else {
          out += c;
        }
    }
  }
  out += '"';
  return out;
}

}  // namespace cli
}  // namespace tw
