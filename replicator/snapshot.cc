// tenantwald: taking a snapshot of a live database.
//
// A snapshot must be the database *exactly* after some txid S, so that the
// transactions the capture publishes after S continue it, and it must not
// hold SQLite's write lock while it copies. The procedure:
//
//  1. Connection A: BEGIN IMMEDIATE (takes the WAL write lock: no commit can
//     happen, and every earlier committer has published and released).
//  2. Under the slot mutex, read the wal-index header from the -shm file.
//     If the capture cursor is exactly at its mxFrame, S = the slot's txid;
//     otherwise (first sight, crashed or bypassing writer) the cursor moves
//     to mxFrame and S = a new txid that stands for "everything up to here".
//     The slot's resync flag is cleared: the doubt is resolved at S.
//  3. Connection B (read-only): BEGIN and read, pinning a read transaction
//     at exactly S. Then A rolls back: writers continue at once.
//  4. Copy pages 1..nPage: from the WAL (the newest frame of each page up to
//     mxFrame) or else from the database file. A checkpoint can only copy
//     frames B's read mark allows, i.e. frames of this same state, and the
//     WAL cannot restart while B reads, so the copy is consistent without
//     any lock held against writers.
//  5. Stream the pages into a SnapshotWriter (zstd) in the spool, upload,
//     and hand the page checksums to the segment path.
// Both connections disable checkpoint-on-close, so the replicator never
// checkpoints or deletes a WAL behind the capture's back.
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <unordered_map>

#include "log.h"
#include "peek_file.h"
#include "replicator.h"

namespace twd {

using tw::Status;

namespace {

struct Conn {
  sqlite3* db = nullptr;
  ~Conn() {
    if (db) sqlite3_close_v2(db);
  }
};

Status OpenConn(const std::string& path, bool readonly, Conn* c) {
  int flags = (readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
  int rc = sqlite3_open_v2(path.c_str(), &c->db, flags, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = c->db ? sqlite3_errmsg(c->db) : sqlite3_errstr(rc);
    if (rc == SQLITE_CANTOPEN) return Status::NotFound("open " + path + ": " + m);
    return Status::IOError("open " + path + ": " + m);
  }
  sqlite3_db_config(c->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
  sqlite3_busy_timeout(c->db, 2000);
  return Status::OK();
}

Status Exec(Conn* c, const char* sql) {
  char* err = nullptr;
  int rc = sqlite3_exec(c->db, sql, nullptr, nullptr, &err);
  std::string m = err ? err : "";
  sqlite3_free(err);
  if (rc == SQLITE_OK) return Status::OK();
  if ((rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED) {
    return Status::Busy(std::string(sql) + ": " + m);
  }
  return Status::IOError(std::string(sql) + ": " + m);
}

}  // namespace

Status Replicator::TakeSnapshot(const std::shared_ptr<Db>& d) {
  const int64_t t0 = tw::ring::NowMicros();
  uint64_t epoch;
  // Scheduled (compaction.h): a snapshot in the current generation, only if
  // continuity is beyond doubt; otherwise a new generation is requested.
  bool scheduled;
  std::string cur_gen;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    epoch = d->snapshot_epoch;
    scheduled = d->phase == Phase::kActive && d->scheduled_snapshot;
    cur_gen = d->generation;
  }
  struct stat st;
  if (stat(d->path.c_str(), &st) != 0) {
    return Status::NotFound("database file " + d->path + " is missing");
  }
  struct stat wst;
  const bool wal_has_frames =
      stat((d->path + "-wal").c_str(), &wst) == 0 && wst.st_size > off_t(tw::wal::kHeaderSize);
  if (st.st_size < 512 && !wal_has_frames) {
    // Just created: the application is still setting it up (page size,
    // journal_mode=WAL needs an exclusive lock and no busy handler waits
    // for it), so take no lock at all and come back later.
    return Status::Busy("database not initialized yet");
  }
  // Rollback-journal databases (header byte 18 is 1; 2 means WAL): a read
  // transaction alone excludes commits (a writer needs EXCLUSIVE), so no
  // read-write connection is opened at all. A read-write connection could
  // roll a journal it finds "hot" back into the file, and an application
  // that deletes and recreates its files non-atomically would then have a
  // stale journal played into its new database by us.
  // File format version numbers at header offsets 18-19: 1 = rollback
  // journal, 2 = WAL (SQLite file format, section 1.3).
  //
  // Every file of the database is read through one descriptor each (the
  // database file opened here, the -shm and the WAL under the write lock),
  // and none is closed before the connections are: closing a descriptor of
  // a file drops every POSIX lock this process holds on it, B's read lock
  // included (peek_file.h). `hold` is declared before the connections, so
  // it ends after them and closes the parked descriptors then.
  LockHold hold(d->path);
  PeekFile dbf, shm, walf;
  TW_RETURN_IF_ERROR(dbf.Open(d->path));
  auto legacy_header = [&]() {
    uint8_t h[20];
    return dbf.Read(h, sizeof h, 0) == long(sizeof h) && h[18] == 1;
  };
  const bool rollback_mode = !wal_has_frames && legacy_header();
  Conn a, b;
  if (rollback_mode) {
    TW_RETURN_IF_ERROR(OpenConn(d->path, true, &b));
    TW_RETURN_IF_ERROR(Exec(&b, "BEGIN; SELECT count(*) FROM sqlite_master;"));
  } else {
    // B is opened before A takes the write lock: opening a connection (and
    // its file descriptors) need not happen while writers wait on us.
    TW_RETURN_IF_ERROR(OpenConn(d->path, true, &b));
    TW_RETURN_IF_ERROR(OpenConn(d->path, false, &a));
    TW_RETURN_IF_ERROR(Exec(&a, "BEGIN IMMEDIATE"));
    // Opened under the write lock: while A is open no connection can delete
    // the WAL (that takes an exclusive lock on the database), so these are
    // the files B reads through.
    shm.Open(d->path + "-shm");
    walf.Open(d->path + "-wal");
  }
  // The files read are the files locked: the hold, the descriptor and the
  // path must name one inode (an application that renames a new file over
  // its database between them makes us start again).
  {
    struct stat now, open_st;
    if (!hold.ok() || stat(d->path.c_str(), &now) != 0 || fstat(dbf.fd(), &open_st) != 0 ||
        now.st_ino != open_st.st_ino || now.st_dev != open_st.st_dev ||
        !hold.Holds(open_st.st_dev, open_st.st_ino)) {
      return Status::Busy("the database file was replaced while the snapshot was starting; "
                          "retrying");
    }
  }
  // The journal mode may have changed between the check above and the lock
  // now held (B's read lock in rollback mode, A's write lock in WAL mode;
  // either keeps it from changing again). Had a writer switched to WAL, B
  // would be a WAL reader that commits do not wait for, and the copy below
  // would read the file without the WAL: a state older than the txid it is
  // labelled with. Check again under the lock and retry on a change. (A
  // WAL with frames decided WAL mode above whatever the header says, as
  // SQLite opens a hot WAL whatever it says: nothing to recheck then.)
  if (!wal_has_frames && legacy_header() != rollback_mode) {
    return Status::Busy("the journal mode changed while the snapshot was starting; retrying");
  }

  // Step 2: fix S under the write lock and the slot mutex.
  tw::ring::Slot* s = ring_->slot(d->slot);
  bool died = false;
  TW_RETURN_IF_ERROR(ring_->LockSlot(s, false, &died));
  tw::wal::IndexHeader ih;
  bool wal = false;
  uint32_t backfilled = 0;
  {
    uint8_t buf[2 * sizeof(tw::wal::IndexHeader) + 4];
    if (shm.is_open() && shm.Read(buf, sizeof buf, 0) == long(sizeof buf)) {
      wal = tw::wal::ReadIndexHeader(buf, &ih);
      // WalCkptInfo.nBackfill follows the two header copies (src/wal.c).
      std::memcpy(&backfilled, buf + 2 * sizeof(tw::wal::IndexHeader), 4);
    }
    if (rollback_mode) wal = false;  // a -shm left from an earlier WAL era
  }
  if (scheduled) {
    bool doubt = died || s->resync.load(std::memory_order_acquire) != 0;
    if (wal) {
      doubt |= !((s->cursor_valid == 1 && s->salt1 == ih.aSalt[0] && s->salt2 == ih.aSalt[1] &&
                  s->frame == ih.mxFrame) ||
                 (s->cursor_valid == 2 && ih.mxFrame == 0));
    } else {
      uint8_t h[28];
      doubt |= s->rb_valid && dbf.Read(h, sizeof h, 0) == long(sizeof h) &&
               tw::wal::GetBE32(h + 24) != s->rb_counter;
    }
    if (doubt) {
      ring_->UnlockSlot(s);
      if (a.db) Exec(&a, "ROLLBACK");
      std::lock_guard<std::mutex> lk(d->mu);
      if (d->phase == Phase::kActive)
        NeedSnapshotLocked(d.get(), "scheduled snapshot: the capture does not match the WAL");
      return Status::OK();
    }
  }
  uint64_t S;
  uint32_t page_size = 0, n_pages = 0;
  tw::WalPosition pos;
  if (wal) {
    const bool same = (s->cursor_valid == 1 && s->salt1 == ih.aSalt[0] &&
                       s->salt2 == ih.aSalt[1] && s->frame == ih.mxFrame) ||
                      (s->cursor_valid == 2 && ih.mxFrame == 0);
    if (same && !died) {
      S = s->txid;
    } else {
      S = ++s->txid;
      if (ih.mxFrame == 0) {
        s->cursor_valid = 2;
      } else {
        s->salt1 = ih.aSalt[0];
        s->salt2 = ih.aSalt[1];
        s->frame = ih.mxFrame;
        s->cksum1 = ih.aFrameCksum[0];
        s->cksum2 = ih.aFrameCksum[1];
        s->cursor_valid = 1;
      }
    }
    page_size = ih.szPage == 1 ? 65536 : ih.szPage;
    n_pages = ih.nPage;
    pos = {ih.aSalt[0], ih.aSalt[1], ih.mxFrame, ih.aFrameCksum[0], ih.aFrameCksum[1]};
  } else {
    S = s->txid;
    if (s->cursor_valid == 0) s->cursor_valid = 2;
    // Rollback-journal mode: the file change counter (header offset 24) is
    // the baseline the capture checks at each write transaction.
    uint8_t h[28];
    if (dbf.Read(h, sizeof h, 0) == long(sizeof h)) {
      s->rb_counter = tw::wal::GetBE32(h + 24);
      s->rb_valid = 1;
    }
  }
  if (!scheduled) s->resync.store(0, std::memory_order_release);
  s->snapshot_txid.store(S, std::memory_order_release);
  const int64_t commit_us = s->last_commit_us.load();
  ring_->UnlockSlot(s);
  if (scheduled) {
    std::lock_guard<std::mutex> lk(d->mu);
    d->cut_after_txid = S;  // the next segment ends at S: one starts right after it
  }

  // Step 3: pin a read transaction at S, then let writers go.
  if (!rollback_mode) {
    Status rs = Exec(&b, "BEGIN; SELECT count(*) FROM sqlite_master;");
    Exec(&a, "ROLLBACK");
    sqlite3_close_v2(a.db);
    a.db = nullptr;
    TW_RETURN_IF_ERROR(rs);
  }

  if (!wal || ih.mxFrame == 0) {
    // Rollback-journal database, or a WAL with no frames: the file alone is
    // the database, and its header describes it
    // (SQLite file format, section 1.3: page size at 16, size at 28, valid
    // when the version-valid-for number at 92 equals the change counter at 24).
    uint8_t h[100];
    if (dbf.Read(h, sizeof h, 0) != long(sizeof h)) {
      return Status::NotFound("database " + d->path + " is empty (nothing to snapshot yet)");
    }
    uint32_t ps = (uint32_t(h[16]) << 8) | h[17];
    page_size = ps == 1 ? 65536 : ps;
    if (!tw::wal::ValidPageSize(page_size)) return Status::Corruption("bad page size in header");
    uint32_t hdr_pages = tw::wal::GetBE32(h + 28);
    bool valid = std::memcmp(h + 92, h + 24, 4) == 0 && hdr_pages > 0;
    struct stat fs;
    fstat(dbf.fd(), &fs);
    n_pages = valid ? hdr_pages : uint32_t(uint64_t(fs.st_size) / page_size);
  }
  if (!tw::wal::ValidPageSize(page_size)) return Status::Corruption("bad page size");

  // Step 4: the WAL overlay (newest frame of each page up to mxFrame).
  std::unordered_map<uint32_t, uint64_t> overlay;
  // nBackfill only grows. Read it again now that B holds its read
  // transaction: if frames beyond it remained when B began, B holds a read
  // mark > 0 and no writer can restart the WAL under us; if everything was
  // backfilled by then, the database file alone is the snapshot.
  if (wal && ih.mxFrame > 0) {
    uint32_t now_backfilled = 0;
    if (shm.Read(&now_backfilled, 4, 2 * sizeof(tw::wal::IndexHeader)) == 4) {
      backfilled = std::max(backfilled, now_backfilled);
    }
  }
  // When every frame is already in the database file, B may read with
  // read-mark 0, which does not stop a writer from restarting the WAL: then
  // the file alone is the snapshot, and the WAL must not be read at all.
  bool read_wal = false;
  if (wal && ih.mxFrame > 0 && backfilled < ih.mxFrame) {
    read_wal = true;
    if (!walf.is_open()) return Status::IOError("the WAL of " + d->path + " could not be opened");
    uint8_t hb[tw::wal::kHeaderSize];
    tw::wal::Header wh;
    if (walf.Read(hb, sizeof hb, 0) != long(sizeof hb) || !tw::wal::ParseHeader(hb, &wh) ||
        wh.salt1 != ih.aSalt[0] || wh.salt2 != ih.aSalt[1]) {
      return Status::Corruption("WAL header does not match the wal-index");
    }
    tw::wal::Cursor from{wh.salt1, wh.salt2, 0, wh.cksum1, wh.cksum2};
    uint32_t reached = 0;
    tw::wal::Scan(
        wh, from, ih.mxFrame,
        [&](void* buf, size_t n, uint64_t off) { return walf.Read(buf, n, off); },
        [&](const tw::wal::Txn& t) {
          for (size_t i = 0; i < t.pgnos.size(); ++i) overlay[t.pgnos[i]] = t.page_offsets[i];
          reached = t.end.frame;
          return true;
        });
    if (reached != ih.mxFrame) {
      return Status::Corruption("WAL chain ends at frame " + std::to_string(reached) +
                                " but the wal-index says " + std::to_string(ih.mxFrame));
    }
  }

  // Step 5: stream into the spool, then upload.
  tw::SnapshotHeader sh;
  sh.tenant = d->tenant;
  sh.db = d->name;
  if (scheduled) {
    // Later snapshots of a generation carry no parent (docs/FORMAT.md).
    sh.generation = cur_gen;
  } else {
    sh.generation = tw::NewGenerationId();
    std::lock_guard<std::mutex> lk(d->mu);
    sh.parent_generation = d->generation;
  }
  sh.txid = S;
  sh.page_size = page_size;
  sh.commit_us = commit_us > 0 ? commit_us : t0;
  sh.created_us = t0;
  sh.wal = pos;
  const std::string spool =
      opts_.spool_dir + "/" + sh.generation + "-" + std::to_string(S) + ".twsnap";
  tw::SnapshotWriter w;
  TW_RETURN_IF_ERROR(w.Open(spool, sh, opts_.zstd_level));
  std::vector<uint8_t> page(page_size);
  std::vector<uint8_t> frame(tw::wal::kFrameHeaderSize + page_size);
  std::vector<uint64_t> crc;
  crc.reserve(n_pages);
  uint64_t checksum = 0;
  Status ws;
  for (uint32_t p = 1; p <= n_pages && ws.ok(); ++p) {
    auto it = overlay.find(p);
    long got;
    if (it != overlay.end()) {
      // Re-check the frame header as we copy: if the WAL were restarted and
      // overwritten under us, its salts would differ. Never copy a guess.
      got = walf.Read(frame.data(), frame.size(), it->second - tw::wal::kFrameHeaderSize);
      tw::wal::FrameHeader fh = tw::wal::ParseFrameHeader(frame.data());
      if (got != long(frame.size()) || fh.pgno != p || fh.salt1 != ih.aSalt[0] ||
          fh.salt2 != ih.aSalt[1]) {
        ws = Status::Busy("the WAL changed while the snapshot was copied; retrying");
        break;
      }
      std::memcpy(page.data(), frame.data() + tw::wal::kFrameHeaderSize, page_size);
      got = long(page_size);
    } else {
      got = dbf.Read(page.data(), page_size, uint64_t(p - 1) * page_size);
    }
    if (got < 0) {
      ws = Status::IOError("read page " + std::to_string(p) + ": " + strerror(errno));
      break;
    }
    if (size_t(got) < page_size) std::memset(page.data() + got, 0, page_size - size_t(got));
    uint64_t c = tw::PageChecksum(p, page.data(), page_size);
    crc.push_back(c);
    checksum ^= c;
    ws = w.AddPage(page.data());
  }
  if (ws.ok() && read_wal) {
    // A restart rewrites the WAL header before any frame: if the header is
    // unchanged now, no frame we copied was overwritten while we read it.
    uint8_t hb[tw::wal::kHeaderSize];
    tw::wal::Header wh;
    if (walf.Read(hb, sizeof hb, 0) != long(sizeof hb) || !tw::wal::ParseHeader(hb, &wh) ||
        wh.salt1 != ih.aSalt[0] || wh.salt2 != ih.aSalt[1]) {
      ws = Status::Busy("the WAL restarted while the snapshot was copied; retrying");
    }
  }
  uint64_t bytes = 0;
  if (ws.ok()) ws = w.Finish(false, &bytes);
  if (!ws.ok()) {
    w.Abandon();
    return ws;
  }
  sqlite3_close_v2(b.db);  // release the read transaction before uploading
  b.db = nullptr;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    if (d->snapshot_epoch != epoch ||
        (scheduled && (d->phase != Phase::kActive || d->generation != cur_gen))) {
      unlink(spool.c_str());  // superseded: do not publish a dead end
      return Status::OK();
    }
    if (scheduled && d->last_txid == S && d->checksum != checksum) {
      unlink(spool.c_str());
      NeedSnapshotLocked(d.get(), "scheduled snapshot differs from the replicated history");
      return Status::OK();
    }
  }
  const std::string key = tw::SnapshotKey(d->tenant, d->name, sh.generation, S);
  // The tenant's replica target now: a new generation starts there.
  ReplicaTarget target;
  std::shared_ptr<tw::ObjectStore> store = tenants_->Store(d->tenant, &target);
  Status us = store->PutFile(key, spool,
                              {{"tenantwal-txid", std::to_string(S)},
                               {"tenantwal-commit-us", std::to_string(sh.commit_us)}});
  unlink(spool.c_str());
  if (!us.ok()) {
    // The next attempt starts a new generation under another key. Some
    // S3-compatible servers keep the bytes of a PUT cut short: delete what
    // this attempt may have left (best effort; a torn object is also found
    // by restore and verify, and nothing refers to this generation).
    store->Delete(key);
    return us.Prefix("upload " + key);
  }
  if (!scheduled) {
    // The new generation becomes current only through the authority
    // (ownership.cc): a compare-and-swap that appends it to the lineage.
    bool force;
    {
      std::lock_guard<std::mutex> lk(d->mu);
      force = d->force_claim;
    }
    std::string fenced;
    const std::string reason = sh.parent_generation.empty()
                                   ? "first snapshot"
                                   : "new snapshot after generation " + sh.parent_generation;
    Status cs = ClaimGeneration(d, store.get(), sh, reason, force, &fenced);
    if (!cs.ok() || !fenced.empty()) {
      store->Delete(key);  // an orphan: no reader follows it, and it costs storage
      if (!cs.ok()) return cs;
      std::lock_guard<std::mutex> lk(d->mu);
      if (d->snapshot_epoch == epoch) FenceLocked(d.get(), fenced);
      return Status::OK();
    }
    std::lock_guard<std::mutex> lk(d->mu);
    d->force_claim = false;
  }

  std::lock_guard<std::mutex> lk(d->mu);
  if (maint_) {
    IndexedObject o;
    o.key = key;
    o.snapshot = true;
    o.min_txid = o.max_txid = S;
    o.first_us = o.last_us = sh.commit_us;
    o.size = bytes;
    o.db_pages = n_pages;
    maint_->OnSnapshotUploaded(d->tenant, d->name, sh.generation, o,
                               uint64_t(n_pages) * page_size);
  }
  if (scheduled) {
    Log(Level::kInfo, "scheduled snapshot uploaded",
        {{"tenant", d->tenant}, {"db", d->name}, {"generation", sh.generation}, {"txid", S},
         {"pages", n_pages}, {"bytes", bytes}, {"ms", (tw::ring::NowMicros() - t0) / 1000}});
    d->snapshots++;
    d->bytes_uploaded += bytes;
    d->last_snapshot_us = tw::ring::NowMicros();
    d->cut_after_txid = S;
    PublishSlot(d.get());
    return Status::OK();
  }
  Log(Level::kInfo, "snapshot uploaded",
      {{"tenant", d->tenant}, {"db", d->name}, {"generation", sh.generation},
       {"parent", sh.parent_generation}, {"txid", S}, {"pages", n_pages}, {"bytes", bytes},
       {"ms", (tw::ring::NowMicros() - t0) / 1000}});
  if (d->phase != Phase::kSnapshotting || d->snapshot_epoch != epoch) {
    return Status::OK();  // superseded meanwhile: a newer snapshot is queued
  }
  d->generation = sh.generation;
  d->target = store;
  d->target_key = target.Key();
  d->page_size = page_size;
  d->db_pages = n_pages;
  d->page_crc = std::move(crc);
  d->checksum = checksum;
  d->last_txid = S;
  d->durable_txid = S;
  d->durable_commit_us = sh.commit_us;
  d->snapshots++;
  d->bytes_uploaded += bytes;
  d->last_snapshot_us = tw::ring::NowMicros();
  d->failures = 0;
  d->last_error.clear();
  d->snapshot_reason.clear();
  d->phase = Phase::kActive;
  while (!d->pending.empty() && d->pending.front().txid <= S) {
    d->pending_bytes -= d->pending.front().pages.size();
    d->pending.pop_front();
  }
  if (!d->pending.empty()) {
    if (d->pending.front().txid != S + 1) {
      NeedSnapshotLocked(d.get(), "gap after snapshot");
    } else {
      d->pending_since_us = tw::ring::NowMicros();
      MarkDirtyLocked(d.get());
    }
  }
  if (d->partial && d->partial->txid <= S) d->partial.reset();
  if (s->resync.load(std::memory_order_acquire)) {
    NeedSnapshotLocked(d.get(), "capture reported: " + tw::ring::Ring::ReadError(s));
  }
  PublishSlot(d.get());
  return Status::OK();
}

}  // namespace twd
