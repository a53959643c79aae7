// tenantwal: FileStore, the ObjectStore interface on a local directory
// (replica URL file:///abs/path), for tests and air-gapped hosts.
//
// Design: key "a/b/c" is the file {root}/a/b/c. Writes are atomic: the data
// goes to a temporary ".twtmp-*" file in the destination directory, is
// fsync'ed, renamed over the key, and the directory is fsync'ed, so readers
// see either the old object or the new one, never a torn one. Parent
// directories are created on demand (mkdir -p) and pruned again by Delete
// when they become empty, so ListDirs matches S3, where a "directory" exists
// only while some object lies below it. Temporary files, symlinks and other
// non-regular files are never listed. Keys are checked with
// ValidateObjectKey() (no "..", no leading '/'), and additionally may not
// have a segment starting with ".twtmp-", so no key can escape the root or
// collide with a temporary file. Metadata is validated and then dropped
// (the interface has no way to read it back). All methods are thread-safe:
// they share no mutable state except the request counters.
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <string>

#include "store/object_store.h"

namespace tw {

class FileStore : public ObjectStore {
 public:
  // Opens a store rooted at the absolute directory `root` (need not exist
  // yet; created by the first Put). InvalidArgument for a relative path, "/",
  // or a path with empty, "." or ".." segments. Trailing '/' is ignored.
  // Does no I/O.
  static Status Open(const std::string& root, std::unique_ptr<FileStore>* out);

  Status Put(const std::string& key, std::string_view data,
             const std::map<std::string, std::string>& metadata = {}) override;
  Status PutFile(const std::string& key, const std::string& path,
                 const std::map<std::string, std::string>& metadata = {}) override;
  Status Get(const std::string& key, std::string* out) override;
  // On failure the (partially written) destination file is removed.
  Status GetToFile(const std::string& key, const std::string& path) override;
  // pread of the range; counted as a GET.
  Status GetRange(const std::string& key, uint64_t offset, uint64_t length,
                  std::string* out) override;
  Status List(const std::string& prefix, std::vector<ObjectInfo>* out) override;
  Status ListDirs(const std::string& prefix, std::vector<std::string>* out) override;
  Status Delete(const std::string& key) override;
  // Conditional writes (object_store.h): a compare-and-swap under an
  // exclusive flock(2) of the key's directory, safe across processes. The
  // ETag is the hex MD5 of the content (as S3's for a single-part upload).
  Status PutIf(const std::string& key, std::string_view data, const PutCondition& cond,
               std::string* etag, const std::map<std::string, std::string>& metadata = {}) override;
  Status GetWithEtag(const std::string& key, std::string* out, std::string* etag) override;
  std::string url() const override { return "file://" + root_; }
  // Counts calls per operation; a "failure" is a call that returned non-OK
  // (NotFound included).
  std::map<std::string, std::pair<uint64_t, uint64_t>> RequestCounts() const override;

  // The absolute root directory (no trailing '/').
  const std::string& root() const { return root_; }

 private:
  explicit FileStore(std::string root) : root_(std::move(root)) {}
  enum Op { kPut, kGet, kList, kDelete, kNumOps };
  Status Count(Op op, Status s);
  // Writes a temp file via `fill(fd)`, fsyncs and renames it to `key`.
  template <typename Fill>
  Status AtomicWrite(const std::string& key, Fill fill);

  const std::string root_;
  std::array<std::atomic<uint64_t>, kNumOps> requests_{};
  std::array<std::atomic<uint64_t>, kNumOps> failures_{};
};

}  // namespace tw
