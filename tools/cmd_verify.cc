// tenantwal verify: check a replica, or compare it with the live database.
//
//   tenantwal verify --replica URL --tenant T --db D [--json] [--parallelism N]
//       Every generation, every object (not only a restore path): each
//       snapshot decoded and its DbChecksum checked; each generation rebuilt
//       from its oldest snapshot through every segment, so every object CRC,
//       every transaction's checksum_after and every chain link
//       (checksum_before = the previous checksum_after) is checked; segments
//       off the chain are decoded and compared with it where they overlap;
//       later snapshots must equal the chain at their txid; gaps and
//       generations without a snapshot are problems.
//
//   tenantwal verify ... --against LIVE.db [--wait SECONDS]
//       Restores the replica's latest state to a temporary file (every
//       checksum verified) and compares it with LIVE, opened read-only in one
//       read transaction (the default SQLite VFS; no writes, no checkpoint):
//       LIVE's page images (sqlite3_serialize) give its DbChecksum, which is
//       looked up among the checksums after every replicated transaction, so
//       the comparison is at the same txid; the logical content hashes
//       (schema + every table's rows) must match too. If LIVE equals no
//       replicated state it is ahead of the replica (commits not yet
//       replicated) or diverged: verify retries for --wait seconds, then
//       reports what it can (per-table row counts and hashes) and fails. LIVE
//       equal to an earlier replicated txid (the replica is ahead) passes,
//       and says so.
//
// Output: one line per problem, "PROBLEM <object>: <message>", then a
// summary line (or one JSON object with --json). Exit 0 only when everything
// holds; 1 otherwise.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <thread>

#include "cmd.h"
#include "store/restore.h"

namespace tw {
namespace cli {

namespace {

struct VerifyFlags {
  ReplicaFlags replica;
  std::string tenant, db, against;
  bool json = false;
  int parallelism = 8;
  double wait_s = 0;
};

std::string Hex(uint64_t v) {
  char b[24];
  std::snprintf(b, sizeof(b), "%016llx", static_cast<unsigned long long>(v));
  return b;
}

int RunReplicaCheck(const VerifyFlags& f, ObjectStore* store) {
  const char* cmd = "verify";
  VerifyOptions o;
  o.tenant = f.tenant;
  o.db = f.db;
  o.parallelism = f.parallelism;
  VerifyReport rep;
  auto start = std::chrono::steady_clock::now();
  Status s = VerifyReplica(store, o, &rep);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) return Fail(cmd, s);
  char secbuf[32];
  std::snprintf(secbuf, sizeof(secbuf), "%.3f", secs);
  std::ostringstream out;
  if (f.json) {
    out << "{\"tenant\":" << JsonString(f.tenant) << ",\"db\":" << JsonString(f.db)
        << ",\"ok\":" << (rep.ok() ? "true" : "false") << ",\"generations\":" << rep.generations
        << ",\"snapshots\":" << rep.snapshots << ",\"segments\":" << rep.segments
        << ",\"transactions\":" << rep.txns << ",\"bytes\":" << rep.bytes
        << ",\"ignoredKeys\":" << rep.ignored_keys << ",\"seconds\":" << secbuf
        << ",\"problems\":[";
    for (size_t i = 0; i < rep.problems.size(); i++)
      out << (i ? "," : "") << "{\"object\":" << JsonString(rep.problems[i].object)
          << ",\"message\":" << JsonString(rep.problems[i].message) << "}";
    out << "],\"notes\":[";
    for (size_t i = 0; i < rep.notes.size(); i++) out << (i ? "," : "") << JsonString(rep.notes[i]);
    out << "]}";
  } else {
    for (const auto& n : rep.notes) out << "  " << n << "\n";
    for (const auto& p : rep.problems)
      out << "PROBLEM " << (p.object.empty() ? f.tenant + "/" + f.db : p.object) << ": "
          << p.message << "\n";
    out << "verify " << f.tenant << "/" << f.db << ": " << rep.generations << " generation(s), "
        << rep.snapshots << " snapshot(s), " << rep.segments << " segment(s), " << rep.txns
        << " transaction(s) checked, " << rep.bytes << " bytes read, " << secbuf << " s: "
        << (rep.ok() ? "OK" : "FAILED (" + std::to_string(rep.problems.size()) + " problem(s))");
  }
  std::cout << out.str() << std::endl;
  if (rep.ignored_keys > 0)
    Warn(cmd, std::to_string(rep.ignored_keys) +
                  " key(s) under the database's prefix are not snapshots or segments");
  return rep.ok() ? 0 : 1;
}

int RunAgainst(const VerifyFlags& f, ObjectStore* store) {
  const char* cmd = "verify";
  VerifyOptions o;
  o.tenant = f.tenant;
  o.db = f.db;
  o.parallelism = f.parallelism;
  LiveComparison c;
  auto deadline = std::chrono::steady_clock::now() +
                  std::chrono::milliseconds(static_cast<int64_t>(f.wait_s * 1000));
  int attempts = 0;
  while (true) {
    attempts++;
    Status s = CompareWithLive(store, o, f.against, &c);
    if (!s.ok()) {
      std::cout << "PROBLEM " << f.tenant << "/" << f.db << ": " << s.ToString() << std::endl;
      return Fail(cmd, s);
    }
    if (c.state != LiveComparison::kNoMatch) break;
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
  bool content_ok = c.state != LiveComparison::kEqual || c.live_content == c.replica_content;
  bool ok = c.state != LiveComparison::kNoMatch && content_ok;
  std::string verdict;
  switch (c.state) {
    case LiveComparison::kEqual:
      verdict = content_ok ? "equal at txid " + std::to_string(c.matched_txid) +
                                 " (page images and content)"
                           : "page images equal at txid " + std::to_string(c.matched_txid) +
                                 " but logical contents differ";
      break;
    case LiveComparison::kLiveBehind:
      verdict = "LIVE equals the replica's state at txid " + std::to_string(c.matched_txid) +
                "; the replica is ahead (latest txid " + std::to_string(c.replica_txid) + ")";
      break;
    case LiveComparison::kNoMatch:
      verdict = "LIVE matches no replicated state: it is ahead of the replica (latest txid " +
                std::to_string(c.replica_txid) +
                ", commits not yet replicated) or has diverged; compared what can be compared "
                "(tables below)";
      break;
  }
  std::ostringstream out;
  if (f.json) {
    const char* state = c.state == LiveComparison::kEqual        ? "equal"
                        : c.state == LiveComparison::kLiveBehind ? "live-behind"
                                                                 : "no-match";
    out << "{\"tenant\":" << JsonString(f.tenant) << ",\"db\":" << JsonString(f.db)
        << ",\"against\":" << JsonString(f.against) << ",\"ok\":" << (ok ? "true" : "false")
        << ",\"state\":\"" << state << "\",\"generation\":" << JsonString(c.generation)
        << ",\"replicaTxid\":" << c.replica_txid << ",\"matchedTxid\":" << c.matched_txid
        << ",\"liveChecksum\":\"" << Hex(c.live_checksum) << "\",\"replicaChecksum\":\""
        << Hex(c.replica_checksum) << "\",\"liveContent\":\"" << Hex(c.live_content)
        << "\",\"replicaContent\":\"" << Hex(c.replica_content) << "\",\"livePages\":"
        << c.live_pages << ",\"replicaPages\":" << c.replica_pages
        << ",\"attempts\":" << attempts << ",\"verdict\":" << JsonString(verdict)
        << ",\"tableDiffs\":[";
    for (size_t i = 0; i < c.table_diffs.size(); i++)
      out << (i ? "," : "") << JsonString(c.table_diffs[i]);
    out << "]}";
  } else {
    out << "  LIVE " << f.against << ": " << c.live_pages << " pages, DbChecksum "
        << Hex(c.live_checksum) << ", content " << Hex(c.live_content) << "\n";
    out << "  replica latest: generation " << c.generation << " txid " << c.replica_txid << ", "
        << c.replica_pages << " pages, DbChecksum " << Hex(c.replica_checksum) << ", content "
        << Hex(c.replica_content) << "\n";
    for (const auto& d : c.table_diffs) out << "PROBLEM table " << d << "\n";
    if (!ok) out << "PROBLEM " << f.tenant << "/" << f.db << ": " << verdict << "\n";
    out << "verify " << f.tenant << "/" << f.db << " against " << f.against << ": " << verdict
        << ": " << (ok ? "OK" : "FAILED");
  }
  std::cout << out.str() << std::endl;
  return ok ? 0 : 1;
}

int RunVerify(const VerifyFlags& f) {
  const char* cmd = "verify";
  Status s = CheckName("--tenant", f.tenant);
  if (s.ok()) s = CheckName("--db", f.db);
  if (!s.ok()) return Fail(cmd, s);
  if (f.parallelism < 1 || f.parallelism > 64)
    return Fail(cmd, Status::InvalidArgument("--parallelism must be 1..64"));
  if (f.wait_s < 0) return Fail(cmd, Status::InvalidArgument("--wait must be >= 0"));
  if (!f.against.empty() && ::access(f.against.c_str(), R_OK) != 0)
    return Fail(cmd, Status::InvalidArgument("--against " + f.against + ": cannot be read"));
  std::unique_ptr<ObjectStore> store;
  s = OpenReplica(f.replica, &store);
  if (!s.ok()) return Fail(cmd, s);
  if (!f.against.empty()) return RunAgainst(f, store.get());
  return RunReplicaCheck(f, store.get());
}

}  // namespace

Command RegisterVerify(CLI::App* app) {
  auto f = std::make_shared<VerifyFlags>();
  CLI::App* cmd = app->add_subcommand(
      "verify",
      "Check every checksum and chain link of every generation of a database's replica, or "
      "(--against) compare the replica with the live database at the same txid");
  AddReplicaFlags(cmd, &f->replica);
  cmd->add_option("--tenant", f->tenant, "Tenant name")->required();
  cmd->add_option("--db", f->db, "Database name")->required();
  cmd->add_option("--against", f->against,
                  "The live database file: compare it with the replica's latest state");
  cmd->add_option("--wait", f->wait_s,
                  "With --against: keep retrying for this many seconds while LIVE is ahead of "
                  "the replica (default 0)");
  cmd->add_option("--parallelism", f->parallelism, "Concurrent downloads (1-64, default 8)");
  cmd->add_flag("--json", f->json, "Print the result as JSON");
  return Command{cmd, [f] { return RunVerify(*f); }};
}

}  // namespace cli
}  // namespace tw
