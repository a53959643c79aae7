// tenantwal import: snapshot a plain SQLite database file into a replica,
// for users coming from file copies.
//
//   tenantwal import --tenant T --db D FILE.db --replica URL [--force] [--json]
//
// Takes a consistent copy with SQLite's online backup API (so a database in
// WAL mode, or one being written, is copied as of one transaction), checks it
// with PRAGMA integrity_check and uploads it as the snapshot at txid 0 of a
// new generation under tenants/T/D/ (design: lib/store/litestream.h,
// UploadDatabaseSnapshot). A destination already holding T/D is refused
// unless --force (which adds a new generation whose parent is the newest).
#include <stdlib.h>
#include <unistd.h>

#include <filesystem>
#include <iostream>
#include <sstream>

#include "cmd.h"
#include "store/litestream.h"
#include "store/restore.h"

namespace tw {
namespace cli {

namespace {

namespace lt = tw::litestream;

struct ImportFlags {
  ReplicaFlags replica;
  std::string tenant, db, file;
  bool force = false, json = false;
};

int RunImport(const ImportFlags& f) {
  const char* cmd = "import";
  Status s = CheckName("--tenant", f.tenant);
  if (s.ok()) s = CheckName("--db", f.db);
  if (!s.ok()) return Fail(cmd, s);
  std::unique_ptr<ObjectStore> dst;
  s = OpenReplica(f.replica, &dst);
  if (!s.ok()) return Fail(cmd, s);
  CatalogDatabase cat;
  s = ListDatabase(dst.get(), f.tenant, f.db, &cat);
  if (!s.ok()) return Fail(cmd, s.Prefix("list destination"));
  std::string parent;
  if (!cat.generations.empty()) {
    if (!f.force)
      return Fail(cmd, Status::InvalidArgument(
                           dst->url() + " already holds " + f.tenant + "/" + f.db + " (" +
                           std::to_string(cat.generations.size()) +
                           " generations); --force adds the file as a new generation"));
    parent = cat.generations.back().id;
  }
  const char* tmpdir = getenv("TMPDIR");
  std::string pattern =
      std::string(tmpdir && *tmpdir ? tmpdir : "/tmp") + "/tenantwal-import-XXXXXX";
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  if (!mkdtemp(buf.data())) return Fail(cmd, Status::IOError("mkdtemp " + pattern));
  std::string work = buf.data();
  struct Cleanup {
    std::string dir;
    ~Cleanup() {
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{work};
  std::string copy = work + "/copy.db";
  uint32_t pages = 0, page_size = 0;
  s = lt::CopyDatabase(f.file, copy, &pages, &page_size);
  if (!s.ok()) return Fail(cmd, s);
  lt::SnapshotUpload up;
  s = lt::UploadDatabaseSnapshot(dst.get(), f.tenant, f.db, copy, 0, parent,
                                 {{"tenantwal-imported-from", lt::MetadataValue(f.file)}}, &up);
  if (!s.ok()) return Fail(cmd, s);
  std::ostringstream o;
  if (f.json) {
    o << "{\"file\":" << JsonString(f.file) << ",\"tenant\":" << JsonString(f.tenant)
      << ",\"db\":" << JsonString(f.db) << ",\"generation\":" << JsonString(up.generation)
      << ",\"txid\":0,\"key\":" << JsonString(up.key) << ",\"pages\":" << up.pages
      << ",\"pageSize\":" << up.page_size << ",\"bytes\":" << up.db_bytes
      << ",\"snapshotBytes\":" << up.snapshot_bytes << ",\"integrityCheck\":\"ok\"}";
  } else {
    o << "imported " << f.file << " to " << f.tenant << "/" << f.db << ": generation "
      << up.generation << ", " << up.pages << " pages of " << up.page_size << " bytes ("
      << up.db_bytes << " bytes), integrity_check ok, snapshot " << up.key << " ("
      << up.snapshot_bytes << " bytes)";
  }
  std::cout << o.str() << std::endl;
  return 0;
}

}  // namespace

Command RegisterImport(CLI::App* app) {
  auto f = std::make_shared<ImportFlags>();
  CLI::App* cmd = app->add_subcommand(
      "import",
      "Snapshot a plain SQLite database file into a replica as the first snapshot (txid 0) "
      "of a new generation of tenants/T/D/ (consistent copy via SQLite's backup API, "
      "verified with PRAGMA integrity_check).");
  AddReplicaFlags(cmd, &f->replica);
  cmd->add_option("--tenant", f->tenant, "Tenant name")->required();
  cmd->add_option("--db", f->db, "Database name")->required();
  cmd->add_option("file", f->file, "The SQLite database file to import")->required();
  cmd->add_flag("--force", f->force,
                "Add a new generation even if the replica already holds the database");
  cmd->add_flag("--json", f->json, "Print the result as JSON");
  return Command{cmd, [f] { return RunImport(*f); }};
}

}  // namespace cli
}  // namespace tw
