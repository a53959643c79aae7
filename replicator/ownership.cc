// tenantwald: claiming a database's history in its authority, and fencing.
//
// Which generation of a database is current, and which host may extend it,
// is decided by the database's authority (lib/store/authority.h), a small
// object written only with conditional PUTs. tenantwald never infers it from
// generation ids (a wall clock) or from its own memory:
//
//  - Claim. A new generation becomes current only through a compare-and-swap
//    of the authority that appends it to the lineage (its parent is the
//    lineage's current generation, whatever this host believed). It is done
//    after the generation's snapshot is uploaded and before any of its
//    segments: if the claim fails, the snapshot is deleted (an orphan that
//    no reader would pick anyway) and nothing else of it is ever written.
//    A host may claim when there is no authority yet (the lineage then
//    starts with the generations already in the bucket, in id order, as
//    readers saw them before), when it already owns it, when the owner
//    released it, or with force (a takeover: the epoch is bumped and the old
//    owner fences itself at its next check).
//  - Fenced. When another host owns the database, this host stops
//    replicating it (status "fenced", the owner named in lastError, the API
//    and tenantwal_status, an audit log line), drops what it holds in memory,
//    and uploads nothing more for it until an operator claims it
//    (POST /api/databases/{t}/{d}/claim) or the owner releases it.
//  - Checked. Before uploading a segment, at most every kOwnershipCheckUs, the
//    authority is read again: if another host took over, or the current
//    generation is not ours any more, this host is fenced (or, when it still
//    owns the database but another of its generations is current, takes a
//    new snapshot). Idle databases upload nothing and so read nothing.
#include <unistd.h>

#include "host_id.h"
#include "log.h"
#include "replicator.h"
#include "store/authority.h"
#include "store/restore.h"

namespace twd {

using tw::Status;

Status Replicator::ClaimGeneration(const std::shared_ptr<Db>& d, tw::ObjectStore* store,
                                   const tw::SnapshotHeader& sh, const std::string& reason,
                                   bool force, std::string* fenced) {
  fenced->clear();
  // The generations already in the bucket, for a first authority over a
  // replica written before authorities existed (listed once per database).
  std::vector<std::string> existing;
  bool listed = false;
  std::string owner_msg;
  tw::Authority result;
  auto update = [&](const tw::Authority* cur, tw::Authority* next) -> Status {
    const int64_t now = tw::ring::NowMicros();
    if (cur == nullptr) {
      if (!listed) {
        tw::CatalogDatabase cat;
        TW_RETURN_IF_ERROR(tw::ListDatabase(store, d->tenant, d->name, &cat));
        for (const auto& g : cat.generations) {
          if (g.id != sh.generation) existing.push_back(g.id);
        }
        listed = true;
      }
      *next = tw::Authority{};
      next->tenant = d->tenant;
      next->db = d->name;
      next->epoch = 1;
      next->lineage = tw::LegacyLineage(existing);
    } else {
      if (cur->owner == host_id_ && !cur->released && cur->current() == sh.generation) {
        return Status::Aborted("already claimed");  // an earlier attempt's write landed
      }
      if (!cur->released && cur->owner != host_id_ && !force) {
        owner_msg = "tenants/" + d->tenant + "/" + d->name + " is owned by host " + cur->owner +
                    (cur->owner_name.empty() ? "" : " (" + cur->owner_name + ")") + ", epoch " +
                    std::to_string(cur->epoch);
        return Status::Conflict(owner_msg);
      }
      *next = *cur;
      if (cur->owner != host_id_ || cur->released) next->epoch = cur->epoch + 1;
    }
    next->owner = host_id_;
    next->owner_name = host_name_;
    next->released = false;
    tw::AuthorityGeneration g;
    g.id = sh.generation;
    g.parent = next->lineage.empty() ? "" : next->lineage.back().id;
    g.epoch = next->epoch;
    g.host = host_id_;
    g.start_txid = sh.txid;
    g.started_us = now;
    g.reason = reason.substr(0, 256);
    next->lineage.push_back(std::move(g));
    next->durable_txid = sh.txid;
    next->durable_commit_us = sh.commit_us;
    next->updated_us = now;
    return Status::OK();
  };
  Status st = tw::UpdateAuthority(store, d->tenant, d->name, update, &result, nullptr);
  if (!owner_msg.empty() && st.IsConflict()) {
    *fenced = owner_msg;
    return Status::OK();
  }
  if (!st.ok()) return st.Prefix("claim " + tw::AuthorityKey(d->tenant, d->name));
  std::lock_guard<std::mutex> lk(d->mu);
  d->auth_epoch = result.epoch;
  d->auth_checked_us = tw::ring::NowMicros();
  d->owner_epoch_known = true;
  return Status::OK();
}

void Replicator::DiscardSealedLocked(Db* d) {
  // The one in flight, unlisted, is unlinked by UploadLoop when its PUT
  // returns (as DropSealedLocked does).
  for (const Sealed& s : d->sealed) {
    if (d->uploading && s.path == d->uploading_path) continue;
    unlink(s.path.c_str());
    spool_.Release(s.bytes);
  }
  d->sealed.clear();
}

void Replicator::FenceLocked(Db* d, const std::string& why) {
  if (d->phase == Phase::kDeleted || d->phase == Phase::kNotReplicated) return;
  ++d->snapshot_epoch;  // a snapshot in progress no longer applies
  d->phase = Phase::kFenced;
  d->pending.clear();
  d->pending_bytes = 0;
  d->partial.reset();
  DiscardSealedLocked(d);
  d->last_error = "fenced: " + why + "; this host (" + host_id_ +
                  ") uploads nothing for it until it is claimed (POST /api/databases/" +
                  d->tenant + "/" + d->name + "/claim) or released by its owner";
  Log(Level::kError, "database fenced: another host owns it",
      {{"audit", 1}, {"action", "fenced"}, {"tenant", d->tenant}, {"db", d->name},
       {"reason", why}, {"host", host_id_}});
  PublishSlot(d);
}

bool Replicator::CheckOwnership(const std::shared_ptr<Db>& d, tw::ObjectStore* store) {
  std::string generation;
  uint64_t epoch;
  {
    std::lock_guard<std::mutex> lk(d->mu);
    const int64_t now = tw::ring::NowMicros();
    if (d->owner_epoch_known && now - d->auth_checked_us < kOwnershipCheckUs) return true;
    generation = d->generation;
    epoch = d->auth_epoch;
  }
  tw::Authority a;
  std::string etag;
  Status st = tw::LoadAuthority(store, d->tenant, d->name, &a, &etag);
  std::lock_guard<std::mutex> lk(d->mu);
  if (d->phase != Phase::kActive || d->generation != generation) return false;
  if (st.IsNotFound()) {
    // No authority (removed by an operator, or a generation resumed from a
    // replica written before authorities): start a generation that claims.
    DiscardSealedLocked(d.get());
    NeedSnapshotLocked(d.get(), "the database has no authority in the replica");
    return false;
  }
  if (!st.ok()) {
    // Not known now (S3 unreachable...): the upload fails the same way and
    // is retried; check again next time.
    return true;
  }
  if (a.owner != host_id_ || a.released) {
    FenceLocked(d.get(), "tenants/" + d->tenant + "/" + d->name + " is " +
                             (a.released ? std::string("released")
                                         : "owned by host " + a.owner +
                                               (a.owner_name.empty() ? ""
                                                                     : " (" + a.owner_name + ")")) +
                             ", epoch " + std::to_string(a.epoch) + " (this host had epoch " +
                             std::to_string(epoch) + ")");
    return false;
  }
  if (a.current() != generation) {
    DiscardSealedLocked(d.get());
    NeedSnapshotLocked(d.get(), "generation " + generation +
                                    " is not the current one in the authority (" + a.current() +
                                    ")");
    return false;
  }
  d->auth_epoch = a.epoch;
  d->auth_checked_us = tw::ring::NowMicros();
  d->owner_epoch_known = true;
  return true;
}

Status Replicator::ClaimDatabase(const std::string& tenant, const std::string& db, bool force) {
  auto d = FindDb(tenant, db);
  if (!d) return Status::NotFound("no database " + tenant + "/" + db);
  std::lock_guard<std::mutex> lk(d->mu);
  if (d->phase == Phase::kNotReplicated) return Status::NotFound("no database " + tenant + "/" + db);
  if (d->phase == Phase::kDeleted) {
    return Status::Aborted(tenant + "/" + db + " is deleted: register it again first");
  }
  d->force_claim = force;
  d->next_attempt_us = 0;
  d->last_error.clear();
  Log(Level::kWarn, force ? "database claimed by force (takeover)" : "database claimed",
      {{"audit", 1}, {"action", force ? "takeover" : "claim"}, {"tenant", tenant}, {"db", db},
       {"host", host_id_}});
  if (d->phase == Phase::kFenced) d->phase = Phase::kActive;  // so NeedSnapshotLocked queues it
  NeedSnapshotLocked(d.get(), force ? "claimed by force through the API" : "claimed through the API");
  PublishSlot(d.get());
  return Status::OK();
}

}  // namespace twd
