// tenantwal: the authority, the one object that says which history of a
// database is current and which host may extend it.
//
// Key: tenants/{tenant}/{db}/authority.json, a small JSON document
// (docs/FORMAT.md, "The authority"). It is written only with conditional
// writes (ObjectStore::PutIf): created with `If-None-Match: *`, replaced with
// `If-Match: <the ETag that was read>`. Of two writers that read the same
// version, exactly one replaces it; the other gets Conflict and must read
// again, so the authority is a compare-and-swap register (S3 User Guide,
// "conditional writes"; file:// gives the same with an exclusive lock and a
// compare-then-rename).
//
// It names:
//  - the owner: a host id (32 lowercase hex, stable per tenantwald spool,
//    replicator/host_id.h) and an epoch that every claim or forced takeover
//    bumps. A host uploads a database's objects only while the authority
//    names it with its epoch; a host that finds another owner is fenced.
//  - the lineage: every generation of the database still in the replica,
//    oldest first, each with its parent; the last is the current one.
//    "Latest", `ls`, retention and compaction follow the lineage, never the
//    order of generation ids (whose top bits are a wall clock that steps).
//  - the last durable txid the owner recorded: a lower bound, written at
//    generation switches, releases and from time to time, not per segment.
//
// Replicas written before the authority existed have no authority.json:
// readers order their generations by id, as before (LegacyLineage).
//
// Thread safety: the types are values; the functions share no state (the
// store's own thread safety applies).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "store/object_store.h"

namespace tw {

// Limits ParseAuthority enforces (beyond them a document is Corruption).
// The lineage is pruned with retention, so it stays short in practice.
constexpr size_t kAuthorityMaxBytes = 16u << 20;
constexpr size_t kAuthorityMaxGenerations = 100000;

// One generation of the lineage.
struct AuthorityGeneration {
  std::string id;           // IsGenerationId()
  std::string parent;       // the generation it continues ("" for the first)
  uint64_t epoch = 0;       // epoch of the owner that started it
  std::string host;         // host id of the owner that started it ("" for legacy entries)
  uint64_t start_txid = 0;  // txid of its first snapshot
  int64_t started_us = 0;   // wall clock at its start: information only, never ordering
  std::string reason;       // why it started, e.g. "first snapshot" (<= 256 bytes)
};

struct Authority {
  std::string tenant, db;   // ValidName(); must match the key it was read from
  uint64_t epoch = 0;       // >= 1 once created; bumped by every claim and takeover
  std::string owner;        // host id of the owner; "" when released
  std::string owner_name;   // the owner's host name, for messages ("" when released)
  bool released = false;    // released by its owner: the next host may claim it
  std::vector<AuthorityGeneration> lineage;  // oldest first; back() is current; non-empty
  uint64_t durable_txid = 0;        // lower bound of what the owner made durable
  int64_t durable_commit_us = 0;    // commit time of durable_txid (0: unknown)
  int64_t updated_us = 0;           // wall clock of the last write: information only

  // The current generation (lineage.back().id), "" when the lineage is empty.
  const std::string& current() const;
  // Index of generation `id` in the lineage, or -1.
  long Find(std::string_view id) const;
};

// tenants/{tenant}/{db}/authority.json. `tenant` and `db` must be ValidName().
std::string AuthorityKey(const std::string& tenant, const std::string& db);

// True for a host id: exactly 32 lowercase hex digits.
bool IsHostId(std::string_view s);

// Deterministic JSON (docs/FORMAT.md, "The authority"): the same Authority
// always serializes to the same bytes.
std::string SerializeAuthority(const Authority& a);

// Parses and validates a document: format tag, field types, names, host
// ids, generation ids (unique), parents (each entry's parent is the
// previous entry's id or, for the first entry, any generation id or ""),
// epoch >= 1, an owner unless released, the limits above. Corruption with a
// message naming the problem otherwise. Unknown fields are ignored (newer
// writers may add some).
Status ParseAuthority(std::string_view json, Authority* out);

// Reads the authority of tenant/db with its ETag. NotFound when the
// database has none (a legacy replica, or none at all); Corruption when it
// does not parse or names another database; the store's errors otherwise.
Status LoadAuthority(ObjectStore* store, const std::string& tenant, const std::string& db,
                     Authority* out, std::string* etag);

// Writes `a` conditionally: If-None-Match: * when `expected_etag` is empty
// (create), else If-Match: expected_etag. Conflict when another writer got
// there first (read again). *new_etag (may be null) is the new ETag.
Status StoreAuthority(ObjectStore* store, const Authority& a, const std::string& expected_etag,
                      std::string* new_etag);

// Read-modify-write with retries on Conflict: reads the authority (absent:
// `current` is null), calls update(current, &next) and stores `next`
// conditionally on what was read. `update` returns OK to write `next`, or an
// error that is returned as is without writing (e.g. Conflict "owned by
// host X" to fence the caller); Aborted from `update` means "nothing to
// change" and is returned as OK without writing. On Conflict it reads again,
// at most `attempts` times, then returns Conflict. On success *result and
// *etag (may be null) are what is now stored.
Status UpdateAuthority(ObjectStore* store, const std::string& tenant, const std::string& db,
                       const std::function<Status(const Authority* current, Authority* next)>& update,
                       Authority* result, std::string* etag, int attempts = 8);

// The lineage of a replica without an authority: its generations ordered
// by id (as before the authority existed), each the parent of the next,
// host "" and epoch 0.
std::vector<AuthorityGeneration> LegacyLineage(const std::vector<std::string>& generation_ids);

}  // namespace tw
