// tenantwald: replaying a killed run's spool at start (design: spool_replay.h).
#include "spool_replay.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <tuple>
#include <vector>

#include "log.h"
#include "store/format.h"
#include "store/object_store.h"

namespace twd {
namespace {

using tw::Status;

enum class Kind { kSegment, kSnapshot, kMerge };

struct Leftover {
  std::string path;
  Kind kind;
  uint64_t size = 0;
  bool valid = false;
  std::string error;            // why it does not verify
  std::string tenant, db, generation, key;
  uint64_t min_txid = 0, max_txid = 0;
  uint32_t level = 0;
  int64_t commit_us = 0;        // of max_txid
};

bool EndsWith(const std::string& s, const char* suffix) {
  const size_t n = strlen(suffix);
  return s.size() > n && s.compare(s.size() - n, n, suffix) == 0;
}

Status ReadWholeFile(const std::string& path, std::string* out) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::IOError("open " + path + ": " + strerror(errno));
  out->clear();
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status st = Status::IOError("read " + path + ": " + strerror(errno));
      close(fd);
      return st;
    }
    if (n == 0) break;
    out->append(buf, size_t(n));
  }
  close(fd);
  return Status::OK();
}

// Step 1 of spool_replay.h: verify the whole file and read its identity.
void Inspect(Leftover* f) {
  Status st;
  if (f->kind == Kind::kSnapshot) {
    tw::SnapshotReader r;
    st = r.Open(f->path);
    if (st.ok()) {
      const tw::SnapshotHeader& h = r.header();
      f->tenant = h.tenant;
      f->db = h.db;
      f->generation = h.generation;
      f->min_txid = f->max_txid = h.txid;
      f->commit_us = h.commit_us;
      f->key = tw::SnapshotKey(h.tenant, h.db, h.generation, h.txid);
    }
  } else {
    std::string bytes;
    st = ReadWholeFile(f->path, &bytes);
    tw::SegmentReader r;
    if (st.ok()) st = r.Open(bytes);
    if (st.ok()) {
      const tw::SegmentHeader& h = r.header();
      f->tenant = h.tenant;
      f->db = h.db;
      f->generation = h.generation;
      f->min_txid = h.min_txid;
      f->max_txid = h.max_txid;
      f->level = h.level;
      f->commit_us = h.last_commit_us;
      f->key = tw::SegmentKey(h.tenant, h.db, h.generation, h.min_txid, h.max_txid);
    }
  }
  f->valid = st.ok();
  if (!st.ok()) f->error = st.ToString();
}

const char* KindName(Kind k) {
  return k == Kind::kSnapshot ? "snapshot" : k == Kind::kMerge ? "merged segment" : "segment";
}

}  // namespace

Status ReplaySpool(const std::string& spool_dir, const StoreForTenant& store_for,
                   SpoolReplayStats* stats) {
  *stats = SpoolReplayStats();
  DIR* dir = opendir(spool_dir.c_str());
  if (!dir) return Status::IOError("open spool " + spool_dir + ": " + strerror(errno));
  std::vector<Leftover> files;
  while (dirent* e = readdir(dir)) {
    std::string n = e->d_name;
    Leftover f;
    if (EndsWith(n, ".twseg")) f.kind = Kind::kSegment;
    else if (EndsWith(n, ".twsnap")) f.kind = Kind::kSnapshot;
    else if (EndsWith(n, ".twseg.tmp")) f.kind = Kind::kMerge;
    else continue;
    f.path = spool_dir + "/" + n;
    struct stat st;
    if (lstat(f.path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    f.size = uint64_t(st.st_size);
    files.push_back(std::move(f));
  }
  closedir(dir);
  if (files.empty()) return Status::OK();

  auto discard = [&](const Leftover& f, const std::string& why) {
    unlink(f.path.c_str());
    ++stats->discarded;
    Log(Level::kInfo, "spool replay: leftover file discarded",
        {{"file", f.path}, {"kind", KindName(f.kind)}, {"tenant", f.tenant}, {"db", f.db},
         {"key", f.key}, {"reason", why}});
  };
  for (Leftover& f : files) Inspect(&f);
  // Per generation, in txid order: a run of segments continues one by one.
  std::sort(files.begin(), files.end(), [](const Leftover& a, const Leftover& b) {
    return std::tie(a.tenant, a.db, a.generation, a.min_txid, a.max_txid, a.path) <
           std::tie(b.tenant, b.db, b.generation, b.min_txid, b.max_txid, b.path);
  });

  struct GenState {
    bool listed = false;
    bool ok = false;            // LIST succeeded
    bool has_snapshot = false;
    uint64_t head = 0;          // highest txid of any object
    std::map<std::string, uint64_t> sizes;  // key -> size
    std::shared_ptr<tw::ObjectStore> store;
  };
  std::map<std::string, GenState> gens;  // tenant/db/generation
  // After the first failed request (each already retried with backoff by
  // the store), the rest is kept untried: an unreachable S3 must not hold
  // up the start for minutes per file.
  bool s3_failed = false;
  auto keep = [&](const Leftover& f) {
    ++stats->kept;
    stats->kept_bytes += f.size;
  };
  for (Leftover& f : files) {
    if (!f.valid) {
      discard(f, "incomplete or corrupt, so never uploaded: " + f.error);
      continue;
    }
    GenState& g = gens[f.tenant + "/" + f.db + "/" + f.generation];
    if (s3_failed && !g.listed) {
      keep(f);
      continue;
    }
    if (!g.listed) {
      g.listed = true;
      g.store = store_for(f.tenant);
      std::vector<tw::ObjectInfo> objs;
      const std::string prefix = tw::DbPrefix(f.tenant, f.db);
      Status st = g.store->List(prefix + "snapshots/" + f.generation + "/", &objs);
      std::vector<tw::ObjectInfo> segs;
      if (st.ok()) st = g.store->List(prefix + "wal/" + f.generation + "/", &segs);
      if (!st.ok()) {
        s3_failed = true;
        Log(Level::kWarn, "spool replay: cannot list the replica; leftover files kept",
            {{"tenant", f.tenant}, {"db", f.db}, {"generation", f.generation},
             {"error", st.ToString()}});
      } else {
        g.ok = true;
        objs.insert(objs.end(), segs.begin(), segs.end());
        for (const tw::ObjectInfo& o : objs) {
          tw::ParsedKey pk;
          if (!tw::ParseKey(o.key, &pk)) continue;
          g.sizes[o.key] = o.size;
          g.head = std::max(g.head, pk.max_txid);
          if (pk.kind == tw::ParsedKey::kSnapshot) g.has_snapshot = true;
        }
      }
    }
    if (!g.ok || s3_failed) {
      keep(f);
      continue;
    }
    const bool present = g.sizes.count(f.key) > 0;
    const bool continues = f.kind == Kind::kSegment && f.level == 0 && g.has_snapshot &&
                           f.min_txid == g.head + 1;
    if (!present && !continues) {
      discard(f, f.kind == Kind::kSegment
                     ? "does not continue its generation in the replica (the new snapshot "
                       "covers its transactions)"
                     : "its upload never started (superseded by the restart)");
      continue;
    }
    // The same user metadata as the first upload (informational).
    std::map<std::string, std::string> meta = {
        {"tenantwal-commit-us", std::to_string(f.commit_us)}};
    if (f.kind == Kind::kSnapshot) {
      meta["tenantwal-txid"] = std::to_string(f.max_txid);
    } else {
      meta["tenantwal-min-txid"] = std::to_string(f.min_txid);
      meta["tenantwal-max-txid"] = std::to_string(f.max_txid);
      if (f.level > 0) meta["tenantwal-level"] = std::to_string(f.level);
    }
    Status st = g.store->PutFile(f.key, f.path, meta);
    if (!st.ok()) {
      s3_failed = true;
      keep(f);
      Log(Level::kWarn, "spool replay: upload failed; file kept for the next start",
          {{"tenant", f.tenant}, {"db", f.db}, {"key", f.key}, {"error", st.ToString()}});
      continue;
    }
    if (present) {
      ++stats->reuploaded;
      Log(Level::kInfo, "spool replay: object uploaded again (its upload was cut short)",
          {{"tenant", f.tenant}, {"db", f.db}, {"key", f.key}, {"kind", KindName(f.kind)},
           {"bytes", f.size}, {"sizeFound", g.sizes[f.key]}});
    } else {
      ++stats->continued;
      g.head = f.max_txid;
      Log(Level::kInfo, "spool replay: segment uploaded; its generation continues",
          {{"tenant", f.tenant}, {"db", f.db}, {"key", f.key}, {"bytes", f.size}});
    }
    g.sizes[f.key] = f.size;
    unlink(f.path.c_str());
  }
  return Status::OK();
}

}  // namespace twd
