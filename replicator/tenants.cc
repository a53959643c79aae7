// tenantwald: live per-tenant settings, rate limits and stores (see tenants.h).
#include "tenants.h"

#include <algorithm>
#include <set>

namespace twd {

using tw::Status;

namespace {
constexpr int64_t kDefaultSnapshotUs = 24 * 3600000000LL;
constexpr int64_t kDefaultRetentionUs = 7 * 86400000000LL;
}  // namespace

const char* const kFieldNames[kFieldCount] = {
    "syncInterval", "rateLimitBytesPerSecond", "rateLimitRequestsPerSecond",
    "snapshotInterval", "retention", "replica"};

const char* SourceName(Source s) {
  switch (s) {
    case Source::kDefault: return "default";
    case Source::kFlag: return "flag";
    case Source::kConfigDefaults: return "config-defaults";
    case Source::kConfigTenant: return "config-tenant";
    case Source::kApi: return "api";
  }
  return "default";
}

std::string Effective::JsonValue(int f) const {
  switch (f) {
    case kSync: return "\"" + FormatDurationLong(sync_us) + "\"";
    case kRateBytes: return std::to_string(rate_bytes);
    case kRateRequests: return std::to_string(rate_requests);
    case kSnapshot: return "\"" + FormatDurationLong(snapshot_us) + "\"";
    case kRetention: return "\"" + FormatDurationLong(retention_us) + "\"";
    case kReplica: return replica.ToJson();
  }
  return "null";
}

TenantRegistry::TenantRegistry(int64_t flag_sync_us, ReplicaTarget flag_target,
                               tw::StoreOptions base)
    : flag_sync_us_(flag_sync_us), flag_target_(std::move(flag_target)), base_(std::move(base)) {}

Status TenantRegistry::Init(Wrap wrap) {
  std::lock_guard<std::mutex> lk(mu_);
  wrap_ = wrap;
  TW_RETURN_IF_ERROR(OpenLocked(flag_target_));
  default_store_ = stores_[flag_target_.Key()];
  return Status::OK();
}

Status TenantRegistry::OpenLocked(const ReplicaTarget& t) {
  if (stores_.count(t.Key())) return Status::OK();
  tw::StoreOptions so;
  TW_RETURN_IF_ERROR(ResolveStoreOptions(t, base_, &so));
  std::unique_ptr<tw::ObjectStore> s;
  TW_RETURN_IF_ERROR(tw::OpenObjectStore(t.url, so, &s).Prefix("replica " + t.url));
  if (wrap_) s = wrap_(std::move(s));
  stores_[t.Key()] = std::shared_ptr<tw::ObjectStore>(std::move(s));
  store_urls_[t.Key()] = t.url;
  return Status::OK();
}

Status TenantRegistry::ApplyConfig(const Config& c) {
  std::lock_guard<std::mutex> lk(mu_);
  if (c.defaults.replica) TW_RETURN_IF_ERROR(OpenLocked(*c.defaults.replica));
  for (auto& [name, s] : c.tenants) {
    if (s.replica) TW_RETURN_IF_ERROR(OpenLocked(*s.replica).Prefix("tenants." + name));
  }
  file_ = c;
  ++version_;
  return Status::OK();
}

Status TenantRegistry::Patch(const std::string& tenant, const Settings& set,
                             const std::vector<int>& clear) {
  std::lock_guard<std::mutex> lk(mu_);
  if (set.replica) TW_RETURN_IF_ERROR(OpenLocked(*set.replica));
  Settings& a = api_[tenant];
  for (int f : clear) {
    switch (f) {
      case kSync: a.sync_us.reset(); break;
      case kRateBytes: a.rate_bytes.reset(); break;
      case kRateRequests: a.rate_requests.reset(); break;
      case kSnapshot: a.snapshot_us.reset(); break;
      case kRetention: a.retention_us.reset(); break;
      case kReplica: a.replica.reset(); break;
    }
  }
  if (set.sync_us) a.sync_us = set.sync_us;
  if (set.rate_bytes) a.rate_bytes = set.rate_bytes;
  if (set.rate_requests) a.rate_requests = set.rate_requests;
  if (set.snapshot_us) a.snapshot_us = set.snapshot_us;
  if (set.retention_us) a.retention_us = set.retention_us;
  if (set.replica) a.replica = set.replica;
  if (a.empty()) api_.erase(tenant);
  ++version_;
  return Status::OK();
}

void TenantRegistry::SetFlagMaintenance(int64_t snapshot_us, int64_t retention_us) {
  std::lock_guard<std::mutex> lk(mu_);
  flag_snapshot_us_ = snapshot_us;
  flag_retention_us_ = retention_us;
  ++version_;
}

Effective TenantRegistry::Get(const std::string& tenant) const {
  std::lock_guard<std::mutex> lk(mu_);
  return GetLocked(tenant);
}

Effective TenantRegistry::GetLocked(const std::string& tenant) const {
  Effective e;
  e.sync_us = flag_sync_us_;
  e.source[kSync] = Source::kFlag;
  e.replica = flag_target_;
  e.source[kReplica] = Source::kFlag;
  e.snapshot_us = kDefaultSnapshotUs;
  e.retention_us = kDefaultRetentionUs;
  if (flag_snapshot_us_ >= 0 && flag_snapshot_us_ != kDefaultSnapshotUs) {
    e.snapshot_us = flag_snapshot_us_;
    e.source[kSnapshot] = Source::kFlag;
  }
  if (flag_retention_us_ >= 0 && flag_retention_us_ != kDefaultRetentionUs) {
    e.retention_us = flag_retention_us_;
    e.source[kRetention] = Source::kFlag;
  }
  auto layer = [&](const Settings& s, Source src) {
    if (s.sync_us) e.sync_us = *s.sync_us, e.source[kSync] = src;
    if (s.rate_bytes) e.rate_bytes = *s.rate_bytes, e.source[kRateBytes] = src;
    if (s.rate_requests) e.rate_requests = *s.rate_requests, e.source[kRateRequests] = src;
    if (s.snapshot_us) e.snapshot_us = *s.snapshot_us, e.source[kSnapshot] = src;
    if (s.retention_us) e.retention_us = *s.retention_us, e.source[kRetention] = src;
    if (s.replica) e.replica = *s.replica, e.source[kReplica] = src;
  };
  layer(file_.defaults, Source::kConfigDefaults);
  auto t = file_.tenants.find(tenant);
  if (t != file_.tenants.end()) layer(t->second, Source::kConfigTenant);
  auto a = api_.find(tenant);
  if (a != api_.end()) layer(a->second, Source::kApi);
  return e;
}

std::vector<std::string> TenantRegistry::Configured() const {
  std::lock_guard<std::mutex> lk(mu_);
  std::set<std::string> s;
  for (auto& kv : file_.tenants) s.insert(kv.first);
  for (auto& kv : api_) s.insert(kv.first);
  return {s.begin(), s.end()};
}

uint64_t TenantRegistry::version() const {
  std::lock_guard<std::mutex> lk(mu_);
  return version_;
}

std::shared_ptr<tw::ObjectStore> TenantRegistry::Store(const std::string& tenant,
                                                       ReplicaTarget* target) const {
  std::lock_guard<std::mutex> lk(mu_);
  Effective e = GetLocked(tenant);
  if (target) *target = e.replica;
  auto it = stores_.find(e.replica.Key());
  return it != stores_.end() ? it->second : default_store_;  // opened by Apply/Patch
}

std::vector<std::pair<std::string, std::shared_ptr<tw::ObjectStore>>> TenantRegistry::Stores()
    const {
  std::lock_guard<std::mutex> lk(mu_);
  std::vector<std::pair<std::string, std::shared_ptr<tw::ObjectStore>>> out;
  for (auto& [k, s] : stores_) out.emplace_back(store_urls_.at(k), s);
  return out;
}

TenantRegistry::Bucket* TenantRegistry::BucketLocked(const std::string& tenant, int64_t now_us) {
  Effective e = GetLocked(tenant);
  auto it = buckets_.find(tenant);
  if (e.rate_bytes == 0 && e.rate_requests == 0) {
    if (it == buckets_.end()) return nullptr;  // never limited: nothing to keep
  }
  Bucket& b = buckets_[tenant];
  if (b.rate_bytes != e.rate_bytes || b.rate_requests != e.rate_requests) {
    // New limits: start from a full bucket (one second's worth) with no
    // debt; the part of the old debt that lies in the future was never
    // spent throttled.
    if (b.debt_until_us > now_us) b.throttled_us -= b.debt_until_us - now_us;
    b.debt_until_us = std::min(b.debt_until_us, now_us);
    b.bytes = double(std::max<int64_t>(0, e.rate_bytes));
    b.requests = double(std::max<int64_t>(0, e.rate_requests));
    b.last_us = now_us;
    b.rate_bytes = e.rate_bytes;
    b.rate_requests = e.rate_requests;
  }
  const double dt = double(std::max<int64_t>(0, now_us - b.last_us)) / 1e6;
  b.last_us = now_us;
  if (b.rate_bytes > 0) b.bytes = std::min(double(b.rate_bytes), b.bytes + dt * double(b.rate_bytes));
  if (b.rate_requests > 0) {
    b.requests = std::min(double(b.rate_requests), b.requests + dt * double(b.rate_requests));
  }
  return &b;
}

int64_t TenantRegistry::AdmitWaitUs(const std::string& tenant, int64_t now_us) {
  std::lock_guard<std::mutex> lk(mu_);
  Bucket* b = BucketLocked(tenant, now_us);
  if (!b) return 0;
  int64_t wait = 0;
  if (b->rate_bytes > 0 && b->bytes < 0) {
    wait = std::max(wait, int64_t(-b->bytes / double(b->rate_bytes) * 1e6) + 1);
  }
  if (b->rate_requests > 0 && b->requests < 0) {
    wait = std::max(wait, int64_t(-b->requests / double(b->rate_requests) * 1e6) + 1);
  }
  if (wait > 0) ++b->deferrals;
  return wait;
}

int64_t TenantRegistry::Charge(const std::string& tenant, uint64_t bytes, uint64_t requests,
                            int64_t now_us) {
  std::lock_guard<std::mutex> lk(mu_);
  Bucket* b = BucketLocked(tenant, now_us);
  if (!b) return 0;
  int64_t until = now_us;
  if (b->rate_bytes > 0) {
    b->bytes -= double(bytes);
    if (b->bytes < 0) until = std::max(until, now_us + int64_t(-b->bytes / double(b->rate_bytes) * 1e6));
  }
  if (b->rate_requests > 0) {
    b->requests -= double(requests);
    if (b->requests < 0) {
      until = std::max(until, now_us + int64_t(-b->requests / double(b->rate_requests) * 1e6));
    }
  }
  if (until > b->debt_until_us) {
    b->throttled_us += until - std::max(now_us, b->debt_until_us);
    b->debt_until_us = until;
  }
  return b->debt_until_us;
}

Throttle TenantRegistry::ThrottleState(const std::string& tenant, int64_t now_us) {
  std::lock_guard<std::mutex> lk(mu_);
  Throttle t;
  const Bucket* bp = BucketLocked(tenant, now_us);
  if (!bp) return t;
  const Bucket& b = *bp;
  t.throttled = b.debt_until_us > now_us;
  // Only the part of the debt already lived through counts.
  int64_t us = b.throttled_us - std::max<int64_t>(0, b.debt_until_us - now_us);
  t.throttled_seconds = double(std::max<int64_t>(0, us)) / 1e6;
  t.deferrals = b.deferrals;
  return t;
}

}  // namespace twd
