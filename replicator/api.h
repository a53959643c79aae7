// tenantwald: the REST API and /metrics (cpp-httplib), loopback by default.
// docs/API.md describes every endpoint with examples; in short:
//
//   GET    /api/health                         status, version, uptime, ring, spool, S3
//   GET    /api/databases[?tenant=&status=&limit=&offset=]
//   POST   /api/databases                      {"path":..} | {"tenantId":..,"databaseName":..}
//   GET    /api/databases/{tenant}/{db}
//   DELETE /api/databases/{tenant}/{db}        stop replicating (replica kept)
//   POST   /api/databases/{tenant}/{db}/snapshot
//   GET    /api/tenants, /api/tenants/{tenant}
//   PATCH  /api/tenants/{tenant}               {"syncInterval":"500ms"|null, "retention":..,
//                                               "rateLimitBytesPerSecond":.., "replica":..}
//   GET    /metrics                            Prometheus text format 0.0.4
//
// Errors are {"error":{"code":..,"message":..}} with the HTTP status (400,
// 401, 404, 405 with Allow, 409, 413). With a token file every request
// needs "Authorization: Bearer TOKEN" (compared in constant time).
#pragma once

#include <memory>
#include <string>

#include "base/status.h"

namespace twd {

class Replicator;

struct ApiOptions {
  std::string token_file;          // --api-token-file ("" = no authentication)
  size_t metrics_db_label_limit = 1000;  // --metrics-db-label-limit
};

class ApiServer {
 public:
  explicit ApiServer(Replicator* r, ApiOptions o = {});
  ~ApiServer();
  // Binds `addr` ("host:port"; port 0 picks one) and serves in a thread.
  // InvalidArgument for an unusable token file.
  tw::Status Start(const std::string& addr);
  void Stop();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twd
