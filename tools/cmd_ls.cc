// tenantwal ls: list what a replica holds: databases, their generations,
// snapshots and segments with txid ranges, sizes and commit times.
//
//   tenantwal ls --replica URL [--tenant T] [--db D] [--json]
//
// One LIST of the narrowest prefix the flags allow, then each object's header
// is fetched for its times (segments are small and read whole; snapshots are
// streamed to a temporary file since the store has no ranged GET yet). An
// object whose header cannot be read is still listed, with no times, and a
// warning on stderr.
#include <stdlib.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <vector>

#include "cmd.h"
#include "store/format.h"
#include "store/restore.h"

namespace tw {
namespace cli {

namespace {

struct LsFlags {
  ReplicaFlags replica;
  std::string tenant, db;
  bool json = false;
};

struct Times {
  int64_t first_us = 0, last_us = 0;  // snapshots: both = commit time
};

// Reads an object's header for its times.
Status ReadTimes(ObjectStore* store, const CatalogObject& o, bool snapshot,
                 const std::string& tmpdir, Times* t) {
  if (snapshot) {
    std::string path = tmpdir + "/snap";
    Status s = store->GetToFile(o.key, path);
    std::string head;
    if (s.ok()) {
      std::ifstream in(path, std::ios::binary);
      head.resize(kSnapshotHeaderSize);
      in.read(head.data(), static_cast<std::streamsize>(head.size()));
      head.resize(static_cast<size_t>(in.gcount()));
    }
    ::unlink(path.c_str());
    TW_RETURN_IF_ERROR(s);
    SnapshotHeader h;
    TW_RETURN_IF_ERROR(ParseSnapshotHeader(head, &h));
    t->first_us = t->last_us = h.commit_us;
    return Status::OK();
  }
  std::string bytes;
  TW_RETURN_IF_ERROR(store->Get(o.key, &bytes));
  SegmentHeader h;
  TW_RETURN_IF_ERROR(ParseSegmentHeader(bytes, &h));
  t->first_us = h.first_commit_us;
  t->last_us = h.last_commit_us;
  return Status::OK();
}

std::string Range(const CatalogObject& o) {
  if (o.min_txid == o.max_txid) return std::to_string(o.min_txid);
  return std::to_string(o.min_txid) + "-" + std::to_string(o.max_txid);
}

int RunLs(const LsFlags& f) {
  const char* cmd = "ls";
  Status s;
  if (!f.tenant.empty()) s = CheckName("--tenant", f.tenant);
  if (s.ok() && !f.db.empty()) s = CheckName("--db", f.db);
  if (!s.ok()) return Fail(cmd, s);
  std::unique_ptr<ObjectStore> store;
  s = OpenReplica(f.replica, &store);
  if (!s.ok()) return Fail(cmd, s);

  std::string prefix = "tenants/";
  if (!f.tenant.empty()) prefix = f.db.empty() ? prefix + f.tenant + "/" : DbPrefix(f.tenant, f.db);
  std::vector<ObjectInfo> objects;
  s = store->List(prefix, &objects);
  if (!s.ok()) return Fail(cmd, s.Prefix("list " + prefix));
  size_t ignored = 0;
  std::vector<CatalogDatabase> dbs = BuildCatalog(objects, &ignored);
  if (!f.db.empty())
    dbs.erase(std::remove_if(dbs.begin(), dbs.end(),
                             [&](const CatalogDatabase& d) { return d.db != f.db; }),
              dbs.end());
  if (ignored > 0)
    Warn(cmd, std::to_string(ignored) + " object(s) under " + prefix +
                  " are not tenantwal snapshots or segments");

  std::string tmpl = (getenv("TMPDIR") ? std::string(getenv("TMPDIR")) : "/tmp") + "/tenantwal-ls-XXXXXX";
  std::vector<char> tbuf(tmpl.begin(), tmpl.end());
  tbuf.push_back('\0');
  if (mkdtemp(tbuf.data()) == nullptr)
    return Fail(cmd, Status::IOError("cannot create a temporary directory in " + tmpl));
  std::string tmpdir = tbuf.data();
  auto times = [&](const CatalogObject& o, bool snapshot) {
    Times t;
    Status ts = ReadTimes(store.get(), o, snapshot, tmpdir, &t);
    if (!ts.ok()) Warn(cmd, o.key + ": " + ts.ToString());
    return t;
  };

  std::ostringstream out;
  if (f.json) {
    out << "{\"databases\":[";
    for (size_t i = 0; i < dbs.size(); i++) {
      const CatalogDatabase& d = dbs[i];
      out << (i ? "," : "") << "{\"tenant\":" << JsonString(d.tenant)
          << ",\"db\":" << JsonString(d.db) << ",\"generations\":[";
      for (size_t g = 0; g < d.generations.size(); g++) {
        const CatalogGeneration& gen = d.generations[g];
        out << (g ? "," : "") << "{\"id\":" << JsonString(gen.id) << ",\"snapshots\":[";
        for (size_t k = 0; k < gen.snapshots.size(); k++) {
          const CatalogObject& o = gen.snapshots[k];
          Times t = times(o, true);
          out << (k ? "," : "") << "{\"txid\":" << o.min_txid << ",\"key\":" << JsonString(o.key)
              << ",\"size\":" << o.size << ",\"time\":" << JsonString(Rfc3339(t.first_us)) << "}";
        }
        out << "],\"segments\":[";
        for (size_t k = 0; k < gen.segments.size(); k++) {
          const CatalogObject& o = gen.segments[k];
          Times t = times(o, false);
          out << (k ? "," : "") << "{\"minTxid\":" << o.min_txid << ",\"maxTxid\":" << o.max_txid
              << ",\"key\":" << JsonString(o.key) << ",\"size\":" << o.size
              << ",\"firstCommit\":" << JsonString(Rfc3339(t.first_us))
              << ",\"lastCommit\":" << JsonString(Rfc3339(t.last_us)) << "}";
        }
        out << "]}";
      }
      out << "]}";
    }
    out << "]}\n";
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"TENANT", "DB", "GENERATION", "KIND", "TXIDS", "SIZE", "FIRST COMMIT", "LAST COMMIT"}};
    for (const CatalogDatabase& d : dbs)
      for (const CatalogGeneration& gen : d.generations) {
        for (const CatalogObject& o : gen.snapshots) {
          Times t = times(o, true);
          rows.push_back({d.tenant, d.db, gen.id, "snapshot", Range(o), std::to_string(o.size),
                          Rfc3339(t.first_us), Rfc3339(t.last_us)});
        }
        for (const CatalogObject& o : gen.segments) {
          Times t = times(o, false);
          rows.push_back({d.tenant, d.db, gen.id, "segment", Range(o), std::to_string(o.size),
                          Rfc3339(t.first_us), Rfc3339(t.last_us)});
        }
      }
    std::vector<size_t> width(rows[0].size(), 0);
    for (const auto& r : rows)
      for (size_t c = 0; c < r.size(); c++) width[c] = std::max(width[c], r[c].size());
    for (const auto& r : rows) {
      std::string line;
      for (size_t c = 0; c < r.size(); c++) {
        bool right = (c == 5);  // sizes right-aligned
        std::string pad(width[c] - r[c].size(), ' ');
        line += right ? pad + r[c] : r[c] + (c + 1 < r.size() ? pad : "");
        if (c + 1 < r.size()) line += "  ";
      }
      out << line << "\n";
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(tmpdir, ec);
  std::cout << out.str() << std::flush;
  return 0;
}

}  // namespace

Command RegisterLs(CLI::App* app) {
  auto f = std::make_shared<LsFlags>();
  CLI::App* cmd = app->add_subcommand(
      "ls", "List the databases, generations, snapshots and segments in a replica");
  AddReplicaFlags(cmd, &f->replica);
  cmd->add_option("--tenant", f->tenant, "Only this tenant");
  cmd->add_option("--db", f->db, "Only databases with this name");
  cmd->add_flag("--json", f->json, "Print JSON instead of a table");
  return Command{cmd, [f] { return RunLs(*f); }};
}

}  // namespace cli
}  // namespace tw
