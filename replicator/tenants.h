// tenantwald: live per-tenant settings, upload rate limits and replica stores.
//
// Settings are layered; the first layer that sets a field wins:
//
//   1. "api"             PATCH /api/tenants/{t} (in memory; survives SIGHUP,
//                        not a restart; `null` removes it)
//   2. "config-tenant"   the config file's [tenants.NAME]
//   3. "config-defaults" the config file's [defaults]
//   4. "flag"            the command line (--sync-interval, --replica and
//                        --endpoint/--region for the replica)
//   5. "default"         built in: 1s sync, unlimited rates, 24h snapshots,
//                        7d retention
//
// A reload replaces layers 2 and 3 at once (one mutex, one swap), after every
// new replica target's store was opened: a file that names an unusable
// target is rejected whole. Readers take a copy of what they need.
//
// Rate limits are token buckets per tenant, one for upload bytes and one for
// upload requests, each holding at most one second's worth. An upload is
// admitted while both buckets are non-negative and then charged its size,
// which may drive them into debt: the tenant waits until the debt is repaid
// (so the long-run rate is the limit even for segments larger than a
// second's worth). Admission never sleeps: it returns how long to wait and
// the caller requeues the database with that not-before time. The time a
// tenant spends in debt is its throttled time (tenantwal_throttled_seconds_total).
//
// Stores: one ObjectStore per distinct target (ReplicaTarget::Key), opened
// once and shared by every tenant and database that uses it. A store stays
// open while a database still holds it (segments of an old generation
// finish in the target they started in).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "base/status.h"
#include "config.h"
#include "store/object_store.h"

namespace twd {

enum class Source { kDefault, kFlag, kConfigDefaults, kConfigTenant, kApi };
const char* SourceName(Source s);

// The settings fields, in API order.
enum Field { kSync, kRateBytes, kRateRequests, kSnapshot, kRetention, kReplica, kFieldCount };
extern const char* const kFieldNames[kFieldCount];

struct Effective {
  int64_t sync_us = 0, rate_bytes = 0, rate_requests = 0, snapshot_us = 0, retention_us = 0;
  ReplicaTarget replica;
  Source source[kFieldCount] = {};
  // The field's value as the API shows it (a JSON value).
  std::string JsonValue(int f) const;
};

struct Throttle {
  bool throttled = false;          // in debt now
  double throttled_seconds = 0;    // total time in debt
  int64_t deferrals = 0;           // uploads/snapshots made to wait
};

class TenantRegistry {
 public:
  // `flag_sync_us` and `flag_target` are the command line's values;
  // `base` the store options from the environment and flags.
  TenantRegistry(int64_t flag_sync_us, ReplicaTarget flag_target, tw::StoreOptions base);

  // The command line's --snapshot-interval and --retention (microseconds;
  // snapshot 0 = scheduled snapshots off): the "flag" layer of those two
  // settings, under the config file and PATCH. Call before Init.
  void SetFlagMaintenance(int64_t snapshot_us, int64_t retention_us);

  // Opens the flag target's store (wrapped by `wrap`, e.g. for health).
  using Wrap = std::unique_ptr<tw::ObjectStore> (*)(std::unique_ptr<tw::ObjectStore>);
  tw::Status Init(Wrap wrap);
  tw::ObjectStore* default_store() const { return default_store_.get(); }

  // Replaces the file layers with `c`. Every target `c` names is opened
  // first; on any error nothing changes.
  tw::Status ApplyConfig(const Config& c);
  // Applies an API PATCH: `set` fields become the tenant's api layer; fields
  // in `clear` are removed from it. Opens a new target first (error: nothing
  // changes).
  tw::Status Patch(const std::string& tenant, const Settings& set, const std::vector<int>& clear);

  Effective Get(const std::string& tenant) const;
  // Tenants that have any layer of their own (config or api).
  std::vector<std::string> Configured() const;
  // Bumped on every change (cheap check for cached copies).
  uint64_t version() const;
  // The store for the tenant's effective target, and that target.
  std::shared_ptr<tw::ObjectStore> Store(const std::string& tenant, ReplicaTarget* target) const;
  // Every open store with its target URL (for health/metrics).
  std::vector<std::pair<std::string, std::shared_ptr<tw::ObjectStore>>> Stores() const;

  // 0 if the tenant may upload now; else microseconds to wait.
  int64_t AdmitWaitUs(const std::string& tenant, int64_t now_us);
  // Charges an upload of `bytes` in `requests` requests. Returns the time
  // until which the tenant is now in debt (<= now_us: not throttled).
  int64_t Charge(const std::string& tenant, uint64_t bytes, uint64_t requests, int64_t now_us);
  // The tenant's throttling now (under its current limits: a lifted limit
  // ends the debt at once).
  Throttle ThrottleState(const std::string& tenant, int64_t now_us);

 private:
  struct Bucket {
    double bytes = 0, requests = 0;     // tokens (negative: debt)
    int64_t last_us = 0;
    int64_t debt_until_us = 0;
    int64_t throttled_us = 0;
    int64_t deferrals = 0;
    int64_t rate_bytes = -1, rate_requests = -1;  // limits the tokens were counted for
  };
  Effective GetLocked(const std::string& tenant) const;
  tw::Status OpenLocked(const ReplicaTarget& t);
  Bucket* BucketLocked(const std::string& tenant, int64_t now_us);

  const int64_t flag_sync_us_;
  int64_t flag_snapshot_us_ = -1, flag_retention_us_ = -1;  // -1: not given
  const ReplicaTarget flag_target_;
  const tw::StoreOptions base_;
  mutable std::mutex mu_;
  uint64_t version_ = 0;
  Config file_;
  std::map<std::string, Settings> api_;
  std::shared_ptr<tw::ObjectStore> default_store_;
  std::map<std::string, std::shared_ptr<tw::ObjectStore>> stores_;  // by ReplicaTarget::Key
  std::map<std::string, std::string> store_urls_;
  std::map<std::string, Bucket> buckets_;
  Wrap wrap_ = nullptr;
};

}  // namespace twd
