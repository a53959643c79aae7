// tenantwald: store observation, spool usage and the Prometheus exposition
// (see metrics.h; every series is listed in docs/API.md).
#include "metrics.h"

#include "duration.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <set>
#include <tuple>

#include "replicator.h"
#include "tenantwal/tenantwal.h"
#include "walring/ring.h"

namespace twd {

// ---- ObservedStore -----------------------------------------------------------

tw::Status ObservedStore::Note(const char* op, tw::Status st) {
  const bool ok = st.ok() || st.IsNotFound();
  const int64_t now = tw::ring::NowMicros();
  std::lock_guard<std::mutex> lk(mu_);
  h_.last_ok = ok;
  h_.last_us = now;
  h_.last_op = op;
  if (ok) {
    ++h_.succeeded;
    h_.last_ok_us = now;
  } else {
    ++h_.failed;
    h_.last_fail_us = now;
    h_.last_error = st.ToString();
  }
  return st;
}

StoreHealth ObservedStore::Health() const {
  std::lock_guard<std::mutex> lk(mu_);
  return h_;
}

tw::Status ObservedStore::Put(const std::string& key, std::string_view data,
                              const std::map<std::string, std::string>& metadata) {
  return Note("PUT", inner_->Put(key, data, metadata));
}
tw::Status ObservedStore::PutFile(const std::string& key, const std::string& path,
                                  const std::map<std::string, std::string>& metadata) {
  return Note("PUT", inner_->PutFile(key, path, metadata));
}
tw::Status ObservedStore::Get(const std::string& key, std::string* out) {
  return Note("GET", inner_->Get(key, out));
}
tw::Status ObservedStore::GetToFile(const std::string& key, const std::string& path) {
  return Note("GET", inner_->GetToFile(key, path));
}
tw::Status ObservedStore::GetRange(const std::string& key, uint64_t offset, uint64_t length,
                                   std::string* out) {
  return Note("GET", inner_->GetRange(key, offset, length, out));
}
tw::Status ObservedStore::List(const std::string& prefix, std::vector<tw::ObjectInfo>* out) {
  return Note("LIST", inner_->List(prefix, out));
}
tw::Status ObservedStore::ListDirs(const std::string& prefix, std::vector<std::string>* out) {
  return Note("LIST", inner_->ListDirs(prefix, out));
}
tw::Status ObservedStore::Delete(const std::string& key) {
  return Note("DELETE", inner_->Delete(key));
}

tw::Status ObservedStore::PutIf(const std::string& key, std::string_view data,
                                const tw::PutCondition& cond, std::string* etag,
                                const std::map<std::string, std::string>& metadata) {
  tw::Status st = inner_->PutIf(key, data, cond, etag, metadata);
  // A refused condition is an answer of a reachable store, not a failure.
  if (st.IsConflict()) {
    Note("PUT", tw::Status::OK());
    return st;
  }
  return Note("PUT", st);
}

tw::Status ObservedStore::GetWithEtag(const std::string& key, std::string* out,
                                      std::string* etag) {
  return Note("GET", inner_->GetWithEtag(key, out, etag));
}

// ---- spool -----------------------------------------------------------------------

SpoolUsage ScanSpool(const std::string& dir) {
  SpoolUsage u;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      struct stat st;
      if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (!S_ISREG(st.st_mode)) continue;
      if (std::string_view(e->d_name) == "tenantwald.lock") continue;
      ++u.files;
      u.bytes += uint64_t(st.st_size);
    }
    closedir(d);
  }
  struct statvfs vs;
  if (statvfs(dir.c_str(), &vs) == 0) {
    u.free_bytes = uint64_t(vs.f_bavail) * vs.f_frsize;
    u.total_bytes = uint64_t(vs.f_blocks) * vs.f_frsize;
  }
  return u;
}

bool ParseDuration(const std::string& s, int64_t* us) {
  // A bare number is seconds; otherwise the one duration grammar (duration.h).
  const bool bare = !s.empty() && s.find_first_not_of("0123456789.") == std::string::npos;
  return ParseDurationIn(bare ? s + "s" : s, 1000, 86400000000LL, us);
}

std::string FormatDuration(int64_t us) {
  if (us > 0 && us % 3600000000LL == 0) return std::to_string(us / 3600000000LL) + "h";
  if (us > 0 && us % 60000000LL == 0) return std::to_string(us / 60000000LL) + "m";
  if (us % 1000000 == 0) return std::to_string(us / 1000000) + "s";
  if (us % 1000 == 0) return std::to_string(us / 1000) + "ms";
  char buf[48];
  snprintf(buf, sizeof buf, "%.3fms", double(us) / 1000.0);
  std::string s = buf;
  while (s.size() > 3 && s[s.size() - 3] == '0') s.erase(s.size() - 3, 1);  // "1.500ms" -> "1.5ms"
  return s;
}

// ---- Prometheus text format 0.0.4 --------------------------------------------------

namespace {

// Label values: backslash, double quote and line feed are escaped.
std::string Esc(const std::string& v) {
  std::string o;
  for (char c : v) {
    if (c == '\\') o += "\\\\";
    else if (c == '"') o += "\\\"";
    else if (c == '\n') o += "\\n";
    else o.push_back(c);
  }
  return o;
}

class Out {
 public:
  void Family(const char* name, const char* type, const char* help) {
    b_ += "# HELP ";
    b_ += name;
    b_ += ' ';
    b_ += help;
    b_ += "\n# TYPE ";
    b_ += name;
    b_ += ' ';
    b_ += type;
    b_ += '\n';
  }
  // labels: "k1", v1, "k2", v2 ...
  void Sample(const char* name, const std::vector<std::pair<const char*, std::string>>& labels,
              const std::string& value) {
    b_ += name;
    if (!labels.empty()) {
      b_ += '{';
      for (size_t i = 0; i < labels.size(); ++i) {
        if (i) b_ += ',';
        b_ += labels[i].first;
        b_ += "=\"";
        b_ += Esc(labels[i].second);
        b_ += '"';
      }
      b_ += '}';
    }
    b_ += ' ';
    b_ += value;
    b_ += '\n';
  }
  void Sample(const char* name, const std::vector<std::pair<const char*, std::string>>& labels,
              uint64_t v) {
    Sample(name, labels, std::to_string(v));
  }
  void Seconds(const char* name, const std::vector<std::pair<const char*, std::string>>& labels,
               int64_t us) {
    char buf[40];
    snprintf(buf, sizeof buf, "%.6f", double(us) / 1e6);
    Sample(name, labels, buf);
  }
  std::string& str() { return b_; }

 private:
  std::string b_;
};

struct Agg {
  uint64_t txns = 0, bytes = 0, snapshots = 0, errors = 0, pending = 0;
  uint64_t txid = 0, replicated = 0;
  int64_t lag_ms = 0;
};

}  // namespace

std::string RenderMetrics(Replicator* rep, const MetricsOptions& o) {
  auto dbs = rep->Databases();
  std::sort(dbs.begin(), dbs.end(), [](const Replicator::DbView& a, const Replicator::DbView& b) {
    return std::tie(a.tenant, a.db) < std::tie(b.tenant, b.db);
  });
  size_t replicated = 0, not_replicated = 0;
  std::map<std::pair<std::string, std::string>, uint64_t> by_status;  // (tenant, status)
  for (auto& d : dbs) {
    if (d.tenant.empty()) {
      ++not_replicated;
      continue;
    }
    ++replicated;
    ++by_status[{d.tenant, d.phase}];
  }
  const bool per_db = o.db_label_limit > 0 && replicated <= o.db_label_limit;
  // Series keys: (tenant, db) with db "" when aggregated per tenant.
  std::map<std::pair<std::string, std::string>, Agg> series;
  for (auto& d : dbs) {
    if (d.tenant.empty()) continue;
    Agg& a = series[{d.tenant, per_db ? d.db : std::string()}];
    a.txns += d.txns;
    a.bytes += d.bytes;
    a.snapshots += d.snapshots;
    a.errors += d.errors;
    a.pending += d.pending_bytes;
    a.txid = d.txid;
    a.replicated = d.replicated_txid;
    a.lag_ms = std::max(a.lag_ms, d.lag_ms);
  }
  auto labels = [&](const std::pair<std::string, std::string>& k) {
    std::vector<std::pair<const char*, std::string>> l = {{"tenant", k.first}};
    if (per_db) l.push_back({"db", k.second});
    return l;
  };

  Out out;
  out.Family("tenantwal_build_info", "gauge", "tenantwald version (always 1).");
  out.Sample("tenantwal_build_info", {{"version", TENANTWAL_VERSION}}, uint64_t(1));
  out.Family("tenantwal_start_time_seconds", "gauge", "Unix time tenantwald started.");
  out.Seconds("tenantwal_start_time_seconds", {}, rep->started_us());
  out.Family("tenantwal_metrics_db_label", "gauge",
             "1 if per-database series carry the db label, 0 if aggregated per tenant "
             "(more databases than --metrics-db-label-limit).");
  out.Sample("tenantwal_metrics_db_label", {}, uint64_t(per_db ? 1 : 0));

  out.Family("tenantwal_databases", "gauge", "Databases known to tenantwald, by tenant and status.");
  for (auto& [k, n] : by_status) {
    out.Sample("tenantwal_databases", {{"tenant", k.first}, {"status", k.second}}, n);
  }
  out.Family("tenantwal_databases_not_replicated", "gauge",
             "Databases opened through the VFS that are never replicated (outside the root or "
             "invalid names).");
  out.Sample("tenantwal_databases_not_replicated", {}, uint64_t(not_replicated));

  struct Counter {
    const char* name;
    const char* type;
    const char* help;
    uint64_t Agg::*field;
  };
  const Counter counters[] = {
      {"tenantwal_transactions_replicated_total", "counter",
       "Transactions in segments uploaded to the replica.", &Agg::txns},
      {"tenantwal_replicated_bytes_total", "counter",
       "Bytes uploaded to the replica (segments and snapshots, compressed).", &Agg::bytes},
      {"tenantwal_snapshots_total", "counter", "Snapshots uploaded (each starts a generation).",
       &Agg::snapshots},
      {"tenantwal_errors_total", "counter", "Failed segment uploads and snapshots.",
       &Agg::errors},
      {"tenantwal_pending_bytes", "gauge",
       "Bytes received but not yet durable in the replica (in memory and spooled).",
       &Agg::pending},
  };
  for (const Counter& c : counters) {
    out.Family(c.name, c.type, c.help);
    for (auto& [k, a] : series) out.Sample(c.name, labels(k), a.*(c.field));
  }
  out.Family("tenantwal_replication_lag_seconds", "gauge",
             "Age of the oldest transaction not yet durable in the replica (0 when caught up; "
             "per tenant: the maximum).");
  for (auto& [k, a] : series) out.Seconds("tenantwal_replication_lag_seconds", labels(k), a.lag_ms * 1000);
  if (per_db) {
    out.Family("tenantwal_txid", "gauge", "Last transaction id captured.");
    for (auto& [k, a] : series) out.Sample("tenantwal_txid", labels(k), a.txid);
    out.Family("tenantwal_replicated_txid", "gauge", "Last transaction id durable in the replica.");
    for (auto& [k, a] : series) out.Sample("tenantwal_replicated_txid", labels(k), a.replicated);
  }

  // Throttling (per tenant, whatever the db label setting): time over the
  // tenant's rate limit, whether it is over it now, and its configured limits.
  {
    std::set<std::string> tenants;
    for (auto& [k, a] : series) tenants.insert(k.first);
    for (auto& t : rep->tenants()->Configured()) tenants.insert(t);
    const int64_t now = tw::ring::NowMicros();
    out.Family("tenantwal_throttled_seconds_total", "counter",
               "Seconds the tenant's uploads spent waiting for its rate limit.");
    std::vector<std::pair<std::string, Throttle>> th;
    for (auto& t : tenants) th.emplace_back(t, rep->tenants()->ThrottleState(t, now));
    for (auto& [t, x] : th) {
      char buf[40];
      snprintf(buf, sizeof buf, "%.6f", x.throttled_seconds);
      out.Sample("tenantwal_throttled_seconds_total", {{"tenant", t}}, buf);
    }
    out.Family("tenantwal_throttled", "gauge", "1 while the tenant is over its rate limit.");
    for (auto& [t, x] : th) out.Sample("tenantwal_throttled", {{"tenant", t}}, uint64_t(x.throttled));
    out.Family("tenantwal_rate_limit_bytes_per_second", "gauge",
               "The tenant's upload rate limit in bytes/s (0 = unlimited).");
    for (auto& t : tenants) {
      out.Sample("tenantwal_rate_limit_bytes_per_second", {{"tenant", t}},
                 uint64_t(rep->tenants()->Get(t).rate_bytes));
    }
  }

  tw::ObjectStore* store = rep->store();
  out.Family("tenantwal_s3_requests_total", "counter",
             "Object store requests (HTTP attempts, retries included) by operation and outcome.");
  if (store) {
    for (auto& [op, rf] : store->RequestCounts()) {
      const uint64_t fail = std::min(rf.second, rf.first);
      out.Sample("tenantwal_s3_requests_total", {{"operation", op}, {"outcome", "success"}},
                 rf.first - fail);
      out.Sample("tenantwal_s3_requests_total", {{"operation", op}, {"outcome", "failure"}}, fail);
    }
  }
  StoreHealth sh = rep->StoreHealthNow();
  out.Family("tenantwal_s3_last_request_success", "gauge",
             "1 if the last object store call succeeded (after retries), 0 if it failed or none "
             "was made yet.");
  out.Sample("tenantwal_s3_last_request_success", {}, uint64_t(sh.last_us > 0 && sh.last_ok));
  out.Family("tenantwal_s3_last_success_timestamp_seconds", "gauge",
             "Unix time of the last successful object store call (0: none yet).");
  out.Seconds("tenantwal_s3_last_success_timestamp_seconds", {}, sh.last_ok_us);

  tw::ring::Ring* ring = rep->ring();
  auto* h = ring->header();
  out.Family("tenantwal_ring_used_bytes", "gauge", "Bytes in the shared-memory ring not yet consumed.");
  out.Sample("tenantwal_ring_used_bytes", {}, uint64_t(ring->used_bytes()));
  out.Family("tenantwal_ring_capacity_bytes", "gauge", "Capacity of the shared-memory ring.");
  out.Sample("tenantwal_ring_capacity_bytes", {}, uint64_t(h->ring_capacity));
  out.Family("tenantwal_ring_records_total", "counter", "Records written to the ring by producers.");
  out.Sample("tenantwal_ring_records_total", {}, uint64_t(h->records_written.load()));
  out.Family("tenantwal_ring_dropped_records_total", "counter",
             "Records dropped because the ring was full (each forces a snapshot).");
  out.Sample("tenantwal_ring_dropped_records_total", {}, uint64_t(h->records_dropped.load()));
  out.Family("tenantwal_ring_dropped_bytes_total", "counter",
             "Bytes of records dropped because the ring was full.");
  out.Sample("tenantwal_ring_dropped_bytes_total", {}, uint64_t(h->bytes_dropped.load()));
  out.Family("tenantwal_ring_abandoned_records_total", "counter",
             "Records abandoned by producers that died while writing them.");
  out.Sample("tenantwal_ring_abandoned_records_total", {}, uint64_t(h->records_abandoned.load()));
  out.Family("tenantwal_ring_slots", "gauge", "Registry slots of the ring, by state.");
  out.Sample("tenantwal_ring_slots", {{"state", "used"}}, uint64_t(h->slots_used.load()));
  out.Sample("tenantwal_ring_slots", {{"state", "capacity"}}, uint64_t(h->slot_count));

  SpoolUsage sp = ScanSpool(rep->options().spool_dir);
  out.Family("tenantwal_spool_bytes", "gauge", "Bytes of files in the spool (segments, snapshots).");
  out.Sample("tenantwal_spool_bytes", {}, sp.bytes);
  out.Family("tenantwal_spool_files", "gauge", "Files in the spool.");
  out.Sample("tenantwal_spool_files", {}, sp.files);
  out.Family("tenantwal_spool_free_bytes", "gauge", "Free bytes on the spool's filesystem.");
  out.Sample("tenantwal_spool_free_bytes", {}, sp.free_bytes);
  SpoolStats ss = rep->SpoolStatsNow();
  out.Family("tenantwal_spool_segment_bytes", "gauge",
             "Bytes of sealed segments waiting in the spool (counted against --spool-max-bytes).");
  out.Sample("tenantwal_spool_segment_bytes", {}, ss.used_bytes);
  out.Family("tenantwal_spool_max_bytes", "gauge", "--spool-max-bytes (0: unbounded).");
  out.Sample("tenantwal_spool_max_bytes", {}, ss.max_bytes);
  out.Family("tenantwal_spool_dropped_total", "counter",
             "Times the spool bound dropped a database's pending segments (each forces a "
             "snapshot).");
  for (auto& [t, x] : ss.dropped) out.Sample("tenantwal_spool_dropped_total", {{"tenant", t}}, x.drops);
  out.Family("tenantwal_spool_dropped_segments_total", "counter",
             "Segments deleted from the spool unsent because of the bound.");
  for (auto& [t, x] : ss.dropped) {
    out.Sample("tenantwal_spool_dropped_segments_total", {{"tenant", t}}, x.segments);
  }
  out.Family("tenantwal_spool_dropped_bytes_total", "counter",
             "Bytes of segments deleted from the spool unsent because of the bound.");
  for (auto& [t, x] : ss.dropped) out.Sample("tenantwal_spool_dropped_bytes_total", {{"tenant", t}}, x.bytes);
  out.Family("tenantwal_spool_write_errors_total", "counter",
             "Failed writes of segment files to the spool (ENOSPC, EIO, ...).");
  out.Sample("tenantwal_spool_write_errors_total", {}, ss.write_errors);
  return std::move(out.str());
}

}  // namespace twd
