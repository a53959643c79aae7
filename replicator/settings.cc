// tenantwald: the Replicator's side of per-tenant settings (config reload,
// PATCH, audit of changes, replica target changes).
//
// Settings live in TenantRegistry (tenants.h). A change (SIGHUP reload or
// PATCH) is applied in one swap under the registry's mutex; the data path
// reads it without a restart: the flusher re-reads sync intervals when the
// registry's version changes, uploads and snapshots ask the registry for
// admission and for their tenant's store. Nothing in flight is dropped:
// a segment sealed for a generation is uploaded to the target that
// generation started in, and a tenant whose target changed gets a new
// snapshot (a new generation) in the new target, after which its segments
// follow it there. Throttled databases are requeued at once, so a lifted
// limit takes effect immediately.
#include <unistd.h>

#include <set>

#include "log.h"
#include "replicator.h"

namespace twd {

using tw::Status;

int64_t Replicator::SnapshotIntervalUs(const std::string& tenant) const {
  return tenants_->Get(tenant).snapshot_us;
}

int64_t Replicator::RetentionUs(const std::string& tenant) const {
  return tenants_->Get(tenant).retention_us;
}

void Replicator::SetTenantSyncInterval(const std::string& tenant, int64_t us) {
  Settings set;
  std::vector<int> clear;
  if (us > 0) set.sync_us = us;
  else clear.push_back(kSync);
  PatchTenant(tenant, set, clear, "");
}

int64_t Replicator::TenantSyncInterval(const std::string& tenant, bool* overridden) const {
  Effective e = tenants_->Get(tenant);
  *overridden = e.source[kSync] == Source::kApi || e.source[kSync] == Source::kConfigTenant;
  return e.sync_us;
}

std::map<std::string, int64_t> Replicator::TenantSyncOverrides() const {
  std::map<std::string, int64_t> m;
  for (auto& t : tenants_->Configured()) {
    bool own = false;
    int64_t us = TenantSyncInterval(t, &own);
    if (own) m[t] = us;
  }
  return m;
}

std::string Replicator::S3Path(const std::string& tenant, const std::string& db) const {
  std::string u = tenants_->Get(tenant).replica.url;
  while (!u.empty() && u.back() == '/') u.pop_back();
  return u + "/" + tw::DbPrefix(tenant, db);
}

std::map<std::string, Effective> Replicator::EffectiveAll() const {
  std::map<std::string, Effective> m;
  m["*"] = tenants_->Get("");  // "" is never a tenant: the global values
  for (auto& t : tenants_->Configured()) m[t] = tenants_->Get(t);
  return m;
}

Replicator::ConfigState Replicator::config_state() const {
  std::lock_guard<std::mutex> lk(config_mu_);
  return config_state_;
}

Status Replicator::ReloadConfig() {
  std::lock_guard<std::mutex> lk(config_mu_);
  config_state_.path = opts_.config_path;
  config_state_.last_attempt_us = tw::ring::NowMicros();
  if (opts_.config_path.empty()) {
    Log(Level::kInfo, "SIGHUP: no --config file; nothing to reload");
    return Status::OK();
  }
  Config c;
  auto before = EffectiveAll();
  Status st = LoadConfig(opts_.config_path, &c);
  if (st.ok()) st = tenants_->ApplyConfig(c);
  if (!st.ok()) {
    config_state_.last_ok = false;
    config_state_.last_error = st.ToString();
    ++config_state_.failures;
    Log(Level::kError, "configuration rejected: the previous settings stay",
        {{"audit", 1}, {"action", "error"}, {"tenant", "*"}, {"db", "*"},
         {"config", opts_.config_path}, {"error", st.ToString()}});
    return st;
  }
  config_state_.last_ok = true;
  config_state_.last_error.clear();
  config_state_.loaded_us = config_state_.last_attempt_us;
  ++config_state_.reloads;
  Log(Level::kInfo, "configuration reloaded",
      {{"config", opts_.config_path}, {"tenants", c.tenants.size()}});
  SettingsChanged(before, "config", "");
  return Status::OK();
}

Status Replicator::PatchTenant(const std::string& tenant, const Settings& set,
                               const std::vector<int>& clear, const std::string& remote) {
  auto before = EffectiveAll();
  before.emplace(tenant, tenants_->Get(tenant));
  TW_RETURN_IF_ERROR(tenants_->Patch(tenant, set, clear));
  SettingsChanged(before, "api", remote);
  return Status::OK();
}

void Replicator::SettingsChanged(const std::map<std::string, Effective>& before,
                                 const char* source, const std::string& remote) {
  auto after = EffectiveAll();
  std::set<std::string> names;
  for (auto& kv : before) names.insert(kv.first);
  for (auto& kv : after) names.insert(kv.first);
  for (auto& name : names) {
    const Effective a = before.count(name) ? before.at(name)
                                            : tenants_->Get(name == "*" ? "" : name);
    const Effective b = after.count(name) ? after.at(name) : tenants_->Get(name == "*" ? "" : name);
    for (int f = 0; f < kFieldCount; ++f) {
      std::string ov = a.JsonValue(f), nv = b.JsonValue(f);
      if (ov == nv && a.source[f] == b.source[f]) continue;
      auto plain = [](std::string* v) {  // "\"30s\"" -> "30s" (durations have no escapes)
        if (v->size() >= 2 && v->front() == '"') *v = v->substr(1, v->size() - 2);
      };
      plain(&ov);
      plain(&nv);
      if (ov == nv && a.source[f] == b.source[f]) continue;
      // Values are durations, numbers or a replica *reference* (URL, endpoint,
      // region, credentials reference): never a secret.
      Log(Level::kInfo, "tenant settings changed",
          {{"audit", 1}, {"action", "settings"}, {"source", source}, {"tenant", name},
           {"db", "*"}, {"setting", kFieldNames[f]}, {"old", ov}, {"new", nv},
           {"oldSource", SourceName(a.source[f])}, {"newSource", SourceName(b.source[f])},
           {"remote", remote}});
    }
  }
  std::vector<std::shared_ptr<Db>> dbs;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& kv : dbs_) dbs.push_back(kv.second);
    // New limits apply now: throttled databases are looked at again at once.
    std::multimap<int64_t, std::shared_ptr<Db>> again;
    for (auto& kv : deferred_) again.emplace(0, kv.second);
    deferred_.swap(again);
  }
  // A tenant whose replica target changed starts a new generation there.
  for (auto& d : dbs) {
    ReplicaTarget t;
    tenants_->Store(d->tenant, &t);
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->throttled_until_us) {
      d->throttled_until_us = 0;
      if (d->phase == Phase::kNeedSnapshot) d->next_attempt_us = 0;
      PublishSlot(d.get());
    }
    if (d->phase != Phase::kActive || d->target_key.empty() || d->target_key == t.Key()) continue;
    Log(Level::kInfo, "replica target changed: new generation in the new target",
        {{"audit", 1}, {"action", "generation"}, {"tenant", d->tenant}, {"db", d->name},
         {"replica", t.url}});
    NeedSnapshotLocked(d.get(), "replica target changed to " + t.url);
    d->next_attempt_us = 0;
    PublishSlot(d.get());
  }
}

}  // namespace twd
