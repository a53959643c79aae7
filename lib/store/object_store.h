// tenantwal: ObjectStore, the replica's storage backend.
//
// A replica is named by a URL:
//   s3://bucket[/prefix]   Amazon S3 or any S3-compatible endpoint (SigV4,
//                          libcurl; see s3_store.cc)
//   file:///abs/path       the same key layout on a local filesystem
//                          (file_store.cc), for tests and air-gapped hosts
// Keys passed to every method are relative to the replica's prefix and use
// '/' separators, e.g. "tenants/acme/orders/wal/0000018c1a2b3c4d/...".
// Implementations are thread-safe: one ObjectStore may be shared by many
// uploader threads.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace tw {

struct ObjectInfo {
  std::string key;      // relative to the replica prefix
  uint64_t size = 0;    // bytes
  std::string etag;     // as returned by the store, quotes stripped ("" for file://)
};

// Connection settings. FromEnv() reads the AWS conventions; flags override.
struct StoreOptions {
  std::string access_key_id;      // AWS_ACCESS_KEY_ID
  std::string secret_access_key;  // AWS_SECRET_ACCESS_KEY
  std::string session_token;      // AWS_SESSION_TOKEN (optional)
  std::string region;             // AWS_REGION, else AWS_DEFAULT_REGION, else "us-east-1"
  // AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, e.g. "http://127.0.0.1:4568".
  // Empty: https://{bucket}.s3.{region}.amazonaws.com (virtual-hosted).
  // Non-empty: path-style addressing ({endpoint}/{bucket}/{key}).
  std::string endpoint;
  std::string ca_file;            // AWS_CA_BUNDLE: PEM bundle for a private CA ("" = system)
  bool verify_tls = true;         // never turned off implicitly
  int max_retries = 8;            // attempts after the first, for retryable errors
  int connect_timeout_ms = 5000;
  int request_timeout_ms = 120000;  // whole request, per attempt
  int backoff_base_ms = 100;      // exponential backoff with full jitter, capped at 20 s
  // Optional: called on the calling thread after each failed attempt that
  // will be retried, with the attempt's error and the retry number (1..).
  // Lets a caller show an error while a request is still being retried.
  std::function<void(const Status& error, int retry)> on_retry;

  // Fills every field from the environment (AWS_* variables above).
  static StoreOptions FromEnv();
};

// The condition of a conditional write (PutIf). S3 PutObject conditional
// writes (Amazon S3 User Guide, "Add preconditions to S3 operations with
// conditional requests"): `If-None-Match: *` stores the object only if the
// key is absent; `If-Match: "<etag>"` only if the current object has that
// ETag. Exactly one of the two is set.
struct PutCondition {
  bool if_none_match = false;  // create only: the key must not exist
  std::string if_match;        // replace only this version (ETag, quotes stripped)

  static PutCondition Absent() { PutCondition c; c.if_none_match = true; return c; }
  static PutCondition Matches(std::string etag) {
    PutCondition c;
    c.if_match = std::move(etag);
    return c;
  }
};

class ObjectStore {
 public:
  virtual ~ObjectStore() = default;

  // Stores `data` at `key`, replacing any object there. `metadata` becomes
  // x-amz-meta-{name} headers (names lowercase [a-z0-9-]). Content-Length is
  // always set (no aws-chunked encoding). Retries retryable failures.
  virtual Status Put(const std::string& key, std::string_view data,
                     const std::map<std::string, std::string>& metadata = {}) = 0;

  // Like Put, but streams the local file at `path` (for snapshots and spooled
  // segments, so memory stays bounded whatever the object size).
  virtual Status PutFile(const std::string& key, const std::string& path,
                         const std::map<std::string, std::string>& metadata = {}) = 0;

  // Reads the whole object into *out. NotFound when absent.
  virtual Status Get(const std::string& key, std::string* out) = 0;

  // Streams the object into the local file `path` (created/truncated).
  virtual Status GetToFile(const std::string& key, const std::string& path) = 0;

  // Reads at most `length` bytes of the object starting at byte `offset`
  // into *out (fewer when the object ends first; empty when offset is at or
  // past its end). NotFound when absent. For reading object headers cheaply
  // (S3: a ranged GET, "Range: bytes=offset-(offset+length-1)"). The default
  // reads the whole object with Get and cuts it; stores override it.
  virtual Status GetRange(const std::string& key, uint64_t offset, uint64_t length,
                          std::string* out) {
    TW_RETURN_IF_ERROR(Get(key, out));
    if (offset >= out->size()) {
      out->clear();
    } else {
      *out = out->substr(static_cast<size_t>(offset),
                         static_cast<size_t>(std::min<uint64_t>(length, out->size() - offset)));
    }
    return Status::OK();
  }

  // Lists every object whose key starts with `prefix` (ListObjectsV2, all
  // pages), sorted by key. An empty result is OK.
  virtual Status List(const std::string& prefix, std::vector<ObjectInfo>* out) = 0;

  // Lists the "directories" directly below `prefix` (which should end in
  // '/'): ListObjectsV2 with delimiter '/', returning CommonPrefixes relative
  // to the replica prefix, each ending in '/'.
  virtual Status ListDirs(const std::string& prefix, std::vector<std::string>* out) = 0;

  // Deletes the object; deleting a missing key is OK.
  virtual Status Delete(const std::string& key) = 0;

  // Conditional write of a small object (the authority, authority.h):
  // stores `data` at `key` only if `cond` holds, atomically with respect to
  // every other PutIf on the same key (on S3 the server decides; on file://
  // an exclusive lock on the key and a compare-then-rename). On success
  // *etag (may be null) is the new object's ETag. Conflict when the
  // condition does not hold (S3: 412 Precondition Failed; 409
  // ConditionalRequestConflict when another conditional write raced this
  // one): the caller must read the object again. Transient failures are
  // retried like Put; a retry whose first attempt may have succeeded can
  // answer Conflict, so callers re-read and compare content after Conflict.
  // The default implementation answers InvalidArgument (not supported).
  virtual Status PutIf(const std::string& key, std::string_view data, const PutCondition& cond,
                       std::string* etag,
                       const std::map<std::string, std::string>& metadata = {}) {
    (void)key; (void)data; (void)cond; (void)etag; (void)metadata;
    return Status::InvalidArgument(url() + ": conditional writes are not supported");
  }

  // Reads the whole object and its ETag (quotes stripped; the value PutIf
  // takes in PutCondition::Matches). NotFound when absent. The default
  // answers InvalidArgument (not supported).
  virtual Status GetWithEtag(const std::string& key, std::string* out, std::string* etag) {
    (void)key; (void)out; (void)etag;
    return Status::InvalidArgument(url() + ": conditional reads are not supported");
  }

  // The replica URL this store was opened with, e.g. "s3://bucket/prefix".
  virtual std::string url() const = 0;

  // Counters by operation, for metrics: "PUT", "GET", "LIST", "DELETE" ->
  // {requests, failures}. Includes retries.
  virtual std::map<std::string, std::pair<uint64_t, uint64_t>> RequestCounts() const = 0;
};

// Key rules shared by every store, so a key that works on file:// also works
// on s3:// and cannot escape a local root: 1-1024 bytes, no leading '/', no
// empty, "." or ".." segment (so no "//" and no trailing '/'), no ASCII
// control bytes (0x00-0x1f, 0x7f). InvalidArgument naming the key otherwise.
// (Added for tenantwal's stores; S3 itself is more permissive.)
Status ValidateObjectKey(std::string_view key);

// The same rules for a List/ListDirs prefix, except that it may be empty and
// may end in '/' or in a partial segment ("wal/0000" matches "wal/00001").
Status ValidateListPrefix(std::string_view prefix);

// User metadata rules: names 1-128 characters of [a-z0-9-]; values printable
// US-ASCII (0x20-0x7e) without leading/trailing spaces (S3 trims them, which
// would break round trips); total size of names and values <= 2048 bytes
// (S3's user-metadata limit). InvalidArgument otherwise.
Status ValidateMetadata(const std::map<std::string, std::string>& metadata);

// Finds out whether `store` enforces PutIf conditions (s3rver 3.7 ignores
// them; AWS S3, MinIO and moto enforce them): PutIf(probe_key, Absent)
// twice, expecting the second to be refused, then deletes probe_key.
// *enforced is false when the second write succeeded. Errors: the store's.
Status ProbeConditionalWrites(ObjectStore* store, const std::string& probe_key, bool* enforced);

// Opens the store named by `url` (see the top of this file). InvalidArgument
// for a malformed URL or an unsupported scheme. Does no network I/O.
Status OpenObjectStore(const std::string& url, const StoreOptions& options,
                       std::unique_ptr<ObjectStore>* out);

}  // namespace tw
