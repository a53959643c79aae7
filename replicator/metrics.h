// tenantwald: observability helpers for the API.
//
//  * ObservedStore wraps the replicator's ObjectStore and remembers the
//    outcome of the last request (after the store's own retries), so that
//    GET /api/health can report S3 reachability without sending a request.
//  * RenderMetrics writes GET /metrics in the Prometheus text exposition
//    format, version 0.0.4 (see docs/API.md for every series).
//  * ScanSpool measures the spool directory (files, bytes, free space).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

#include "store/object_store.h"

namespace twd {

class Replicator;

// The last outcome of the wrapped store's requests. A NotFound answer counts
// as a success: the store was reachable and answered.
struct StoreHealth {
  uint64_t succeeded = 0, failed = 0;   // calls (not HTTP attempts)
  bool last_ok = false;                 // meaningful when last_us > 0
  int64_t last_us = 0, last_ok_us = 0, last_fail_us = 0;
  std::string last_op;                  // "PUT", "GET", "LIST", "DELETE"
  std::string last_error;               // of the last failure (no secrets: store messages)
};

class ObservedStore : public tw::ObjectStore {
 public:
  explicit ObservedStore(std::unique_ptr<tw::ObjectStore> inner) : inner_(std::move(inner)) {}

  tw::Status Put(const std::string& key, std::string_view data,
                 const std::map<std::string, std::string>& metadata = {}) override;
  tw::Status PutFile(const std::string& key, const std::string& path,
                     const std::map<std::string, std::string>& metadata = {}) override;
  tw::Status Get(const std::string& key, std::string* out) override;
  tw::Status GetToFile(const std::string& key, const std::string& path) override;
  tw::Status GetRange(const std::string& key, uint64_t offset, uint64_t length,
                      std::string* out) override;
  tw::Status List(const std::string& prefix, std::vector<tw::ObjectInfo>* out) override;
  tw::Status ListDirs(const std::string& prefix, std::vector<std::string>* out) override;
  tw::Status Delete(const std::string& key) override;
  tw::Status PutIf(const std::string& key, std::string_view data, const tw::PutCondition& cond,
                   std::string* etag,
                   const std::map<std::string, std::string>& metadata = {}) override;
  tw::Status GetWithEtag(const std::string& key, std::string* out, std::string* etag) override;
  std::string url() const override { return inner_->url(); }
  std::map<std::string, std::pair<uint64_t, uint64_t>> RequestCounts() const override {
    return inner_->RequestCounts();
  }

  StoreHealth Health() const;

 private:
  tw::Status Note(const char* op, tw::Status st);
  std::unique_ptr<tw::ObjectStore> inner_;
  mutable std::mutex mu_;
  StoreHealth h_;
};

struct SpoolUsage {
  uint64_t files = 0, bytes = 0;        // regular files directly in the spool
  uint64_t free_bytes = 0, total_bytes = 0;  // of its filesystem (statvfs)
};
SpoolUsage ScanSpool(const std::string& dir);

struct MetricsOptions {
  // Above this many databases the `db` label is dropped and series are
  // aggregated per tenant (cardinality bound). 0: never per database.
  size_t db_label_limit = 1000;
};

// The whole /metrics body (text format 0.0.4).
std::string RenderMetrics(Replicator* rep, const MetricsOptions& o);

// A duration as the API shows it: "500ms", "2s", "1m", "1h", "1.5ms".
std::string FormatDuration(int64_t us);

// Parses "500ms", "1s", "2m", "1h" (or a bare number of seconds) into
// microseconds; accepts 1 ms .. 24 h. Returns false on anything else.
bool ParseDuration(const std::string& s, int64_t* us);

}  // namespace twd
