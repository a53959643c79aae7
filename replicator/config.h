// tenantwald: the configuration file (--config) and per-tenant settings.
//
// One schema serves the file, PATCH /api/tenants/{t} and GET's output, with
// the API's field names (docs/OPERATIONS.md, "Configuration file"):
//
//   [defaults]                        # every tenant, unless it says otherwise
//   syncInterval = "1s"               # 1ms .. 24h
//   rateLimitBytesPerSecond = 0       # upload bytes/s (0 = unlimited)
//   rateLimitRequestsPerSecond = 0    # upload requests/s (0 = unlimited)
//   snapshotInterval = "24h"          # 1s .. 365d (enforced by the snapshot scheduler)
//   retention = "7d"                  # 1m .. 3650d
//   [defaults.replica]                # or: replica = "s3://bucket/prefix"
//   url = "s3://bucket/prefix"        # s3://bucket[/prefix] or file:///path
//   endpoint = "https://..."          # optional; default: --endpoint / AWS_ENDPOINT_URL*
//   region = "eu-west-1"              # optional; default: --region / AWS_REGION
//   credentials = "env:ACME"          # optional reference, never a secret:
//                                     #   env:PREFIX  -> $PREFIX_ACCESS_KEY_ID,
//                                     #   $PREFIX_SECRET_ACCESS_KEY, $PREFIX_SESSION_TOKEN
//                                     #   file:/path  -> aws_access_key_id = ... lines
//   [tenants.acme]                    # same keys, for one tenant
//   rateLimitBytesPerSecond = 1048576
//
// Parsing is all or nothing: an unknown key, a wrong type, a value out of
// range, an invalid tenant name or an unresolvable credentials reference
// fails the whole file with a message that names the key (and the line, from
// toml++), so a reload either applies completely or changes nothing. The
// file is TOML (toml++); YAML is not supported.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "base/status.h"
#include "duration.h"
#include "store/object_store.h"

namespace twd {

// Where an object store lives and how to authenticate to it. Only the
// reference to the credentials is kept here (and shown in the API and logs);
// the secrets are read by ResolveStoreOptions when the store is opened.
struct ReplicaTarget {
  std::string url;          // s3://bucket[/prefix] or file:///path
  std::string endpoint;     // "" = the daemon's (flag / environment)
  std::string region;       // "" = the daemon's
  std::string credentials;  // "" | "env:PREFIX" | "file:/path"

  bool operator==(const ReplicaTarget& o) const {
    return url == o.url && endpoint == o.endpoint && region == o.region &&
           credentials == o.credentials;
  }
  bool operator!=(const ReplicaTarget& o) const { return !(*this == o); }
  // A one-line identity (url|endpoint|region|credentials): one store per key.
  std::string Key() const;
  // {"url":..,"endpoint":..,"region":..,"credentials":..} ("" fields as null).
  std::string ToJson() const;
};

// Checks a target's shape (URL scheme, bucket, credentials reference syntax)
// without any I/O. InvalidArgument naming `what` on error.
tw::Status ValidateTarget(const ReplicaTarget& t, const std::string& what);

// The store options for `t`: `base` (the daemon's: environment and flags)
// with the target's endpoint, region and resolved credentials. InvalidArgument
// when the referenced variables or file are missing or incomplete (the
// message names the reference, never a secret).
tw::Status ResolveStoreOptions(const ReplicaTarget& t, const tw::StoreOptions& base,
                               tw::StoreOptions* out);

// One layer of settings; unset fields defer to the layer below.
struct Settings {
  std::optional<int64_t> sync_us;            // syncInterval
  std::optional<int64_t> rate_bytes;         // rateLimitBytesPerSecond (0 = unlimited)
  std::optional<int64_t> rate_requests;      // rateLimitRequestsPerSecond (0 = unlimited)
  std::optional<int64_t> snapshot_us;        // snapshotInterval
  std::optional<int64_t> retention_us;       // retention
  std::optional<ReplicaTarget> replica;      // replica
  bool empty() const {
    return !sync_us && !rate_bytes && !rate_requests && !snapshot_us && !retention_us && !replica;
  }
};

struct Config {
  std::string path;                          // the file it came from
  Settings defaults;                         // [defaults]
  std::map<std::string, Settings> tenants;   // [tenants.NAME]
};

// Parses TOML text. `origin` names the source in messages (a file path).
// InvalidArgument with the offending key (and line) on any error.
tw::Status ParseConfig(const std::string& text, const std::string& origin, Config* out);
// Reads and parses a file. IOError if unreadable.
tw::Status LoadConfig(const std::string& path, Config* out);

// Field bounds shared by the file and the API.
constexpr int64_t kMinSyncUs = 1000, kMaxSyncUs = 86400000000LL;                  // 1ms..24h
constexpr int64_t kMinSnapshotUs = 1000000, kMaxSnapshotUs = 365 * 86400000000LL;  // 1s..365d
constexpr int64_t kMinRetentionUs = 60000000, kMaxRetentionUs = 3650 * 86400000000LL;  // 1m..3650d
constexpr int64_t kMaxRate = int64_t(1) << 50;                                    // 1 PiB/s


}  // namespace twd
