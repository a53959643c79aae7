// tenantwal status: what tenantwald is doing, from its REST API.
//
//   tenantwal status [--api ADDR] [--tenant T] [--json] [--token-file F]
//
// ADDR is HOST:PORT or an http:// URL; default $TENANTWAL_API, else
// 127.0.0.1:7070. One GET /api/databases (libcurl); --json prints the API's
// answer unchanged, otherwise a table (tenant, db, status, txid, replicated,
// lag, last error) and a summary line. With --token-file the file's content
// is sent as "Authorization: Bearer ..." (never printed).
#include <curl/curl.h>
#include <simdjson.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "cmd.h"

namespace tw {
namespace cli {

namespace {

struct StatusFlags {
  std::string api, tenant, token_file;
  bool json = false;
  int timeout_s = 10;
};

size_t Collect(char* p, size_t size, size_t n, void* ud) {
  static_cast<std::string*>(ud)->append(p, size * n);
  return size * n;
}

std::string Lag(int64_t ms) {
  char buf[32];
  if (ms < 1000) snprintf(buf, sizeof buf, "%lldms", static_cast<long long>(ms));
  else if (ms < 60000) snprintf(buf, sizeof buf, "%.1fs", double(ms) / 1000);
  else snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(ms / 60000),
                static_cast<long long>((ms / 1000) % 60));
  return buf;
}

int RunStatus(const StatusFlags& f) {
  const char* cmd = "status";
  std::string api = f.api;
  if (api.empty()) {
    const char* env = getenv("TENANTWAL_API");
    api = env && *env ? env : "127.0.0.1:7070";
  }
  std::string base = api;
  if (base.rfind("http://", 0) != 0 && base.rfind("https://", 0) != 0) base = "http://" + base;
  while (!base.empty() && base.back() == '/') base.pop_back();
  if (!f.tenant.empty()) {
    Status s = CheckName("--tenant", f.tenant);
    if (!s.ok()) return Fail(cmd, s);
  }
  std::string token;
  if (!f.token_file.empty()) {
    std::ifstream in(f.token_file, std::ios::binary);
    if (!in) return Fail(cmd, Status::InvalidArgument("--token-file " + f.token_file +
                                                       ": cannot read it"));
    std::stringstream ss;
    ss << in.rdbuf();
    token = ss.str();
    while (!token.empty() && isspace(static_cast<unsigned char>(token.back()))) token.pop_back();
    while (!token.empty() && isspace(static_cast<unsigned char>(token.front()))) token.erase(0, 1);
    if (token.empty()) return Fail(cmd, Status::InvalidArgument("--token-file " + f.token_file +
                                                                 " is empty"));
  }
  const std::string url = base + "/api/databases" + (f.tenant.empty() ? "" : "?tenant=" + f.tenant);

  curl_global_init(CURL_GLOBAL_DEFAULT);
  CURL* h = curl_easy_init();
  if (!h) return Fail(cmd, Status::IOError("curl_easy_init failed"));
  std::string body;
  char err[CURL_ERROR_SIZE] = {};
  struct curl_slist* hdrs = nullptr;
  if (!token.empty()) hdrs = curl_slist_append(hdrs, ("Authorization: Bearer " + token).c_str());
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, Collect);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, err);
  curl_easy_setopt(h, CURLOPT_TIMEOUT, long(f.timeout_s));
  curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT, 5L);
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
  CURLcode rc = curl_easy_perform(h);
  long http = 0;
  curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &http);
  curl_slist_free_all(hdrs);
  curl_easy_cleanup(h);
  if (rc != CURLE_OK) {
    return Fail(cmd, Status::Unavailable("cannot reach tenantwald at " + base + ": " +
                                         (*err ? err : curl_easy_strerror(rc)) +
                                         " (is it running with --api? see --api, TENANTWAL_API)"));
  }

  simdjson::dom::parser parser;
  simdjson::dom::element doc;
  const bool parsed = parser.parse(body).get(doc) == simdjson::SUCCESS;
  if (http != 200) {
    std::string msg;
    std::string_view m;
    if (parsed && doc["error"]["message"].get(m) == simdjson::SUCCESS) msg = std::string(m);
    else msg = body.substr(0, 200);
    if (http == 401) {
      msg += f.token_file.empty() ? " (tenantwald wants a token: --token-file)"
                                  : " (the token in " + f.token_file + " was refused)";
    }
    return Fail(cmd, Status::IOError("GET " + url + ": HTTP " + std::to_string(http) + ": " + msg));
  }
  if (!parsed) return Fail(cmd, Status::Corruption("GET " + url + ": the answer is not JSON"));
  if (f.json) {
    std::cout << body;
    if (body.empty() || body.back() != '\n') std::cout << "\n";
    return 0;
  }
  simdjson::dom::array dbs;
  if (doc["databases"].get(dbs) != simdjson::SUCCESS) {
    return Fail(cmd, Status::Corruption("GET " + url + ": no \"databases\" in the answer"));
  }
  auto str = [](simdjson::dom::element e, const char* k) {
    std::string_view v;
    return e[k].get(v) == simdjson::SUCCESS ? std::string(v) : std::string("-");
  };
  auto num = [](simdjson::dom::element e, const char* k) {
    int64_t v = 0;
    return e[k].get(v) == simdjson::SUCCESS ? v : int64_t(0);
  };
  std::vector<std::vector<std::string>> rows = {
      {"TENANT", "DB", "STATUS", "TXID", "REPLICATED", "LAG", "LAST ERROR"}};
  size_t lagging = 0, errors = 0;
  for (simdjson::dom::element d : dbs) {
    const int64_t txid = num(d, "txid"), rep = num(d, "replicatedTxid");
    std::string e = str(d, "lastError");
    if (e != "-") ++errors;
    if (e.size() > 100) e = e.substr(0, 97) + "...";
    if (rep < txid && str(d, "status") == "active") ++lagging;
    rows.push_back({str(d, "tenantId"), str(d, "databaseName"), str(d, "status"),
                    std::to_string(txid), std::to_string(rep), Lag(num(d, "lagMs")), e});
  }
  std::vector<size_t> w(rows[0].size(), 0);
  for (auto& r : rows)
    for (size_t c = 0; c < r.size(); ++c) w[c] = std::max(w[c], r[c].size());
  std::ostringstream out;
  for (auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); ++c) {
      const bool right = c == 3 || c == 4 || c == 5;
      std::string pad(w[c] - r[c].size(), ' ');
      line += right ? pad + r[c] : r[c] + (c + 1 < r.size() ? pad : "");
      if (c + 1 < r.size()) line += "  ";
    }
    out << line << "\n";
  }
  out << rows.size() - 1 << " database(s) in " << num(doc, "totalTenants") << " tenant(s); "
      << lagging << " lagging; " << errors << " with errors (tenantwald at " << base << ")\n";
  std::cout << out.str();
  return 0;
}

}  // namespace

Command RegisterStatus(CLI::App* app) {
  auto f = std::make_shared<StatusFlags>();
  CLI::App* c = app->add_subcommand(
      "status", "Show what tenantwald replicates, from its REST API (table or --json)");
  c->add_option("--api", f->api,
                "tenantwald's API, HOST:PORT or http://HOST:PORT (default $TENANTWAL_API, else "
                "127.0.0.1:7070)");
  c->add_option("--tenant", f->tenant, "Only this tenant's databases");
  c->add_flag("--json", f->json, "Print the API's JSON (GET /api/databases) unchanged");
  c->add_option("--token-file", f->token_file,
                "File holding the API bearer token (tenantwald --api-token-file)");
  c->add_option("--timeout", f->timeout_s, "Seconds to wait for the answer")
      ->capture_default_str();
  return {c, [f] { return RunStatus(*f); }};
}

}  // namespace cli
}  // namespace tw
