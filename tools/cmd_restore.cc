// tenantwal restore: rebuild one database from a replica (engine:
// lib/store/restore.h), verified end to end, into a new file.
//
//   tenantwal restore --replica URL --tenant T --db D -o OUT.db
//                     [--force] [--txid N] [--generation G] [--json]
//
// Output: one summary line, or one JSON object with --json, on stdout;
// warnings and errors on stderr. Exit 0 only when the restored database has
// passed every checksum and PRAGMA integrity_check and is in place.
#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include "cmd.h"
#include "store/restore.h"

namespace tw {
namespace cli {

namespace {

struct RestoreFlags {
  ReplicaFlags replica;
  std::string tenant, db, output, generation;
  bool force = false;
  bool json = false;
  uint64_t txid = 0;
  CLI::Option* txid_opt = nullptr;
};

int RunRestore(const RestoreFlags& f) {
  const char* cmd = "restore";
  Status s = CheckName("--tenant", f.tenant);
  if (s.ok()) s = CheckName("--db", f.db);
  if (!s.ok()) return Fail(cmd, s);
  std::unique_ptr<ObjectStore> store;
  s = OpenReplica(f.replica, &store);
  if (!s.ok()) return Fail(cmd, s);

  RestoreOptions o;
  o.tenant = f.tenant;
  o.db = f.db;
  o.output_path = f.output;
  o.overwrite = f.force;
  o.generation = f.generation;
  if (f.txid_opt->count() > 0) o.target_txid = f.txid;
  RestoreResult r;
  auto start = std::chrono::steady_clock::now();
  s = Restore(store.get(), o, &r);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  for (const auto& w : r.warnings) Warn(cmd, w);
  if (!s.ok()) return Fail(cmd, s);

  std::ostringstream out;
  char secbuf[32];
  std::snprintf(secbuf, sizeof(secbuf), "%.3f", secs);
  if (f.json) {
    out << "{\"tenant\":" << JsonString(f.tenant) << ",\"db\":" << JsonString(f.db)
        << ",\"output\":" << JsonString(f.output) << ",\"generation\":" << JsonString(r.generation)
        << ",\"txid\":" << r.txid << ",\"commitTime\":" << JsonString(Rfc3339(r.commit_us))
        << ",\"commitUs\":" << r.commit_us << ",\"snapshotTxid\":" << r.snapshot_txid
        << ",\"segments\":" << r.segments << ",\"pages\":" << r.pages
        << ",\"pageSize\":" << r.page_size << ",\"objects\":" << r.objects_read
        << ",\"bytes\":" << r.bytes_read << ",\"seconds\":" << secbuf << ",\"warnings\":[";
    for (size_t i = 0; i < r.warnings.size(); i++)
      out << (i ? "," : "") << JsonString(r.warnings[i]);
    out << "]}";
  } else {
    out << "restored " << f.tenant << "/" << f.db << " to " << f.output
        << ": generation " << r.generation << ", txid " << r.txid << ", committed "
        << Rfc3339(r.commit_us) << ", " << r.pages << " pages of " << r.page_size
        << " bytes, " << r.objects_read << " objects, " << r.bytes_read << " bytes read, "
        << secbuf << " s";
  }
  std::cout << out.str() << std::endl;
  return 0;
}

}  // namespace

Command RegisterRestore(CLI::App* app) {
  auto f = std::make_shared<RestoreFlags>();
  CLI::App* cmd = app->add_subcommand(
      "restore",
      "Restore a database from a replica into a new SQLite file (verified: checksums of every "
      "object and transaction, then PRAGMA integrity_check). The result uses a rollback "
      "journal (not WAL).");
  AddReplicaFlags(cmd, &f->replica);
  cmd->add_option("--tenant", f->tenant, "Tenant name")->required();
  cmd->add_option("--db", f->db, "Database name")->required();
  cmd->add_option("-o,--output", f->output, "Database file to create")->required();
  cmd->add_flag("--force", f->force, "Replace the output file if it exists");
  f->txid_opt = cmd->add_option("--txid", f->txid,
                                "Restore the state after this transaction (default: latest)");
  cmd->add_option("--generation", f->generation,
                  "Restore from this generation (16 hex digits; default: newest usable)");
  cmd->add_flag("--json", f->json, "Print the result as JSON");
  return Command{cmd, [f] { return RunRestore(*f); }};
}

}  // namespace cli
}  // namespace tw
