// tenantwald: the replicator core (see replicator.h for the data path).
#include "replicator.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/names.h"
#include "host_id.h"
#include "log.h"
#include "peek_file.h"
#include "spool_replay.h"
#include "state_file.h"

namespace twd {

using tw::Status;
using tw::ring::Ring;
using tw::ring::Slot;

const char* PhaseName(Phase p) {
  switch (p) {
    case Phase::kNeedSnapshot: return "pending-snapshot";
    case Phase::kSnapshotting: return "snapshotting";
    case Phase::kActive: return "active";
    case Phase::kDeleted: return "deleted";
    case Phase::kNotReplicated: return "not-replicated";
    case Phase::kFenced: return "fenced";
  }
  return "unknown";
}

namespace {

// A killed tenantwald stays a zombie until its parent reaps it, and
// kill(pid, 0) succeeds on a zombie: it consumes nothing any more
// (/proc/PID/stat field 3 is 'Z' or 'X', proc(5)).
bool IsZombie(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", int(pid));
  FILE* f = fopen(path, "re");
  if (!f) return false;
  char buf[512];
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = 0;
  const char* p = strrchr(buf, ')');  // the command name may hold spaces
  return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

Status MkdirAll(const std::string& path, mode_t mode) {
  std::string cur;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (!cur.empty() && mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) {
        return Status::IOError("mkdir " + cur + ": " + strerror(errno));
      }
    }
    if (i < path.size()) cur.push_back(path[i]);
  }
  return Status::OK();
}

tw::ring::DbState SlotState(Phase p) {
  switch (p) {
    case Phase::kNeedSnapshot:
    case Phase::kSnapshotting: return tw::ring::DbState::kSnapshotting;
    case Phase::kActive: return tw::ring::DbState::kActive;
    case Phase::kDeleted: return tw::ring::DbState::kDeleted;
    case Phase::kNotReplicated: return tw::ring::DbState::kNotReplicated;
    case Phase::kFenced: return tw::ring::DbState::kFenced;
  }
  return tw::ring::DbState::kUnknown;
}

}  // namespace

Replicator::Replicator(Options o) : opts_(std::move(o)) {}

Replicator::~Replicator() { Stop(0); }

Status Replicator::Start() {
  started_us_ = tw::ring::NowMicros();
  char buf[PATH_MAX];
  if (opts_.root.empty() || !realpath(opts_.root.c_str(), buf)) {
    return Status::InvalidArgument("--root " + opts_.root + ": not an existing directory");
  }
  opts_.root = buf;
  if (opts_.root.size() >= sizeof(tw::ring::ShmHeader::root)) {
    return Status::InvalidArgument("--root path too long");
  }
  if (opts_.spool_dir.empty()) opts_.spool_dir = opts_.root + "/.tenantwal/spool";
  TW_RETURN_IF_ERROR(MkdirAll(opts_.spool_dir, 0700));
  spool_.set_max_bytes(opts_.spool_max_bytes);
  // One daemon per spool (and so per root by default): an exclusive lock,
  // taken before anything in the spool is touched.
  const std::string lock_path = opts_.spool_dir + "/tenantwald.lock";
  lock_fd_ = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock_fd_ < 0 || flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
    return Status::Busy("another tenantwald is using the spool " + opts_.spool_dir);
  }
  TW_RETURN_IF_ERROR(LoadOrCreateHostId(opts_.spool_dir, &host_id_));
  host_name_ = HostName();
  // While an upload is being retried, its database shows the attempt's error
  // (tenantwal_status, /api/databases) instead of nothing until the retries
  // are exhausted. The store calls back on the uploading thread; every
  // tenant's store is opened with these options (tenants.h).
  opts_.store.on_retry = [this](const Status& e, int retry) { NoteRetry(e, retry); };
  {
    ReplicaTarget flag_target;
    flag_target.url = opts_.replica_url;
    tenants_ = std::make_unique<TenantRegistry>(opts_.sync_interval_us, flag_target, opts_.store);
    tenants_->SetFlagMaintenance(opts_.maintenance.snapshot_interval_us,
                                 opts_.maintenance.retention_us);
    TW_RETURN_IF_ERROR(tenants_->Init([](std::unique_ptr<tw::ObjectStore> s) {
      return std::unique_ptr<tw::ObjectStore>(std::make_unique<ObservedStore>(std::move(s)));
    }));
    observed_ = dynamic_cast<ObservedStore*>(tenants_->default_store());
    {
      // Fencing needs conditional writes; some S3-compatible servers accept
      // If-None-Match / If-Match and ignore them (s3rver). Say so at once.
      bool enforced = false;
      Status ps = tw::ProbeConditionalWrites(tenants_->default_store(),
                                             "hosts/" + host_id_ + "/conditional-write-probe",
                                             &enforced);
      fencing_enforced_ = ps.ok() && enforced;
      if (!ps.ok()) {
        Log(Level::kWarn, "could not probe the replica for conditional writes",
            {{"error", ps.ToString()}});
      } else if (!enforced) {
        Log(Level::kWarn,
            "fencing unavailable: the replica's store ignores conditional writes "
            "(If-None-Match/If-Match); two hosts on one replica are not kept apart",
            {{"replica", opts_.replica_url}});
      }
    }
    if (!opts_.config_path.empty()) {
      // At start a bad file is fatal (exit 2); on SIGHUP it is only refused.
      Config c;
      TW_RETURN_IF_ERROR(LoadConfig(opts_.config_path, &c));
      TW_RETURN_IF_ERROR(tenants_->ApplyConfig(c));
      config_state_.path = opts_.config_path;
      config_state_.loaded_us = config_state_.last_attempt_us = tw::ring::NowMicros();
      Log(Level::kInfo, "configuration loaded",
          {{"config", opts_.config_path}, {"tenants", c.tenants.size()}});
    }
  }
  {
    // Files a killed run left in the spool (spool_replay.h): torn uploads
    // are uploaded again, segments that continue their generation go up,
    // the rest is unlinked. Before any thread starts.
    SpoolReplayStats rs;
    Status st = ReplaySpool(
        opts_.spool_dir, [this](const std::string& t) { return tenants_->Store(t, nullptr); },
        &rs);
    if (!st.ok()) return st;
    if (rs.reuploaded + rs.continued + rs.discarded + rs.kept > 0) {
      Log(Level::kInfo, "spool replayed",
          {{"reuploaded", rs.reuploaded}, {"continued", rs.continued},
           {"discarded", rs.discarded}, {"kept", rs.kept}, {"keptBytes", rs.kept_bytes}});
    }
  }
  TW_RETURN_IF_ERROR(Ring::Open(opts_.ring_name, opts_.ring, true, &ring_));
  auto* h = ring_->header();
  // One consumer per ring.
  const int32_t other = h->consumer_pid.load();
  if (other > 0 && other != int32_t(getpid()) && (kill(other, 0) == 0 || errno == EPERM) &&
      !IsZombie(other)) {
    ring_.reset();
    return Status::Busy("another tenantwald (pid " + std::to_string(other) +
                        ") is consuming the ring " + opts_.ring_name);
  }
  std::memset(h->root, 0, sizeof h->root);
  std::memcpy(h->root, opts_.root.data(), opts_.root.size());
  h->consumer_pid.store(int32_t(getpid()));
  h->consumer_heartbeat_us.store(tw::ring::NowMicros());
  Log(Level::kInfo, "tenantwald started",
      {{"root", opts_.root}, {"replica", opts_.replica_url}, {"ring", opts_.ring_name},
       {"spool", opts_.spool_dir}, {"ringBytes", h->ring_capacity}, {"slots", h->slot_count}});
  // Databases already registered by applications.
  for (uint32_t i = 0; i < ring_->slot_count(); ++i) {
    if (ring_->slot(i)->used.load(std::memory_order_acquire)) GetDb(i, true);
  }
  ScanRoot();
  // Named (top -H, /proc/PID/task/*/comm) so idle wakeups can be told apart.
  auto named = [](const char* name, auto fn) {
    return [name, fn] { pthread_setname_np(pthread_self(), name); fn(); };
  };
  threads_.emplace_back(named("tw-consume", [this] { ConsumeLoop(); }));
  threads_.emplace_back(named("tw-flush", [this] { FlushLoop(); }));
  for (int i = 0; i < opts_.uploaders; ++i)
    threads_.emplace_back(named("tw-upload", [this] { UploadLoop(); }));
  for (int i = 0; i < opts_.snapshotters; ++i)
    threads_.emplace_back(named("tw-snapshot", [this] { SnapshotLoop(); }));
  if (opts_.bypass_check_us > 0) threads_.emplace_back(named("tw-bypass", [this] { BypassLoop(); }));
  maint_ = std::make_unique<Maintainer>(this, opts_.spool_dir, opts_.maintenance,
                                        opts_.zstd_level);
  maint_->Start();
  return Status::OK();
}

void Replicator::Stop(int grace_ms) {
  if (threads_.empty()) return;
  // Give pending batches a chance to be sealed and uploaded.
  int64_t deadline = tw::ring::NowMicros() + int64_t(grace_ms) * 1000;
  while (tw::ring::NowMicros() < deadline) {
    bool busy = false;
    for (auto& d : Databases()) {
      if (d.phase == "active" && d.replicated_txid < d.txid) busy = true;
    }
    if (!busy) break;
    usleep(50000);
  }
  {
    // Under mu_: a thread between its predicate check and its wait on cv_ or
    // flush_cv_ (no timeouts: idle threads sleep until notified) would miss it.
    std::lock_guard<std::mutex> lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (maint_) maint_->Stop();
  flush_cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  // Leave the lineage of every caught-up database for the next start, so
  // that it continues the generation instead of taking a new snapshot.
  size_t saved = 0;
  for (auto& kv : dbs_) {
    Db* d = kv.second.get();
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->phase != Phase::kActive || !d->pending.empty() || !d->sealed.empty() ||
        d->partial || d->durable_txid != d->last_txid) {
      continue;
    }
    LineageState ls;
    ls.generation = d->generation;
    ls.page_size = d->page_size;
    ls.db_pages = d->db_pages;
    ls.last_txid = d->last_txid;
    ls.commit_us = d->durable_commit_us;
    ls.checksum = d->checksum;
    ls.page_crc = d->page_crc;
    std::string dir = opts_.spool_dir + "/state/" + d->tenant;
    Status st = MkdirAll(dir, 0700);
    if (st.ok()) st = WriteLineageState(dir + "/" + d->name + ".state", ls, /*sync=*/false);
    if (st.ok()) st = WriteTargetKey(dir + "/" + d->name + ".target", d->target_key);
    if (st.ok()) ++saved;
    else Log(Level::kWarn, "cannot save lineage state", {{"tenant", d->tenant}, {"db", d->name},
                                                         {"error", st.ToString()}});
  }
  if (saved > 0) {
    // One sync of the file system for all the state files (see state_file.h).
    int fd = open((opts_.spool_dir + "/state").c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || syncfs(fd) != 0)
      Log(Level::kWarn, "cannot sync the lineage state", {{"error", strerror(errno)}});
    if (fd >= 0) close(fd);
  }
  Log(Level::kInfo, "lineage saved for caught-up databases", {{"databases", saved}});
  if (ring_) ring_->header()->consumer_pid.store(0);
  Log(Level::kInfo, "tenantwald stopped");
}

std::shared_ptr<Db> Replicator::GetDb(uint32_t index, bool create) {
  std::lock_guard<std::mutex> lk(mu_);
  auto it = dbs_.find(index);
  if (it != dbs_.end()) return it->second;
  if (!create) return nullptr;
  Slot* s = ring_->slot(index);
  auto d = std::make_shared<Db>();
  d->slot = index;
  d->tenant.assign(s->tenant, strnlen(s->tenant, sizeof s->tenant));
  d->name.assign(s->db, strnlen(s->db, sizeof s->db));
  d->path.assign(s->path, strnlen(s->path, sizeof s->path));
  d->created_us = tw::ring::NowMicros();
  if (!tw::ValidName(d->tenant) || !tw::ValidName(d->name)) {
    d->phase = Phase::kNotReplicated;
    d->last_error = Ring::ReadError(s);
    Log(Level::kWarn, "database not replicated",
        {{"path", d->path}, {"reason", d->last_error}});
  } else if (access(StoppedMarker(d->tenant, d->name).c_str(), F_OK) == 0) {
    d->phase = Phase::kDeleted;  // stopped through the API
    d->api_stopped = true;
    PublishSlot(d.get());
  } else if (s->state.load() == uint32_t(tw::ring::DbState::kDeleted)) {
    d->phase = Phase::kDeleted;
  } else if (ResumeLocked(d.get(), s)) {
    Log(Level::kInfo, "database resumed: generation continues",
        {{"tenant", d->tenant}, {"db", d->name}, {"generation", d->generation},
         {"txid", d->last_txid}});
  } else {
    d->phase = Phase::kNeedSnapshot;
    // A grace period before the first snapshot: an application that just
    // created the database is setting it up (journal_mode=WAL takes an
    // exclusive lock without a busy handler); our locks must not race it.
    d->next_attempt_us = d->created_us + std::min<int64_t>(opts_.sync_interval_us, 1000000);
    snapshot_q_.push_back(d);
    cv_.notify_all();
    Log(Level::kInfo, "database registered",
        {{"audit", 1}, {"action", "register"}, {"tenant", d->tenant}, {"db", d->name},
         {"path", d->path}});
  }
  dbs_[index] = d;
  return d;
}

bool Replicator::ResumeLocked(Db* d, Slot* s) {
  const std::string path = opts_.spool_dir + "/state/" + d->tenant + "/" + d->name + ".state";
  LineageState ls;
  Status st = ReadLineageState(path, &ls);
  if (st.IsNotFound()) return false;
  unlink(path.c_str());  // used once: a later crash must not resume from it
  // The generation lives in the target it was written to: if the tenant's
  // replica target changed across the restart, a new generation starts.
  const std::string tpath = path.substr(0, path.size() - 6) + ".target";
  std::string saved_key;
  ReadTargetKey(tpath, &saved_key);
  unlink(tpath.c_str());
  ReplicaTarget target;
  std::shared_ptr<tw::ObjectStore> store = tenants_->Store(d->tenant, &target);
  if (saved_key != target.Key()) {
    Log(Level::kInfo, "replica target changed since the last run: snapshot instead",
        {{"tenant", d->tenant}, {"db", d->name}, {"replica", target.url}});
    return false;
  }
  if (!st.ok()) {
    Log(Level::kWarn, "lineage state unusable: snapshot instead",
        {{"tenant", d->tenant}, {"db", d->name}, {"error", st.ToString()}});
    return false;
  }
  char gen[sizeof s->generation + 1] = {};
  std::memcpy(gen, s->generation, sizeof s->generation);
  if (ls.generation != gen || s->replicated_txid.load() != ls.last_txid ||
      s->resync.load() != 0 || s->txid < ls.last_txid) {
    Log(Level::kInfo, "lineage state does not match the ring: snapshot instead",
        {{"tenant", d->tenant}, {"db", d->name}});
    return false;
  }
  d->phase = Phase::kActive;
  d->target = store;
  d->target_key = target.Key();
  d->generation = ls.generation;
  d->page_size = ls.page_size;
  d->db_pages = ls.db_pages;
  d->page_crc = std::move(ls.page_crc);
  d->checksum = ls.checksum;
  d->last_txid = d->durable_txid = ls.last_txid;
  d->durable_commit_us = ls.commit_us;
  return true;
}

void Replicator::ScanRoot() {
  std::lock_guard<std::mutex> scan_lk(scan_mu_);
  DIR* top = opendir(opts_.root.c_str());
  if (!top) return;
  const int64_t scan_ns = tw::ring::NowMicros() * 1000;
  while (dirent* t = readdir(top)) {
    std::string tenant = t->d_name;
    if (!tw::ValidName(tenant)) continue;
    std::string tdir = opts_.root + "/" + tenant;
    // Unchanged directory (same mtime, and that mtime was already 2 s old
    // when we last read it, so no entry can have been added within the
    // same timestamp tick): every file in it is already registered.
    struct stat dst;
    if (stat(tdir.c_str(), &dst) != 0 || !S_ISDIR(dst.st_mode)) continue;
    const int64_t dmt = int64_t(dst.st_mtim.tv_sec) * 1000000000 + dst.st_mtim.tv_nsec;
    auto seen = scanned_dirs_.find(tdir);
    if (seen != scanned_dirs_.end() && seen->second == dmt) continue;
    if (scan_ns - dmt >= 2000000000LL) scanned_dirs_[tdir] = dmt;
    else scanned_dirs_.erase(tdir);
    DIR* dd = opendir(tdir.c_str());
    if (!dd) continue;
    while (dirent* f = readdir(dd)) {
      std::string file = f->d_name;
      for (const char* ext : {".db", ".sqlite", ".sqlite3"}) {
        size_t n = strlen(ext);
        if (file.size() <= n || file.compare(file.size() - n, n, ext) != 0) continue;
        std::string db = file.substr(0, file.size() - n);
        if (!tw::ValidName(db)) break;
        std::string path = tdir + "/" + file;
        // Only regular files (never a symlink out of the root) that are
        // SQLite databases: the 16-byte magic, or an empty file whose
        // content is still all in its WAL.
        struct stat st;
        if (lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) break;
        if (st.st_size > 0) {
          char magic[16] = {};
          PeekFile f;  // a snapshot may hold locks on it (peek_file.h)
          bool sqlite = f.Open(path, true).ok() &&
                        f.Read(magic, sizeof magic, 0) == long(sizeof magic) &&
                        std::memcmp(magic, "SQLite format 3", 16) == 0;
          f.Close();
          if (!sqlite) break;
        } else {
          struct stat wst;
          if (stat((path + "-wal").c_str(), &wst) != 0) break;
        }
        uint32_t idx;
        bool created;
        Status s = ring_->FindOrAddSlot(tenant, db, path, &idx, &created);
        if (!s.ok()) {
          Log(Level::kError, "cannot register database",
              {{"tenant", tenant}, {"db", db}, {"error", s.ToString()}});
          break;
        }
        GetDb(idx, true);
        break;
      }
    }
    closedir(dd);
  }
  closedir(top);
}

// ---- consumer --------------------------------------------------------------

void Replicator::ConsumeLoop() {
  auto* h = ring_->header();
  int64_t last_record_us = 0;
  uint64_t seen_dropped = h->records_dropped.load(std::memory_order_relaxed);
  if (seen_dropped > 0) CheckOverflow();  // dropped before this start
  while (!stop_) {
    uint32_t token = ring_->WakeToken();
    const tw::ring::RecordHeader* r = nullptr;
    switch (ring_->Peek(&r)) {
      case Ring::PeekResult::kRecord:
        OnRecord(r);
        ring_->Consume(r);
        last_record_us = tw::ring::NowMicros();
        break;
      case Ring::PeekResult::kAbandoned: {
        Log(Level::kWarn, "abandoned ring record skipped (producer died)", {{"pid", r->pid}});
        if (r->slot < ring_->slot_count()) {
          if (auto d = GetDb(r->slot, false)) {
            std::lock_guard<std::mutex> lk(d->mu);
            NeedSnapshotLocked(d.get(), "a writer died while publishing");
          }
        }
        ring_->Consume(r);
        break;
      }
      case Ring::PeekResult::kBusy:
        ring_->Wait(token, 2, false);
        break;
      case Ring::PeekResult::kEmpty: {
        const int64_t now = tw::ring::NowMicros();
        h->consumer_heartbeat_us.store(now, std::memory_order_relaxed);
        // A full ring drops records without always being able to say so in
        // a record (not even the empty resync record may fit): the counter
        // in the header is the signal, looked at once the ring is drained.
        const uint64_t dropped = h->records_dropped.load(std::memory_order_relaxed);
        if (dropped != seen_dropped) {
          seen_dropped = dropped;
          CheckOverflow();
        }
        // Busy in the last second: nap 2 ms without asking to be woken (no
        // futex call per commit); idle: sleep deep until a producer wakes us.
        if (now - last_record_us < 1000000) ring_->Wait(token, 2, false);
        else ring_->Wait(token, 500, true);
        break;
      }
    }
  }
}

void Replicator::OnRecord(const tw::ring::RecordHeader* r) {
  if (r->slot >= ring_->slot_count()) return;
  Slot* s = ring_->slot(r->slot);
  if (!s->used.load(std::memory_order_acquire)) return;
  auto d = GetDb(r->slot, true);
  std::lock_guard<std::mutex> lk(d->mu);
  switch (r->type) {
    case tw::ring::kRegister:
      if (d->api_stopped) {
        PublishSlot(d.get());  // the VFS reset the slot's state on open: deleted it stays
        break;
      }
      if (d->phase == Phase::kDeleted &&
          s->state.load() != uint32_t(tw::ring::DbState::kDeleted)) {
        Log(Level::kInfo, "database re-created: new generation",
            {{"tenant", d->tenant}, {"db", d->name}});
        d->phase = Phase::kActive;  // so that NeedSnapshotLocked queues it
        NeedSnapshotLocked(d.get(), "database re-created");
      }
      break;
    case tw::ring::kResync:
      // The record is a wake-up; the slot's flag is the truth. A snapshot in
      // progress clears it when it fixes its txid, and checks it again when
      // it completes, so records that arrive meanwhile are not needed.
      if (d->phase == Phase::kActive && s->resync.load(std::memory_order_acquire)) {
        NeedSnapshotLocked(d.get(), "capture reported: " + Ring::ReadError(s));
      }
      break;
    case tw::ring::kDelete:
      if (d->phase != Phase::kNotReplicated) {
        d->phase = Phase::kDeleted;
        d->pending.clear();
        d->pending_bytes = 0;
        d->partial.reset();
        std::vector<uint64_t>().swap(d->page_crc);  // a tombstone keeps no per-page state
        Log(Level::kInfo, "database deleted: replication stopped, replica kept",
            {{"audit", 1}, {"action", "delete"}, {"source", "vfs"}, {"tenant", d->tenant},
             {"db", d->name}});
        PublishSlot(d.get());
      }
      break;
    case tw::ring::kTxn:
      OnTxnChunk(d.get(), r);
      break;
    default:
      break;
  }
}

void Replicator::OnTxnChunk(Db* d, const tw::ring::RecordHeader* r) {
  if (d->phase != Phase::kActive && d->phase != Phase::kSnapshotting) {
    d->partial.reset();
    return;  // the coming snapshot covers it
  }
  const uint32_t ps = r->page_size;
  if (!tw::wal::ValidPageSize(ps)) {
    NeedSnapshotLocked(d, "bad page size in ring record");
    return;
  }
  if (r->flags & tw::ring::kFirst) {
    if (d->partial) {
      NeedSnapshotLocked(d, "incomplete transaction in the ring");
      if (d->phase == Phase::kNeedSnapshot) return;
    }
    d->partial = std::make_unique<Txn>();
    d->partial->txid = r->txid;
    d->partial->page_size = ps;
  } else if (!d->partial || d->partial->txid != r->txid || d->partial->page_size != ps) {
    d->partial.reset();
    NeedSnapshotLocked(d, "missing part of a transaction in the ring");
    return;
  }
  d->partial_last_us = tw::ring::NowMicros();
  Txn* t = d->partial.get();
  const uint8_t* p = reinterpret_cast<const uint8_t*>(r) + tw::ring::kRecordHeaderBytes;
  const size_t entry = 8 + ps;
  if (uint64_t(r->page_count) * entry + tw::ring::kRecordHeaderBytes > r->length) {
    d->partial.reset();
    NeedSnapshotLocked(d, "malformed ring record");
    return;
  }
  t->pages.reserve(t->pages.size() + size_t(r->page_count) * ps);
  for (uint32_t i = 0; i < r->page_count; ++i, p += entry) {
    uint64_t pg;
    std::memcpy(&pg, p, 8);
    t->pgnos.push_back(uint32_t(pg));
    t->pages.append(reinterpret_cast<const char*>(p + 8), ps);
  }
  if (!(r->flags & tw::ring::kLast)) return;
  t->commit_us = r->commit_us;
  t->db_pages = r->db_pages_after;
  t->wal = {r->wal_salt1, r->wal_salt2, r->wal_frame, r->wal_cksum1, r->wal_cksum2};
  std::unique_ptr<Txn> txn = std::move(d->partial);
  if (d->phase == Phase::kActive) {
    uint64_t last = d->pending.empty() ? d->last_txid : d->pending.back().txid;
    if (txn->txid <= last) return;  // already covered (e.g. by the snapshot)
    if (txn->txid != last + 1) {
      NeedSnapshotLocked(d, "gap in transactions: expected txid " + std::to_string(last + 1) +
                                ", got " + std::to_string(txn->txid));
      return;
    }
  }
  if (d->pending.empty()) d->pending_since_us = tw::ring::NowMicros();
  d->pending_bytes += txn->pages.size();
  d->pending.push_back(std::move(*txn));
  MarkDirtyLocked(d);
  if (d->phase == Phase::kSnapshotting && d->pending_bytes > opts_.pending_max_bytes) {
    NeedSnapshotLocked(d, "too many transactions while a snapshot was in progress");
  }
  ring_->slot(d->slot)->pending_bytes.store(d->pending_bytes, std::memory_order_relaxed);
}

void Replicator::NeedSnapshotLocked(Db* d, const std::string& why) {
  // Fenced: only a claim (ClaimDatabase) takes it out; another host owns it.
  if (d->phase == Phase::kDeleted || d->phase == Phase::kNotReplicated ||
      d->phase == Phase::kFenced) {
    return;
  }
  d->pending.clear();
  d->pending_bytes = 0;
  d->partial.reset();
  if (d->phase == Phase::kNeedSnapshot) return;
  d->snapshot_reason = why;
  ++d->snapshot_epoch;  // a snapshot in progress no longer applies
  Log(Level::kWarn, "continuity in doubt: new snapshot",
      {{"tenant", d->tenant}, {"db", d->name}, {"reason", why}});
  d->phase = Phase::kNeedSnapshot;
  // A snapshot already in progress will see the phase change and requeue.
  std::lock_guard<std::mutex> lk(mu_);
  snapshot_q_.push_back(dbs_[d->slot]);
  cv_.notify_all();
}

// ---- sealing and uploading -------------------------------------------------

Status Replicator::SealLocked(Db* d) {
  // Called with d->mu held; the batch is moved out and written to the spool.
  std::list<Txn> txns;
  if (d->cut_after_txid > d->last_txid && !d->pending.empty() &&
      d->pending.front().txid <= d->cut_after_txid && d->pending.back().txid > d->cut_after_txid) {
    // A scheduled snapshot stands at cut_after_txid: end this segment there,
    // so that a segment starts right after the snapshot (compaction.h).
    while (d->pending.front().txid <= d->cut_after_txid) {
      d->pending_bytes -= d->pending.front().pages.size();
      txns.push_back(std::move(d->pending.front()));
      d->pending.pop_front();
    }
    MarkDirtyLocked(d);  // the rest is sealed on the next tick
  } else {
    txns.swap(d->pending);
    d->pending_bytes = 0;
  }
  const std::string path = opts_.spool_dir + "/" + std::to_string(getpid()) + "-" +
                           std::to_string(++seq_) + ".twseg";
  tw::SegmentHeader h;
  h.tenant = d->tenant;
  h.db = d->name;
  h.generation = d->generation;
  h.page_size = d->page_size;
  h.min_txid = txns.front().txid;
  h.checksum_before = d->checksum;
  tw::SegmentWriter w;
  Status st = w.Open(path, h, opts_.zstd_level);
  std::vector<uint8_t> zero(d->page_size, 0);
  for (const Txn& t : txns) {
    if (!st.ok()) break;
    if (t.page_size != d->page_size) {
      st = Status::InvalidArgument("page size changed");
      break;
    }
    // Resize: a shrink drops the terms of truncated pages; growth adds
    // zero-filled pages until the transaction's pages overwrite them.
    while (d->db_pages > t.db_pages) {
      d->checksum ^= d->page_crc[d->db_pages - 1];
      d->page_crc.pop_back();
      --d->db_pages;
    }
    while (d->db_pages < t.db_pages) {
      ++d->db_pages;
      uint64_t z = tw::PageChecksum(d->db_pages, zero.data(), zero.size());
      d->page_crc.push_back(z);
      d->checksum ^= z;
    }
    for (size_t i = 0; i < t.pgnos.size(); ++i) {
      uint32_t pg = t.pgnos[i];
      if (pg == 0 || pg > d->db_pages) continue;  // beyond the committed size
      const uint8_t* data = reinterpret_cast<const uint8_t*>(t.pages.data()) + i * d->page_size;
      uint64_t c = tw::PageChecksum(pg, data, d->page_size);
      d->checksum ^= d->page_crc[pg - 1] ^ c;
      d->page_crc[pg - 1] = c;
    }
    tw::TxnInfo info;
    info.txid = t.txid;
    info.commit_us = t.commit_us;
    info.db_pages_after = t.db_pages;
    uint32_t n = 0;
    for (uint32_t pg : t.pgnos) n += (pg != 0 && pg <= t.db_pages);
    info.page_count = n;
    info.checksum_after = d->checksum;
    st = w.BeginTxn(info);
    for (size_t i = 0; st.ok() && i < t.pgnos.size(); ++i) {
      uint32_t pg = t.pgnos[i];
      if (pg == 0 || pg > t.db_pages) continue;
      st = w.AddPage(pg, reinterpret_cast<const uint8_t*>(t.pages.data()) + i * d->page_size);
    }
  }
  uint64_t bytes = 0;
  if (st.ok()) st = w.Finish(txns.back().wal, false, &bytes);
  if (!st.ok()) {
    w.Abandon();
    // The in-memory checksum state advanced part way: only a snapshot can
    // restore a known state. (ENOSPC/EIO: the snapshot is retried with
    // backoff and succeeds once the spool is writable again.)
    const std::string msg = "cannot write segment to the spool " + opts_.spool_dir + ": " +
                            st.ToString();
    spool_.NoteWriteError(msg);
    Log(Level::kError, "spool write failed; the batch is dropped and a new snapshot follows",
        {{"audit", 1}, {"action", "error"}, {"tenant", d->tenant}, {"db", d->name},
         {"error", st.ToString()}, {"spool", opts_.spool_dir}});
    d->phase = Phase::kActive;
    NeedSnapshotLocked(d, msg);
    ++d->errors;
    d->last_error = msg;
    return st;
  }
  Sealed s;
  s.path = path;
  s.min_txid = txns.front().txid;
  s.max_txid = txns.back().txid;
  s.key = tw::SegmentKey(d->tenant, d->name, d->generation, s.min_txid, s.max_txid);
  s.bytes = bytes;
  s.last_commit_us = txns.back().commit_us;
  s.first_commit_us = txns.front().commit_us;
  s.db_pages = txns.back().db_pages;
  s.store = d->target ? d->target : tenants_->Store(d->tenant, nullptr);
  d->last_txid = s.max_txid;
  spool_.Add(s.bytes);
  d->sealed.push_back(std::move(s));
  return Status::OK();
}

void Replicator::MarkDirtyLocked(Db* d) {
  if (d->in_dirty) return;
  d->in_dirty = true;
  std::lock_guard<std::mutex> lk(mu_);
  if (dirty_.empty()) flush_cv_.notify_one();
  dirty_.push_back(dbs_[d->slot]);
}

// Seals batches that are due: the sync interval has passed since their
// oldest transaction arrived, they reached the size bound, or a
// tenantwal_wait() caller asked for one of their transactions. Only
// databases with pending transactions are visited (the dirty list), so idle
// databases cost nothing however many there are.
void Replicator::FlushLoop() {
  // A tenantwal_wait() caller is noticed within one tick: keep it short (the
  // loop visits only dirty databases; with none, it sleeps on flush_cv_).
  const int64_t tick_us = std::clamp<int64_t>(opts_.sync_interval_us / 4, 2000, 5000);
  std::map<std::string, int64_t> sync_over;  // tenants with their own settings (copy)
  int64_t sync_global = opts_.sync_interval_us;
  uint64_t sync_ver = ~0ull;
  while (!stop_) {
    {
      // Nothing pending: sleep until a transaction arrives (AddDirty) or the
      // earliest deferred database is due (DeferLocked wakes us when it adds
      // an earlier one); no wakeups at all on an idle host. Else tick.
      std::unique_lock<std::mutex> lk(mu_);
      while (!stop_ && dirty_.empty()) {
        if (deferred_.empty()) {
          flush_cv_.wait(lk);
          continue;
        }
        const int64_t wait_us = deferred_.begin()->first - tw::ring::NowMicros();
        if (wait_us <= 0) break;
        flush_cv_.wait_for(lk, std::chrono::microseconds(wait_us));
      }
    }
    usleep(useconds_t(tick_us));
    if (tenants_->version() != sync_ver) {
      sync_ver = tenants_->version();
      sync_over.clear();
      for (auto& t : tenants_->Configured()) sync_over[t] = tenants_->Get(t).sync_us;
      sync_global = tenants_->Get("").sync_us;  // "" is never a tenant: the global value
    }
    MoveDueDeferred();
    std::vector<std::shared_ptr<Db>> dbs;
    {
      std::lock_guard<std::mutex> lk(mu_);
      dbs.swap(dirty_);
    }
    const int64_t now = tw::ring::NowMicros();
    std::vector<std::shared_ptr<Db>> keep;
    for (auto& d : dbs) {
      std::unique_lock<std::mutex> lk(d->mu);
      if (d->pending.empty()) {
        d->in_dirty = false;
        continue;
      }
      const uint64_t want = ring_->slot(d->slot)->flush_txid.load(std::memory_order_acquire);
      auto so = sync_over.find(d->tenant);
      const int64_t sync_us = so != sync_over.end() ? so->second : sync_global;
      const bool waited_for = want >= d->pending.front().txid;
      const bool due = now - d->pending_since_us >= sync_us ||
                       d->pending_bytes >= opts_.segment_max_bytes || waited_for;
      if (d->phase != Phase::kActive || !due) {
        keep.push_back(d);
        continue;
      }
      d->in_dirty = false;
      if (!SealLocked(d.get()).ok()) continue;
      if (SpoolBoundLocked(d.get())) continue;
      if (!d->uploading && !d->deferred) {
        lk.unlock();
        std::lock_guard<std::mutex> g(mu_);
        // A segment someone waits for (tenantwal_wait) goes ahead of the
        // interval's routine uploads of other databases.
        if (waited_for) upload_q_.push_front(d);
        else upload_q_.push_back(d);
        cv_.notify_all();
      }
    }
    if (!keep.empty()) {
      std::lock_guard<std::mutex> lk(mu_);
      dirty_.insert(dirty_.end(), keep.begin(), keep.end());
    }
    if (spool_.Over()) EnforceSpoolBound();
  }
}

// A database whose sealed segments exceed --spool-max-db-mb (its tenant is
// throttled, or S3 is unreachable) gives them up and takes a new snapshot
// later instead: the spool stays bounded, and the snapshot (itself subject to
// the rate limit) replaces the history that was dropped. The segment being
// uploaded, if any, is left to finish. True if segments were dropped.
bool Replicator::SpoolBoundLocked(Db* d) {
  if (d->SealedBytes() <= opts_.spool_max_db_bytes) return false;
  DropSealedLocked(d, "the database's spool bound (--spool-max-db-mb " +
                          std::to_string(opts_.spool_max_db_bytes >> 20) +
                          ") reached: throttled or S3 unreachable");
  return true;
}

void Replicator::DeferLocked(const std::shared_ptr<Db>& d, int64_t not_before_us) {
  if (d->deferred) return;
  d->deferred = true;
  std::lock_guard<std::mutex> lk(mu_);
  // The flusher moves them back when due; it sleeps until the earliest.
  if (deferred_.empty() || not_before_us < deferred_.begin()->first) flush_cv_.notify_one();
  deferred_.emplace(not_before_us, d);
}

void Replicator::MoveDueDeferred() {
  std::vector<std::shared_ptr<Db>> due;
  const int64_t now = tw::ring::NowMicros();
  {
    std::lock_guard<std::mutex> lk(mu_);
    while (!deferred_.empty() && deferred_.begin()->first <= now) {
      due.push_back(deferred_.begin()->second);
      deferred_.erase(deferred_.begin());
    }
  }
  for (auto& d : due) {
    std::lock_guard<std::mutex> lk(d->mu);
    d->deferred = false;
    std::lock_guard<std::mutex> g(mu_);
    if (d->phase == Phase::kNeedSnapshot) snapshot_q_.push_back(d);
    else if (!d->sealed.empty()) upload_q_.push_back(d);
    cv_.notify_all();
  }
}

void Replicator::PublishSlot(Db* d) {
  Slot* s = ring_->slot(d->slot);
  s->state.store(uint32_t(SlotState(d->phase)), std::memory_order_relaxed);
  s->replicated_txid.store(d->durable_txid, std::memory_order_release);
  s->replicated_commit_us.store(d->durable_commit_us, std::memory_order_relaxed);
  s->last_snapshot_us.store(d->last_snapshot_us, std::memory_order_relaxed);
  s->pending_bytes.store(d->pending_bytes + d->SealedBytes(), std::memory_order_relaxed);
  if (d->durable_txid >= s->txid) {
    s->pending_since_us.store(0, std::memory_order_relaxed);
  } else {
    // Still behind: the oldest transaction not yet durable is the first of
    // the sealed or pending ones, or else (all still in the ring) one
    // committed after the last durable one. Move the writers' mark forward
    // to it, so lag_ms is the age of that transaction and not the time since
    // the database was last wholly caught up (never, under steady writes).
    int64_t oldest = !d->sealed.empty()    ? d->sealed.front().first_commit_us
                     : !d->pending.empty() ? d->pending.front().commit_us
                                           : d->durable_commit_us;
    int64_t cur = s->pending_since_us.load(std::memory_order_relaxed);
    if (cur > 0 && oldest > cur) {
      s->pending_since_us.compare_exchange_strong(cur, oldest, std::memory_order_relaxed);
    }
  }
  size_t n = std::min(d->generation.size(), sizeof s->generation - 1);
  std::memcpy(s->generation, d->generation.data(), n);
  s->generation[n] = 0;
  s->throttled_until_us.store(d->throttled_until_us, std::memory_order_relaxed);
  Ring::SetError(s, d->last_error);
}

namespace {
thread_local Db* tls_uploading = nullptr;  // the database UploadLoop is uploading for
}  // namespace

void Replicator::NoteRetry(const Status& e, int retry) {
  Db* d = tls_uploading;
  if (!d) return;
  std::lock_guard<std::mutex> lk(d->mu);
  d->last_error = "upload: attempt " + std::to_string(retry) + " failed, retrying: " +
                  e.ToString();
  PublishSlot(d);
}

void Replicator::UploadLoop() {
  while (!stop_) {
    std::shared_ptr<Db> d;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !upload_q_.empty(); });  // every push notifies
      if (stop_) return;
      if (upload_q_.empty()) continue;
      d = upload_q_.front();
      upload_q_.pop_front();
    }
    Sealed s;
    {
      std::lock_guard<std::mutex> lk(d->mu);
      if (d->uploading || d->sealed.empty()) continue;
      // Over its tenant's rate limit: the segment waits in the spool and
      // this thread moves on to other tenants (never sleeps on this one).
      const int64_t now = tw::ring::NowMicros();
      const int64_t wait = tenants_->AdmitWaitUs(d->tenant, now);
      if (wait > 0) {
        d->throttled_until_us = now + wait;
        PublishSlot(d.get());
        DeferLocked(d, now + wait);
        continue;
      }
      if (d->throttled_until_us) {
        d->throttled_until_us = 0;
        PublishSlot(d.get());
      }
      d->uploading = true;
      s = d->sealed.front();
      d->uploading_path = s.path;
    }
    std::map<std::string, std::string> meta = {
        {"tenantwal-min-txid", std::to_string(s.min_txid)},
        {"tenantwal-max-txid", std::to_string(s.max_txid)},
        {"tenantwal-commit-us", std::to_string(s.last_commit_us)}};
    // The authority still names this host and this generation (read again
    // at most every kOwnershipCheckUs; ownership.cc). Otherwise the segment
    // is not uploaded: CheckOwnership fenced the database or queued a
    // snapshot, which dropped its sealed segments.
    if (!CheckOwnership(d, s.store.get())) {
      std::lock_guard<std::mutex> lk(d->mu);
      d->uploading = false;
      d->uploading_path.clear();
      const bool listed = !d->sealed.empty() && d->sealed.front().path == s.path;
      if (!listed) {
        unlink(s.path.c_str());
        spool_.Release(s.bytes);
      }
      continue;
    }
    tls_uploading = d.get();
    Status st = s.store->PutFile(s.key, s.path, meta);
    tls_uploading = nullptr;
    const int64_t debt_until = tenants_->Charge(d->tenant, s.bytes, 1, tw::ring::NowMicros());
    bool more = false;
    {
      std::lock_guard<std::mutex> lk(d->mu);
      d->uploading = false;
      // Over the limit after this upload: shown as throttled until repaid.
      d->throttled_until_us = debt_until > tw::ring::NowMicros() ? debt_until : 0;
      d->uploading_path.clear();
      // Not listed any more: the spool bound dropped the database's segments
      // while this one was in flight (DropSealedLocked).
      const bool listed = !d->sealed.empty() && d->sealed.front().path == s.path;
      if (st.ok() || !listed) {
        unlink(s.path.c_str());
        spool_.Release(s.bytes);
      }
      if (!st.ok() && !listed) spool_.NoteDrop(d->tenant, 1, s.bytes, false);
      if (st.ok()) {
        if (listed) d->sealed.pop_front();
        d->durable_txid = std::max(d->durable_txid, s.max_txid);
        d->durable_commit_us = s.last_commit_us;
        d->bytes_uploaded += s.bytes;
        d->txns_uploaded += s.max_txid - s.min_txid + 1;
        d->failures = 0;
        d->last_error.clear();
        if (maint_) {
          IndexedObject o;
          o.key = s.key;
          o.min_txid = s.min_txid;
          o.max_txid = s.max_txid;
          o.first_us = s.first_commit_us;
          o.last_us = s.last_commit_us;
          o.size = s.bytes;
          o.db_pages = s.db_pages;
          maint_->OnSegmentUploaded(d->tenant, d->name, d->generation, o);
        }
        Log(Level::kDebug, "segment uploaded",
            {{"tenant", d->tenant}, {"db", d->name}, {"key", s.key}, {"bytes", s.bytes}});
      } else {
        ++d->failures;
        ++d->errors;
        d->last_error = "upload " + s.key + ": " + st.ToString();
        Log(Level::kError, "segment upload failed; will retry",
            {{"audit", 1}, {"action", "error"}, {"tenant", d->tenant}, {"db", d->name}, {"key", s.key}, {"error", st.ToString()}});
      }
      PublishSlot(d.get());
      more = !d->sealed.empty();
    }
    if (!st.ok() && more) {
      std::lock_guard<std::mutex> lk(d->mu);
      DeferLocked(d, tw::ring::NowMicros() +
                         std::min(5000000, 200000 * (1 << std::min(d->failures, 5))));
      continue;
    }
    if (more) {
      std::lock_guard<std::mutex> lk(mu_);
      upload_q_.push_back(d);
      cv_.notify_all();
    }
  }
}

// ---- snapshots ---------------------------------------------------------------

void Replicator::SnapshotLoop() {
  while (!stop_) {
    std::shared_ptr<Db> d;
    {
      std::unique_lock<std::mutex> lk(mu_);
      cv_.wait(lk, [&] { return stop_ || !snapshot_q_.empty(); });  // every push notifies
      if (stop_) return;
      if (snapshot_q_.empty()) continue;
      d = snapshot_q_.front();
      snapshot_q_.pop_front();
    }
    {
      std::unique_lock<std::mutex> lk(d->mu);
      if (d->phase == Phase::kActive && d->scheduled_snapshot) {
        // A scheduled snapshot in the current generation (compaction.h).
        lk.unlock();
        Status st = TakeSnapshot(d);
        lk.lock();
        d->scheduled_snapshot = false;
        if (!st.ok())
          Log(Level::kWarn, "scheduled snapshot failed",
              {{"tenant", d->tenant}, {"db", d->name}, {"error", st.ToString()}});
        lk.unlock();
        if (maint_) maint_->OnScheduledSnapshotDone(d->tenant, d->name);
        continue;
      }
      if (d->phase != Phase::kNeedSnapshot) continue;
      const int64_t now = tw::ring::NowMicros();
      const int64_t wait = now < d->next_attempt_us ? 0 : tenants_->AdmitWaitUs(d->tenant, now);
      if (wait > 0) {
        d->throttled_until_us = now + wait;
        d->next_attempt_us = now + wait;
        PublishSlot(d.get());
      }
      if (now < d->next_attempt_us) {
        DeferLocked(d, d->next_attempt_us);  // no sleep: other databases go first
        continue;
      } else {
        d->throttled_until_us = 0;
        d->phase = Phase::kSnapshotting;
        d->pending.clear();
        d->pending_bytes = 0;
        d->partial.reset();
        PublishSlot(d.get());
      }
      if (d->phase != Phase::kSnapshotting) continue;
    }
    // Wait for earlier segments of this database to finish uploading, so
    // that the new generation never races the old one.
    for (int i = 0; i < 600 && !stop_; ++i) {
      std::lock_guard<std::mutex> lk(d->mu);
      if (!d->uploading) break;
      usleep(10000);
    }
    std::string old_gen;
    uint64_t old_bytes = 0, old_snaps = 0;
    {
      std::lock_guard<std::mutex> lk(d->mu);
      old_gen = d->generation;
      old_bytes = d->bytes_uploaded;
      old_snaps = d->snapshots;
    }
    Status st = TakeSnapshot(d);
    if (st.ok()) {
      std::lock_guard<std::mutex> lk(d->mu);
      if (d->snapshots != old_snaps) {
        const int64_t until =
            tenants_->Charge(d->tenant, d->bytes_uploaded - old_bytes, 1, tw::ring::NowMicros());
        d->throttled_until_us = until > tw::ring::NowMicros() ? until : 0;
        PublishSlot(d.get());
      }
      if (d->generation != old_gen) {
        Log(Level::kInfo, "snapshot taken: new generation",
            {{"audit", 1}, {"action", "generation"}, {"tenant", d->tenant}, {"db", d->name},
             {"oldGeneration", old_gen}, {"generation", d->generation},
             {"txid", d->last_txid}, {"snapshots", d->snapshots}});
      }
    }
    if (!st.ok()) {
      std::lock_guard<std::mutex> lk(d->mu);
      const bool busy = st.code() == tw::Status::kBusy;
      if (!busy) {
        ++d->errors;
        Log(Level::kError, "snapshot failed",
            {{"audit", 1}, {"action", "error"}, {"tenant", d->tenant}, {"db", d->name},
             {"error", st.ToString()}});
      }
      if (!busy) ++d->failures;
      d->last_error = busy ? "" : "snapshot: " + st.ToString();
      int64_t backoff = busy ? 300000 : std::min<int64_t>(30000000, 500000LL << std::min(d->failures, 6));
      d->next_attempt_us = tw::ring::NowMicros() + backoff;
      Log(st.code() == tw::Status::kBusy ? Level::kInfo : Level::kError,
          "snapshot failed; will retry",
          {{"tenant", d->tenant}, {"db", d->name}, {"error", st.ToString()},
           {"retryInMs", backoff / 1000}});
      if (d->phase == Phase::kSnapshotting) d->phase = Phase::kNeedSnapshot;
      if (d->phase == Phase::kNeedSnapshot) {
        std::lock_guard<std::mutex> g(mu_);
        snapshot_q_.push_back(d);
      }
      PublishSlot(d.get());
    }
  }
}

}  // namespace twd

namespace twd {

bool Replicator::RequestScheduledSnapshot(const std::string& tenant, const std::string& db) {
  std::shared_ptr<Db> d = FindDb(tenant, db);
  if (!d) return false;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->phase != Phase::kActive || d->scheduled_snapshot) return false;
    d->scheduled_snapshot = true;
  }
  std::lock_guard<std::mutex> g(mu_);
  snapshot_q_.push_back(d);
  cv_.notify_all();
  return true;
}

std::vector<Replicator::DbView> Replicator::Databases() {
  std::vector<std::shared_ptr<Db>> dbs;
  {
    std::lock_guard<std::mutex> lk(mu_);
    for (auto& kv : dbs_) dbs.push_back(kv.second);
  }
  std::vector<DbView> out;
  out.reserve(dbs.size());
  const int64_t now = tw::ring::NowMicros();
  for (auto& d : dbs) out.push_back(View(d.get(), now));
  return out;
}

Replicator::DbView Replicator::View(Db* d, int64_t now) {
  tw::ring::Slot* s = ring_->slot(d->slot);
  std::lock_guard<std::mutex> lk(d->mu);
  DbView v;
  v.tenant = d->phase == Phase::kNotReplicated ? "" : d->tenant;
  v.db = d->name;
  v.path = d->path;
  v.phase = PhaseName(d->phase);
  v.generation = d->generation;
  v.last_error = d->last_error;
  if (d->phase == Phase::kNeedSnapshot || d->phase == Phase::kSnapshotting) {
    v.snapshot_reason = d->snapshot_reason;
  }
  v.txid = s->txid;
  v.replicated_txid = d->durable_txid;
  v.bytes = d->bytes_uploaded;
  v.snapshots = d->snapshots;
  v.txns = d->txns_uploaded;
  v.errors = d->errors;
  v.pending_bytes = d->pending_bytes + d->SealedBytes();
  v.created_us = d->created_us;
  v.last_snapshot_us = d->last_snapshot_us;
  v.throttled = d->throttled_until_us > now;
  int64_t since = s->pending_since_us.load();
  v.lag_ms = (v.replicated_txid < v.txid && since > 0) ? (now - since) / 1000 : 0;
  return v;
}

}  // namespace twd

namespace twd {

// Writers that bypass the VFS (a plain sqlite3 CLI, a crashed writer whose
// last commit was never published) change a database without telling the
// ring. The capture notices at the next write through the VFS; this loop
// covers databases that are not written through the VFS again. Every
// interval it stat()s each active database and its WAL; when they changed
// since the last look and have been quiet for 2 s (no commit in flight), it
// compares, under the slot mutex, what the files say with the capture
// cursor: the wal-index header (salts, mxFrame) in WAL mode, the file change
// counter in rollback-journal mode. A difference means changes the replica
// does not have: a new snapshot. Cost: two stat() calls per database per
// interval; nothing at all is read from unchanged databases.
// A cycle every --bypass-check-interval: rescan --root, then stat each
// database's files, paced at kBypassChecksPerSecond so that 50,000 idle
// databases cost well under 1 % of a core (each check is two stat() calls,
// ~5 us with the path walk). With N databases a cycle therefore lasts at
// least N / kBypassChecksPerSecond seconds (100 s at 50,000).
void Replicator::CheckOverflow() {
  std::vector<std::shared_ptr<Db>> all;
  {
    std::lock_guard<std::mutex> lk(mu_);
    all.reserve(dbs_.size());
    for (auto& kv : dbs_) all.push_back(kv.second);
  }
  size_t flagged = 0;
  for (auto& d : all) {
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->phase != Phase::kActive) continue;
    Slot* s = ring_->slot(d->slot);
    if (!s->resync.load(std::memory_order_acquire)) continue;
    NeedSnapshotLocked(d.get(), "capture reported: " + Ring::ReadError(s));
    PublishSlot(d.get());
    ++flagged;
  }
  if (flagged > 0) {
    Log(Level::kWarn, "the ring overflowed: databases flagged for a snapshot",
        {{"databases", flagged},
         {"recordsDropped", int64_t(ring_->header()->records_dropped.load())}});
    malloc_trim(0);  // the cut-short transactions were large: give the pages back
  }
}

void Replicator::BypassLoop() {
  constexpr size_t kBypassChecksPerSecond = 500;
  constexpr int64_t kTickUs = 100000;
  constexpr size_t kPerTick = kBypassChecksPerSecond * kTickUs / 1000000;
  int64_t next = tw::ring::NowMicros() + opts_.bypass_check_us;
  std::vector<std::shared_ptr<Db>> dbs;  // the current cycle's databases
  size_t pos = 0;
  while (!stop_) {
    {
      // Between cycles, sleep until the next one is due (not in ticks); in a
      // cycle, one tick between batches (the pacing). Stop() notifies cv_.
      const int64_t until = pos >= dbs.size() ? next : tw::ring::NowMicros() + kTickUs;
      std::unique_lock<std::mutex> lk(mu_);
      while (!stop_ && tw::ring::NowMicros() < until)
        cv_.wait_for(lk, std::chrono::microseconds(until - tw::ring::NowMicros()));
    }
    if (stop_) break;
    const int64_t now = tw::ring::NowMicros();
    if (pos >= dbs.size()) {
      dbs.clear();
      pos = 0;
      if (now < next) continue;
      next = now + opts_.bypass_check_us;
      // New files under --root that no application registered (one that
      // cannot reach the ring, or a file copied in): register them.
      ScanRoot();
      std::lock_guard<std::mutex> lk(mu_);
      dbs.reserve(dbs_.size());
      for (auto& kv : dbs_) dbs.push_back(kv.second);
    }
    for (size_t end = std::min(dbs.size(), pos + kPerTick); pos < end && !stop_; ++pos) {
      CheckBypass(dbs[pos], now);
    }
  }
}

void Replicator::CheckBypass(const std::shared_ptr<Db>& d, int64_t now_us) {
  {
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->phase != Phase::kActive) return;
    // Whatever the application does next: a resync the capture flagged
    // without a record (the ring was full), or a transaction whose last
    // chunks never came (dropped by a full ring; the writer is not coming
    // back to finish it), is resolved by a snapshot now, and the partial
    // transaction's memory is released.
    Slot* fs = ring_->slot(d->slot);
    if (fs->resync.load(std::memory_order_acquire)) {
      NeedSnapshotLocked(d.get(), "capture reported: " + Ring::ReadError(fs));
      PublishSlot(d.get());
      return;
    }
    if (d->partial && now_us - d->partial_last_us > opts_.bypass_check_us) {
      NeedSnapshotLocked(d.get(), "a transaction was cut short in the ring (its last part never "
                                  "arrived: the ring overflowed or its writer died)");
      PublishSlot(d.get());
      malloc_trim(0);  // it may have been large: give the pages back
      return;
    }
    if (!d->pending.empty() || d->partial) return;
  }
  struct stat sdb, swal;
  if (stat(d->path.c_str(), &sdb) != 0) return;
  const bool has_wal = stat((d->path + "-wal").c_str(), &swal) == 0;
  const int64_t mdb = int64_t(sdb.st_mtim.tv_sec) * 1000000000 + sdb.st_mtim.tv_nsec;
  const int64_t mwal = has_wal ? int64_t(swal.st_mtim.tv_sec) * 1000000000 + swal.st_mtim.tv_nsec
                               : 0;
  const int64_t swal_size = has_wal ? int64_t(swal.st_size) : -1;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    if (mdb == d->seen_db_mtime && mwal == d->seen_wal_mtime &&
        int64_t(sdb.st_size) == d->seen_db_size && swal_size == d->seen_wal_size) {
      return;  // untouched since the last look
    }
    if (now_us * 1000 - std::max(mdb, mwal) < 2000000000LL) return;  // not quiet yet
    d->seen_db_mtime = mdb;
    d->seen_wal_mtime = mwal;
    d->seen_db_size = int64_t(sdb.st_size);
    d->seen_wal_size = swal_size;
  }
  Slot* s = ring_->slot(d->slot);
  bool died = false;
  if (!ring_->LockSlot(s, true, &died).ok()) return;  // busy: a writer is at work
  std::string why;
  tw::wal::IndexHeader ih;
  bool wal = false;
  {
    // Through PeekFile: a snapshot of this database may hold SQLite locks
    // on the -shm that a plain close() would drop (peek_file.h).
    PeekFile shm;
    uint8_t buf[2 * sizeof(tw::wal::IndexHeader)];
    if (shm.Open(d->path + "-shm").ok()) {
      wal = shm.Read(buf, sizeof buf, 0) == long(sizeof buf) &&
            tw::wal::ReadIndexHeader(buf, &ih) && has_wal;
    }
  }
  if (died) {
    why = "a writer died holding the capture lock";
  } else if (wal) {
    const bool empty_ok = s->cursor_valid == 2 && ih.mxFrame == 0;
    const bool same = s->cursor_valid == 1 && s->salt1 == ih.aSalt[0] &&
                      s->salt2 == ih.aSalt[1] && s->frame == ih.mxFrame;
    if (!same && !empty_ok) {
      why = "the WAL holds commits that were not captured (a writer bypassed tenantwal or "
            "died before publishing)";
    }
  } else if (s->rb_valid) {
    PeekFile dbf;
    uint8_t h[28];
    if (dbf.Open(d->path).ok() && dbf.Read(h, sizeof h, 0) == long(sizeof h) &&
        tw::wal::GetBE32(h + 24) != s->rb_counter) {
      why = "the database file changed outside tenantwal";
    }
  }
  if (!why.empty()) {
    s->resync.store(1, std::memory_order_release);
  }
  ring_->UnlockSlot(s);
  if (!why.empty()) {
    std::lock_guard<std::mutex> lk(d->mu);
    NeedSnapshotLocked(d.get(), why);
  }
}

}  // namespace twd

// ---- control plane (the API) -------------------------------------------------

namespace twd {

std::string Replicator::StoppedMarker(const std::string& tenant, const std::string& db) const {
  return opts_.spool_dir + "/state/" + tenant + "/" + db + ".stopped";
}

std::shared_ptr<Db> Replicator::FindDb(const std::string& tenant, const std::string& db) {
  uint32_t idx;
  if (!ring_->FindSlot(tenant, db, &idx).ok()) return nullptr;
  return GetDb(idx, false);
}

Status Replicator::Database(const std::string& tenant, const std::string& db, DbView* out) {
  auto d = FindDb(tenant, db);
  if (!d || d->phase == Phase::kNotReplicated) {
    return Status::NotFound("no database " + tenant + "/" + db);
  }
  // One view, not a listing: registering or deleting stays O(1) with many
  // databases (the leak test registers 10,000).
  *out = View(d.get(), tw::ring::NowMicros());
  if (out->tenant != tenant || out->db != db) return Status::NotFound("no database " + tenant + "/" + db);
  return Status::OK();
}

Status Replicator::RegisterDatabase(const std::string& tenant, const std::string& db,
                                    const std::string& path, bool* created) {
  *created = false;
  uint32_t idx;
  bool new_slot;
  TW_RETURN_IF_ERROR(ring_->FindOrAddSlot(tenant, db, path, &idx, &new_slot));
  Slot* s = ring_->slot(idx);
  if (strncmp(s->path, path.c_str(), sizeof s->path) != 0) {
    return Status::Aborted(tenant + "/" + db + " is registered for another file: " +
                           std::string(s->path, strnlen(s->path, sizeof s->path)));
  }
  unlink(StoppedMarker(tenant, db).c_str());
  if (auto d = GetDb(idx, false)) {
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->phase != Phase::kDeleted) return Status::OK();  // already registered
    d->api_stopped = false;
    d->phase = Phase::kActive;  // so that NeedSnapshotLocked queues it
    NeedSnapshotLocked(d.get(), "registered again through the API");
    d->next_attempt_us = 0;
    PublishSlot(d.get());
    *created = true;
    return Status::OK();
  }
  GetDb(idx, true);
  *created = true;
  return Status::OK();
}

Status Replicator::StopDatabase(const std::string& tenant, const std::string& db) {
  auto d = FindDb(tenant, db);
  if (!d) return Status::NotFound("no database " + tenant + "/" + db);
  std::lock_guard<std::mutex> lk(d->mu);
  if (d->phase == Phase::kNotReplicated) return Status::NotFound("no database " + tenant + "/" + db);
  d->phase = Phase::kDeleted;
  d->api_stopped = true;
  ++d->snapshot_epoch;  // a snapshot in progress does not apply
  d->pending.clear();
  d->pending_bytes = 0;
  d->partial.reset();
  // A tombstone keeps no per-page state (8 bytes a page); a new registration
  // starts with a snapshot, which rebuilds it.
  std::vector<uint64_t>().swap(d->page_crc);
  const std::string dir = opts_.spool_dir + "/state/" + tenant;
  Status st = MkdirAll(dir, 0700);
  if (st.ok()) {
    int fd = open(StoppedMarker(tenant, db).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) st = Status::IOError("create " + StoppedMarker(tenant, db) + ": " + strerror(errno));
    else close(fd);
  }
  PublishSlot(d.get());
  return st;
}

Status Replicator::RequestSnapshot(const std::string& tenant, const std::string& db,
                                   bool* queued) {
  *queued = false;
  auto d = FindDb(tenant, db);
  if (!d) return Status::NotFound("no database " + tenant + "/" + db);
  std::lock_guard<std::mutex> lk(d->mu);
  if (d->phase == Phase::kNotReplicated) return Status::NotFound("no database " + tenant + "/" + db);
  if (d->phase == Phase::kDeleted) {
    return Status::Aborted(tenant + "/" + db + " is deleted: register it again first");
  }
  d->next_attempt_us = 0;
  if (d->phase == Phase::kNeedSnapshot) {
    // It may be waiting out a backoff in deferred_: look at it now.
    std::lock_guard<std::mutex> g(mu_);
    snapshot_q_.push_back(dbs_[d->slot]);
    cv_.notify_all();
  }
  if (d->phase != Phase::kActive) return Status::OK();  // one is already pending
  NeedSnapshotLocked(d.get(), "snapshot requested through the API");
  PublishSlot(d.get());
  *queued = true;
  return Status::OK();
}

StoreHealth Replicator::StoreHealthNow() const {
  return observed_ ? observed_->Health() : StoreHealth{};
}

}  // namespace twd
