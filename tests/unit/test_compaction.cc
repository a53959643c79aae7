// Compaction, coarse restore points and retention (replicator/compaction.h)
// over recorded histories (the builder of test_restore_pitr.cc: a real
// SQLite database driven through thousands of transactions, with the commit
// time and a hash of the whole file recorded for every txid, published as
// snapshots and segments into a file:// store).
//
//  * A recorded history of 2,000 transactions over several snapshots and a
//    generation change is compacted (L1/L2, exact inside the window, coarse
//    restore points beyond it; some merge sources left in place as after a
//    crash between PUT and DELETE). Restores at 30 random instants and 30
//    random txids (seeded; the seed is printed) must give the recorded hash:
//    of the target exactly, or in a coarse range of the point the restore
//    reports, which must be the latest restore point at or before the target.
//  * Retention and compaction deleting objects (no grace) while restores
//    run: every restore succeeds with the recorded hash or fails cleanly,
//    leaving no output and no temporary file.
//  * 20,000 small transactions: restore time and objects read before and
//    after compaction, and the documented bound on objects read.
#define TW_PITR_HELPERS_ONLY
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#include "test_restore_pitr.cc"
#pragma GCC diagnostic pop

#include <sys/stat.h>

#include <atomic>
#include <thread>

#include "replicator/compaction.h"

using twd::CompactionStep;
using twd::IndexedDb;
using twd::IndexedObject;
using twd::MaintenanceOptions;

namespace {

int64_t Floor(int64_t a, int64_t b) {
  int64_t q = a / b;
  if (a % b != 0 && a < 0) --q;
  return q;
}

struct CompactionRun {
  size_t steps = 0, sources = 0, coarse = 0;
};

// Runs compaction passes over the whole replica until nothing is left to do.
// Sources are deleted at once, except (with keep_first_sources) those of the
// first step, as if tenantwald had crashed between the PUT and the DELETEs.
CompactionRun Compact(ObjectStore* store, const std::string& spool, int64_t now,
                      const MaintenanceOptions& o, bool keep_first_sources) {
  CompactionRun run;
  for (int pass = 0; pass < 6; pass++) {
    IndexedDb idx;
    Status s = twd::LoadIndex(store, kTenant, kDb, nullptr, &idx);
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    size_t did = 0;
    for (auto& [gen, g] : idx) {
      std::set<uint64_t> snaps;
      for (const auto& x : g.snapshots) snaps.insert(x.max_txid);
      std::vector<size_t> superseded;
      std::vector<CompactionStep> steps = twd::PlanCompaction(g.segments, snaps, now, o, &superseded);
      for (const auto& st : steps) {
        std::vector<IndexedObject> srcs;
        for (size_t i : st.sources) srcs.push_back(g.segments[i]);
        uint32_t before = 0;
        for (const auto& x : g.segments)
          if (x.max_txid == srcs.front().min_txid - 1) before = x.db_pages;
        for (const auto& x : g.snapshots)
          if (x.max_txid == srcs.front().min_txid - 1) before = x.db_pages;
        IndexedObject merged;
        s = twd::MergeSegments(store, spool, kTenant, kDb, gen, srcs, st.level, st.points,
                               o.l1_span_us, before, 3, o.point_max_bytes, &merged);
        REQUIRE_MESSAGE(s.ok(), s.ToString());
        CHECK(merged.points == (st.points || false) );
        run.steps++;
        run.sources += srcs.size();
        run.coarse += merged.points;
        did++;
        bool keep = keep_first_sources && run.steps == 1;
        for (const auto& x : srcs)
          if (x.key != merged.key && !keep) REQUIRE(store->Delete(x.key).ok());
      }
    }
    if (did == 0) break;
  }
  return run;
}

// The latest coarse restore point at or before txid n can be no earlier than
// the last transaction of the previous L1 span (or the snapshot it starts from).
uint64_t LowestPoint(const Recorded& rec, uint64_t n, int64_t span, uint64_t floor_txid) {
  int64_t b = Floor(rec.commit_us[n], span);
  uint64_t x = n;
  while (x > floor_txid && Floor(rec.commit_us[x], span) == b) x--;
  return x;
}

uint64_t SnapshotAtOrBefore(const Recorded& rec, uint64_t n) {
  uint64_t best = 0;
  for (const auto& g : rec.gens)
    for (uint64_t s : g.snapshots)
      if (s <= n && s > best) best = s;
  return best;
}

}  // namespace

TEST_CASE("compaction: recorded history, restores at 30 instants and 30 txids") {
  // Two generations; snapshots at 1, 600 (A) and 1200, 1700 (B).
  Fixture fx(2000, {{kGenA, "", {1, 600}, 1200}, {kGenB, kGenA, {1200, 1700}, 2000}}, 8);
  const Recorded& rec = fx.rec;
  MaintenanceOptions o;
  o.l1_span_us = 1000000;   // 1 s
  o.l2_span_us = 5000000;   // 5 s
  o.settle_us = 0;
  const int64_t now = rec.commit_us[2000] + 2000000;
  o.exact_window_us = now - rec.commit_us[1400];  // txids before ~1400: coarse
  // Before compaction.
  RestoreOptions lo = fx.Opts("latest.db");
  RestoreResult before, after;
  auto t0 = std::chrono::steady_clock::now();
  REQUIRE(Restore(fx.store.get(), lo, &before).ok());
  double s_before = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CompactionRun run = Compact(fx.file.get(), fx.work / "", now, o, true);
  MESSAGE("compaction: " << run.steps << " merges of " << run.sources << " objects, "
                         << run.coarse << " coarse");
  CHECK(run.steps > 0);
  CHECK(run.coarse > 0);
  t0 = std::chrono::steady_clock::now();
  fx.store->Clear();
  REQUIRE(Restore(fx.store.get(), lo, &after).ok());
  double s_after = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  CHECK(after.txid == 2000);
  CHECK(Hash(ReadFile(lo.output_path)) == rec.hash[2000]);
  MESSAGE("2,000-txn history, restore latest: before compaction " << before.objects_read
          << " objects " << s_before << " s; after " << after.objects_read << " objects "
          << s_after << " s");
  CHECK(after.objects_read < before.objects_read);
  // Bound: the snapshot, one L2 object per L2 span since it (+1 for the
  // spans cut at the snapshot), nothing else once every span is closed.
  int64_t snap_us = rec.commit_us[1700];
  uint64_t bound = 1 + uint64_t((rec.commit_us[2000] - snap_us) / o.l2_span_us) + 2;
  CHECK(after.objects_read <= bound);

  std::mt19937_64 rng(fx.seed);
  const int64_t first = rec.commit_us[1], last = rec.commit_us[2000];
  std::vector<std::pair<bool, int64_t>> targets;  // (time?, value)
  for (int i = 0; i < 30; i++)
    targets.push_back({true, first + int64_t(rng() % uint64_t(last - first + 1000000))});
  for (int i = 0; i < 30; i++) targets.push_back({false, int64_t(1 + rng() % 2000)});
  // Inside a snapshot's window, and inside coarse / exact compacted ranges.
  targets.push_back({true, rec.commit_us[600] + 1});
  targets.push_back({true, rec.commit_us[1700]});
  targets.push_back({false, 300});
  targets.push_back({false, 1650});
  targets.push_back({true, rec.commit_us[900] + 3});
  int coarse = 0, exact = 0;
  for (size_t i = 0; i < targets.size(); i++) {
    const bool is_time = targets[i].first;  // not a structured binding: clang 14 cannot
    const auto v = targets[i].second;       // capture one in the doctest macros' lambdas
    RestoreOptions ro = fx.Opts("t" + std::to_string(i) + ".db");
    uint64_t want;
    if (is_time) {
      ro.has_target_time = true;
      ro.target_time_us = v;
      want = rec.TxidAt(v);
    } else {
      ro.target_txid = uint64_t(v);
      want = uint64_t(v);
    }
    // The plan (--dry-run) says which point it will use.
    RestorePlan plan;
    Status ps = PlanRestore(fx.store.get(), ro, &plan);
    REQUIRE_MESSAGE(ps.ok(), ps.ToString());
    REQUIRE(ResolveRestorePoint(fx.store.get(), ro, &plan).ok());
    RestoreResult r;
    Status s = Restore(fx.store.get(), ro, &r);
    REQUIRE_MESSAGE(s.ok(), (is_time ? "time " : "txid ") << v << ": " << s.ToString());
    INFO(std::string(is_time ? "time " : "txid ") << v << " want txid " << want << " got "
                                                  << r.txid << std::string(r.coarse ? " (coarse)" : ""));
    CHECK(Hash(ReadFile(ro.output_path)) == rec.hash[r.txid]);
    CHECK(r.commit_us == rec.commit_us[r.txid]);
    if (plan.coarse) CHECK(plan.txid_max == r.txid);
    if (!r.coarse) {
      exact++;
      CHECK(r.txid == want);
    } else {
      coarse++;
      CHECK(r.txid <= want);
      CHECK(r.txid >= LowestPoint(rec, want, o.l1_span_us, SnapshotAtOrBefore(rec, want)));
      CHECK(want < 1400);  // coarse only beyond the exact window
    }
    ::unlink(ro.output_path.c_str());
  }
  MESSAGE(targets.size() << " restores: " << exact << " exact, " << coarse << " at coarse points");
  CHECK(coarse > 0);
  CHECK(exact > 0);
}

TEST_CASE("compaction: retention and compaction delete while restores run") {
  Fixture fx(1500, {{kGenA, "", {1, 500, 1000}, 1500}}, 6);
  const Recorded& rec = fx.rec;
  std::atomic<bool> done{false};
  std::atomic<int> ok{0}, failed{0}, bad{0};
  std::vector<std::string> errors;
  std::mutex emu;
  std::thread restorer([&] {
    std::mt19937_64 rng(fx.seed + 1);
    for (int i = 0; i < 40 || !done; i++) {
      RestoreOptions ro = fx.Opts("r" + std::to_string(i) + ".db");
      ro.overwrite = false;
      uint64_t kind = rng() % 3;
      if (kind == 1) ro.target_txid = 1 + rng() % 1500;
      if (kind == 2) {
        ro.has_target_time = true;
        ro.target_time_us = rec.commit_us[1 + rng() % 1500];
      }
      RestoreResult r;
      Status s = Restore(fx.file.get(), ro, &r);
      if (s.ok()) {
        ok++;
        if (Hash(ReadFile(ro.output_path)) != rec.hash[r.txid]) bad++;
        ::unlink(ro.output_path.c_str());
      } else {
        failed++;
        struct stat st;
        if (::lstat(ro.output_path.c_str(), &st) == 0) bad++;  // never a partial output
        std::lock_guard<std::mutex> l(emu);
        if (errors.size() < 5) errors.push_back(s.ToString());
      }
      if (i > 400) break;
    }
  });
  // Compaction (sources deleted at once) and retention moving through the
  // history, deleting with no grace at all.
  MaintenanceOptions o;
  o.l1_span_us = 1000000;
  o.l2_span_us = 4000000;
  o.settle_us = 0;
  const int64_t end = rec.commit_us[1500] + 1000000;
  o.exact_window_us = end - rec.commit_us[800];
  Compact(fx.file.get(), fx.work / "", end, o, false);
  size_t deleted = 0;
  for (uint64_t cut : {400, 700, 1100}) {
    IndexedDb idx;
    REQUIRE(twd::LoadIndex(fx.file.get(), kTenant, kDb, nullptr, &idx).ok());
    const int64_t retention = 1000000;
    for (const auto& k : twd::PlanRetention(idx, rec.commit_us[cut] + retention, retention)) {
      REQUIRE(fx.file->Delete(k).ok());
      deleted++;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(150));
  }
  done = true;
  restorer.join();
  MESSAGE("retention deleted " << deleted << " objects; restores: " << ok.load() << " ok, "
                               << failed.load() << " failed cleanly");
  for (const auto& e : errors) MESSAGE("  e.g. " << e);
  CHECK(deleted > 0);
  CHECK(ok > 0);
  CHECK(bad == 0);
  // No temporary files left next to the outputs.
  size_t leftovers = 0;
  for (const auto& e : fs::directory_iterator(fx.out.path)) {
    (void)e;
    leftovers++;
  }
  CHECK(leftovers == 0);
  // After retention: the snapshot at 1000 and everything after it remain;
  // the latest state and a restore at the cutoff still work.
  IndexedDb idx;
  REQUIRE(twd::LoadIndex(fx.file.get(), kTenant, kDb, nullptr, &idx).ok());
  REQUIRE(idx.count(kGenA));
  CHECK(idx[kGenA].snapshots.size() == 1);
  CHECK(idx[kGenA].snapshots[0].max_txid == 1000);
  RestoreOptions ro = fx.Opts("final.db");
  ro.has_target_time = true;
  ro.target_time_us = rec.commit_us[1100];
  RestoreResult r;
  Status s = Restore(fx.file.get(), ro, &r);
  REQUIRE_MESSAGE(s.ok(), s.ToString());
  CHECK(Hash(ReadFile(ro.output_path)) == rec.hash[r.txid]);
  // Before the retained window: a clear error naming the earliest point.
  ro.target_time_us = rec.commit_us[200];
  ro.output_path = fx.out / "early.db";
  s = Restore(fx.file.get(), ro, &r);
  CHECK(s.IsNotFound());
  CHECK(s.ToString().find("earliest") != std::string::npos);
}

TEST_CASE("compaction: 20,000 transactions, objects read before and after") {
  auto t0 = std::chrono::steady_clock::now();
  Fixture fx(20000, {{kGenA, "", {1, 10000}, 20000}}, 40);
  double build = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const Recorded& rec = fx.rec;
  MaintenanceOptions o;  // exact window 24 h: every restore point stays exact
  o.l1_span_us = 5000000;    // 5 s
  o.l2_span_us = 30000000;   // 30 s
  o.settle_us = 1000000;
  // "Now" a little after the last commit: the last spans are still open.
  const int64_t now = rec.commit_us[20000] + 3000000;
  auto restore = [&](const char* what, uint64_t txid, RestoreResult* r) {
    RestoreOptions ro = fx.Opts("big.db");
    ro.target_txid = txid;
    auto t1 = std::chrono::steady_clock::now();
    Status s = Restore(fx.store.get(), ro, r);
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
    REQUIRE_MESSAGE(s.ok(), s.ToString());
    CHECK(r->txid == txid);
    CHECK(Hash(ReadFile(ro.output_path)) == rec.hash[txid]);
    MESSAGE("20k transactions (built in " << build << " s), restore txid " << txid << " "
                                          << std::string(what) << ": " << secs << " s, " << r->objects_read
                                          << " objects, " << r->bytes_read << " bytes");
  };
  RestoreResult b1, b2, a1, a2;
  restore("before compaction", 20000, &b1);
  restore("before compaction", 9999, &b2);
  CompactionRun run = Compact(fx.file.get(), fx.work / "", now, o, false);
  MESSAGE("compaction: " << run.steps << " merges of " << run.sources << " objects");
  restore("after compaction", 20000, &a1);
  restore("after compaction", 9999, &a2);
  CHECK(a1.objects_read < b1.objects_read);
  CHECK(a2.objects_read < b2.objects_read);
  // The documented bound (docs/FORMAT.md, "Compaction"): the snapshot, one
  // object per closed L2 span since it, one per closed L1 span of the open L2
  // span, the level-0 segments of the open L1 span, +2 for spans cut at the
  // snapshot and the settle delay.
  auto bound = [&](uint64_t snap, uint64_t txid) {
    int64_t from = rec.commit_us[snap], to = rec.commit_us[txid];
    uint64_t l2 = uint64_t(Floor(to, o.l2_span_us) - Floor(from, o.l2_span_us)) + 1;
    uint64_t l1 = uint64_t(o.l2_span_us / o.l1_span_us);
    uint64_t l0 = 0;
    for (uint64_t x = txid; x > snap && rec.commit_us[x] >= Floor(now - o.settle_us, o.l1_span_us) * o.l1_span_us - o.l1_span_us; x--) l0++;
    return 1 + l2 + l1 + l0 + 2;
  };
  CHECK(a1.objects_read <= bound(10000, 20000));
  CHECK(a2.objects_read <= bound(1, 9999));
}
