// bench/commit_rate: one-row INSERT transactions against distinct databases,
// through a chosen VFS, by W writer threads in P processes. Built by bench/run
// (g++ directly; the top-level meson.build has no subdir('bench')).
//
//   commit_rate --dir DIR --vfs tenantwal|unix [--ext PATH] [--sync NORMAL|FULL]
//               [--procs P] [--threads T] [--dbs-per-writer K] [--seconds S]
//               [--rate R] [--lag] [--poll-ms M] [--wait-probe HZ] [--tenant T]
//               [--prefix NAME] [--setup-only] [--no-setup-wait] [--layout ND]
//
// Databases: DIR/{prefix}{i}.db, i = 0 .. P*T*K-1 (writer w owns w*K .. w*K+K-1
// and round-robins over them); with --layout ND, db i is
// DIR/t{i/ND:05}/d{i%ND:03}.db (DIR is the root: many tenants). --setup-only
// creates/opens each database once and closes it. The extension (--ext) is loaded in every
// configuration, so `--vfs unix` measures the stock VFS in the same process
// image. --rate R paces each database at R commits/s (0 = as fast as possible).
//
// --lag (tenantwal only): each process records the commit time of every
// transaction (txid = the database's local_txid after setup + n: one writer
// per database) and polls `tenantwal_status` every --poll-ms; a commit's lag
// is the time until replicated_txid >= its txid. It also samples the lag_ms
// column. --wait-probe HZ: one extra thread per process commits on its own
// database HZ times a second and times `SELECT tenantwal_wait(10000)`.
//
// Output: one JSON object on stdout (aggregated over processes).
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace {

struct Args {
  std::string dir, vfs = "tenantwal", ext, sync = "NORMAL", tenant, prefix = "w";
  int procs = 1, threads = 1, dbs_per_writer = 1;
  double seconds = 5, rate = 0, wait_hz = 0;
  bool lag = false, setup_only = false, setup_wait = true;
  int poll_ms = 5;
  int layout_nd = 0;  // --layout ND: db i is DIR/t%05d(i/ND)/d%03d(i%ND).db
};

int64_t NowUs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000;
}

void SleepUntil(int64_t us) {
  int64_t d = us - NowUs();
  if (d <= 0) return;
  timespec ts{time_t(d / 1000000), long(d % 1000000) * 1000};
  nanosleep(&ts, nullptr);
}

[[noreturn]] void Die(const std::string& m) {
  fprintf(stderr, "commit_rate: %s\n", m.c_str());
  exit(1);
}

void Exec(sqlite3* db, const char* sql) {
  char* err = nullptr;
  if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
    std::string m = std::string(sql) + ": " + (err ? err : "?");
    sqlite3_free(err);
    Die(m);
  }
}

int64_t QueryInt(sqlite3* db, const std::string& sql) {
  sqlite3_stmt* st = nullptr;
  if (sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
    Die(sql + ": " + sqlite3_errmsg(db));
  int64_t v = -1;
  int rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  else if (rc != SQLITE_DONE) Die(sql + ": " + sqlite3_errmsg(db));
  sqlite3_finalize(st);
  return v;
}

void LoadExtension(const std::string& ext) {
  if (ext.empty()) return;
  sqlite3* db = nullptr;
  char* err = nullptr;
  sqlite3_open(":memory:", &db);
  sqlite3_enable_load_extension(db, 1);
  if (sqlite3_load_extension(db, ext.c_str(), nullptr, &err) != SQLITE_OK)
    Die("cannot load " + ext + ": " + (err ? err : "?"));
  sqlite3_close(db);
}

struct DbState {
  std::string tenant, name, path;
  sqlite3* db = nullptr;
  sqlite3_stmt* ins = nullptr;
  int64_t base_txid = 0;
  std::mutex mu;
  std::deque<std::pair<int64_t, int64_t>> inflight;  // (txid, commit time us)
  int64_t next_txid = 0;
};

void Name(const Args& a, DbState* d, int i, const std::string& plain) {
  if (a.layout_nd > 0) {
    char t[32], n[32];
    snprintf(t, sizeof t, "t%05d", i / a.layout_nd);
    snprintf(n, sizeof n, "d%03d", i % a.layout_nd);
    d->tenant = t;
    d->name = n;
    d->path = a.dir + "/" + t + "/" + n + ".db";
  } else {
    d->tenant = a.tenant;
    d->name = plain;
    d->path = a.dir + "/" + plain + ".db";
  }
}

sqlite3* Open(const Args& a, const std::string& path) {
  std::string uri = "file:" + path + "?vfs=" + a.vfs;
  sqlite3* db = nullptr;
  if (sqlite3_open_v2(uri.c_str(), &db,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI,
                      nullptr) != SQLITE_OK)
    Die(uri + ": " + sqlite3_errmsg(db));
  sqlite3_busy_timeout(db, 10000);
  Exec(db, "PRAGMA journal_mode=WAL");
  Exec(db, ("PRAGMA synchronous=" + a.sync).c_str());
  return db;
}

void Setup(const Args& a, DbState* d) {
  if (a.layout_nd > 0) {
    std::string dir = d->path.substr(0, d->path.rfind('/'));
    mkdir(dir.c_str(), 0755);
  }
  d->db = Open(a, d->path);
  Exec(d->db, "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)");
  if (sqlite3_prepare_v2(d->db, "INSERT INTO t(v) VALUES(zeroblob(100))", -1, &d->ins,
                         nullptr) != SQLITE_OK)
    Die(sqlite3_errmsg(d->db));
  if (a.vfs == "tenantwal" && (a.lag || a.wait_hz > 0)) {
    // First sight: wait for the initial snapshot, so lags measure steady state.
    Exec(d->db, "INSERT INTO t(v) VALUES(1)");
    if (a.setup_wait) QueryInt(d->db, "SELECT tenantwal_wait(120000)");
    d->base_txid = QueryInt(d->db, "SELECT local_txid FROM tenantwal_status WHERE tenant='" +
                                       d->tenant + "' AND db='" + d->name + "'");
    d->next_txid = d->base_txid + 1;
  }
}

void Commit(DbState* d) {
  int rc = sqlite3_step(d->ins);
  if (rc != SQLITE_DONE) Die(d->name + ": insert: " + sqlite3_errmsg(d->db));
  sqlite3_reset(d->ins);
}

std::string Pct(std::vector<int64_t> v) {
  if (v.empty()) return "null";
  std::sort(v.begin(), v.end());
  auto at = [&](double q) { return double(v[std::min(v.size() - 1, size_t(q * v.size()))]) / 1000; };
  char b[256];
  snprintf(b, sizeof b, "{\"n\":%zu,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f}",
           v.size(), at(0.5), at(0.9), at(0.99), double(v.back()) / 1000);
  return b;
}

// One process: runs its writers, writes raw results to `out` as lines:
//   C commits elapsed_us | L lag_us | W wait_us | S lag_ms_column
void RunProcess(const Args& a, int proc, FILE* out) {
  LoadExtension(a.ext);
  const int writers = a.threads;
  const int k = a.dbs_per_writer;
  std::vector<std::unique_ptr<DbState>> dbs;
  for (int w = 0; w < writers; ++w)
    for (int j = 0; j < k; ++j) {
      auto d = std::make_unique<DbState>();
      int i = (proc * writers + w) * k + j;
      Name(a, d.get(), i, a.prefix + std::to_string(i));
      dbs.push_back(std::move(d));
    }
  if (a.setup_only) {
    // Create (or open once) and close: no connection is kept.
    for (auto& d : dbs) {
      Setup(a, d.get());
      if (a.vfs == "unix") Commit(d.get());
      sqlite3_finalize(d->ins);
      sqlite3_close(d->db);
    }
    fprintf(out, "C 0 0\n");
    return;
  }
  for (auto& d : dbs) Setup(a, d.get());
  std::unique_ptr<DbState> probe;
  if (a.wait_hz > 0) {
    probe = std::make_unique<DbState>();
    Name(a, probe.get(), 0, a.prefix + "probe" + std::to_string(proc));
    if (a.layout_nd > 0) {
      probe->tenant = "tprobe";
      probe->name = "p" + std::to_string(proc);
      probe->path = a.dir + "/tprobe/" + probe->name + ".db";
    }
    Setup(a, probe.get());
  }
  std::atomic<bool> stop{false};
  std::atomic<int64_t> commits{0};
  std::vector<int64_t> lags, lagms, waits;
  std::mutex lag_mu;
  const int64_t t0 = NowUs();
  const int64_t t_end = t0 + int64_t(a.seconds * 1e6);
  std::vector<std::thread> th;
  for (int w = 0; w < writers; ++w) {
    th.emplace_back([&, w] {
      int64_t n = 0, next = NowUs();
      const double per_writer = a.rate * k;
      while (NowUs() < t_end) {
        DbState* d = dbs[size_t(w * k + (n % k))].get();
        if (per_writer > 0) {
          next += int64_t(1e6 / per_writer);
          SleepUntil(next);
        }
        Commit(d);
        if (a.lag) {
          int64_t now = NowUs();
          std::lock_guard<std::mutex> g(d->mu);
          d->inflight.emplace_back(d->next_txid++, now);
        }
        ++n;
      }
      commits += n;
    });
  }
  if (probe) {
    th.emplace_back([&] {
      int64_t next = NowUs();
      std::vector<int64_t> mine;
      while (NowUs() < t_end) {
        next += int64_t(1e6 / a.wait_hz);
        SleepUntil(next);
        Commit(probe.get());
        int64_t s = NowUs();
        QueryInt(probe->db, "SELECT tenantwal_wait(10000)");
        mine.push_back(NowUs() - s);
      }
      std::lock_guard<std::mutex> g(lag_mu);
      waits = std::move(mine);
    });
  }
  std::thread poller;
  if (a.lag) {
    poller = std::thread([&] {
      sqlite3* q = nullptr;
      sqlite3_open(":memory:", &q);
      sqlite3_stmt* st = nullptr;
      std::string sql = "SELECT tenant || '/' || db, replicated_txid, lag_ms FROM tenantwal_status";
      if (a.layout_nd == 0) sql += " WHERE tenant='" + a.tenant + "'";
      if (sqlite3_prepare_v2(q, sql.c_str(), -1, &st, nullptr) != SQLITE_OK)
        Die(std::string("status: ") + sqlite3_errmsg(q));
      std::map<std::string, DbState*> by;
      for (auto& d : dbs) by[d->tenant + "/" + d->name] = d.get();
      std::vector<int64_t> my_lags, my_lagms;
      const int64_t drain_end = t_end + 30000000;
      while (true) {
        int64_t now = NowUs();
        bool pending = false;
        while (sqlite3_step(st) == SQLITE_ROW) {
          const char* name = reinterpret_cast<const char*>(sqlite3_column_text(st, 0));
          auto it = by.find(name ? name : "");
          if (it == by.end()) continue;
          int64_t rep = sqlite3_column_int64(st, 1);
          if (now < t_end) my_lagms.push_back(sqlite3_column_int64(st, 2) * 1000);
          DbState* d = it->second;
          std::lock_guard<std::mutex> g(d->mu);
          while (!d->inflight.empty() && d->inflight.front().first <= rep) {
            my_lags.push_back(now - d->inflight.front().second);
            d->inflight.pop_front();
          }
        }
        sqlite3_reset(st);
        if (stop) {
          for (auto& d : dbs) {
            std::lock_guard<std::mutex> g(d->mu);
            if (!d->inflight.empty()) pending = true;
          }
          if (!pending || now > drain_end) break;
        }
        usleep(a.poll_ms * 1000);
      }
      sqlite3_finalize(st);
      sqlite3_close(q);
      std::lock_guard<std::mutex> g(lag_mu);
      lags = std::move(my_lags);
      lagms = std::move(my_lagms);
      for (auto& d : dbs)
        if (!d->inflight.empty())
          fprintf(stderr, "commit_rate: %s: %zu commits never became durable\n",
                  d->name.c_str(), d->inflight.size());
    });
  }
  for (auto& t : th) t.join();
  const int64_t elapsed = NowUs() - t0;
  stop = true;
  if (poller.joinable()) poller.join();
  fprintf(out, "C %lld %lld\n", (long long)commits.load(), (long long)elapsed);
  for (auto v : lags) fprintf(out, "L %lld\n", (long long)v);
  for (auto v : lagms) fprintf(out, "S %lld\n", (long long)v);
  for (auto v : waits) fprintf(out, "W %lld\n", (long long)v);
  for (auto& d : dbs) {
    sqlite3_finalize(d->ins);
    sqlite3_close(d->db);
  }
  if (probe) {
    sqlite3_finalize(probe->ins);
    sqlite3_close(probe->db);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string f = argv[i];
    auto val = [&]() -> std::string {
      if (i + 1 >= argc) Die(f + " needs a value");
      return argv[++i];
    };
    if (f == "--dir") a.dir = val();
    else if (f == "--vfs") a.vfs = val();
    else if (f == "--ext") a.ext = val();
    else if (f == "--sync") a.sync = val();
    else if (f == "--procs") a.procs = std::stoi(val());
    else if (f == "--threads") a.threads = std::stoi(val());
    else if (f == "--dbs-per-writer") a.dbs_per_writer = std::stoi(val());
    else if (f == "--seconds") a.seconds = std::stod(val());
    else if (f == "--rate") a.rate = std::stod(val());
    else if (f == "--lag") a.lag = true;
    else if (f == "--poll-ms") a.poll_ms = std::stoi(val());
    else if (f == "--wait-probe") a.wait_hz = std::stod(val());
    else if (f == "--tenant") a.tenant = val();
    else if (f == "--prefix") a.prefix = val();
    else if (f == "--setup-only") a.setup_only = true;
    else if (f == "--no-setup-wait") a.setup_wait = false;
    else if (f == "--layout") a.layout_nd = std::stoi(val());
    else Die("unknown flag " + f);
  }
  if (a.dir.empty()) Die("--dir is required");
  if (a.tenant.empty()) a.tenant = a.dir.substr(a.dir.rfind('/') + 1);
  std::vector<std::pair<pid_t, FILE*>> kids;
  for (int p = 0; p < a.procs; ++p) {
    int fds[2];
    if (pipe(fds) != 0) Die("pipe");
    pid_t pid = fork();
    if (pid < 0) Die("fork");
    if (pid == 0) {
      close(fds[0]);
      FILE* out = fdopen(fds[1], "w");
      RunProcess(a, p, out);
      fclose(out);
      _exit(0);
    }
    close(fds[1]);
    kids.emplace_back(pid, fdopen(fds[0], "r"));
  }
  int64_t commits = 0, max_elapsed = 0;
  std::vector<int64_t> lags, lagms, waits;
  bool failed = false;
  for (auto& [pid, f] : kids) {
    char line[128];
    while (fgets(line, sizeof line, f)) {
      long long x = 0, y = 0;
      if (line[0] == 'C' && sscanf(line + 2, "%lld %lld", &x, &y) == 2) {
        commits += x;
        max_elapsed = std::max<int64_t>(max_elapsed, y);
      } else if (sscanf(line + 2, "%lld", &x) == 1) {
        if (line[0] == 'L') lags.push_back(x);
        else if (line[0] == 'S') lagms.push_back(x);
        else if (line[0] == 'W') waits.push_back(x);
      }
    }
    fclose(f);
    int status = 0;
    waitpid(pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed = true;
  }
  if (failed) Die("a writer process failed");
  double secs = double(max_elapsed) / 1e6;
  printf("{\"vfs\":\"%s\",\"sync\":\"%s\",\"procs\":%d,\"threads\":%d,\"dbs\":%d,"
         "\"commits\":%lld,\"secs\":%.3f,\"rate\":%.1f,\"lag_ms\":%s,\"lag_col_ms\":%s,"
         "\"wait_ms\":%s}\n",
         a.vfs.c_str(), a.sync.c_str(), a.procs, a.threads,
         a.procs * a.threads * a.dbs_per_writer, (long long)commits, secs,
         secs > 0 ? double(commits) / secs : 0.0, Pct(lags).c_str(), Pct(lagms).c_str(),
         Pct(waits).c_str());
  return 0;
}
