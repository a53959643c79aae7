// tenantwal: the restore engine and replica catalog (design: restore.h).
#include "store/restore.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <stdexcept>
#include <tuple>

namespace tw {

namespace {

std::string Errno(const std::string& what, const std::string& path) {
  return what + " " + path + ": " + std::strerror(errno);
}

Status PwriteAll(int fd, const uint8_t* p, size_t n, uint64_t off, const std::string& path) {
  while (n > 0) {
    ssize_t w = ::pwrite(fd, p, n, static_cast<off_t>(off));
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC) return Status::NoSpace(Errno("write", path));
      return Status::IOError(Errno("write", path));
    }
    p += w;
    n -= static_cast<size_t>(w);
    off += static_cast<uint64_t>(w);
  }
  return Status::OK();
}

std::string DirOf(const std::string& path) {
  size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Creates an empty file from `pattern` (ending in XXXXXX); *path gets the name.
Status MakeTemp(const std::string& pattern, std::string* path, int* fd) {
  std::vector<char> buf(pattern.begin(), pattern.end());
  buf.push_back('\0');
  int f = ::mkostemp(buf.data(), O_CLOEXEC);
  if (f < 0) return Status::IOError(Errno("create", pattern));
  *path = buf.data();
  *fd = f;
  return Status::OK();
}

// Removes temporary files and closes descriptors on every exit path.
struct TempFiles {
  std::vector<std::string> paths;
  int fd = -1;
  ~TempFiles() {
    if (fd >= 0) ::close(fd);
    for (const auto& p : paths) ::unlink(p.c_str());
  }
};

// Runs PRAGMA integrity_check on a closed database file.
Status IntegrityCheck(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) {
    std::string msg = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return Status::Corruption("restored database does not open: " + msg);
  }
  std::vector<std::string> rows;
  char* err = nullptr;
  rc = sqlite3_exec(
      db, "PRAGMA integrity_check",
      [](void* arg, int n, char** vals, char**) -> int {
        auto* out = static_cast<std::vector<std::string>*>(arg);
        if (n > 0 && out->size() < 5) out->push_back(vals[0] ? vals[0] : "NULL");
        return 0;
      },
      &rows, &err);
  std::string emsg = err ? err : "";
  sqlite3_free(err);
  sqlite3_close(db);
  if (rc != SQLITE_OK) return Status::Corruption("integrity_check failed: " + emsg);
  if (rows.size() == 1 && rows[0] == "ok") return Status::OK();
  std::string joined;
  for (const auto& r : rows) joined += (joined.empty() ? "" : "; ") + r;
  return Status::Corruption("integrity_check: " + (joined.empty() ? "no result" : joined));
}

}  // namespace

// ---- catalog -----------------------------------------------------------------

std::vector<CatalogDatabase> BuildCatalog(const std::vector<ObjectInfo>& objects,
                                          size_t* ignored) {
  std::map<std::pair<std::string, std::string>, std::map<std::string, CatalogGeneration>> by_db;
  size_t skipped = 0;
  for (const ObjectInfo& o : objects) {
    ParsedKey k;
    if (!ParseKey(o.key, &k)) {
      skipped++;
      continue;
    }
    CatalogGeneration& g = by_db[{k.tenant, k.db}][k.generation];
    g.id = k.generation;
    CatalogObject c{o.key, k.min_txid, k.max_txid, o.size};
    (k.kind == ParsedKey::kSnapshot ? g.snapshots : g.segments).push_back(std::move(c));
  }
  auto order = [](const CatalogObject& a, const CatalogObject& b) {
    return std::tie(a.min_txid, a.max_txid) < std::tie(b.min_txid, b.max_txid);
  };
  std::vector<CatalogDatabase> out;
  for (auto& [name, gens] : by_db) {
    CatalogDatabase d;
    d.tenant = name.first;
    d.db = name.second;
    for (auto& [id, g] : gens) {
      std::sort(g.snapshots.begin(), g.snapshots.end(), order);
      std::sort(g.segments.begin(), g.segments.end(), order);
      d.generations.push_back(std::move(g));
    }
    out.push_back(std::move(d));
  }
  if (ignored != nullptr) *ignored = skipped;
  return out;
}

Status ListDatabase(ObjectStore* store, const std::string& tenant, const std::string& db,
                    CatalogDatabase* out) {
  std::vector<ObjectInfo> objects;
  TW_RETURN_IF_ERROR(store->List(DbPrefix(tenant, db), &objects));
  std::vector<CatalogDatabase> all = BuildCatalog(objects, nullptr);
  *out = CatalogDatabase();
  out->tenant = tenant;
  out->db = db;
  for (auto& d : all)
    if (d.tenant == tenant && d.db == db) *out = std::move(d);
  return Status::OK();
}

// ---- plan ----------------------------------------------------------------------

Status PlanRestore(const CatalogDatabase& catalog, uint64_t target, const std::string& generation,
                   RestorePlan* plan) {
  *plan = RestorePlan();
  std::string what = catalog.tenant + "/" + catalog.db;
  if (catalog.generations.empty()) return Status::NotFound("no replica of " + what);
  const CatalogGeneration* gen = nullptr;
  const CatalogObject* snap = nullptr;
  for (auto it = catalog.generations.rbegin(); it != catalog.generations.rend(); ++it) {
    if (!generation.empty() && it->id != generation) continue;
    for (const CatalogObject& s : it->snapshots)
      if (s.min_txid <= target) snap = &s;  // sorted: the last one wins
    if (snap != nullptr) {
      gen = &*it;
      break;
    }
    if (!generation.empty()) break;
  }
  if (gen == nullptr) {
    std::string where = generation.empty() ? what : what + " generation " + generation;
    if (target == kRestoreLatest) return Status::NotFound("no snapshot of " + where);
    return Status::NotFound("no snapshot of " + where + " at or before txid " +
                            std::to_string(target));
  }
  plan->generation = gen->id;
  plan->snapshot = *snap;
  uint64_t cur = snap->max_txid;
  while (cur < target) {
    const CatalogObject* next = nullptr;
    for (const CatalogObject& s : gen->segments)  // widest segment starting at cur + 1
      if (s.min_txid == cur + 1 && (next == nullptr || s.max_txid > next->max_txid)) next = &s;
    if (next == nullptr) break;
    plan->segments.push_back(*next);
    cur = next->max_txid;
  }
  plan->reachable_txid = std::min(cur, target);
  if (target != kRestoreLatest && cur < target)
    return Status::NotFound("txid " + std::to_string(target) + " is not reachable in generation " +
                            gen->id + ": last good txid is " + std::to_string(cur));
  if (target == kRestoreLatest) {
    for (const CatalogObject& s : gen->segments) {
      if (s.max_txid > cur) {
        plan->warnings.push_back("generation " + gen->id + ": segments after txid " +
                                 std::to_string(cur) + " are unreachable (gap before " + s.key +
                                 ")");
        break;
      }
    }
  }
  return Status::OK();
}

// ---- restore -------------------------------------------------------------------

namespace {

// How many pages one transaction may add to the database without carrying
// them (they read as zeros). SQLite never writes the lock-byte page (the page
// holding byte offset 2^30; File Format section 1.3), so a transaction that
// crosses 1 GiB legitimately leaves one hole; anything far beyond that is a
// damaged or hostile object, refused before memory or time is spent on it.
constexpr uint64_t kMaxUnwrittenGrowth = 64;

// The database being rebuilt: the output file plus its running checksum.
class Rebuild {
 public:
  Rebuild(int fd, std::string path, uint32_t page_size)
      : fd_(fd), path_(std::move(path)), page_size_(page_size), sum_(page_size) {}

  // Starts a transaction (for the growth bound).
  void BeginTxn() { unwritten_ = 0; }

  Status WritePage(uint32_t pgno, const uint8_t* page) {
    if (pgno > sum_.pages()) TW_RETURN_IF_ERROR(Grow(pgno - 1));
    TW_RETURN_IF_ERROR(
        PwriteAll(fd_, page, page_size_, static_cast<uint64_t>(pgno - 1) * page_size_, path_));
    sum_.SetPage(pgno, page);
    return Status::OK();
  }
  // Sets the database size (file and checksum) to `pages` pages.
  Status Resize(uint32_t pages) {
    if (pages > sum_.pages()) TW_RETURN_IF_ERROR(Grow(pages));
    if (::ftruncate(fd_, static_cast<off_t>(static_cast<uint64_t>(pages) * page_size_)) != 0)
      return Status::IOError(Errno("truncate", path_));
    sum_.Resize(pages);
    return Status::OK();
  }
  uint64_t checksum() const { return sum_.value(); }
  uint32_t pages() const { return sum_.pages(); }

 private:
  // Adds zero pages up to `pages`, within kMaxUnwrittenGrowth per txn.
  Status Grow(uint32_t pages) {
    unwritten_ += pages - sum_.pages();
    if (unwritten_ > kMaxUnwrittenGrowth)
      return Status::Corruption("transaction grows the database by " + std::to_string(unwritten_) +
                                " pages it does not contain");
    sum_.Resize(pages);
    return Status::OK();
  }

  uint64_t unwritten_ = 0;
  int fd_;
  std::string path_;
  uint32_t page_size_;
  DbChecksum sum_;
};

// Applies one verified-on-open segment; updates *good_txid/*commit_us as
// transactions complete.
Status ApplySegment(SegmentReader* reader, uint64_t target, Rebuild* db, uint64_t* good_txid,
                    int64_t* commit_us) {
  Status err;
  bool have_txn = false;
  TxnInfo cur;
  auto finish_txn = [&]() -> bool {
    if (!have_txn) return true;
    have_txn = false;
    err = db->Resize(cur.db_pages_after);
    if (!err.ok()) return false;
    if (db->checksum() != cur.checksum_after) {
      err = Status::Corruption("txn " + std::to_string(cur.txid) +
                               ": database checksum mismatch after applying");
      return false;
    }
    *good_txid = cur.txid;
    *commit_us = cur.commit_us;
    return true;
  };
  bool stopped = false;
  Status s = reader->ForEach(
      [&](const TxnInfo& t) {
        if (!finish_txn()) return false;
        if (t.txid > target) {
          stopped = true;
          return false;
        }
        cur = t;
        have_txn = true;
        db->BeginTxn();
        // Shrink first (pages beyond db_pages_after are gone); growth happens
        // as pages arrive and at the end of the transaction.
        if (t.db_pages_after < db->pages()) err = db->Resize(t.db_pages_after);
        return err.ok();
      },
      [&](uint32_t pgno, const uint8_t* page) {
        err = db->WritePage(pgno, page);
        return err.ok();
      });
  TW_RETURN_IF_ERROR(s);
  TW_RETURN_IF_ERROR(err);
  if (!stopped && !finish_txn()) return err;
  return Status::OK();
}

Status RestoreImpl(ObjectStore* store, const RestoreOptions& opt, RestoreResult* result) {
  if (!ValidName(opt.tenant)) return Status::InvalidArgument("invalid tenant name");
  if (!ValidName(opt.db)) return Status::InvalidArgument("invalid database name");
  if (!opt.generation.empty() && !IsGenerationId(opt.generation))
    return Status::InvalidArgument("invalid generation id '" + opt.generation + "'");
  const std::string& out = opt.output_path;
  if (out.empty() || out.back() == '/') return Status::InvalidArgument("invalid output path");
  struct stat st;
  if (!opt.overwrite && ::lstat(out.c_str(), &st) == 0)
    return Status::InvalidArgument(out + " already exists (use --force to replace it)");

  CatalogDatabase catalog;
  TW_RETURN_IF_ERROR(ListDatabase(store, opt.tenant, opt.db, &catalog).Prefix("list"));
  RestorePlan plan;
  TW_RETURN_IF_ERROR(PlanRestore(catalog, opt.target_txid, opt.generation, &plan));
  result->generation = plan.generation;
  result->warnings = plan.warnings;

  TempFiles tmp;
  std::string db_tmp, snap_tmp;
  TW_RETURN_IF_ERROR(MakeTemp(out + ".tmp-XXXXXX", &db_tmp, &tmp.fd));
  tmp.paths.push_back(db_tmp);
  {
    int sfd = -1;
    TW_RETURN_IF_ERROR(MakeTemp(out + ".snap-XXXXXX", &snap_tmp, &sfd));
    ::close(sfd);
    tmp.paths.push_back(snap_tmp);
  }

  // The snapshot.
  const std::string& skey = plan.snapshot.key;
  TW_RETURN_IF_ERROR(store->GetToFile(skey, snap_tmp).Prefix("get " + skey));
  result->objects_read++;
  if (::stat(snap_tmp.c_str(), &st) == 0) result->bytes_read += static_cast<uint64_t>(st.st_size);
  SnapshotReader sr;
  TW_RETURN_IF_ERROR(sr.Open(snap_tmp).Prefix("snapshot " + skey));
  const SnapshotHeader& sh = sr.header();
  if (sh.tenant != opt.tenant || sh.db != opt.db || sh.generation != plan.generation ||
      sh.txid != plan.snapshot.min_txid)
    return Status::Corruption("snapshot " + skey + ": header (" + sh.tenant + "/" + sh.db +
                              " generation " + sh.generation + " txid " + std::to_string(sh.txid) +
                              ") does not match its key");
  Rebuild db(tmp.fd, db_tmp, sh.page_size);
  db.BeginTxn();
  Status werr;
  Status s = sr.ForEach([&](uint32_t pgno, const uint8_t* page) {
    werr = db.WritePage(pgno, page);
    return werr.ok();
  });
  if (s.ok()) s = werr;
  if (s.ok()) s = db.Resize(sh.db_pages);
  if (s.ok() && db.checksum() != sh.checksum)
    s = Status::Corruption("database checksum mismatch after applying");
  TW_RETURN_IF_ERROR(s.Prefix("snapshot " + skey));
  ::unlink(snap_tmp.c_str());
  tmp.paths.pop_back();
  uint64_t good = sh.txid;
  int64_t commit_us = sh.commit_us;
  result->snapshot_txid = sh.txid;
  result->page_size = sh.page_size;

  // The segments.
  for (const CatalogObject& seg : plan.segments) {
    std::string ctx = "segment " + seg.key + " (last good txid " + std::to_string(good) + ")";
    std::string bytes;
    TW_RETURN_IF_ERROR(store->Get(seg.key, &bytes).Prefix("get " + seg.key));
    result->objects_read++;
    result->bytes_read += bytes.size();
    SegmentReader r;
    TW_RETURN_IF_ERROR(r.Open(bytes).Prefix(ctx));
    const SegmentHeader& h = r.header();
    if (h.tenant != opt.tenant || h.db != opt.db || h.generation != plan.generation ||
        h.min_txid != seg.min_txid || h.max_txid != seg.max_txid)
      return Status::Corruption(ctx + ": header (" + h.tenant + "/" + h.db + " generation " +
                                h.generation + " txids " + std::to_string(h.min_txid) + "-" +
                                std::to_string(h.max_txid) + ") does not match its key");
    if (h.page_size != sh.page_size)
      return Status::Corruption(ctx + ": page size " + std::to_string(h.page_size) +
                                " differs from the snapshot's " + std::to_string(sh.page_size));
    if (h.checksum_before != db.checksum())
      return Status::Corruption(ctx + ": checksum_before does not match the database " +
                                "(history diverged)");
    TW_RETURN_IF_ERROR(ApplySegment(&r, opt.target_txid, &db, &good, &commit_us).Prefix(ctx));
    result->segments++;
  }
  if (opt.target_txid != kRestoreLatest && good != opt.target_txid)
    return Status::NotFound("txid " + std::to_string(opt.target_txid) +
                            " was not found: last good txid is " + std::to_string(good));

  // Page 1: sanity-check, then switch to rollback-journal mode (bytes 18-19).
  if (db.pages() > 0) {
    uint8_t hdr[100];
    ssize_t n = ::pread(tmp.fd, hdr, sizeof(hdr), 0);
    if (n != static_cast<ssize_t>(sizeof(hdr)))
      return Status::IOError(Errno("read", db_tmp));
    if (std::memcmp(hdr, "SQLite format 3", 16) != 0)
      return Status::Corruption("restored page 1 is not a SQLite database header (txid " +
                                std::to_string(good) + ")");
    uint32_t ps = (static_cast<uint32_t>(hdr[16]) << 8) | hdr[17];
    if (ps == 1) ps = 65536;
    if (ps != sh.page_size)
      return Status::Corruption("restored database header says page size " + std::to_string(ps) +
                                ", the replica " + std::to_string(sh.page_size));
    const uint8_t legacy[2] = {1, 1};
    TW_RETURN_IF_ERROR(PwriteAll(tmp.fd, legacy, 2, 18, db_tmp));
  }
  if (::fsync(tmp.fd) != 0) return Status::IOError(Errno("fsync", db_tmp));
  ::close(tmp.fd);
  tmp.fd = -1;
  if (opt.integrity_check && db.pages() > 0) TW_RETURN_IF_ERROR(IntegrityCheck(db_tmp));

  // Move into place: link() refuses to replace an existing file atomically.
  if (opt.overwrite) {
    if (::rename(db_tmp.c_str(), out.c_str()) != 0)
      return Status::IOError(Errno("rename to", out));
  } else {
    if (::link(db_tmp.c_str(), out.c_str()) != 0) {
      if (errno == EEXIST)
        return Status::InvalidArgument(out + " already exists (use --force to replace it)");
      return Status::IOError(Errno("link to", out));
    }
    ::unlink(db_tmp.c_str());
  }
  tmp.paths.clear();
  int dfd = ::open(DirOf(out).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);
    ::close(dfd);
  }
  result->txid = good;
  result->commit_us = commit_us;
  result->pages = db.pages();
  result->checksum = db.checksum();
  return Status::OK();
}

}  // namespace

Status Restore(ObjectStore* store, const RestoreOptions& options, RestoreResult* result) {
  *result = RestoreResult();
  try {
    return RestoreImpl(store, options, result);
  } catch (const std::bad_alloc&) {
    return Status::NoSpace("restore: out of memory");
  } catch (const std::exception& e) {
    return Status::IOError(std::string("restore: ") + e.what());
  }
}

}  // namespace tw
