// tenantwald: the REST API (see api.h).
#include "api.h"

#include <httplib.h>

#include <set>
#include <thread>

#include "log.h"
#include "replicator.h"
#include "tenantwal/tenantwal.h"

namespace twd {

struct ApiServer::Impl {
  Replicator* rep;
  httplib::Server srv;
  std::thread th;
  int port = 0;
};

namespace {

void Error(httplib::Response& res, int status, const char* code, const std::string& msg) {
  std::string body = "{\"error\":{\"code\":";
  JsonQuote(&body, code);
  body += ",\"message\":";
  JsonQuote(&body, msg);
  body += "}}\n";
  res.status = status;
  res.set_content(body, "application/json");
}

void Field(std::string* out, const char* k, const std::string& v, bool comma = true) {
  if (comma) out->push_back(',');
  JsonQuote(out, k);
  out->push_back(':');
  JsonQuote(out, v);
}

void Field(std::string* out, const char* k, int64_t v, bool comma = true) {
  if (comma) out->push_back(',');
  JsonQuote(out, k);
  out->push_back(':');
  *out += std::to_string(v);
}

}  // namespace

ApiServer::ApiServer(Replicator* r) : impl_(std::make_unique<Impl>()) { impl_->rep = r; }

ApiServer::~ApiServer() { Stop(); }

int ApiServer::port() const { return impl_->port; }

tw::Status ApiServer::Start(const std::string& addr) {
  size_t colon = addr.rfind(':');
  if (colon == std::string::npos) return tw::Status::InvalidArgument("--api wants HOST:PORT");
  std::string host = addr.substr(0, colon);
  int port = atoi(addr.c_str() + colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  Replicator* rep = impl_->rep;
  auto& srv = impl_->srv;
  srv.set_payload_max_length(1 << 20);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which lets a
  // second daemon bind the same port silently and split the requests.
  srv.set_socket_options([](socket_t sock) {
    int yes = 1;
    setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, reinterpret_cast<const void*>(&yes), sizeof yes);
  });

  srv.Get("/api/health", [rep](const httplib::Request&, httplib::Response& res) {
    auto dbs = rep->Databases();
    std::set<std::string> tenants;
    for (auto& d : dbs) if (!d.tenant.empty()) tenants.insert(d.tenant);
    auto* ring = rep->ring();
    auto* h = ring->header();
    std::string b = "{";
    Field(&b, "status", std::string("ok"), false);
    Field(&b, "version", std::string(TENANTWAL_VERSION));
    Field(&b, "uptimeSeconds", (tw::ring::NowMicros() - rep->started_us()) / 1000000);
    b += ",\"ring\":{";
    Field(&b, "name", ring->name(), false);
    Field(&b, "usedBytes", int64_t(ring->used_bytes()));
    Field(&b, "capacityBytes", int64_t(h->ring_capacity));
    Field(&b, "recordsDropped", int64_t(h->records_dropped.load()));
    Field(&b, "recordsAbandoned", int64_t(h->records_abandoned.load()));
    b += "}";
    Field(&b, "replica", rep->options().replica_url);
    Field(&b, "totalTenants", int64_t(tenants.size()));
    Field(&b, "totalDatabases", int64_t(dbs.size()));
    b += "}\n";
    res.set_content(b, "application/json");
  });

  srv.Get("/api/databases", [rep](const httplib::Request& req, httplib::Response& res) {
    std::string want_tenant = req.has_param("tenant") ? req.get_param_value("tenant") : "";
    std::string want_status = req.has_param("status") ? req.get_param_value("status") : "";
    auto dbs = rep->Databases();
    std::set<std::string> tenants, active;
    std::string list;
    size_t n = 0;
    for (auto& d : dbs) {
      if (d.tenant.empty()) continue;  // not replicated: no identity
      if (!want_tenant.empty() && d.tenant != want_tenant) continue;
      if (!want_status.empty() && d.phase != want_status) continue;
      tenants.insert(d.tenant);
      if (d.phase == "active") active.insert(d.tenant);
      if (n++) list.push_back(',');
      list += "{";
      Field(&list, "tenantId", d.tenant, false);
      Field(&list, "databaseName", d.db);
      Field(&list, "localPath", d.path);
      Field(&list, "s3Path", rep->S3Path(d.tenant, d.db));
      Field(&list, "status", d.phase);
      Field(&list, "createdAt", Rfc3339(d.created_us));
      Field(&list, "txid", int64_t(d.txid));
      Field(&list, "replicatedTxid", int64_t(d.replicated_txid));
      Field(&list, "lagMs", d.lag_ms);
      Field(&list, "pendingBytes", int64_t(d.pending_bytes));
      Field(&list, "generation", d.generation);
      Field(&list, "bytesReplicated", int64_t(d.bytes));
      Field(&list, "snapshots", int64_t(d.snapshots));
      if (d.last_snapshot_us > 0) Field(&list, "lastSnapshotAt", Rfc3339(d.last_snapshot_us));
      if (d.last_error.empty()) list += ",\"lastError\":null";
      else Field(&list, "lastError", d.last_error);
      list += "}";
    }
    std::string b = "{";
    Field(&b, "totalTenants", int64_t(tenants.size()), false);
    Field(&b, "totalDatabases", int64_t(n));
    b += ",\"activeTenants\":[";
    size_t i = 0;
    for (auto& t : active) {
      if (i++) b.push_back(',');
      JsonQuote(&b, t);
    }
    b += "],\"databases\":[" + list + "]}\n";
    res.set_content(b, "application/json");
  });

  srv.set_error_handler([](const httplib::Request&, httplib::Response& res) {
    if (res.body.empty()) {
      Error(res, res.status, res.status == 404 ? "not_found" : "error",
            res.status == 404 ? "no such endpoint" : "request failed");
    }
  });

  if (port == 0) {
    impl_->port = srv.bind_to_any_port(host.c_str());
    if (impl_->port <= 0) return tw::Status::IOError("cannot bind the API on " + addr);
  } else {
    if (!srv.bind_to_port(host.c_str(), port)) {
      return tw::Status::IOError("cannot bind the API on " + addr);
    }
    impl_->port = port;
  }
  impl_->th = std::thread([this] { impl_->srv.listen_after_bind(); });
  Log(Level::kInfo, "API listening", {{"addr", host + ":" + std::to_string(impl_->port)}});
  return tw::Status::OK();
}

void ApiServer::Stop() {
  if (impl_->th.joinable()) {
    impl_->srv.stop();
    impl_->th.join();
  }
}

}  // namespace twd
