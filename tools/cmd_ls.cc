// tenantwal ls: what a replica can restore. For each database, per
// generation, the restore window: the earliest and latest restorable txid
// and commit time, plus gaps and other problems; with --objects, every
// snapshot and segment with txid ranges, sizes and commit times.
//
//   tenantwal ls --replica URL [--tenant T] [--db D] [--objects] [--json]
//
// One LIST of the narrowest prefix the flags allow, then object headers are
// read with ranged GETs (288 bytes each): for the windows, each generation's
// oldest snapshot and the end of its longest chain; with --objects, every
// object. An object whose header cannot be read is still listed, with no
// times, and a warning on stderr.
#include <algorithm>
#include <cstdio>
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
  bool objects = false;
};

struct Times {
  int64_t first_us = 0, last_us = 0;  // snapshots: both = commit time
  uint32_t level = 0;                  // segments: compaction level
  bool points = false;                 // segments: coarse restore points
};

// Reads an object's header (ranged GET) for its times.
Status ReadTimes(ObjectStore* store, const CatalogObject& o, bool snapshot, Times* t) {
  std::string head;
  TW_RETURN_IF_ERROR(
      store->GetRange(o.key, 0, snapshot ? kSnapshotHeaderSize : kSegmentHeaderSize, &head));
  if (snapshot) {
    SnapshotHeader h;
    TW_RETURN_IF_ERROR(ParseSnapshotHeader(head, &h));
    t->first_us = t->last_us = h.commit_us;
    return Status::OK();
  }
  SegmentHeader h;
  TW_RETURN_IF_ERROR(ParseSegmentHeader(head, &h));
  t->first_us = h.first_commit_us;
  t->last_us = h.last_commit_us;
  t->level = h.level;
  t->points = h.points;
  return Status::OK();
}

std::string Range(const CatalogObject& o) {
  if (o.min_txid == o.max_txid) return std::to_string(o.min_txid);
  return std::to_string(o.min_txid) + "-" + std::to_string(o.max_txid);
}

void PrintTable(std::ostringstream& out, const std::vector<std::vector<std::string>>& rows,
                const std::vector<size_t>& right) {
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& r : rows)
    for (size_t c = 0; c < r.size(); c++) width[c] = std::max(width[c], r[c].size());
  for (const auto& r : rows) {
    std::string line;
    for (size_t c = 0; c < r.size(); c++) {
      bool rt = std::find(right.begin(), right.end(), c) != right.end();
      std::string pad(width[c] - r[c].size(), ' ');
      line += rt ? pad + r[c] : r[c] + (c + 1 < r.size() ? pad : "");
      if (c + 1 < r.size()) line += "  ";
    }
    out << line << "\n";
  }
}

std::string WindowJson(uint64_t txid, int64_t us) {
  return "{\"txid\":" + std::to_string(txid) + ",\"time\":" + JsonString(Rfc3339(us)) +
         ",\"us\":" + std::to_string(us) + "}";
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

  auto times = [&](const CatalogObject& o, bool snapshot) {
    Times t;
    Status ts = ReadTimes(store.get(), o, snapshot, &t);
    if (!ts.ok()) Warn(cmd, o.key + ": " + ts.ToString());
    return t;
  };
  std::vector<std::vector<RestoreWindow>> windows(dbs.size());
  for (size_t i = 0; i < dbs.size(); i++) {
    s = DescribeRestoreWindows(store.get(), dbs[i], &windows[i]);
    if (!s.ok()) return Fail(cmd, s.Prefix(dbs[i].tenant + "/" + dbs[i].db));
    for (const RestoreWindow& w : windows[i])
      for (const std::string& p : w.problems)
        Warn(cmd, dbs[i].tenant + "/" + dbs[i].db + " generation " + w.generation + ": " + p);
  }

  std::ostringstream out;
  if (f.json) {
    out << "{\"databases\":[";
    for (size_t i = 0; i < dbs.size(); i++) {
      const CatalogDatabase& d = dbs[i];
      // The database's window: earliest of any generation, latest of the newest restorable.
      const RestoreWindow* first = nullptr;
      const RestoreWindow* last = nullptr;
      for (const RestoreWindow& w : windows[i])
        if (w.restorable) {
          if (first == nullptr || w.earliest_us < first->earliest_us) first = &w;
          last = &w;
        }
      out << (i ? "," : "") << "{\"tenant\":" << JsonString(d.tenant)
          << ",\"db\":" << JsonString(d.db);
      if (first != nullptr)
        out << ",\"earliest\":" << WindowJson(first->earliest_txid, first->earliest_us)
            << ",\"earliestGeneration\":" << JsonString(first->generation)
            << ",\"latest\":" << WindowJson(last->latest_txid, last->latest_us)
            << ",\"latestGeneration\":" << JsonString(last->generation);
      out << ",\"generations\":[";
      for (size_t g = 0; g < d.generations.size(); g++) {
        const CatalogGeneration& gen = d.generations[g];
        const RestoreWindow& w = windows[i][g];
        out << (g ? "," : "") << "{\"id\":" << JsonString(gen.id)
            << ",\"restorable\":" << (w.restorable ? "true" : "false")
            << ",\"snapshotCount\":" << w.snapshots << ",\"segmentCount\":" << w.segments
            << ",\"bytes\":" << w.bytes;
        if (w.restorable)
          out << ",\"earliest\":" << WindowJson(w.earliest_txid, w.earliest_us)
              << ",\"latest\":" << WindowJson(w.latest_txid, w.latest_us);
        out << ",\"unreachableSegments\":" << w.unreachable_segments << ",\"problems\":[";
        for (size_t k = 0; k < w.problems.size(); k++)
          out << (k ? "," : "") << JsonString(w.problems[k]);
        out << "]";
        if (f.objects) {
          out << ",\"snapshots\":[";
          for (size_t k = 0; k < gen.snapshots.size(); k++) {
            const CatalogObject& o = gen.snapshots[k];
            Times t = times(o, true);
            out << (k ? "," : "") << "{\"txid\":" << o.min_txid
                << ",\"key\":" << JsonString(o.key) << ",\"size\":" << o.size
                << ",\"time\":" << JsonString(Rfc3339(t.first_us)) << "}";
          }
          out << "],\"segments\":[";
          for (size_t k = 0; k < gen.segments.size(); k++) {
            const CatalogObject& o = gen.segments[k];
            Times t = times(o, false);
            out << (k ? "," : "") << "{\"minTxid\":" << o.min_txid
                << ",\"maxTxid\":" << o.max_txid << ",\"key\":" << JsonString(o.key)
                << ",\"size\":" << o.size << ",\"firstCommit\":" << JsonString(Rfc3339(t.first_us))
                << ",\"lastCommit\":" << JsonString(Rfc3339(t.last_us))
                << ",\"level\":" << t.level << ",\"coarse\":" << (t.points ? "true" : "false")
                << "}";
          }
          out << "]";
        }
        out << "}";
      }
      out << "]}";
    }
    out << "]}\n";
  } else if (f.objects) {
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
    PrintTable(out, rows, {5});
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"TENANT", "DB", "GENERATION", "SNAPS", "SEGS", "BYTES", "EARLIEST TXID", "EARLIEST TIME",
         "LATEST TXID", "LATEST TIME", "NOTE"}};
    for (size_t i = 0; i < dbs.size(); i++)
      for (const RestoreWindow& w : windows[i]) {
        std::string note = w.restorable ? "" : "not restorable";
        if (w.unreachable_segments > 0)
          note = "gap after txid " + std::to_string(w.gap_after_txid) + ": " +
                 std::to_string(w.unreachable_segments) + " segment(s) unreachable";
        else if (!w.problems.empty() && note.empty())
          note = w.problems.front();
        rows.push_back({dbs[i].tenant, dbs[i].db, w.generation, std::to_string(w.snapshots),
                        std::to_string(w.segments), std::to_string(w.bytes),
                        w.restorable ? std::to_string(w.earliest_txid) : "-",
                        w.restorable ? Rfc3339(w.earliest_us) : "-",
                        w.restorable ? std::to_string(w.latest_txid) : "-",
                        w.restorable ? Rfc3339(w.latest_us) : "-", note});
      }
    PrintTable(out, rows, {3, 4, 5, 6, 8});
  }
  std::cout << out.str() << std::flush;
  return 0;
}

}  // namespace

Command RegisterLs(CLI::App* app) {
  auto f = std::make_shared<LsFlags>();
  CLI::App* cmd = app->add_subcommand(
      "ls",
      "Show each database's restore window per generation (earliest and latest restorable "
      "txid and commit time); --objects lists every snapshot and segment");
  AddReplicaFlags(cmd, &f->replica);
  cmd->add_option("--tenant", f->tenant, "Only this tenant");
  cmd->add_option("--db", f->db, "Only databases with this name");
  cmd->add_flag("--objects", f->objects, "List every snapshot and segment with its times");
  cmd->add_flag("--json", f->json, "Print JSON instead of a table");
  return Command{cmd, [f] { return RunLs(*f); }};
}

}  // namespace cli
}  // namespace tw
