// tenantwald: the lineage state a clean shutdown leaves for the next start.
//
// To continue a generation after a restart, tenantwald needs what it keeps in
// memory for each active database: the generation, the last txid in the
// replica, the page size and count, and the per-page checksums behind
// DbChecksum (docs/FORMAT.md). Stop() writes them to
// {spool}/state/{tenant}/{db}.state; Start() reads them back and resumes the
// generation only when the ring's slot agrees (same generation, replicated
// txid = the file's txid, no resync flag); otherwise it takes a snapshot.
// A file is deleted once read, so a crash later never resumes from it.
//
// Layout (little-endian): "TWSTATE1", u32 version (1), u32 page_size,
// u32 db_pages, u32 0, u64 last_txid, i64 commit_us, u64 checksum,
// char[24] generation (NUL-padded), u32 n, u64 page_crc[n], u64 CRC-64 of
// all preceding bytes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace twd {

struct LineageState {
  std::string generation;
  uint32_t page_size = 0;
  uint32_t db_pages = 0;
  uint64_t last_txid = 0;
  int64_t commit_us = 0;
  uint64_t checksum = 0;
  std::vector<uint64_t> page_crc;  // db_pages entries
};

// Writes atomically (temporary file + rename). IOError on failure. With
// `sync` false the file is not fsync'ed: the caller syncs the file system
// once after writing many (Replicator::Stop: one fsync per database made a
// clean stop with 50,000 databases last ~30 s). A file lost or torn by a
// crash before that fails ReadLineageState's checks, and the database then
// gets a new snapshot: never a wrong continuation.
tw::Status WriteLineageState(const std::string& path, const LineageState& s, bool sync = true);
// Reads and verifies (magic, CRC, sizes, checksum = XOR of page_crc).
// NotFound if absent; Corruption if damaged.
tw::Status ReadLineageState(const std::string& path, LineageState* s);

// The replica target a generation was written to (ReplicaTarget::Key(), one
// line of text), kept next to the lineage state as {db}.target so that a
// restart continues a generation only in the same target.
tw::Status WriteTargetKey(const std::string& path, const std::string& key);
// NotFound if absent (then *key is "").
tw::Status ReadTargetKey(const std::string& path, std::string* key);

}  // namespace twd
