// tenantwald: the spool bound (see spool.h for the design).
#include "spool.h"

#include <unistd.h>

#include <cctype>
#include <limits>

#include "log.h"
#include "replicator.h"

namespace twd {

void SpoolBudget::NoteDrop(const std::string& tenant, uint64_t segments, uint64_t bytes,
                           bool new_event) {
  std::lock_guard<std::mutex> lk(mu_);
  auto& t = dropped_[tenant];
  t.segments += segments;
  t.bytes += bytes;
  if (new_event) {
    ++t.drops;
    ++drops_;
  }
}

void SpoolBudget::NoteWriteError(const std::string& message) {
  std::lock_guard<std::mutex> lk(mu_);
  ++write_errors_;
  last_write_error_ = message;
}

SpoolStats SpoolBudget::Stats() const {
  SpoolStats s;
  s.max_bytes = max_;
  s.used_bytes = used_.load();
  s.segments = segments_.load();
  std::lock_guard<std::mutex> lk(mu_);
  s.drops = drops_;
  s.write_errors = write_errors_;
  s.last_write_error = last_write_error_;
  s.dropped = dropped_;
  return s;
}

bool ParseByteSize(const std::string& s, uint64_t* out) {
  size_t i = 0;
  while (i < s.size() && isdigit(static_cast<unsigned char>(s[i]))) ++i;
  if (i == 0 || i > 19) return false;
  uint64_t v = std::stoull(s.substr(0, i));
  std::string unit = s.substr(i);
  for (auto& c : unit) c = char(toupper(static_cast<unsigned char>(c)));
  uint64_t mul;
  if (unit.empty() || unit == "B") mul = 1;
  else if (unit == "K" || unit == "KIB") mul = 1ull << 10;
  else if (unit == "M" || unit == "MIB") mul = 1ull << 20;
  else if (unit == "G" || unit == "GIB") mul = 1ull << 30;
  else if (unit == "T" || unit == "TIB") mul = 1ull << 40;
  else if (unit == "KB") mul = 1000ull;
  else if (unit == "MB") mul = 1000000ull;
  else if (unit == "GB") mul = 1000000000ull;
  else if (unit == "TB") mul = 1000000000000ull;
  else return false;
  if (v > std::numeric_limits<uint64_t>::max() / mul) return false;
  *out = v * mul;
  return true;
}

// Called by the flusher after a seal (no lock held). Drops whole databases'
// sealed segments, oldest pending data first, until the budget fits again or
// nothing droppable is left (only in-flight uploads).
void Replicator::EnforceSpoolBound() {
  while (spool_.Over() && !stop_) {
    std::vector<std::shared_ptr<Db>> dbs;
    {
      std::lock_guard<std::mutex> lk(mu_);
      for (auto& kv : dbs_) dbs.push_back(kv.second);
    }
    std::shared_ptr<Db> victim;
    int64_t oldest = std::numeric_limits<int64_t>::max();
    for (auto& d : dbs) {
      std::lock_guard<std::mutex> lk(d->mu);
      // Droppable: at least one sealed segment that is not in flight.
      size_t droppable = 0;
      for (const Sealed& s : d->sealed) droppable += !(d->uploading && s.path == d->uploading_path);
      if (droppable == 0) continue;
      if (d->sealed.front().last_commit_us < oldest) {
        oldest = d->sealed.front().last_commit_us;
        victim = d;
      }
    }
    if (!victim) return;  // only in-flight uploads left; they release soon
    std::lock_guard<std::mutex> lk(victim->mu);
    DropSealedLocked(victim.get(), "spool full (--spool-max-bytes " +
                                       std::to_string(spool_.max_bytes()) + ")");
  }
}

// Called with d->mu held. The in-flight segment, if any, leaves the list
// but keeps its file: its uploader sees it unlisted and deletes the file
// after the PUT (counting a drop if the PUT failed).
void Replicator::DropSealedLocked(Db* d, const std::string& cause) {
  uint64_t segs = 0, bytes = 0, from = 0, to = 0;
  for (const Sealed& s : d->sealed) {
    if (d->uploading && s.path == d->uploading_path) continue;
    unlink(s.path.c_str());
    spool_.Release(s.bytes);
    ++segs;
    bytes += s.bytes;
    if (from == 0) from = s.min_txid;
    to = s.max_txid;
  }
  d->sealed.clear();
  spool_.NoteDrop(d->tenant, segs, bytes, true);
  Log(Level::kError, "spool bound reached: pending segments dropped; a new snapshot follows",
      {{"audit", 1}, {"action", "spool-drop"}, {"tenant", d->tenant}, {"db", d->name},
       {"cause", cause}, {"segments", segs}, {"bytes", bytes}, {"fromTxid", from},
       {"toTxid", to}, {"spoolUsedBytes", spool_.used()}, {"spoolMaxBytes", spool_.max_bytes()}});
  const std::string why = cause + ": dropped " + std::to_string(segs) + " segments (" +
                          std::to_string(bytes) + " bytes, txids " + std::to_string(from) +
                          ".." + std::to_string(to) + ") not yet uploaded";
  if (d->phase == Phase::kActive) NeedSnapshotLocked(d, why);
  ++d->errors;
  d->last_error = why;
  PublishSlot(d);
}

}  // namespace twd
