// tenantwal restore: rebuild one database from a replica (engine:
// lib/store/restore.h), verified end to end, into a new file.
//
//   tenantwal restore --replica URL --tenant T --db D -o OUT.db
//                     [--txid N [--generation G] | --timestamp RFC3339]
//                     [--partial] [--parallelism N] [--dry-run] [--force] [--json]
//
// Targets: latest (default); --txid N, the state after transaction N;
// --timestamp, the state after the last transaction committed at or before
// that instant, by the commit times recorded in the segments (never the
// store's LastModified). --generation restricts either to one generation.
// --dry-run prints the plan (objects, bytes) and downloads nothing but the
// few object headers a --timestamp plan needs.
//
// Output: one summary line, or one JSON object with --json, on stdout;
// warnings and errors on stderr; a progress bar on stderr when it is a
// terminal. Exit 0 only when the restored database has passed every
// checksum and PRAGMA integrity_check and is in place (with --partial: up to
// the last good txid, said in a warning and "partial": true).
#include <time.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <sstream>

#include <limits.h>
#include <signal.h>
#include <stdlib.h>

#include <cerrno>
#include <cstring>

#include "cmd.h"
#include "store/restore.h"
#include "walring/ring.h"

namespace tw {
namespace cli {

namespace {

struct RestoreFlags {
  ReplicaFlags replica;
  std::string tenant, db, output, generation, timestamp;
  bool force = false;
  bool json = false;
  bool dry_run = false;
  bool partial = false;
  int parallelism = 8;
  uint64_t txid = 0;
  CLI::Option* txid_opt = nullptr;
};

int Digits(const std::string& s, size_t pos, size_t n, bool* ok) {
  int v = 0;
  for (size_t i = pos; i < pos + n; i++) {
    if (i >= s.size() || s[i] < '0' || s[i] > '9') {
      *ok = false;
      return 0;
    }
    v = v * 10 + (s[i] - '0');
  }
  return v;
}

// RFC 3339 date-time ("2024-01-02T03:04:05Z", "...05.123456+02:00"; 'T' or
// ' ' between date and time; fractions beyond microseconds are truncated)
// to Unix microseconds.
Status ParseRfc3339(const std::string& s, int64_t* us) {
  auto bad = [&] {
    return Status::InvalidArgument("--timestamp '" + s +
                                   "' is not an RFC 3339 time such as 2024-01-02T03:04:05Z or "
                                   "2024-01-02T05:04:05.250+02:00");
  };
  bool ok = true;
  if (s.size() < 20) return bad();
  int year = Digits(s, 0, 4, &ok), mon = Digits(s, 5, 2, &ok), day = Digits(s, 8, 2, &ok);
  int hh = Digits(s, 11, 2, &ok), mm = Digits(s, 14, 2, &ok), ss = Digits(s, 17, 2, &ok);
  if (!ok || s[4] != '-' || s[7] != '-' || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      s[13] != ':' || s[16] != ':')
    return bad();
  if (mon < 1 || mon > 12 || day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) return bad();
  size_t p = 19;
  int64_t frac = 0;
  if (p < s.size() && s[p] == '.') {
    p++;
    int n = 0;
    while (p < s.size() && s[p] >= '0' && s[p] <= '9') {
      if (n < 6) frac = frac * 10 + (s[p] - '0');
      n++;
      p++;
    }
    if (n == 0) return bad();
    for (int i = n; i < 6; i++) frac *= 10;
  }
  int64_t offset_s = 0;
  if (p < s.size() && (s[p] == 'Z' || s[p] == 'z')) {
    p++;
  } else if (p < s.size() && (s[p] == '+' || s[p] == '-')) {
    int sign = s[p] == '-' ? -1 : 1;
    int oh = Digits(s, p + 1, 2, &ok), om = Digits(s, p + 4, 2, &ok);
    if (!ok || p + 6 > s.size() || s[p + 3] != ':' || oh > 23 || om > 59) return bad();
    offset_s = sign * (oh * 3600 + om * 60);
    p += 6;
  } else {
    return bad();
  }
  if (p != s.size()) return bad();
  struct tm tm = {};
  tm.tm_year = year - 1900;
  tm.tm_mon = mon - 1;
  tm.tm_mday = day;
  tm.tm_hour = hh;
  tm.tm_min = mm;
  tm.tm_sec = ss == 60 ? 59 : ss;
  time_t t = timegm(&tm);
  if (tm.tm_mday != day) return bad();  // e.g. February 30
  *us = (static_cast<int64_t>(t) - offset_s) * 1000000 + frac;
  return Status::OK();
}

// "\r[#####.....] 3/10 objects, 1.2/4.0 MB, txid 42" on a terminal.
class ProgressBar {
 public:
  explicit ProgressBar(bool on) : on_(on) {}
  ~ProgressBar() { Done(); }
  void Update(const RestoreProgress& p) {
    if (!on_) return;
    const int width = 30;
    double frac = p.bytes_total ? static_cast<double>(p.bytes_done) / p.bytes_total : 1.0;
    int fill = static_cast<int>(frac * width + 0.5);
    char buf[200];
    std::snprintf(buf, sizeof(buf), "\r[%s%s] %llu/%llu objects, %.1f/%.1f MB, txid %llu ",
                  std::string(fill, '#').c_str(), std::string(width - fill, '.').c_str(),
                  static_cast<unsigned long long>(p.objects_done),
                  static_cast<unsigned long long>(p.objects_total), p.bytes_done / 1e6,
                  p.bytes_total / 1e6, static_cast<unsigned long long>(p.txid));
    std::cerr << buf << std::flush;
    drawn_ = true;
  }
  void Done() {
    if (drawn_) std::cerr << "\r\033[K" << std::flush;
    drawn_ = false;
  }

 private:
  bool on_;
  bool drawn_ = false;
};

std::string TargetText(const RestoreOptions& o) {
  if (o.has_target_time) return "time " + Rfc3339(o.target_time_us);
  if (o.target_txid == kRestoreLatest) return "latest";
  return "txid " + std::to_string(o.target_txid);
}

int PrintPlan(const RestoreFlags& f, const RestoreOptions& o, const RestorePlan& p) {
  std::ostringstream out;
  uint64_t objects = 1 + p.segments.size();
  if (f.json) {
    out << "{\"dryRun\":true,\"tenant\":" << JsonString(f.tenant) << ",\"db\":" << JsonString(f.db)
        << ",\"target\":" << JsonString(TargetText(o)) << ",\"generation\":"
        << JsonString(p.generation) << ",\"txidMin\":" << p.txid_min
        << ",\"txidMax\":" << p.txid_max << ",\"exact\":" << (p.txid_min == p.txid_max ? "true" : "false")
        << ",\"partial\":" << (p.partial ? "true" : "false")
        << ",\"coarse\":" << (p.coarse ? "true" : "false");
    if (p.coarse)
      out << ",\"point\":{\"txid\":" << p.txid_max << ",\"commitUs\":" << p.point_commit_us
          << ",\"commitTime\":" << JsonString(Rfc3339(p.point_commit_us)) << "}";
    out << ",\"snapshot\":{\"key\":"
        << JsonString(p.snapshot.key) << ",\"txid\":" << p.snapshot.min_txid
        << ",\"size\":" << p.snapshot.size << "},\"segments\":[";
    for (size_t i = 0; i < p.segments.size(); i++)
      out << (i ? "," : "") << "{\"key\":" << JsonString(p.segments[i].key)
          << ",\"minTxid\":" << p.segments[i].min_txid << ",\"maxTxid\":" << p.segments[i].max_txid
          << ",\"size\":" << p.segments[i].size << "}";
    out << "],\"objects\":" << objects << ",\"bytes\":" << p.bytes
        << ",\"headerReads\":" << p.headers_read.size() << ",\"warnings\":[";
    for (size_t i = 0; i < p.warnings.size(); i++)
      out << (i ? "," : "") << JsonString(p.warnings[i]);
    out << "]}";
  } else {
    out << "plan: restore " << f.tenant << "/" << f.db << " (" << TargetText(o)
        << ") from generation " << p.generation << " to ";
    if (p.txid_min == p.txid_max)
      out << "txid " << p.txid_max;
    else
      out << "a txid in " << p.txid_min << ".." << p.txid_max
          << " (decided by the commit times inside the last segment)";
    out << (p.partial ? " (partial)" : "");
    if (p.coarse)
      out << " (a coarse restore point of a compacted range, committed "
          << Rfc3339(p.point_commit_us) << ")";
    out << "\n";
    out << "  snapshot " << p.snapshot.key << "  " << p.snapshot.size << " bytes (txid "
        << p.snapshot.min_txid << ")\n";
    for (const auto& s : p.segments)
      out << "  segment  " << s.key << "  " << s.size << " bytes (txids " << s.min_txid << "-"
          << s.max_txid << ")\n";
    out << "  " << objects << " objects, " << p.bytes << " bytes to download";
    if (!p.headers_read.empty())
      out << " (planning read " << p.headers_read.size() << " object headers)";
  }
  std::cout << out.str() << std::endl;
  return 0;
}

// Restoring over a database that tenantwald replicates from this host
// (issue 12, situation 1) would leave the replica's history continuing from
// a state the file no longer has. The ring (TENANTWAL_RING, default
// "tenantwal") lists every database opened through the VFS: if `output`
// is one of them (same real path), not deleted, and a tenantwald consumes
// the ring, refuse with the safe procedure. No ring, or no match: OK.
Status CheckNotLive(const std::string& output) {
  char real_out[PATH_MAX];
  if (::realpath(output.c_str(), real_out) == nullptr) return Status::OK();  // a new file
  const char* env = ::getenv("TENANTWAL_RING");
  const std::string name = env && *env ? env : "tenantwal";
  std::unique_ptr<ring::Ring> r;
  if (!ring::Ring::Open(name, ring::Options{}, false, &r).ok()) return Status::OK();
  const int32_t pid = r->header()->consumer_pid.load();
  const bool consumer = pid > 0 && (::kill(pid, 0) == 0 || errno == EPERM);
  if (!consumer) return Status::OK();
  for (uint32_t i = 0; i < r->slot_count(); ++i) {
    ring::Slot* s = r->slot(i);
    if (!s->used.load(std::memory_order_acquire)) continue;
    const auto st = ring::DbState(s->state.load());
    if (st == ring::DbState::kDeleted || st == ring::DbState::kNotReplicated) continue;
    char real_slot[PATH_MAX];
    std::string path(s->path, strnlen(s->path, sizeof s->path));
    if (::realpath(path.c_str(), real_slot) == nullptr || std::string(real_slot) != real_out) {
      continue;
    }
    std::string t(s->tenant, strnlen(s->tenant, sizeof s->tenant));
    std::string d(s->db, strnlen(s->db, sizeof s->db));
    return Status::InvalidArgument(
        "refusing to restore over " + output + ": it is the live database " + t + "/" + d +
        " that tenantwald (pid " + std::to_string(pid) + ", ring " + name +
        ") replicates; its replica would continue from a state the file no longer has. To roll "
        "it back: stop the application, stop replicating it (DELETE /api/databases/" + t + "/" +
        d + "), restore to a new file, move that file over the database, then register it again "
        "(POST /api/databases with {\"tenantId\":\"" + t + "\",\"databaseName\":\"" + d +
        "\"}): a new generation starts from the restored state (docs/OPERATIONS.md)");
  }
  return Status::OK();
}

int RunRestore(const RestoreFlags& f) {
  const char* cmd = "restore";
  Status s = CheckName("--tenant", f.tenant);
  if (s.ok()) s = CheckName("--db", f.db);
  if (!s.ok()) return Fail(cmd, s);
  if (!f.dry_run && f.output.empty())
    return Fail(cmd, Status::InvalidArgument("-o/--output is required (or use --dry-run)"));
  if (f.parallelism < 1 || f.parallelism > 64)
    return Fail(cmd, Status::InvalidArgument("--parallelism must be 1..64"));

  RestoreOptions o;
  o.tenant = f.tenant;
  o.db = f.db;
  o.output_path = f.output;
  o.overwrite = f.force;
  o.generation = f.generation;
  o.partial = f.partial;
  o.parallelism = f.parallelism;
  if (f.txid_opt->count() > 0) o.target_txid = f.txid;
  if (!f.timestamp.empty()) {
    s = ParseRfc3339(f.timestamp, &o.target_time_us);
    if (!s.ok()) return Fail(cmd, s);
    o.has_target_time = true;
  }
  if (!f.dry_run && f.force) {
    s = CheckNotLive(f.output);
    if (!s.ok()) return Fail(cmd, s);
  }
  std::unique_ptr<ObjectStore> store;
  s = OpenReplica(f.replica, &store);
  if (!s.ok()) return Fail(cmd, s);

  if (f.dry_run) {
    RestorePlan plan;
    s = PlanRestore(store.get(), o, &plan);
    if (s.ok() && o.target_txid != kRestoreLatest) s = ResolveRestorePoint(store.get(), o, &plan);
    else if (s.ok() && o.has_target_time) s = ResolveRestorePoint(store.get(), o, &plan);
    for (const auto& w : plan.warnings) Warn(cmd, w);
    if (!s.ok()) return Fail(cmd, s);
    return PrintPlan(f, o, plan);
  }

  ProgressBar bar(::isatty(2) == 1);
  o.progress = [&bar](const RestoreProgress& p) { bar.Update(p); };
  RestoreResult r;
  auto start = std::chrono::steady_clock::now();
  s = Restore(store.get(), o, &r);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  bar.Done();
  for (const auto& w : r.warnings) Warn(cmd, w);
  if (!s.ok()) return Fail(cmd, s);

  std::ostringstream out;
  char secbuf[32];
  std::snprintf(secbuf, sizeof(secbuf), "%.3f", secs);
  if (f.json) {
    out << "{\"tenant\":" << JsonString(f.tenant) << ",\"db\":" << JsonString(f.db)
        << ",\"output\":" << JsonString(f.output) << ",\"target\":" << JsonString(TargetText(o))
        << ",\"generation\":" << JsonString(r.generation) << ",\"txid\":" << r.txid
        << ",\"commitTime\":" << JsonString(Rfc3339(r.commit_us))
        << ",\"commitUs\":" << r.commit_us << ",\"snapshotTxid\":" << r.snapshot_txid
        << ",\"segments\":" << r.segments << ",\"pages\":" << r.pages
        << ",\"pageSize\":" << r.page_size << ",\"objects\":" << r.objects_read
        << ",\"bytes\":" << r.bytes_read << ",\"headerReads\":" << r.header_reads
        << ",\"partial\":" << (r.partial ? "true" : "false")
        << ",\"failedObject\":" << JsonString(r.failed_object) << ",\"seconds\":" << secbuf
        << ",\"coarse\":" << (r.coarse ? "true" : "false")
        << ",\"point\":{\"txid\":" << r.txid << ",\"commitUs\":" << r.commit_us
        << ",\"level\":" << r.point_level << ",\"exact\":" << (r.coarse ? "false" : "true")
        << "},\"replans\":" << r.replans
        << ",\"warnings\":[";
    for (size_t i = 0; i < r.warnings.size(); i++)
      out << (i ? "," : "") << JsonString(r.warnings[i]);
    out << "]}";
  } else {
    out << "restored " << f.tenant << "/" << f.db << " to " << f.output
        << ": generation " << r.generation << ", txid " << r.txid << ", committed "
        << Rfc3339(r.commit_us) << ", " << r.pages << " pages of " << r.page_size
        << " bytes, " << r.objects_read << " objects, " << r.bytes_read << " bytes read, "
        << secbuf << " s" << (r.partial ? " (PARTIAL: see the warning above)" : "")
        << (r.coarse ? " (COARSE: the latest restore point of a compacted range at or before "
                       "the target)" : "");
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
  cmd->add_option("-o,--output", f->output, "Database file to create (not with --dry-run)");
  cmd->add_flag("--force", f->force, "Replace the output file if it exists");
  f->txid_opt = cmd->add_option("--txid", f->txid,
                                "Restore the state after this transaction (default: latest)");
  CLI::Option* ts = cmd->add_option(
      "--timestamp", f->timestamp,
      "Restore the state after the last transaction committed at or before this RFC 3339 "
      "time (commit times recorded in the segments), e.g. 2024-01-02T03:04:05Z");
  ts->excludes(f->txid_opt);
  cmd->add_option("--generation", f->generation,
                  "Restore from this generation only (16 hex digits; default: chosen by the "
                  "target)");
  cmd->add_flag("--partial", f->partial,
                "On a gap, a missing or a damaged object, restore up to the last good txid "
                "instead of failing");
  cmd->add_option("--parallelism", f->parallelism, "Concurrent downloads (1-64, default 8)");
  cmd->add_flag("--dry-run", f->dry_run,
                "Print the plan (objects and bytes to download) without restoring");
  cmd->add_flag("--json", f->json, "Print the result as JSON");
  return Command{cmd, [f] { return RunRestore(*f); }};
}

}  // namespace cli
}  // namespace tw
