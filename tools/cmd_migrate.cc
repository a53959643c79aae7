// tenantwal migrate: bring databases replicated by Litestream into a tenantwal
// replica (readers: lib/store/litestream.h).
//
//   tenantwal migrate --from s3://bucket/databases/NAME --tenant T --db D --replica URL
//                     [--timestamp RFC3339 | --txid N] [--generation G] [--format F]
//                     [--force] [-o FILE] [--json]
//   tenantwal migrate --all --from s3://bucket/databases/ --tenant-map FILE --replica URL
//
// Reads the Litestream replica directly (current LTX layout or v0.3), rebuilds
// its latest state (or an earlier one) into a local temporary file, verifies
// it (every source checksum, PRAGMA integrity_check) and uploads it as the
// snapshot at txid 0 of a new generation under tenants/T/D/. The source
// position (LTX txid and checksum, or v0.3 generation/index/offset) is printed
// and stored as the snapshot object's metadata (tenantwal-source-position).
//
// A destination that already holds a replica of T/D is refused (single) or
// skipped (--all: "already migrated"), so re-running --all is safe; --force
// adds a new generation on top (its parent is the newest existing one).
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <simdjson.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <set>
#include <sstream>

#include "base/names.h"
#include "cmd.h"
#include "store/litestream.h"
#include "store/restore.h"

namespace tw {
namespace cli {

namespace {

namespace lt = tw::litestream;

struct MigrateFlags {
  ReplicaFlags replica;
  std::string from, tenant, db, timestamp, generation, format = "auto", output, tenant_map;
  uint64_t txid = 0;
  bool all = false, force = false, json = false;
};

// Parses "2024-01-02T03:04:05Z", with optional fractional seconds and a
// numeric offset ("+02:00"), into Unix milliseconds.
bool ParseRfc3339(const std::string& s, int64_t* ms) {
  struct tm tm = {};
  const char* p = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &tm);
  if (!p) return false;
  int64_t frac_ms = 0;
  if (*p == '.') {
    ++p;
    int digits = 0;
    while (*p >= '0' && *p <= '9') {
      if (digits < 3) frac_ms = frac_ms * 10 + (*p - '0');
      ++digits;
      ++p;
    }
    if (digits == 0) return false;
    for (; digits < 3; ++digits) frac_ms *= 10;
  }
  int64_t offset_s = 0;
  if (*p == 'Z' || *p == 'z') {
    ++p;
  } else if (*p == '+' || *p == '-') {
    int sign = *p == '-' ? -1 : 1;
    int hh = 0, mm = 0;
    if (std::sscanf(p + 1, "%2d:%2d", &hh, &mm) != 2) return false;
    offset_s = sign * (hh * 3600 + mm * 60);
    p += 6;
  } else {
    return false;
  }
  if (*p != '\0') return false;
  int64_t t = int64_t(timegm(&tm)) - offset_s;
  *ms = t * 1000 + frac_ms;
  return true;
}

std::string TrimSlash(std::string s) {
  while (s.size() > 1 && s.back() == '/') s.pop_back();
  return s;
}

struct OneResult {
  lt::SourceResult src;
  lt::SnapshotUpload up;
  double seconds = 0;
};

// Migrates one source replica into tenant/db of `dst`.
Status MigrateOne(const MigrateFlags& f, const std::string& from_url, const std::string& tenant,
                  const std::string& db, ObjectStore* dst, bool skip_existing, bool* skipped,
                  OneResult* res) {
  auto start = std::chrono::steady_clock::now();
  *skipped = false;
  CatalogDatabase cat;
  TW_RETURN_IF_ERROR(ListDatabase(dst, tenant, db, &cat).Prefix("list destination"));
  std::string parent;
  if (!cat.generations.empty()) {
    if (skip_existing) {
      *skipped = true;
      return Status::OK();
    }
    if (!f.force)
      return Status::InvalidArgument(
          "destination " + dst->url() + " already holds " + tenant + "/" + db + " (" +
          std::to_string(cat.generations.size()) +
          " generations); --force adds the migrated state as a new generation");
    parent = cat.generations.back().id;
  }
  ReplicaFlags sf = f.replica;
  sf.url = from_url;
  std::unique_ptr<ObjectStore> src;
  TW_RETURN_IF_ERROR(OpenReplica(sf, &src));

  lt::SourceOptions so;
  if (f.format == "ltx") so.format = lt::SourceFormat::kLtx;
  else if (f.format == "v0.3" || f.format == "v3") so.format = lt::SourceFormat::kV3;
  so.target_txid = f.txid;
  if (!f.timestamp.empty() && !ParseRfc3339(f.timestamp, &so.target_time_ms))
    return Status::InvalidArgument("--timestamp '" + f.timestamp +
                                   "' is not RFC 3339 (e.g. 2024-01-02T03:04:05Z)");
  so.generation = f.generation;

  // Work in a private temporary directory; -o keeps the database file.
  const char* tmpdir = getenv("TMPDIR");
  std::string pattern = std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/tenantwal-migrate-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return Status::IOError("mkdtemp " + pattern);
  std::string work = buf.data();
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{work};
  so.work_dir = work;
  std::string out = f.output.empty() ? work + "/" + db + ".db" : f.output;
  TW_RETURN_IF_ERROR(lt::RestoreSource(src.get(), so, out, &res->src).Prefix(from_url));
  std::map<std::string, std::string> meta = {
      {"tenantwal-migrated-from", lt::MetadataValue(from_url)},
      {"tenantwal-source-format", res->src.format},
      {"tenantwal-source-position", lt::MetadataValue(res->src.position)},
  };
  Status s = lt::UploadDatabaseSnapshot(dst, tenant, db, out, res->src.time_ms * 1000, parent,
                                        meta, &res->up);
  if (!s.ok()) {
    if (!f.output.empty()) ::unlink(out.c_str());
    return s;
  }
  res->seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return Status::OK();
}

std::string Describe(const std::string& from, const std::string& tenant, const std::string& db,
                     const OneResult& r) {
  std::ostringstream o;
  o << "migrated " << from << " (" << r.src.format << ", " << r.src.position << ") to " << tenant
    << "/" << db << ": generation " << r.up.generation << ", " << r.up.pages << " pages of "
    << r.up.page_size << " bytes (" << r.up.db_bytes << " bytes), integrity_check ok, snapshot "
    << r.up.key << " (" << r.up.snapshot_bytes << " bytes), " << r.src.objects_read
    << " objects (" << r.src.bytes_read << " bytes) read";
  return o.str();
}

std::string Json(const std::string& from, const std::string& tenant, const std::string& db,
                 const OneResult& r) {
  std::ostringstream o;
  char secs[32];
  std::snprintf(secs, sizeof(secs), "%.3f", r.seconds);
  o << "{\"from\":" << JsonString(from) << ",\"tenant\":" << JsonString(tenant)
    << ",\"db\":" << JsonString(db) << ",\"format\":" << JsonString(r.src.format)
    << ",\"sourcePosition\":" << JsonString(r.src.position) << ",\"sourceTxid\":" << r.src.txid
    << ",\"generation\":" << JsonString(r.up.generation) << ",\"txid\":0"
    << ",\"key\":" << JsonString(r.up.key) << ",\"pages\":" << r.up.pages
    << ",\"pageSize\":" << r.up.page_size << ",\"bytes\":" << r.up.db_bytes
    << ",\"snapshotBytes\":" << r.up.snapshot_bytes << ",\"objectsRead\":" << r.src.objects_read
    << ",\"bytesRead\":" << r.src.bytes_read << ",\"integrityCheck\":\"ok\",\"seconds\":" << secs
    << "}";
  return o.str();
}

// Tenant map: JSON {"name": "tenant/db"} or {"name": {"tenant": T, "db": D}},
// or CSV lines "name,tenant,db" / "name,tenant/db" ('#' comments, an optional
// header line starting with "name,").
Status LoadTenantMap(const std::string& path,
                     std::map<std::string, std::pair<std::string, std::string>>* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Status::IOError("cannot read --tenant-map " + path);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto add = [&](const std::string& name, std::string tenant, std::string db) -> Status {
    if (db.empty()) {
      size_t slash = tenant.find('/');
      if (slash == std::string::npos)
        return Status::InvalidArgument("--tenant-map: '" + name + "' maps to '" + tenant +
                                       "', expected tenant/db");
      db = tenant.substr(slash + 1);
      tenant = tenant.substr(0, slash);
    }
    if (name.empty() || name.find('/') != std::string::npos)
      return Status::InvalidArgument("--tenant-map: invalid source name '" + name + "'");
    if (!ValidName(tenant) || !ValidName(db))
      return Status::InvalidArgument("--tenant-map: '" + name + "' maps to invalid names '" +
                                     tenant + "/" + db + "'");
    if (!out->emplace(name, std::make_pair(tenant, db)).second)
      return Status::InvalidArgument("--tenant-map: '" + name + "' appears twice");
    return Status::OK();
  };
  size_t first = text.find_first_not_of(" \t\r\n");
  if (first != std::string::npos && text[first] == '{') {
    simdjson::dom::parser parser;
    simdjson::dom::element doc;
    if (parser.parse(text).get(doc) != simdjson::SUCCESS)
      return Status::InvalidArgument("--tenant-map " + path + ": invalid JSON");
    simdjson::dom::object obj;
    if (doc.get_object().get(obj) != simdjson::SUCCESS)
      return Status::InvalidArgument("--tenant-map " + path + ": expected a JSON object");
    for (auto field : obj) {
      std::string name(field.key);
      std::string_view sv;
      simdjson::dom::object o;
      if (field.value.get_string().get(sv) == simdjson::SUCCESS) {
        TW_RETURN_IF_ERROR(add(name, std::string(sv), ""));
      } else if (field.value.get_object().get(o) == simdjson::SUCCESS) {
        std::string_view t, d;
        if (o["tenant"].get_string().get(t) != simdjson::SUCCESS ||
            o["db"].get_string().get(d) != simdjson::SUCCESS)
          return Status::InvalidArgument("--tenant-map: '" + name +
                                         "' needs string fields tenant and db");
        TW_RETURN_IF_ERROR(add(name, std::string(t), std::string(d)));
      } else {
        return Status::InvalidArgument("--tenant-map: '" + name +
                                       "' must map to \"tenant/db\" or {tenant, db}");
      }
    }
    return Status::OK();
  }
  std::istringstream lines(text);
  std::string line;
  int lineno = 0;
  while (std::getline(lines, line)) {
    ++lineno;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    size_t a = line.find_first_not_of(" \t");
    if (a == std::string::npos || line[a] == '#') continue;
    std::vector<std::string> cols;
    std::string cell;
    std::istringstream ls(line);
    while (std::getline(ls, cell, ',')) {
      size_t b = cell.find_first_not_of(" \t"), e = cell.find_last_not_of(" \t");
      cols.push_back(b == std::string::npos ? "" : cell.substr(b, e - b + 1));
    }
    if (lineno == 1 && !cols.empty() && cols[0] == "name") continue;  // header
    if (cols.size() == 2) TW_RETURN_IF_ERROR(add(cols[0], cols[1], ""));
    else if (cols.size() == 3) TW_RETURN_IF_ERROR(add(cols[0], cols[1], cols[2]));
    else
      return Status::InvalidArgument("--tenant-map " + path + " line " + std::to_string(lineno) +
                                     ": expected name,tenant,db or name,tenant/db");
  }
  return Status::OK();
}

int RunAll(const MigrateFlags& f, ObjectStore* dst) {
  const char* cmd = "migrate";
  if (f.tenant_map.empty()) return Fail(cmd, Status::InvalidArgument("--all needs --tenant-map"));
  if (!f.tenant.empty() || !f.db.empty() || !f.output.empty())
    return Fail(cmd, Status::InvalidArgument("--all takes names from --tenant-map, not "
                                             "--tenant/--db/--output"));
  std::map<std::string, std::pair<std::string, std::string>> map;
  Status s = LoadTenantMap(f.tenant_map, &map);
  if (!s.ok()) return Fail(cmd, s);
  std::string root = TrimSlash(f.from);
  ReplicaFlags sf = f.replica;
  sf.url = root;
  std::unique_ptr<ObjectStore> src;
  s = OpenReplica(sf, &src);
  if (!s.ok()) return Fail(cmd, s);
  // Every NAME below the root: the first segment of each key (one listing;
  // a replica's keys all start with NAME/ltx/ or NAME/generations/).
  std::vector<ObjectInfo> objs;
  s = src->List("", &objs);
  if (!s.ok()) return Fail(cmd, s.Prefix("list " + root));
  std::set<std::string> names;
  for (const auto& o : objs) {
    size_t slash = o.key.find('/');
    if (slash != std::string::npos && slash > 0) names.insert(o.key.substr(0, slash));
  }
  int migrated = 0, skipped = 0, failed = 0;
  std::vector<std::string> unmapped;
  for (const auto& n : names)
    if (!map.count(n)) unmapped.push_back(n);
  for (const auto& [name, td] : map) {
    const auto& [tenant, db] = td;
    std::string from = root + "/" + name;
    if (!names.count(name)) {
      ++failed;
      Fail(cmd, Status::NotFound(name + ": no such database under " + root));
      continue;
    }
    OneResult r;
    bool was_skipped = false;
    s = MigrateOne(f, from, tenant, db, dst, true, &was_skipped, &r);
    if (!s.ok()) {
      ++failed;
      Fail(cmd, s.Prefix(name + " -> " + tenant + "/" + db));
      continue;
    }
    for (const auto& w : r.src.warnings) Warn(cmd, name + ": " + w);
    if (was_skipped) {
      ++skipped;
      if (f.json)
        std::cout << "{\"from\":" << JsonString(from) << ",\"tenant\":" << JsonString(tenant)
                  << ",\"db\":" << JsonString(db) << ",\"skipped\":\"already migrated\"}"
                  << std::endl;
      else
        std::cout << "skipped " << name << " -> " << tenant << "/" << db
                  << ": already migrated (the destination holds a replica)" << std::endl;
      continue;
    }
    ++migrated;
    std::cout << (f.json ? Json(from, tenant, db, r) : Describe(from, tenant, db, r))
              << std::endl;
  }
  for (const auto& n : unmapped) Warn(cmd, n + ": not in --tenant-map, not migrated");
  std::cout << "migrate: " << migrated << " migrated, " << skipped
            << " skipped (already migrated), " << failed << " failed, " << unmapped.size()
            << " not in the tenant map" << std::endl;
  return failed ? 1 : 0;
}

int RunMigrate(const MigrateFlags& f) {
  const char* cmd = "migrate";
  if (f.format != "auto" && f.format != "ltx" && f.format != "v0.3" && f.format != "v3")
    return Fail(cmd, Status::InvalidArgument("--format must be auto, ltx or v0.3"));
  if (f.txid != 0 && !f.timestamp.empty())
    return Fail(cmd, Status::InvalidArgument("give --txid or --timestamp, not both"));
  std::unique_ptr<ObjectStore> dst;
  Status s = OpenReplica(f.replica, &dst);
  if (!s.ok()) return Fail(cmd, s);
  if (f.all) return RunAll(f, dst.get());
  s = CheckName("--tenant", f.tenant);
  if (s.ok()) s = CheckName("--db", f.db);
  if (!s.ok()) return Fail(cmd, s);
  if (!f.tenant_map.empty())
    return Fail(cmd, Status::InvalidArgument("--tenant-map goes with --all"));
  OneResult r;
  bool skipped = false;
  std::string from = TrimSlash(f.from);
  s = MigrateOne(f, from, f.tenant, f.db, dst.get(), false, &skipped, &r);
  for (const auto& w : r.src.warnings) Warn(cmd, w);
  if (!s.ok()) return Fail(cmd, s);
  std::cout << (f.json ? Json(from, f.tenant, f.db, r) : Describe(from, f.tenant, f.db, r))
            << std::endl;
  return 0;
}

}  // namespace

Command RegisterMigrate(CLI::App* app) {
  auto f = std::make_shared<MigrateFlags>();
  CLI::App* cmd = app->add_subcommand(
      "migrate",
      "Migrate databases from a Litestream replica (LTX files of Litestream 0.5+, or the v0.3 "
      "generations/ layout): rebuild the latest state (or --timestamp/--txid), verify it "
      "(checksums, PRAGMA integrity_check) and upload it as the first snapshot (txid 0) of a "
      "new generation under tenants/T/D/.");
  AddReplicaFlags(cmd, &f->replica);
  cmd->add_option("--from", f->from,
                  "Litestream replica: s3://bucket/path/NAME or file:///dir/NAME (with --all: "
                  "the parent holding one replica per NAME)")
      ->required();
  cmd->add_option("--tenant", f->tenant, "Destination tenant");
  cmd->add_option("--db", f->db, "Destination database name");
  cmd->add_flag("--all", f->all, "Migrate every NAME below --from that --tenant-map maps");
  cmd->add_option("--tenant-map", f->tenant_map,
                  "With --all: CSV (name,tenant,db) or JSON ({\"name\": \"tenant/db\"}) file");
  cmd->add_option("--timestamp", f->timestamp,
                  "LTX sources: migrate the state as of this time (RFC 3339, e.g. "
                  "2024-01-02T03:04:05Z)");
  cmd->add_option("--txid", f->txid, "LTX sources: migrate the state after this LTX txid");
  cmd->add_option("--generation", f->generation,
                  "v0.3 sources: the generation to migrate (needed when there are several)");
  cmd->add_option("--format", f->format, "Source layout: auto, ltx or v0.3")
      ->capture_default_str();
  cmd->add_flag("--force", f->force,
                "Add a new generation even if the destination already holds the database");
  cmd->add_option("-o,--output", f->output,
                  "Also keep the migrated database at this path (must not exist)");
  cmd->add_flag("--json", f->json, "Print one JSON object per database");
  return Command{cmd, [f] { return RunMigrate(*f); }};
}

}  // namespace cli
}  // namespace tw
