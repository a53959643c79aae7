// tenantwal: S3Store, the ObjectStore interface on Amazon S3 or any
// S3-compatible endpoint, over libcurl with SigV4 (sigv4.h).
//
// Design:
//  * Addressing (S3 User Guide, "Virtual hosting of buckets"): with no
//    endpoint, virtual-hosted https://{bucket}.s3.{region}.amazonaws.com/{key}
//    (path-style on the regional host for bucket names containing '.', whose
//    virtual host would not match the wildcard TLS certificate); with an
//    endpoint, path-style {endpoint}/{bucket}/{key}. The URL path and query
//    are built from the exact canonical strings that are signed, and curl is
//    told not to normalize the path (CURLOPT_PATH_AS_IS).
//  * Connections: a mutex-protected pool of curl easy handles. A handle keeps
//    its connection cache across curl_easy_reset(), so sequential requests on
//    one thread reuse a keep-alive connection, and concurrent uploader threads
//    each take their own handle. No curl state is shared between handles.
//  * Payloads: every PUT carries Content-Length and x-amz-content-sha256 set
//    to the real SHA-256 of the body (single-chunk signed payload; never
//    aws-chunked/STREAMING-*). PutFile hashes the file in one streaming pass,
//    then streams it with pread() from CURLOPT_READFUNCTION, so memory stays
//    bounded. GetToFile streams the body into the file with pwrite().
//  * Retries (AWS "Retry behavior" / "Exponential Backoff And Jitter"): on
//    curl network errors, truncated bodies (fewer bytes than Content-Length),
//    HTTP 5xx, 429 and S3 error codes SlowDown / RequestTimeout /
//    InternalError / ServiceUnavailable, up to options.max_retries more
//    attempts, sleeping uniform(0, min(20 s, base * 2^n)) ms before retry n
//    ("full jitter"). Each attempt is re-signed with a fresh x-amz-date.
//  * Errors (S3 API Reference, "Error responses"): the S3 <Code> and
//    <Message> from the XML body, the HTTP status and s3://bucket/key are in
//    every message; never credentials, signatures or the security token.
//    404 NoSuchKey -> NotFound; 404 NoSuchBucket -> InvalidArgument (a
//    configuration error, deliberately not NotFound); 401/403 -> Permission;
//    other 3xx/4xx -> InvalidArgument; retryable failures that exhaust their
//    attempts -> Unavailable; local file errors -> IOError.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "store/object_store.h"

namespace tw {

class S3Store : public ObjectStore {
 public:
  // Opens a store for `bucket` (S3 bucket naming rules: 3-63 characters of
  // [a-z0-9.-], starting and ending with a letter or digit, no "..", not an
  // IPv4 address) under the key prefix `prefix` ("" or a valid object key, no
  // trailing '/'). Requires options.access_key_id and secret_access_key and a
  // region of [a-z0-9-] (empty means us-east-1); options.endpoint, if set, must be
  // http(s)://host[:port][/path] without credentials, query or fragment.
  // InvalidArgument otherwise. Initializes libcurl once per process; does no
  // network I/O.
  static Status Open(const std::string& bucket, const std::string& prefix,
                     const StoreOptions& options, std::unique_ptr<S3Store>* out);
  ~S3Store() override;

  Status Put(const std::string& key, std::string_view data,
             const std::map<std::string, std::string>& metadata = {}) override;
  Status PutFile(const std::string& key, const std::string& path,
                 const std::map<std::string, std::string>& metadata = {}) override;
  Status Get(const std::string& key, std::string* out) override;
  // On failure the (partially written) destination file is removed.
  Status GetToFile(const std::string& key, const std::string& path) override;
  // A ranged GET (206); a server that ignores Range (200, whole object) is
  // handled by cutting the body. A range starting at or past the end (416)
  // gives an empty result.
  Status GetRange(const std::string& key, uint64_t offset, uint64_t length,
                  std::string* out) override;
  Status List(const std::string& prefix, std::vector<ObjectInfo>* out) override;
  Status ListDirs(const std::string& prefix, std::vector<std::string>* out) override;
  Status Delete(const std::string& key) override;
  // Conditional PUT (S3 API Reference, PutObject, "If-None-Match" and
  // "If-Match"; the S3 User Guide, "Add preconditions to S3 operations with
  // conditional requests"): the headers are signed like any other; 412
  // PreconditionFailed and 409 ConditionalRequestConflict answer Conflict
  // and are not retried. *etag is the response's ETag. Some S3-compatible
  // servers ignore the headers (s3rver): ProbeConditionalWrites tells.
  Status PutIf(const std::string& key, std::string_view data, const PutCondition& cond,
               std::string* etag, const std::map<std::string, std::string>& metadata = {}) override;
  // GET with the response's ETag (IOError when it has none).
  Status GetWithEtag(const std::string& key, std::string* out, std::string* etag) override;
  std::string url() const override;
  // Counts HTTP attempts (retries included) per operation; a failure is an
  // attempt that did not get the expected 2xx (a DELETE of a missing key, 404
  // NoSuchKey, counts as a success).
  std::map<std::string, std::pair<uint64_t, uint64_t>> RequestCounts() const override;

  // Tuning/test hook: the max-keys of each ListObjectsV2 page, 1..1000
  // (default 1000, S3's maximum). Values outside are clamped. Call before the
  // store is shared between threads.
  void set_list_page_size(int n);

 private:
  struct Call;
  enum Op { kPut, kGet, kList, kDelete, kNumOps };

  S3Store(std::string bucket, std::string prefix, StoreOptions options);
  std::string FullKey(const std::string& key) const;
  std::string ObjectPath(const std::string& full_key) const;  // unencoded URL path
  std::string BucketPath() const;                              // for ListObjectsV2
  std::string Describe(const std::string& full_key) const;     // "s3://bucket/key"
  Status ListPages(const std::string& prefix, bool dirs, std::vector<ObjectInfo>* objects,
                   std::vector<std::string>* common_prefixes);
  Status Execute(Call* call);
  // PUT of `data`; conditional when `cond` is set (PutIf), *etag (may be
  // null) gets the response's ETag.
  Status PutMem(const std::string& key, std::string_view data,
                const std::map<std::string, std::string>& metadata, const PutCondition* cond,
                std::string* etag);
  // GET into memory; *etag (may be null) gets the response's ETag.
  Status GetMem(const std::string& key, std::string* out, std::string* etag);
  Status Attempt(void* curl, Call* call, bool* retryable);
  void* AcquireHandle();
  void ReleaseHandle(void* h);

  const std::string bucket_;
  const std::string prefix_;  // "" or "a/b" (no trailing '/')
  const StoreOptions options_;
  std::string scheme_;       // "https" or "http"
  std::string host_;         // Host header value (authority)
  std::string base_path_;    // endpoint path prefix ("" or "/x")
  bool path_style_ = true;
  int list_page_size_ = 1000;

  std::mutex pool_mu_;
  std::vector<void*> pool_;  // idle CURL* easy handles

  std::array<std::atomic<uint64_t>, kNumOps> requests_{};
  std::array<std::atomic<uint64_t>, kNumOps> failures_{};
};

}  // namespace tw
