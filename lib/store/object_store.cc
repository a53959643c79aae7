// tenantwal: replica URL parsing, StoreOptions::FromEnv() and the key and
// metadata rules shared by every ObjectStore implementation.
//
// Design: this file only parses and validates; it never touches the network
// or the filesystem. The backends (s3_store.cc, file_store.cc) re-check what
// they depend on in their own Open() so they are safe to construct directly.

#include "store/object_store.h"

#include <cstdlib>

#include "store/file_store.h"
#include "store/s3_store.h"

namespace tw {

namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

// Quotes a user-supplied string for an error message, escaping control bytes
// so a hostile key cannot forge log lines.
std::string Quote(std::string_view s) {
  static const char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (char ch : s.substr(0, 200)) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f || c == '"' || c == '\\') {
      out += "\\x";
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 0xf]);
    } else {
      out.push_back(ch);
    }
  }
  if (s.size() > 200) out += "...";
  out += "\"";
  return out;
}

constexpr size_t kMaxKeyLen = 1024;  // S3's limit on a key's UTF-8 length

// Checks the segments of `s` ('/'-separated). When `allow_partial_tail` the
// last segment may be anything (including empty): it is a name prefix.
Status CheckSegments(std::string_view what, std::string_view s, bool allow_partial_tail) {
  if (s.size() > kMaxKeyLen) {
    return Status::InvalidArgument(std::string(what) + " longer than 1024 bytes: " + Quote(s));
  }
  for (char ch : s) {
    unsigned char c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == 0x7f) {
      return Status::InvalidArgument(std::string(what) + " contains a control byte: " + Quote(s));
    }
  }
  if (!s.empty() && s[0] == '/') {
    return Status::InvalidArgument(std::string(what) + " starts with '/': " + Quote(s));
  }
  size_t start = 0;
  while (true) {
    size_t slash = s.find('/', start);
    bool last = slash == std::string_view::npos;
    std::string_view seg = s.substr(start, last ? std::string_view::npos : slash - start);
    if (!(last && allow_partial_tail)) {
      if (seg.empty()) {
        return Status::InvalidArgument(std::string(what) + " has an empty segment: " + Quote(s));
      }
      if (seg == "." || seg == "..") {
        return Status::InvalidArgument(std::string(what) + " has a '" + std::string(seg) +
                                       "' segment: " + Quote(s));
      }
    }
    if (last) break;
    start = slash + 1;
  }
  return Status::OK();
}

}  // namespace

StoreOptions StoreOptions::FromEnv() {
  StoreOptions o;
  o.access_key_id = Env("AWS_ACCESS_KEY_ID");
  o.secret_access_key = Env("AWS_SECRET_ACCESS_KEY");
  o.session_token = Env("AWS_SESSION_TOKEN");
  o.region = Env("AWS_REGION");
  if (o.region.empty()) o.region = Env("AWS_DEFAULT_REGION");
  if (o.region.empty()) o.region = "us-east-1";
  o.endpoint = Env("AWS_ENDPOINT_URL_S3");
  if (o.endpoint.empty()) o.endpoint = Env("AWS_ENDPOINT_URL");
  o.ca_file = Env("AWS_CA_BUNDLE");
  return o;
}

Status ValidateObjectKey(std::string_view key) {
  if (key.empty()) return Status::InvalidArgument("object key is empty");
  return CheckSegments("object key", key, /*allow_partial_tail=*/false);
}

Status ValidateListPrefix(std::string_view prefix) {
  return CheckSegments("list prefix", prefix, /*allow_partial_tail=*/true);
}

Status ValidateMetadata(const std::map<std::string, std::string>& metadata) {
  size_t total = 0;
  for (const auto& [name, value] : metadata) {
    if (name.empty() || name.size() > 128) {
      return Status::InvalidArgument("metadata name must be 1-128 characters: " + Quote(name));
    }
    for (char c : name) {
      if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
        return Status::InvalidArgument("metadata name must be [a-z0-9-]: " + Quote(name));
      }
    }
    for (char c : value) {
      if (c < 0x20 || c > 0x7e) {
        return Status::InvalidArgument("metadata value for " + Quote(name) +
                                       " must be printable US-ASCII");
      }
    }
    if (!value.empty() && (value.front() == ' ' || value.back() == ' ')) {
      return Status::InvalidArgument("metadata value for " + Quote(name) +
                                     " has leading or trailing spaces");
    }
    total += name.size() + value.size();
  }
  if (total > 2048) {
    return Status::InvalidArgument("user metadata exceeds 2048 bytes (S3 limit)");
  }
  return Status::OK();
}

Status OpenObjectStore(const std::string& url, const StoreOptions& options,
                       std::unique_ptr<ObjectStore>* out) {
  out->reset();
  if (url.find_first_of("?#") != std::string::npos) {
    return Status::InvalidArgument("replica URL must not contain '?' or '#': " + Quote(url));
  }
  constexpr std::string_view kS3 = "s3://";
  constexpr std::string_view kFile = "file://";
  std::string_view u(url);
  if (u.substr(0, kS3.size()) == kS3) {
    std::string_view rest = u.substr(kS3.size());
    size_t slash = rest.find('/');
    std::string bucket(rest.substr(0, slash));
    std::string prefix;
    if (slash != std::string_view::npos) {
      std::string_view p = rest.substr(slash + 1);
      while (!p.empty() && p.back() == '/') p.remove_suffix(1);
      prefix = std::string(p);
    }
    if (bucket.empty()) {
      return Status::InvalidArgument("replica URL has no bucket (want s3://bucket[/prefix]): " +
                                     Quote(url));
    }
    if (!prefix.empty()) {
      Status s = ValidateObjectKey(prefix);
      if (!s.ok()) return s.Prefix("replica URL " + Quote(url) + " has a bad prefix");
    }
    std::unique_ptr<S3Store> store;
    TW_RETURN_IF_ERROR(S3Store::Open(bucket, prefix, options, &store));
    *out = std::move(store);
    return Status::OK();
  }
  if (u.substr(0, kFile.size()) == kFile) {
    std::string_view path = u.substr(kFile.size());
    if (path.empty() || path[0] != '/') {
      return Status::InvalidArgument(
          "file replica URL must be file:///absolute/path (no host, no relative path): " +
          Quote(url));
    }
    std::unique_ptr<FileStore> store;
    TW_RETURN_IF_ERROR(FileStore::Open(std::string(path), &store));
    *out = std::move(store);
    return Status::OK();
  }
  return Status::InvalidArgument("unsupported replica URL " + Quote(url) +
                                 " (want s3://bucket[/prefix] or file:///absolute/path)");
}

}  // namespace tw
