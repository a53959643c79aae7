// tenantwald: the REST API (cpp-httplib), loopback by default.
//
//   GET /api/health     {"status":"ok","version":..,"uptimeSeconds":..,
//                        "ring":{"name":..,"usedBytes":..,"capacityBytes":..,
//                        "dropped":..},"totalDatabases":N,"totalTenants":N}
//   GET /api/databases  {"totalTenants":N,"totalDatabases":N,
//                        "activeTenants":[..],"databases":[{"tenantId":..,
//                        "databaseName":..,"localPath":..,"s3Path":..,
//                        "status":..,"createdAt":RFC3339,"txid":N,
//                        "replicatedTxid":N,"lagMs":N,"generation":..,
//                        "bytesReplicated":N,"snapshots":N,"lastError":..}]}
// Errors are {"error":{"code":..,"message":..}} with the HTTP status.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"

namespace twd {

class Replicator;

class ApiServer {
 public:
  explicit ApiServer(Replicator* r);
  ~ApiServer();
  // Binds `addr` ("host:port"; port 0 picks one) and serves in a thread.
  tw::Status Start(const std::string& addr);
  void Stop();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace twd
